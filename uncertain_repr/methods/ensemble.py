"""``ensemble``: a shallow ensemble of K linear classifier heads on one embedding."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ._registry import register_method
from .base import UncertaintyMethod
from .predictive import PREDICTIVE_MODES, check_mode, check_positive_int, log_mean_softmax, predictive_uncertainty

INITS: Tuple[str, ...] = ("classifier", "random")


@register_method("ensemble")
class ShallowEnsemble(UncertaintyMethod):
    """K heads in one ``nn.Linear(D, K * C)`` (``heads``); row ``k * C + c`` is class ``c`` of head ``k``.

    ``logits = log mean_k softmax(head_k(e))``, the uncertainty is the predictive entropy or the
    mutual information of the K predictions (see :mod:`uncertain_repr.methods.predictive`).
    The backbone's own classifier is not used for predictions and no copy of it is kept: the
    method's only parameters are the K heads.

    Args:
        num_heads: K.
        mode: ``"entropy"``, ``"jsd"`` or ``"variance"``.
        init: ``"classifier"``: every head starts as the backbone's ``nn.Linear`` classifier plus
            Gaussian noise of ``init_noise`` times the std of its weights (the bias is copied);
            ``"random"``: PyTorch's default ``nn.Linear`` init, as in the original.
        init_noise: relative noise for ``init="classifier"``; with 0 all heads start identical.
    """

    def __init__(
        self,
        embed_dim: int,
        num_classes: int = 0,
        *,
        num_heads: int = 10,
        mode: str = "entropy",
        init: str = "classifier",
        init_noise: float = 0.01,
    ) -> None:
        super().__init__(embed_dim, num_classes)
        if num_classes < 1:
            raise ValueError("ensemble needs num_classes >= 1: give the backbone a classifier")
        if init not in INITS:
            raise ValueError(f"ensemble: init must be one of {INITS}, got {init!r}")
        if not init_noise >= 0:
            raise ValueError(f"ensemble: init_noise must be >= 0, got {init_noise!r}")
        self.num_heads = check_positive_int(num_heads, "num_heads", "ensemble")
        self.mode = check_mode(mode, PREDICTIVE_MODES, "ensemble")
        self.init = init
        self.init_noise = float(init_noise)
        self.heads = nn.Linear(embed_dim, self.num_heads * num_classes)

    @torch.no_grad()
    def attach(self, backbone: nn.Module, classifier: Optional[nn.Module] = None) -> None:
        """With ``init="classifier"``: copy the classifier into every head, plus noise."""
        if self.init != "classifier":
            return
        if not isinstance(classifier, nn.Linear) or classifier.weight.shape != (self.num_classes, self.embed_dim):
            raise ValueError(
                f"ensemble: init='classifier' needs an nn.Linear({self.embed_dim}, {self.num_classes}) classifier, "
                f"got {type(classifier).__name__}; use init='random'"
            )
        weight = classifier.weight.repeat(self.num_heads, 1)
        noise_std = self.init_noise * float(classifier.weight.std()) if classifier.weight.numel() > 1 else 0.0
        self.heads.weight.copy_(weight + noise_std * torch.randn_like(weight))
        if classifier.bias is None:
            self.heads.bias.zero_()
        else:
            self.heads.bias.copy_(classifier.bias.repeat(self.num_heads))

    def head_logits(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits of every head, ``[K, B, C]``, for ``embedding [B, D]``."""
        return self.heads(embedding).view(embedding.shape[0], self.num_heads, self.num_classes).transpose(0, 1)

    def forward(
        self, embedding: torch.Tensor, classifier: Optional[nn.Module], *, stopgrad: bool = False
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(uncertainty [B], log mean softmax [B, C])``; ``classifier`` is ignored."""
        logits = self.head_logits(embedding)
        uncertainty = predictive_uncertainty(logits.detach() if stopgrad else logits, self.mode)
        return uncertainty, log_mean_softmax(logits)
