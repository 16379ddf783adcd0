"""``pred-net-logits``: a pred-net that also sees the classifier's softmax, as a residual on a free baseline.

Our extension beyond the PVU paper (whose pred-net sees only the embedding): the classifier's own
softmax already ranks its errors well on in-domain photos, so the head starts from it and learns
only a correction from the embedding and the logit statistics.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn

from ._registry import register_method
from .base import UncertaintyMethod
from .baselines import check_pnorm_order, max_logit_pnorm, softmax_entropy
from .pred_net import hidden_layers
from .prototype import classify, prototype_distance

EPS = 1e-6
NUM_STATS = 3


def logit_stats(logits: torch.Tensor) -> torch.Tensor:
    """``[B, 3]`` from ``logits [B, C]`` (C >= 2), each in [0, 1], higher = less confident:
    softmax entropy / log C, 1 - top-1 probability, 1 - (top-1 - top-2 probability)."""
    logits = logits.float()
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must be [B, C] with C >= 2, got shape {tuple(logits.shape)}")
    top2 = torch.softmax(logits, dim=-1).topk(2, dim=-1).values
    entropy = softmax_entropy(logits) / math.log(logits.shape[1])
    return torch.stack([entropy, 1.0 - top2[:, 0], 1.0 - (top2[:, 0] - top2[:, 1])], dim=-1)


BASES: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "max-prob": lambda stats: stats[:, 1],
    "class-entropy": lambda stats: stats[:, 0],
    "none": lambda stats: torch.zeros_like(stats[:, 0]),
}
"""The free baseline the residual is added to, read from :func:`logit_stats` ([B, 3] -> [B])."""

INPUTS: Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "embedding": lambda embedding, stats: torch.cat([embedding.to(stats.dtype), stats], dim=-1),
    "stats": lambda embedding, stats: torch.cat(
        [stats, torch.log1p(embedding.to(stats.dtype).norm(dim=-1, keepdim=True))], dim=-1
    ),
}
"""What the MLP sees, from ``embedding [B, D]`` and ``stats [B, 3]``: ``embedding``: ``[e, stats]`` [B, D + 3];
``stats``: ``[stats, log(1 + ||e||)]`` [B, 4], no class identity (a correction that cannot memorise classes)."""
INPUT_DIMS: Dict[str, Callable[[int], int]] = {"embedding": lambda d: d + NUM_STATS, "stats": lambda d: NUM_STATS + 1}


def _term_weight(value: float, name: str) -> float:
    """``value`` as a float; ``ValueError`` naming ``name`` unless it is a finite number >= 0 (an added term's weight)."""
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


@register_method("pred-net-logits")
class PredNetLogits(UncertaintyMethod):
    """``u = scale * (softplus(gain * base(z) + correction * MLP([e, stats(z)])) + 1e-6)``, strictly positive.

    ``stats(z)`` [B, 3] is :func:`logit_stats` of the classifier's logits (``inputs="stats"``: the MLP
    sees ``[stats(z), log(1 + ||e||)]`` instead of ``[e, stats(z)]``, see :data:`INPUTS`), ``base`` one of
    :data:`BASES` (default ``max-prob``: 1 - top-1 probability). The MLP (``depth`` x [Linear ->
    LeakyReLU(0.01)], then Linear(width, 1)) has a zero last layer, so an untrained head ranks
    exactly as its base; training learns a correction. ``gain`` (a parameter, initially
    ``base_gain``) sets the base's scale against the ranking loss's margin. ``correction`` (a
    fixed argument, saved in the config; 1 while training) shrinks the learned correction towards
    the base: ``correction=0`` ranks exactly as the base, whatever the MLP's weights.
    ``prototype`` (a fixed argument, default 0) adds ``prototype * scale * (1 - cos(e, w_k))``, the
    :mod:`prototype-cosine <uncertain_repr.methods.prototype>` distance to the predicted class's
    classifier weight row; it reads the classifier, so with ``prototype > 0`` call
    ``method(embedding, classifier)`` (``uncertainty(embedding, logits)`` refuses). ``pnorm`` (a fixed argument,
    default 0) adds ``pnorm * scale * (1 - max_c z_c / ||z||_p)``, the :func:`max-logit-pnorm
    <uncertain_repr.methods.baselines.max_logit_pnorm>` score of order ``p = pnorm_p`` (logits minus their mean).

    Args:
        width: hidden width. depth: number of hidden layers. base: see :data:`BASES`. inputs: see :data:`INPUTS`.
        base_gain: initial ``gain``. correction: weight of the MLP's output, in [0, 1].
        negative_slope: LeakyReLU slope. prototype: weight (>= 0) of the prototype-cosine term.
        pnorm: weight (>= 0) of the max-logit-pnorm term. pnorm_p: its norm's order (>= 1).
    """

    needs_logits = True

    def __init__(
        self,
        embed_dim: int,
        num_classes: int = 0,
        *,
        width: int = 512,
        depth: int = 2,
        base: str = "max-prob",
        base_gain: float = 4.0,
        correction: float = 1.0,
        negative_slope: float = 0.01,
        inputs: str = "embedding",
        prototype: float = 0.0,
        pnorm: float = 0.0,
        pnorm_p: float = 4.0,
    ) -> None:
        super().__init__(embed_dim, num_classes)
        if width < 1 or depth < 0:
            raise ValueError(f"pred-net-logits needs width >= 1 and depth >= 0, got width={width}, depth={depth}")
        if base not in BASES:
            raise ValueError(f"base must be one of {sorted(BASES)}, got {base!r}")
        if inputs not in INPUTS:
            raise ValueError(f"inputs must be one of {sorted(INPUTS)}, got {inputs!r}")
        if not 0.0 <= correction <= 1.0:
            raise ValueError(f"correction must be in [0, 1], got {correction}")
        self.base = base
        self.correction = float(correction)
        self.inputs = inputs
        self.prototype = _term_weight(prototype, "prototype")
        self.pnorm = _term_weight(pnorm, "pnorm")
        self.pnorm_p = check_pnorm_order(pnorm_p, "pnorm_p")
        layers, in_dim = hidden_layers(INPUT_DIMS[inputs](embed_dim), width, depth, negative_slope)
        last = nn.Linear(in_dim, 1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)
        self.gain = nn.Parameter(torch.tensor(float(base_gain)))
        self.register_buffer("scale", torch.ones(()))

    def uncertainty(self, embedding: torch.Tensor, logits: Optional[torch.Tensor]) -> torch.Tensor:
        if self.prototype:
            raise ValueError(
                f"pred-net-logits with prototype={self.prototype} needs the classifier's weights: "
                "call method(embedding, classifier)"
            )
        return self._head(embedding, logits)

    def _head(self, embedding: torch.Tensor, logits: Optional[torch.Tensor]) -> torch.Tensor:
        if logits is None:
            raise ValueError("pred-net-logits needs the classifier's logits")
        stats = logit_stats(logits)
        features = INPUTS[self.inputs](embedding, stats).to(self.gain.dtype)  # stats are float32; the MLP may not be
        raw = self.gain * BASES[self.base](stats) + self.correction * self.net(features).squeeze(-1)
        head = (nn.functional.softplus(raw) + EPS) * self.scale
        if not self.pnorm:
            return head
        return head + self.pnorm * self.scale * max_logit_pnorm(logits, self.pnorm_p)

    def forward(
        self, embedding: torch.Tensor, classifier: Optional[nn.Module], *, stopgrad: bool = False
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        if not self.prototype:
            return super().forward(embedding, classifier, stopgrad=stopgrad)
        linear, source, source_logits, logits = classify(embedding, classifier, stopgrad=stopgrad)
        return self.uncertainty_with_linear(source, source_logits, linear, detach=stopgrad), logits

    def uncertainty_with_linear(
        self, embedding: torch.Tensor, logits: torch.Tensor, linear: Optional[nn.Linear], *, detach: bool = False
    ) -> torch.Tensor:
        """Uncertainty ``[B]`` from ``embedding [B, D]``, ``logits [B, C]`` and the classifier's ``linear`` (read only
        with ``prototype > 0``; ``detach``: without a gradient into its weight), e.g. on stored embeddings and logits."""
        head = self._head(embedding, logits)
        if not self.prototype:
            return head
        return head + self.prototype * self.scale * prototype_distance(embedding, logits, linear, detach=detach)

    def extra_repr(self) -> str:
        return (f"base={self.base!r}, inputs={self.inputs!r}, correction={self.correction}, prototype={self.prototype}, "
                f"pnorm={self.pnorm}, pnorm_p={self.pnorm_p}")
