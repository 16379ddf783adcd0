"""``deep-pred-net``: a pred-net fed by intermediate backbone layers instead of the final embedding.

Forward hooks on the chosen layers pool each output to ``[B, C_l]`` during the backbone pass
(spatial mean for ``[B, C, H, W]`` -- ``[B, H, W, C]`` when the backbone's ``output_fmt`` is
``"NHWC"`` -- token mean for ``[B, N, C]``, nothing for ``[B, C]``). Per layer:
``(detach if stopgrad) -> Linear(C_l, width) -> LeakyReLU``; the concatenation goes through a
:class:`~uncertain_repr.methods.pred_net.PredNet` with ``depth - 1`` hidden layers.

Candidate layers are the stage/block outputs that timm lists in ``backbone.feature_info`` (the
original used ReLU/LayerNorm modules of ResNets/ViTs only). ``attach`` probes the backbone once with
a zero image of ``pretrained_cfg["input_size"]`` to size the per-layer ``Linear`` s, so the method's
parameters exist once the ``Uncertainizer`` is built. The method reads the backbone on the images:
cached embeddings cannot be used with it.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ._hooks import MethodHook, install_hooks, remove_hooks
from ._registry import register_method
from .base import UncertaintyMethod
from .pred_net import PredNet

NUM_DEFAULT_LAYERS = 4


def default_layer_indices(num_candidates: int) -> List[int]:
    """Up to 4 evenly spaced indices from 10% of the way to the last candidate (the original's choice)."""
    points = torch.linspace(0.1 * num_candidates, num_candidates - 1, NUM_DEFAULT_LAYERS, dtype=torch.float64)
    return sorted({int(p) for p in points})


def candidate_layers(backbone: nn.Module) -> List[str]:
    """Module names of the backbone's stage/block outputs from timm's ``feature_info`` (``[]`` without one)."""
    return [info["module"] for info in getattr(backbone, "feature_info", None) or []]


class LayerCapture(MethodHook):
    """Pools a hooked layer's output and hands it to its method under the layer's name."""

    def __init__(self, method: "DeepPredNet", name: str) -> None:
        super().__init__(method)
        self.name = name

    def __call__(self, module: nn.Module, inputs: tuple, output: object) -> None:
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"deep-pred-net: layer {self.name!r} returns {type(output).__name__}, not a tensor")
        self.method.captured[self.name] = self.method.pool(self.name, output)


