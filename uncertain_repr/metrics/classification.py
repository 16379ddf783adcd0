"""Classifier accuracy."""

from __future__ import annotations

from numbers import Integral

import numpy as np

from ._checks import ArrayLike, as_float_2d, as_labels, check_same_length


def top_k_accuracy(logits: ArrayLike, labels: ArrayLike, k: int = 1) -> float:
    """Fraction in [0, 1] of samples whose label is among the ``k`` largest logits.

    Args:
        logits: ``[N, C]`` finite class scores; labels: ``[N]`` integer ids in ``[0, C)``.
        k: >= 1; capped at C (as in the original).

    Returns:
        A FRACTION, not a percentage (the original reported percent). Among tied logits the
        lower class index ranks first, as in ``argmax`` (so ``top1`` is the accuracy of
        ``logits.argmax(1)``); ``torch.topk``'s order among ties is unspecified.
    """
    x = as_float_2d(logits, "logits")
    y = as_labels(labels, "labels")
    check_same_length(logits=x, labels=y)
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    num_classes = x.shape[1]
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}) for logits with {num_classes} classes")
    # The label's 0-based rank: classes with a larger logit, and tied classes with a lower index.
    own = x[np.arange(x.shape[0]), y][:, None]
    rank = (x > own).sum(axis=1) + ((x == own) & (np.arange(num_classes) < y[:, None])).sum(axis=1)
    return float(np.mean(rank < k))
