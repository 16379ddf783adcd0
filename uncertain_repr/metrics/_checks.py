"""Shared argument checks and conversions for :mod:`uncertain_repr.metrics` (private).

Every public metric converts its inputs through these helpers so that error messages name the
argument and say what was expected, and so that undefined results are reported the same way.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence, Union

import numpy as np
import torch

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[Any]]


class UndefinedMetricWarning(UserWarning):
    """A metric is mathematically undefined for the given input and ``nan`` is returned."""


def undefined(message: str) -> float:
    """Warn with :class:`UndefinedMetricWarning` and return ``nan``."""
    warnings.warn(message, UndefinedMetricWarning, stacklevel=3)
    return float("nan")


def _to_numpy(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x.cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name} must be a torch.Tensor, numpy array or list, got {type(x).__name__}"
        ) from exc


def _check_shape(arr: np.ndarray, name: str, ndim: int) -> None:
    shape = "[N]" if ndim == 1 else "[N, D]"
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have shape {shape} ({ndim}-D), got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: at least one sample is required")


def _check_real(arr: np.ndarray, name: str) -> None:
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")


def as_float_1d(x: ArrayLike, name: str, *, allow_nan: bool = False) -> np.ndarray:
    """``x`` as a float64 numpy array of shape ``[N]``, N >= 1, finite (NaN allowed if asked)."""
    arr = _to_numpy(x, name)
    _check_shape(arr, name, 1)
    _check_real(arr, name)
    arr = arr.astype(np.float64, copy=False)
    bad = np.isinf(arr) if allow_nan else ~np.isfinite(arr)
    if bad.any():
        what = "infinite" if allow_nan else "non-finite (NaN or inf)"
        raise ValueError(f"{name} contains {int(bad.sum())} {what} value(s); all must be finite")
    return arr


def as_float_2d(x: ArrayLike, name: str) -> np.ndarray:
    """``x`` as a finite float64 numpy array of shape ``[N, D]``."""
    arr = _to_numpy(x, name)
    _check_shape(arr, name, 2)
    _check_real(arr, name)
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite (NaN or inf) values; all must be finite")
    return arr


def as_embeddings(x: ArrayLike, name: str = "embeddings") -> torch.Tensor:
    """``x`` as a finite floating torch tensor ``[N, D]`` on its own device.

    float32/float64 are kept; float16/bfloat16 are promoted to float32 and integers to float64
    (both exact; integers of magnitude 2**53 or more are refused, float64 would round them).
    """
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(_to_numpy(x, name))
    if t.ndim != 2:
        raise ValueError(f"{name} must have shape [N, D] (2-D), got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} is empty: got shape {tuple(t.shape)}, need N >= 1 and D >= 1")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    if not t.is_floating_point():
        t = t.double()  # exact below 2**53 in magnitude; from 2**53 on an integer may have been rounded
        if bool((t.abs() >= 2.0**53).any()):
            raise ValueError(
                f"{name} holds integers of magnitude 2**53 or more, which float64 cannot represent exactly "
                "(their distances would be rounded); scale them down or pass floats"
            )
    elif t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains non-finite (NaN or inf) values; all must be finite")
    return t


def as_labels(x: ArrayLike, name: str = "labels") -> np.ndarray:
    """``x`` as an int64 numpy array of class ids, shape ``[N]`` (integer dtype required)."""
    arr = _to_numpy(x, name)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"{name} must be integer class ids (e.g. torch.long), got dtype {arr.dtype}; "
            "soft labels go to the soft-label arguments, not here"
        )
    _check_shape(arr, name, 1)
    return arr.astype(np.int64, copy=False)


def as_binary(x: ArrayLike, name: str) -> np.ndarray:
    """``x`` as a bool numpy array ``[N]``; accepts bool, or integers that are all 0 or 1."""
    arr = _to_numpy(x, name)
    _check_shape(arr, name, 1)
    if arr.dtype == np.bool_:
        return arr
    if np.issubdtype(arr.dtype, np.integer):
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must be binary: integer values other than 0 and 1 found")
        return arr.astype(bool)
    raise TypeError(f"{name} must be bool (or integer 0/1), got dtype {arr.dtype}")


def check_same_length(**arrays: Any) -> int:
    """Common first dimension of the named arrays; ``ValueError`` naming all lengths otherwise."""
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"length mismatch: {listed} samples; all must have the same length N")
    return next(iter(lengths.values()))
