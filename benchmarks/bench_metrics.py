"""Benchmark uncertain_repr.metrics against reference implementations.

1. R@1 + R-AUROC on N x D clustered random embeddings: ours (exact chunked torch 1-NN + rank
   AUROC) vs faiss ``IndexFlatIP`` if faiss is importable, else sklearn
   ``NearestNeighbors(n_neighbors=2, algorithm="brute", metric="cosine")`` + ``roc_auc_score``.
2. ``auroc`` on M scores vs ``sklearn.metrics.roc_auc_score`` (goal: >= 2x faster).

Peak memory = peak resident set size above the level at the start of each measurement (Linux
/proc/self; resets the high-water mark via /proc/self/clear_refs), so torch, numpy and faiss
allocations all count.

Run:  python benchmarks/bench_metrics.py [--quick]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable, Tuple

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from uncertain_repr.metrics import auroc, nearest_neighbor_correct

MiB = 2**20


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure(fn: Callable[[], object], repeats: int = 1) -> Tuple[object, float, float]:
    """(result, best wall seconds, peak extra RSS in MiB or nan if /proc is unavailable)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        start_kib = _status_kib("VmRSS")
    except OSError:
        start_kib = None
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    peak = (_status_kib("VmHWM") - start_kib) / 1024 if start_kib is not None else float("nan")
    return result, best, peak


def clustered(n: int, d: int, classes: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centers = 0.3 * rng.standard_normal((classes, d)).astype(np.float32)
    noise = rng.uniform(0.5, 1.5, n).astype(np.float32)  # per-sample noise level
    emb = centers[labels] + noise[:, None] * rng.standard_normal((n, d), dtype=np.float32)
    unc = noise + 0.3 * rng.random(n, dtype=np.float32)  # informative uncertainty
    return emb, labels, unc


def ours_retrieval(emb: np.ndarray, labels: np.ndarray, unc: np.ndarray) -> Tuple[np.ndarray, float, float]:
    correct = nearest_neighbor_correct(torch.from_numpy(emb), torch.from_numpy(labels)).numpy()
    return correct, float(correct.mean()), auroc(unc, ~correct)


def reference_retrieval(emb: np.ndarray, labels: np.ndarray, unc: np.ndarray) -> Tuple[str, Callable]:
    try:
        import faiss
    except ImportError:
        faiss = None
    own = np.arange(len(labels))

    def finish(hits: np.ndarray) -> Tuple[np.ndarray, float, float]:
        nn = np.where(hits[:, 0] == own, hits[:, 1], hits[:, 0])
        correct = labels[nn] == labels
        return correct, float(correct.mean()), float(roc_auc_score(~correct, unc))

    if faiss is not None:
        def run_faiss():
            x = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            index = faiss.IndexFlatIP(x.shape[1])
            index.add(x)
            return finish(index.search(x, 2)[1])

        return "faiss IndexFlatIP (k=2) + sklearn roc_auc_score", run_faiss

    from sklearn.neighbors import NearestNeighbors

    def run_sklearn():
        knn = NearestNeighbors(n_neighbors=2, algorithm="brute", metric="cosine").fit(emb)
        return finish(knn.kneighbors(emb, return_distance=False))

    return (
        "faiss is NOT installed -> reference: sklearn NearestNeighbors(n_neighbors=2, "
        "algorithm='brute', metric='cosine') + sklearn roc_auc_score",
        run_sklearn,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (N=10,000, 10^5 scores)")
    args = parser.parse_args()
    n, d, m = (10_000, 384, 10**5) if args.quick else (60_000, 384, 10**6)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    emb, labels, unc = clustered(n, d, classes=100)
    name, reference = reference_retrieval(emb, labels, unc)
    print(f"\n[1] R@1 + R-AUROC, N={n:,}, D={d}, 100 clusters, cosine. {name}")
    (c_ours, r1, ra), t_ours, mem_ours = measure(lambda: ours_retrieval(emb, labels, unc))
    (c_ref, r1_ref, ra_ref), t_ref, mem_ref = measure(reference)
    print(f"{'':12}{'time s':>10}{'peak MiB':>10}{'R@1':>10}{'R-AUROC':>10}")
    print(f"{'ours':12}{t_ours:10.2f}{mem_ours:10.0f}{r1:10.4f}{ra:10.4f}")
    print(f"{'reference':12}{t_ref:10.2f}{mem_ref:10.0f}{r1_ref:10.4f}{ra_ref:10.4f}")
    print(f"speed-up (reference time / ours): {t_ref / t_ours:.2f}x; "
          f"memory ratio (reference / ours): {mem_ref / max(mem_ours, 1):.2f}; "
          f"per-sample correctness differs on {int((c_ours != c_ref).sum())} of {n} samples")

    rng = np.random.default_rng(1)
    scores = rng.standard_normal(m)
    positives = rng.random(m) < 0.3
    print(f"\n[2] auroc on {m:,} float64 scores (best of 3) vs sklearn.metrics.roc_auc_score")
    a_ours, t_ours, mem_ours = measure(lambda: auroc(scores, positives), repeats=3)
    a_ref, t_ref, mem_ref = measure(lambda: roc_auc_score(positives, scores), repeats=3)
    print(f"{'':12}{'time s':>10}{'peak MiB':>10}{'AUROC':>20}")
    print(f"{'ours':12}{t_ours:10.4f}{mem_ours:10.0f}{a_ours:20.16f}")
    print(f"{'sklearn':12}{t_ref:10.4f}{mem_ref:10.0f}{a_ref:20.16f}")
    print(f"speed-up (sklearn time / ours): {t_ref / t_ours:.1f}x; |difference| = {abs(a_ours - a_ref):.1e}")


if __name__ == "__main__":
    main()
