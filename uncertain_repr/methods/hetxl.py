"""``hetxl``: a heteroscedastic classifier with input-dependent noise in the pre-logit space (HET-XL).

For an embedding ``f [B, D]`` the head predicts a Gaussian noise covariance
``Sigma(f) = V V^T + diag(d)`` with a rank-R factor ``V [B, D, R]`` and a diagonal ``d [B, D] > 0``,
both linear in ``f`` (one projection ``C [D, D*R + D]``, plus a bias ``diag_bias`` on the diagonal
branch), and averages the softmax of the backbone's classifier over ``num_mc`` noisy embeddings::

    eps_s = V z_s + sqrt(d) * xi_s,   z_s ~ N(0, I_R),  xi_s ~ N(0, I_D)   (independent per dimension)
    logits = log mean_s softmax(classifier(f + eps_s) / tau),   tau = softplus(raw_temperature)

The classifier is the backbone's own (its pretrained weights are reused; the original discarded
them and trained a fresh ``fc``). With ``C = 0`` and ``d -> 0`` the head is exactly
``log_softmax(classifier(f) / tau)``.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_method
from .base import UncertaintyMethod
from .baselines import softmax_entropy
from .predictive import apply_classifier, check_mode, check_positive_int, check_seed, log_mean_softmax, seeded_generator

HETXL_MODES: Tuple[str, ...] = ("entropy", "log_det", "log_var_sum")


def log_softplus(x: torch.Tensor) -> torch.Tensor:
    """``log(softplus(x))`` without underflow to ``-inf`` for very negative ``x``."""
    return torch.where(x < -30.0, x, torch.log(F.softplus(x).clamp_min(torch.finfo(x.dtype).tiny)))


@register_method("hetxl")
class HETXL(UncertaintyMethod):
    """HET-XL head on the backbone's classifier; the uncertainty is chosen by ``mode``.

    Args:
        rank_V: R, the rank of the low-rank factor ``V``.
        c_mult: scale of the ``N(0, 1)`` initialisation of the projection ``C``.
        num_mc: S, the number of noise samples per embedding (train and eval).
        temperature: initial softmax temperature ``tau`` (learnable, kept positive by a softplus).
        mode: ``"entropy"``: entropy of the mean softmax (default); ``"log_det"``: the true
            ``log det Sigma(f)``, by the matrix determinant lemma
            ``sum log d + log det(I_R + V^T diag(1/d) V)``; ``"log_var_sum"``: the original's
            "log det", really ``sum_d log Sigma_dd`` (the log of the product of marginal variances,
            an upper bound on the log-determinant).
        seed: if given, every call draws its noise from a fresh generator with this seed.
    """

    needs_logits = True

    def __init__(
        self,
        embed_dim: int,
        num_classes: int = 0,
        *,
        rank_V: int = 1,
        c_mult: float = 0.01,
        num_mc: int = 10,
        temperature: float = 1.0,
        mode: str = "entropy",
        seed: Optional[int] = None,
    ) -> None:
        super().__init__(embed_dim, num_classes)
        if not (temperature > 0 and math.isfinite(temperature)):  # tau = inf: every softmax uniform
            raise ValueError(f"hetxl: temperature must be a finite number > 0, got {temperature!r}")
        if not (c_mult >= 0 and math.isfinite(c_mult)):
            raise ValueError(f"hetxl: c_mult must be a finite number >= 0, got {c_mult!r}")
        self.rank_V = check_positive_int(rank_V, "rank_V", "hetxl")
        self.num_mc = check_positive_int(num_mc, "num_mc", "hetxl")
        self.mode = check_mode(mode, HETXL_MODES, "hetxl")
        self.seed = check_seed(seed, "hetxl")
        d = self.embed_dim
        self.cov_proj = nn.Parameter(c_mult * torch.randn(d, d * self.rank_V + d))
        self.diag_bias = nn.Parameter(torch.zeros(d))
        # softplus^-1(temperature), so that tau starts exactly at `temperature`
        self.raw_temperature = nn.Parameter(torch.tensor(temperature + math.log(-math.expm1(-temperature))))

    @property
    def temperature(self) -> torch.Tensor:
        """``tau = softplus(raw_temperature)``, a positive scalar."""
        return F.softplus(self.raw_temperature)

    def covariance_factors(self, embedding: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(V [B, D, R], pre-softplus diagonal [B, D])`` of the noise covariance of ``embedding [B, D]``."""
        b, d = embedding.shape
        theta = embedding @ self.cov_proj.to(embedding.dtype)
        low_rank = theta[:, : d * self.rank_V].reshape(b, d, self.rank_V)
        return low_rank, theta[:, d * self.rank_V :] + self.diag_bias.to(embedding.dtype)

    def log_det(self, embedding: torch.Tensor) -> torch.Tensor:
        """``log det(V V^T + diag(d))`` ``[B]`` (float64 inside), by the matrix determinant lemma."""
        low_rank, diag_pre = (t.double() for t in self.covariance_factors(embedding.double()))
        log_d = log_softplus(diag_pre)
        scaled = low_rank * torch.exp(-0.5 * log_d).unsqueeze(-1)  # diag(d)^-1/2 V
        core = torch.eye(self.rank_V, dtype=torch.float64, device=embedding.device) + scaled.transpose(1, 2) @ scaled
        chol = torch.linalg.cholesky(core)
        return log_d.sum(-1) + 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)

    def log_var_sum(self, embedding: torch.Tensor) -> torch.Tensor:
        """``sum_d log(sum_r V_dr^2 + d_d)`` ``[B]``: the original "log det" (log of the marginal variances)."""
        low_rank, diag_pre = (t.double() for t in self.covariance_factors(embedding.double()))
        return torch.log(low_rank.square().sum(-1) + F.softplus(diag_pre)).sum(-1)

    def sample_logits(self, embedding: torch.Tensor, classifier: nn.Module) -> torch.Tensor:
        """Tempered logits of ``num_mc`` noisy copies of ``embedding [B, D]`` -> ``[S, B, C]``."""
        generator = seeded_generator(self.seed, embedding.device)
        low_rank, diag_pre = self.covariance_factors(embedding)
        b, d = embedding.shape
        z = torch.randn(self.num_mc, b, self.rank_V, generator=generator, device=embedding.device, dtype=embedding.dtype)
        xi = torch.randn(self.num_mc, b, d, generator=generator, device=embedding.device, dtype=embedding.dtype)
        noise = torch.einsum("bdr,sbr->sbd", low_rank, z) + F.softplus(diag_pre).sqrt() * xi
        return apply_classifier(classifier, embedding + noise) / self.temperature

    def forward(
        self, embedding: torch.Tensor, classifier: Optional[nn.Module], *, stopgrad: bool = False
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(uncertainty [B], log mean softmax [B, C])``."""
        if classifier is None:
            raise ValueError("method 'hetxl' needs logits, but the backbone has no classifier")
        logits = log_mean_softmax(self.sample_logits(embedding, classifier))
        if self.mode == "entropy":
            uncertainty = softmax_entropy(logits.detach() if stopgrad else logits)
        else:
            source = embedding.detach() if stopgrad else embedding
            uncertainty = (self.log_det if self.mode == "log_det" else self.log_var_sum)(source).float()
        return uncertainty, logits
