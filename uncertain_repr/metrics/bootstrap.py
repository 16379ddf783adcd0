"""Seeded bootstrap over samples: percentile intervals of any metric and paired differences of two methods.

``metric`` is any function of per-sample arrays that returns a float, e.g. ``auroc`` or
``np.mean``. Each resample draws N sample positions with replacement and calls ``metric`` on
the arrays indexed by them (along axis 0). Resample ``r`` uses the ``r``-th call of
``np.random.default_rng(seed).integers(0, N, size=N)``, so a plain numpy loop with the same
seed reproduces it, and every call with the same ``seed`` and ``N`` uses the same resamples
(intervals of several metrics or methods from one seed are coherent).

1-NN metrics (R@1, R-AUROC): resampling the embeddings would make a duplicated sample its own
nearest neighbour. Compute the per-sample 1-NN correctness once on the full set and bootstrap
over queries instead::

    correct = nearest_neighbor_correct(embeddings, labels).numpy()          # [N] bool
    bootstrap_ci(np.mean, correct)                                          # R@1
    bootstrap_ci(lambda u, c: auroc(u, ~c), unc, correct)                   # R-AUROC
    paired_bootstrap_difference(lambda u, c: auroc(u, ~c), unc_a, unc_b, correct)
"""

from __future__ import annotations

import warnings
from numbers import Real
from typing import Callable, NamedTuple, Sequence, Tuple, Union

import numpy as np

from ._checks import ArrayLike, UndefinedMetricWarning, _to_numpy, check_same_length, undefined

Metric = Callable[..., float]
Seed = Union[int, Sequence[int]]


class BootstrapInterval(NamedTuple):
    """``point`` = the metric on all samples; ``[low, high]`` = the percentile interval of the resamples."""

    point: float
    low: float
    high: float


class PairedDifference(NamedTuple):
    """``metric(a) - metric(b)`` on all samples, its percentile interval and a two-sided bootstrap p-value."""

    difference: float
    low: float
    high: float
    p_value: float


def _arrays(arrays, names) -> list:
    if not arrays:
        raise ValueError("bootstrap needs at least one per-sample array")
    converted = [_to_numpy(a, name) for a, name in zip(arrays, names)]
    for arr, name in zip(converted, names):
        if arr.ndim == 0 or arr.shape[0] == 0:
            raise ValueError(f"{name} must have at least one sample along axis 0, got shape {tuple(arr.shape)}")
    check_same_length(**dict(zip(names, converted)))
    return converted


def _check_resamples(n_resamples: int) -> None:
    if not isinstance(n_resamples, (int, np.integer)) or isinstance(n_resamples, bool) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive int, got {n_resamples!r}")


def _check_seed(seed: Seed) -> None:
    """An int >= 0 or a non-empty sequence of them: a Generator (or None) would not give both
    methods of a paired comparison the same resamples, nor the same resamples on every call."""
    def is_int(v: object) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

    values = list(seed) if isinstance(seed, (list, tuple, np.ndarray)) else [seed]
    if not all(is_int(v) for v in values):
        raise TypeError(f"seed must be an int or a sequence of ints (not a Generator or None), got {seed!r}")
    if not values or min(values) < 0:
        raise ValueError(f"seed must be a non-negative int or a non-empty sequence of them, got {seed!r}")


