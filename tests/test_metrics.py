"""uncertain_repr.metrics against independent references (sklearn, scipy, dense brute force)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from uncertain_repr import metrics as M
from uncertain_repr.metrics import UndefinedMetricWarning

FAST = settings(max_examples=50, deadline=None)


def brute_force_nn(x: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Dense float64 1-NN with the query excluded by index; lowest index among exact ties."""
    x = x.astype(np.float64)
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
        score = x @ x.T
    else:
        score = -((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(score, -np.inf)
    return score.argmax(axis=1)


# ----------------------------------------------------------------------------------------- AUROC
def test_auroc_hand_computed():
    # pairs (pos, neg): (0.8 vs 0.1) 1, (0.8 vs 0.4) 1, (0.4 vs 0.1) 1, (0.4 vs 0.4) 1/2 -> 3.5 / 4
    assert M.auroc([0.1, 0.4, 0.4, 0.8], [False, False, True, True]) == 0.875
    assert M.auroc(np.array([3.0, 1.0]), np.array([1, 0])) == 1.0
    assert M.auroc(torch.tensor([3.0, 1.0]), torch.tensor([False, True])) == 0.0


@FAST
@given(
    arrays(np.float64, st.integers(2, 300), elements=st.floats(-1e300, 1e300)),
    st.integers(0, 2**32 - 1),
)
def test_auroc_equals_sklearn(scores, seed):
    rng = np.random.default_rng(seed)
    positives = rng.random(scores.size) < rng.uniform(0.05, 0.95)
    positives[:2] = [True, False]
    assert M.auroc(scores, positives) == pytest.approx(roc_auc_score(positives, scores), abs=1e-12)


@FAST
@given(st.integers(2, 2000), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_auroc_heavily_tied_equals_sklearn(n, levels, seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, n).astype(np.float32)
    positives = rng.random(n) < 0.3
    positives[:2] = [True, False]
    assert M.auroc(scores, positives) == pytest.approx(roc_auc_score(positives, scores), abs=1e-12)


def test_auroc_large_magnitudes_do_not_saturate():
    # The original's sigmoid made these all ties (-> 0.5); ranks keep the perfect ordering.
    scores = np.array([-1e4, -5e3, 200.0, 300.0, 1e4])
    assert M.auroc(scores, [0, 0, 1, 1, 1]) == 1.0


def test_auroc_single_class_is_nan_with_warning():
    with pytest.warns(UndefinedMetricWarning, match="only positives"):
        assert np.isnan(M.auroc([0.1, 0.2], [True, True]))
    with pytest.warns(UndefinedMetricWarning, match="only negatives"):
        assert np.isnan(M.auroc([0.1, 0.2], [0, 0]))


def test_auroc_ood():
    assert M.auroc_ood([0.1, 0.2], [0.3, 0.4, 0.15]) == pytest.approx(5 / 6)
    unc_id, unc_ood = np.random.rand(50), np.random.rand(70) + 0.2
    ref = roc_auc_score(np.r_[np.zeros(50), np.ones(70)], np.r_[unc_id, unc_ood])
    assert M.auroc_ood(torch.from_numpy(unc_id), unc_ood) == pytest.approx(ref, abs=1e-12)


# ------------------------------------------------------------------------------------------- 1-NN
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_nearest_neighbor_equals_brute_force_with_duplicates_and_zeros(metric):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((120, 7)).astype(np.float32)
    x[10] = x[3]  # exact duplicates (different labels below)
    x[11] = x[3]
    x[20] = 0.0  # zero vectors
    x[21] = 0.0
    x[30] = 4.0 * x[31]  # same direction (power-of-2 scale: bitwise-equal after normalising)
    labels = rng.integers(0, 4, 120)
    labels[[3, 10, 11]] = [0, 1, 2]
    expected_nn = brute_force_nn(x, metric)
    got_nn = M.nearest_neighbor_index(x, metric=metric).numpy()
    np.testing.assert_array_equal(got_nn, expected_nn)
    # duplicates: never their own neighbour, lowest other index wins
    assert (got_nn[[3, 10, 11]] == [10, 3, 3]).all()
    correct = M.nearest_neighbor_correct(torch.from_numpy(x), torch.from_numpy(labels), metric=metric)
    assert correct.dtype == torch.bool and correct.shape == (120,)
    np.testing.assert_array_equal(correct.numpy(), labels[expected_nn] == labels)
    assert M.recall_at_1(x, labels, metric=metric) == pytest.approx(np.mean(labels[expected_nn] == labels))


def test_nearest_neighbor_zero_vector_cosine_ties_to_lowest_index():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    # Zero vector: similarity 0 to everything -> lowest other index. Rows 1, 2: orthogonal to
    # each other (0) and to the zeros (0) -> lowest other index, 0.
    np.testing.assert_array_equal(M.nearest_neighbor_index(x).numpy(), [1, 0, 0, 0])


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_nearest_neighbor_chunk_size_independent(chunk_size):
    x = torch.randn(300, 16)
    x[5] = x[6]
    labels = torch.randint(0, 5, (300,))
    reference = M.nearest_neighbor_index(x, chunk_size=300)
    assert torch.equal(M.nearest_neighbor_index(x, chunk_size=chunk_size), reference)
    assert torch.equal(
        M.nearest_neighbor_correct(x, labels, chunk_size=chunk_size),
        labels[torch.from_numpy(brute_force_nn(x.numpy()))] == labels,
    )


def test_nearest_neighbor_cuda_if_available():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x, labels = torch.randn(500, 32), torch.randint(0, 5, (500,))
    assert torch.equal(M.nearest_neighbor_correct(x.cuda(), labels.cuda()), M.nearest_neighbor_correct(x, labels))
    on_gpu, on_cpu = M.Evaluator(device="cuda"), M.Evaluator()
    for ev in (on_gpu, on_cpu):
        ev.update(x.cuda(), torch.rand(500).cuda(), labels.cuda())
    assert on_gpu.compute() == on_cpu.compute()


def test_faiss_backend_optional():
    x, labels = torch.randn(50, 4), torch.randint(0, 3, (50,))
    try:
        import faiss  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="backend='faiss' needs the optional package faiss"):
            M.nearest_neighbor_correct(x, labels, backend="faiss")
    else:
        assert torch.equal(M.nearest_neighbor_correct(x, labels, backend="faiss"), M.nearest_neighbor_correct(x, labels))


# --------------------------------------------------------------------------------------- R-AUROC
def test_r_auroc_equals_independent_computation():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 5)) + np.repeat(rng.standard_normal((4, 5)) * 1.5, 50, axis=0)
    labels = np.repeat(np.arange(4), 50)
    correct = labels[brute_force_nn(x)] == labels
    unc = np.where(correct, 0.0, 1.0) + 2 * rng.random(200)  # informative, not perfect
    expected = roc_auc_score(~correct, unc)
    assert M.r_auroc(unc, x, labels) == pytest.approx(expected, abs=1e-12)
    # The original's formulation: AUROC(-unc, correct)
    assert M.r_auroc(unc, x, labels) == pytest.approx(roc_auc_score(correct, -unc), abs=1e-12)
    assert 0.5 < expected < 1.0


