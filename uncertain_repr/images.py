"""Reading image files into model-ready batches with the model's own timm transforms."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Sequence, Union

import torch
from torch import nn


def eval_transform(model: nn.Module) -> Callable:
    """timm's eval transform for ``model``'s resolved data config (resize, center crop, normalise)."""
    import timm.data

    return timm.data.create_transform(**timm.data.resolve_model_data_config(model), is_training=False)


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
