"""Soft-label sets in the "Is one annotation enough?" layout (Schmarje et al., zenodo 7152309).

Layout: ``<root>/<Name>/fold1..fold5/*.png`` and ``<root>/<Name>/annotations.json``, a list of
annotators, each ``{"annotations": [{"image_path": ..., "class_label": ...}, ...]}`` with
``image_path`` relative to ``<root>``; ``null`` labels are skipped.

Votes (url-spec §4.3): images = sorted unique ``image_path``, classes = sorted unique labels,
``soft_labels[i, c]`` = number of votes; label = argmax (first class on ties).
Splits: ``validation`` = fold1, ``test`` = fold2, ``train`` = folds 3-5, ``all``; a path belongs
to fold k if one of its folder names is ``fold<k>``.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from .dataset import ImageDataset
from .registry import register_dataset
from .sources import FileImages

SPLITS = ("train", "validation", "test", "all")
FOLDS = {"validation": (1,), "test": (2,), "train": (3, 4, 5), "all": (1, 2, 3, 4, 5)}

# short name -> folder name, as in the original
FOLDER_NAMES = {
    "cifar": "CIFAR10H",
    "treeversity1": "Treeversity#1",
    "treeversity6": "Treeversity#6",
    "benthic": "Benthic",
    "micebone": "MiceBone",
    "pig": "Pig",
    "plankton": "Plankton",
    "qualitymri": "QualityMRI",
    "synthetic": "Synthetic",
    "turkey": "Turkey",
}


def read_votes(annotations_path: Path) -> Tuple[List[str], List[str], np.ndarray]:
    """``(image_paths [N], class names [K], counts int64 [N, K])`` from an ``annotations.json``."""
    if not annotations_path.is_file():
        raise FileNotFoundError(f"annotations file not found: {annotations_path}")
    with open(annotations_path) as f:
        try:
            annotators = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{annotations_path} is not valid JSON: {err}") from None
    votes: List[Tuple[str, object]] = []
    try:
        for annotator in annotators:
            for entry in annotator["annotations"]:
                if entry["class_label"] is not None:
                    votes.append((entry["image_path"], entry["class_label"]))
    except (TypeError, KeyError) as err:
        raise ValueError(
            f"{annotations_path}: expected a list of annotators with 'annotations' entries "
            f"{{'image_path', 'class_label'}} ({type(err).__name__}: {err})"
        ) from None
    if not votes:
        raise ValueError(f"{annotations_path} holds no votes")
    images = sorted({path for path, _ in votes})
    try:
        classes = sorted({label for _, label in votes})
    except TypeError:
        classes = sorted({label for _, label in votes}, key=str)
    row: Dict[str, int] = {p: i for i, p in enumerate(images)}
    col = {c: k for k, c in enumerate(classes)}
    counts = np.zeros((len(images), len(classes)), dtype=np.int64)
    np.add.at(counts, ([row[p] for p, _ in votes], [col[c] for _, c in votes]), 1)
    return images, [str(c) for c in classes], counts


def _fold_of(image_path: str) -> int:
    for part in Path(image_path).parts[:-1]:
        if part.startswith("fold") and part[4:].isdigit():
            return int(part[4:])
    return 0


@register_dataset("soft/", SPLITS)
def annotated_folds(root: Path, split: str, name: str) -> ImageDataset:
    """``soft/<name>``: a known short name (see ``FOLDER_NAMES``, each also registered by name) or the folder name itself."""
    folder = root / FOLDER_NAMES.get(name, name)
    if not folder.is_dir():
        raise FileNotFoundError(f"soft-label dataset folder not found: {folder}")
    images, classes, counts = read_votes(folder / "annotations.json")
    keep = [i for i, p in enumerate(images) if _fold_of(p) in FOLDS[split]]
    if not keep:
        raise ValueError(f"no annotated images of folds {FOLDS[split]} ({split}) under {folder}")
    paths = [root / images[i] for i in keep]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} annotated image(s) not found, e.g. {missing[0]}")
    counts = counts[keep]
    return ImageDataset(
        FileImages(paths),
        counts.argmax(axis=1),
        name=f"soft/{name}",
        split=split,
        num_classes=len(classes),
        soft_labels=counts,
        classes=classes,
    )


# The known sets by name, so that list_datasets() shows them (soft/treeversity1 is a URL benchmark set).
for _short in FOLDER_NAMES:
    register_dataset(f"soft/{_short}", SPLITS)(partial(annotated_folds, name=_short))