def test_r_auroc_all_correct_is_nan():
    x = np.array([[0.0, 1.0], [0.0, 1.1], [1.0, 0.0], [1.1, 0.0]])
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(M.r_auroc([1.0, 2.0, 3.0, 4.0], x, [0, 0, 1, 1]))


def test_r_auroc_mixed_shifts_ood_labels_after_actual_id_labels():
    rng = np.random.default_rng(3)
    emb_id, emb_ood = rng.standard_normal((60, 4)), rng.standard_normal((40, 4))
    labels_id, labels_ood = rng.integers(0, 3, 60), rng.integers(0, 5, 40)
    unc_id, unc_ood = rng.random(60), rng.random(40)
    emb = np.concatenate([emb_id, emb_ood])
    labels = np.concatenate([labels_id, labels_ood + 100])  # any disjoint relabelling
    correct = labels[brute_force_nn(emb)] == labels
    expected = roc_auc_score(~correct, np.r_[unc_id, unc_ood])
    got = M.r_auroc_mixed(unc_id, emb_id, labels_id, unc_ood, emb_ood, labels_ood)
    assert got == pytest.approx(expected, abs=1e-12)


def _mixed_sets_with_singletons():
    """ID and OOD sets with 5 one-member classes in their union; brute-force 1-NN correctness and the kept queries."""
    rng = np.random.default_rng(4)
    emb_id, emb_ood = rng.standard_normal((50, 4)), rng.standard_normal((30, 4))
    labels_id, labels_ood = rng.integers(0, 3, 50), rng.integers(0, 4, 30)
    labels_id[:3], labels_ood[:2] = [10, 11, 12], [20, 21]  # 3 + 2 classes with one member
    unc_id, unc_ood = rng.random(50), rng.random(30)
    emb, unc = np.concatenate([emb_id, emb_ood]), np.r_[unc_id, unc_ood]
    labels = np.concatenate([labels_id, labels_ood + 100])
    correct = labels[brute_force_nn(emb)] == labels
    counts = {v: int((labels == v).sum()) for v in labels}
    keep = np.array([counts[v] > 1 for v in labels])
    return (emb_id, unc_id, labels_id), (emb_ood, unc_ood, labels_ood), unc, correct, keep


