"""Exact leave-one-out 1-nearest-neighbour correctness and Recall@1.

The search is a float32 pass over the upper triangle of the similarity matrix (each pair is
computed once and serves both samples), tracking each sample's best and second-best score.
Samples whose best score is not ahead of the runner-up by more than the proven float32 rounding
bound are re-searched exactly in float64, so the result is that of a float64 brute force for
float32 and float64 inputs alike.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Literal, NamedTuple, Optional, Tuple

import numpy as np
import torch

from ._checks import ArrayLike, as_embeddings, as_labels, check_same_length, undefined

Metric = Literal["cosine", "euclidean"]

_log = logging.getLogger(__name__)

# Default tile of the float32 pass: _TILE x _TILE similarities (36 MiB). Measured at N=20,000,
# D=384 on 2 loaded cores: 2048 is best on 1 thread, 3072-4096 on 2 (more work per parallel
# region); 3072 is within 5% of the best in both and keeps peak memory within 2x of faiss.
_TILE = 3072
# Budget of one float64 chunk (re-check: rows x N similarities; preparation: rows x D values),
# small next to the float32 copy and the tiles, so that peak memory stays within 2x of faiss.
_CHUNK_BYTES = 8 * 2**20
# Queries per gathered piece of a transposed tile (512 x 3072 floats = 6 MiB).
_GATHER = 512
# Unit roundoff of a float32 matrix product under torch's float32 matmul precision setting
# ("high" may use TF32, "medium" bfloat16 products).
_MATMUL_UNIT = {"highest": 2.0**-24, "high": 2.0**-11, "medium": 2.0**-8}
_PROGRESS_LOG_SECONDS = 30.0


class _Prepared(NamedTuple):
    """The search's view of the embeddings: score(q, j) = a * q.x_j - penalty_j, q and x_j prepared."""

    source: torch.Tensor  # the embeddings as given
    divisor: Optional[torch.Tensor]  # cosine: float64 row norms (1 for zero rows); euclidean: None
    penalty: Optional[torch.Tensor]  # euclidean: float64 ||x_j||^2; cosine: None
    norms: torch.Tensor  # float64 norms of the PREPARED rows (<= 1 for cosine)

    def rows64(self, rows: slice | torch.Tensor) -> torch.Tensor:
        """Prepared rows in float64 (elementwise, so bitwise the same however rows are chunked)."""
        x = self.source[rows].double()
        return x if self.divisor is None else x / self.divisor[rows, None]


