"""Fast inference with a frozen backbone: the same outputs as eager ``model(x)``, faster on CPU.

:func:`frozen_inference` wraps an :class:`~uncertain_repr.Uncertainizer` for the commands that
only read a frozen model (``predict``, ``cache``, ``benchmark``). On CPU it runs a copy of the
timm backbone in channels-last memory format and, for runs long enough to pay for it, as a
traced and frozen TorchScript graph (``torch.jit.trace`` + ``torch.jit.freeze``: BatchNorm
folded into the convolutions, constants inlined) optimised with oneDNN graph fusion, all under
``torch.inference_mode``. The uncertainty method and the classifier then run eagerly on that
embedding, exactly as ``model(embedding=e)`` does.

Measured on EfficientNet-Lite0, batch 32, CPU-seconds per batch on one thread (robust to a
loaded machine; ``benchmarks/bench_inference.py`` has the wall-clock figures): eager 1.6,
channels-last 1.05 (1.5x), + frozen graph 0.69 (2.3x), + oneDNN fusion 0.58 on its first runs and
0.41 once warm (2.8-3.8x);
``torch.jit.optimize_for_inference`` 1.0. ``torch.compile`` spent 66 s compiling and 126 s
recompiling for the last partial batch (2 loaded cores), more than a 200-image run takes eagerly.

The model itself runs unchanged (``runtime == "eager"``) where the optimisation does not apply:
disabled, a training-mode model, a custom (non-timm) backbone, a method that reads the backbone
itself (``needs_images``: deep-pred-net's hooks, mc-dropout's stochastic backbone passes), any
forward hook on the backbone, a non-CPU device, or autocast. ``reason`` says why.

The graph is traced on two images and checked against the eager model (first two images of the
batch) at each new, larger batch size it runs at; a mismatch or a tracing error falls back to
eager with a warning. Smaller batches (the last, partial one) are padded to a checked size, so a
whole run uses one graph at one shape.
The graph holds a copy of the weights: build a new wrapper after changing the model.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from typing import Dict, Iterator, Optional, Tuple

import torch
from torch import nn

from .model import UncertainOutput, Uncertainizer

#: Runs shorter than this many images use channels-last alone: tracing, profiling and fusing cost
#: about 1.4 eager batches of 32 up front (measured, Lite0), which the fused graph (4x eager in the
#: steady state, channels-last alone 1.5x) only earns back after about this many images.
MIN_IMAGES_TO_TRACE = 64
#: The check of a new graph against eager: ``max |fast - eager| <= TOLERANCE * max(1, max |eager|)``.
TOLERANCE = 1e-4

EAGER, CHANNELS_LAST, JIT_FREEZE = "eager", "channels_last", "channels_last+jit_freeze+onednn"


@contextlib.contextmanager
def _onednn_fusion() -> Iterator[None]:
    """oneDNN graph fusion (torch's LLGA fuser) on while a graph is profiled and optimised, then back as it was.

    The optimised plan keeps its fused kernels after the switch is restored (measured: 0.58 vs 0.69
    CPU-s per batch of 32 for the frozen graph alone; eager 1.6). Builds without it skip it.
    """
    previous = torch.jit.onednn_fusion_enabled() if hasattr(torch.jit, "onednn_fusion_enabled") else None
    if previous is not None:
        torch.jit.enable_onednn_fusion(True)
    try:
        yield
    finally:
        if previous is not None:
            torch.jit.enable_onednn_fusion(previous)


class _Embedding(nn.Module):
    """``forward_head(forward_features(x), pre_logits=True)`` of a timm backbone, as one traceable module."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)


def _has_hooks(module: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


def _eager_reason(model: nn.Module, enabled: bool) -> Optional[str]:
    """Why ``model`` must run eagerly, or ``None`` when the fast path applies."""
    if not enabled:
        return "disabled (--eager)"
    if not isinstance(model, Uncertainizer):
        return f"not an Uncertainizer ({type(model).__name__})"
    param = next(model.backbone.parameters(), None)
    checks = (
        (model.training or model.backbone.training, "the model is in training mode"),
        (model.backbone_name is None, "custom backbone module (only timm backbones are traced)"),
        (model.method.needs_images, f"method {model.method_name!r} reads the backbone itself (hooks or stochastic passes)"),
        (_has_hooks(model.backbone), "the backbone has forward hooks"),
        (param is not None and param.device.type != "cpu", "only CPU inference is optimised"),
        (torch.is_autocast_enabled("cpu"), "autocast is on"),
    )
    return next((reason for failed, reason in checks if failed), None)


class FrozenInference:
    """``model(x)`` for a frozen ``Uncertainizer`` through the fastest applicable backbone runtime.

    Any other module (with ``forward_embedding`` for :meth:`embed`) runs eagerly.

    Attributes:
        model: the wrapped model (never modified).
        runtime: what runs the backbone: ``"eager"``, ``"channels_last"`` or
            ``"channels_last+jit_freeze"`` (recorded in cache manifests).
        reason: why it runs eagerly (``""`` when it does not).
    """

    def __init__(self, model: nn.Module, *, enabled: bool = True, num_images: Optional[int] = None) -> None:
        self.model = model
        self.reason = _eager_reason(model, enabled) or ""
        if self.reason:
            self.runtime = EAGER
        else:
            self.runtime = CHANNELS_LAST if num_images is not None and num_images < MIN_IMAGES_TO_TRACE else JIT_FREEZE
        self._module: Optional[nn.Module] = None
        self._graphs: Dict[Tuple, Tuple[int, torch.jit.ScriptModule]] = {}  # image shape -> (batch, graph)
        if self.runtime != EAGER:
            self._module = _Embedding(copy.deepcopy(model.backbone)).eval().to(memory_format=torch.channels_last)

    def _fall_back(self, why: str) -> None:
        warnings.warn(f"fast inference disabled, running the backbone eagerly: {why}", RuntimeWarning, stacklevel=3)
        self.runtime, self.reason, self._module, self._graphs = EAGER, why, None, {}

    def _graph_for(self, x: torch.Tensor) -> Tuple[Optional[torch.jit.ScriptModule], Optional[torch.Tensor]]:
        """The graph for images of ``x``'s shape, checked at a batch size >= ``len(x)``, and its
        output on ``x`` when this call built or checked it (else ``None``); ``(None, None)`` = eager."""
        key = (tuple(x.shape[1:]), x.dtype)
        entry = self._graphs.get(key)
        if entry is not None and entry[0] >= x.shape[0]:
            return entry[1], None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings and TorchScript's deprecation notices
                with _onednn_fusion():
                    # traced on two images: tracing costs Python time per module, not per image
                    graph = entry[1] if entry is not None else torch.jit.freeze(
                        torch.jit.trace(self._module, x[:2], check_trace=False)
                    )
                    graph(x)  # the first run at a new shape profiles it; the second runs (and checks) the fused graph
                    out = graph(x)
            ref = self.model._embed(x[:2].contiguous())
        except Exception as err:  # any model the tracer cannot handle runs eagerly instead
            self._fall_back(f"tracing failed ({type(err).__name__}: {err})")
            return None, None
        error = float((out[:2] - ref).abs().max())
        if not error <= TOLERANCE * max(1.0, float(ref.abs().max())):
            self._fall_back(f"the traced graph differs from eager by {error:.2g} at batch size {x.shape[0]}")
            return None, None
        self._graphs[key] = (x.shape[0], graph)
        return graph, out

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[B, D]`` of images ``x [B, C, H, W]`` (what ``model.forward_embedding(x)`` returns)."""
        with torch.inference_mode():
            if self.runtime == EAGER:
                return self.model.forward_embedding(x)
            self.model.check_input(x)
            x = x.contiguous(memory_format=torch.channels_last)
            if self.runtime == CHANNELS_LAST:
                return self._module(x)
            graph, out = self._graph_for(x)
            if graph is None:
                return self.model.forward_embedding(x.contiguous())
            if out is not None:
                return out
            batch, count = self._graphs[(tuple(x.shape[1:]), x.dtype)][0], x.shape[0]
            if count < batch:  # the last, partial batch: pad to the checked size instead of profiling a new shape
                x = torch.cat([x, x.new_zeros(batch - count, *x.shape[1:])]).contiguous(memory_format=torch.channels_last)
            return graph(x)[:count]

    def __call__(self, x: torch.Tensor) -> UncertainOutput:
        """``UncertainOutput(embedding [B, D], uncertainty [B], logits [B, C] | None)``, as ``model(x)``."""
        with torch.inference_mode():
            if self.runtime == EAGER:
                return self.model(x)
            return self.model(embedding=self.embed(x))

    def __repr__(self) -> str:
        why = f", reason={self.reason!r}" if self.reason else ""
        return f"FrozenInference({type(self.model).__name__}, runtime={self.runtime!r}{why})"


def frozen_inference(model: nn.Module, *, enabled: bool = True, num_images: Optional[int] = None) -> FrozenInference:
    """Wrap a frozen ``model`` for fast inference (see the module docstring); ``enabled=False`` = eager.

    ``num_images`` (the size of the run, if known) picks channels-last alone for short runs,
    where tracing would cost more than it saves.
    """
    return FrozenInference(model, enabled=enabled, num_images=num_images)
