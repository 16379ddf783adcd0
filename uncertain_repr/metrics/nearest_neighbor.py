"""Exact leave-one-out 1-nearest-neighbour correctness and Recall@1."""

from __future__ import annotations

from typing import Literal, Optional

import numpy as np
import torch

from ._checks import ArrayLike, as_embeddings, as_labels, check_same_length

Metric = Literal["cosine", "euclidean"]

# Default budget for one chunk of the similarity matrix (chunk_size rows x N columns).
_CHUNK_BYTES = 256 * 2**20


def _prepare(x: torch.Tensor, metric: str) -> torch.Tensor:
    if metric == "cosine":
        # Zero vectors stay zero (like sklearn.preprocessing.normalize): similarity 0 to everything.
        norms = x.norm(dim=1, keepdim=True)
        return x / torch.where(norms > 0, norms, torch.ones_like(norms))
    if metric == "euclidean":
        return x
    raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")


def _nn_torch(x: torch.Tensor, metric: str, chunk_size: int) -> torch.Tensor:
    n = x.shape[0]
    # Euclidean: argmin ||q - x_j||^2 = argmax (2 q.x_j - ||x_j||^2); the ||q||^2 term is constant per row.
    col_penalty = (x * x).sum(dim=1) if metric == "euclidean" else None
    nn_index = torch.empty(n, dtype=torch.long, device=x.device)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        sims = x[start:stop] @ x.T
        if col_penalty is not None:
            sims.mul_(2).sub_(col_penalty)
        rows = torch.arange(stop - start, device=x.device)
        sims[rows, rows + start] = -torch.inf  # exclude the query itself BY INDEX
        nn_index[start:stop] = sims.argmax(dim=1)  # first maximal value = lowest index wins
    return nn_index


def _nn_faiss(x: torch.Tensor, metric: str) -> torch.Tensor:
    try:
        import faiss  # optional backend, imported only when asked for
    except ImportError as exc:
        raise ImportError(
            "backend='faiss' needs the optional package faiss (faiss-cpu or faiss-gpu); "
            "use backend='torch' (exact, no extra dependency) instead"
        ) from exc
    data = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
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
    x = _prepare(x, metric)
    if backend == "faiss":
        return _nn_faiss(x, metric)
    if backend != "torch":
        raise ValueError(f"backend must be 'torch' or 'faiss', got {backend!r}")
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_BYTES // (n * x.element_size()))
    elif not isinstance(chunk_size, int) or chunk_size < 1:
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
        embeddings: ``[N, D]`` finite floats (N >= 2). float32/float64 are used as given
            (float16/bfloat16/integers are promoted to float32); CUDA tensors stay on the GPU.
        labels: ``[N]`` integer class ids.
        metric: ``"cosine"`` (L2-normalise each row, zero vectors stay zero, then inner product)
            or ``"euclidean"``.
        chunk_size: query rows per matrix product; peak extra memory is about
            ``chunk_size * N`` similarity values. Default: chunks of at most 256 MiB.
            The result does not depend on it.
        backend: ``"torch"`` (exact chunked matrix products, default) or ``"faiss"``
            (``IndexFlatIP``/``IndexFlatL2`` on CPU float32; optional dependency, imported only
            here; its tie-breaking is faiss's own).

    Returns:
        ``BoolTensor[N]`` on the CPU, True where the label of the nearest other sample equals
        the sample's label.

    The query is excluded by its INDEX, so exact duplicates and zero vectors are handled (the
    original took the 2nd hit of a k=2 search, spec §9 item 33). Among equally similar
    neighbours (bitwise-equal similarity) the LOWEST index wins. No N x N matrix is held.
    """
    y = as_labels(labels, "labels")
    check_same_length(embeddings=embeddings, labels=y)
    nn = nearest_neighbor_index(embeddings, metric=metric, chunk_size=chunk_size, backend=backend)
    y_t = torch.from_numpy(y)
    return y_t[nn.cpu()] == y_t


def recall_at_1(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    metric: Metric = "cosine",
    chunk_size: Optional[int] = None,
    backend: Literal["torch", "faiss"] = "torch",
) -> float:
    """Recall@1: fraction in [0, 1] of samples whose nearest other sample has the same label.

    Shapes: embeddings ``[N, D]``, labels ``[N]``. Arguments as in :func:`nearest_neighbor_correct`.
    """
    correct = nearest_neighbor_correct(
        embeddings, labels, metric=metric, chunk_size=chunk_size, backend=backend
    )
    return float(correct.double().mean())
