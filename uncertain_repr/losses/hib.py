"""Hedged instance embeddings (HIB) with vMF samples ("hib")."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import LossInput, register_scalar
from .contrastive import pair_masks, sample_embeddings

__all__ = ["HedgedInstance"]


class HedgedInstance(nn.Module):
    """Binary cross-entropy on MC match probabilities of vMF samples.

    ``x_si ~ vMF(f_i/|f_i|, 1/u_i)`` (``output.embedding`` [B, D], ``output.uncertainty`` [B] >= 0), and

        p_ij = (1/S) sum_s sigmoid(kappa <x_si, x_sj> + b)
        L = -(1/B') sum_i [ mean_{j in P(i)} log p_ij + mean_{j in N(i)} log(1 - p_ij) ]

    over the B' anchors with a positive (the negative term is 0 for an anchor without negatives). Pairs follow
    the two-view / ``supervised`` convention of :mod:`.contrastive` (the loader must deliver interleaved views
    when ``supervised=False``).

    ``kappa`` and ``b`` are fixed buffers by default (never trained in the original); ``learnable=True`` makes
    both ``nn.Parameter``s.

    Differences from the original: ``log p`` and ``log(1 - p)`` are computed as log-mean-exp of
    ``logsigmoid(+-z)`` (the original added 1e-5 to p, so ``log(1 - p)`` could be NaN); the URL-era sign bug
    (``- mean_neg log p``) is not reproduced.
    """

    def __init__(
        self,
        kappa: float = 1.0,
        bias: float = 0.0,
        n_samples: int = 16,
        learnable: bool = False,
        supervised: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        register_scalar(self, "kappa", kappa, learnable)
        register_scalar(self, "bias", bias, learnable)
        self.n_samples = int(n_samples)
        self.supervised = bool(supervised)
        self.generator = generator

    def forward(self, output: LossInput, target: torch.Tensor) -> torch.Tensor:
        x = sample_embeddings(output, self.n_samples, self.generator)
        positives, negatives = pair_masks(target, x.shape[1], self.supervised, x.device)
        logit = self.kappa.to(x.dtype) * x @ x.transpose(1, 2) + self.bias.to(x.dtype)  # [S, B, B]
        log_p = torch.logsumexp(F.logsigmoid(logit), dim=0) - math.log(self.n_samples)
        log_not_p = torch.logsumexp(F.logsigmoid(-logit), dim=0) - math.log(self.n_samples)
        anchors = positives.any(dim=1)
        pos_term = (log_p * positives).sum(1) / positives.sum(1).clamp_min(1)
        neg_term = (log_not_p * negatives).sum(1) / negatives.sum(1).clamp_min(1)
        return -(pos_term + neg_term)[anchors].mean()

    def extra_repr(self) -> str:
        return (f"n_samples={self.n_samples}, learnable={isinstance(self.kappa, nn.Parameter)}, "
                f"supervised={self.supervised}")
