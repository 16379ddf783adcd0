"""One pass of a model over a dataset: embeddings, logits and the uncertainty of every method."""

from __future__ import annotations

from typing import Callable, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..methods import UncertaintyMethod, create_method
from ..model import Uncertainizer
from .outputs import ROWS, DatasetOutputs
from .progress import track


def weight_free_method(model: Uncertainizer, name: str, *, argument: str = "method",
                       model_name: str = "the model") -> UncertaintyMethod:
    """Method ``name`` computed from ``model``'s own backbone pass: the model's own method, or one without weights.

    A learned method other than the model's own would run with random weights: a ``ValueError`` names
    ``argument`` (the flag or parameter the name came from) instead.
    """
    if name == model.method_name:
        return model.method
    method = create_method(name, embed_dim=model.embed_dim, num_classes=model.num_classes)
    if method.state_dict():
        raise ValueError(
            f"{argument} {name} has weights that {model_name} does not carry (its own method is "
            f"{model.method_name!r}): add only methods without weights (class-entropy, max-prob, embed-norm, ...) "
            "to a trained model"
        )
    if method.needs_logits and model.classifier is None:
        raise ValueError(f"{argument} {name} needs class logits, but {model_name} has no classifier")
    return method


def resolve_methods(model: Uncertainizer, methods: Optional[Sequence[str]]) -> List[UncertaintyMethod]:
    """The model's own method (``methods=None``) or the named ones (see :func:`weight_free_method`),
    all evaluated from one backbone pass."""
    if methods is None:
        return [model.method]
    names = list(methods)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"methods must be distinct method names, got {names}")
    return [weight_free_method(model, name) for name in names]


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
    model: Uncertainizer, methods: Sequence[UncertaintyMethod], images: torch.Tensor, dataset: str, indices: torch.Tensor,
    embed: Callable[[torch.Tensor], torch.Tensor],
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """``embedding [B, D]``, ``uncertainties [M, B]`` and the first method's ``logits [B, C]`` (or None)."""
    embedding = embed(images)
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
    embed: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> DatasetOutputs:
    """Run ``model`` over ``loader`` (batches of dataset items) and keep everything the metrics need.

    Batches are dicts with ``image [B, C, H, W]``, ``label [B]``, ``index [B]`` and optionally
    ``soft_labels [B, K]``, ``image_cropped [B, C, H, W]`` + ``crop_fraction [B]``. The cropped
    images go through the same backbone pass for every method. ``keep_logits`` stores the
    logits (``[N, C]``, needed for classification metrics); their argmax is always stored.
    Per-sample ``sharpness [B]`` / ``sharpness_cropped [B]`` of the batches are kept (controls).
    ``progress``: ``"bar"``, ``"log"`` or ``"off"`` over ``total`` images (see ``progress.track``).

    Raises ``ValueError`` naming the dataset and image index if an embedding or uncertainty is
    NaN/inf. ``embed`` runs the backbone (default: ``model.forward_embedding``), e.g. the
    ``embed`` of :func:`uncertain_repr.inference.frozen_inference`.
    """
    embed = model.forward_embedding if embed is None else embed
    store: dict = {}
    for batch in track(loader, total=total or 0, description=dataset, mode=progress):
        indices = torch.as_tensor(batch["index"]).long()
        embedding, unc, logits = _forward(model, methods, batch["image"].to(device), dataset, indices, embed)
        parts = {"indices": indices, "labels": torch.as_tensor(batch["label"]).long(), "embeddings": embedding}
        parts["uncertainties"] = unc
        if "image_cropped" in batch:
            parts["uncertainties_cropped"] = _forward(model, methods, batch["image_cropped"].to(device), dataset, indices, embed)[1]
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
