"""Control uncertainties every benchmark table should beat: seeded random and image sharpness.

A method that does not beat ``random`` (R-AUROC ~0.5) or the sharpness of the image (no
model at all) is not informative on that set.
"""

from __future__ import annotations

import zlib
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

# ITU-R BT.601 luma weights (what PIL's convert("L") uses).
GREY = (0.299, 0.587, 0.114)
# 4-neighbour Laplacian (OpenCV's cv2.Laplacian with ksize=1, scipy.ndimage.laplace).
LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))

Images = Union[torch.Tensor, np.ndarray, Sequence]


def random_uncertainty(indices: Union[np.ndarray, Sequence[int]], *, seed: int = 0, dataset: str = "") -> np.ndarray:
    """Seeded uniform random uncertainties ``float32 [N]`` for the samples at ``indices [N]``.

    The value of a sample depends only on (``seed``, ``dataset``, its index), so it is the same
    whatever subset, order or process shard the sample is evaluated in.
    """
    idx = np.asarray(indices)
    if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
        raise ValueError(f"indices must be [N] integer sample indices, got shape {idx.shape} dtype {idx.dtype}")
    if idx.size and idx.min() < 0:
        raise ValueError("indices must be >= 0")
    size = int(idx.max()) + 1 if idx.size else 0
    table = np.random.default_rng([int(seed), zlib.crc32(dataset.encode())]).random(size, dtype=np.float32)
    return table[idx.astype(np.int64)]


def _as_batch(images: Images) -> torch.Tensor:
    if isinstance(images, (torch.Tensor, np.ndarray)):
        x = torch.as_tensor(images)
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"images must be [B, 3, H, W] or [B, 1, H, W], got shape {tuple(x.shape)}")
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"images must hold real numbers, got dtype {x.dtype}")
        return x
    raise TypeError(f"images must be a [B, C, H, W] tensor/array or a list of PIL images, got {type(images).__name__}")


def _grey(x: torch.Tensor) -> torch.Tensor:
    x = x.to(torch.float64)
    if x.shape[1] == 1:
        return x
    weights = torch.tensor(GREY, dtype=torch.float64, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def sharpness_uncertainty(images: Images) -> np.ndarray:
    """Negative variance of the Laplacian of the grey image: ``float64 [B]``, higher = blurrier.

    Args:
        images: ``[B, 3, H, W]`` RGB (or ``[B, 1, H, W]`` grey) tensor/array with H, W >= 3, or a
            list of PIL images (each converted to RGB, values 0..255; sizes may differ).

    Grey = BT.601 luma; the Laplacian is the 4-neighbour kernel on the interior pixels (no
    padding). A global affine change of the pixel values (e.g. one normalisation for all images)
    scales every value by the same factor, so the ranking it induces does not change.
    """
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images is empty")
        if all(hasattr(im, "convert") for im in images):  # PIL images of any size, one at a time
            arrays = [np.asarray(im.convert("RGB"), dtype=np.float64).transpose(2, 0, 1)[None] for im in images]
            return np.concatenate([sharpness_uncertainty(a) for a in arrays])
    x = _as_batch(images)
    if x.shape[0] == 0:
        raise ValueError("images is empty")
    if x.shape[2] < 3 or x.shape[3] < 3:
        raise ValueError(f"images must be at least 3x3 pixels for a Laplacian, got {tuple(x.shape[2:])}")
    kernel = torch.tensor(LAPLACIAN, dtype=torch.float64, device=x.device).view(1, 1, 3, 3)
    response = F.conv2d(_grey(x), kernel).flatten(1)
    return (-response.var(dim=1, unbiased=False)).cpu().numpy()
