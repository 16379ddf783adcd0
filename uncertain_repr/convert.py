"""Convert a checkpoint of the original URL/PVU research code into a checkpoint folder (see :mod:`.hub`).

The original ``train.py`` saves a pickled dict: ``state_dict`` (wrapper keys ``model.<timm keys>`` and
``unc_module.unc_module.{0,2,..,2L}.*`` for the pred-net head), optionally ``state_dict_ema``,
``optimizer`` (dropped), ``arch``, ``epoch``, ``metric`` and ``args`` (an ``argparse.Namespace``). It is
read with ``torch.load(weights_only=True)`` and only ``argparse.Namespace`` allow-listed: nothing in
the file can execute code. Plain state dicts (optionally with a ``module.`` prefix) are accepted too.

Every conversion is verified before the folder appears: the original wrapper's outputs are computed
from the raw tensors (backbone embedding, logits, and the pred-net formula
``softplus(MLP(e)) + 1e-6`` with LeakyReLU(0.01)) and compared to the checkpoint loaded back from disk.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
import torch.nn.functional as F

from . import hub
from .pretrained import PretrainedEntry, get_pretrained, is_pretrained, legacy_data_config

BACKBONE_PREFIX = "model."
HEAD_PREFIX = "unc_module.unc_module."
STATE_DICT_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
"""Where the state dict is looked up, in the original loader's order of preference (EMA first)."""
PRED_NET_NAMES = ("pred-net", "prednet")
ORIGINAL_EPS = 1e-6
ORIGINAL_SLOPE = 0.01
ARGS_RECORDED = (
    "model",
    "unc_module",
    "unc_width",
    "unc_depth",
    "loss",
    "inv_temp",
    "stopgrad",
    "unc_start_value",
    "initial_checkpoint",
    "dataset",
    "epochs",
    "lr",
    "opt",
    "batch_size",
    "img_size",
    "model_ema",
    "seed",
)
"""Training arguments copied (JSON-safe) into the config's ``training`` block and the model card."""
VERIFY_BATCH = 2
VERIFY_RTOL, VERIFY_ATOL = 1e-5, 1e-6


@dataclass
class OriginalCheckpoint:
    """The parts of an original checkpoint that a conversion needs.

    Attributes:
        backbone: timm state dict (``model.`` prefix removed).
        head: the pred-net tensors, keys ``"{i}.weight"``/``"{i}.bias"`` (``unc_module.unc_module.`` removed).
        args: training arguments (all of ``args`` as plain values, ``{}`` for a plain state dict).
        state_dict_key: which entry of the file the weights came from (``""`` for a plain state dict).
        arch, epoch, metric: the file's own fields, ``None`` where absent.
    """

    backbone: Dict[str, torch.Tensor]
    head: Dict[str, torch.Tensor]
    args: Dict[str, Any]
    state_dict_key: str
    arch: Optional[str] = None
    epoch: Optional[int] = None
    metric: Optional[float] = None


@dataclass
class Conversion:
    """What :func:`convert_checkpoint` did: the folder, the model config, the verified difference."""

    path: Path
    config: Dict[str, Any]
    training: Dict[str, Any]
    max_abs_diff: float


def _torch_load(path: Path) -> Any:
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:  # files from torch < 1.6 are not zip archives and cannot be mapped
            if "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)


