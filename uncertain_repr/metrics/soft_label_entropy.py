"""Entropy of soft (annotator) labels."""

from __future__ import annotations

import numpy as np
import torch

from ._checks import ArrayLike, as_float_2d


def as_counts(x: ArrayLike, name: str) -> np.ndarray:
    """``x`` as a finite, non-negative float64 array ``[N, C]`` of vote counts or probabilities."""
    counts = as_float_2d(x, name)
    if (counts < 0).any():
        raise ValueError(f"{name} must be non-negative (vote counts or probabilities)")
    return counts


def soft_label_entropy(counts_or_probs: ArrayLike) -> torch.Tensor:
    """Shannon entropy (natural log) of each row's label distribution.

    Args:
        counts_or_probs: ``[N, C]`` non-negative vote counts or probabilities; each row is
            normalised by its sum first.

    Returns:
        ``float64 Tensor[N]``; 0 * log 0 = 0; rows whose sum is 0 (no votes) give NaN. Rows that
        are permutations of each other get bitwise-equal entropies (each row is sorted before
        it is summed and normalised), so rank statistics see their ties exactly.

    Difference from the original: it clamped log q at -1e7 (same value for q = 0) and
    computed in float32 in column order, so permuted rows could differ by ~1e-7 and their tie
    was broken at random; here exact 0 * log 0 = 0 in float64 on sorted rows.
    """
    return _entropy(as_counts(counts_or_probs, "counts_or_probs"))


def _entropy(counts: np.ndarray) -> torch.Tensor:
    """:func:`soft_label_entropy` of checked ``counts [N, C]`` (float64, non-negative)."""
    # Permuted rows become identical rows; sums are running sums (a fixed order, whatever the
    # memory layout; np.sum's pairwise order depends on it).
    counts = np.sort(counts, axis=1)
    # Rows whose largest value is >= 1 are scaled down by a power of 2 (exact: q is unchanged)
    # so that the row sum cannot overflow (a sum of inf made every q 0 and the entropy 0).
    counts = np.ldexp(counts, -np.maximum(np.frexp(counts[:, -1:])[1], 0))
    total = np.cumsum(counts, axis=1)[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        q = counts / total
        plogp = np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0)
    entropy = -np.cumsum(plogp, axis=1)[:, -1]
    entropy[total[:, 0] == 0] = np.nan
    return torch.from_numpy(entropy)
