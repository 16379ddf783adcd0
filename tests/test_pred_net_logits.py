"""pred-net-logits: logit statistics vs a numpy reference, starts as its base, trains, and rejects bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import softmax
from scipy.stats import entropy, spearmanr

from uncertain_repr.losses import create as create_loss
from uncertain_repr.losses.base import LossBatch
from uncertain_repr.methods import create_method, list_methods
from uncertain_repr.methods.pred_net_logits import logit_stats


def _data(n=64, d=16, c=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), 3 * torch.randn(n, c, generator=g)


def test_logit_stats_match_numpy():
    _, logits = _data()
    p = softmax(logits.double().numpy(), axis=1)
    top = np.sort(p, axis=1)[:, ::-1]
    expected = np.stack([entropy(p, axis=1) / np.log(10), 1 - top[:, 0], 1 - (top[:, 0] - top[:, 1])], axis=1)
    np.testing.assert_allclose(logit_stats(logits).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("base, reference", [("max-prob", "max-prob"), ("class-entropy", "class-entropy")])
def test_untrained_head_ranks_exactly_as_its_base(base, reference):
    emb, logits = _data()
    head = create_method("pred-net-logits", embed_dim=16, num_classes=10, width=8, depth=2, base=base)
    unc = head.uncertainty(emb, logits)
    ref = create_method(reference, embed_dim=16, num_classes=10).uncertainty(emb, logits)
    assert unc.shape == (64,) and bool((unc > 0).all())
    assert spearmanr(unc.detach().numpy(), ref.numpy()).statistic == pytest.approx(1.0)


def test_ranking_loss_trains_the_residual_towards_the_task_loss_order():
    torch.manual_seed(0)
    emb, logits = _data(n=256)
    labels = torch.randint(0, 10, (256,))
    labels[: 128] = logits[:128].argmax(1)  # half the samples correct
    head = create_method("pred-net-logits", embed_dim=16, num_classes=10, width=32, depth=1, base="none")
    loss_fn = create_loss("losspred-order", pairing="all")
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    task = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert torch.unique(head.uncertainty(emb, logits).detach()).numel() == 1  # base "none" starts constant
    for _ in range(100):
        loss = loss_fn(LossBatch(embedding=emb, uncertainty=head.uncertainty(emb, logits), logits=logits), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = spearmanr(head.uncertainty(emb, logits).detach().numpy(), task.numpy()).statistic
    assert after > 0.8


def test_registered_and_bad_input():
    assert "pred-net-logits" in list_methods()
    with pytest.raises(ValueError, match="base must be one of"):
        create_method("pred-net-logits", embed_dim=4, num_classes=3, base="margin")
    with pytest.raises(ValueError, match="width >= 1"):
        create_method("pred-net-logits", embed_dim=4, num_classes=3, width=0)
    head = create_method("pred-net-logits", embed_dim=4, num_classes=3)
    with pytest.raises(ValueError, match="needs the classifier's logits"):
        head.uncertainty(torch.zeros(2, 4), None)
    with pytest.raises(ValueError, match="C >= 2"):
        logit_stats(torch.zeros(2, 1))
    emb = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="needs logits"):
        head(emb, None)


def test_correction_shrinks_the_learned_residual_towards_the_base():
    emb, logits = _data()
    torch.manual_seed(1)
    full = create_method("pred-net-logits", embed_dim=16, num_classes=10, width=8, depth=1)
    torch.nn.init.normal_(full.net[-1].weight)  # a "trained" non-zero correction
    p_top1 = torch.softmax(logits, 1).max(1).values
    with torch.no_grad():
        correction = full.net(torch.cat([emb, logit_stats(logits)], 1)).squeeze(-1)
        for c in (0.0, 0.3, 1.0):
            head = create_method("pred-net-logits", embed_dim=16, num_classes=10, width=8, depth=1, correction=c)
            head.load_state_dict(full.state_dict())
            expected = torch.nn.functional.softplus(4.0 * (1 - p_top1) + c * correction) + 1e-6
            torch.testing.assert_close(head.uncertainty(emb, logits), expected)
    max_prob = create_method("max-prob", embed_dim=16, num_classes=10).uncertainty(emb, logits)
    assert spearmanr(head.uncertainty(emb, logits).detach().numpy(), max_prob.numpy()).statistic < 0.99
    head.correction = 0.0
    assert spearmanr(head.uncertainty(emb, logits).detach().numpy(), max_prob.numpy()).statistic == pytest.approx(1.0)
    with pytest.raises(ValueError, match="correction must be in"):
        create_method("pred-net-logits", embed_dim=4, num_classes=3, correction=1.5)


def test_stats_inputs_see_only_the_logit_statistics_and_the_embedding_norm():
    emb, logits = _data()
    torch.manual_seed(2)
    head = create_method("pred-net-logits", embed_dim=16, num_classes=10, width=8, depth=1, inputs="stats")
    torch.nn.init.normal_(head.net[-1].weight)
    assert head.net[0].in_features == 4  # 3 statistics + log(1 + ||e||), whatever the embedding's width
    with torch.no_grad():
        features = torch.cat([logit_stats(logits), torch.log1p(torch.linalg.vector_norm(emb, dim=1, keepdim=True))], 1)
        p_top1 = torch.softmax(logits, 1).max(1).values
        expected = torch.nn.functional.softplus(4.0 * (1 - p_top1) + head.net(features).squeeze(-1)) + 1e-6
        torch.testing.assert_close(head.uncertainty(emb, logits), expected)
        # the direction of the embedding (its class identity) is invisible: a rotation changes nothing
        rotation = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(3)))[0]
        torch.testing.assert_close(head.uncertainty(emb @ rotation, logits), expected)
    with pytest.raises(ValueError, match="inputs must be one of"):
        create_method("pred-net-logits", embed_dim=4, num_classes=3, inputs="logits")


@pytest.mark.parametrize("inputs", ["embedding", "stats"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_float64_or_bfloat16_head_gives_the_float32_heads_answer(inputs, dtype):
    # model.double() / model.to(bfloat16) worked for every method but this one (dtype mismatch in the MLP)
    emb, logits = _data()
    head = create_method("pred-net-logits", embed_dim=16, num_classes=10, width=8, depth=2, inputs=inputs)
    with torch.no_grad():
        for p in head.net.parameters():
            p.normal_()  # a trained-looking correction, so the MLP's dtype matters
        reference = head.uncertainty(emb, logits)
        cast = head.to(dtype).uncertainty(emb.to(dtype), logits.to(dtype))
    tol = 1e-5 if dtype == torch.float64 else 0.1
    torch.testing.assert_close(cast.float(), reference, rtol=tol, atol=tol)
