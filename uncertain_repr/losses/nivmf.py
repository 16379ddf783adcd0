"""Non-isotropic vMF class distributions with an MC estimate of the expected likelihood ("nivmf")."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import LossInput, check_target, cross_entropy_per_sample, get_class_weight, get_embedding, get_uncertainty
from .vmf import log_vmf_normalizer, sample_vmf

__all__ = ["NonIsotropicVMF"]


class NonIsotropicVMF(nn.Module):
    """Cross-entropy over classes of the MC-estimated log likelihood of vMF samples under non-isotropic classes.

    Samples ``x_s ~ vMF(f_i / |f_i|, 1 / u_i)``, s = 1..S (``output.embedding`` [B, D], ``output.uncertainty``
    [B] > 0). Class c has direction ``mu_c = W_c / |W_c|`` (``output.classifier.weight`` [C, D]) and per-dimension
    concentrations ``k_c = max(kappa_c, min_kappa)`` [D] (this loss's ``kappa`` [C, D]). With
    ``m_c = mu_c * k_c`` and ``n_c = |m_c|``:

        L_sic  = log C_D(n_c) + <x_s, m_c> + sum_d log k_cd - 2 log n_c
        s_ic   = log (1/S) sum_s exp(L_sic)
        L      = (1/B) sum_i CE(s_i, y_i)

    ``kappa`` is a fixed buffer by default (the original's concentrations never reached the optimizer);
    ``learnable=True`` makes it an ``nn.Parameter`` (add ``loss.parameters()`` to the optimizer).

    Differences from the original: ``log C_D`` uses the real dimension D (the original used its default 10);
    no unused weight-normalised proxy layer; no hard-coded CUDA device; optional ``generator``.
    """

    def __init__(
        self,
        num_classes: int,
        embed_dim: int,
        inv_temp: float = 1.0,
        n_samples: int = 16,
        min_kappa: float = 0.1,
        learnable: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1 or embed_dim < 2:
            raise ValueError(f"need num_classes >= 1 and embed_dim >= 2, got {num_classes}, {embed_dim}")
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        if inv_temp <= 0 or min_kappa <= 0:
            raise ValueError(f"inv_temp and min_kappa must be > 0, got {inv_temp}, {min_kappa}")
        kappa = torch.full((num_classes, embed_dim), float(inv_temp))
        if learnable:
            self.kappa = nn.Parameter(kappa)
        else:
            self.register_buffer("kappa", kappa)
        self.n_samples = int(n_samples)
        self.min_kappa = float(min_kappa)
        self.generator = generator

    def similarities(self, output: LossInput) -> torch.Tensor:
        """The MC log expected likelihoods s [B, C]."""
        emb = get_embedding(output)
        batch, dim = emb.shape
        unc = get_uncertainty(output, batch, strictly_positive=True)
        weight = get_class_weight(output)
        if weight.shape != self.kappa.shape:
            raise ValueError(f"output.classifier.weight must have shape {tuple(self.kappa.shape)} "
                             f"(num_classes, embed_dim), got {tuple(weight.shape)}")
        dtype = torch.promote_types(emb.dtype, torch.float32)
        x = sample_vmf(F.normalize(emb.to(dtype), dim=1), 1.0 / unc.to(dtype), self.n_samples, self.generator)
        k = self.kappa.to(dtype).clamp_min(self.min_kappa)
        m = F.normalize(weight.to(dtype), dim=1) * k
        n = m.norm(dim=1)
        per_sample = x @ m.T + (log_vmf_normalizer(n, dim) + k.log().sum(dim=1) - 2.0 * n.log())  # [S, B, C]
        return torch.logsumexp(per_sample, dim=0) - math.log(self.n_samples)

    def forward(self, output: LossInput, target: torch.Tensor) -> torch.Tensor:
        sim = self.similarities(output)
        target = check_target(target, sim.shape[0], sim.shape[1])
        return cross_entropy_per_sample(sim, target).mean()

    def extra_repr(self) -> str:
        learnable = isinstance(self.kappa, nn.Parameter)
        return f"kappa={tuple(self.kappa.shape)}, n_samples={self.n_samples}, learnable={learnable}"
