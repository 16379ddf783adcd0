"""One pass of a model over a dataset: embeddings, logits and the uncertainty of every method."""

from __future__ import annotations

from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..methods import UncertaintyMethod, create_method
from ..model import Uncertainizer
from .outputs import ROWS, DatasetOutputs
from .progress import track


def resolve_methods(model: Uncertainizer, methods: Optional[Sequence[str]]) -> List[UncertaintyMethod]:
    """The model's own method (``methods=None``) or the named ones, evaluated from one backbone pass.

    A name other than the model's own method must be one without parameters (class-entropy,
    max-prob, embed-norm, ...): a learned method would be evaluated with random weights.
    """
    if methods is None:
        return [model.method]
    names = list(methods)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"methods must be distinct method names, got {names}")
    resolved = []
    for name in names:
        if name == model.method_name:
            resolved.append(model.method)
            continue
        method = create_method(name, embed_dim=model.embed_dim, num_classes=model.num_classes)
        if any(True for _ in method.parameters()):
            raise ValueError(
                f"method {name!r} has trainable parameters and this model carries no trained weights for it "
                f"(its own method is {model.method_name!r}); methods= may only add methods without "
                "parameters, such as class-entropy, max-prob or embed-norm"
            )
        if method.needs_logits and model.classifier is None:
            raise ValueError(f"method {name!r} needs logits, but the model has no classifier")
        resolved.append(method)
    return resolved


def _check_finite(values: torch.Tensor, what: str, dataset: str, indices: torch.Tensor) -> None:
    bad = ~torch.isfinite(values.reshape(values.shape[0], -1)).all(dim=1)
    if bool(bad.any()):
        where = indices[bad.cpu()].tolist()
        more = f" (and {len(where) - 5} more in this batch)" if len(where) > 5 else ""
        raise ValueError(
            f"the model produced NaN/inf {what} on dataset {dataset!r} for image index "
            f"{', '.join(map(str, where[:5]))}{more}; NaN embeddings are not replaced by zeros"
        )


def _forward(
    model: Uncertainizer, methods: Sequence[UncertaintyMethod], images: torch.Tensor, dataset: str, indices: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """``embedding [B, D]``, ``uncertainties [M, B]`` and the first method's ``logits [B, C]`` (or None)."""
    embedding = model.forward_embedding(images)
    _check_finite(embedding, "embeddings", dataset, indices)
    uncertainties, logits = [], None
    for method in methods:
        unc, method_logits = method(embedding, model.classifier, stopgrad=True)
        uncertainties.append(unc.float().reshape(embedding.shape[0]))
        logits = method_logits if logits is None else logits
    stacked = torch.stack(uncertainties)
    _check_finite(stacked.T, "uncertainties", dataset, indices)
    return embedding.float(), stacked, logits


@torch.no_grad()
def collect(
    model: Uncertainizer,
    methods: Sequence[UncertaintyMethod],
    loader: Iterable[Mapping[str, torch.Tensor]],
    *,
    dataset: str,
    keep_logits: bool,
    device: torch.device,
    progress: str = "off",
    total: Optional[int] = None,
) -> DatasetOutputs:
    """Run ``model`` over ``loader`` (batches of dataset items) and keep everything the metrics need.

    Batches are dicts with ``image [B, C, H, W]``, ``label [B]``, ``index [B]`` and optionally
    ``soft_labels [B, K]``, ``image_cropped [B, C, H, W]`` + ``crop_fraction [B]``. The cropped
    images go through the same backbone pass for every method. ``keep_logits`` stores the
    logits (``[N, C]``, needed for classification metrics); their argmax is always stored.
    Per-sample ``sharpness [B]`` / ``sharpness_cropped [B]`` of the batches are kept (controls).
    ``progress``: ``"bar"``, ``"log"`` or ``"off"`` over ``total`` images (see ``progress.track``).

    Raises ``ValueError`` naming the dataset and image index if an embedding or uncertainty is
    NaN/inf.
    """
    store: dict = {}
    for batch in track(loader, total=total or 0, description=dataset, mode=progress):
        indices = torch.as_tensor(batch["index"]).long()
        embedding, unc, logits = _forward(model, methods, batch["image"].to(device), dataset, indices)
        parts = {"indices": indices, "labels": torch.as_tensor(batch["label"]).long(), "embeddings": embedding}
        parts["uncertainties"] = unc
        if "image_cropped" in batch:
            parts["uncertainties_cropped"] = _forward(model, methods, batch["image_cropped"].to(device), dataset, indices)[1]
            parts["crop_fractions"] = torch.as_tensor(batch["crop_fraction"]).float()
        if "soft_labels" in batch:
            parts["soft_labels"] = torch.as_tensor(batch["soft_labels"]).float()
        for control in ("sharpness", "sharpness_cropped"):
            if control in batch:
                parts[control] = torch.as_tensor(batch[control]).double()
        if logits is not None:
            parts["predictions"] = logits.argmax(dim=1)
            if keep_logits:
                parts["logits"] = logits.float()
        for name, value in parts.items():
            store.setdefault(name, []).append(value.detach().cpu().numpy())
    names = tuple(m.name for m in methods)
    if not store:
        return DatasetOutputs(
            name=dataset,
            methods=names,
            indices=np.zeros(0, np.int64),
            labels=np.zeros(0, np.int64),
            embeddings=np.zeros((0, model.embed_dim), np.float32),
            uncertainties=np.zeros((len(methods), 0), np.float32),
        )
    arrays = {
        name: np.concatenate(values, axis=1 if name in ROWS else 0)
        for name, values in store.items()
    }
    return DatasetOutputs(name=dataset, methods=names, **arrays)
