"""Small real ImageNet-derived sets with ImageNet-1k class indices (a 1000-class head applies).

* ``tar/tiny_imagenet200``: ``tiny_imagenet200/index.csv`` (``path, split, class_index, ...``)
  + ``tiny_imagenet200.tar`` (or the extracted files); splits ``train`` and ``validation``.
* ``soft/imagenet_val1300``: 1,300 ILSVRC-2012 validation images, ``imagenet_val1300/index.csv``
  + ``imagenet_val1300.tar``; split ``validation`` (``test`` is the same 1,300 images).
  ``soft_labels [N, 1000]`` is the ImageNet-ReaL multi-label set as one vote per valid label
  (an all-zero row where ReaL has no valid label); ``metadata["real_soft_entropy"]`` holds the
  entropy (nats) of the ReaL raters' soft label, NaN where unknown.
* ``tar/imagenet_sample1000``: 1,000 sharp full-resolution ImageNet photos, one per class,
  ``imagenet_sample1000/index.csv`` + ``imagenet_sample1000.tar``. Split ``train`` holds the 900
  classes with ``class_index % 10 != 0``, ``validation`` the other 100 (a fixed holdout for model
  selection), ``all`` all 1,000.

``root`` is the folder holding ``tiny_imagenet200/`` (``imagenet_val1300/``) or that folder itself.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

from .dataset import ImageDataset
from .registry import register_dataset
from .sources import indexed_images

NUM_IMAGENET_CLASSES = 1000


def _read_index(root: Path, folder_name: str, columns: tuple) -> tuple:
    folder = root if (root / "index.csv").is_file() and root.name == folder_name else root / folder_name
    index = folder / "index.csv"
    if not index.is_file():
        raise FileNotFoundError(f"{folder_name} index not found: {index}")
    with open(index, newline="") as f:
        rows: List[Dict[str, str]] = list(csv.DictReader(f))
    missing = [c for c in columns if rows and c not in rows[0]]
    if not rows or missing:
        raise ValueError(f"{index}: expected a header with columns {list(columns)} and rows, missing {missing}")
    return folder, rows


def _class_indices(index: Path, rows: List[Dict[str, str]], column: str) -> List[int]:
    """``int(row[column])`` of each row; ``ValueError`` naming the file and row (line) if one is not an
    ImageNet-1k class index (an integer in ``[0, 1000)``)."""
    out = []
    for line, r in enumerate(rows, start=2):
        try:
            value = int(r[column])
        except (TypeError, ValueError):
            raise ValueError(f"{index} row {line}: {column} must be an integer, got {r[column]!r}") from None
        if not 0 <= value < NUM_IMAGENET_CLASSES:
            raise ValueError(f"{index} row {line}: {column} must be a class index in [0, {NUM_IMAGENET_CLASSES}), "
                             f"got {value}")
        out.append(value)
    return out


def _split_rows(index: Path, rows: List[Dict[str, str]], classes: List[int], keep: List[bool], split: str,
                rule: str) -> Tuple[List[Dict[str, str]], List[int]]:
    """The rows where ``keep`` holds and their classes; ``ValueError`` naming the index if none does (an empty split)."""
    chosen = [(r, c) for r, c, k in zip(rows, classes, keep) if k]
    if not chosen:
        raise ValueError(f"{index}: no rows of split {split!r} ({rule})")
    return [r for r, _ in chosen], [c for _, c in chosen]


@register_dataset("tar/tiny_imagenet200", ("train", "validation"))
def tiny_imagenet200(root: Path, split: str) -> ImageDataset:
    folder, rows = _read_index(root, "tiny_imagenet200", ("path", "split", "class_index", "wnid"))
    wanted = "val" if split == "validation" else "train"
    index = folder / "index.csv"
    keep = [r["split"] == wanted for r in rows]
    rows, classes = _split_rows(index, rows, _class_indices(index, rows, "class_index"), keep, split,
                                f"split column = {wanted!r}")
    return ImageDataset(
        indexed_images(folder, "tiny_imagenet200.tar", [r["path"] for r in rows]),
        classes,
        name="tar/tiny_imagenet200",
        split=split,
        num_classes=NUM_IMAGENET_CLASSES,
    )


def _real_soft_entropy(index: Path, i: int, text: str) -> float:
    """``real_soft_entropy`` of data row ``i`` (nan where blank); ``ValueError`` naming the row otherwise."""
    if not text.strip():
        return float("nan")
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):  # nan, inf, negative or unparsable: not an entropy
        raise ValueError(f"{index} row {i + 2}: real_soft_entropy must be a finite number >= 0 or blank, got {text!r}")
    return value


@register_dataset("soft/imagenet_val1300", ("validation", "test"))
def imagenet_val1300(root: Path, split: str) -> ImageDataset:
    folder, rows = _read_index(root, "imagenet_val1300", ("path", "class_index", "real_labels", "real_soft_entropy"))
    index = folder / "index.csv"
    votes = np.zeros((len(rows), NUM_IMAGENET_CLASSES), dtype=np.float32)
    for i, r in enumerate(rows):
        labels = r["real_labels"].split()
        if not all(label.isdecimal() and int(label) < NUM_IMAGENET_CLASSES for label in labels):
            raise ValueError(
                f"{index} row {i + 2}: real_labels must be class indices in [0, {NUM_IMAGENET_CLASSES}), "
                f"got {r['real_labels']!r}"
            )
        votes[i, [int(label) for label in labels]] = 1.0
    entropy = [_real_soft_entropy(index, i, r["real_soft_entropy"]) for i, r in enumerate(rows)]
    return ImageDataset(
        indexed_images(folder, "imagenet_val1300.tar", [r["path"] for r in rows]),
        _class_indices(index, rows, "class_index"),
        name="soft/imagenet_val1300",
        split=split,
        num_classes=NUM_IMAGENET_CLASSES,
        soft_labels=votes,
        metadata={"real_soft_entropy": torch.tensor(entropy, dtype=torch.float64)},
    )


_SAMPLE1000_SPLITS = {"train": lambda c: c % 10 != 0, "validation": lambda c: c % 10 == 0, "all": lambda c: True}


@register_dataset("tar/imagenet_sample1000", tuple(_SAMPLE1000_SPLITS))
def imagenet_sample1000(root: Path, split: str) -> ImageDataset:
    folder, rows = _read_index(root, "imagenet_sample1000", ("path", "class_index", "wnid"))
    index = folder / "index.csv"
    classes = _class_indices(index, rows, "class_index")
    keep = [_SAMPLE1000_SPLITS[split](c) for c in classes]
    rows, classes = _split_rows(index, rows, classes, keep, split,
                                "train: class_index % 10 != 0, validation: class_index % 10 == 0")
    return ImageDataset(
        indexed_images(folder, "imagenet_sample1000.tar", [r["path"] for r in rows]),
        classes,
        name="tar/imagenet_sample1000",
        split=split,
        num_classes=NUM_IMAGENET_CLASSES,
    )
