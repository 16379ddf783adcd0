"""Benchmark uncertain_repr.metrics as users call them, against faiss + sklearn.

1. R@1 + R-AUROC on N x D clustered random embeddings, every path a user may take, interleaved
   round by round (so a changing machine load hits all paths alike), medians of ``--rounds``:

   (a) ``recall_at_1(E, y)`` then ``r_auroc(u, E, y)``, float32 (two searches);
   (b) the same with float64 inputs (numpy's default);
   (c) ``retrieval_metrics(u, E, y)``, the documented one-search way, float32;
   (c64) the same, float64;
   (d) ``Evaluator``: ``update()`` in batches of 256, then ``compute()``;
   (e) reference: faiss ``IndexFlatIP`` k=2 (rows L2-normalised in numpy) + sklearn
       ``roc_auc_score`` (sklearn ``NearestNeighbors`` brute force if faiss is not installed).

   Every path first runs once untimed on 500 samples (lazy imports, thread start-up). Each row
   prints wall time, process CPU time (all threads; less sensitive to other load on
   the machine) and peak memory, each also relative to (e).
2. ``auroc`` on M scores vs ``sklearn.metrics.roc_auc_score``.

Peak memory = peak resident set size above the level at the start of each call (Linux /proc;
resets the high-water mark via /proc/self/clear_refs, after ``malloc_trim`` so that memory freed
by the previous path is not silently reused), so torch, numpy and faiss allocations all count;
the inputs themselves are allocated before and not counted.

Run:  python benchmarks/bench_metrics.py [--n 20000 --d 384 --classes 500 --rounds 3 --threads T]
      python benchmarks/bench_metrics.py --quick   (N=4,000, 1 round per path: a smoke test)
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from uncertain_repr.metrics import Evaluator, auroc, r_auroc, recall_at_1, retrieval_metrics

Result = Tuple[float, float]  # (R@1, R-AUROC)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure(fn: Callable[[], object]) -> Tuple[object, float, float, float]:
    """(result, wall seconds, process CPU seconds, peak extra RSS in MiB or nan without /proc)."""
    gc.collect()
    try:  # hand freed heap memory back to the OS, or the next path would reuse it unseen
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        start_kib = _status_kib("VmRSS")
    except OSError:
        start_kib = None
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = (_status_kib("VmHWM") - start_kib) / 1024 if start_kib is not None else float("nan")
    return result, seconds, cpu, peak


def clustered(n: int, d: int, classes: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centers = 0.3 * rng.standard_normal((classes, d)).astype(np.float32)
    noise = rng.uniform(0.5, 1.5, n).astype(np.float32)  # per-sample noise level
    emb = centers[labels] + noise[:, None] * rng.standard_normal((n, d), dtype=np.float32)
    unc = noise + 0.3 * rng.random(n, dtype=np.float32)  # informative uncertainty
    return emb, labels, unc


def reference_path(emb: np.ndarray, labels: np.ndarray, unc: np.ndarray) -> Tuple[str, Callable[[], Result]]:
    try:
        import faiss
    except ImportError:
        faiss = None
    own = np.arange(len(labels))

    def finish(hits: np.ndarray) -> Result:
        nn = np.where(hits[:, 0] == own, hits[:, 1], hits[:, 0])
        correct = labels[nn] == labels
        return float(correct.mean()), float(roc_auc_score(~correct, unc))

    if faiss is not None:
        def run_faiss() -> Result:
            x = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            index = faiss.IndexFlatIP(x.shape[1])
            index.add(x)
            return finish(index.search(x, 2)[1])

        return "faiss IndexFlatIP k=2 + sklearn roc_auc_score", run_faiss

    from sklearn.neighbors import NearestNeighbors

    def run_sklearn() -> Result:
        knn = NearestNeighbors(n_neighbors=2, algorithm="brute", metric="cosine").fit(emb)
        return finish(knn.kneighbors(emb, return_distance=False))

    return "faiss NOT installed: sklearn NearestNeighbors(brute, cosine) + roc_auc_score", run_sklearn


def user_paths(emb: np.ndarray, labels: np.ndarray, unc: np.ndarray) -> Dict[str, Callable[[], Result]]:
    e32, y, u = torch.from_numpy(emb), torch.from_numpy(labels), torch.from_numpy(unc)
    e64, u64 = emb.astype(np.float64), unc.astype(np.float64)

    def two_calls(e, uu) -> Result:
        return recall_at_1(e, y), r_auroc(uu, e, y)

    def combined(e, uu) -> Result:
        out = retrieval_metrics(uu, e, y)
        return out["r1"], out["auroc_correct"]

    def evaluator() -> Result:
        ev = Evaluator()
        for batch in torch.arange(len(y)).split(256):
            ev.update(e32[batch], u[batch], y[batch])
        out = ev.compute()
        return out["r1"], out["auroc_correct"]

    return {
        "(a) recall_at_1 + r_auroc, float32": lambda: two_calls(e32, u),
        "(b) recall_at_1 + r_auroc, float64": lambda: two_calls(e64, u64),
        "(c) retrieval_metrics, float32": lambda: combined(e32, u),
        "(c64) retrieval_metrics, float64": lambda: combined(e64, u64),
        "(d) Evaluator (batches of 256)": evaluator,
    }


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def retrieval_table(n: int, d: int, classes: int, rounds: int) -> None:
    emb, labels, unc = clustered(n, d, classes)
    name, reference = reference_path(emb, labels, unc)
    paths = {**user_paths(emb, labels, unc), f"(e) {name}": reference}
    # untimed warm-up of every path on 500 samples: the first call of a process pays for lazy imports
    # and thread-pool start-up (~2 s), which would otherwise land on whichever path is timed first
    few = (emb[:500], labels[:500], unc[:500])
    for fn in (*user_paths(*few).values(), reference_path(*few)[1]):
        fn()
    print(f"\n[1] R@1 + R-AUROC, N={n:,}, D={d}, {classes} classes, cosine; {rounds} interleaved "
          f"round(s), medians; load average before: {load()}")
    samples: Dict[str, List[Tuple[float, float, float]]] = {k: [] for k in paths}
    results: Dict[str, Result] = {}
    for _ in range(rounds):
        for key, fn in paths.items():
            results[key], *figures = measure(fn)
            samples[key].append(tuple(figures))
    med = {k: np.median(np.array(v), axis=0) for k, v in samples.items()}  # wall, cpu, peak
    ref = med[list(paths)[-1]]
    print(f"{'path':52}{'wall s':>8}{'/ ref':>7}{'CPU s':>8}{'/ ref':>7}{'peak MiB':>10}{'/ ref':>7}"
          f"{'R@1':>8}{'R-AUROC':>9}")
    for key in paths:
        (t, c, m), (r1, ra) = med[key], results[key]
        print(f"{key[:52]:52}{t:8.2f}{t / ref[0]:7.2f}{c:8.2f}{c / ref[1]:7.2f}{m:10.0f}{m / max(ref[2], 1):7.2f}"
              f"{r1:8.4f}{ra:9.4f}")
    print(f"load average after: {load()}; torch {torch.__version__}, {torch.get_num_threads()} threads")


def auroc_table(m: int) -> None:
    rng = np.random.default_rng(1)
    scores = rng.standard_normal(m)
    positives = rng.random(m) < 0.3
    print(f"\n[2] auroc on {m:,} float64 scores (best of 3) vs sklearn.metrics.roc_auc_score")
    runs = {"ours": lambda: auroc(scores, positives), "sklearn": lambda: roc_auc_score(positives, scores)}
    best = {k: min(measure(fn)[1] for _ in range(3)) for k, fn in runs.items()}
    diff = abs(runs["ours"]() - runs["sklearn"]())
    print(f"ours {best['ours']:.4f} s, sklearn {best['sklearn']:.4f} s: {best['sklearn'] / best['ours']:.1f}x "
          f"faster; |difference| = {diff:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="samples (default 20,000)")
    parser.add_argument("--d", type=int, default=384, help="embedding width (default 384)")
    parser.add_argument("--classes", type=int, default=500, help="classes (default 500)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per path (default 3)")
    parser.add_argument("--scores", type=int, default=10**6, help="scores for the auroc table (default 10^6)")
    parser.add_argument("--threads", type=int, default=None, help="torch and faiss threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="N=4,000, 1 round, 10^5 scores")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        try:
            import faiss

            faiss.omp_set_num_threads(args.threads)
        except ImportError:
            pass
    if args.quick:
        args.n, args.rounds, args.scores = 4_000, 1, 10**5
    retrieval_table(args.n, args.d, args.classes, args.rounds)
    auroc_table(args.scores)


if __name__ == "__main__":
    main()
