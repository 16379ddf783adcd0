"""Reading image files into model-ready batches with the model's own timm transforms.

Every image becomes 8-bit RGB on the intensity scale its PIL mode declares (see
:data:`INTENSITY_RANGES`): 16-bit images (``I;16*``, and ``I``, as PIL opens 16-bit PNGs and TIFFs)
are divided by 257, float images (``F``) must hold values in ``[0, 1]`` and are multiplied by 255;
values outside the declared range raise ``ValueError`` instead of being clipped to white or black.
EXIF orientation is applied. Files above PIL's decompression-bomb limit
``PIL.Image.MAX_IMAGE_PIXELS`` (89,478,485 pixels by default) are refused with ``ValueError``.

``eval_transform`` lives in :mod:`uncertain_repr.data.transforms`; it is re-exported here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from .data.transforms import eval_transform

__all__ = ["INTENSITY_RANGES", "decode_image", "eval_transform", "load_images", "to_rgb"]

INTENSITY_RANGES: Dict[str, Tuple[float, float]] = {
    "I;16": (0, 65535),
    "I;16L": (0, 65535),
    "I;16B": (0, 65535),
    "I;16N": (0, 65535),
    "I": (0, 65535),
    "F": (0.0, 1.0),
}
"""PIL modes with more than 8 bits per pixel -> the ``(black, white)`` values they are read with.
Mode ``I`` (32-bit integer) is read as 16-bit, which is what PIL opens 16-bit files as."""


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``image`` (any PIL mode), scaled by :data:`INTENSITY_RANGES` for deep modes.

    ``ValueError`` for an empty image, values outside the mode's range (or NaN), or a mode PIL cannot
    convert to RGB. Alpha is dropped, as timm and torchvision do.
    """
    if image.width == 0 or image.height == 0:
        raise ValueError(f"the image has no pixels (size {image.width}x{image.height})")
    scale = INTENSITY_RANGES.get(image.mode)
    if scale is not None:
        black, white = scale
        values = np.asarray(image, dtype=np.float64)
        low, high = float(np.min(values)), float(np.max(values))
        if not (np.isfinite(low) and np.isfinite(high)) or low < black or high > white:
            raise ValueError(
                f"a mode {image.mode} image must hold values in [{black}, {white}], got [{low:g}, {high:g}]; "
                "rescale it into that range or save it as an 8-bit image"
            )
        image = Image.fromarray(np.round((values - black) * (255.0 / (white - black))).astype(np.uint8))
    try:
        return image.convert("RGB")
    except ValueError as err:
        raise ValueError(f"cannot convert a mode {image.mode} image to RGB: {err}") from None


def decode_image(path: Union[str, Path]) -> Image.Image:
    """The image file at ``path`` as 8-bit RGB (EXIF orientation applied, deep modes scaled by :func:`to_rgb`).

    ``FileNotFoundError`` if there is no such file; ``ValueError`` naming the file if it cannot be
    decoded or is larger than ``PIL.Image.MAX_IMAGE_PIXELS``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    # The pixel limit is checked here, not by turning PIL's warning into an error: warning filters are
    # process-global, and images decode on a loader thread while the caller may change them.
    try:
        # Opened as a file object, not by name: PIL memory-maps uncompressed files it opens by name, and for
        # a one-band TIFF whose orientation turns it (5-8) it maps the raster at the turned size, which
        # scrambles the pixels without an error (Pillow 13).
        with open(path, "rb") as file, Image.open(file) as image:
            pixels = image.width * image.height
            if Image.MAX_IMAGE_PIXELS is not None and pixels > Image.MAX_IMAGE_PIXELS:
                raise Image.DecompressionBombError(f"({pixels} pixels)")
            return to_rgb(ImageOps.exif_transpose(image))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        size = re.search(r"\((\d+) pixels\)", str(err))
        raise ValueError(
            f"refusing to decode image {path}: {int(size[1]) if size else 'more'} pixels is more than "
            f"PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS} (PIL's guard against decompression bombs). "
            "Downscale it, or raise PIL.Image.MAX_IMAGE_PIXELS in Python if you trust the file"
        ) from None
    except Exception as err:  # PIL raises many types on corrupt files (OSError, SyntaxError, struct.error, ...)
        raise ValueError(f"cannot decode image {path}: {err}") from None


def load_images(paths: Sequence[Union[str, Path]], transform: Callable) -> torch.Tensor:
    """Decode images with :func:`decode_image` and stack ``transform(image)`` into ``[N, C, H, W]``.

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file that is missing or cannot be decoded.
    """
    tensors: List[torch.Tensor] = [transform(decode_image(path)) for path in paths]
    if not tensors:
        raise ValueError("no images given")
    return torch.stack(tensors)
