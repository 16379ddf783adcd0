"""Dataset names -> readers: ``create_dataset(name, root, split)`` and ``list_datasets()``.

A reader is ``fn(root: Path, split: str, **kwargs) -> ImageDataset`` registered under an exact
name (``"repr/cub"``) or a prefix (``"folder/"``: the rest of the name is passed as ``name=``).
Split synonyms are mapped to canonical names before the reader sees them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

from .dataset import ON_ERROR, ImageDataset

SPLIT_SYNONYMS = {
    "val": "validation",
    "valid": "validation",
    "eval": "validation",
    "evaluation": "validation",
    "training": "train",
}


@dataclass(frozen=True)
class _Entry:
    reader: Callable[..., ImageDataset]
    splits: Tuple[str, ...]


_EXACT: Dict[str, _Entry] = {}
_PREFIX: Dict[str, _Entry] = {}


def register_dataset(name: str, splits: Tuple[str, ...]) -> Callable:
    """Decorator registering a reader under ``name`` (a prefix if it ends with ``/``)."""

    def decorate(reader: Callable[..., ImageDataset]) -> Callable[..., ImageDataset]:
        table = _PREFIX if name.endswith("/") else _EXACT
        if name in table:
            raise ValueError(f"dataset {name!r} is already registered")
        table[name] = _Entry(reader, tuple(splits))
        return reader

    return decorate


def list_datasets() -> List[str]:
    """Registered names; prefixes appear as ``"folder/<name>"`` patterns."""
    return sorted(_EXACT) + sorted(f"{p}<name>" for p in _PREFIX)


def canonical_split(split: str) -> str:
    """``"val"`` -> ``"validation"``, ``"training"`` -> ``"train"``; others unchanged (lower-cased)."""
    if not isinstance(split, str):
        raise TypeError(f"split must be a str, got {type(split).__name__}")
    return SPLIT_SYNONYMS.get(split.lower(), split.lower())


def create_dataset(
    name: str,
    root: Union[str, Path],
    split: str,
    transform: Optional[Callable] = None,
    *,
    on_error: str = "raise",
    **kwargs,
) -> ImageDataset:
    """Build dataset ``name`` (see :func:`list_datasets`) from the folder ``root``.

    Args:
        name: e.g. ``"repr/cub"``, ``"soft/cifar10h"``, ``"vtab/dtd"``, ``"folder/imagenet21k"``.
        root: the folder holding the dataset's own folder (e.g. ``root/cub/images``).
        split: ``"train"``, ``"validation"`` (or ``"val"``), ``"test"``, ... as the dataset allows.
        transform: applied to each decoded RGB PIL image; ``None`` keeps PIL images (use this
            with :class:`~uncertain_repr.data.WithCrops`, which applies a transform itself).
        on_error: ``"raise"`` or ``"skip"`` for undecodable images (see :class:`ImageDataset`).
        **kwargs (Any): reader options (e.g. ``counts=`` for CIFAR-10H, ``class_map=`` for folders).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    entry, extra = _EXACT.get(name), {}
    if entry is None:
        prefix, sep, rest = name.partition("/")
        entry = _PREFIX.get(prefix + sep) if sep and rest else None
        extra = {"name": rest}
    if entry is None:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(list_datasets())}")
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    canonical = canonical_split(split)
    if canonical not in entry.splits:
        raise ValueError(f"split for {name} must be one of {list(entry.splits)}, got {split!r}")
    if not isinstance(root, (str, Path)):
        raise TypeError(f"root must be a str or Path, got {type(root).__name__}")
    if isinstance(root, str) and not root.strip():
        raise ValueError("root must name the folder holding the dataset, got an empty string")
    if transform is not None and not callable(transform):
        raise TypeError(f"transform must be a callable (PIL image -> sample) or None, got {type(transform).__name__}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root folder not found: {root}")
    params = inspect.signature(entry.reader).parameters
    options = [p.name for p in list(params.values())[2:] if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD]
    unknown = sorted(set(kwargs) - set(options) | set(kwargs) & set(extra))
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise TypeError(f"create_dataset({name!r}): unknown reader options {unknown}; it takes {options or 'none'}")
    dataset = entry.reader(root, canonical, **extra, **kwargs)
    dataset.transform = transform
    dataset.on_error = on_error
    return dataset


def find_folder(root: Path, *candidates: str, what: str) -> Path:
    """The first existing ``root/candidate``; else ``FileNotFoundError`` naming all paths tried."""
    for candidate in candidates:
        path = root / candidate
        if path.is_dir():
            return path
    tried = ", ".join(str(root / c) for c in candidates)
    raise FileNotFoundError(f"{what} folder not found; looked for {tried}")
