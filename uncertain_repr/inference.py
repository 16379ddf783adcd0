"""Fast inference with a frozen backbone: the same outputs as eager ``model(x)``, faster on CPU.

:func:`frozen_inference` wraps an :class:`~uncertain_repr.Uncertainizer` for the commands that
only read a frozen model (``predict``, ``cache``, ``benchmark``). On CPU it runs a copy of the
timm backbone in channels-last memory format and, for runs long enough to pay for it, as a
traced and frozen TorchScript graph (``torch.jit.trace`` + ``torch.jit.freeze``: BatchNorm
folded into the convolutions, constants inlined) optimised with oneDNN graph fusion, all under
``torch.inference_mode``. The uncertainty method and the classifier then run eagerly on that
embedding, exactly as ``model(embedding=e)`` does.

Measured on EfficientNet-Lite0, CPU-seconds per batch of 32 on one thread (robust to a loaded
machine; ``benchmarks/bench_inference.py`` has the end-to-end figures): eager 1.5-1.7,
channels-last 1.05 (1.5x), + frozen graph with oneDNN fusion run on the whole batch 0.49 once warm
(3.2x), run as chunks of ``GRAPH_BATCH`` images: 32: 0.49, 8: 0.40, 4: 0.21, 3: 0.21, 2: 0.20,
1: 0.22 (7.5x at 2; small chunks keep the fused kernels' activations in cache). Building the graph
(trace, freeze, profile, check) costs 0.65-0.8 s at ``GRAPH_BATCH`` 2, 4.0-4.5 s at 32.
``torch.jit.optimize_for_inference`` 1.0. ``torch.compile`` spent 66 s compiling and 126 s
recompiling for the last partial batch (2 loaded cores), more than a 200-image run takes eagerly.

The model itself runs unchanged (``runtime == "eager"``) where the optimisation does not apply:
disabled, a training-mode model, a custom (non-timm) backbone, a method that reads the backbone
itself (``needs_images``: deep-pred-net's hooks, mc-dropout's stochastic backbone passes), any
forward hook on the backbone, a non-CPU device, or autocast. ``reason`` says why.

The graph is traced at ``GRAPH_BATCH`` images and checked against the eager model on the first
images of the first batch; a mismatch or a tracing error falls back to eager with a warning. Every
batch then runs through it in chunks of ``GRAPH_BATCH`` (a short last chunk padded with zero
images), so a whole run uses one graph at one shape.
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

#: Runs shorter than this many images use channels-last alone: building the graph costs about
#: 0.7 CPU-s up front (Lite0, one thread; whole runs of 16 images: channels-last 0.4 s, graph
#: 0.7-1.1 s; of 32: 0.9 s both; of 64: 1.7-1.95 s vs 1.0 s): break-even is about 32 images. A
#: cache build decides on its total rows, so that a resumed build runs what the first part ran.
MIN_IMAGES_TO_TRACE = 32
#: The frozen graph runs on chunks of this many images (a batch of 32 = 16 chunks; the last chunk
#: of a run is padded): small inputs keep the fused kernels' activations in cache (2 and 4 measured
#: equal within noise, 8 twice as slow), and one shape means one profiling run and one check per run.
GRAPH_BATCH = 2
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


def _padded(x: torch.Tensor) -> torch.Tensor:
    """``x [b, C, H, W]`` (``b <= GRAPH_BATCH``) padded with zero images to ``GRAPH_BATCH``, channels-last."""
    if x.shape[0] == GRAPH_BATCH:
        return x
    return torch.cat([x, x.new_zeros(GRAPH_BATCH - x.shape[0], *x.shape[1:])]).contiguous(memory_format=torch.channels_last)


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
            ``"channels_last+jit_freeze+onednn"`` (recorded in cache manifests and benchmark results).
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
        self._graphs: Dict[Tuple, torch.jit.ScriptModule] = {}  # (image shape, dtype) -> graph at GRAPH_BATCH
        if self.runtime != EAGER:
            self._module = _Embedding(copy.deepcopy(model.backbone)).eval().to(memory_format=torch.channels_last)

    def _fall_back(self, why: str) -> None:
        warnings.warn(f"fast inference disabled, running the backbone eagerly: {why}", RuntimeWarning, stacklevel=3)
        self.runtime, self.reason, self._module, self._graphs = EAGER, why, None, {}

    def _graph_for(self, x: torch.Tensor) -> Tuple[Optional[torch.jit.ScriptModule], Optional[torch.Tensor]]:
        """The graph for images of ``x``'s shape (built and checked on the first call), and its output
        on the first chunk of ``x`` when this call built it (else ``None``); ``(None, None)`` = eager."""
        key = (tuple(x.shape[1:]), x.dtype)
        graph = self._graphs.get(key)
        if graph is not None:
            return graph, None
        chunk, count = _padded(x[:GRAPH_BATCH]), min(GRAPH_BATCH, x.shape[0])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings and TorchScript's deprecation notices
                with _onednn_fusion():
                    graph = torch.jit.freeze(torch.jit.trace(self._module, chunk, check_trace=False))
                    graph(chunk)  # the first run profiles the graph; the second runs (and checks) the fused one
                    out = graph(chunk)[:count]
            ref = self.model._embed(x[:count].contiguous())
        except Exception as err:  # any model the tracer cannot handle runs eagerly instead
            self._fall_back(f"tracing failed ({type(err).__name__}: {err})")
            return None, None
        error = float((out - ref).abs().max())
        if not error <= TOLERANCE * max(1.0, float(ref.abs().max())):
            self._fall_back(f"the traced graph differs from eager by {error:.2g} on the first {count} images")
            return None, None
        self._graphs[key] = graph
        return graph, out

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[B, D]`` of images ``x [B, C, H, W]`` (what ``model.forward_embedding(x)`` returns)."""
        with torch.inference_mode():
            if self.runtime == EAGER:
                return self.model.forward_embedding(x)
            self.model.check_input(x)
            x = self.model._cast_input(x).contiguous(memory_format=torch.channels_last)  # float16/64 as model(x) casts
            if self.runtime == CHANNELS_LAST:
                return self._module(x)
            graph, first = self._graph_for(x)
            if graph is None:
                return self.model.forward_embedding(x.contiguous())
            done = 0 if first is None else len(first)
            parts = [] if first is None else [first]
            for start in range(done, x.shape[0], GRAPH_BATCH):  # batch slices of channels-last stay channels-last
                chunk = x[start: start + GRAPH_BATCH]
                parts.append(graph(_padded(chunk))[: len(chunk)])
            return parts[0] if len(parts) == 1 else torch.cat(parts)

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