def test_r_auroc_mixed_can_exclude_singleton_queries_of_the_union():
    (emb_id, unc_id, labels_id), (emb_ood, unc_ood, labels_ood), unc, correct, keep = _mixed_sets_with_singletons()
    assert (~keep).sum() == 5
    got = M.r_auroc_mixed(unc_id, emb_id, labels_id, unc_ood, emb_ood, labels_ood, exclude_singleton_queries=True)
    assert got == pytest.approx(roc_auc_score(~correct[keep], unc[keep]), abs=1e-12)
    assert M.r_auroc_mixed(unc_id, emb_id, labels_id, unc_ood, emb_ood, labels_ood) == pytest.approx(
        roc_auc_score(~correct, unc), abs=1e-12)


def test_r_auroc_mixed_identical_points_across_sets_are_different_classes():
    # ID and OOD sample share an embedding and raw label 0: after the shift they must differ.
    got = M.nearest_neighbor_correct(np.array([[1.0, 0.0], [1.0, 0.0]]), [0, 1])
    assert not got.any()
    with pytest.warns(UndefinedMetricWarning):  # all 1-NN wrong -> undefined
        M.r_auroc_mixed([0.1], [[1.0, 0.0]], [0], [0.9], [[1.0, 0.0]], [0])


# ---------------------------------------------------------------------------- correlations etc.
@FAST
@given(st.integers(3, 400), st.integers(1, 5), st.booleans(), st.integers(0, 2**32 - 1))
def test_rank_correlation_equals_scipy(n, levels, with_nan, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, levels + 2, n).astype(np.float64) + (rng.random(n) if levels > 3 else 0)
    y = rng.integers(0, levels + 1, n).astype(np.float64)
    if with_nan:
        y[rng.random(n) < 0.2] = np.nan
    keep = ~np.isnan(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = spearmanr(x[keep], y[keep]).statistic if keep.sum() >= 2 else np.nan
        got = M.rank_correlation(x, y)
    if np.isnan(expected):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(expected, abs=1e-12)


def test_rank_correlation_constant_is_nan_with_warning():
    with pytest.warns(UndefinedMetricWarning, match="constant"):
        assert np.isnan(M.rank_correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    with pytest.warns(UndefinedMetricWarning, match="non-NaN pair"):
        assert np.isnan(M.rank_correlation([1.0, 2.0, 3.0], [np.nan, np.nan, 1.0]))


def test_soft_label_entropy_hand_cases():
    counts = np.array([[5, 0, 0], [1, 1, 0], [2, 2, 2], [0, 0, 0]])
    h = M.soft_label_entropy(counts)
    assert h.dtype == torch.float64 and h.shape == (4,)
    np.testing.assert_allclose(h[:3].numpy(), [0.0, np.log(2), np.log(3)], atol=1e-15)
    assert torch.isnan(h[3])
    probs = counts[:3] / counts[:3].sum(1, keepdims=True)
    np.testing.assert_allclose(M.soft_label_entropy(torch.from_numpy(probs)).numpy(), h[:3].numpy(), atol=1e-15)


def test_rcorr_entropy_drops_rows_without_votes():
    rng = np.random.default_rng(4)
    counts = rng.integers(0, 4, (80, 5))
    counts[[3, 7]] = 0
    unc = rng.random(80)
    # Sorted rows: permuted vote rows must tie exactly in the reference too (as they do in exact
    # arithmetic); unsorted float sums break some of those ties by rounding noise.
    sorted_counts = np.sort(counts, axis=1)
    probs = sorted_counts / np.maximum(sorted_counts.sum(1, keepdims=True), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.nansum(probs * np.log(probs), axis=1)
    keep = counts.sum(1) > 0
    expected = spearmanr(unc[keep], ent[keep]).statistic
    assert M.rcorr_entropy(unc, counts) == pytest.approx(expected, abs=1e-12)


def test_cropped_and_crop_correlation():
    assert M.cropped_has_bigger_uncertainty([1.0, 1.0, 1.0, 2.0], [2.0, 1.0, 0.5, 3.0]) == 0.5
    rng = np.random.default_rng(5)
    c = rng.uniform(0.1, 0.75, 100)  # kept side fraction
    unc_cropped = 1.0 - c + 0.1 * rng.standard_normal(100)  # more cropping -> more uncertain
    got = M.rcorr_crop_unc(unc_cropped, c)
    assert got > 0.5
    assert got == pytest.approx(spearmanr(-unc_cropped, c).statistic, abs=1e-12)  # the original's form


def test_top_k_accuracy():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.04, 0.06], [0.2, 0.3, 0.5], [0.3, 0.2, 0.4]])
    labels = torch.tensor([1, 1, 0, 0])
    assert M.top_k_accuracy(logits, labels, 1) == 0.25
    assert M.top_k_accuracy(logits, labels, 2) == 0.5
    assert M.top_k_accuracy(logits, labels, 5) == 1.0  # capped at C = 3


