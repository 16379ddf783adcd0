"""The dataset type every reader returns, and the base of the dataset wrappers.

Item ``i`` of an :class:`ImageDataset` is a dict::

    {"image": Tensor[C, H, W] (PIL image if transform is None), "label": int, "index": int}
    (+ "soft_labels": FloatTensor[K] for soft-label datasets)

so ``torch.utils.data.default_collate`` batches it into ``image [B, C, H, W]``, ``label [B]``,
``index [B]`` (and ``soft_labels [B, K]``).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .sources import ImageDecodeError, ImageSource

ON_ERROR = ("raise", "skip")


class ImageDataset(Dataset):
    """A labelled image dataset: an image source, labels ``[N]`` and optional soft labels ``[N, K]``.

    Attributes:
        name: registry name, e.g. ``"repr/cub"`` (keys the crop fractions, see ``crops``).
        split: canonical split name (``"train"``, ``"validation"``, ``"test"``, ...).
        num_classes: labels lie in ``[0, num_classes)``.
        labels: ``LongTensor [N]`` (no image decoding).
        soft_labels: ``FloatTensor [N, K]`` vote counts (or probabilities), or ``None``.
        classes: class names by label, where known.
        metadata: further per-sample tensors ``[N, ...]`` (e.g. ``real_soft_entropy``).
        transform: applied to the decoded RGB PIL image; ``None`` returns the PIL image.
        on_error: ``"raise"`` (default) raises on an undecodable image; ``"skip"`` warns and
            returns the next decodable item instead (its own ``"index"`` and label), so the
            returned ``"index"`` always names the sample actually returned. For evaluation keep
            ``"raise"``: a substitute duplicates a sample.
    """

    def __init__(
        self,
        images: ImageSource,
        labels: Sequence[int],
        *,
        name: str,
        split: str,
        num_classes: int,
        soft_labels: Optional[Any] = None,
        classes: Optional[Sequence[str]] = None,
        metadata: Optional[Mapping[str, torch.Tensor]] = None,
        transform: Optional[Callable] = None,
        on_error: str = "raise",
        positions: Optional[np.ndarray] = None,
    ):
        self.images = images
        self.positions = np.arange(len(images)) if positions is None else np.asarray(positions, dtype=np.int64)
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        if self.labels.shape != (len(self.positions),):
            raise ValueError(f"labels must have shape [{len(self.positions)}], got {tuple(self.labels.shape)}")
        self.soft_labels = None if soft_labels is None else torch.as_tensor(np.asarray(soft_labels), dtype=torch.float32)
        if self.soft_labels is not None and (self.soft_labels.ndim != 2 or len(self.soft_labels) != len(self)):
            raise ValueError(f"soft_labels must have shape [{len(self)}, K], got {tuple(self.soft_labels.shape)}")
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= num_classes):
            raise ValueError(f"labels must lie in [0, {num_classes}), got [{int(self.labels.min())}, {int(self.labels.max())}]")
        self.name, self.split, self.num_classes = name, split, int(num_classes)
        self.classes = None if classes is None else list(classes)
        self.metadata: Dict[str, torch.Tensor] = dict(metadata or {})
        self.transform = transform
        self.on_error = on_error

    @property
    def on_error(self) -> str:
        return self._on_error

    @on_error.setter
    def on_error(self, value: str) -> None:
        if value not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {value!r}")
        self._on_error = value

    def __len__(self) -> int:
        return len(self.positions)

    def describe(self, index: int) -> str:
        """Where item ``index`` is read from (a path), for messages."""
        return self.images.describe(int(self.positions[index]))

    def load_raw(self, index: int) -> Dict[str, Any]:
        """Item ``index`` with the decoded RGB PIL image, before ``transform``."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {self.name} ({self.split}) of length {n}")
        index %= n
        for step in range(n):
            j = (index + step) % n
            try:
                image = self.images.load(int(self.positions[j]))
            except ImageDecodeError as err:
                if self.on_error == "raise":
                    raise
                warnings.warn(f"{err}; skipped (on_error='skip'), trying item {(j + 1) % n}", RuntimeWarning)
                continue
            item: Dict[str, Any] = {"image": image, "label": int(self.labels[j]), "index": j}
            if self.soft_labels is not None:
                item["soft_labels"] = self.soft_labels[j]
            return item
        raise ImageDecodeError(f"no image of {self.name} ({self.split}) can be decoded")

    def __getitem__(self, index: int) -> Dict[str, Any]:
        item = self.load_raw(index)
        if self.transform is not None:
            item["image"] = self.transform(item["image"])
        return item

    def subset(self, indices: Sequence[int]) -> "ImageDataset":
        """The items ``indices`` (integer positions ``[M]``; not a boolean mask) as a new dataset
        (re-indexed from 0; same name, split, classes)."""
        raw = np.asarray(indices)
        if raw.size and not np.issubdtype(raw.dtype, np.integer):
            hint = " (a mask: pass np.flatnonzero(mask) or torch.nonzero(mask).flatten())" if raw.dtype == bool else ""
            raise TypeError(f"indices must be integer positions, got a {raw.dtype} array{hint}")
        idx = torch.as_tensor(raw.astype(np.int64))
        if idx.ndim != 1 or (len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(self))):
            raise ValueError(f"indices must be a 1-D sequence of ints in [0, {len(self)})")
        return ImageDataset(
            self.images,
            self.labels[idx].numpy(),
            name=self.name,
            split=self.split,
            num_classes=self.num_classes,
            soft_labels=None if self.soft_labels is None else self.soft_labels[idx],
            classes=self.classes,
            metadata={k: v[idx] for k, v in self.metadata.items()},
            transform=self.transform,
            on_error=self.on_error,
            positions=self.positions[idx.numpy()],
        )

    def __repr__(self) -> str:
        soft = "" if self.soft_labels is None else f", soft_labels={tuple(self.soft_labels.shape)}"
        return f"ImageDataset({self.name!r}, split={self.split!r}, n={len(self)}, num_classes={self.num_classes}{soft})"


def few_shot_indices(labels: torch.Tensor, shots: int) -> torch.Tensor:
    """Per class, ``shots`` evenly spaced items (step ``n // shots``; all if ``n < shots``); ``LongTensor``."""
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"shots must be a positive int, got {shots!r}")
    keep = []
    for c in torch.unique(labels):
        members = torch.nonzero(labels == c).flatten()
        step = max(1, len(members) // shots)
        keep.append(members[::step][:shots])
    return torch.sort(torch.cat(keep)).values if keep else torch.zeros(0, dtype=torch.long)


class DatasetWrapper(Dataset):
    """Base of wrappers: forwards ``name``, ``split``, ``num_classes``, ``labels``, ... to ``dataset``."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, attr: str) -> Any:
        if attr == "dataset" or attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self.dataset, attr)

    def load_raw(self, index: int) -> Dict[str, Any]:
        """The wrapped item with its decoded PIL image (the wrapped dataset's own transform not applied)."""
        if hasattr(self.dataset, "load_raw"):
            return self.dataset.load_raw(index)
        item = dict(self.dataset[index])
        if not hasattr(item.get("image"), "convert"):
            raise TypeError(
                f"{type(self.dataset).__name__} returns transformed images and has no load_raw(); "
                "build it with transform=None and pass the transform to the wrapper"
            )
        return item

    def own_transform(self) -> Optional[Callable]:
        """The wrapped dataset's ``transform`` (``None`` if it has none)."""
        return getattr(self.dataset, "transform", None)
