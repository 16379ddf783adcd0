"""``folder/<name>``: an ImageFolder (``<class>/<image>``) with split sub-folder search and class maps.

The split folder is ``root/<name>/<split>``, or a synonym (``train``/``training``;
``validation``/``val``/``valid``/``eval``/``evaluation``); ``split="all"`` reads ``root/<name>``
itself (an error if all its sub-folders are split folders: they would become the classes). Unlike
timm, a missing split folder is an error rather than a silent fallback to the whole folder (the
original's ``tar/imagenet21k`` evaluated on its training images).

Classes are the sub-folders in sorted order, unless ``class_map`` is a text file of class folder
names (e.g. WordNet ids), one per line, whose line order defines the class index -- so that
labels line up with a pretrained head (e.g. the 21,843 ImageNet-21k classes). Then
``num_classes`` is the length of the map, and a folder missing from the map is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Union

from .dataset import ImageDataset
from .registry import register_dataset
from .sources import FileImages, is_image_file

SPLITS = ("train", "validation", "test", "all")
_SPLIT_FOLDERS = {
    "train": ("train", "training"),
    "validation": ("validation", "val", "valid", "eval", "evaluation"),
    "test": ("test",),
}


def split_folder(base: Path, split: str) -> Path:
    """``base`` for ``"all"``, else its first existing split sub-folder (``FileNotFoundError`` if none)."""
    if split == "all":
        return base
    for candidate in _SPLIT_FOLDERS[split]:
        if (base / candidate).is_dir():
            return base / candidate
    raise FileNotFoundError(
        f"no {split} folder under {base} (looked for {', '.join(_SPLIT_FOLDERS[split])}); "
        "pass split='all' to read the folder itself"
    )


def read_class_map(path: Union[str, Path]) -> Dict[str, int]:
    """``{class folder name: index}`` from a file with one name per line (blank lines ignored)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"class_map file not found: {path}")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"class_map file {path} is empty")
    mapping: Dict[str, int] = {}
    for i, name in enumerate(names):
        if name in mapping:
            raise ValueError(f"class_map file {path} lists {name!r} twice (lines {mapping[name] + 1} and {i + 1})")
        mapping[name] = i
    return mapping


@register_dataset("folder/", SPLITS)
def image_folder(root: Path, split: str, name: str, class_map: Optional[Union[str, Path]] = None) -> ImageDataset:
    base = root / name
    if not base.is_dir():
        raise FileNotFoundError(f"image folder not found: {base}")
    folder = split_folder(base, split)
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if not class_dirs:
        raise ValueError(f"no class folders in {folder}")
    split_names = {name for names in _SPLIT_FOLDERS.values() for name in names}
    if split == "all" and all(d.name in split_names for d in class_dirs):
        raise ValueError(
            f"split='all' would take the split folders {', '.join(d.name for d in class_dirs)} of {folder} as its "
            "classes (every label = the split); pass split='train', 'validation' or 'test'"
        )
    if class_map is None:
        mapping = {d.name: i for i, d in enumerate(class_dirs)}
        classes = [d.name for d in class_dirs]
    else:
        mapping = read_class_map(class_map)
        unknown = [d.name for d in class_dirs if d.name not in mapping]
        if unknown:
            raise ValueError(f"{len(unknown)} class folder(s) in {folder} are not in class_map {class_map}, e.g. {unknown[:5]}")
        classes = list(mapping)
    paths: List[Path] = []
    labels: List[int] = []
    for d in class_dirs:
        files = sorted(p for p in d.rglob("*") if p.is_file() and is_image_file(p))
        if not files:
            raise ValueError(f"class folder {d} contains no images")
        paths += files
        labels += [mapping[d.name]] * len(files)
    return ImageDataset(
        FileImages(paths), labels, name=f"folder/{name}", split=split, num_classes=len(mapping), classes=classes
    )


@register_dataset("torch/imagenet", ("train", "validation"))
def torch_imagenet(root: Path, split: str, class_map: Optional[Union[str, Path]] = None) -> ImageDataset:
    """The original's ``torch/imagenet``: ``root/train/<wnid>/*`` and ``root/val/<wnid>/*`` (torchvision's
    ImageNet layout, the original's ``--data-dir``); classes = the sorted WordNet ids (timm's order)."""
    dataset = image_folder(root.parent, split, root.name, class_map=class_map)
    dataset.name = "torch/imagenet"
    return dataset