def test_uncertainty_summary_matches_numpy():
    u = np.random.default_rng(6).standard_normal(1001)
    s = M.uncertainty_summary(torch.from_numpy(u))
    q = np.quantile(u, [0.1, 0.25, 0.5, 0.75, 0.9])
    expected = dict(zip(["unc_q10", "unc_q25", "unc_q50", "unc_q75", "unc_q90"], q))
    expected.update(min_unc=u.min(), avg_unc=u.mean(), max_unc=u.max(), unc_iqr_90_10=q[4] - q[0], unc_iqr_75_25=q[3] - q[1])
    assert s.keys() == expected.keys()
    for key, value in expected.items():
        assert s[key] == pytest.approx(value, abs=1e-12), key
        assert isinstance(s[key], float)


# ---------------------------------------------------------------------------- risk-coverage
def test_risk_coverage_hand_case():
    unc = [0.3, 0.1, 0.2, 0.2]
    err = [True, False, True, False]
    coverage, risk = M.risk_coverage_curve(unc, err)
    np.testing.assert_allclose(coverage.numpy(), [0.25, 0.75, 1.0])
    np.testing.assert_allclose(risk.numpy(), [0.0, 1 / 3, 0.5])
    # risk(k): k=1: 0; k=2: expected over the tie {0.2: err 1 or 0} = 0.5/2; k=3: 1/3; k=4: 1/2
    assert M.aurc(unc, err) == pytest.approx((0 + 0.25 + 1 / 3 + 0.5) / 4)
    assert M.aurc([0.1, 0.2, 0.3], [0.0, 1.0, 0.0]) == pytest.approx((0 + 0.5 + 1 / 3) / 3)


def test_risk_coverage_independent_of_input_order():
    rng = np.random.default_rng(7)
    unc, err = rng.integers(0, 5, 200).astype(float), rng.random(200) < 0.4
    perm = rng.permutation(200)
    a, b = M.risk_coverage_curve(unc, err), M.risk_coverage_curve(unc[perm], err[perm])
    assert torch.equal(a[0], b[0]) and torch.allclose(a[1], b[1], rtol=0, atol=1e-15)
    assert M.aurc(unc, err) == pytest.approx(M.aurc(unc[perm], err[perm]), abs=1e-15)
    # AURC of a tie-free input equals the plain definition
    u = rng.random(200)
    e = err[np.argsort(u)].astype(float)
    assert M.aurc(u, err) == pytest.approx(np.mean(np.cumsum(e) / np.arange(1, 201)), abs=1e-12)


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: M.auroc([0.1, 0.2, 0.3], [True, False]), ValueError, "scores has 3, positives has 2"),
        (lambda: M.auroc([], []), ValueError, "scores is empty"),
        (lambda: M.auroc([0.1, np.nan], [True, False]), ValueError, "scores contains 1 non-finite"),
        (lambda: M.auroc([0.1, np.inf], [True, False]), ValueError, "scores contains 1 non-finite"),
        (lambda: M.auroc([[0.1, 0.2]], [True]), ValueError, r"scores must have shape \[N\]"),
        (lambda: M.auroc([0.1, 0.2], [0.0, 1.0]), TypeError, "positives must be bool"),
        (lambda: M.auroc([0.1, 0.2], [0, 2]), ValueError, "positives must be binary"),
        (lambda: M.auroc(["a", "b"], [0, 1]), TypeError, "scores must hold real numbers"),
        (lambda: M.recall_at_1(np.ones((3, 2)), [0.0, 1.0, 1.0]), TypeError, "labels must be integer class ids"),
        (lambda: M.recall_at_1(np.ones((3, 2)), [[0], [1], [1]]), ValueError, r"labels must have shape \[N\]"),
        (lambda: M.recall_at_1(np.ones((3, 2)), [0, 1]), ValueError, "embeddings has 3, labels has 2"),
        (lambda: M.recall_at_1(np.ones(3), [0, 1, 1]), ValueError, r"embeddings must have shape \[N, D\]"),
        (lambda: M.recall_at_1(np.full((2, 2), np.nan), [0, 1]), ValueError, "embeddings contains non-finite"),
        (lambda: M.recall_at_1(np.ones((1, 2)), [0]), ValueError, "at least 2 samples"),
        (lambda: M.recall_at_1(np.ones((2, 2)), [0, 1], metric="dot"), ValueError, "metric must be"),
        (lambda: M.recall_at_1(np.ones((2, 2)), [0, 1], backend="annoy"), ValueError, "backend must be"),
        (lambda: M.recall_at_1(np.ones((2, 2)), [0, 1], chunk_size=0), ValueError, "chunk_size must be"),
        (lambda: M.r_auroc([0.1, np.nan], np.ones((2, 2)), [0, 1]), ValueError, "uncertainties contains 1 non-finite"),
        (lambda: M.r_auroc([0.1], np.ones((2, 2)), [0, 1]), ValueError, "uncertainties has 1, embeddings has 2"),
        (lambda: M.r_auroc_mixed([0.1], [[1.0]], [0], [0.2], [[1.0, 2.0]], [0]), ValueError, "same dimension D"),
        (lambda: M.auroc_ood([], [0.1]), ValueError, "unc_id is empty"),
        (lambda: M.rank_correlation([0.1, np.inf], [1.0, 2.0]), ValueError, "unc contains 1 infinite"),
        (lambda: M.rank_correlation([0.1, 0.2], [1.0]), ValueError, "unc has 2, values has 1"),
        (lambda: M.soft_label_entropy([1, 2, 3]), ValueError, r"counts_or_probs must have shape \[N, D\]"),
        (lambda: M.soft_label_entropy([[1, -1]]), ValueError, "must be non-negative"),
        (lambda: M.rcorr_entropy([0.1, 0.2], [[1, 0]]), ValueError, "unc has 2, soft_labels has 1"),
        (lambda: M.rcorr_entropy([0.1, np.nan], [[1, 0], [0, 1]]), ValueError, "unc contains 1 non-finite"),
        (lambda: M.cropped_has_bigger_uncertainty([0.1], [0.1, 0.2]), ValueError, "unc has 1, unc_cropped has 2"),
        (lambda: M.top_k_accuracy([[0.1, 0.2]], [0], 0), ValueError, "k must be an int >= 1"),
        (lambda: M.top_k_accuracy([[0.1, 0.2]], [2], 1), ValueError, r"labels must lie in \[0, 2\)"),
        (lambda: M.top_k_accuracy([[0.1, 0.2]], [0.0], 1), TypeError, "labels must be integer"),
        (lambda: M.uncertainty_summary([np.nan]), ValueError, "unc contains 1 non-finite"),
        (lambda: M.aurc([0.1, 0.2], [1.0]), ValueError, "uncertainties has 2, errors has 1"),
        (lambda: M.risk_coverage_curve([0.1], [np.nan]), ValueError, "errors contains 1 non-finite"),
    ],
)
def test_bad_input_raises(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------------------------------- Evaluator
def _dataset(n: int = 400, seed: int = 8) -> dict:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 6, (n,), generator=g)
    centers = torch.randn(6, 16, generator=g) * 1.2
    emb = centers[labels] + torch.randn(n, 16, generator=g)
    return {
        "embeddings": emb,
        "uncertainties": torch.rand(n, generator=g),
        "labels": labels,
        "logits": torch.randn(n, 6, generator=g) + 2 * torch.nn.functional.one_hot(labels, 6),
        "soft_labels": torch.randint(0, 5, (n, 6), generator=g),
        "uncertainties_cropped": torch.rand(n, generator=g),
        "crop_fractions": torch.rand(n, generator=g) * 0.65 + 0.1,
    }


