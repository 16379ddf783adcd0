"""The exact 1-NN search (float32 pass + float64 re-check), one-search retrieval metrics,
singleton queries, tie-exact soft-label entropy and Evaluator width checks."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import entropy as scipy_entropy
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from tests.test_metrics import brute_force_nn
from uncertain_repr import metrics as M
from uncertain_repr.metrics import nearest_neighbor as NN


def near_tie_data(n: int = 400, d: int = 16, seed: int = 0) -> np.ndarray:
    """float64 points with exact duplicates, zero rows and neighbours closer than float32 can tell.

    Near-duplicates differ by ~1e-5, so their similarities differ by ~1e-10: far above float64
    rounding (~1e-14 here), far below float32's (~1e-7).
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x[10] = x[3]  # exact duplicates
    x[11] = x[3]
    x[20] = 0.0  # zero vectors
    x[21] = 0.0
    for i in range(40, 120, 3):  # triples of near-duplicates
        x[i + 1] = x[i] + 1e-5 * rng.standard_normal(d)
        x[i + 2] = x[i] + 1e-5 * rng.standard_normal(d)
    x[200:230] = x[199] + 1e-5 * rng.standard_normal((30, d))  # a tight swarm
    return x


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("chunk_size", [None, 7, 64])
def test_float64_input_equals_float64_brute_force_with_near_ties(metric, chunk_size):
    x = near_tie_data()
    expected = brute_force_nn(x, metric)
    got = M.nearest_neighbor_index(x, metric=metric, chunk_size=chunk_size).numpy()
    np.testing.assert_array_equal(got, expected)
    assert (got[[3, 10, 11]] == [10, 3, 3]).all()  # duplicates: lowest other index wins
    # A plain float32 search cannot separate the near-duplicates: the re-check is what decides.
    p = NN._prepare(torch.from_numpy(x), metric)
    x32 = NN._float32_rows(p)
    score = x32 @ x32.T if p.penalty is None else 2 * x32 @ x32.T - p.penalty.float()
    score.fill_diagonal_(-torch.inf)
    assert (score.argmax(dim=1).numpy() != expected).sum() >= 5


@pytest.mark.parametrize("seed", range(4))
def test_float32_input_equals_brute_force_on_its_values(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((300, 24)).astype(np.float32)
    x[rng.integers(0, 300, 40)] = x[rng.integers(0, 300, 40)]  # many duplicates
    x[150:170] = x[149] + np.float32(1e-6) * rng.standard_normal((20, 24), dtype=np.float32)
    for metric in ("cosine", "euclidean"):
        expected = brute_force_nn(x, metric)  # float64 on the float32 values
        np.testing.assert_array_equal(M.nearest_neighbor_index(x, metric=metric, chunk_size=32).numpy(), expected)


@pytest.mark.parametrize("n", [2, 3, 63, 65, 129, 200])
def test_block_and_tile_edges_equal_brute_force(n):
    # Tiles are whole blocks of 64 candidates: a last block of 1-2 candidates, one tile, many.
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 5))
    for metric in ("cosine", "euclidean"):
        for chunk_size in (None, 1, 64, 100):
            got = M.nearest_neighbor_index(x, metric=metric, chunk_size=chunk_size).numpy()
            np.testing.assert_array_equal(got, brute_force_nn(x, metric))


def test_equals_faiss_and_brute_force_on_clustered_data():
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 40, 3000)
    x = (rng.standard_normal((40, 32))[labels] + rng.standard_normal((3000, 32))).astype(np.float32)
    normed = x / np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(32)
    index.add(normed)
    hits = index.search(normed, 2)[1]
    faiss_nn = np.where(hits[:, 0] == np.arange(3000), hits[:, 1], hits[:, 0])
    ours = M.nearest_neighbor_index(x, chunk_size=500).numpy()
    np.testing.assert_array_equal(ours, brute_force_nn(x))
    assert (ours == faiss_nn).mean() > 0.999  # faiss's own float32 rounding may flip a near-tie


