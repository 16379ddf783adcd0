"""Exact leave-one-out 1-nearest-neighbour correctness and Recall@1.

The search is a float32 pass over the upper triangle of the similarity matrix (each pair is
computed once and serves both samples), tile by tile into one reused buffer; of each tile only
the maxima of blocks of 64 candidates are kept, per query the best block and the best score
outside it. Each sample's best block is then scored again for its best and runner-up. Samples
whose best is not ahead of the runner-up by more than the proven float32 rounding bound are
re-searched exactly in float64 (candidates within float64 rounding of the best are scored once
more by one per-pair kernel, so that exact duplicates tie exactly), so the result is that of a
float64 brute force for float32 and float64 inputs alike, the lowest index winning ties.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from contextlib import contextmanager
from numbers import Integral
from typing import Callable, Iterator, Literal, NamedTuple, Optional, Tuple

import numpy as np
import torch

from ._checks import ArrayLike, as_embeddings, as_labels, check_same_length, undefined

Metric = Literal["cosine", "euclidean"]

_log = logging.getLogger(__name__)

# Default tile of the float32 pass: _TILE x _TILE similarities (16 MiB, one buffer reused).
# At N=20,000, D=384, 2 threads: 1024 and 2048 are equally fast on a quiet machine; with other
# processes on the cores every parallel region waits for both threads, and 2048 (55 tiles,
# 3 parallel operations each) is ~1.4x faster than 1024 (210 tiles).
_TILE = 2048
# Candidates per block: the tiles keep only block maxima (see _best_blocks); tiles are whole blocks.
_BLOCK = 64
# Budget of one float64 chunk (re-check: rows x N similarities; preparation: rows x D values),
# small next to the float32 copy and the tiles, so that peak memory stays within 2x of faiss.
_CHUNK_BYTES = 8 * 2**20
# Queries per group of the float64 re-check.
_RECHECK_GROUP = 4096
# Unit roundoff of a float32 matrix product under each of torch's precision settings: the
# legacy torch.set_float32_matmul_precision ("high" may use TF32, "medium" bfloat16 products)
# and the per-backend fp32_precision of torch >= 2.9 ("none" defers to the global one).
_MATMUL_UNIT = {"highest": 2.0**-24, "ieee": 2.0**-24, "none": 2.0**-24, "high": 2.0**-11, "tf32": 2.0**-11,
                "medium": 2.0**-8, "bf16": 2.0**-8}
_PROGRESS_LOG_SECONDS = 30.0


class _Prepared(NamedTuple):
    """The search's view of the embeddings: score(q, j) = a * q.x_j - penalty_j, q and x_j prepared."""

    source: torch.Tensor  # the embeddings as given
    scale: float  # a power of 2 applied to every row first (exact: the 1-NN and its ties are unchanged)
    divisor: Optional[torch.Tensor]  # cosine: float64 row norms (1 for zero rows); euclidean: None
    penalty: Optional[torch.Tensor]  # euclidean: float64 ||x_j||^2; cosine: None
    norms: torch.Tensor  # float64 norms of the PREPARED rows (<= 1 for cosine)

    def rows64(self, rows: slice | torch.Tensor) -> torch.Tensor:
        """Prepared rows in float64 (elementwise, so bitwise the same however rows are chunked)."""
        x = self.source[rows].double()
        if self.scale != 1.0:
            x = x * self.scale
        return x if self.divisor is None else x / self.divisor[rows, None]