@register_method("deep-pred-net")
class DeepPredNet(UncertaintyMethod):
    """Pred-net on pooled intermediate layers of the backbone.

    Args:
        hook_layers: module names, or indices into :func:`candidate_layers` (negative allowed);
            default: 4 evenly spaced candidates (:func:`default_layer_indices`).
        width: width of the per-layer projections and of the hidden layers.
        depth: number of hidden layers counting the per-layer projections (>= 1).
        negative_slope: LeakyReLU slope.
    """

    needs_images = True

    def __init__(
        self,
        embed_dim: int,
        num_classes: int = 0,
        *,
        hook_layers: Optional[Sequence[Union[int, str]]] = None,
        width: int = 512,
        depth: int = 2,
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__(embed_dim, num_classes)
        if width < 1 or depth < 1:
            raise ValueError(f"deep-pred-net needs width >= 1 and depth >= 1, got width={width}, depth={depth}")
        if hook_layers is not None and (isinstance(hook_layers, (str, int)) or len(hook_layers) == 0):
            raise ValueError(f"deep-pred-net: hook_layers must be a non-empty list of names or indices, got {hook_layers!r}")
        self.hook_layers = None if hook_layers is None else list(hook_layers)
        self.width = int(width)
        self.depth = int(depth)
        self.negative_slope = float(negative_slope)
        self.layer_names: List[str] = []
        self.pool_dims: Dict[str, Tuple[int, ...]] = {}
        self.captured: Dict[str, torch.Tensor] = {}
        self.layer_nets = nn.ModuleList()
        self.head: Optional[PredNet] = None

    # ---------------------------------------------------------------- wiring
    def _resolve_layers(self, backbone: nn.Module) -> List[str]:
        candidates = candidate_layers(backbone)
        requested = self.hook_layers if self.hook_layers is not None else default_layer_indices(len(candidates))
        names = []
        for layer in requested:
            if isinstance(layer, str):
                try:
                    backbone.get_submodule(layer)
                except AttributeError:
                    raise ValueError(f"deep-pred-net: the backbone has no module named {layer!r}") from None
                names.append(layer)
            elif not candidates:
                raise ValueError(
                    "deep-pred-net: this backbone has no timm feature_info to choose layers from; "
                    "pass hook_layers=[module names]"
                )
            elif not -len(candidates) <= layer < len(candidates):
                raise ValueError(
                    f"deep-pred-net: hook layer index {layer} out of range for {len(candidates)} candidates {candidates}"
                )
            else:
                names.append(candidates[layer])
        if len(set(names)) != len(names):
            raise ValueError(f"deep-pred-net: hook_layers name a layer twice: {names}")
        return names

    def _probe_shapes(self, backbone: nn.Module, names: List[str]) -> Dict[str, torch.Size]:
        input_size = (getattr(backbone, "pretrained_cfg", None) or {}).get("input_size")
        if input_size is None:
            raise ValueError("deep-pred-net probes the backbone once; it needs backbone.pretrained_cfg['input_size']")
        shapes: Dict[str, torch.Size] = {}
        handles = [
            backbone.get_submodule(name).register_forward_hook(
                lambda m, i, o, name=name: shapes.__setitem__(name, o.shape if isinstance(o, torch.Tensor) else None)
            )
            for name in names
        ]
        param = next(backbone.parameters(), None)
        probe = torch.zeros(1, *input_size, device=None if param is None else param.device)
        was_training = backbone.training
        backbone.eval()
        try:
            with torch.no_grad():
                (backbone.forward_features if callable(getattr(backbone, "forward_features", None)) else backbone)(probe)
        finally:
            backbone.train(was_training)
            for handle in handles:
                handle.remove()
        missing = [name for name in names if shapes.get(name) is None]
        if missing:
            raise ValueError(f"deep-pred-net: layers {missing} produced no tensor in a forward pass of the backbone")
        return shapes

    def attach(self, backbone: nn.Module, classifier: Optional[nn.Module] = None) -> None:
        """Choose the layers, size the per-layer networks by one probe, and (re)install the hooks."""
        names = self._resolve_layers(backbone)
        remove_hooks(backbone, LayerCapture)  # the probe must not feed an older deep-pred-net
        shapes = self._probe_shapes(backbone, names)
        channels_last = getattr(backbone, "output_fmt", "NCHW") == "NHWC"
        pool_dims, in_dims = {}, []
        for name in names:
            shape = shapes[name]
            if len(shape) == 4:
                pool_dims[name], channels = ((1, 2), shape[3]) if channels_last else ((2, 3), shape[1])
            elif len(shape) == 3:
                pool_dims[name], channels = (1,), shape[2]
            elif len(shape) == 2:
                pool_dims[name], channels = (), shape[1]
            else:
                raise ValueError(f"deep-pred-net: layer {name!r} has output shape {tuple(shape)}; expected 2-4 dims")
            in_dims.append(int(channels))
        self.layer_names, self.pool_dims, self.captured = names, pool_dims, {}
        self.layer_nets = nn.ModuleList(
            nn.Sequential(nn.Linear(c, self.width), nn.LeakyReLU(self.negative_slope)) for c in in_dims
        )
        self.head = PredNet(
            self.width * len(names), width=self.width, depth=self.depth - 1, negative_slope=self.negative_slope
        )
        install_hooks(backbone, LayerCapture, {name: LayerCapture(self, name) for name in names})

    def pool(self, name: str, output: torch.Tensor) -> torch.Tensor:
        """Pool the output of layer ``name`` to ``[B, C_l]``."""
        dims = self.pool_dims[name]
        return output.mean(dim=dims) if dims else output

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        embedding: torch.Tensor,
        classifier: Optional[nn.Module],
        *,
        stopgrad: bool = False,
        reembed: Optional[Callable[[], torch.Tensor]] = None,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(uncertainty [B], logits [B, C] or None)`` from the layers captured in this backbone pass."""
        if self.head is None:
            raise ValueError("deep-pred-net is not attached to a backbone; use it through Uncertainizer")
        captured, self.captured = self.captured, {}
        if reembed is None or set(captured) != set(self.layer_names):
            raise ValueError(
                "deep-pred-net reads intermediate layers of the backbone: call the Uncertainizer on images "
                "(cached embeddings cannot be used, and its hooks must have fired in this forward)"
            )
        batch = embedding.shape[0]
        if any(captured[name].shape[0] != batch for name in self.layer_names):
            raise ValueError("deep-pred-net: the hooked layers saw a different batch than this embedding")
        hidden = torch.cat(
            [net(captured[name].detach() if stopgrad else captured[name]) for name, net in zip(self.layer_names, self.layer_nets)],
            dim=1,
        )
        logits = classifier(embedding) if classifier is not None else None
        return self.head.uncertainty(hidden, None), logits

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["captured"] = {}  # activations of a past forward (may not even be copyable)
        return state
