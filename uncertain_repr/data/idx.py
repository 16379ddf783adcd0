"""Datasets in the MNIST ``idx`` format (gzipped ``*-images-idx3-ubyte`` / ``*-labels-idx1-ubyte``).

* ``idx/fashion_mnist``: Fashion-MNIST (Xiao et al. 2017, MIT), splits ``train`` (60,000) and
  ``test`` (10,000), 28x28 greyscale served as RGB PIL images. ``root`` holds
  ``train-images-idx3-ubyte.gz`` ... (Debian's ``dataset-fashion-mnist`` puts them in
  ``/usr/share/datasets/fashion-mnist/``) or a ``fashion-mnist/`` folder with them.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from .dataset import ImageDataset
from .registry import register_dataset

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path: Path) -> np.ndarray:
    """The array stored in one (optionally gzipped) idx file; ``ValueError`` naming it if malformed."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise ValueError(f"{path}: truncated or corrupt gzip file ({err})") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: header announces {ndim} dimensions ({4 + 4 * ndim} bytes), the file holds {len(data)} bytes")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, file holds {body.size} values (truncated?)")
    return body.reshape(shape)


class ArrayImages:
    """Greyscale images held in a ``uint8`` array ``[N, H, W]``, served as RGB PIL images."""

    def __init__(self, pixels: np.ndarray, origin: str):
        self.pixels = pixels
        self.origin = origin

    def __len__(self) -> int:
        return len(self.pixels)

    def describe(self, position: int) -> str:
        """``<file>[position]``."""
        return f"{self.origin}[{position}]"

    def load(self, position: int) -> Image.Image:
        """The image at ``position`` as an RGB PIL image."""
        return Image.fromarray(self.pixels[position], mode="L").convert("RGB")


@register_dataset("idx/fashion_mnist", ("train", "test"))
def fashion_mnist(root: Path, split: str) -> ImageDataset:
    folder = root / "fashion-mnist" if (root / "fashion-mnist").is_dir() else root
    images_path = folder / f"{_PREFIX[split]}-images-idx3-ubyte.gz"
    labels_path = folder / f"{_PREFIX[split]}-labels-idx1-ubyte.gz"
    for path in (images_path, labels_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"Fashion-MNIST file not found: {path} (Debian: apt-get install dataset-fashion-mnist)"
            )
    pixels, labels = read_idx(images_path), read_idx(labels_path)
    if pixels.ndim != 3 or labels.shape != (len(pixels),):
        raise ValueError(f"{images_path} {pixels.shape} and {labels_path} {labels.shape} do not match")
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"{labels_path}: labels must be class indices in [0, {len(FASHION_MNIST_CLASSES)}), "
                         f"got {int(labels.max())}")
    return ImageDataset(
        ArrayImages(pixels, str(images_path)),
        labels.astype(np.int64),
        name="idx/fashion_mnist",
        split=split,
        num_classes=len(FASHION_MNIST_CLASSES),
        classes=FASHION_MNIST_CLASSES,
    )
