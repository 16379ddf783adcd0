"""``mc-dropout``: Monte-Carlo dropout (Gal & Ghahramani, 2016) on any backbone.

S stochastic predictions with dropout forced on -- always, in train and eval mode -- before the
classifier (``drop_rate``) and optionally inside the backbone (``backbone_dropout``). The returned
embedding is the deterministic one: dropout never acts on the embedding pass, only on the S
sampling passes.

"Inside the backbone" means, for any backbone, one of two sets of sites (``backbone_dropout_at``):

- ``"activations"`` (default): the output of every activation module (``nn.ReLU``, ``nn.GELU``,
  ``nn.SiLU``, ... and timm's own activation classes; gates such as sigmoids excluded) -- the
  original ``resnet50dropout`` placement, which also works for backbones built without dropout;
- ``"dropout-layers"``: every ``nn.Dropout`` module of the backbone, with its rate replaced by
  ``backbone_dropout`` -- where the architecture was designed to drop. Dropout that timm fuses into
  attention kernels (``attn_drop``) is not a module call and is not affected.

Backbone dropout re-runs the backbone S times on the images, so it needs the image path: the model
refuses cached embeddings for it. Head-only dropout (``backbone_dropout=0``) reuses the one
embedding and works on cached embeddings.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn

from ._hooks import MethodHook, install_hooks
from ._registry import register_method
from .base import UncertaintyMethod
from .predictive import (
    PREDICTIVE_MODES,
    apply_classifier,
    check_mode,
    check_positive_int,
    check_seed,
    log_mean_softmax,
    predictive_uncertainty,
    seeded_generator,
)

BACKBONE_SITES: Tuple[str, ...] = ("activations", "dropout-layers")
TORCH_ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU,
    nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
)  # fmt: skip
TIMM_GATES = frozenset({"Sigmoid", "HardSigmoid", "HardSigmoidMe", "Tanh"})


def is_activation(module: nn.Module) -> bool:
    """Whether ``module`` is a pointwise activation (not a gate) of torch or timm."""
    if isinstance(module, TORCH_ACTIVATIONS):
        return True
    cls = type(module)
    return cls.__module__.startswith("timm.layers.activations") and cls.__name__ not in TIMM_GATES


def is_dropout_layer(module: nn.Module) -> bool:
    """Whether ``module`` is an element-wise ``nn.Dropout`` layer."""
    return isinstance(module, nn.Dropout)


def sample_dropout(x: torch.Tensor, p: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Inverted dropout that is always on: ``x * Bernoulli(1 - p) / (1 - p)``, masks drawn from ``generator``."""
    if p == 0.0:
        return x
    keep = torch.empty_like(x).bernoulli_(1.0 - p, generator=generator)
    return x * keep / (1.0 - p)


class BackboneDropoutSite(MethodHook):
    """Drops a backbone module's output (an ``nn.Dropout``'s input) while its method is sampling."""

    def __call__(self, module: nn.Module, inputs: tuple, output: object) -> Optional[torch.Tensor]:
        method = self.method
        if not method.sampling:
            return None
        # an nn.Dropout site replaces the layer's own dropout (train mode) instead of doubling it
        x = inputs[0] if is_dropout_layer(module) else output
        return sample_dropout(x, method.backbone_dropout, method.sampling_generator)


