"""Counter-based randomness keyed by (seed, name, split, index): no state, no files, no size.

Value ``i`` of the stream for key ``(seed, *key)`` is output number ``i + 1`` of SplitMix64
(Steele et al., 2014) started at the 64-bit BLAKE2b digest of the key, mapped to ``[0, 1)`` by
its top 53 bits. It depends only on the key and ``i`` -- not on how many values are drawn, on the
dataset's length, on the process or on any global RNG.
"""

from __future__ import annotations

import hashlib

import numpy as np

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _key_state(seed: int, key: tuple) -> np.uint64:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    text = "\x1f".join([str(int(seed)), *(str(k) for k in key)])
    return np.uint64(int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little"))


def keyed_uniform(seed: int, key: tuple, indices: np.ndarray) -> np.ndarray:
    """``float64 [N]`` in ``[0, 1)``, one value per non-negative int index, fixed by ``(seed, key, index)``."""
    idx = np.asarray(indices)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise TypeError(f"indices must be a 1-D sequence of ints, got shape {idx.shape} dtype {idx.dtype}")
    if idx.size and idx.min() < 0:
        raise ValueError(f"indices must be non-negative, got {int(idx.min())}")
    with np.errstate(over="ignore"):
        z = _key_state(seed, key) + (idx.astype(np.uint64) + np.uint64(1)) * _GAMMA
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def keyed_permutation(seed: int, key: tuple, n: int) -> np.ndarray:
    """``int64 [n]``: ``range(n)`` ordered by their keyed uniforms (a seeded, size-stable shuffle)."""
    return np.argsort(keyed_uniform(seed, key, np.arange(n)), kind="stable")
