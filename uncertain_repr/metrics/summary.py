"""Descriptive statistics of the uncertainty values."""

from __future__ import annotations

from typing import Dict

import numpy as np

from ._checks import ArrayLike, as_float_1d


def uncertainty_summary(unc: ArrayLike) -> Dict[str, float]:
    """Min/mean/max, quantiles and inter-quantile ranges of ``unc [N]`` (finite).

    Returns:
        ``{"min_unc", "avg_unc", "max_unc", "unc_q10", "unc_q25", "unc_q50", "unc_q75",
        "unc_q90", "unc_iqr_90_10", "unc_iqr_75_25"}`` as Python floats; quantiles are
        numpy's default linear interpolation, in float64.
    """
    u = as_float_1d(unc, "unc")
    q10, q25, q50, q75, q90 = np.quantile(u, [0.10, 0.25, 0.50, 0.75, 0.90])
    return {
        "min_unc": float(u.min()),
        "avg_unc": float(u.mean()),
        "max_unc": float(u.max()),
        "unc_q10": float(q10),
        "unc_q25": float(q25),
        "unc_q50": float(q50),
        "unc_q75": float(q75),
        "unc_q90": float(q90),
        "unc_iqr_90_10": float(q90 - q10),
        "unc_iqr_75_25": float(q75 - q25),
    }
