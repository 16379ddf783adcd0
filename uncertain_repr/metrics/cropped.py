"""Crop test: does a center crop of an image raise its uncertainty?"""

from __future__ import annotations

import numpy as np

from ._checks import ArrayLike, as_float_1d, check_same_length


def cropped_has_bigger_uncertainty(unc: ArrayLike, unc_cropped: ArrayLike) -> float:
    """Fraction in [0, 1] of samples with ``unc_cropped > unc`` (strict; ties count as no).

    Shapes: unc ``[N]`` (original images), unc_cropped ``[N]`` (their center crops), finite.
    Higher = the uncertainty reacts to the information removed by cropping. The original's
    ``croppedHasBiggerUnc``; it reported 0 when no crops were made, here that key is absent.
    """
    u = as_float_1d(unc, "unc")
    c = as_float_1d(unc_cropped, "unc_cropped")
    check_same_length(unc=u, unc_cropped=c)
    return float(np.mean(c > u))
