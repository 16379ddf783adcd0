"""Per-sample outputs of one model on one dataset: the arrays every benchmark metric is computed from."""

from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch.distributed as dist

OPTIONAL = (
    "uncertainties_cropped", "crop_fractions", "soft_labels", "logits", "predictions",
    "sharpness", "sharpness_cropped", "sample_ids",
)
ROWS = ("uncertainties", "uncertainties_cropped")  # [M, N]: the sample axis is the last one


@dataclass
class DatasetOutputs:
    """What a model produced on (one rank's shard of) a dataset, as numpy arrays.

    Attributes:
        name: dataset name, e.g. ``"repr/cub"``.
        methods: names of the ``M`` uncertainty methods, in the row order of ``uncertainties``.
        indices: ``[N]`` int64 positions of the samples in the dataset.
        labels: ``[N]`` int64 class ids.
        embeddings: ``[N, D]`` float32.
        uncertainties: ``[M, N]`` float32, one row per method (higher = more uncertain).
        uncertainties_cropped: ``[M, N]`` float32 uncertainties of the cropped images, or ``None``.
        crop_fractions: ``[N]`` float32 kept side fraction of those crops, or ``None``.
        soft_labels: ``[N, K]`` float32 annotator counts/probabilities, or ``None``.
        logits: ``[N, C]`` float32 classifier logits (kept where classification is scored or outputs are saved).
        predictions: ``[N]`` int64 argmax of the logits, or ``None`` without a classifier.
        sharpness: ``[N]`` float64 sharpness control uncertainty of the images (see
            :func:`~uncertain_repr.benchmark.controls.sharpness_uncertainty`), or ``None``.
        sharpness_cropped: ``[N]`` float64 the same for the cropped images, or ``None``.
        sample_ids: ``[N]`` str file path (or other description) of each sample, or ``None``.
    """

    name: str
    methods: Tuple[str, ...]
    indices: np.ndarray
    labels: np.ndarray
    embeddings: np.ndarray
    uncertainties: np.ndarray
    uncertainties_cropped: Optional[np.ndarray] = None
    crop_fractions: Optional[np.ndarray] = None
    soft_labels: Optional[np.ndarray] = None
    logits: Optional[np.ndarray] = None
    predictions: Optional[np.ndarray] = None
    sharpness: Optional[np.ndarray] = None
    sharpness_cropped: Optional[np.ndarray] = None
    sample_ids: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def arrays(self) -> Dict[str, np.ndarray]:
        """The per-sample arrays that are present (sample axis last for ``[M, N]``, first otherwise)."""
        names = ("indices", "labels", "embeddings", "uncertainties") + OPTIONAL
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def select(self, keep: np.ndarray) -> "DatasetOutputs":
        """The samples where the boolean mask ``keep [N]`` is True (or at the positions ``keep``, in that order)."""
        changes = {}
        for name, value in self.arrays().items():
            changes[name] = value[:, keep] if name in ROWS else value[keep]
        return replace(self, **changes)

    def method_row(self, method: str) -> int:
        """Row of ``method`` in ``uncertainties``; ``ValueError`` if it was not evaluated."""
        if method not in self.methods:
            raise ValueError(f"method {method!r} was not evaluated on {self.name!r}; have {list(self.methods)}")
        return self.methods.index(method)


def concatenate(parts: Sequence[DatasetOutputs]) -> DatasetOutputs:
    """Join shards of one dataset (same name, methods and present arrays) into one, ordered by index.

    An index that occurs several times (e.g. a padded sampler) is kept once.
    """
    first = parts[0]
    joined = {}
    for name in first.arrays():
        axis = 1 if name in ROWS else 0
        joined[name] = np.concatenate([getattr(p, name) for p in parts], axis=axis)
    _, unique_first = np.unique(joined["indices"], return_index=True)  # in index order
    return replace(first, **joined).select(unique_first)


def gather(outputs: DatasetOutputs) -> DatasetOutputs:
    """All ranks' shards joined (identical on every rank); the local outputs, ordered, without torch.distributed."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts: List[Optional[DatasetOutputs]] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, outputs)
        return concatenate([p for p in parts if p is not None and len(p)] or [outputs])
    return concatenate([outputs])


def file_name(dataset: str) -> str:
    """File-system-safe stem for a dataset name: ``"repr/cub"`` -> ``"repr_cub"``."""
    return dataset.replace("/", "_").replace(os.sep, "_")


def save_npz(outputs: DatasetOutputs, path: Union[str, Path]) -> Path:
    """Write ``outputs`` to ``path`` (.npz, no pickle) atomically; returns the path."""
    path = Path(path)
    arrays = dict(outputs.arrays(), name=np.array(outputs.name), methods=np.array(outputs.methods, dtype=str))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return path


def load_npz(path: Union[str, Path]) -> DatasetOutputs:
    """Read a file written by :func:`save_npz` (``allow_pickle=False``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved outputs at {path}")
    with np.load(path, allow_pickle=False) as data:
        missing = {"name", "methods", "indices", "labels", "embeddings", "uncertainties"} - set(data.files)
        if missing:
            raise ValueError(f"{path} is not a benchmark outputs file: missing arrays {sorted(missing)}")
        known = {f.name for f in fields(DatasetOutputs)}
        values = {k: data[k] for k in data.files if k in known and k not in ("name", "methods")}
        return DatasetOutputs(name=str(data["name"]), methods=tuple(str(m) for m in data["methods"]), **values)


@contextmanager
def atomic_path(path: Union[str, Path]) -> Iterator[Path]:
    """Yield an unused temporary path next to ``path``; it is renamed onto ``path`` only if the block succeeds.

    The temporary file is created by the block itself, so it gets the usual permissions (umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(data: dict, path: Union[str, Path]) -> Path:
    """Atomic JSON write (NaN must already be replaced by ``None``)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    return path
