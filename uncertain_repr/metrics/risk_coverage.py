"""Selective prediction: risk-coverage curve and the area under it (AURC)."""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from ._checks import ArrayLike, _to_numpy, as_float_1d, check_same_length


def _grouped(uncertainties: ArrayLike, errors: ArrayLike) -> Tuple[np.ndarray, np.ndarray, int]:
    """Per group of equal uncertainty (ascending): group sizes and summed errors; and N."""
    u = as_float_1d(uncertainties, "uncertainties")
    e_raw = _to_numpy(errors, "errors")
    e = as_float_1d(e_raw.astype(np.float64) if e_raw.dtype == np.bool_ else e_raw, "errors")
    check_same_length(uncertainties=u, errors=e)
    order = np.argsort(u, kind="stable")
    u, e = u[order], e[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    sizes = np.diff(np.r_[starts, u.size])
    return sizes, np.add.reduceat(e, starts), u.size


def risk_coverage_curve(uncertainties: ArrayLike, errors: ArrayLike) -> Tuple[torch.Tensor, torch.Tensor]:
    """Risk of keeping only the most certain samples, at each coverage.

    Args:
        uncertainties: ``[N]`` finite, higher = more uncertain (rejected first).
        errors: ``[N]`` per-sample error/loss (bool: True = wrong, or any finite float).

    Returns:
        ``(coverage, risk)``, float64 tensors of shape ``[G]`` with G = number of distinct
        uncertainty values: keeping every sample with uncertainty <= the g-th smallest value
        gives coverage k_g / N and risk = mean error of those k_g samples. Samples with equal
        uncertainty are kept or rejected together, so the curve does not depend on input order.
    """
    sizes, sums, n = _grouped(uncertainties, errors)
    kept = np.cumsum(sizes)
    return torch.from_numpy(kept / n), torch.from_numpy(np.cumsum(sums) / kept)


def aurc(uncertainties: ArrayLike, errors: ArrayLike) -> float:
    """Area under the risk-coverage curve, lower = better. Shapes: ``[N]`` and ``[N]``.

    ``AURC = (1/N) * sum_{k=1..N} risk(k)`` with risk(k) = mean error of the k most certain
    samples (Geifman et al. 2019). Within a group of equal uncertainty the order is undefined, so
    risk(k) is its EXPECTATION over all orders of the group (errors inside the group are spread
    at the group's mean rate); without ties this is the usual AURC.
    """
    sizes, sums, n = _grouped(uncertainties, errors)
    group = np.repeat(np.arange(sizes.size), sizes)
    kept_before = np.r_[0, np.cumsum(sizes)[:-1]]
    err_before = np.r_[0.0, np.cumsum(sums)[:-1]]
    k = np.arange(1, n + 1)
    risk = (err_before[group] + (k - kept_before[group]) * (sums / sizes)[group]) / k
    return float(risk.mean())