def test_gap_threshold_bounds_the_float32_error():
    rng = np.random.default_rng(2)
    for metric in ("cosine", "euclidean"):
        x = torch.from_numpy(rng.standard_normal((500, 300)) * rng.uniform(0.1, 10, (500, 1)))
        p = NN._prepare(x, metric)
        x32 = NN._float32_rows(p)
        exact = p.rows64(slice(None)) @ p.rows64(slice(None)).T
        approx = (x32 @ x32.T).double()
        if p.penalty is not None:
            exact, approx = 2 * exact - p.penalty, 2 * approx - p.penalty.float().double()
        err = (exact - approx).abs().max(dim=1).values
        assert (2 * err <= NN._gap_threshold(p, 2.0**-24)).all()


def test_one_search_per_retrieval_metrics_and_evaluator(monkeypatch):
    calls = []
    real = NN._nn_torch
    monkeypatch.setattr(NN, "_nn_torch", lambda *a, **k: calls.append(1) or real(*a, **k))
    x, labels, unc = torch.randn(200, 8), torch.randint(0, 5, (200,)), torch.rand(200)
    M.retrieval_metrics(unc, x, labels)
    assert len(calls) == 1
    ev = M.Evaluator()
    ev.update(x, unc, labels)
    ev.compute()
    assert len(calls) == 2


def test_retrieval_metrics_equal_the_separate_metrics_and_sklearn():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 30, 500)
    labels[:7] = np.arange(100, 107)  # 7 singleton classes
    x = rng.standard_normal((30, 12))[labels % 30] + rng.standard_normal((500, 12))
    unc = rng.random(500)
    out = M.retrieval_metrics(unc, x, labels)
    correct = labels[brute_force_nn(x)] == labels
    assert out == {
        "r1": M.recall_at_1(x, labels),
        "auroc_correct": M.r_auroc(unc, x, labels),
        "n_singleton_queries": 7,
    }
    assert out["r1"] == pytest.approx(correct.mean(), abs=1e-15)
    assert out["auroc_correct"] == pytest.approx(roc_auc_score(~correct, unc), abs=1e-12)
    kept = M.retrieval_metrics(unc, x, labels, exclude_singleton_queries=True)
    keep = np.ones(500, bool)
    keep[:7] = False  # excluded as queries, but still candidates for the others
    assert kept["n_singleton_queries"] == 7
    assert kept["r1"] == pytest.approx(correct[keep].mean(), abs=1e-15)
    assert kept["auroc_correct"] == pytest.approx(roc_auc_score(~correct[keep], unc[keep]), abs=1e-12)
    assert kept["r1"] == M.recall_at_1(x, labels, exclude_singleton_queries=True)
    assert kept["auroc_correct"] == M.r_auroc(unc, x, labels, exclude_singleton_queries=True)


def test_singleton_query_mask_and_all_singletons():
    labels = np.array([4, 1, 4, 7, 1, 9, 4])
    counts = Counter(labels.tolist())
    np.testing.assert_array_equal(M.singleton_query_mask(labels).numpy(), [counts[v] == 1 for v in labels])
    with pytest.warns(M.UndefinedMetricWarning, match="every query is a singleton"):
        out = M.retrieval_metrics([0.1, 0.2, 0.3], np.eye(3), [0, 1, 2], exclude_singleton_queries=True)
    assert np.isnan(out["r1"]) and np.isnan(out["auroc_correct"]) and out["n_singleton_queries"] == 3
    with pytest.raises(TypeError, match="labels must be integer"):
        M.singleton_query_mask([0.5, 1.0])


