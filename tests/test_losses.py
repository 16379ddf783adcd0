"""Losses: hand-computed values (numpy/scipy references), gradients, invariances, factory and bad inputs."""

from __future__ import annotations

import copy
import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import special
from torch import nn

from uncertain_repr import losses as L
from uncertain_repr.losses import LossBatch, sample_vmf

F64 = torch.float64


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


def np_ce(logits: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-sample -sum_c q_c log softmax(z)_c."""
    logp = logits - special.logsumexp(logits, axis=1, keepdims=True)
    return -(probs * logp).sum(1)


def one_hot(y: np.ndarray, c: int) -> np.ndarray:
    return np.eye(c)[y]


def np_log_c(kappa: np.ndarray, dim: int) -> np.ndarray:
    v = dim / 2 - 1
    return v * np.log(kappa) - dim / 2 * np.log(2 * np.pi) - (np.log(special.ive(v, kappa)) + kappa)


def batch(b=6, d=4, c=3, dtype=torch.float32, seed=0, unc_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    clf = nn.Linear(d, c).to(dtype)
    with torch.no_grad():
        clf.weight.copy_(torch.randn(c, d, generator=g, dtype=dtype) * 2)
    emb = torch.randn(b, d, generator=g, dtype=dtype)
    unc = (torch.rand(b, generator=g, dtype=dtype) + 0.2) * unc_scale
    y = torch.randint(0, c, (b,), generator=g)
    return LossBatch(emb, unc, clf(emb), clf), y


# --------------------------------------------------------------------------------------------- cross-entropy
def test_cross_entropy_hand_case():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    y = torch.tensor([0, 1])
    out = SimpleNamespace(embedding=torch.zeros(2, 4), uncertainty=torch.ones(2), logits=logits)  # no classifier
    got = L.CrossEntropy()(out, y)
    manual = np.mean([-2.0 + np.log(np.exp(2) + 1 + np.exp(-1)), -0.5 + np.log(2 * np.exp(0.5) + np.exp(3))])
    assert got.item() == pytest.approx(manual, rel=1e-6)


def test_cross_entropy_smoothing_soft_targets_and_temperature():
    out, y = batch(b=5, c=4, seed=1)
    z = _np(out.logits)
    eps, tau = 0.1, 2.0
    got = L.CrossEntropy(label_smoothing=eps, inv_temp=tau)(out, y).item()
    q = (1 - eps) * one_hot(y.numpy(), 4) + eps / 4
    assert got == pytest.approx(np_ce(tau * z, q).mean(), rel=1e-6)
    # original LabelSmoothingCrossEntropy form: (1-eps) NLL + eps mean_c(-log p_c)
    logp = tau * z - special.logsumexp(tau * z, axis=1, keepdims=True)
    legacy = (1 - eps) * -logp[np.arange(5), y.numpy()] + eps * -logp.mean(1)
    assert got == pytest.approx(legacy.mean(), rel=1e-6)
    counts = torch.tensor([[3.0, 1, 0, 0], [0, 0, 5, 5], [1, 1, 1, 1], [0, 2, 0, 0], [7, 0, 0, 1]])
    soft = L.CrossEntropy()(out, counts).item()
    assert soft == pytest.approx(np_ce(z, _np(counts) / _np(counts).sum(1, keepdims=True)).mean(), rel=1e-6)


def test_cross_entropy_shift_invariance_and_gradcheck():
    out, y = batch(b=4, c=5, dtype=F64)
    ce = L.CrossEntropy(label_smoothing=0.2)
    shifted = LossBatch(out.embedding, out.uncertainty, out.logits + torch.randn(4, 1, dtype=F64) * 10)
    torch.testing.assert_close(ce(out, y), ce(shifted, y))
    logits = out.logits.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda z: ce(LossBatch(out.embedding, out.uncertainty, z), y), (logits,))


def test_logits_from_classifier_when_missing():
    out, y = batch()
    via_clf = LossBatch(out.embedding, out.uncertainty, None, out.classifier)
    torch.testing.assert_close(L.CrossEntropy()(via_clf, y), L.CrossEntropy()(out, y))
    with pytest.raises(ValueError, match="needs output.logits or output.classifier"):
        L.CrossEntropy()(LossBatch(out.embedding, out.uncertainty), y)


# ----------------------------------------------------------------------------------------- loss prediction
def test_losspred_hand_case_and_classifier_term():
    out, y = batch(b=5, c=4, seed=2)
    z, u = _np(out.logits), _np(out.uncertainty)
    ce = np_ce(0.5 * z, one_hot(y.numpy(), 4))
    got = L.LossPred(lambda_value=0.3, inv_temp=0.5)(out, y).item()
    assert got == pytest.approx(0.3 * np.mean((u - ce) ** 2), rel=1e-5)
    got = L.LossPred(lambda_value=0.3, inv_temp=0.5, train_classifier=True)(out, y).item()
    assert got == pytest.approx(ce.mean() + 0.3 * np.mean((u - ce) ** 2), rel=1e-5)


def test_riskpred_is_the_url_era_formula_by_hand():
    # RiskPrediction of the original (URL era): mean CE(z, y) + lambda * mean((u - CE_detached)^2), no temperature
    z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]], requires_grad=True)
    y = torch.tensor([0, 2])
    u = torch.tensor([0.1, 2.0])
    ce = [math.log(math.exp(2) + 1 + math.exp(-1)) - 2, math.log(2 * math.exp(0.5) + 1)]
    expected = (ce[0] + ce[1]) / 2 + 0.25 * ((0.1 - ce[0]) ** 2 + (2.0 - ce[1]) ** 2) / 2
    loss = L.create("riskpred", lambda_value=0.25)(LossBatch(torch.zeros(2, 4), u, z), y)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()  # the uncertainty term is detached from the logits: d/dz is the CE gradient only
    p = torch.softmax(z.detach(), 1)
    torch.testing.assert_close(z.grad, (p - torch.nn.functional.one_hot(y, 3)) / 2)
    with pytest.raises(TypeError, match="inv_temp"):
        L.create("riskpred", inv_temp=2.0)


@pytest.mark.parametrize("name", ["losspred", "losspred-order", "riskpred"])
def test_negative_lambda_is_refused(name):  # it would train the uncertainty to predict the opposite
    with pytest.raises(ValueError, match="lambda_value must be >= 0"):
        L.create(name, lambda_value=-1.0)


@pytest.mark.parametrize("cls", [L.LossPred, L.LossPredOrder])
def test_task_loss_is_detached(cls):
    out, y = batch(b=6)
    logits = out.logits.detach().requires_grad_()
    unc = out.uncertainty.clone().requires_grad_()
    cls()(LossBatch(out.embedding, unc, logits), y).backward()
    assert logits.grad is None or torch.all(logits.grad == 0)
    assert unc.grad is not None and unc.grad.abs().sum() > 0
    logits.grad = None
    cls(train_classifier=True)(LossBatch(out.embedding, unc, logits), y).backward()
    assert logits.grad.abs().sum() > 0


def np_order(losses, u, pairs, margin, leeway):
    total = 0.0
    for i, j in pairs:
        d = losses[i] - losses[j]
        if d == 0 or abs(d) < leeway:
            continue
        total += max(0.0, margin - np.sign(d) * (u[i] - u[j]))
    return total / len(pairs)


@pytest.mark.parametrize("pairing", ["consecutive", "all"])
@pytest.mark.parametrize("b", [2, 5, 8])
def test_losspred_order_matches_reference(pairing, b):
    out, y = batch(b=b, c=3, seed=b)
    ce = np_ce(_np(out.logits), one_hot(y.numpy(), 3))
    pairs = [(i, i + 1) for i in range(0, b - 1, 2)] if pairing == "consecutive" else list(
        itertools.combinations(range(b), 2))
    loss = L.LossPredOrder(margin=0.2, leeway=0.05, pairing=pairing, lambda_value=2.0)
    want = 2.0 * np_order(ce, _np(out.uncertainty), pairs, 0.2, 0.05)
    assert loss(out, y).item() == pytest.approx(want, rel=1e-5, abs=1e-7)


def test_losspred_order_hand_case_ties_and_leeway():
    # per-sample CE from explicit logits: samples 0,1 tie exactly; samples 2,3 differ (2 is worse)
    logits = torch.tensor([[3.0, 0.0], [3.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    y = torch.tensor([0, 0, 0, 0])
    unc = torch.tensor([0.5, 0.1, 0.3, 0.35], requires_grad=True)
    out = LossBatch(torch.zeros(4, 2), unc, logits)
    loss = L.LossPredOrder(margin=0.1)(out, y)
    # pair (0,1): tie -> 0; pair (2,3): s=+1, hinge = max(0, 0.1 - (0.3 - 0.35)) = 0.15; mean over 2 pairs
    assert loss.item() == pytest.approx(0.15 / 2, rel=1e-6)
    loss.backward()
    torch.testing.assert_close(unc.grad, torch.tensor([0.0, 0.0, -0.5, 0.5]))
    ce_gap = np.log1p(np.exp(1.0)) - np.log1p(np.exp(-2.0))  # = 1.19
    assert L.LossPredOrder(leeway=ce_gap + 0.01)(out, y).item() == 0.0
    assert L.LossPredOrder(leeway=ce_gap - 0.01)(out, y).item() == pytest.approx(0.075, rel=1e-5)


def test_losspred_order_pair_permutation_invariance():
    out, y = batch(b=8, seed=3)
    perm = torch.tensor([5, 4, 0, 1, 7, 6, 2, 3])  # permute pairs and swap inside some of them
    permuted = LossBatch(out.embedding[perm], out.uncertainty[perm], out.logits[perm])
    cons = L.LossPredOrder()
    torch.testing.assert_close(cons(out, y), cons(permuted, y[perm]))
    allp = L.LossPredOrder(pairing="all")
    shuffle = torch.randperm(8)
    shuffled = LossBatch(out.embedding[shuffle], out.uncertainty[shuffle], out.logits[shuffle])
    torch.testing.assert_close(allp(out, y), allp(shuffled, y[shuffle]))
    broken = torch.tensor([1, 2, 0, 3, 4, 5, 6, 7])  # breaks pairs: the consecutive loss changes
    changed = LossBatch(out.embedding[broken], out.uncertainty[broken], out.logits[broken])
    assert not torch.allclose(cons(out, y), cons(changed, y[broken]))


def test_losspred_order_gradcheck_and_soft_targets():
    out, y = batch(b=6, dtype=F64, seed=4)
    unc = out.uncertainty.detach().requires_grad_()
    loss = L.LossPredOrder(pairing="all", margin=5.0)  # large margin: every hinge is active (smooth region)
    assert torch.autograd.gradcheck(lambda u: loss(LossBatch(out.embedding, u, out.logits), y), (unc,))
    counts = torch.tensor([[1.0, 2, 0], [0, 0, 3], [1, 1, 1], [4, 0, 0], [0, 5, 1], [2, 2, 0]], dtype=F64)
    ce = np_ce(_np(out.logits), _np(counts) / _np(counts).sum(1, keepdims=True))
    want = np_order(ce, _np(unc), list(itertools.combinations(range(6), 2)), 5.0, 0.0)
    assert loss(out, counts).item() == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name, kwargs", [("losspred-order", {"pairing": "all"}), ("losspred", {}),
                                          ("cross-entropy", {"inv_temp": 30.0})])
def test_half_precision_inputs_are_computed_in_float32(dtype, name, kwargs):
    # 64 near-uniform 1000-class rows: their CEs (~6.9) differ by < 0.1, finer than bf16's spacing of 0.03,
    # so a bf16 computation turns most pairs into ties; soft targets go through log_softmax (bf16 under CPU
    # autocast). inv_temp * logits overflows float16 (max 65504).
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(64, 1000, generator=g) * (0.05 if name != "cross-entropy" else 3000.0)).to(dtype)
    unc = torch.rand(64, generator=g).to(dtype)
    y = torch.randint(0, 1000, (64,), generator=g)
    soft = torch.zeros(64, 1000).index_put_((torch.arange(64), torch.randint(0, 1000, (64,), generator=g)),
                                            torch.tensor(1.0)).index_put_((torch.arange(64), y), torch.tensor(3.0),
                                                                          accumulate=True)  # vote counts
    loss = L.create(name, **kwargs)
    for target in (y, soft):
        want = loss(LossBatch(torch.zeros(64, 2, dtype=F64), unc.double(), logits.double()), target.double()
                    if target.is_floating_point() else target)
        got = loss(LossBatch(torch.zeros(64, 2, dtype=dtype), unc, logits), target)
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(want.item(), rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_info_nce_half_precision_inputs_are_computed_in_float32(dtype):
    emb = torch.randn(64, 16, generator=torch.Generator().manual_seed(1)).to(dtype)
    loss = L.InfoNCE(kappa=30.0)
    want = loss(LossBatch(emb.double(), torch.ones(64, dtype=F64)), None)
    got = loss(LossBatch(emb, torch.ones(64, dtype=dtype)), None)
    assert got.dtype == torch.float32 and got.item() == pytest.approx(want.item(), rel=1e-5)


# -------------------------------------------------------------------------------------------------- ELK
def test_elk_matches_naive_numpy():
    out, y = batch(b=5, d=6, c=4, dtype=F64, seed=5, unc_scale=0.3)
    f, w, u = _np(out.embedding), _np(out.classifier.weight), _np(out.uncertainty)
    mu_i = f / np.linalg.norm(f, axis=1, keepdims=True)
    k_i = 1 / u
    w_norm = np.linalg.norm(w, axis=1)
    mu_c, k_c = w / w_norm[:, None], np.maximum(w_norm, 1) * 1.7
    joint = np.linalg.norm(k_i[:, None, None] * mu_i[:, None] + k_c[None, :, None] * mu_c[None], axis=2)  # [B,C,D]
    sim = np_log_c(k_i, 6)[:, None] + np_log_c(k_c, 6)[None] - np_log_c(joint, 6)
    loss = L.ExpectedLikelihoodKernel(inv_temp=1.7)
    np.testing.assert_allclose(_np(loss.similarities(out)), sim, rtol=1e-10)
    assert loss(out, y).item() == pytest.approx(np_ce(sim, one_hot(y.numpy(), 4)).mean(), rel=1e-10)


def test_elk_gradcheck():
    out, y = batch(b=3, d=5, c=4, dtype=F64, seed=6, unc_scale=0.5)
    emb, unc = out.embedding.detach().requires_grad_(), out.uncertainty.detach().requires_grad_()
    clf = out.classifier
    loss = L.ExpectedLikelihoodKernel(inv_temp=2.0)
    assert torch.autograd.gradcheck(lambda e, u: loss(LossBatch(e, u, None, clf), y), (emb, unc))
    weight = clf.weight.detach().clone().requires_grad_()
    lin = lambda wt: SimpleNamespace(weight=wt)  # noqa: E731 - a classifier stand-in exposing .weight
    assert torch.autograd.gradcheck(lambda wt: loss(LossBatch(emb, unc, None, lin(wt)), y), (weight,))


def test_elk_large_dimension_is_finite():
    out, y = batch(b=8, d=768, c=10, seed=7, unc_scale=0.01)
    value = L.ExpectedLikelihoodKernel(inv_temp=30.0)(out, y)
    assert torch.isfinite(value)


# ------------------------------------------------------------------------------------------------- nivMF
def test_nivmf_deterministic_limit_matches_numpy():
    out, y = batch(b=4, d=6, c=3, dtype=F64, seed=8)
    out.uncertainty = torch.full((4,), 1e-20, dtype=F64)  # kappa = 1e20: every sample equals mu_i
    loss = L.NonIsotropicVMF(num_classes=3, embed_dim=6, inv_temp=2.0, n_samples=3)
    with torch.no_grad():
        loss.kappa.copy_(torch.rand(3, 6, dtype=F64) * 3 + 0.05)  # some entries below min_kappa
    f, w, kap = _np(out.embedding), _np(out.classifier.weight), _np(loss.kappa)
    x = f / np.linalg.norm(f, axis=1, keepdims=True)
    k = np.maximum(kap, 0.1)
    m = w / np.linalg.norm(w, axis=1, keepdims=True) * k
    n = np.linalg.norm(m, axis=1)
    sim = x @ m.T + np_log_c(n, 6) + np.log(k).sum(1) - 2 * np.log(n)
    np.testing.assert_allclose(_np(loss.similarities(out)), sim, rtol=1e-9)
    assert loss(out, y).item() == pytest.approx(np_ce(sim, one_hot(y.numpy(), 3)).mean(), rel=1e-9)


def test_nivmf_mc_average_matches_numpy_on_same_samples():
    out, y = batch(b=4, d=5, c=3, dtype=F64, seed=9)
    loss = L.NonIsotropicVMF(3, 5, inv_temp=1.5, n_samples=7, generator=torch.Generator().manual_seed(11))
    value = loss(out, y).item()
    f = out.embedding / out.embedding.norm(dim=1, keepdim=True)
    x = _np(sample_vmf(f, 1 / out.uncertainty, 7, torch.Generator().manual_seed(11)))
    m = _np(out.classifier.weight) / np.linalg.norm(_np(out.classifier.weight), axis=1, keepdims=True) * 1.5
    n = np.linalg.norm(m, axis=1)
    per = x @ m.T + np_log_c(n, 5) + 5 * np.log(1.5) - 2 * np.log(n)
    sim = special.logsumexp(per, axis=0) - np.log(7)
    assert value == pytest.approx(np_ce(sim, one_hot(y.numpy(), 3)).mean(), rel=1e-8)


def test_nivmf_gradcheck_and_learnable():
    out, y = batch(b=3, d=4, c=3, dtype=F64, seed=10)
    emb, unc = out.embedding.detach().requires_grad_(), out.uncertainty.detach().requires_grad_()

    def f(e, u):
        loss = L.NonIsotropicVMF(3, 4, n_samples=4, generator=torch.Generator().manual_seed(0)).double()
        return loss(LossBatch(e, u, None, out.classifier), y)

    assert torch.autograd.gradcheck(f, (emb, unc))
    fixed, learn = L.NonIsotropicVMF(3, 4), L.NonIsotropicVMF(3, 4, learnable=True)
    assert list(fixed.parameters()) == [] and "kappa" in fixed.state_dict()
    assert [p.shape for p in learn.parameters()] == [torch.Size([3, 4])]
    learn(out, y).backward()
    assert learn.kappa.grad is not None and learn.kappa.grad.abs().sum() > 0


# -------------------------------------------------------------------------------------------- contrastive
def np_info_nce(mu: np.ndarray, kappa: float, groups: np.ndarray) -> float:
    sim = kappa * mu @ mu.T
    terms = []
    for i in range(len(mu)):
        pos = [j for j in range(len(mu)) if j != i and groups[j] == groups[i]]
        if not pos:
            continue
        others = [j for j in range(len(mu)) if j != i]
        terms.append(np.log(np.exp(sim[i, pos]).sum()) - np.log(np.exp(sim[i, others]).sum()))
    return -float(np.mean(terms))


def test_info_nce_two_views_and_supervised():
    out, y = batch(b=6, d=5, seed=12)
    mu = _np(out.embedding) / np.linalg.norm(_np(out.embedding), axis=1, keepdims=True)
    got = L.InfoNCE(kappa=3.0)(out, y).item()
    assert got == pytest.approx(np_info_nce(mu, 3.0, np.arange(6) // 2), rel=1e-5)
    labels = torch.tensor([0, 1, 0, 2, 1, 1])  # sample 3 has no positive: not an anchor, still a negative
    got = L.InfoNCE(kappa=3.0, supervised=True)(out, labels).item()
    assert got == pytest.approx(np_info_nce(mu, 3.0, labels.numpy()), rel=1e-5)


def test_mc_info_nce_limits_and_samples():
    out, y = batch(b=6, d=5, dtype=F64, seed=13)
    exact = LossBatch(out.embedding, torch.zeros(6, dtype=F64))  # u = 0: kappa = inf, samples = mu
    torch.testing.assert_close(L.MCInfoNCE(kappa=4.0, n_samples=3)(exact, y), L.InfoNCE(kappa=4.0)(exact, y))
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    value = L.MCInfoNCE(kappa=4.0, n_samples=5, generator=gen())(out, y).item()
    x = _np(sample_vmf(out.embedding / out.embedding.norm(dim=1, keepdim=True), 1 / out.uncertainty, 5, gen()))
    sims = [4.0 * xs @ xs.T for xs in x]  # per-sample InfoNCE log-probabilities l_si, two-view pairs (i, i^1)
    lp = np.array([[s[i, i ^ 1] - np.log(np.exp(np.delete(s[i], i)).sum()) for i in range(6)] for s in sims])
    assert value == pytest.approx(-np.mean(special.logsumexp(lp, axis=0) - np.log(5)), rel=1e-10)


def test_contrastive_gradcheck():
    out, y = batch(b=4, d=3, dtype=F64, seed=14)
    emb, unc = out.embedding.detach().requires_grad_(), out.uncertainty.detach().requires_grad_()
    mc = lambda e, u: L.MCInfoNCE(kappa=2.0, n_samples=3,  # noqa: E731
                                  generator=torch.Generator().manual_seed(0)).double()(LossBatch(e, u), y)
    assert torch.autograd.gradcheck(mc, (emb, unc))
    hib = lambda e, u: L.HedgedInstance(kappa=2.0, bias=0.5, n_samples=3,  # noqa: E731
                                        generator=torch.Generator().manual_seed(0)).double()(LossBatch(e, u), y)
    assert torch.autograd.gradcheck(hib, (emb, unc))


def test_hib_deterministic_matches_numpy_and_is_stable():
    out, y = batch(b=6, d=4, dtype=F64, seed=15)
    exact = LossBatch(out.embedding, torch.zeros(6, dtype=F64))
    mu = _np(out.embedding) / np.linalg.norm(_np(out.embedding), axis=1, keepdims=True)
    p = 1 / (1 + np.exp(-(2.5 * mu @ mu.T - 0.75)))  # hyperparameters exact in float32 (buffer dtype)
    groups = np.arange(6) // 2
    terms = []
    for i in range(6):
        pos = [j for j in range(6) if j != i and groups[j] == groups[i]]
        neg = [j for j in range(6) if groups[j] != groups[i]]
        terms.append(np.mean(np.log(p[i, pos])) + np.mean(np.log(1 - p[i, neg])))
    got = L.HedgedInstance(kappa=2.5, bias=-0.75, n_samples=2)(exact, y).item()
    assert got == pytest.approx(-np.mean(terms), rel=1e-10)
    extreme = L.HedgedInstance(kappa=100.0, bias=50.0, n_samples=2)(exact, y)  # p -> 1: original gave NaN
    assert torch.isfinite(extreme) and extreme.item() > 10


def test_learnable_switch_for_scalar_hyperparameters():
    for cls in (L.InfoNCE, L.MCInfoNCE, L.HedgedInstance):
        assert list(cls().parameters()) == []
        assert "kappa" in cls().state_dict()
        assert len(list(cls(learnable=True).parameters())) == (2 if cls is L.HedgedInstance else 1)
    out, y = batch(b=4)
    loss = L.HedgedInstance(learnable=True)
    loss(out, y).backward()
    assert loss.kappa.grad is not None and loss.bias.grad is not None


# ------------------------------------------------------------------------------------ factory and contract
def test_factory_names_and_errors():
    assert L.list_losses() == sorted(["losspred-order", "losspred", "riskpred", "nivmf", "elk", "hib", "mcinfonce",
                                      "infonce", "cross-entropy"])
    assert isinstance(L.create("losspred-order", leeway=0.1, pairing="all"), L.LossPredOrder)
    assert L.create("nivmf", num_classes=3, embed_dim=4).kappa.shape == (3, 4)
    with pytest.raises(ValueError, match="unknown loss 'vmf'.*cross-entropy.*losspred-order"):
        L.create("vmf")
    with pytest.raises(TypeError, match="unknown hyperparameter.*gap"):
        L.create("losspred-order", gap=0.1)


def test_every_loss_accepts_the_same_call():
    out, y = batch(b=6, d=8, c=3)
    out.embedding.requires_grad_()
    assert isinstance(out, L.LossInput)
    for name in L.list_losses():
        loss = L.create(name, **({"num_classes": 3, "embed_dim": 8} if name == "nivmf" else {}))
        value = loss(out, y)
        assert value.dim() == 0 and torch.isfinite(value), name


BAD = [
    ("losspred-order", lambda o, y: (LossBatch(o.embedding[:1], o.uncertainty[:1], o.logits[:1]), y[:1]),
     ValueError, "batch size must be >= 2"),
    ("losspred", lambda o, y: (LossBatch(o.embedding[:0], o.uncertainty[:0], o.logits[:0]), y[:0]),
     ValueError, "batch size must be >= 1"),
    ("losspred-order", lambda o, y: (LossBatch(o.embedding, -o.uncertainty, o.logits), y),
     ValueError, "non-negative"),
    ("losspred", lambda o, y: (LossBatch(o.embedding, o.uncertainty[:3], o.logits), y),
     ValueError, r"uncertainty must have shape \[6\]"),
    ("losspred", lambda o, y: (LossBatch(o.embedding, o.uncertainty[:, None], o.logits), y),
     ValueError, "must have 1 dimension"),
    ("cross-entropy", lambda o, y: (o, y + 3), ValueError, r"class ids must be in \[0, 3\)"),
    ("cross-entropy", lambda o, y: (o, y[:4]), ValueError, r"target must have shape \[6\]"),
    ("cross-entropy", lambda o, y: (o, y.float()), ValueError, r"soft target must have shape \[6, 3\]"),
    ("cross-entropy", lambda o, y: (o, y.bool()), TypeError, "integer class-id"),
    ("cross-entropy", lambda o, y: (o, torch.zeros(6, 3)), ValueError, "positive sum"),
    ("cross-entropy", lambda o, y: (LossBatch(o.embedding.long(), o.uncertainty, o.logits), y),
     TypeError, "embedding must be a floating-point"),
    ("elk", lambda o, y: (LossBatch(o.embedding, torch.zeros(6), None, o.classifier), y), ValueError, "> 0"),
    ("elk", lambda o, y: (LossBatch(o.embedding, o.uncertainty, o.logits), y), ValueError, "classifier"),
    ("elk", lambda o, y: (LossBatch(o.embedding[:, :4], o.uncertainty, None, o.classifier), y),
     ValueError, r"weight must have shape \[C, 4\]"),
    ("infonce", lambda o, y: (LossBatch(o.embedding[:5], o.uncertainty[:5]), y[:5]), ValueError, "even batch"),
    ("mcinfonce", lambda o, y: (LossBatch(o.embedding[:1], o.uncertainty[:1]), y[:1]), ValueError, ">= 2"),
    ("hib", lambda o, y: (LossBatch(o.embedding, o.uncertainty * float("nan")), y), ValueError, "finite"),
]


@pytest.mark.parametrize("name,mutate,error,match", BAD)
def test_bad_inputs(name, mutate, error, match):
    out, y = batch(b=6, d=8, c=3)
    with pytest.raises(error, match=match):
        L.create(name)(*mutate(out, y))


def test_supervised_contrastive_bad_targets():
    out, _ = batch(b=4)
    with pytest.raises(ValueError, match="no positive pair"):
        L.InfoNCE(supervised=True)(out, torch.arange(4))
    with pytest.raises(TypeError, match="integer class-id"):
        L.HedgedInstance(supervised=True)(out, torch.rand(4, 3))


def test_nivmf_checks_classifier_shape():
    out, y = batch(b=4, d=8, c=3)
    with pytest.raises(ValueError, match=r"weight must have shape \(5, 8\)"):
        L.NonIsotropicVMF(5, 8)(out, y)


@pytest.mark.parametrize("kwargs,match", [({"pairing": "random"}, "pairing"), ({"margin": 0.0}, "margin"),
                                          ({"leeway": -1.0}, "leeway")])
def test_losspred_order_bad_hparams(kwargs, match):
    with pytest.raises(ValueError, match=match):
        L.LossPredOrder(**kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    out, y = batch(b=6, d=8, c=3, dtype=F64)
    dev = torch.device("cuda")
    gpu_classifier = copy.deepcopy(out.classifier).to(dev)
    gpu = LossBatch(out.embedding.to(dev), out.uncertainty.to(dev), out.logits.to(dev), gpu_classifier)
    for name in L.list_losses():
        kw = {"num_classes": 3, "embed_dim": 8} if name == "nivmf" else {}
        if name in ("nivmf", "mcinfonce", "hib"):  # the same CPU generator stream on both devices
            kw["generator"] = torch.Generator().manual_seed(0)
        want = L.create(name, **kw).double()(out, y)
        if "generator" in kw:
            kw["generator"] = torch.Generator().manual_seed(0)
        got = L.create(name, **kw).double().to(dev)(gpu, y.to(dev))
        assert got.device.type == "cuda", name
        torch.testing.assert_close(got.cpu(), want, rtol=1e-9, atol=1e-9, msg=name)