def test_evaluator_matches_functional_and_is_batch_independent():
    d = _dataset()
    ev = M.Evaluator()
    for start in range(0, 400, 64):
        ev.update(**{k: v[start : start + 64] for k, v in d.items()})
    out = ev.compute()
    unc, emb, labels = d["uncertainties"], d["embeddings"], d["labels"]
    correct = labels[torch.from_numpy(brute_force_nn(emb.numpy()))] == labels
    assert out["r1"] == pytest.approx(correct.double().mean().item(), abs=1e-15)
    assert out["auroc_correct"] == pytest.approx(roc_auc_score(correct.numpy(), -unc.numpy()), abs=1e-12)
    top1 = (d["logits"].argmax(1) == labels).numpy()
    assert out["top1"] == pytest.approx(top1.mean())
    assert out["auroc_classification"] == pytest.approx(roc_auc_score(~top1, unc.numpy()), abs=1e-12)
    assert out["top5"] == pytest.approx(M.top_k_accuracy(d["logits"], labels, 5))
    assert out["croppedHasBiggerUnc"] == pytest.approx((d["uncertainties_cropped"] > unc).double().mean().item())
    assert out["rcorr_crop_unc"] == pytest.approx(
        spearmanr(-d["uncertainties_cropped"].numpy(), d["crop_fractions"].numpy()).statistic, abs=1e-12
    )
    assert out["rcorr_entropy"] == pytest.approx(M.rcorr_entropy(unc, d["soft_labels"]), abs=1e-12)
    for key, value in M.uncertainty_summary(unc).items():
        assert out[key] == pytest.approx(value, abs=1e-7)
    one_batch = M.Evaluator()
    one_batch.update(**d)
    assert one_batch.compute() == out
    ev.reset()
    with pytest.raises(ValueError, match="before any update"):
        ev.compute()


