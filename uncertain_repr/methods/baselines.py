"""Uncertainties that need no training: from the classifier's softmax, the embedding norm, a constant."""

from __future__ import annotations

import math
import numbers
from typing import Optional

import torch

from ._registry import register_method
from .base import UncertaintyMethod

MIN_NORM = 1e-12


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy ``-sum_c p_c log p_c`` (nats) of ``softmax(logits [B, C])`` -> ``[B]``; ``0 log 0 = 0``
    (``log p`` clamped at the dtype's minimum, as the original), and NaN for a row with NaN or ``+inf`` logits."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p.clamp_min(torch.finfo(log_p.dtype).min)).sum(dim=-1)


@register_method("class-entropy")
class ClassEntropy(UncertaintyMethod):
    """``u = H(softmax(logits))`` in nats, in ``[0, log C]``."""

    needs_logits = True
    needs_embed_dim = False

    def uncertainty(self, embedding: torch.Tensor, logits: Optional[torch.Tensor]) -> torch.Tensor:
        return softmax_entropy(logits)


@register_method("max-prob")
class MaxProb(UncertaintyMethod):
    """``u = 1 - max_c softmax(logits)_c``, in ``[0, 1 - 1/C]``."""

    needs_logits = True
    needs_embed_dim = False

    def uncertainty(self, embedding: torch.Tensor, logits: Optional[torch.Tensor]) -> torch.Tensor:
        return 1.0 - torch.softmax(logits.float(), dim=-1).amax(dim=-1)


def max_logit_pnorm(logits: torch.Tensor, p: float) -> torch.Tensor:
    """``1 - max_c z_c / ||z||_p`` ``[B]`` for ``logits [B, C]`` with ``z`` the logits minus their mean over
    classes (MaxLogit-pNorm, Cattelan & Silva 2024), in ``[0, 1]``; 1 where every logit is equal."""
    z = logits.float()
    z = z - z.mean(dim=-1, keepdim=True)
    return 1.0 - z.amax(dim=-1) / torch.linalg.vector_norm(z, ord=p, dim=-1).clamp_min(MIN_NORM)


def check_pnorm_order(p: float, what: str) -> float:
    """``p`` as a float; ``ValueError`` naming ``what`` unless it is a finite number >= 1 (a norm's order)."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (math.isfinite(p) and p >= 1):
        raise ValueError(f"{what} must be a finite number >= 1 (the order of a norm), got {p!r}")
    return float(p)


@register_method("max-logit-pnorm")
class MaxLogitPNorm(UncertaintyMethod):
    """``u = 1 - max_c z_c / ||z||_p``, ``z`` the logits minus their mean, in ``[0, 1]`` (:func:`max_logit_pnorm`)."""

    needs_logits = True
    needs_embed_dim = False

    def __init__(self, embed_dim: Optional[int], num_classes: Optional[int] = 0, *, p: float = 4.0) -> None:
        super().__init__(embed_dim, num_classes)
        self.p = check_pnorm_order(p, "max-logit-pnorm: p")

    def uncertainty(self, embedding: torch.Tensor, logits: Optional[torch.Tensor]) -> torch.Tensor:
        return max_logit_pnorm(logits, self.p)


@register_method("embed-norm")
class EmbedNorm(UncertaintyMethod):
    """``u = 1 / max(||e||_2, 1e-12)``: a large embedding norm means certainty."""

    needs_embed_dim = False

    def uncertainty(self, embedding: torch.Tensor, logits: Optional[torch.Tensor]) -> torch.Tensor:
        return 1.0 / embedding.float().norm(dim=-1).clamp_min(MIN_NORM)


@register_method("constant")
class Constant(UncertaintyMethod):
    """``u = value`` for every sample: the uninformative baseline (AUROC 0.5 through ties)."""

    needs_embed_dim = False

    def __init__(self, embed_dim: Optional[int], num_classes: Optional[int] = 0, *, value: float = 1.0) -> None:
        super().__init__(embed_dim, num_classes)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"constant: value must be a finite number, got {value!r}")
        self.value = float(value)

    def uncertainty(self, embedding: torch.Tensor, logits: Optional[torch.Tensor]) -> torch.Tensor:
        return embedding.new_full((embedding.shape[0],), self.value, dtype=torch.float32)
