"""Argument checks shared by the model, the hub and the data code.

Each check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape or
value) with a message that names the argument and what was expected.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise ``ValueError`` if ``tensor`` holds NaN or inf (skipped while tracing for compile/export).

    Fast path: a finite sum proves every entry finite (NaN and inf propagate), one reduction
    without a mask; only a non-finite sum (a bad entry, or finite values overflowing) looks at
    the entries, and the error names the batch rows that hold them.
    """
    if _is_compiling() or bool(torch.isfinite(tensor.sum())):
        return
    bad = (~torch.isfinite(tensor)).reshape(tensor.shape[0], -1).any(dim=1).nonzero().flatten()
    if len(bad):
        raise ValueError(f"{name} contains NaN or inf values (in batch rows {bad[:10].tolist()})")


#: How far values may lie outside the normalised range before the batch is refused: this many widths
#: of the range, at least ``MIN_SLACK``: wide enough for noise images (``torch.randn`` of any size, for
#: a model normalising to [0, 1] too), narrow enough for raw 0-255 pixels of any photo.
RANGE_SLACK, MIN_SLACK = 4.0, 8.0


def normalised_range(mean: Sequence[float], std: Sequence[float]) -> Optional[Tuple[float, float]]:
    """``(low, high)``: where pixels in ``[0, 1]`` land after ``(p - mean) / std`` (``None`` if a std is not > 0)."""
    if not mean or len(mean) != len(std) or min(std) <= 0:
        return None
    return min(-m / s for m, s in zip(mean, std)), max((1 - m) / s for m, s in zip(mean, std))


def check_images(
    x: object,
    *,
    in_chans: Optional[int] = None,
    img_size: Optional[Sequence[int]] = None,
    value_range: Optional[Tuple[float, float]] = None,
    name: str = "x",
) -> torch.Tensor:
    """Validate a float image batch ``[B, C, H, W]``; ``img_size`` only for fixed-size backbones.

    ``value_range``: the range of normalised images (:func:`normalised_range`); values more than
    :data:`RANGE_SLACK` widths (at least :data:`MIN_SLACK`) outside it (raw 0-255 pixels) are refused."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of images [B, C, H, W], got {type(x).__name__} "
            "(for PIL images or arrays apply the model's transforms: "
            "timm.data.create_transform(**timm.data.resolve_model_data_config(model)))"
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (normalised images), got dtype {x.dtype}; "
            "convert with x.float() and apply the model's transforms"
        )
    if x.ndim != 4:
        hint = {
            2: "; for pre-computed embeddings call model(embedding=e)",
            3: "; for one image use x.unsqueeze(0)",
        }.get(x.ndim, "")
        raise ValueError(f"{name} must have shape [B, C, H, W], got {tuple(x.shape)} ({x.ndim}-D){hint}")
    if x.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one image, got batch size 0")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{name} must have at least 1 x 1 pixels, got shape {tuple(x.shape)}")
    if in_chans is not None and x.shape[1] != in_chans:
        raise ValueError(f"{name} must have {in_chans} channels (dim 1), got shape {tuple(x.shape)}")
    if img_size is not None and tuple(x.shape[2:]) != tuple(img_size):
        raise ValueError(
            f"{name} must be {tuple(img_size)} pixels (H, W) for this backbone, got {tuple(x.shape[2:])}"
        )
    check_finite(name, x)
    if value_range is not None and not _is_compiling():
        low, high = value_range
        slack = max(RANGE_SLACK * (high - low), MIN_SLACK)
        x_min, x_max = (float(v) for v in torch.aminmax(x))
        if x_min < low - slack or x_max > high + slack:
            raise ValueError(
                f"{name} holds values in [{x_min:g}, {x_max:g}], far outside [{low:.3g}, {high:.3g}], the range of "
                "images normalised with this model's mean/std: raw pixel values? Apply the model's transforms "
                "(uncertain_repr.images.eval_transform(model)), which scale pixels to [0, 1] and normalise them"
            )
    return x


def check_method_output(
    uncertainty: object, logits: object, *, batch: int, method: str
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The contract of an uncertainty method's ``forward``: ``uncertainty [B]`` (``[B, 1]`` accepted),
    real-valued, returned as float32; ``logits`` ``None`` or ``[B, C]``. Finiteness is checked by the
    caller, together with the embedding's (one device sync)."""
    if not isinstance(uncertainty, torch.Tensor):
        raise TypeError(f"method {method!r} must return the uncertainty as a torch.Tensor [B], got {type(uncertainty).__name__}")
    if tuple(uncertainty.shape) not in ((batch,), (batch, 1)):
        raise ValueError(
            f"method {method!r} returned an uncertainty of shape {tuple(uncertainty.shape)}; "
            f"expected [B] = [{batch}], one value per sample"
        )
    if uncertainty.is_complex() or uncertainty.dtype == torch.bool:
        raise TypeError(f"method {method!r} returned an uncertainty of dtype {uncertainty.dtype}; expected real numbers")
    if logits is not None and (not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != batch):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"method {method!r} returned logits {got}; expected None or [B, C] with B = {batch}")
    return uncertainty.float().reshape(batch), logits


def check_embedding(e: object, *, dim: Optional[int], name: str = "embedding") -> torch.Tensor:
    """Validate a float embedding batch ``[B, dim]`` (any width when ``dim`` is ``None``)."""
    shape = f"[B, {'D' if dim is None else dim}]"
    if not isinstance(e, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {shape}, got {type(e).__name__}")
    if not e.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {e.dtype}")
    if e.ndim != 2 or (dim is not None and e.shape[1] != dim):
        raise ValueError(f"{name} must have shape {shape}, got {tuple(e.shape)}")
    if e.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one row, got batch size 0")
    check_finite(name, e)
    return e


def check_device(device: object, *, name: str = "device") -> torch.device:
    """``torch.device(device)``, ``ValueError`` if it is malformed or not available on this machine."""
    try:
        parsed = torch.device(device)  # type: ignore[arg-type]
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{name} must be a torch device such as 'cpu', 'cuda' or 'cuda:1', got {device!r}") from None
    if parsed.type == "cpu":
        return parsed
    backend = getattr(torch, parsed.type, None) if parsed.type != "mps" else torch.backends.mps
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise ValueError(f"{name} {str(parsed)!r} is not available on this machine; use 'cpu'")
    count = getattr(backend, "device_count", None)
    if parsed.index is not None and count is not None and parsed.index >= count():
        raise ValueError(f"{name} {str(parsed)!r} does not exist: this machine has {count()} {parsed.type} device(s)")
    return parsed