def test_evaluator_absent_inputs_give_absent_keys_and_indices_order():
    d = _dataset(100)
    ev = M.Evaluator()
    perm = torch.randperm(100)
    ev.update(d["embeddings"][perm], d["uncertainties"][perm], d["labels"][perm], indices=perm)
    ev.update(d["embeddings"][:5], d["uncertainties"][:5], d["labels"][:5], indices=torch.arange(5))  # padding dups
    out = ev.compute()
    assert "top1" not in out and "croppedHasBiggerUnc" not in out and "rcorr_entropy" not in out
    assert "rcorr_crop_unc" not in out and "auroc_classification" not in out
    ref = M.Evaluator()
    ref.update(d["embeddings"], d["uncertainties"], d["labels"])
    assert out == ref.compute()


def test_evaluator_bad_updates():
    d = _dataset(10)
    ev = M.Evaluator()
    ev.update(d["embeddings"], d["uncertainties"], d["labels"], logits=d["logits"])
    with pytest.raises(ValueError, match="give each optional input in every batch or in none"):
        ev.update(d["embeddings"], d["uncertainties"], d["labels"])
    with pytest.raises(ValueError, match="crop_fractions needs uncertainties_cropped"):
        ev.update(d["embeddings"], d["uncertainties"], d["labels"], crop_fractions=d["crop_fractions"])
    with pytest.raises(ValueError, match="uncertainties has 9, labels has 10"):
        ev.update(d["embeddings"], d["uncertainties"][:9], d["labels"])
    with pytest.raises(TypeError, match="labels must be integer"):
        ev.update(d["embeddings"], d["uncertainties"], d["labels"].float())


def test_evaluator_compute_mixed():
    ind, ood = _dataset(120, seed=9), _dataset(80, seed=10)
    ev_id, ev_ood = M.Evaluator(), M.Evaluator()
    ev_id.update(ind["embeddings"], ind["uncertainties"], ind["labels"])
    ev_ood.update(ood["embeddings"] + 3.0, ood["uncertainties"] + 0.5, ood["labels"])
    out = ev_id.compute_mixed(ev_ood)
    assert out["auroc_ood"] == pytest.approx(M.auroc_ood(ind["uncertainties"], ood["uncertainties"] + 0.5))
    emb = torch.cat([ind["embeddings"], ood["embeddings"] + 3.0]).numpy()
    labels = np.r_[ind["labels"].numpy(), ood["labels"].numpy() + 1000]
    correct = labels[brute_force_nn(emb)] == labels
    unc = np.r_[ind["uncertainties"].numpy(), ood["uncertainties"].numpy() + 0.5]
    assert out["auroc_correct_mixed"] == pytest.approx(roc_auc_score(~correct, unc), abs=1e-12)


# ------------------------------------------------------------------------------------- bootstrap
@pytest.mark.parametrize(
    "seed, error",
    [
        (np.random.default_rng(1), TypeError),  # its state moves on: A and B got different resamples
        (np.random.PCG64(1), TypeError),
        (None, TypeError),  # fresh OS entropy: not reproducible
        (1.5, TypeError),
        (True, TypeError),
        ([1, 2.5], TypeError),
        ([], ValueError),
        (-1, ValueError),
        ([3, -1], ValueError),
    ],
)
def test_bootstrap_seed_must_be_ints(seed, error):
    unc, correct = np.random.default_rng(0).random(40), np.arange(40) % 3 > 0
    with pytest.raises(error, match="seed must be"):
        M.paired_bootstrap_difference(lambda u, c: M.auroc(u, ~c), unc, unc, correct, n_resamples=20, seed=seed)
    with pytest.raises(error, match="seed must be"):
        M.bootstrap_distribution(np.mean, unc, n_resamples=20, seed=seed)


@pytest.mark.parametrize("seed", [0, np.int64(7), [7, 11], (7, 11), np.array([7, 11])])
def test_bootstrap_int_seeds_reproduce_a_plain_numpy_loop(seed):
    unc, correct = np.random.default_rng(0).random(40), np.arange(40) % 3 > 0
    rng, expected = np.random.default_rng(seed), []
    for _ in range(20):
        idx = rng.integers(0, 40, size=40)
        expected.append(roc_auc_score(~correct[idx], unc[idx]))
    got = M.bootstrap_distribution(lambda u, c: M.auroc(u, ~c), unc, correct, n_resamples=20, seed=seed)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    same = M.paired_bootstrap_difference(lambda u, c: M.auroc(u, ~c), unc, unc, correct, n_resamples=20, seed=seed)
    assert same == (0.0, 0.0, 0.0, 1.0)  # one method against itself on the same resamples


