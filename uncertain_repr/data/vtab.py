"""``vtab/<task>``: the eight VTAB tasks of the PVU paper, read with torchvision (no TensorFlow).

Images come from torchvision's dataset classes (``download=False``; download them with
torchvision first) and, for RESISC45, from the folder ``NWPU-RESISC45/<class>/*.jpg``.

Splits (VTAB-1k style, deterministic given ``seed``):

* ``pool`` = the task's official training data (train + val where the task has both),
  ``test`` = its official test split.
* Tasks without an official test split (Caltech101, SUN397, RESISC45): all images are ordered by
  the keyed hash of ``(seed, "vtab/<task>", "test", index)``; the last ``round(0.2 * N)`` form
  ``test`` and the rest form the pool (in index order).
* The pool is ordered by the keyed hash of ``(seed, "vtab/<task>", "pool", position)``:
  ``train`` = its first ``train_size`` (800) items, ``validation`` = the next ``val_size`` (200),
  ``trainval`` = both. Each split lists its items in index order.

The hash is the counter-based one of :func:`crop_fractions`, so the splits do not depend on a
global RNG, the numpy/torch version or the process. The original used tfds' full train/val
fractions instead (url-spec §4.5); the official test sets are the same images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from ._keyed_random import keyed_permutation
from .dataset import ImageDataset
from .registry import register_dataset
from .sources import FileImages, ImageSource, TorchvisionImages, is_image_file

SPLITS = ("train", "validation", "trainval", "test")
TEST_FRACTION = 0.2


def vtab_split_positions(
    task: str,
    split: str,
    n: int,
    *,
    has_test: bool,
    seed: int = 0,
    train_size: int = 800,
    val_size: int = 200,
) -> np.ndarray:
    """Sorted positions of ``split`` among the ``n`` pool images (``n`` = the whole set if not ``has_test``).

    ``split`` is ``"train"``, ``"validation"``, ``"trainval"``, or ``"test"`` when the task has no
    official test split (the hold-out is carved out first, see the module docstring).
    """
    name = f"vtab/{task}"
    positions = np.arange(n)
    if not has_test:
        order = keyed_permutation(seed, (name, "test"), n)
        n_test = int(round(TEST_FRACTION * n))
        if split == "test":
            return np.sort(order[n - n_test :])
        positions = np.sort(order[: n - n_test])
    elif split == "test":
        raise ValueError(f"{name} has an official test split; it is read whole")
    if train_size < 0 or val_size < 0 or train_size + val_size > len(positions):
        raise ValueError(
            f"{name}: train_size + val_size = {train_size + val_size} must be in [0, {len(positions)}] (the pool size)"
        )
    shuffled = positions[keyed_permutation(seed, (name, "pool"), len(positions))]
    chosen = {
        "train": shuffled[:train_size],
        "validation": shuffled[train_size : train_size + val_size],
        "trainval": shuffled[: train_size + val_size],
    }[split]
    return np.sort(chosen)


def dataset_labels(dataset: Any) -> List[int]:
    """Labels of a torchvision classification dataset without decoding images."""
    for attr in ("targets", "_labels", "labels", "y"):
        labels = getattr(dataset, attr, None)
        if labels is not None:
            return [int(v) for v in labels]
    raise TypeError(f"{type(dataset).__name__} exposes no labels (targets/_labels/labels/y)")


class _Concat:
    """Several image sources with labels, one after the other."""

    def __init__(self, parts: Sequence[Tuple[ImageSource, List[int]]]):
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(s) for s, _ in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, position: int) -> Tuple[ImageSource, int]:
        k = int(np.searchsorted(self.offsets, position, side="right")) - 1
        return self.parts[k][0], position - int(self.offsets[k])

    def load(self, position: int):
        source, local = self._locate(position)
        return source.load(local)

    def describe(self, position: int) -> str:
        source, local = self._locate(position)
        return source.describe(local)

    @property
    def labels(self) -> List[int]:
        return [label for _, labels in self.parts for label in labels]


def _torchvision(cls_name: str, **kwargs) -> Callable[[Path], Tuple[ImageSource, List[int]]]:
    def open_part(root: Path) -> Tuple[ImageSource, List[int]]:
        import torchvision.datasets

        try:
            dataset = getattr(torchvision.datasets, cls_name)(str(root), download=False, **kwargs)
        except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
            raise FileNotFoundError(
                f"{cls_name} not found under {root} ({err}); download it once with "
                f"torchvision.datasets.{cls_name}(root, download=True)"
            ) from None
        return TorchvisionImages(dataset), dataset_labels(dataset)

    return open_part


def resisc45_folder(root: Path) -> Tuple[ImageSource, List[int]]:
    """RESISC45 from ``root/NWPU-RESISC45/<class>/*.jpg`` (or ``root/resisc45/NWPU-RESISC45``); classes sorted."""
    for base in (root / "NWPU-RESISC45", root / "resisc45" / "NWPU-RESISC45", root / "resisc45"):
        if base.is_dir():
            break
    else:
        raise FileNotFoundError(f"RESISC45 folder not found: expected {root / 'NWPU-RESISC45'}/<class>/*.jpg")
    paths: List[Path] = []
    labels: List[int] = []
    folders = sorted(p for p in base.iterdir() if p.is_dir())
    if not folders:
        raise ValueError(f"no class folders in {base}")
    for label, folder in enumerate(folders):
        files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
        if not files:
            raise ValueError(f"class folder {folder} contains no images")
        paths += files
        labels += [label] * len(files)
    return FileImages(paths), labels


@dataclass(frozen=True)
class VtabTask:
    """How to open a task: its pool parts and (if any) official test part, each ``root -> (source, labels)``."""

    num_classes: int
    pool: Tuple[Callable[[Path], Tuple[ImageSource, List[int]]], ...]
    test: Optional[Callable[[Path], Tuple[ImageSource, List[int]]]]


TASKS = {
    "caltech101": VtabTask(101, (_torchvision("Caltech101", target_type="category"),), None),
    "cifar100": VtabTask(100, (_torchvision("CIFAR100", train=True),), _torchvision("CIFAR100", train=False)),
    "dtd": VtabTask(47, (_torchvision("DTD", split="train"), _torchvision("DTD", split="val")), _torchvision("DTD", split="test")),
    "oxford_flowers102": VtabTask(
        102,
        (_torchvision("Flowers102", split="train"), _torchvision("Flowers102", split="val")),
        _torchvision("Flowers102", split="test"),
    ),
    "oxford_iiit_pet": VtabTask(37, (_torchvision("OxfordIIITPet", split="trainval"),), _torchvision("OxfordIIITPet", split="test")),
    "resisc45": VtabTask(45, (resisc45_folder,), None),
    "sun397": VtabTask(397, (_torchvision("SUN397"),), None),
    "svhn": VtabTask(10, (_torchvision("SVHN", split="train"),), _torchvision("SVHN", split="test")),
}


def vtab(root: Path, split: str, *, task: str, seed: int = 0, train_size: int = 800, val_size: int = 200) -> ImageDataset:
    spec = TASKS[task]
    if split == "test" and spec.test is not None:
        source, labels = spec.test(root)
        positions = np.arange(len(labels))
    else:
        pool = _Concat([open_part(root) for open_part in spec.pool])
        source, labels = pool, pool.labels
        positions = vtab_split_positions(
            task, split, len(labels), has_test=spec.test is not None, seed=seed, train_size=train_size, val_size=val_size
        )
    return ImageDataset(
        source,
        np.asarray(labels, dtype=np.int64)[positions],
        name=f"vtab/{task}",
        split=split,
        num_classes=spec.num_classes,
        positions=positions,
    )


def _register(task: str) -> None:
    def reader(root: Path, split: str, **kwargs) -> ImageDataset:
        return vtab(root, split, task=task, **kwargs)

    reader.__doc__ = f"VTAB task {task} (see the module docstring for the splits)."
    register_dataset(f"vtab/{task}", SPLITS)(reader)


for _task in TASKS:
    _register(_task)