@register_method("mc-dropout")
class MCDropout(UncertaintyMethod):
    """MC dropout: ``logits = log mean_s softmax(classifier(dropout(e_s)))`` over ``num_samples`` passes.

    Args:
        drop_rate: dropout rate on the embedding before the classifier.
        num_samples: S, the number of stochastic passes.
        mode: ``"entropy"`` (predictive entropy), ``"jsd"`` (mutual information) or
            ``"variance"`` (summed variance of the sampled probabilities); see
            :mod:`uncertain_repr.methods.predictive`.
        backbone_dropout: dropout rate inside the backbone (0: head dropout only).
        backbone_dropout_at: ``"activations"`` or ``"dropout-layers"`` (see the module docstring).
        seed: if given, every call draws its masks from a fresh generator with this seed, so the
            output for a given batch is reproducible; ``None`` uses torch's global RNG.

    The method has no parameters: it uses the backbone's classifier.
    """

    needs_logits = True

    def __init__(
        self,
        embed_dim: int,
        num_classes: int = 0,
        *,
        drop_rate: float = 0.1,
        num_samples: int = 10,
        mode: str = "entropy",
        backbone_dropout: float = 0.0,
        backbone_dropout_at: str = "activations",
        seed: Optional[int] = None,
    ) -> None:
        super().__init__(embed_dim, num_classes)
        for name, rate in (("drop_rate", drop_rate), ("backbone_dropout", backbone_dropout)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"mc-dropout: {name} must be in [0, 1), got {rate!r}")
        if backbone_dropout_at not in BACKBONE_SITES:
            raise ValueError(
                f"mc-dropout: backbone_dropout_at must be one of {BACKBONE_SITES}, got {backbone_dropout_at!r}"
            )
        self.drop_rate = float(drop_rate)
        self.num_samples = check_positive_int(num_samples, "num_samples", "mc-dropout")
        self.mode = check_mode(mode, PREDICTIVE_MODES, "mc-dropout")
        self.backbone_dropout = float(backbone_dropout)
        self.backbone_dropout_at = backbone_dropout_at
        self.seed = check_seed(seed, "mc-dropout")
        self.sampling = False
        self.sampling_generator: Optional[torch.Generator] = None

    @property
    def needs_images(self) -> bool:  # type: ignore[override]
        return self.backbone_dropout > 0

    def attach(self, backbone: nn.Module, classifier: Optional[nn.Module] = None) -> None:
        """Install the backbone dropout sites (none with ``backbone_dropout=0``); stale ones are removed."""
        sites: Dict[str, BackboneDropoutSite] = {}
        if self.backbone_dropout > 0:
            wanted = is_activation if self.backbone_dropout_at == "activations" else is_dropout_layer
            excluded = set() if classifier is None else {id(m) for m in classifier.modules()}
            sites = {
                name: BackboneDropoutSite(self)
                for name, module in backbone.named_modules()
                if wanted(module) and id(module) not in excluded
            }
            if not sites:
                raise ValueError(
                    f"mc-dropout: backbone_dropout={self.backbone_dropout} but the backbone has no "
                    f"{self.backbone_dropout_at.replace('-', ' ')} to drop at; try "
                    f"backbone_dropout_at={'activations' if self.backbone_dropout_at != 'activations' else 'dropout-layers'!r}"
                )
        install_hooks(backbone, BackboneDropoutSite, sites)

    def forward(
        self,
        embedding: torch.Tensor,
        classifier: Optional[nn.Module],
        *,
        stopgrad: bool = False,
        reembed: Optional[Callable[[], torch.Tensor]] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(uncertainty [B], log mean softmax [B, C])`` from S dropout samples of ``embedding [B, D]``."""
        if classifier is None:
            raise ValueError("method 'mc-dropout' needs logits, but the backbone has no classifier")
        generator = seeded_generator(self.seed, embedding.device)
        if self.backbone_dropout > 0:
            if reembed is None:
                raise ValueError(
                    "mc-dropout with backbone_dropout > 0 re-runs the backbone: call the Uncertainizer on "
                    "images (cached embeddings cannot be used)"
                )
            self.sampling, self.sampling_generator = True, generator
            try:
                samples = torch.stack([reembed() for _ in range(self.num_samples)])
            finally:
                self.sampling, self.sampling_generator = False, None
        else:
            samples = embedding.unsqueeze(0).expand(self.num_samples, -1, -1)
        logits = apply_classifier(classifier, sample_dropout(samples, self.drop_rate, generator))
        uncertainty = predictive_uncertainty(logits.detach() if stopgrad else logits, self.mode)
        return uncertainty, log_mean_softmax(logits)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["sampling"], state["sampling_generator"] = False, None  # a generator cannot be copied
        return state