def _prepare(x: torch.Tensor, metric: str) -> _Prepared:
    """Row norms in float64, one chunk at a time (no float64 copy of the embeddings is kept)."""
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    step = max(1, _CHUNK_BYTES // (8 * x.shape[1]))
    # The power of 2 that brings the largest |value| into [0.5, 1), so that neither the float32
    # squares and products nor the float64 ones overflow or underflow (e.g. at 1e20 or 1e-200).
    biggest = float(torch.stack([r.abs().amax() for r in x.split(step)]).amax())
    scale = math.ldexp(1.0, -min(max(math.frexp(biggest)[1], -1000), 1000))
    sq = torch.cat([(r * r).sum(dim=1) for r in x.split(step) for r in (r.double() * scale,)])  # as rows64 scales
    norms = sq.sqrt()
    if metric == "euclidean":
        # argmin ||q - x_j||^2 = argmax (2 q.x_j - ||x_j||^2); ||q||^2 is constant per query.
        return _Prepared(x, scale, None, sq, norms)
    # Zero vectors stay zero (like sklearn.preprocessing.normalize): similarity 0 to everything.
    return _Prepared(x, scale, torch.where(norms > 0, norms, torch.ones_like(norms)), None, (norms > 0).double())


def _float32_rows(p: _Prepared) -> torch.Tensor:
    step = max(1, _CHUNK_BYTES // (8 * p.source.shape[1]))
    return torch.cat([p.rows64(slice(s, s + step)).float() for s in range(0, p.source.shape[0], step)])


def _matmul_unit(device: torch.device) -> float:
    """The largest unit roundoff that torch's settings allow for float32 products on ``device``.

    Reads the legacy setting and, where they exist, the per-backend and global ``fp32_precision``
    (once those are set, ``torch.get_float32_matmul_precision()`` raises); unknown values count
    as bfloat16.
    """
    settings = []
    try:
        settings.append(torch.get_float32_matmul_precision())
    except RuntimeError:  # torch >= 2.9 after the per-backend API was used
        pass
    backend = torch.backends.cuda if device.type == "cuda" else torch.backends.mkldnn
    settings.append(getattr(getattr(backend, "matmul", None), "fp32_precision", "none"))
    settings.append(getattr(torch.backends, "fp32_precision", "none"))
    return max(_MATMUL_UNIT.get(s, 2.0**-8) for s in settings)


def _gap_threshold(p: _Prepared, unit: float) -> torch.Tensor:
    """Per query ``[N]`` (float64), a gap between scores above which their exact order is certain.

    A dot product of length D computed with unit roundoff ``unit`` (inputs rounded from float64)
    is within (D + 2) u ||q|| ||x_j|| of the exact one (Higham, Accuracy and Stability, Th. 3.5);
    the penalty and the final subtraction add a few u. Two scores each off by at most e can swap
    only if their values are within 2e; the threshold is twice that, for slack.
    """
    biggest = p.norms.max()
    scale = p.norms * biggest if p.penalty is None else 2 * p.norms * biggest + biggest**2
    return 4 * (p.source.shape[1] + 4) * unit * scale


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


def _merge_blocks(best: torch.Tensor, block: torch.Tensor, second: torch.Tensor, start: int,
                  block_max: torch.Tensor, first_block: int, dim: int) -> None:
    """Fold a tile's block maxima into each query's running top-2 over candidate blocks.

    ``block_max``: the maxima of the tile's blocks of _BLOCK candidates (blocks first_block..
    along ``dim``, queries start.. along the other side; queries beyond the samples are
    ignored). Afterwards ``best``/``block`` are each query's largest block maximum so far and
    its block, ``second`` the largest maximum of its other blocks.
    """
    maxima = block_max if dim == 1 else block_max.T
    top, which = maxima.topk(min(2, maxima.shape[1]), dim=1)
    rows = slice(start, min(start + maxima.shape[0], best.shape[0]))
    size = rows.stop - rows.start
    t1 = top[:size, 0]
    t2 = top[:size, 1] if top.shape[1] == 2 else torch.full_like(t1, -torch.inf)
    b1 = best[rows]
    torch.maximum(torch.minimum(b1, t1), torch.maximum(second[rows], t2), out=second[rows])
    block[rows] = torch.where(t1 > b1, which[:size, 0] + first_block, block[rows])
    torch.maximum(b1, t1, out=best[rows])


def _penalised(sims: torch.Tensor, out: Optional[torch.Tensor], pen: Optional[torch.Tensor], start: int,
               dim: int) -> torch.Tensor:
    """Cosine: ``sims``; euclidean: 2 sims - penalty of the candidates along ``dim``, into ``out``."""
    if pen is None or out is None:
        return sims
    cut = pen[start : start + sims.shape[dim]]
    return torch.mul(sims, 2, out=out[: sims.shape[0], : sims.shape[1]]).sub_(cut if dim == 1 else cut[:, None])


def _best_blocks(p: _Prepared, x32: torch.Tensor, tile: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the candidate block holding its float32 best and the largest float32 score
    outside that block (block j covers candidates j*_BLOCK ..). ``tile`` is a multiple of _BLOCK.

    Each tile takes one matrix product into one reused buffer (its margin filled with -inf)
    and one maximum per block on each side: a few large parallel operations per tile, the
    rest on tensors _BLOCK times smaller, which torch runs without threads.
    """
    n = x32.shape[0]
    buf = torch.empty(tile, tile, device=x32.device)
    aux = None if p.penalty is None else torch.empty_like(buf)
    pen = None if p.penalty is None else torch.cat([p.penalty.float(), p.penalty.new_zeros(tile, dtype=torch.float32)])
    best = torch.full((n,), -torch.inf, device=x32.device)
    second = best.clone()
    block = torch.zeros(n, dtype=torch.long, device=x32.device)
    starts = range(0, n, tile)
    tiles = [(s, s) for s in starts] + [(s, c) for i, s in enumerate(starts) for c in starts[i + 1 :]]
    with _progress(len(tiles), f"1-NN search over {n:,} samples") as step:
        for s, c in tiles:
            r, w = min(tile, n - s), min(tile, n - c)
            torch.mm(x32[s : s + r], x32[c : c + w].T, out=buf[:r, :w])
            sims = buf[: -(-r // _BLOCK) * _BLOCK, : -(-w // _BLOCK) * _BLOCK]
            sims[r:] = -torch.inf
            sims[:, w:] = -torch.inf
            if c == s:
                sims.fill_diagonal_(-torch.inf)  # exclude the query itself BY INDEX
            rows = _penalised(sims, aux, pen, c, 1)
            _merge_blocks(best, block, second, s, rows.unflatten(1, (-1, _BLOCK)).amax(2), c // _BLOCK, 1)
            if c != s:  # the same pairs, seen from the candidates' side
                cols = _penalised(sims, aux, pen, s, 0)
                _merge_blocks(best, block, second, c, cols.unflatten(0, (-1, _BLOCK)).amax(1), s // _BLOCK, 0)
            step(1)
    return block, second


def _nn_float32_pass(p: _Prepared, tile: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(index of the float32 best, whether it is ambiguous) for every sample.

    The best lies in the sample's best block (:func:`_best_blocks`); that block is scored again
    (all queries sharing a block in one product) for the best and the runner-up inside it. The
    best is ambiguous where the runner-up inside or the best score outside the block comes
    within the gap. Scores from different float32 products round differently, but each is
    within the bound of _gap_threshold of its exact value, which is all the gap needs.
    """
    x32 = _float32_rows(p)
    n, gap = x32.shape[0], _gap_threshold(p, _matmul_unit(x32.device))
    block, outside = _best_blocks(p, x32, tile)
    index = torch.empty(n, dtype=torch.long, device=x32.device)
    ambiguous = torch.empty(n, dtype=torch.bool, device=x32.device)
    order = block.argsort()
    counts = torch.bincount(block, minlength=-(-n // _BLOCK)).tolist()
    for b, queries in enumerate(order.split(counts)):
        if not counts[b]:
            continue
        lo = b * _BLOCK
        scores = x32[queries] @ x32[lo : lo + _BLOCK].T
        if p.penalty is not None:
            scores.mul_(2).sub_(p.penalty[lo : lo + _BLOCK].float())
        own = (queries >= lo) & (queries < lo + scores.shape[1])
        scores[own.nonzero().squeeze(1), queries[own] - lo] = -torch.inf  # the query itself
        top = scores.topk(min(2, scores.shape[1]), dim=1)
        runner_up = outside[queries] if top.values.shape[1] == 1 else torch.maximum(outside[queries], top.values[:, 1])
        index[queries] = top.indices[:, 0] + lo
        ambiguous[queries] = runner_up >= top.values[:, 0] - gap[queries].float()
    return index, ambiguous


def _pairwise_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-by-row dot products ``[K]`` of ``a, b [K, D]`` by halving sums of elementwise products.

    Only elementwise operations, so equal pairs give bitwise equal results wherever they sit
    (a BLAS product may round equal columns differently, e.g. in its last columns).
    """
    prod = a * b
    width = 1 << max(0, (prod.shape[1] - 1).bit_length())
    prod = torch.nn.functional.pad(prod, (0, width - prod.shape[1]))
    while prod.shape[1] > 1:
        prod = prod[:, : prod.shape[1] // 2] + prod[:, prod.shape[1] // 2 :]
    return prod[:, 0]


def _equal_rows(rows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(group [K], kept [K])`` of ``rows [K, D]``: the id of each row's set of equal rows, and True
    for the two lowest-indexed rows of each set (the lowest that is not the query itself is
    always among them)."""
    _, group = torch.unique(rows, dim=0, return_inverse=True)
    order = torch.argsort(group, stable=True)  # each set's rows together, in index order
    ordered = group[order]
    position = torch.arange(len(group), device=rows.device)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    rank = position - torch.where(starts, position, 0).cummax(0).values
    kept = torch.empty_like(starts)
    kept[order] = rank < 2
    return group, kept


def _nn_float64_recheck(p: _Prepared, rows: torch.Tensor, index: torch.Tensor) -> None:
    """Exact float64 1-NN of ``rows`` (lowest index among equal scores), written into ``index``.

    Groups of up to _RECHECK_GROUP queries against column chunks of 8 MiB, each chunk prepared
    once per group. The products decide which candidates come within the float64 rounding bound
    of the best so far; those are scored again by :func:`_pairwise_dot`, and the best of these
    scores wins, the lowest index among equal ones. A candidate outside the bound cannot have
    the best such score, so the answer is the 1-NN of a brute force that scores every pair with
    :func:`_pairwise_dot`. Equal candidate rows score equally, so of each set of equal rows of a
    chunk with a member within the bound only the two lowest-indexed are scored (N equal rows
    cost N x 2 per chunk, not N x N).
    """
    n, d = p.source.shape
    slack = _gap_threshold(p, 2.0**-53)
    for group in rows.split(_RECHECK_GROUP) if rows.numel() else ():
        queries = p.rows64(group)
        best = torch.full((group.numel(),), -torch.inf, dtype=torch.float64, device=queries.device)
        exact, winner = best.clone(), torch.full_like(group, n)
        own = torch.arange(group.numel(), device=queries.device)
        step = max(1, _CHUNK_BYTES // (8 * max(group.numel(), d)))
        for c in range(0, n, step):
            cand = p.rows64(slice(c, c + step))
            sims = queries @ cand.T
            if p.penalty is not None:
                sims.mul_(2).sub_(p.penalty[c : c + step])
            inside = (group >= c) & (group < c + step)
            sims[own[inside], group[inside] - c] = -torch.inf  # exclude the query itself BY INDEX
            torch.maximum(best, sims.amax(dim=1), out=best)
            close = sims >= (best - slack[group])[:, None]
            sets, kept = _equal_rows(cand)
            if bool((~kept).any()):  # a set is close if any member is; its two lowest stand for it
                near = torch.zeros(close.shape[0], int(sets.max()) + 1, device=close.device)
                close = (near.index_add_(1, sets, close.to(near.dtype))[:, sets] > 0) & kept
            close[own[inside], group[inside] - c] = False
            for piece in close.nonzero().split(max(1, _CHUNK_BYTES // (8 * d))):
                q, j = piece.unbind(1)
                score = _pairwise_dot(queries[q], cand[j])
                if p.penalty is not None:
                    score = 2 * score - p.penalty[j + c]
                before = exact.clone()
                exact.scatter_reduce_(0, q, score, "amax")
                # Chunks come in index order: a query keeps its winner unless its score rose.
                lowest = torch.full_like(winner, n).scatter_reduce_(
                    0, q, torch.where(score == exact[q], j + c, n), "amin")
                winner = torch.where(exact == before, winner, lowest)
        index[group] = winner


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
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return _nn_torch(x, metric, -(-min(int(chunk_size), n) // _BLOCK) * _BLOCK)


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
        embeddings: ``[N, D]`` finite floats (N >= 2), float32 or float64 (float16/bfloat16 are
            promoted to float32, integers of magnitude < 2**53 to float64, both exactly); CUDA
            tensors stay on the GPU.
        labels: ``[N]`` integer class ids.
        metric: ``"cosine"`` (L2-normalise each row in float64, zero vectors stay zero, then
            inner product) or ``"euclidean"``.
        chunk_size: side of one square tile of the float32 pass, rounded up to a multiple of
            64 (default 2048); peak extra memory is one ``chunk_size**2`` float32 buffer (two
            for euclidean) plus a float32 copy of the embeddings and float64 chunks of 8 MiB.
            The result does not depend on it.
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
    index wins (candidates within float64 rounding of the best are scored again pair by pair,
    so exact duplicates tie wherever they sit). Searches longer than a few seconds show progress (tqdm on a TTY, else an INFO
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
