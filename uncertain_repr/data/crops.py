"""The crop test's deterministic center crops (url-spec §3.1, §3.6; fixes §9 items 35 and 37).

Image ``n`` of a dataset keeps the central square of side ``round(min(H, W) * c_n)``, resized back
to ``(H, W)``; ``c_n`` ~ U(low, high) is fixed by ``(seed, dataset name, split, n)`` through a
counter-based hash -- no files, no global RNG, and independent of the dataset's size (the
original keyed a cached CSV by the size alone, so equal-sized datasets shared crops). The crop
is applied to the decoded image, before resizing and normalisation, with an antialiased resize.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ._keyed_random import keyed_uniform
from .dataset import DatasetWrapper

_DEFAULT = object()


def _check_range(low: float, high: float) -> None:
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"crop fractions need 0 < low <= high <= 1, got low={low}, high={high}")


def crop_fractions(
    seed: int, dataset_name: str, split: str, indices: Sequence[int], low: float = 0.1, high: float = 0.75
) -> torch.Tensor:
    """``float64 Tensor[N]``: the kept side fraction in ``[low, high)`` of each dataset index."""
    _check_range(low, high)
    if torch.is_tensor(indices):
        indices = indices.cpu().numpy()
    u = keyed_uniform(seed, ("crop", str(dataset_name), str(split)), np.asarray(indices))
    return torch.from_numpy(low + (high - low) * u)


def center_crop_resize(image: Image.Image, fraction: float) -> Image.Image:
    """Keep the central ``s x s`` square, ``s = round(min(W, H) * fraction)`` (at least 1 pixel),
    and resize it back to the image's ``(W, H)`` (bilinear, antialiased; aspect not preserved)."""
    import torchvision.transforms.functional as TF

    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    width, height = image.size
    side = max(1, round(min(width, height) * fraction))
    cropped = TF.center_crop(image, [side, side])
    return TF.resize(cropped, [height, width], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)


class WithCrops(DatasetWrapper):
    """Adds ``"image_cropped"`` and ``"crop_fraction"`` (float) to each item of ``dataset``.

    The crop is taken from the decoded image (``dataset.load_raw``), then ``transform`` is applied
    to both images. ``transform`` defaults to the dataset's own transform, so
    ``WithCrops(create_dataset(..., transform=t))`` and ``WithCrops(create_dataset(...), transform=t)``
    give the same items. The fraction is keyed by ``dataset.name``, ``dataset.split`` and the
    item's ``"index"``.
    """

    def __init__(
        self,
        dataset: Dataset,
        seed: int = 0,
        low: float = 0.1,
        high: float = 0.75,
        transform: Optional[Callable] = _DEFAULT,  # type: ignore[assignment]
    ):
        super().__init__(dataset)
        _check_range(low, high)
        for attr in ("name", "split"):
            if not isinstance(getattr(dataset, attr, None), str):
                raise TypeError(f"dataset must have a str .{attr} to key its crops (an ImageDataset has both)")
        self.seed, self.low, self.high = seed, low, high
        self.transform = self.own_transform() if transform is _DEFAULT else transform
        crop_fractions(seed, dataset.name, dataset.split, [0], low, high)  # validates the seed early

    def __getitem__(self, index: int) -> Dict[str, Any]:
        item = self.load_raw(index)
        fraction = float(crop_fractions(self.seed, self.name, self.split, [item["index"]], self.low, self.high)[0])
        cropped = center_crop_resize(item["image"], fraction)
        if self.transform is not None:
            item["image"], cropped = self.transform(item["image"]), self.transform(cropped)
        item["image_cropped"] = cropped
        item["crop_fraction"] = fraction
        return item
