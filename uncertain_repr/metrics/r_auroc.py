"""R-AUROC: how well the uncertainty predicts that the 1-NN retrieval is wrong (also on ID+OOD)."""

from __future__ import annotations

from typing import Literal, Optional

import numpy as np
import torch

from ._checks import ArrayLike, as_embeddings, as_float_1d, as_labels, check_same_length
from .nearest_neighbor import Metric, nearest_neighbor_correct
from .retrieval import retrieval_metrics, retrieval_scores


def r_auroc(
    uncertainties: ArrayLike,
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    metric: Metric = "cosine",
    chunk_size: Optional[int] = None,
    backend: Literal["torch", "faiss"] = "torch",
    exclude_singleton_queries: bool = False,
) -> float:
    """R-AUROC (the URL benchmark's ``auroc_correct``).

    Args:
        uncertainties: ``[N]`` finite, higher = more uncertain.
        embeddings: ``[N, D]``; labels: ``[N]`` integer class ids.
        metric, chunk_size, backend, exclude_singleton_queries: as in :func:`retrieval_metrics`.

    Returns:
        AUROC of the uncertainty for predicting that a sample's nearest other sample has a
        DIFFERENT label. Equals the original's AUROC(-unc, correct) (computed there with a
        saturating sigmoid, here exactly). 0.5 = uninformative; ``nan`` + warning if the 1-NN is
        right for all samples or wrong for all. For R-AUROC together with R@1 use
        :func:`retrieval_metrics` (one search for both).
    """
    return retrieval_metrics(
        uncertainties, embeddings, labels, metric=metric, chunk_size=chunk_size, backend=backend,
        exclude_singleton_queries=exclude_singleton_queries,
    )["auroc_correct"]


def union_labels(labels_id: np.ndarray, labels_ood: np.ndarray) -> np.ndarray:
    """``[N_id + N_ood]`` labels of ID then OOD, the OOD ids shifted past the ID ones (disjoint classes)."""
    return np.concatenate([labels_id, labels_ood - labels_ood.min() + labels_id.max() + 1])


def r_auroc_mixed(
    unc_id: ArrayLike,
    emb_id: ArrayLike,
    labels_id: ArrayLike,
    unc_ood: ArrayLike,
    emb_ood: ArrayLike,
    labels_ood: ArrayLike,
    *,
    metric: Metric = "cosine",
    chunk_size: Optional[int] = None,
    backend: Literal["torch", "faiss"] = "torch",
    exclude_singleton_queries: bool = False,
) -> float:
    """R-AUROC on the union of an in-distribution and an out-of-distribution set (``auroc_correct_mixed``).

    Shapes: ``unc_* [N_*]``, ``emb_* [N_*, D]``, ``labels_* [N_*]``. The OOD class ids are shifted
    to ``labels_ood - min(labels_ood) + max(labels_id) + 1`` so the two label sets are disjoint;
    the maximum is taken over the ID labels actually passed (the original took it over the first
    rows of the unsubsampled dataset, which can collide, spec §9 item 34). Any subsampling to
    equal sizes (the original used n = min(N_id, N_ood) of each) is the caller's choice.
    ``exclude_singleton_queries``: as in :func:`retrieval_metrics`, over the union's labels.
    """
    u_id, u_ood = as_float_1d(unc_id, "unc_id"), as_float_1d(unc_ood, "unc_ood")
    y_id, y_ood = as_labels(labels_id, "labels_id"), as_labels(labels_ood, "labels_ood")
    e_id, e_ood = as_embeddings(emb_id, "emb_id"), as_embeddings(emb_ood, "emb_ood")
    check_same_length(unc_id=u_id, emb_id=e_id, labels_id=y_id)
    check_same_length(unc_ood=u_ood, emb_ood=e_ood, labels_ood=y_ood)
    if e_id.shape[1] != e_ood.shape[1]:
        raise ValueError(
            f"emb_id and emb_ood must have the same dimension D, got {e_id.shape[1]} and {e_ood.shape[1]}"
        )
    dtype = torch.promote_types(e_id.dtype, e_ood.dtype)
    emb = torch.cat([e_id.to(dtype), e_ood.to(device=e_id.device, dtype=dtype)])
    labels = union_labels(y_id, y_ood)
    correct = nearest_neighbor_correct(
        emb, labels, metric=metric, chunk_size=chunk_size, backend=backend
    )
    return retrieval_scores(np.concatenate([u_id, u_ood]), correct, labels, exclude_singleton_queries)["auroc_correct"]
