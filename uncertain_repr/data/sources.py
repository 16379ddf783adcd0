"""Where images come from: files on disk, members of an uncompressed tar, a torchvision dataset.

A source maps a position to a decoded RGB ``PIL.Image`` and can describe that position (a path)
for error messages. Sources are picklable and open nothing before a worker forks.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Sequence, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


class ImageDecodeError(ValueError):
    """An image file is missing or cannot be decoded; the message names it."""


class ImageSource(Protocol):
    def __len__(self) -> int: ...

    def load(self, position: int) -> Image.Image:
        """The decoded RGB image at ``position``; :class:`ImageDecodeError` naming the file if it fails."""
        ...

    def describe(self, position: int) -> str:
        """Where the image at ``position`` comes from (a path), for error messages."""
        ...


def _decode(data: Union[Path, io.BytesIO], name: str) -> Image.Image:
    from ..images import to_rgb  # 16-bit and float images on their true scale, not clipped to white/black

    try:  # a file object, not a path: see decode_image (PIL's memory map scrambles turned TIFFs)
        with (data.open("rb") if isinstance(data, Path) else data) as file, Image.open(file) as image:
            return to_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(f"cannot decode image {name}: {err}") from None


def is_image_file(path: Path) -> bool:
    """An image by extension (case-insensitive), not a macOS ``._`` resource fork or hidden file."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


class FileImages:
    """Images stored as files, one path per position."""

    def __init__(self, paths: Sequence[Union[str, Path]]):
        self.paths: List[str] = [str(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, position: int) -> str:
        """The path of the image at ``position``."""
        return self.paths[position]

    def load(self, position: int) -> Image.Image:
        """The decoded RGB image at ``position``."""
        path = Path(self.paths[position])
        if not path.is_file():
            raise ImageDecodeError(f"image not found: {path}")
        return _decode(path, str(path))


class TarImages:
    """Members of an uncompressed tar, read in place (never extracted).

    The member table (data offset and size of each image) is read once at construction; the tar
    file itself is opened lazily, once per process, so forked or spawned workers each get their
    own handle.
    """

    def __init__(self, tar_path: Union[str, Path], members: Sequence[str]):
        self.tar_path = str(tar_path)
        try:
            with tarfile.open(self.tar_path, "r:") as tar:
                table = {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}
        except FileNotFoundError:
            raise FileNotFoundError(f"tar file not found: {self.tar_path}") from None
        except tarfile.ReadError as err:
            raise ValueError(f"{self.tar_path} is not an uncompressed tar file ({err})") from None
        missing = [m for m in members if m not in table]
        if missing:
            raise ValueError(
                f"{len(missing)} image(s) listed in the index are not in {self.tar_path}, e.g. {missing[:3]}"
            )
        self.members: List[str] = list(members)
        self._spans = [table[m] for m in self.members]
        self._file: Optional[io.BufferedReader] = None
        self._pid: Optional[int] = None

    def __len__(self) -> int:
        return len(self.members)

    def describe(self, position: int) -> str:
        """The path of the image at ``position``."""
        return f"{self.tar_path}:{self.members[position]}"

    def load(self, position: int) -> Image.Image:
        """The decoded RGB image at ``position``."""
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = open(self.tar_path, "rb"), os.getpid()
        offset, size = self._spans[position]
        self._file.seek(offset)
        return _decode(io.BytesIO(self._file.read(size)), self.describe(position))

    def __getstate__(self) -> Dict[str, Any]:
        return {**self.__dict__, "_file": None, "_pid": None}

    def __del__(self) -> None:
        if getattr(self, "_file", None) is not None and self._pid == os.getpid():
            self._file.close()


class TorchvisionImages:
    """The images of a torchvision dataset built with ``transform=None`` (item ``[0]`` is a PIL image)."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def describe(self, position: int) -> str:
        """The path of the image at ``position``."""
        return f"{type(self.dataset).__name__}({getattr(self.dataset, 'root', '')})[{position}]"

    def load(self, position: int) -> Image.Image:
        """The decoded RGB image at ``position``; ``ImageDecodeError`` naming it if it cannot be read or
        converted, ``TypeError`` naming it if the dataset gives neither a PIL image nor a numpy array."""
        try:
            image = self.dataset[position][0]
            if isinstance(image, Image.Image) and image.mode == "RGB":
                return image
            return _to_rgb(image, self.describe(position))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise ImageDecodeError(f"cannot decode image {self.describe(position)}: {err}") from None


def _to_rgb(image: Any, name: str) -> Image.Image:
    from ..images import to_rgb

    if isinstance(image, np.ndarray):
        try:
            image = Image.fromarray(image)
        except TypeError as err:  # an array shape or dtype PIL has no mode for
            raise ValueError(f"PIL cannot make an image of an array of shape {image.shape}, dtype {image.dtype}: {err}") from None
    if not isinstance(image, Image.Image):
        raise TypeError(
            f"image {name} is a {type(image).__name__}; the dataset must give PIL images or numpy arrays "
            "(build it with transform=None)"
        )
    return to_rgb(image)


def indexed_images(folder: Path, tar_name: str, members: Sequence[str]) -> ImageSource:
    """Images named in an index: read from ``folder/tar_name`` if present, else from the extracted files."""
    tar_path = folder / tar_name
    if tar_path.is_file():
        return TarImages(tar_path, members)
    first = folder / members[0] if members else folder
    if not first.exists():
        raise FileNotFoundError(f"neither {tar_path} nor the extracted images (e.g. {first}) exist")
    return FileImages([folder / m for m in members])
