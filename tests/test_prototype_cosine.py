"""prototype-cosine and pred-net-logits' prototype term: against sklearn's cosine similarity, through a model, saved
and loaded, and refusing what they cannot score."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics.pairwise import cosine_similarity
from torch import nn

import uncertain_repr as ur
from uncertain_repr.methods import create_method, list_methods


def _data(n=32, d=12, c=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    linear = nn.Linear(d, c)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(c, d, generator=g))
    return torch.randn(n, d, generator=g), linear


def _reference(emb: torch.Tensor, linear: nn.Linear) -> np.ndarray:
    """1 - cos(e_i, w_k(i)) with k(i) the argmax of the logits, by sklearn."""
    with torch.no_grad():
        k = linear(emb).argmax(1).numpy()
    cos = cosine_similarity(emb.numpy().astype(np.float64), linear.weight.detach().numpy().astype(np.float64))
    return 1 - cos[np.arange(len(k)), k]


def test_prototype_cosine_matches_sklearn_for_a_linear_and_a_dropout_sequential():
    emb, linear = _data()
    method = create_method("prototype-cosine", embed_dim=12, num_classes=7)
    assert "prototype-cosine" in list_methods()
    for classifier in (linear, nn.Sequential(nn.Dropout(0.5), linear).eval()):
        with torch.no_grad():
            unc, logits = method(emb, classifier)
        np.testing.assert_allclose(unc.numpy(), _reference(emb, linear), atol=1e-6)
        torch.testing.assert_close(logits, linear(emb).detach())
    assert bool((unc >= 0).all() & (unc <= 2).all())


def test_prototype_term_adds_its_weight_times_scale_to_the_head():
    emb, linear = _data()
    head = create_method("pred-net-logits", embed_dim=12, num_classes=7, width=8, prototype=0.0)
    torch.manual_seed(1)
    for p in head.net.parameters():  # a trained-looking head: a non-zero correction
        nn.init.normal_(p, std=0.3)
    head.scale.fill_(2.5)
    with_term = create_method("pred-net-logits", embed_dim=12, num_classes=7, width=8, prototype=0.75)
    with_term.load_state_dict(head.state_dict())
    with torch.no_grad():
        expected = head.uncertainty(emb, linear(emb)).numpy() + 0.75 * 2.5 * _reference(emb, linear)
        got, logits = with_term(emb, linear)
        torch.testing.assert_close(logits, linear(emb))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="prototype=0.75 needs the classifier's weights"):
        with_term.uncertainty(emb, linear(emb))  # would silently drop the term


def test_stopgrad_keeps_the_prototype_term_away_from_the_classifier():
    emb, linear = _data()
    head = create_method("pred-net-logits", embed_dim=12, num_classes=7, width=8, prototype=1.0)
    unc, logits = head(emb.requires_grad_(), linear, stopgrad=True)
    unc.sum().backward()
    assert linear.weight.grad is None and emb.grad is None
    unc, logits = head(emb, linear)
    unc.sum().backward()
    assert linear.weight.grad is not None and float(linear.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("classifier, match", [
    (nn.Sequential(nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 7)), "needs a classifier that is an nn.Linear"),
    (None, "needs a classifier that is an nn.Linear"),
])
def test_refuses_a_classifier_whose_rows_are_not_embedding_directions(classifier, match):
    emb, _ = _data()
    for method in (create_method("prototype-cosine", embed_dim=12, num_classes=7),
                   create_method("pred-net-logits", embed_dim=12, num_classes=7, width=8, prototype=0.5)):
        with pytest.raises(ValueError, match=match):
            method(emb, classifier)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_refuses_a_bad_prototype_weight(bad):
    with pytest.raises(ValueError, match="prototype must be a finite number >= 0"):
        create_method("pred-net-logits", embed_dim=12, num_classes=7, prototype=bad)


def test_a_model_with_the_term_saves_and_loads_with_the_same_uncertainties(tmp_path):
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 12))
    model = ur.Uncertainizer(backbone, "pred-net-logits", classifier=nn.Linear(12, 7), width=8, prototype=0.5).eval()
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        emb, unc = model(x)
        np.testing.assert_allclose(unc.numpy() - model.method._head(emb, model.classifier(emb)).numpy(),
                                   0.5 * _reference(emb, model.classifier), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model(embedding=emb).uncertainty, unc)  # cached embeddings: the same path
    assert model.config["method_args"]["prototype"] == 0.5


def test_benchmark_scores_prototype_cosine_beside_the_models_own_method():
    """``benchmark --methods pred-net-logits,prototype-cosine``: the added free method reads the model's classifier."""
    from uncertain_repr.benchmark.collect import collect, resolve_methods

    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 12))
    model = ur.Uncertainizer(backbone, "pred-net-logits", classifier=nn.Linear(12, 7), width=8, prototype=0.5).eval()
    methods = resolve_methods(model, ["pred-net-logits", "prototype-cosine"])
    x = torch.randn(6, 3, 8, 8)
    batch = {"image": x, "label": torch.arange(6) % 7, "index": torch.arange(6)}
    out = collect(model, methods, [batch], dataset="toy", keep_logits=True, device=torch.device("cpu"))
    with torch.no_grad():
        emb, unc = model(x)
    np.testing.assert_allclose(out.uncertainties[1], _reference(emb, model.classifier), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.uncertainties[0], unc.numpy(), rtol=1e-6)