def _prepare(x: torch.Tensor, metric: str) -> _Prepared:
    """Row norms in float64, one chunk at a time (no float64 copy of the embeddings is kept)."""
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    step = max(1, _CHUNK_BYTES // (8 * x.shape[1]))
    sq = torch.cat([(r * r).sum(dim=1) for r in x.split(step) for r in (r.double(),)])
    norms = sq.sqrt()
    if metric == "euclidean":
        # argmin ||q - x_j||^2 = argmax (2 q.x_j - ||x_j||^2); ||q||^2 is constant per query.
        return _Prepared(x, None, sq, norms)
    # Zero vectors stay zero (like sklearn.preprocessing.normalize): similarity 0 to everything.
    return _Prepared(x, torch.where(norms > 0, norms, torch.ones_like(norms)), None, (norms > 0).double())


def _float32_rows(p: _Prepared) -> torch.Tensor:
    step = max(1, _CHUNK_BYTES // (8 * p.source.shape[1]))
    return torch.cat([p.rows64(slice(s, s + step)).float() for s in range(0, p.source.shape[0], step)])


def _gap_threshold(p: _Prepared) -> torch.Tensor:
    """Per query, a gap between float32 scores above which their float64 order is certain.

    A float32 dot product of length D (inputs rounded from float64) is within
    (D + 2) u ||q|| ||x_j|| of the exact one (Higham, Accuracy and Stability, Th. 3.5); the
    penalty and the final subtraction add a few u. Two scores each off by at most e can swap
    only if their float32 values are within 2e; the threshold is twice that, for slack.
    """
    unit = _MATMUL_UNIT.get(torch.get_float32_matmul_precision(), 2.0**-8)
    biggest = p.norms.max()
    scale = p.norms * biggest if p.penalty is None else 2 * p.norms * biggest + biggest**2
    return (4 * (p.source.shape[1] + 4) * unit * scale).float()


@contextmanager
def _progress(total: int, desc: str) -> Iterator[Callable[[int], None]]:
    """A step(k) callback: a tqdm bar on a TTY (shown after 2 s), else a log line every 30 s."""
    if sys.stderr.isatty():
        try:
            from tqdm.auto import tqdm
        except ImportError:
            pass
        else:
            bar = tqdm(total=total, desc=desc, unit="tile", delay=2, leave=False)
            try:
                yield bar.update
            finally:
                bar.close()
            return
    start = last = time.monotonic()
    done = 0

    def step(k: int) -> None:
        nonlocal done, last
        done += k
        now = time.monotonic()
        if now - last >= _PROGRESS_LOG_SECONDS:
            last = now
            left = (now - start) * (total - done) / done
            _log.info("%s: %d%% of %d tiles after %.0f s, about %.0f s left", desc, 100 * done // total,
                      total, now - start, left)

    yield step


def _merge(best: torch.Tensor, index: torch.Tensor, second: torch.Tensor, gap: torch.Tensor,
           start: int, scores: torch.Tensor, offset: int) -> None:
    """Fold a tile of scores (queries start.., candidates offset..) into the running top-2.

    Only queries whose tile maximum comes within ``gap`` of their best so far can change it or
    make it ambiguous; for those the tile's exact top-2 is taken. Elsewhere ``second`` may stay
    below the true runner-up, which is harmless: that runner-up is more than ``gap`` behind.
    """
    rows = slice(start, start + scores.shape[0])
    if bool(best[rows].isneginf().all()):  # first tile of these queries: all are candidates
        pieces = [(torch.arange(scores.shape[0], device=scores.device), scores)]
    else:
        cand = (scores.amax(dim=1) >= best[rows] - gap[rows]).nonzero().squeeze(1)
        # In pieces of _GATHER queries so the copies stay small; of a transposed tile, gathering
        # columns and transposing them is ~10x faster than gathering its rows.
        take = (lambda c: scores.index_select(0, c)) if scores.stride(1) == 1 else (
            lambda c: scores.T.index_select(1, c).T.contiguous())
        pieces = ((c, take(c)) for c in cand.split(_GATHER))
    for cand, sub in pieces:
        top, arg = sub.topk(min(2, scores.shape[1]), dim=1)
        t1 = top[:, 0]
        t2 = top[:, 1] if top.shape[1] == 2 else torch.full_like(t1, -torch.inf)
        q = cand + start
        b1, b2 = best[q], second[q]
        second[q] = torch.maximum(torch.minimum(b1, t1), torch.maximum(b2, t2))
        better = t1 > b1
        best[q] = torch.where(better, t1, b1)
        index[q] = torch.where(better, arg[:, 0] + offset, index[q])


def _nn_float32_pass(p: _Prepared, tile: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(index of the float32 best, whether it is ambiguous) for every sample."""
    x32 = _float32_rows(p)
    n, gap = x32.shape[0], _gap_threshold(p)
    pen = None if p.penalty is None else p.penalty.float()
    best = torch.full((n,), -torch.inf, device=x32.device)
    second = best.clone()
    index = torch.zeros(n, dtype=torch.long, device=x32.device)
    starts = range(0, n, tile)
    # Diagonal tiles first: every sample then starts from the best of its own tile, so later
    # tiles rarely come within the gap and their exact top-2 is rarely needed.
    tiles = [(s, s) for s in starts] + [(s, c) for i, s in enumerate(starts) for c in starts[i + 1 :]]
    with _progress(len(tiles), f"1-NN search over {n:,} samples") as step:
        for s, c in tiles:
            sims = x32[s : s + tile] @ x32[c : c + tile].T
            if pen is not None:
                sims.mul_(2)
            if c == s:
                sims.fill_diagonal_(-torch.inf)  # exclude the query itself BY INDEX
            _merge(best, index, second, gap, s, sims if pen is None else sims - pen[c : c + tile], c)
            if c != s:  # the same pairs, seen from the candidates' side
                _merge(best, index, second, gap, c, sims.T if pen is None else sims.T - pen[s : s + tile], s)
            del sims  # before the next tile is allocated
            step(1)
    return index, second >= best - gap


def _nn_float64_recheck(p: _Prepared, rows: torch.Tensor, index: torch.Tensor) -> None:
    """Exact float64 1-NN of ``rows`` (lowest index among equal scores), written into ``index``.

    Groups of up to _GATHER * 8 queries against column chunks of 8 MiB, each chunk prepared once
    per group; chunks are visited in index order and only a strictly better score replaces the
    best so far, so the lowest index wins as in one argmax over the whole row.
    """
    n, d = p.source.shape
    for group in rows.split(_GATHER * 8) if rows.numel() else ():
        queries = p.rows64(group)
        best = torch.full((group.numel(),), -torch.inf, dtype=torch.float64, device=queries.device)
        own = torch.arange(group.numel(), device=queries.device)
        step = max(1, _CHUNK_BYTES // (8 * max(group.numel(), d)))
        for c in range(0, n, step):
            sims = queries @ p.rows64(slice(c, c + step)).T
            if p.penalty is not None:
                sims.mul_(2).sub_(p.penalty[c : c + step])
            inside = (group >= c) & (group < c + step)
            sims[own[inside], group[inside] - c] = -torch.inf  # exclude the query itself BY INDEX
            arg = sims.argmax(dim=1)  # first maximal value = lowest index wins
            value = sims.gather(1, arg[:, None]).squeeze(1)
            better = value > best
            best = torch.where(better, value, best)
            index[group] = torch.where(better, arg + c, index[group])


def _nn_torch(x: torch.Tensor, metric: str, tile: int) -> torch.Tensor:
    p = _prepare(x, metric)
    index, ambiguous = _nn_float32_pass(p, tile)
    _nn_float64_recheck(p, ambiguous.nonzero().squeeze(1), index)
    return index


def _nn_faiss(x: torch.Tensor, metric: str) -> torch.Tensor:
    try:
        import faiss  # optional backend, imported only when asked for
    except ImportError as exc:
        raise ImportError(
            "backend='faiss' needs the optional package faiss (faiss-cpu or faiss-gpu); "
            "use backend='torch' (exact, no extra dependency) instead"
        ) from exc
    data = np.ascontiguousarray(_float32_rows(_prepare(x, metric)).cpu().numpy())
    index = faiss.IndexFlatIP(data.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(data.shape[1])
    index.add(data)
    _, hits = index.search(data, 2)
    own = np.arange(data.shape[0])
    # If the query itself is among the two hits, take the other one; otherwise the first hit is
    # at least as close as the query itself and is a valid nearest other sample.
    nn = np.where(hits[:, 0] == own, hits[:, 1], hits[:, 0])
    return torch.from_numpy(nn.astype(np.int64)).to(x.device)


def nearest_neighbor_index(
    embeddings: ArrayLike,
    *,
    metric: Metric = "cosine",
    chunk_size: Optional[int] = None,
    backend: Literal["torch", "faiss"] = "torch",
) -> torch.Tensor:
    """Index of each sample's nearest OTHER sample. Shapes: embeddings ``[N, D]`` -> ``LongTensor[N]``.

    See :func:`nearest_neighbor_correct` for the arguments. Needs N >= 2. Returned on the
    embeddings' device.
    """
    x = as_embeddings(embeddings, "embeddings")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"embeddings must have at least 2 samples for a nearest neighbour, got N={n}")
    if backend == "faiss":
        return _nn_faiss(x, metric)
    if backend != "torch":
        raise ValueError(f"backend must be 'torch' or 'faiss', got {backend!r}")
    if chunk_size is None:
        chunk_size = _TILE
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return _nn_torch(x, metric, min(chunk_size, n))


def nearest_neighbor_correct(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    metric: Metric = "cosine",
    chunk_size: Optional[int] = None,
    backend: Literal["torch", "faiss"] = "torch",
) -> torch.Tensor:
    """Whether each sample's nearest other sample has the same label (leave-one-out 1-NN).

    Args:
        embeddings: ``[N, D]`` finite floats (N >= 2), float32 or float64 (float16/bfloat16 and
            integers are promoted); CUDA tensors stay on the GPU.
        labels: ``[N]`` integer class ids.
        metric: ``"cosine"`` (L2-normalise each row in float64, zero vectors stay zero, then
            inner product) or ``"euclidean"``.
        chunk_size: side of one square tile of the float32 pass (default 3072); peak extra
            memory is a few ``chunk_size**2`` floats plus a float64 and a float32 copy of the
            embeddings. The result does not depend on it.
        backend: ``"torch"`` (exact, default) or ``"faiss"`` (``IndexFlatIP``/``IndexFlatL2``
            on CPU float32; optional dependency, imported only here; float32 rounding and
            tie-breaking are faiss's own).

    Returns:
        ``BoolTensor[N]`` on the CPU, True where the label of the nearest other sample equals
        the sample's label.

    The query is excluded by its INDEX, so exact duplicates and zero vectors are handled (the
    original took the 2nd hit of a k=2 search, spec §9 item 33). The answer is that of a float64
    brute force: a float32 search, then an exact float64 re-search of every sample whose best
    candidate is not provably ahead of the runner-up; among equal float64 scores the LOWEST
    index wins. Searches longer than a few seconds show progress (tqdm on a TTY, else an INFO
    log line of ``uncertain_repr.metrics.nearest_neighbor`` every 30 s). No N x N matrix is held.
    """
    y = as_labels(labels, "labels")
    check_same_length(embeddings=embeddings, labels=y)
    nn = nearest_neighbor_index(embeddings, metric=metric, chunk_size=chunk_size, backend=backend)
    y_t = torch.from_numpy(y)
    return y_t[nn.cpu()] == y_t


def singleton_query_mask(labels: ArrayLike) -> torch.Tensor:
    """``BoolTensor[N]``: True where the sample's class has no other member among ``labels [N]``.

    Such a query's 1-NN is wrong by construction; pass ``exclude_singleton_queries=True`` to
    the retrieval metrics to leave them out as queries (they stay candidates for the others).
    """
    y = as_labels(labels, "labels")
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    return torch.from_numpy(counts[inverse.reshape(-1)] == 1)


def recall_at_1(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    metric: Metric = "cosine",
    chunk_size: Optional[int] = None,
    backend: Literal["torch", "faiss"] = "torch",
    exclude_singleton_queries: bool = False,
) -> float:
    """Recall@1: fraction in [0, 1] of samples whose nearest other sample has the same label.

    Shapes: embeddings ``[N, D]``, labels ``[N]``. Arguments as in :func:`nearest_neighbor_correct`;
    ``exclude_singleton_queries`` see :func:`singleton_query_mask`. For R@1 together with
    R-AUROC use :func:`retrieval_metrics` (one search for both).
    """
    y = as_labels(labels, "labels")
    correct = nearest_neighbor_correct(embeddings, y, metric=metric, chunk_size=chunk_size, backend=backend)
    if exclude_singleton_queries:
        correct = correct[~singleton_query_mask(y)]
    if correct.numel() == 0:
        return undefined("R@1 is undefined: every query is a singleton (excluded); returning nan")
    return float(correct.double().mean())
