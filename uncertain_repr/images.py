"""Reading image files into model-ready batches with the model's own timm transforms.

``eval_transform`` lives in :mod:`uncertain_repr.data.transforms`; it is re-exported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Sequence, Union

import torch

from .data.transforms import eval_transform

__all__ = ["eval_transform", "load_images"]


def load_images(paths: Sequence[Union[str, Path]], transform: Callable) -> torch.Tensor:
    """Decode RGB images and stack ``transform(image)`` into ``[N, C, H, W]``.

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file that is missing or cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    tensors: List[torch.Tensor] = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        try:
            with Image.open(path) as image:
                tensors.append(transform(image.convert("RGB")))
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"cannot decode image {path}: {err}") from None
    if not tensors:
        raise ValueError("no images given")
    return torch.stack(tensors)
