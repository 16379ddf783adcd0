"""Training losses for uncertainty-aware representations.

Every loss is called as ``loss_fn(output, target) -> scalar Tensor`` (see :mod:`.base` for the contract).
Build one by its original name with :func:`create`, e.g. ``create("losspred-order", leeway=0.01)``.
"""

from __future__ import annotations

import inspect

from torch import nn

from .base import LossBatch, LossInput
from .contrastive import InfoNCE, MCInfoNCE
from .cross_entropy import CrossEntropy
from .elk import ExpectedLikelihoodKernel
from .hib import HedgedInstance
from .loss_prediction import LossPred, LossPredOrder, RiskPred
from .nivmf import NonIsotropicVMF
from .vmf import log_bessel_iv, log_vmf_normalizer, sample_vmf

__all__ = [
    "CrossEntropy",
    "ExpectedLikelihoodKernel",
    "HedgedInstance",
    "InfoNCE",
    "LossBatch",
    "LossInput",
    "LossPred",
    "LossPredOrder",
    "MCInfoNCE",
    "NonIsotropicVMF",
    "RiskPred",
    "create",
    "list_losses",
    "log_bessel_iv",
    "log_vmf_normalizer",
    "sample_vmf",
]

_REGISTRY: dict[str, type[nn.Module]] = {
    "losspred-order": LossPredOrder,
    "losspred": LossPred,
    "riskpred": RiskPred,
    "nivmf": NonIsotropicVMF,
    "elk": ExpectedLikelihoodKernel,
    "hib": HedgedInstance,
    "mcinfonce": MCInfoNCE,
    "infonce": InfoNCE,
    "cross-entropy": CrossEntropy,
}


def list_losses() -> list[str]:
    """The names accepted by :func:`create` (the original ``--loss`` names), sorted."""
    return sorted(_REGISTRY)


def create(name: str, **hparams: object) -> nn.Module:
    """Build the loss registered as ``name`` with keyword hyperparameters.

    Raises ``ValueError`` for an unknown name (listing the known ones) and ``TypeError`` naming any
    hyperparameter the loss does not accept.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(list_losses())}")
    cls = _REGISTRY[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise TypeError(f"loss {name!r} got unknown hyperparameter(s) {', '.join(unknown)}; "
                        f"accepted: {', '.join(accepted)}")
    return cls(**hparams)
