"""Spearman rank correlation of uncertainties with other per-sample quantities."""

from __future__ import annotations

import numpy as np
from ._checks import ArrayLike, as_float_1d, check_same_length, undefined
from .soft_label_entropy import _entropy, as_counts


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x [N]`` in float64, ties get the average of their ranks."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]  # exclusive
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def _spearman_np(x: np.ndarray, y: np.ndarray) -> float:
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if x.size < 2:
        return undefined(f"Spearman correlation is undefined for {x.size} non-NaN pair(s); returning nan")
    rx, ry = _average_ranks(x) - (x.size + 1) / 2, _average_ranks(y) - (y.size + 1) / 2
    denom = np.sqrt((rx @ rx) * (ry @ ry))
    if denom == 0:
        return undefined("Spearman correlation is undefined for constant input; returning nan")
    return float(np.clip((rx @ ry) / denom, -1.0, 1.0))


def rank_correlation(unc: ArrayLike, values: ArrayLike) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks) in float64.

    Args:
        unc: ``[N]`` uncertainties; values: ``[N]`` any real quantity. Pairs where either is NaN
            are dropped (like ``scipy.stats.spearmanr(..., nan_policy="omit")``); ``inf`` is an error.

    Returns:
        Value in [-1, 1]; positive = higher uncertainty goes with higher ``values``. ``nan`` with
        an :class:`UndefinedMetricWarning` if fewer than 2 pairs remain or either side is constant.
    """
    u = as_float_1d(unc, "unc", allow_nan=True)
    v = as_float_1d(values, "values", allow_nan=True)
    check_same_length(unc=u, values=v)
    return _spearman_np(u, v)


def rcorr_entropy(unc: ArrayLike, soft_labels: ArrayLike) -> float:
    """Spearman(unc, entropy of the human soft label): the original's ``rcorr_entropy``.

    Args:
        unc: ``[N]`` finite uncertainties (higher = more uncertain).
        soft_labels: ``[N, C]`` annotator vote counts or probabilities (see
            :func:`soft_label_entropy`); rows without votes (entropy NaN) are dropped.

    Returns:
        Positive = the model is more uncertain where annotators disagree more.
    """
    u = as_float_1d(unc, "unc")
    h = _entropy(as_counts(soft_labels, "soft_labels")).numpy()
    check_same_length(unc=u, soft_labels=h)
    return _spearman_np(u, h)


def rcorr_crop_unc(unc_cropped: ArrayLike, crop_fractions: ArrayLike) -> float:
    """Spearman(unc_cropped, -crop_fractions): does more cropping give more uncertainty?

    Args:
        unc_cropped: ``[N]`` uncertainties of the center-cropped images.
        crop_fractions: ``[N]`` KEPT side fraction c in (0, 1] of each crop (smaller = more cropped),
            as in the original.

    Returns:
        Positive = more cropping -> more uncertainty. Identical to the original's
        Spearman(-unc_cropped, c) (negating one side flips the sign; ranks and ties are unchanged).
    """
    u = as_float_1d(unc_cropped, "unc_cropped")
    c = as_float_1d(crop_fractions, "crop_fractions")
    check_same_length(unc_cropped=u, crop_fractions=c)
    return _spearman_np(u, -c)
