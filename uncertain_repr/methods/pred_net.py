"""``pred-net``: a small MLP that predicts the uncertainty from the embedding (URL / PVU head)."""

from __future__ import annotations

import math
from typing import Iterable, List, Optional, Tuple, Union

import torch
from torch import nn

from ._registry import register_method
from .base import UncertaintyMethod
from .predictive import check_positive_int

EPS = 1e-6


def hidden_layers(in_dim: int, width: int, depth: int, negative_slope: float) -> Tuple[List[nn.Module], int]:
    """``depth`` x [Linear -> LeakyReLU(negative_slope)] from ``in_dim`` features, and their output width."""
    layers: List[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(in_dim, width), nn.LeakyReLU(negative_slope)]
        in_dim = width
    return layers, in_dim


@register_method("pred-net")
class PredNet(UncertaintyMethod):
    """``u = scale * (softplus(MLP(e)) + 1e-6)``, strictly positive.

    MLP = ``depth`` x [Linear -> LeakyReLU(0.01)] then Linear(width, 1); PyTorch's default
    initialisation. Layer ``i`` of the original code's ``unc_module`` is ``net.i`` here.

    Args:
        width: hidden width (original default 512; the URL paper used 1024).
        depth: number of hidden layers (original default 2; URL used 3).
        negative_slope: LeakyReLU slope.

    ``scale`` is a saved buffer (1.0 by default); :meth:`set_mean_uncertainty` sets it so that the
    mean uncertainty over some embeddings equals a target (the original ``--unc_start_value``).
    """

    def __init__(
        self, embed_dim: int, num_classes: int = 0, *, width: int = 512, depth: int = 2, negative_slope: float = 0.01
    ) -> None:
        super().__init__(embed_dim, num_classes)
        width = check_positive_int(width, "width", "pred-net")
        depth = check_positive_int(depth, "depth", "pred-net", minimum=0)
        layers, in_dim = hidden_layers(embed_dim, width, depth, negative_slope)
        self.net = nn.Sequential(*layers, nn.Linear(in_dim, 1), nn.Softplus())
        self.register_buffer("scale", torch.ones(()))

    def uncertainty(self, embedding: torch.Tensor, logits: Optional[torch.Tensor]) -> torch.Tensor:
        return (self.net(embedding).squeeze(-1) + EPS) * self.scale

    @torch.no_grad()
    def set_mean_uncertainty(self, embeddings: Union[torch.Tensor, Iterable[torch.Tensor]], target: float) -> float:
        """Rescale so that the mean uncertainty over ``embeddings`` ([N, D] or batches of them) is ``target``.

        Returns the new scale. ``ValueError`` if ``target <= 0``, there are no embeddings, or they hold
        NaN/inf (the scale is then left as it was).
        """
        if not target > 0:
            raise ValueError(f"target mean uncertainty must be > 0, got {target}")
        batches = [embeddings] if isinstance(embeddings, torch.Tensor) else embeddings
        total, count = 0.0, 0
        for e in batches:
            raw = self.net(e.to(self.scale.device, self.scale.dtype)).squeeze(-1) + EPS
            total += float(raw.double().sum())
            count += raw.numel()
        if count == 0:
            raise ValueError("set_mean_uncertainty needs at least one embedding")
        if not math.isfinite(total):
            raise ValueError("set_mean_uncertainty: embeddings hold NaN or inf values (the mean uncertainty is not finite)")
        self.scale.fill_(target * count / total)
        return float(self.scale)