def read_original_checkpoint(path: Union[str, os.PathLike]) -> OriginalCheckpoint:
    """Read an original ``.pth.tar`` (or a plain state dict) safely; see the module docstring."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(
            f"{path} is a folder: convert reads one original .pth.tar file (a checkpoint folder loads with load_model)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"original checkpoint not found: {path}")
    try:
        raw = _torch_load(path)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):  # e.g. "Unsupported operand": not a pickle of objects at all
            raise ValueError(f"{path} is not a readable torch checkpoint (corrupt?): {str(err).strip()[:300]}") from None
        raise ValueError(
            f"refusing to read {path}: it holds pickled objects outside the allow-list (tensors, plain "
            f"containers, argparse.Namespace), and loading them could run arbitrary code (or the file is corrupt). "
            f"{str(err).strip()[:400]}"
        ) from None
    except Exception as err:  # a corrupt file fails anywhere in the unpickler (KeyError, IndexError, EOFError, ...)
        raise ValueError(
            f"{path} is not a readable torch checkpoint (truncated or corrupt?): {type(err).__name__}: {err}"
        ) from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} holds a {type(raw).__name__}, expected a checkpoint dict or a state dict")
    key = next((k for k in STATE_DICT_KEYS if isinstance(raw.get(k), dict)), "")
    state = raw[key] if key else raw
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(
            f"{path}: the state dict {key or '(top level)'} has non-tensor entries: {', '.join(map(str, bad[:10]))}"
        )
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    backbone = {k[len(BACKBONE_PREFIX) :]: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}
    head = {k[len(HEAD_PREFIX) :]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
    other = sorted(k for k in state if not k.startswith((BACKBONE_PREFIX, HEAD_PREFIX)))
    if other:
        raise ValueError(
            f"{path}: keys outside 'model.*' and '{HEAD_PREFIX}*' (only pred-net checkpoints of the original "
            f"code are supported): {', '.join(other[:10])}" + (" ..." if len(other) > 10 else "")
        )
    args = raw.get("args") if key else None
    args = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    epoch, metric = raw.get("epoch") if key else None, raw.get("metric") if key else None
    return OriginalCheckpoint(
        backbone=backbone,
        head=head,
        args=args,
        state_dict_key=key,
        arch=raw.get("arch") if key else None,
        epoch=None if epoch is None else int(epoch),
        metric=None if metric is None else float(metric),
    )


def pred_net_shape(head: Dict[str, torch.Tensor]) -> Dict[str, int]:
    """``{"width", "depth", "in_features"}`` of an original pred-net, from its tensors ``{i}.weight/bias``.

    The Linear layers sit at Sequential indices 0, 2, ..., 2L; shapes [W, D], [W, W] x (L-1), [1, W].
    """
    indices = sorted({int(k.split(".")[0]) for k in head})
    expected_keys = {f"{i}.{p}" for i in indices for p in ("weight", "bias")}
    if not indices or indices != list(range(0, 2 * len(indices), 2)) or set(head) != expected_keys:
        raise ValueError(f"the pred-net head has an unexpected layout: keys {sorted(head)}")
    weights = [head[f"{i}.weight"] for i in indices]
    depth = len(weights) - 1
    in_features = weights[0].shape[1]
    width = weights[0].shape[0] if depth else 1
    for n, w in enumerate(weights):
        rows = 1 if n == depth else width
        cols = in_features if n == 0 else width
        if w.ndim != 2 or tuple(w.shape) != (rows, cols) or tuple(head[f"{indices[n]}.bias"].shape) != (rows,):
            raise ValueError(f"pred-net layer {indices[n]} has weight {tuple(w.shape)}, expected ({rows}, {cols})")
    return {"width": width, "depth": depth, "in_features": in_features}


def original_pred_net_uncertainty(
    features: torch.Tensor, head: Dict[str, torch.Tensor], scaler: float = 1.0
) -> torch.Tensor:
    """The original wrapper's pred-net output ``[B]`` for ``features [B, D]``, straight from its tensors."""
    indices = sorted({int(k.split(".")[0]) for k in head})
    h = features
    for i in indices[:-1]:
        h = F.leaky_relu(F.linear(h, head[f"{i}.weight"], head[f"{i}.bias"]), ORIGINAL_SLOPE)
    out = F.softplus(F.linear(h, head[f"{indices[-1]}.weight"], head[f"{indices[-1]}.bias"]), beta=1, threshold=20)
    return (ORIGINAL_EPS + out).squeeze(-1) * scaler