def _check_confidence(confidence: float) -> None:
    if not isinstance(confidence, Real) or not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def bootstrap_distribution(metric: Metric, *arrays: ArrayLike, n_resamples: int = 1000, seed: Seed = 0) -> np.ndarray:
    """``metric`` on ``n_resamples`` seeded resamples of the samples: ``float64 [n_resamples]``.

    Args:
        metric: ``metric(*resampled_arrays) -> float``.
        arrays: per-sample arrays (torch, numpy or lists), all with the same length N on axis 0
            (``[N]``, ``[N, D]``, ...).
        n_resamples: number of resamples R.
        seed: seeds ``np.random.default_rng`` (an int >= 0 or a sequence of them; a Generator or
            None is refused); resample ``r`` is its ``r``-th ``integers(0, N, size=N)`` draw.

    A resample where the metric is undefined (e.g. AUROC with one class only) gives ``nan``; its
    warnings are collected into one :class:`UndefinedMetricWarning`. With N = 1 (e.g. an array of
    shape ``[1, N]`` passed for ``[N]``) every resample is ``nan``, with that warning.
    """
    _check_resamples(n_resamples)
    _check_seed(seed)
    data = _arrays(arrays, [f"arrays[{i}]" for i in range(len(arrays))])
    n = data[0].shape[0]
    if n == 1:  # every resample would be that sample: a zero-width interval that claims certainty
        undefined(f"a bootstrap over 1 sample along axis 0 is undefined (arrays[0] has shape {tuple(data[0].shape)}; "
                  "per-sample arrays are [N, ...]); returning nan for every resample")
        return np.full(int(n_resamples), np.nan)
    rng = np.random.default_rng(seed)
    values = np.empty(int(n_resamples), dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for r in range(int(n_resamples)):
            idx = rng.integers(0, n, size=n)
            values[r] = float(metric(*(a[idx] for a in data)))
    bad = int(np.isnan(values).sum())
    if bad:
        warnings.warn(f"the metric is undefined (nan) on {bad} of {n_resamples} resamples; they are left out of "
                      "intervals", UndefinedMetricWarning, stacklevel=2)
    return values


def percentile_interval(values: np.ndarray, confidence: float = 0.95) -> Tuple[float, float]:
    """``(low, high)`` percentiles of ``values [R]`` around ``confidence``, NaN left out (nan, nan if all are)."""
    _check_confidence(confidence)
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return undefined("the metric is undefined on every resample; returning a nan interval"), float("nan")
    tail = 50.0 * (1.0 - float(confidence))
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_ci(
    metric: Metric, *arrays: ArrayLike, n_resamples: int = 1000, seed: Seed = 0, confidence: float = 0.95
) -> BootstrapInterval:
    """Percentile bootstrap interval of ``metric(*arrays)`` over samples.

    Shapes: each of ``arrays`` is ``[N, ...]`` (same N). Returns ``(point, low, high)``: the
    metric on all samples and the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
    percentiles (numpy's linear interpolation) of the resampled values, nan resamples left out.
    See :func:`bootstrap_distribution` for the resampling and the module docstring for 1-NN metrics.
    """
    _check_confidence(confidence)
    data = _arrays(arrays, [f"arrays[{i}]" for i in range(len(arrays))])
    values = bootstrap_distribution(metric, *data, n_resamples=n_resamples, seed=seed)
    return BootstrapInterval(float(metric(*data)), *percentile_interval(values, confidence))


def paired_difference(values_a: np.ndarray, values_b: np.ndarray, point_a: float, point_b: float,
                      confidence: float = 0.95) -> PairedDifference:
    """The :class:`PairedDifference` of two bootstrap distributions drawn on the SAME resamples (same seed, same N).

    Shapes: ``values_a``, ``values_b`` ``[R]``. ``p_value`` = ``min(1, 2 * min(P(d <= 0), P(d >= 0)))``
    over the resampled differences ``d`` (nan left out): small = the sign of the difference is stable.
    """
    _check_confidence(confidence)
    a, b = np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"values_a and values_b must be [R] of the same length, got {a.shape} and {b.shape}")
    diff = a - b
    low, high = percentile_interval(diff, confidence)
    finite = diff[~np.isnan(diff)]
    p = float("nan") if finite.size == 0 else min(1.0, 2.0 * min(np.mean(finite <= 0), np.mean(finite >= 0)))
    return PairedDifference(float(point_a) - float(point_b), low, high, float(p))


def paired_bootstrap_difference(
    metric: Metric,
    unc_a: ArrayLike,
    unc_b: ArrayLike,
    *arrays: ArrayLike,
    n_resamples: int = 1000,
    seed: Seed = 0,
    confidence: float = 0.95,
) -> PairedDifference:
    """Is uncertainty A better than B on the same samples? Paired bootstrap of ``metric(a, *arrays) - metric(b, *arrays)``.

    Args:
        metric: ``metric(uncertainties [N], *arrays) -> float``, e.g. ``lambda u, c: auroc(u, ~c)``.
        unc_a: ``[N]`` uncertainties of method A.
        unc_b: ``[N]`` uncertainties of method B on the same N samples.
        arrays: further per-sample arrays ``[N, ...]`` (labels, 1-NN correctness, ...).
        n_resamples: as in :func:`bootstrap_ci`.
        seed: as in :func:`bootstrap_ci`.
        confidence: as in :func:`bootstrap_ci`.

    Both methods are scored on the same resamples. Returns ``(difference, low, high, p_value)``;
    difference > 0 means A scores higher; an interval that excludes 0 (small ``p_value``) means
    the ranking of A and B is stable under resampling of this set.
    """
    _check_confidence(confidence)
    names = ["unc_a", "unc_b"] + [f"arrays[{i}]" for i in range(len(arrays))]
    ua, ub, *rest = _arrays((unc_a, unc_b, *arrays), names)
    values = [bootstrap_distribution(metric, u, *rest, n_resamples=n_resamples, seed=seed) for u in (ua, ub)]
    return paired_difference(*values, metric(ua, *rest), metric(ub, *rest), confidence)
