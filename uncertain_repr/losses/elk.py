"""Expected likelihood kernel (ELK) between sample and class vMF distributions ("elk")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import LossInput, check_target, cross_entropy_per_sample, get_class_weight, get_embedding, get_uncertainty
from .vmf import log_vmf_normalizer

__all__ = ["ExpectedLikelihoodKernel"]


class ExpectedLikelihoodKernel(nn.Module):
    """Softmax cross-entropy over classes with log expected-likelihood-kernel similarities as logits.

    Sample i: vMF(mu_i, kappa_i), ``mu_i = f_i / |f_i|`` (``output.embedding`` [B, D]),
    ``kappa_i = 1 / u_i`` (``output.uncertainty`` [B], must be > 0).
    Class c: vMF(mu_c, kappa_c), ``mu_c = W_c / |W_c|``, ``kappa_c = max(|W_c|, 1) * inv_temp`` from the rows of
    ``output.classifier.weight`` [C, D] (bias ignored).

        s_ic = log C_D(kappa_i) + log C_D(kappa_c) - log C_D(|kappa_i mu_i + kappa_c mu_c|)
        |kappa_i mu_i + kappa_c mu_c|^2 = kappa_i^2 + kappa_c^2 + 2 kappa_i kappa_c <mu_i, mu_c>
        L = (1/B) sum_i CE(s_i, y_i)        (soft targets: soft-target CE)

    Only [B, C] matrices are formed (the original built a [B, C, D] tensor); ``log C_D`` is exact for any D
    (the original used polynomial fits / crashed for unsupported D, see :mod:`.vmf`).
    """

    def __init__(self, inv_temp: float = 1.0) -> None:
        super().__init__()
        if inv_temp <= 0:
            raise ValueError(f"inv_temp must be > 0, got {inv_temp}")
        self.inv_temp = float(inv_temp)

    def similarities(self, output: LossInput) -> torch.Tensor:
        """The ELK logits s [B, C]."""
        emb = get_embedding(output)
        batch, dim = emb.shape
        unc = get_uncertainty(output, batch, strictly_positive=True)
        weight = get_class_weight(output)
        if weight.shape[1] != dim:
            raise ValueError(f"output.classifier.weight must have shape [C, {dim}], got {tuple(weight.shape)}")
        dtype = torch.promote_types(emb.dtype, torch.float32)
        kappa_i = 1.0 / unc.to(dtype)
        w_norm = weight.to(dtype).norm(dim=1)
        kappa_c = w_norm.clamp_min(1.0) * self.inv_temp
        cos = F.normalize(emb.to(dtype), dim=1) @ (weight.to(dtype) / w_norm.clamp_min(1e-12)[:, None]).T
        sq = kappa_i[:, None] ** 2 + kappa_c[None, :] ** 2 + 2.0 * kappa_i[:, None] * kappa_c[None, :] * cos
        joint = sq.clamp_min(1e-24).sqrt()
        return (log_vmf_normalizer(kappa_i, dim)[:, None] + log_vmf_normalizer(kappa_c, dim)[None, :]
                - log_vmf_normalizer(joint, dim))

    def forward(self, output: LossInput, target: torch.Tensor) -> torch.Tensor:
        sim = self.similarities(output)
        target = check_target(target, sim.shape[0], sim.shape[1])
        return cross_entropy_per_sample(sim, target).mean()

    def extra_repr(self) -> str:
        return f"inv_temp={self.inv_temp}"
