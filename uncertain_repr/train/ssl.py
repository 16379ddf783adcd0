"""Self-supervised training data (``--ssl true``): two views per image, on images or on an embedding cache.

Batches follow the layout of the contrastive losses (:mod:`uncertain_repr.losses.contrastive`):
``2B`` rows ``[x0_v1, x0_v2, x1_v1, x1_v2, ...]``, rows ``2k`` and ``2k + 1`` a positive pair,
built by :func:`~uncertain_repr.data.collate_views`. On images each view is a fresh draw of
:func:`~uncertain_repr.data.ssl_transform` (:class:`~uncertain_repr.data.TwoViews`); on a cache the
two views of an image are two of its cached augmented epochs (:class:`CachedViewPairs`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data import collate_views


class CachedViewPairs(Dataset):
    """Pairs of cached rows showing the same image: item ``k`` has ``"embedding"`` ``[2, D]``.

    The rows of every sample index are taken in epoch order and paired (epochs 0 and 1, 2 and 3,
    ...); an odd last epoch is left out. So a cache written with ``--epochs 2`` gives one pair per
    image, and one with ``2E`` epochs gives E pairs.

    Args:
        cache: a :class:`~uncertain_repr.cache.CachedEmbeddings` (or any dataset whose items have
            ``embedding``, ``index`` and ``epoch``).
    """

    collate_fn = staticmethod(collate_views)

    def __init__(self, cache: Dataset) -> None:
        self.cache = cache
        indices, epochs = self._keys(cache)
        order = np.lexsort((epochs, indices))  # rows by sample index, then epoch
        keys = indices[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        pairs: List[Tuple[int, int]] = []
        for start, stop in zip(starts, np.r_[starts[1:], len(order)]):
            rows = order[start:stop]
            pairs += [(int(rows[j]), int(rows[j + 1])) for j in range(0, len(rows) - 1, 2)]
        if not pairs:
            raise ValueError("--ssl on a cache needs at least two cached views (epochs) of each image; "
                             "build the cache with `uncertain-repr cache --epochs 2` (or more)")
        self.pairs = pairs

    @staticmethod
    def _keys(cache: Any) -> Tuple[np.ndarray, np.ndarray]:
        """(sample index, epoch) of every row: read from the HDF5 columns of a cache, else item by item."""
        if not hasattr(cache, "files"):
            rows = [cache[i] for i in range(len(cache))]
            return np.array([r["index"] for r in rows]), np.array([r["epoch"] for r in rows])
        import h5py

        indices, epochs = [], []
        for file in cache.files:
            with h5py.File(file, "r") as handle:
                indices.append(handle["indices"][()])
                epochs.append(handle["epochs"][()])
        return np.concatenate(indices), np.concatenate(epochs)

    @property
    def manifest(self):
        """The cache's manifest (its backbone, transform, ...), if it has one."""
        return getattr(self.cache, "manifest", None)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, k: int) -> Dict[str, Any]:
        first, second = (self.cache[i] for i in self.pairs[k])
        item = dict(first)
        item["embedding"] = torch.stack([first["embedding"], second["embedding"]])
        return item
