"""The single call contract of every loss, and the input checks shared by all of them.

Every loss is an ``nn.Module`` called as ``loss_fn(output, target) -> scalar Tensor``:

- ``output``: any object with the attributes of :class:`LossInput` -- ``embedding`` [B, D] float,
  ``uncertainty`` [B] float (>= 0, higher = more uncertain), ``logits`` [B, C] or ``None``, and ``classifier``
  (the ``nn.Module`` mapping embeddings to logits) or ``None``. A missing ``logits``/``classifier`` attribute
  counts as ``None``. Losses that need logits use ``output.logits`` and otherwise compute
  ``classifier(embedding)``. :class:`LossBatch` is a ready-made dataclass with these fields.
- ``target``: LongTensor [B] of class ids in ``[0, C)``, or float [B, C] soft targets (probabilities or
  annotator counts; each row is normalised to sum to 1).

Bad inputs raise ``ValueError`` (values, shapes) or ``TypeError`` (types, dtypes) naming the argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LossInput", "LossBatch"]


@runtime_checkable
class LossInput(Protocol):
    """What a loss reads from ``output``: embedding [B, D], uncertainty [B], logits [B, C] | None, classifier."""

    embedding: torch.Tensor
    uncertainty: torch.Tensor
    logits: Optional[torch.Tensor]
    classifier: Optional[nn.Module]


@dataclass
class LossBatch:
    """A plain container satisfying :class:`LossInput`."""

    embedding: torch.Tensor
    uncertainty: torch.Tensor
    logits: Optional[torch.Tensor] = None
    classifier: Optional[nn.Module] = None


def _float_tensor(x: object, name: str, ndim: int) -> torch.Tensor:
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(x.shape)}")
    return x


def get_embedding(output: LossInput, min_batch: int = 1) -> torch.Tensor:
    """``output.embedding`` checked to be a float [B, D] tensor with B >= ``min_batch``."""
    emb = _float_tensor(getattr(output, "embedding", None), "output.embedding", 2)
    if emb.shape[0] < min_batch:
        raise ValueError(f"batch size must be >= {min_batch}, got {emb.shape[0]}")
    return emb


def get_uncertainty(output: LossInput, batch: int, strictly_positive: bool = False) -> torch.Tensor:
    """``output.uncertainty`` checked to be a float [B] tensor with finite values >= 0 (or > 0)."""
    unc = _float_tensor(getattr(output, "uncertainty", None), "output.uncertainty", 1)
    if unc.shape[0] != batch:
        raise ValueError(f"output.uncertainty must have shape [{batch}], got {tuple(unc.shape)}")
    if not bool(torch.isfinite(unc).all()):
        raise ValueError("output.uncertainty must be finite")
    if bool((unc < 0).any()):
        raise ValueError("output.uncertainty must be non-negative (higher = more uncertain)")
    if strictly_positive and bool((unc == 0).any()):
        raise ValueError("output.uncertainty must be > 0 for this loss (concentration kappa = 1 / uncertainty)")
    return unc


def get_logits(output: LossInput, batch: int) -> torch.Tensor:
    """``output.logits`` if set, else ``output.classifier(output.embedding)``; a float [B, C] tensor in at least
    float32 (half-precision logits are upcast, so that the per-sample CE is not rounded to ~3 digits)."""
    logits = getattr(output, "logits", None)
    if logits is None:
        classifier = getattr(output, "classifier", None)
        if classifier is None:
            raise ValueError("this loss needs output.logits or output.classifier, both are None")
        logits = classifier(output.embedding)
    logits = _float_tensor(logits, "output.logits", 2)
    if logits.shape[0] != batch:
        raise ValueError(f"output.logits must have {batch} rows, got shape {tuple(logits.shape)}")
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def get_class_weight(output: LossInput) -> torch.Tensor:
    """The [C, D] weight of ``output.classifier`` (a linear head; its bias is ignored)."""
    classifier = getattr(output, "classifier", None)
    weight = getattr(classifier, "weight", None)
    if classifier is None or not torch.is_tensor(weight) or weight.dim() != 2:
        raise ValueError("this loss needs output.classifier with a 2-D .weight [C, D] (e.g. nn.Linear)")
    return weight


def check_target(target: object, batch: int, num_classes: int) -> torch.Tensor:
    """Validate ``target`` (LongTensor [B] in [0, C) or float [B, C] with non-negative rows of positive sum).

    Returns the target with soft rows normalised to probabilities.
    """
    if not torch.is_tensor(target):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.is_floating_point():
        if target.shape != (batch, num_classes):
            raise ValueError(f"soft target must have shape [{batch}, {num_classes}], got {tuple(target.shape)}")
        if not bool(torch.isfinite(target).all()) or bool((target < 0).any()):
            raise ValueError("soft target must be finite and non-negative")
        total = target.sum(dim=1, keepdim=True)
        if bool((total <= 0).any()):
            raise ValueError("every soft target row must have a positive sum (a row of zero counts has no label)")
        return target / total
    if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"target must be an integer class-id tensor or a float soft-target matrix, got {target.dtype}")
    if target.shape != (batch,):
        raise ValueError(f"target must have shape [{batch}], got {tuple(target.shape)}")
    if batch and bool(((target < 0) | (target >= num_classes)).any()):
        raise ValueError(f"target class ids must be in [0, {num_classes}), got range "
                         f"[{int(target.min())}, {int(target.max())}]")
    return target.long()


def cross_entropy_per_sample(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Per-sample CE [B] of logits [B, C] against a checked target (ids [B] or probabilities [B, C]).

    ``l_i = -sum_c q_ic log softmax(z_i)_c`` with ``q_i = (1 - eps) p_i + eps / C`` (``p_i`` one-hot for ids).
    """
    if target.dim() == 1:
        return F.cross_entropy(logits, target, reduction="none", label_smoothing=smoothing)
    probs = target.to(logits.dtype)
    if smoothing:
        probs = (1.0 - smoothing) * probs + smoothing / logits.shape[1]
    return -(probs * F.log_softmax(logits, dim=1)).sum(dim=1)


def register_scalar(module: nn.Module, name: str, value: float | torch.Tensor, learnable: bool) -> None:
    """Register a loss-owned quantity as an ``nn.Parameter`` (``learnable``) or as a fixed buffer."""
    tensor = torch.as_tensor(value, dtype=torch.float32).clone()
    if learnable:
        module.register_parameter(name, nn.Parameter(tensor))
    else:
        module.register_buffer(name, tensor)
