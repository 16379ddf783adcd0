"""Bounded spectral normalisation ``W -> W * min(1, bound / sigma(W))`` as a torch parametrization (SNGP).

torch's ``parametrizations.spectral_norm`` always divides by ``sigma`` (sigma becomes exactly 1);
SNGP only caps it at ``bound``, so layers that are already below the bound stay unchanged. Like
torch's, ``sigma`` is estimated by power iteration on the weight reshaped to ``[out, -1]`` (for a
convolution this is the norm of its kernel matrix, not of the convolution operator), with one
iteration per training-mode forward and none in eval mode. The vectors ``u``, ``v`` are buffers
created with the parametrization, so the state-dict keys are known before any forward.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

NORMALISED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
INITIAL_ITERATIONS = 15


class SpectralNormBound(nn.Module):
    """Parametrization capping the spectral norm of a weight at ``bound``."""

    def __init__(self, weight: torch.Tensor, bound: float, n_power_iterations: int = 1, eps: float = 1e-12) -> None:
        super().__init__()
        self.bound = float(bound)
        self.n_power_iterations = int(n_power_iterations)
        self.eps = float(eps)
        matrix = weight.detach().flatten(1)
        self.register_buffer("u", F.normalize(matrix.new_empty(matrix.shape[0]).normal_(), dim=0, eps=self.eps))
        self.register_buffer("v", F.normalize(matrix.new_empty(matrix.shape[1]).normal_(), dim=0, eps=self.eps))
        self._power_iteration(matrix, INITIAL_ITERATIONS)

    @torch.no_grad()
    def _power_iteration(self, matrix: torch.Tensor, iterations: int) -> None:
        for _ in range(iterations):
            self.v.copy_(F.normalize(matrix.t() @ self.u, dim=0, eps=self.eps))
            self.u.copy_(F.normalize(matrix @ self.v, dim=0, eps=self.eps))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        matrix = weight.flatten(1)
        if self.training:
            self._power_iteration(matrix.detach(), self.n_power_iterations)
        # clones: u, v change in place on the next training forward, possibly before this backward
        sigma = torch.dot(self.u.clone(), matrix @ self.v.clone())
        return weight * (self.bound / sigma).clamp(max=1.0)


def has_spectral_norm(module: nn.Module) -> bool:
    """Whether ``module.weight`` already carries a :class:`SpectralNormBound`."""
    return parametrize.is_parametrized(module, "weight") and any(
        isinstance(p, SpectralNormBound) for p in module.parametrizations.weight
    )


def apply_spectral_norm(
    backbone: nn.Module, bound: float, *, n_power_iterations: int = 1, exclude: Optional[nn.Module] = None
) -> int:
    """Cap the spectral norm of every ``nn.Linear``/``nn.Conv{1,2,3}d`` of ``backbone`` (except the modules
    of ``exclude``) at ``bound``; idempotent. Returns the number of normalised layers.

    Each normalised layer's weight moves to ``<layer>.parametrizations.weight.original`` and gains
    ``<layer>.parametrizations.weight.0.{u,v}`` in the state dict. A layer normalised before with
    another ``bound`` or ``n_power_iterations`` is a ``ValueError`` (its cap cannot silently stay).
    """
    if not bound > 0:
        raise ValueError(f"spec_norm_bound must be > 0, got {bound!r}")
    excluded = set() if exclude is None else {id(m) for m in exclude.modules()}
    layers = [m for m in backbone.modules() if isinstance(m, NORMALISED_LAYERS) and id(m) not in excluded]
    for layer in filter(has_spectral_norm, layers):
        existing = next(p for p in layer.parametrizations.weight if isinstance(p, SpectralNormBound))
        for name, old, new in (
            ("spec_norm_bound", existing.bound, float(bound)),
            ("spec_norm_iterations", existing.n_power_iterations, int(n_power_iterations)),
        ):
            if old != new:
                raise ValueError(
                    f"{name}={new}, but the backbone's layers already carry a spectral norm with {name}={old} "
                    "(from an earlier wrapper): wrap a fresh copy of the backbone, or pass the same value"
                )
    for layer in layers:
        if not has_spectral_norm(layer):
            parametrize.register_parametrization(
                layer, "weight", SpectralNormBound(layer.weight, bound, n_power_iterations)
            )
    return len(layers)
