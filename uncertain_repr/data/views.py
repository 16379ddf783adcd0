"""Self-supervised two-view batches for the contrastive losses (url-spec §4.6, ``--ssl``)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List

import torch
from torch.utils.data import Dataset, default_collate

from .dataset import DatasetWrapper


class TwoViews(DatasetWrapper):
    """Item ``i``: ``"image"`` = ``Tensor[2, C, H, W]``, two independent draws of ``transform``
    (e.g. :func:`ssl_transform`) of the same decoded image, plus the dataset's other keys."""

    def __init__(self, dataset: Dataset, transform: Callable):
        super().__init__(dataset)
        if not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.transform = transform

    def __getitem__(self, index: int) -> Dict[str, Any]:
        item = self.load_raw(index)
        image = item["image"]
        item["image"] = torch.stack([self.transform(image), self.transform(image)])
        return item


def collate_views(batch: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Batch ``TwoViews`` items as ``2B`` rows ``[img0_v1, img0_v2, img1_v1, ...]``; every other key
    (``label``, ``index``, a str ``path``, ...) is repeated per view, so rows ``2k`` and ``2k + 1`` are a positive pair.
    Items with ``"embedding"`` ``[2, D]`` (two cached views) instead of ``"image"`` work the same way."""
    views = "image" if "image" in batch[0] else "embedding"
    # every other key (tensor, str, nested dict, ...) collated from each item listed twice
    out = default_collate([{k: v for k, v in item.items() if k != views} for item in batch for _ in range(2)])
    out[views] = default_collate([item[views] for item in batch]).flatten(0, 1)
    return out


#: the collate function of ``TwoViews`` items (``DataLoader(..., collate_fn=TwoViews.collate_fn)``)
TwoViews.collate_fn = staticmethod(collate_views)