@pytest.mark.filterwarnings("ignore::uncertain_repr.metrics.UndefinedMetricWarning")
def test_evaluator_singletons_and_width_checks():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (300,), generator=g)
    labels[:5] = torch.arange(50, 55)
    emb, unc = torch.randn(300, 10, generator=g), torch.rand(300, generator=g)
    for exclude in (False, True):
        ev = M.Evaluator(exclude_singleton_queries=exclude)
        ev.update(emb[:100], unc[:100], labels[:100])
        ev.update(emb[100:], unc[100:], labels[100:])
        out = ev.compute()
        expected = M.retrieval_metrics(unc, emb, labels, exclude_singleton_queries=exclude)
        assert expected.pop("n_singleton_queries") == 5 and ev.n_singleton_queries == 5
        assert {k: out[k] for k in expected} == expected and "n_singleton_queries" not in out
    ev = M.Evaluator()
    ev.update(emb[:10], unc[:10], labels[:10], logits=torch.randn(10, 60))
    with pytest.raises(ValueError, match="embeddings has width 9 in this update"):
        ev.update(emb[10:20, :9], unc[10:20], labels[10:20], logits=torch.randn(10, 60))
    with pytest.raises(ValueError, match="logits has width 59 in this update"):
        ev.update(emb[10:20], unc[10:20], labels[10:20], logits=torch.randn(10, 59))
    ev.update(emb[10:20], unc[10:20], labels[10:20], logits=torch.randn(10, 60))  # still usable
    counts = Counter(labels[:20].tolist())
    ev.compute()
    assert ev.n_singleton_queries == sum(counts[v] == 1 for v in labels[:20].tolist())