def _json_safe(value: Any) -> Any:
    if isinstance(value, tuple):
        value = list(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _base(name: str) -> str:
    return name.split(".")[0]


def _resolve_arch(arch: Optional[str], original: OriginalCheckpoint) -> str:
    recorded = original.arch or original.args.get("model")
    chosen = arch or recorded
    if not chosen:
        raise ValueError(
            "the checkpoint does not name its architecture: pass arch= (--arch), "
            "e.g. vit_base_patch16_224.augreg_in21k"
        )
    if recorded and _base(recorded) != _base(chosen):
        raise ValueError(f"arch {chosen!r} disagrees with the checkpoint's own architecture {recorded!r}")
    return chosen


def _num_classes(arch: str, backbone: Dict[str, torch.Tensor]) -> int:
    import timm.models

    classifier = timm.models.get_pretrained_cfg(arch).classifier
    if not isinstance(classifier, str):
        raise ValueError(f"cannot tell the classifier of {arch!r} (timm lists {classifier!r})")
    weight = backbone.get(f"{classifier}.weight")
    return 0 if weight is None else int(weight.shape[0])


def _training_record(
    original: OriginalCheckpoint, src: Path, arch: str, scaler_known: bool, img_size: Any
) -> Dict[str, Any]:
    record: Dict[str, Any] = {"converted_from": src.name, "weights": original.state_dict_key or "state dict"}
    record.update({"arch": arch, "epoch": original.epoch, "metric": original.metric})
    record.update({k: _json_safe(original.args[k]) for k in ARGS_RECORDED if k in original.args})
    record["unc_scaler"] = 1.0 if scaler_known else "unknown (not saved by the original code; 1.0 stored)"
    record["preprocessing"] = f"legacy: ImageNet mean/std, bicubic, crop 0.875, {img_size} px"
    return {k: v for k, v in record.items() if v is not None}


def _card(entry: Optional[PretrainedEntry], arch: str, training: Dict[str, Any]) -> hub.ModelCard:
    if entry is None:
        return hub.ModelCard(
            title=f"{arch} + pred-net (converted)",
            description="Converted from a checkpoint of the original URL/PVU research code (mkirchhof/url).",
            license_note="The weights inherit the terms of the data they were trained on.",
            training=training,
        )
    return hub.ModelCard(
        title=entry.name,
        description=entry.description,
        license=entry.license,
        license_note=entry.license_note,
        paper=entry.paper,
        source=entry.source_url,
        training=training,
        tags=entry.tags,
    )


@torch.no_grad()
def _verify(folder: Path, reference: torch.nn.Module, head: Dict[str, torch.Tensor]) -> float:
    """Max abs difference between the original wrapper's outputs and the saved checkpoint's; raises if not equal."""
    loaded = hub.load_folder(folder)
    backbone = reference.backbone.eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(VERIFY_BATCH, *backbone.pretrained_cfg["input_size"], generator=generator)
    features = backbone.forward_head(backbone.forward_features(x), pre_logits=True)
    expected = {"embedding": features, "uncertainty": original_pred_net_uncertainty(features, head)}
    if reference.num_classes:
        expected["logits"] = backbone.get_classifier()(features)
    output = loaded(x)
    worst = 0.0
    for name, want in expected.items():
        got = getattr(output, name)
        if got.shape != want.shape or not torch.allclose(got, want, rtol=VERIFY_RTOL, atol=VERIFY_ATOL):
            diff = (got - want).abs().max().item() if got.shape == want.shape else float("inf")
            raise RuntimeError(
                f"conversion check failed: the {name} of the converted checkpoint differs from the original "
                f"wrapper's (max abs diff {diff:.3g}); nothing was written"
            )
        worst = max(worst, (got - want).abs().max().item())
    return worst


def convert_checkpoint(
    src: Union[str, os.PathLike], out_dir: Union[str, os.PathLike], *, arch: Optional[str] = None
) -> Conversion:
    """Convert the original pred-net checkpoint ``src`` into the checkpoint folder ``out_dir``.

    Args:
        src: an original ``.pth.tar`` (or a plain state dict saved with ``torch.save``).
        out_dir: the folder to write (atomically; an existing checkpoint folder is replaced).
        arch: a timm architecture (e.g. ``vit_base_patch16_224.augreg_in21k``) or a registered
            pretrained name (e.g. ``vit_base_patch16_224.pvu``, which also fills the model card and
            checks the widths). Default: the checkpoint's own ``arch``/``args.model``.

    The original ``unc_scaler`` is not in the file; 1.0 is stored, with a warning when the training
    arguments show it was something else (``unc_start_value > 0`` without an initial checkpoint).
    Rankings of the uncertainty (AUROC etc.) do not depend on this positive factor.
    """
    from .model import Uncertainizer

    src, out_dir = Path(src), Path(out_dir)
    original = read_original_checkpoint(src)
    entry = get_pretrained(arch) if arch is not None and is_pretrained(arch) else None
    arch = _resolve_arch(entry.architecture if entry else arch, original)
    unc_module = original.args.get("unc_module", "pred-net")
    if not original.head or unc_module not in PRED_NET_NAMES:
        raise ValueError(
            f"{src} has no pred-net head ({HEAD_PREFIX}* keys; unc_module={unc_module!r}): only pred-net "
            "checkpoints of the original code can be converted"
        )
    shape = pred_net_shape(original.head)
    num_classes = _num_classes(arch, original.backbone)
    if entry is not None and (shape["in_features"], num_classes) != (entry.embed_dim, entry.num_classes):
        raise ValueError(
            f"{src} is not a {entry.name} checkpoint: embedding width {shape['in_features']} and {num_classes} "
            f"classes, expected {entry.embed_dim} and {entry.num_classes}"
        )
    rescaled = float(original.args.get("unc_start_value") or 0) > 0 and not original.args.get("initial_checkpoint")
    scaler_known = not rescaled
    if not scaler_known:
        warnings.warn(
            f"{src} was trained with unc_start_value={original.args['unc_start_value']}: the original code "
            "rescaled the uncertainty by a factor it never saved, so it cannot be recovered; 1.0 is stored. "
            "Uncertainty rankings are unaffected, absolute values may differ.",
            stacklevel=2,
        )
    stopgrad = bool(original.args.get("stopgrad", not original.args))  # URL-era args had no stopgrad: False
    model = Uncertainizer(
        arch,
        "pred-net",
        pretrained=False,  # the checkpoint's weights are loaded below
        stopgrad=stopgrad,
        backbone_args={"num_classes": num_classes},
        width=shape["width"],
        depth=shape["depth"],
    )
    if model.embed_dim != shape["in_features"]:
        raise ValueError(
            f"{arch!r} has {model.embed_dim}-d embeddings, the pred-net head expects {shape['in_features']}"
        )
    hub.load_state_strict(model.backbone, original.backbone, f"the backbone of {src} (as {arch!r}; check --arch)")
    head_state = {f"net.{k}": v for k, v in original.head.items()}
    head_state["scale"] = torch.ones(())
    hub.load_state_strict(model.method, head_state, f"the pred-net head of {src}")

    img_size = original.args.get("img_size") or legacy_data_config(model)["input_size"][-1]
    training = _training_record(original, src, arch, scaler_known, img_size)
    with hub.atomic_folder(out_dir) as tmp:
        hub.write_checkpoint(model, tmp, card=_card(entry, arch, training), load_name=os.fspath(out_dir))
        max_abs_diff = _verify(tmp, model, original.head)
    return Conversion(path=out_dir, config=model.config, training=training, max_abs_diff=max_abs_diff)