def test_evaluator_keeps_float64_uncertainties_as_the_functional_api_does():
    # Distinct in float64, equal in float32: storing float32 copies turned them into ties.
    d = _dataset(300, seed=11)
    order = np.random.default_rng(0).permutation(300)
    unc = 1.0 + order * 1e-9
    unc_cropped = unc + np.where(order % 2 == 0, 1e-10, -1e-10)
    fractions = 0.5 + order * 1e-10
    ev = M.Evaluator()
    ev.update(d["embeddings"], torch.from_numpy(unc), d["labels"], uncertainties_cropped=unc_cropped,
              crop_fractions=fractions)
    out = ev.compute()
    correct = M.nearest_neighbor_correct(d["embeddings"], d["labels"]).numpy()
    assert out["auroc_correct"] == pytest.approx(roc_auc_score(~correct, unc), abs=1e-12)
    assert out["croppedHasBiggerUnc"] == 0.5
    assert out["rcorr_crop_unc"] == pytest.approx(spearmanr(unc_cropped, -fractions).statistic, abs=1e-12)
    assert out["unc_iqr_75_25"] == pytest.approx(np.subtract(*np.quantile(unc, [0.75, 0.25])), rel=1e-9)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.bool])
def test_risk_coverage_takes_errors_of_any_torch_dtype(dtype):
    unc = np.random.default_rng(3).random(30)
    errors = np.arange(30) % 4 == 0
    order = np.argsort(unc)
    expected = np.mean(np.cumsum(errors[order]) / np.arange(1, 31))  # no ties: the plain AURC
    assert M.aurc(unc, torch.from_numpy(errors).to(dtype)) == pytest.approx(expected, abs=1e-12)
    _, risk = M.risk_coverage_curve(torch.from_numpy(unc), torch.from_numpy(errors).to(dtype))
    np.testing.assert_allclose(risk.numpy(), np.cumsum(errors[order]) / np.arange(1, 31), rtol=0, atol=1e-12)


# ------------------------------------------------------------------- audit: traps found by users
def test_evaluator_refuses_repeated_indices_with_different_labels():
    # Batch-local positions passed as indices: np.unique kept only the first batch's samples
    # and silently scored 100 of 400 samples.
    d = _dataset(400)
    ev = M.Evaluator()
    for start in range(0, 400, 100):
        ev.update(d["embeddings"][start : start + 100], d["uncertainties"][start : start + 100],
                  d["labels"][start : start + 100], indices=torch.arange(100))
    with pytest.raises(ValueError, match="indices: sample id .* different labels"):
        ev.compute()
    # DistributedSampler padding (the same samples again, same labels) is still kept once.
    ev = M.Evaluator()
    ev.update(d["embeddings"], d["uncertainties"], d["labels"], indices=torch.arange(400))
    ev.update(d["embeddings"][:3], d["uncertainties"][:3], d["labels"][:3], indices=torch.arange(3))
    correct = d["labels"][torch.from_numpy(brute_force_nn(d["embeddings"].numpy()))] == d["labels"]
    assert ev.compute()["r1"] == correct.double().mean().item()


@pytest.mark.parametrize("with_correct", [False, True])
def test_evaluator_compute_mixed_honours_exclude_singleton_queries(with_correct):
    (emb_id, unc_id, labels_id), (emb_ood, unc_ood, labels_ood), unc, correct, keep = _mixed_sets_with_singletons()
    ev_id, ev_ood = M.Evaluator(exclude_singleton_queries=True), M.Evaluator()
    ev_id.update(emb_id, unc_id, labels_id)
    ev_ood.update(emb_ood, unc_ood, labels_ood)
    out = ev_id.compute_mixed(ev_ood, correct=torch.from_numpy(correct) if with_correct else None)
    assert out["auroc_correct_mixed"] == pytest.approx(roc_auc_score(~correct[keep], unc[keep]), abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_top_k_accuracy_tied_logits_lowest_index_wins_like_argmax(dtype):
    # Constant (or bfloat16-rounded) logits tie; torch.topk's order among ties is unspecified and
    # disagreed with argmax, so Evaluator's top1 and auroc_classification scored different events.
    rng = np.random.default_rng(11)
    logits = np.round(rng.standard_normal((300, 40)), 1)  # many ties at the top
    logits[:50] = 0.0
    labels = rng.integers(0, 40, 300)
    t = torch.from_numpy(logits).to(dtype)
    values = t.double().numpy()
    assert M.top_k_accuracy(t, labels, 1) == np.mean(values.argmax(1) == labels)
    for k in (3, 5):  # the k largest, the lowest index first among equal values
        top = np.argsort(-values, axis=1, kind="stable")[:, :k]
        assert M.top_k_accuracy(t, labels, k) == np.mean((top == labels[:, None]).any(1))
    ev = M.Evaluator()
    ev.update(rng.standard_normal((300, 4)), rng.random(300), labels, logits=t)
    out = ev.compute()
    assert out["auroc_classification"] == pytest.approx(
        roc_auc_score(values.argmax(1) != labels, ev._store["uncertainties"][0].numpy()), abs=1e-12)
    assert out["top1"] == np.mean(values.argmax(1) == labels)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint32, np.uint64])
