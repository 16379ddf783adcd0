"""Contrastive losses InfoNCE and MCInfoNCE, and the pair machinery shared with HedgedInstance.

Batch convention: with ``supervised=False`` the batch holds two augmented views per image, interleaved:
positions (2j, 2j+1) are views of image j (B even, target ignored). With ``supervised=True`` samples with
equal class ids (``target`` LongTensor [B]) are positives. A sample is never its own positive or negative.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import LossInput, get_embedding, get_uncertainty, register_scalar
from .vmf import sample_vmf

__all__ = ["InfoNCE", "MCInfoNCE"]


def pair_masks(
    target: torch.Tensor, batch: int, supervised: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean [B, B] masks (positives, negatives), both with a False diagonal."""
    if supervised:
        if not torch.is_tensor(target) or target.is_floating_point() or target.is_complex():
            raise TypeError("supervised contrastive losses need target as an integer class-id tensor [B]")
        if target.shape != (batch,):
            raise ValueError(f"target must have shape [{batch}], got {tuple(target.shape)}")
        groups = target.to(device)
    else:
        if batch % 2:
            raise ValueError(f"unsupervised contrastive losses need an even batch of interleaved view pairs "
                             f"(2j, 2j+1), got batch size {batch}")
        groups = torch.arange(batch, device=device) // 2
    same = groups[:, None] == groups[None, :]
    eye = torch.eye(batch, dtype=torch.bool, device=device)
    positives = same & ~eye
    if not bool(positives.any()):
        raise ValueError("the batch contains no positive pair (no two samples share a class)")
    return positives, ~same


def sample_embeddings(output: LossInput, n_samples: int, generator=None) -> torch.Tensor:
    """``[S, B, D]`` samples of vMF(normalize(embedding), kappa = 1 / uncertainty) of a batch with B >= 2
    (computed in at least float32)."""
    emb = get_embedding(output, min_batch=2)
    unc = get_uncertainty(output, emb.shape[0])
    dtype = torch.promote_types(emb.dtype, torch.float32)
    return sample_vmf(F.normalize(emb.to(dtype), dim=1), 1.0 / unc.to(dtype), n_samples, generator)


def info_nce_log_prob(sim: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """``log sum_{p in P(i)} exp(sim_ip) - log sum_{a != i} exp(sim_ia)`` for anchors with a positive.

    sim: [..., B, B]; positives: [B, B] bool. Returns [..., B'] over the B' anchors that have a positive.
    """
    anchors = positives.any(dim=1)
    self_mask = torch.eye(positives.shape[0], dtype=torch.bool, device=sim.device)[anchors]
    sim = sim[..., anchors, :]
    numerator = torch.logsumexp(sim.masked_fill(~positives[anchors], float("-inf")), dim=-1)
    return numerator - torch.logsumexp(sim.masked_fill(self_mask, float("-inf")), dim=-1)


class _ContrastiveBase(nn.Module):
    def __init__(self, kappa: float, learnable: bool, supervised: bool) -> None:
        super().__init__()
        register_scalar(self, "kappa", kappa, learnable)
        self.supervised = bool(supervised)

    def extra_repr(self) -> str:
        return f"learnable={isinstance(self.kappa, nn.Parameter)}, supervised={self.supervised}"


class InfoNCE(_ContrastiveBase):
    """InfoNCE / NT-Xent on normalised embeddings (``output.embedding`` [B, D]; uncertainty unused).

        sim_ij = kappa <f_i/|f_i|, f_j/|f_j|>
        L = -(1/B') sum_i [ log sum_{p in P(i)} exp(sim_ip) - log sum_{a != i} exp(sim_ia) ]

    over the B' anchors with at least one positive (see the module docstring for P(i)).

    ``kappa`` is a fixed buffer by default (fixed in practice in the original); ``learnable=True`` makes it an
    ``nn.Parameter``. Differences from the original: the anchor's self-similarity enters neither
    log-sum-exp (the original added exp(0) to both) and the denominator includes the positive (standard
    InfoNCE; the original's excluded it).
    """

    def __init__(self, kappa: float = 1.0, learnable: bool = False, supervised: bool = False) -> None:
        super().__init__(kappa, learnable, supervised)

    def forward(self, output: LossInput, target: torch.Tensor) -> torch.Tensor:
        emb = get_embedding(output, min_batch=2)
        positives, _ = pair_masks(target, emb.shape[0], self.supervised, emb.device)
        mu = F.normalize(emb.to(torch.promote_types(emb.dtype, torch.float32)), dim=1)  # at least float32
        return -info_nce_log_prob(self.kappa.to(mu.dtype) * mu @ mu.T, positives).mean()


class MCInfoNCE(_ContrastiveBase):
    """Monte-Carlo InfoNCE over vMF samples of the embeddings (probabilistic contrastive learning).

    ``x_si ~ vMF(f_i/|f_i|, 1/u_i)``, s = 1..S (``output.embedding`` [B, D], ``output.uncertainty`` [B] >= 0;
    u = 0 means kappa = inf, i.e. x = mu), ``sim_sij = kappa <x_si, x_sj>``, ``l_si`` = the InfoNCE log
    probability of :class:`InfoNCE` per sample s, and

        L = -(1/B') sum_i log (1/S) sum_s exp(l_si).

    Parameters and differences from the original as for :class:`InfoNCE`; optional ``generator``.
    """

    def __init__(
        self,
        kappa: float = 1.0,
        n_samples: int = 16,
        learnable: bool = False,
        supervised: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(kappa, learnable, supervised)
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        self.n_samples = int(n_samples)
        self.generator = generator

    def forward(self, output: LossInput, target: torch.Tensor) -> torch.Tensor:
        x = sample_embeddings(output, self.n_samples, self.generator)
        positives, _ = pair_masks(target, x.shape[1], self.supervised, x.device)
        log_prob = info_nce_log_prob(self.kappa.to(x.dtype) * x @ x.transpose(1, 2), positives)  # [S, B']
        return -(torch.logsumexp(log_prob, dim=0) - math.log(self.n_samples)).mean()
