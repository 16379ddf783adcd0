"""Exact binary AUROC from ranks (Mann-Whitney U) and AUROC for out-of-distribution detection."""

from __future__ import annotations

import numpy as np

from ._checks import ArrayLike, as_binary, as_float_1d, check_same_length, undefined


def _auroc_np(scores: np.ndarray, positives: np.ndarray) -> float:
    pos = np.sort(scores[positives])
    neg = np.sort(scores[~positives])
    if pos.size == 0 or neg.size == 0:
        only = "negatives" if pos.size == 0 else "positives"
        return undefined(f"AUROC is undefined: only {only} among {scores.size} samples; returning nan")
    # 2U = sum over positives of (#neg < s) + (#neg <= s): exact integer arithmetic.
    twice_u = (
        np.searchsorted(neg, pos, side="left").sum(dtype=np.int64)
        + np.searchsorted(neg, pos, side="right").sum(dtype=np.int64)
    )
    return float(twice_u) / (2.0 * pos.size * neg.size)


def auroc(scores: ArrayLike, positives: ArrayLike) -> float:
    """Exact binary AUROC: P(score of a random positive > score of a random negative), ties count 1/2.

    Args:
        scores: ``[N]`` real, finite scores; higher = more likely positive. No sigmoid is applied.
        positives: ``[N]`` bool (or integer 0/1), True = positive.

    Returns:
        The Mann-Whitney U statistic / (n_pos * n_neg), computed from sorted scores in exact
        integer arithmetic (float64 at the end). ``nan`` with an :class:`UndefinedMetricWarning`
        if only one class is present.

    Difference from the original (torchmetrics ``binary_auroc``): no sigmoid on scores outside
    [0, 1], so large-magnitude scores do not saturate into ties (spec §9 item 32).
    """
    s = as_float_1d(scores, "scores")
    p = as_binary(positives, "positives")
    check_same_length(scores=s, positives=p)
    return _auroc_np(s, p)


def auroc_ood(unc_id: ArrayLike, unc_ood: ArrayLike) -> float:
    """AUROC of the uncertainty for flagging out-of-distribution samples.

    Args:
        unc_id: ``[N_id]`` uncertainties of in-distribution samples (negatives).
        unc_ood: ``[N_ood]`` uncertainties of out-of-distribution samples (positives).

    Returns:
        ``auroc(concat(unc_id, unc_ood), is_ood)``: 1.0 = every OOD sample is more uncertain
        than every ID sample; 0.5 = uninformative. Higher uncertainty = OOD.
    """
    a = as_float_1d(unc_id, "unc_id")
    b = as_float_1d(unc_ood, "unc_ood")
    is_ood = np.concatenate([np.zeros(a.size, dtype=bool), np.ones(b.size, dtype=bool)])
    return _auroc_np(np.concatenate([a, b]), is_ood)