def test_integer_embeddings_are_searched_exactly(metric, dtype):
    # Integers above 2**24 were rounded to float32 first: 2**24 + 1 -> 2**24, 2**24 + 3 -> 2**24 + 4.
    big = 2**24
    x = np.array([[big, 0], [big + 1, 0], [big + 3, 0], [0, big], [1, big + 1], [3, big + 2]], dtype=dtype)
    if metric == "cosine":  # directions that float32 rounding confuses
        x = np.array([[31048322, 27463657], [31048321, 27463656], [31048319, 27463656], [31048320, 27463661]], dtype=dtype)
    assert M.nearest_neighbor_index(x, metric=metric).tolist() == brute_force_nn(x, metric).tolist()
    small = np.array([[1, 0], [2, 0], [5, 0], [9, 1]], dtype=np.uint16)  # torch has no max() for uint16
    assert M.nearest_neighbor_index(small, metric=metric).tolist() == brute_force_nn(small, metric).tolist()


def test_integer_embeddings_beyond_float64_are_refused():
    with pytest.raises(ValueError, match=r"embeddings holds integers of magnitude 2\*\*53 or more"):
        M.nearest_neighbor_index(np.array([[2**53 + 1, 0], [0, 1]], dtype=np.int64))


def test_soft_label_entropy_of_huge_counts_does_not_overflow():
    # The row sum overflowed to inf: q = 0 everywhere and the entropy came out as 0, not log 2.
    huge = [[1e308, 1e308, 0.0], [1.5e308, 0.5e308, 1e308], [1.0, 1.0, 0.0]]
    expected = [np.log(2), -sum(q * np.log(q) for q in (1 / 2, 1 / 6, 1 / 3)), np.log(2)]
    np.testing.assert_allclose(M.soft_label_entropy(huge).numpy(), expected, rtol=1e-15)


def test_soft_label_errors_name_the_argument_given():
    with pytest.raises(ValueError, match=r"soft_labels must have shape \[N, D\]"):
        M.rcorr_entropy([0.1, 0.2], [1.0, 2.0])
    with pytest.raises(ValueError, match="soft_labels must be non-negative"):
        M.rcorr_entropy([0.1, 0.2], [[1.0, -2.0], [1.0, 1.0]])
    ev = M.Evaluator()
    with pytest.raises(ValueError, match="soft_labels must be non-negative"):  # at update(), not at compute()
        ev.update(np.eye(2), [0.1, 0.2], [0, 1], soft_labels=[[1.0, -2.0], [1.0, 1.0]])


def test_numpy_scalars_are_accepted_where_python_numbers_are():
    # np.float32(0.9) was refused as "confidence must be in (0, 1)"; np.int64 k / chunk_size as not an int.
    rng = np.random.default_rng(12)
    logits, labels, u = rng.standard_normal((40, 6)), rng.integers(0, 6, 40), rng.random(40)
    assert M.top_k_accuracy(logits, labels, np.int64(3)) == M.top_k_accuracy(logits, labels, 3)
    assert M.bootstrap_ci(np.mean, u, n_resamples=20, confidence=np.float32(0.9)) == M.bootstrap_ci(
        np.mean, u, n_resamples=20, confidence=float(np.float32(0.9)))
    x = rng.standard_normal((40, 3))
    assert torch.equal(M.nearest_neighbor_index(x, chunk_size=np.int64(7)), torch.from_numpy(brute_force_nn(x)))
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        M.top_k_accuracy(logits, labels, np.float64(3.0))


@pytest.mark.filterwarnings("ignore:the metric is undefined on every resample")
def test_bootstrap_over_one_sample_is_undefined_not_a_zero_width_interval():
    # uncertainties of shape [1, N] (a broadcasting trap) are ONE sample along axis 0: every resample
    # was that sample, and the interval [point, point] claimed there is no sampling uncertainty.
    u = np.random.default_rng(13).random((1, 50))
    with pytest.warns(UndefinedMetricWarning, match=r"1 sample along axis 0 .*shape \(1, 50\)"):
        point, low, high = M.bootstrap_ci(np.mean, u, n_resamples=20)
    assert point == u.mean() and np.isnan(low) and np.isnan(high)
    with pytest.warns(UndefinedMetricWarning, match="1 sample along axis 0"):
        diff = M.paired_bootstrap_difference(lambda a: float(a[0]), [0.2], [0.1], n_resamples=20)
    assert diff.difference == pytest.approx(0.1) and np.isnan(diff.low) and np.isnan(diff.p_value)
    assert not np.isnan(M.bootstrap_ci(np.mean, u[0, :2], n_resamples=20).low)  # 2 samples: defined
