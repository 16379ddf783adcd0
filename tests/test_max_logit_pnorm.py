"""max-logit-pnorm and pred-net-logits' pnorm term: against a numpy reference of the formula, through a
checkpoint saved and loaded, and refusing a bad order or weight."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

import uncertain_repr as ur
from uncertain_repr.methods import create_method, list_methods


def _reference(logits: np.ndarray, p: float) -> np.ndarray:
    """1 - max_c z_c / (sum_c |z_c|^p)^(1/p), z = logits minus their row mean (Cattelan & Silva 2024), in float64."""
    z = logits.astype(np.float64) - logits.astype(np.float64).mean(1, keepdims=True)
    return 1 - z.max(1) / (np.abs(z) ** p).sum(1) ** (1 / p)


@pytest.mark.parametrize("p", [1.0, 2.0, 4.0, 6.5])
def test_max_logit_pnorm_matches_the_formula(p):
    logits = torch.randn(40, 9, generator=torch.Generator().manual_seed(0)) * 4
    method = create_method("max-logit-pnorm", embed_dim=None, num_classes=9, p=p)
    assert "max-logit-pnorm" in list_methods()
    got = method.uncertainty(torch.zeros(40, 3), logits)
    np.testing.assert_allclose(got.numpy(), _reference(logits.numpy(), p), rtol=1e-5, atol=1e-6)
    assert bool((got >= 0).all() & (got <= 1).all())


def test_max_logit_pnorm_is_one_for_equal_logits_and_does_not_rank_as_max_prob():
    method = create_method("max-logit-pnorm", embed_dim=None, num_classes=3, p=4.0)
    torch.testing.assert_close(method.uncertainty(torch.zeros(2, 3), torch.full((2, 3), 7.0)), torch.ones(2))
    # by hand: max-prob 1 - e/(e+2) = 0.42 and 1 - e^2/(e^2+1+e^-30) = 0.12; the scale-free p-norm score
    # 1 - (2/3)/(0.2222)^(1/4) = 0.03 and 1 - 11.33/(11.33^4+9.33^4+20.67^4)^(1/4) = 0.47: the two disagree
    logits = torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, -30.0]])
    mp = 1 - torch.softmax(logits, -1).amax(-1)
    pn = method.uncertainty(torch.zeros(2, 3), logits)
    np.testing.assert_allclose(pn.numpy(), [0.0290, 0.4684], atol=1e-4)
    assert mp[0] > mp[1] and pn[0] < pn[1]


@pytest.mark.parametrize("bad", [0.5, 0, float("nan"), float("inf"), True, "4"])
def test_refuses_an_order_that_is_not_a_norm(bad):
    with pytest.raises(ValueError, match=r"max-logit-pnorm: p must be a finite number >= 1"):
        create_method("max-logit-pnorm", embed_dim=None, num_classes=3, p=bad)
    with pytest.raises(ValueError, match=r"pnorm_p must be a finite number >= 1"):
        create_method("pred-net-logits", embed_dim=12, num_classes=7, pnorm=1.0, pnorm_p=bad)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_refuses_a_bad_pnorm_weight(bad):
    with pytest.raises(ValueError, match="pnorm must be a finite number >= 0"):
        create_method("pred-net-logits", embed_dim=12, num_classes=7, pnorm=bad)


def test_pnorm_term_adds_its_weight_times_scale_with_and_without_the_prototype_term():
    g = torch.Generator().manual_seed(0)
    emb, linear = torch.randn(32, 12, generator=g), nn.Linear(12, 7)
    head = create_method("pred-net-logits", embed_dim=12, num_classes=7, width=8)
    torch.manual_seed(1)
    for param in head.net.parameters():  # a trained-looking head: a non-zero correction
        nn.init.normal_(param, std=0.3)
    head.scale.fill_(2.5)
    with torch.no_grad():
        logits = linear(emb)
        for prototype in (0.0, 0.5):
            plain = create_method("pred-net-logits", embed_dim=12, num_classes=7, width=8, prototype=prototype)
            term = create_method("pred-net-logits", embed_dim=12, num_classes=7, width=8, prototype=prototype,
                                 pnorm=0.75, pnorm_p=6.0)
            plain.load_state_dict(head.state_dict())
            term.load_state_dict(head.state_dict())
            expected = plain(emb, linear)[0].numpy() + 0.75 * 2.5 * _reference(logits.numpy(), 6.0)
            np.testing.assert_allclose(term(emb, linear)[0].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_a_checkpoint_with_the_term_loads_with_the_same_uncertainties(tmp_path):
    model = ur.Uncertainizer(timm.create_model("test_resnet", num_classes=7), "pred-net-logits", width=8,
                             pnorm=0.5, pnorm_p=6.0).eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    loaded = ur.load_model(model.save_pretrained(tmp_path / "ckpt")).eval()
    assert (loaded.method.pnorm, loaded.method.pnorm_p) == (0.5, 6.0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).uncertainty, model(x).uncertainty)
        emb = model(x).embedding
        without = model.method._head(emb, model.classifier(emb)) - 0.5 * model.method.scale * torch.from_numpy(
            _reference(model.classifier(emb).numpy(), 6.0)).float()
        model.method.pnorm = 0.0
        torch.testing.assert_close(model.method._head(emb, model.classifier(emb)), without, rtol=1e-5, atol=1e-5)
