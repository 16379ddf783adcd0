"""Zero-shot retrieval sets of the URL benchmark: CUB-200-2011, Cars-196, Stanford Online Products.

Class splits as in the original (url-spec §4.2, from "Revisiting Deep Metric Learning"):

* ``train`` / ``validation``: the first half of the classes (CUB 0-99, Cars the first 98 by name,
  SOP see below); within each class of ``n`` images, ``train`` takes positions
  ``set(round(linspace(0, n - 1, int(n / 2))))`` and ``validation`` the rest. Labels keep their ids.
* ``test``: the other half of the classes (CUB 100-199, Cars 98-195), all images, labels unchanged.
* ``trainontest`` / ``testontest``: the test classes, each class's images alternately (even / odd
  positions), labels renumbered from 0 in class order.

Folder layouts below ``root``: ``cub/images/<NNN.Name>/*.jpg``, ``cars/images/<Make Model Year>/*.jpg``,
``online_products/images/<super>_final/*.JPG`` + ``online_products/Info_Files/Ebay_{train,test}.txt``.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .dataset import ImageDataset
from .registry import find_folder, register_dataset
from .sources import FileImages, is_image_file

SPLITS = ("train", "validation", "test", "trainontest", "testontest")

# (class label, class name, sorted image paths), in class order
_Class = Tuple[int, str, List[Path]]


def half_split(n: int) -> Tuple[np.ndarray, np.ndarray]:
    """Positions ``(train, validation)`` of a class with ``n`` images (interleaved halves)."""
    train = np.unique(np.round(np.linspace(0, n - 1, int(0.5 * n))).astype(np.int64))
    return train, np.setdiff1d(np.arange(n), train)


def _class_folders(images_dir: Path) -> List[Path]:
    folders = sorted(p for p in images_dir.iterdir() if p.is_dir())
    if not folders:
        raise ValueError(f"no class folders in {images_dir}")
    return folders


def _class_images(folder: Path) -> List[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p) and "._" not in p.name)
    if not files:
        raise ValueError(f"class folder {folder} contains no images")
    return files


def _split_classes(classes: Sequence[_Class], n_pool: int, split: str) -> Tuple[List[Path], List[int], List[str]]:
    """Apply the class/image split rule; returns paths, labels and the class names by label."""
    paths: List[Path] = []
    labels: List[int] = []
    pool, test = classes[:n_pool], classes[n_pool:]
    if split in ("train", "validation"):
        for label, _, files in pool:
            chosen = half_split(len(files))[0 if split == "train" else 1]
            paths += [files[i] for i in chosen]
            labels += [label] * len(chosen)
        return paths, labels, [c[1] for c in pool]
    if split == "test":
        for label, _, files in test:
            paths += files
            labels += [label] * len(files)
        return paths, labels, [c[1] for c in classes]
    start = 0 if split == "trainontest" else 1
    for rank, (_, _, files) in enumerate(test):
        chosen = files[start::2]
        paths += chosen
        labels += [rank] * len(chosen)
    return paths, labels, [c[1] for c in test]


def _dataset(name: str, split: str, paths, labels, classes) -> ImageDataset:
    if not paths:
        raise ValueError(f"{name} split {split!r} is empty")
    return ImageDataset(
        FileImages(paths), labels, name=name, split=split, num_classes=max(labels) + 1, classes=classes
    )


@register_dataset("repr/cub", SPLITS)
def cub(root: Path, split: str) -> ImageDataset:
    """CUB-200-2011: class id = folder prefix - 1; classes 0-99 train/validation, 100-199 test."""
    images = find_folder(root, "cub/images", "images", what="CUB-200-2011 images (cub/images/<NNN.Name>/)")
    classes: List[_Class] = []
    for folder in _class_folders(images):
        match = re.match(r"^(\d+)\.", folder.name)
        if match is None:
            raise ValueError(f"CUB class folder {folder} does not start with its number (e.g. 001.Black_footed_Albatross)")
        classes.append((int(match.group(1)) - 1, folder.name, _class_images(folder)))
    classes.sort(key=lambda c: c[0])
    if [c[0] for c in classes] != list(range(len(classes))):
        raise ValueError(f"CUB class folders in {images} must be numbered 001, 002, ... without gaps")
    return _dataset("repr/cub", split, *_split_classes(classes, len(classes) // 2, split))


@register_dataset("repr/cars", SPLITS)
def cars(root: Path, split: str) -> ImageDataset:
    """Cars-196: classes sorted by folder name; the first half train/validation, the rest test."""
    images = find_folder(root, "cars/images", "images", what="Cars-196 images (cars/images/<class>/)")
    folders = _class_folders(images)
    classes = [(i, f.name, _class_images(f)) for i, f in enumerate(folders)]
    return _dataset("repr/cars", split, *_split_classes(classes, len(classes) // 2, split))


def _read_ebay(path: Path) -> List[Tuple[int, int, str]]:
    """Rows ``(class_id, super_class_id, path)`` of an ``Ebay_*.txt`` file (header skipped)."""
    if not path.is_file():
        raise FileNotFoundError(f"Stanford Online Products index not found: {path}")
    rows = []
    with open(path) as f:
        header = f.readline().split()
        if header[:4] != ["image_id", "class_id", "super_class_id", "path"]:
            raise ValueError(f"{path}: expected the header 'image_id class_id super_class_id path', got {header}")
        for line_no, line in enumerate(f, start=2):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 4 or not (parts[1].isdecimal() and parts[2].isdecimal()):
                raise ValueError(f"{path}:{line_no}: expected 4 columns 'image_id class_id super_class_id path' "
                                 f"with integer ids, got {line.strip()!r}")
            if int(parts[1]) < 1:  # test labels are class_id - 1
                raise ValueError(f"{path}:{line_no}: class_id is 1-based (as in the SOP download), got {parts[1]}")
            rows.append((int(parts[1]), int(parts[2]), parts[3]))
    if not rows:
        raise ValueError(f"{path} lists no images")
    return rows


@register_dataset("repr/sop", SPLITS)
def sop(root: Path, split: str) -> ImageDataset:
    """Stanford Online Products.

    ``train`` / ``validation`` come from ``Ebay_train.txt``: within each super-class (in order of
    first appearance) the first ``int(n / 2)`` of its sorted class ids go to train, the rest to
    validation; labels are renumbered from 0 per split (super-class, then class order) and
    images keep file order. ``test`` = ``Ebay_test.txt`` with label = class_id - 1.
    """
    base = find_folder(root, "online_products", "Stanford_Online_Products", what="Stanford Online Products")
    images = find_folder(base, "images", what="Stanford Online Products images")
    info = base / "Info_Files"
    if not info.is_dir():
        raise FileNotFoundError(f"Stanford Online Products Info_Files folder not found: {info}")
    rows = _read_ebay(info / ("Ebay_train.txt" if split in ("train", "validation") else "Ebay_test.txt"))
    by_class: Dict[int, List[str]] = OrderedDict()
    for class_id, _, rel in rows:
        by_class.setdefault(class_id, []).append(rel)
    paths: List[str] = []
    labels: List[int] = []
    if split in ("train", "validation"):
        supers: Dict[int, List[int]] = OrderedDict()
        for class_id, super_id, _ in rows:
            members = supers.setdefault(super_id, [])
            if class_id not in members:
                members.append(class_id)
        chosen = []
        for members in supers.values():
            members = sorted(members)
            cut = int(0.5 * len(members))
            chosen += members[:cut] if split == "train" else members[cut:]
        for label, class_id in enumerate(chosen):
            paths += by_class[class_id]
            labels += [label] * len(by_class[class_id])
    elif split == "test":
        paths = [rel for _, _, rel in rows]
        labels = [class_id - 1 for class_id, _, _ in rows]
    else:
        start = 0 if split == "trainontest" else 1
        for rank, class_id in enumerate(sorted(by_class)):
            chosen_paths = by_class[class_id][start::2]
            paths += chosen_paths
            labels += [rank] * len(chosen_paths)
    return _dataset("repr/sop", split, [images / p for p in paths], labels, None)
