"""R@1 and R-AUROC from one 1-NN search, with singleton queries counted (and optionally excluded)."""

from __future__ import annotations

from typing import Dict, Literal, Optional

import numpy as np
import torch

from ._checks import ArrayLike, as_float_1d, as_labels, check_same_length, undefined
from .auroc import _auroc_np
from .nearest_neighbor import Metric, nearest_neighbor_correct, singleton_query_mask


def retrieval_scores(
    unc: np.ndarray, correct: torch.Tensor, labels: np.ndarray, exclude_singleton_queries: bool
) -> Dict[str, float]:
    """The :func:`retrieval_metrics` dict from a finished search (``unc`` float64, ``correct`` bool)."""
    singleton = singleton_query_mask(labels).numpy()
    right = correct.cpu().numpy()
    if exclude_singleton_queries:
        unc, right = unc[~singleton], right[~singleton]
    if right.size == 0:
        message = "R@1 and R-AUROC are undefined: every query is a singleton (excluded); returning nan"
        r1 = auroc_correct = undefined(message)
    else:
        r1, auroc_correct = float(right.mean()), _auroc_np(unc, ~right)
    return {"r1": r1, "auroc_correct": auroc_correct, "n_singleton_queries": int(singleton.sum())}


def retrieval_metrics(
    uncertainties: ArrayLike,
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    metric: Metric = "cosine",
    chunk_size: Optional[int] = None,
    backend: Literal["torch", "faiss"] = "torch",
    exclude_singleton_queries: bool = False,
) -> Dict[str, float]:
    """R@1 and R-AUROC from ONE leave-one-out 1-NN search (the way to get both).

    Args:
        uncertainties: ``[N]`` finite, higher = more uncertain.
        embeddings: ``[N, D]``.
        labels: ``[N]`` integer class ids.
        metric: as in :func:`nearest_neighbor_correct`.
        chunk_size: as in :func:`nearest_neighbor_correct`.
        backend: as in :func:`nearest_neighbor_correct`.
        exclude_singleton_queries: leave out, as queries, the samples whose class has no other
            member (their 1-NN is wrong by construction; they stay candidates for the others).
            Off by default, as in the original.

    Returns:
        ``{"r1": recall_at_1, "auroc_correct": r_auroc, "n_singleton_queries": int}``; the first
        two equal :func:`recall_at_1` and :func:`r_auroc` with the same arguments.
    """
    unc = as_float_1d(uncertainties, "uncertainties")
    y = as_labels(labels, "labels")
    check_same_length(uncertainties=unc, embeddings=embeddings, labels=y)
    correct = nearest_neighbor_correct(embeddings, y, metric=metric, chunk_size=chunk_size, backend=backend)
    return retrieval_scores(unc, correct, y, exclude_singleton_queries)
