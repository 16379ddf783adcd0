"""Per-epoch checkpoints (Hub layout, for users) and the resume file (for continuing a run exactly).

``checkpoint-{epoch}/`` folders are written by ``model.save_pretrained`` into a temp folder that is
renamed when complete. ``resume.pt`` holds only plain tensors, numbers and strings (loadable with
``torch.load(weights_only=True)``): the trained part of the model, the loss's state, optimizer,
scheduler and grad-scaler states, the epoch, the history of summary rows and all RNG states. It
is written to a temp file and renamed, after the epoch's checkpoint folder exists.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch
from torch import nn


def trained_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The entries of ``model.state_dict()`` that training can change.

    The whole model if the backbone trains; else the method's state (parameters and buffers
    such as the ``unc_start_value`` scale) plus the classifier's if it trains.
    """
    parts = model.trainable_parts
    if parts["backbone"]:
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    keep = {id(t) for t in model.method.state_dict(keep_vars=True).values()}
    if parts["classifier"] and model.classifier is not None:
        keep |= {id(t) for t in model.classifier.state_dict(keep_vars=True).values()}
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items() if id(v) in keep}


def load_trained_state(model: nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """Put a :func:`trained_state` back; ``ValueError`` if it names entries the model lacks."""
    missing_here = sorted(set(state) - set(model.state_dict()))
    if missing_here:
        raise ValueError(f"resume state has entries the model lacks: {missing_here[:5]}")
    model.load_state_dict(state, strict=False)


def rng_state() -> Dict[str, Any]:
    """torch (CPU and CUDA), numpy and Python RNG states as plain tensors and numbers."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_state[0], "state": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss": py_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore the RNG states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def scheduler_state(scheduler: Any) -> Dict[str, Any]:
    """The timm scheduler's ``state_dict``, plus that of the torch scheduler it wraps (timm's plateau
    scheduler saves only ``best`` and ``last_epoch``, so its bad-epoch count would restart at 0)."""
    inner = getattr(scheduler, "lr_scheduler", None)
    return {**scheduler.state_dict(), **({} if inner is None else {"torch_scheduler": inner.state_dict()})}


def load_scheduler_state(scheduler: Any, state: Dict[str, Any]) -> None:
    """Put a :func:`scheduler_state` back."""
    state = dict(state)
    inner = state.pop("torch_scheduler", None)
    scheduler.load_state_dict(state)
    if inner is not None:
        scheduler.lr_scheduler.load_state_dict(inner)


RESUME_KEYS = ("model", "loss", "optimizer", "scheduler", "scaler", "epoch", "num_updates", "history",
               "best_epoch", "best_metrics", "rng", "config")
#: settings a resumed run may change: where things are and how they are logged, not what is computed
RESUME_MAY_CHANGE = ("resume", "output", "device", "workers", "validation_batch_size", "data_dir", "data_dir_eval",
                     "data_dir_downstream", "log_tensorboard", "log_wandb", "wandb_project")


def check_resume_config(path: Path, saved: Dict[str, Any], config: Dict[str, Any], *, saved_world: int,
                        world: int) -> None:
    """``ValueError`` naming every setting (but :data:`RESUME_MAY_CHANGE`) in which ``config`` differs from the
    ``saved`` one of the run in ``path``: resuming would mix two runs (e.g. the saved schedule with new epochs).

    ``batch_size`` may change with the number of processes (``saved_world`` then, ``world`` now) if the global
    batch ``batch_size * processes`` stays the same (the sample order depends only on it)."""
    missing = object()
    changed = [f"{key}={saved.get(key, missing)!r} in the saved run, {value!r} now" for key, value in config.items()
               if key not in RESUME_MAY_CHANGE + ("batch_size",) and saved.get(key, missing) != value]
    if saved.get("batch_size", 0) * saved_world != config["batch_size"] * world:
        changed.append(f"global batch (batch_size x processes) {saved.get('batch_size')} x {saved_world} in the saved "
                       f"run, {config['batch_size']} x {world} now")
    if changed:
        raise ValueError(f"resume file {path} was written by a run with other settings: {'; '.join(changed)}. "
                         "Resume with the saved settings (its optimizer and schedule are continued as saved), "
                         "or start a new run in another output folder")


def save_resume(path: Path, state: Dict[str, Any]) -> None:
    """``torch.save`` to a temp file, flushed to disk, then renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_resume(path: Path) -> Dict[str, Any]:
    """Read ``resume.pt`` with ``weights_only=True`` (no pickled objects).

    ``ValueError`` naming the file if it is empty, truncated, holds objects other than tensors,
    numbers and strings, or lacks entries.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, PermissionError):
        raise
    except (EOFError, RuntimeError, pickle.UnpicklingError, ValueError, OSError) as err:  # torch: EINVAL if cut
        problem = "is empty" if Path(path).stat().st_size == 0 else "is truncated or not a plain-tensor resume file"
        detail = (str(err).splitlines() or [""])[0]
        raise ValueError(f"resume file {path} {problem} ({type(err).__name__}: {detail}); the run cannot be "
                         "continued from it: start over in another output folder") from None
    missing = [key for key in RESUME_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise ValueError(f"resume file {path} lacks {', '.join(missing)}; it was not written by uncertain_repr.train")
    return state