def test_progress_is_logged_when_not_a_tty(monkeypatch, caplog):
    monkeypatch.setattr(NN, "_PROGRESS_LOG_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="uncertain_repr.metrics.nearest_neighbor"):
        M.nearest_neighbor_index(torch.randn(100, 4), chunk_size=10)
    assert any("1-NN search over 100 samples" in r.getMessage() and "tiles" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------- tie-exact soft-label entropy
def test_soft_label_entropy_permuted_rows_tie_exactly():
    rng = np.random.default_rng(4)
    base = rng.random((60, 10)) * rng.integers(0, 2, (60, 10))  # probabilities with zeros
    base[:, 0] += 0.01
    base /= base.sum(1, keepdims=True)
    rows = np.concatenate([base[:, rng.permutation(10)] for _ in range(5)])  # 5 permutations each
    h = M.soft_label_entropy(rows).numpy()
    np.testing.assert_array_equal(h.reshape(5, 60), np.broadcast_to(h[:60], (5, 60)))  # bitwise ties
    reference = scipy_entropy(np.sort(base, axis=1), axis=1)  # one exact value per multiset
    np.testing.assert_allclose(h[:60], reference, rtol=1e-13)
    unc = rng.random(300)
    expected = spearmanr(unc, np.tile(reference, 5)).statistic  # ties as in exact arithmetic
    assert M.rcorr_entropy(unc, rows) == pytest.approx(expected, abs=1e-12)
    counts = rng.integers(0, 6, (50, 10))
    counts[:, 0] += 1
    perm = counts[:, rng.permutation(10)]
    assert torch.equal(M.soft_label_entropy(counts), M.soft_label_entropy(perm))


def pairwise_sum(v: np.ndarray) -> np.ndarray:
    """Sum over the last axis by halving (elementwise adds): bitwise the same for equal rows."""
    width = 1 << max(0, (v.shape[-1] - 1).bit_length())
    v = np.concatenate([v, np.zeros(v.shape[:-1] + (width - v.shape[-1],))], axis=-1)
    while v.shape[-1] > 1:
        v = v[..., : v.shape[-1] // 2] + v[..., v.shape[-1] // 2 :]
    return v[..., 0]


def per_pair_brute_force_nn(x: np.ndarray, metric: str) -> np.ndarray:
    """float64 1-NN with each score from one per-pair kernel (no BLAS): equal rows score equally."""
    if metric == "cosine":
        norms = np.sqrt(pairwise_sum(x * x))[:, None]
        x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
        penalty = np.zeros(len(x))
    else:
        penalty = pairwise_sum(x * x)
    factor = 1.0 if metric == "cosine" else 2.0
    score = np.stack([factor * pairwise_sum(q * x) - penalty for q in x])
    np.fill_diagonal(score, -np.inf)
    return score.argmax(axis=1)  # lowest index among equal scores


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_duplicates_at_varied_positions_lowest_index_wins(metric):
    # BLAS may round q.x_j differently for equal rows x_j in different columns of one product
    # (torch's CPU BLAS does in the last columns of an odd width at D=100); the tie must still go
    # to the lowest index.
    rng = np.random.default_rng(7)
    n, d = 1003, 100
    bases = rng.standard_normal((6, d))
    group = rng.integers(0, 6, n)
    group[-12:] = np.arange(12) % 6  # every group has copies among the last columns
    x = bases[group] + 0.3 * rng.standard_normal((n, d))  # queries near their base ...
    dup = rng.random(n) < 0.25
    dup[-12:] = True
    x[dup] = bases[group[dup]]  # ... whose exact copies sit at random positions
    expected = per_pair_brute_force_nn(x, metric)
    lowest = {g: np.flatnonzero(dup & (group == g)) for g in range(6)}
    assert all(expected[i] == lowest[group[i]][lowest[group[i]] != i][0] for i in range(n))
    for chunk_size in (None, 100):
        got = M.nearest_neighbor_index(x, metric=metric, chunk_size=chunk_size).numpy()
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("rows", ["equal", "zero"])
def test_many_equal_rows_are_rescored_per_set_not_per_pair(metric, rows, monkeypatch):
    """N equal rows (e.g. a collapsed model's embeddings): every sample ties with all others, the
    lowest other index wins, and the per-pair re-scoring stays O(N) per chunk, not O(N^2)."""
    n = 1500
    x = np.zeros((n, 8)) if rows == "zero" else np.tile(np.arange(1.0, 9.0), (n, 1))
    x[n // 2] += 1.0  # one different row in the middle
    scored = []
    real = NN._pairwise_dot
    monkeypatch.setattr(NN, "_pairwise_dot", lambda a, b: scored.append(len(a)) or real(a, b))
    got = M.nearest_neighbor_index(x, metric=metric).numpy()
    np.testing.assert_array_equal(got, per_pair_brute_force_nn(x, metric))
    assert got[0] == 1 and (got[1 : n // 2] == 0).all() and (got[n // 2 + 1 :] == 0).all()
    assert sum(scored) < 50 * n  # a few per query and chunk (per pair: N^2 = 2.25e6)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("dtype, exponent", [(np.float32, 70), (np.float32, -70), (np.float64, 700), (np.float64, -700)])
def test_search_does_not_depend_on_the_scale_of_the_embeddings(metric, dtype, exponent):
    # Scaling by a power of 2 is exact, so the 1-NN must be that of the unscaled points. Unscaled,
    # float32 squares of 2**70 overflow and float64 squares of 2**+-700 over/underflow.
    x = near_tie_data().astype(dtype)
    expected = brute_force_nn(x, metric)
    got = M.nearest_neighbor_index(x * dtype(2.0) ** exponent, metric=metric).numpy()
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "setting, unit",
    [
        ("torch.backends.mkldnn.matmul.fp32_precision = 'bf16'", 2.0**-8),
        ("torch.backends.fp32_precision = 'tf32'", 2.0**-11),
        ("torch.backends.cuda.matmul.fp32_precision = 'tf32'", 2.0**-24),  # not the CPU's products
        ("torch.set_float32_matmul_precision('high')", 2.0**-11),
    ],
)
def test_search_reads_the_per_backend_matmul_precision(setting, unit):
    # After the per-backend API (torch >= 2.9), torch.get_float32_matmul_precision() raises: the
    # search must read that API, and stay exact under reduced-precision products. Own process:
    # the setting is global and cannot be undone.
    code = f"""
import numpy as np, torch
{setting}
from tests.test_metrics import brute_force_nn
from tests.test_metrics_search import near_tie_data
from uncertain_repr import metrics as M
from uncertain_repr.metrics import nearest_neighbor as NN
assert NN._matmul_unit(torch.device("cpu")) == {unit!r}, NN._matmul_unit(torch.device("cpu"))
x = near_tie_data()
for metric in ("cosine", "euclidean"):
    np.testing.assert_array_equal(M.nearest_neighbor_index(x, metric=metric).numpy(), brute_force_nn(x, metric))
"""
    if not hasattr(torch.backends, "fp32_precision") and "set_float32" not in setting:
        pytest.skip("torch < 2.9 has no per-backend matmul precision")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
