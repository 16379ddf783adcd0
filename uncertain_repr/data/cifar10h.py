"""``soft/cifar10h``: the 10,000 CIFAR-10 test images with CIFAR-10H human label counts.

Two image layouts, found below ``root`` (or ``root`` itself):

* torchvision: ``cifar-10-batches-py/`` (``torchvision.datasets.CIFAR10(train=False)``);
* indexed images: ``cifar10_test_jpg/index.csv`` (columns ``cifar10_test_idx, label, ...,
  path_in_tar``) with ``cifar10_test_jpg.tar`` or the extracted files.

Counts (``[10000, 10]``, Peterson et al. 2019, test-batch order): ``counts=`` a path, else
``cifar10h-counts.npy`` in ``root``, ``root/cifar10h/`` or ``root/../cifar10h/``.
Label = the official CIFAR-10 label; ``soft_labels`` = the counts row. Split: ``test`` only.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .dataset import ImageDataset
from .registry import register_dataset
from .sources import TorchvisionImages, indexed_images

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
COUNTS_FILE = "cifar10h-counts.npy"


def _find_counts(root: Path, counts: Optional[Union[str, Path]]) -> Path:
    if counts is not None:
        path = Path(counts).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"CIFAR-10H counts file not found: {path}")
        return path
    candidates = [root / COUNTS_FILE, root / "cifar10h" / COUNTS_FILE, root.parent / "cifar10h" / COUNTS_FILE]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"CIFAR-10H counts not found; looked for {', '.join(map(str, candidates))}; pass counts=<path>"
    )


def _indexed(folder: Path):
    index = folder / "index.csv"
    with open(index, newline="") as f:
        rows = list(csv.DictReader(f))
    try:
        order = [int(r["cifar10_test_idx"]) for r in rows]
        labels = [int(r["label"]) for r in rows]
        members = [r["path_in_tar"] for r in rows]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{index}: expected columns cifar10_test_idx, label, path_in_tar ({err})") from None
    if order != list(range(len(rows))):
        raise ValueError(f"{index}: rows must be in CIFAR-10 test order (cifar10_test_idx = 0, 1, 2, ...)")
    bad = next((line for line, label in enumerate(labels, start=2) if not 0 <= label < len(CLASSES)), None)
    if bad is not None:
        raise ValueError(f"{index} row {bad}: label must be a CIFAR-10 class index in [0, {len(CLASSES)}), "
                         f"got {labels[bad - 2]}")
    return indexed_images(folder, "cifar10_test_jpg.tar", members), labels


@register_dataset("soft/cifar10h", ("test",))
def cifar10h(root: Path, split: str, counts: Optional[Union[str, Path]] = None) -> ImageDataset:
    counts_path = _find_counts(root, counts)
    for folder in (root, root / "cifar10_test_jpg"):
        if (folder / "index.csv").is_file():
            images, labels = _indexed(folder)
            break
    else:
        if not (root / "cifar-10-batches-py").is_dir():
            raise FileNotFoundError(
                f"CIFAR-10 test images not found under {root}: expected cifar10_test_jpg/index.csv "
                "(+ cifar10_test_jpg.tar) or torchvision's cifar-10-batches-py/"
            )
        from torchvision.datasets import CIFAR10

        tv = CIFAR10(str(root), train=False, download=False)
        images, labels = TorchvisionImages(tv), list(tv.targets)
    votes = np.load(counts_path, allow_pickle=False)
    if votes.shape != (len(labels), len(CLASSES)):
        raise ValueError(
            f"{counts_path}: expected counts of shape ({len(labels)}, {len(CLASSES)}) for the "
            f"{len(labels)} images, got {votes.shape}"
        )
    return ImageDataset(
        images, labels, name="soft/cifar10h", split=split, num_classes=len(CLASSES), soft_labels=votes, classes=CLASSES
    )
