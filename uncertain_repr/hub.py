"""Checkpoint folders (one folder = one Hugging Face Hub repo): ``save_pretrained``, ``load_model``, ``push_to_hub``.

Layout of a folder::

    config.json                    timm's config (architecture, num_classes, num_features, model_args,
                                   pretrained_cfg) + an "uncertain_repr" block (method, method_args, ...)
    model.safetensors              the backbone under plain timm keys: timm.create_model("local-dir:<folder>")
    uncertainty_head.safetensors   the method's parameters and buffers
    README.md                      the model card

Writes are atomic (a temporary folder next to the target, renamed into place). Loading is strict:
every key of both weight files must match the model rebuilt from ``config.json``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from ._validation import check_device
from .pretrained import (
    PREPROCESSING_PRESETS,
    PretrainedEntry,
    get_pretrained,
    is_pretrained,
    legacy_data_config,
    list_pretrained,
)
from .version import __version__

CONFIG_NAME = "config.json"
BACKBONE_WEIGHTS = "model.safetensors"
HEAD_WEIGHTS = "uncertainty_head.safetensors"
MODEL_CARD = "README.md"
CHECKPOINT_FILES = (CONFIG_NAME, BACKBONE_WEIGHTS, HEAD_WEIGHTS, MODEL_CARD)
CONFIG_KEY = "uncertain_repr"
FORMAT_VERSION = 1
HUB_PREFIX = "hf-hub:"
LOCAL_PREFIX = "local-dir:"
LIBRARY_NAME = "uncertain-repr"
WEIGHTS_SHA256_KEY = "weights_sha256"  # in the config block: {weight file name: sha256 hex}
# A git branch/tag name or commit hash as the Hub accepts it: no leading "/", "." or "-", no "\\".
_REVISION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/+-]*")
_REQUIRED_BLOCK_KEYS = ("format_version", "method", "method_args", "stopgrad", "embed_dim", "num_classes")
_OPTIONAL_BLOCK_KEYS = ("library_version", "backbone", "backbone_args", "backbone_weights", "training", "weights_sha256")

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class ModelCard:
    """What the generated ``README.md`` says beyond the config; every field is optional.

    ``training`` (provenance: source file, epoch, loss, ...) is also stored in ``config.json``.
    """

    title: Optional[str] = None
    description: str = ""
    license: str = "apache-2.0"
    license_note: str = ""
    paper: str = ""
    source: str = ""
    metrics: Dict[str, float] = field(default_factory=dict)
    training: Dict[str, Any] = field(default_factory=dict)
    tags: Tuple[str, ...] = ()
    body: str = ""
    """Free Markdown (e.g. a recipe and an evaluation table) placed before the license section."""
    load_name: Optional[str] = None
    """What "How to use" passes to ``load_model`` (e.g. a registered name); default: where it was saved."""


# ------------------------------------------------------------------------------------------ saving
def save_pretrained(
    model: nn.Module, path: PathLike, *, card: Optional[ModelCard] = None, backbone_weights: Optional[str] = None
) -> Path:
    """Write ``model`` (an ``Uncertainizer`` on a timm backbone) as a checkpoint folder at ``path``.

    ``backbone_weights`` names installed package weights
    (:data:`uncertain_repr.backbone_weights.PACKAGE_WEIGHTS`) that the backbone equals exactly:
    then ``model.safetensors`` is left out and ``load_model`` takes the backbone from that package
    (how a small head ships inside a Python package). An existing ``path`` is replaced only if it
    holds nothing but checkpoint files. Returns ``path``.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or path of the checkpoint folder, got {type(path).__name__}")
    if card is not None and not isinstance(card, ModelCard):
        raise TypeError(f"card must be an uncertain_repr.hub.ModelCard, got {type(card).__name__}")
    if backbone_weights is not None and not isinstance(backbone_weights, str):
        raise TypeError(f"backbone_weights must be a package weights name (str), got {type(backbone_weights).__name__}")
    path = Path(path)
    check_saveable(model)
    with atomic_folder(path) as tmp:
        write_checkpoint(model, tmp, card=card, load_name=os.fspath(path), backbone_weights=backbone_weights)
    return path


def check_backbone_is(model: nn.Module, source: str) -> None:
    """``ValueError`` unless ``model``'s backbone equals the package weights ``source`` bit for bit."""
    import timm

    from .backbone_weights import load_backbone_weights

    reference = timm.create_model(model.backbone_name, pretrained=False, **model.backbone_args)
    load_backbone_weights(reference, source)
    ours, theirs = model.backbone.state_dict(), reference.state_dict()
    differing = [k for k in theirs if k not in ours or not torch.equal(ours[k].cpu(), theirs[k])]
    if differing or set(ours) != set(theirs):
        raise ValueError(
            f"the backbone is not the package weights {source!r} (differing: {', '.join(differing[:5]) or 'keys'}); "
            "save it with its own weights (backbone_weights=None)"
        )


def check_saveable(model: nn.Module) -> None:
    """``TypeError``/``ValueError`` if ``model`` cannot be rebuilt from a config (custom parts, bad args)."""
    from .methods import get_method_class
    from .model import Uncertainizer

    if not isinstance(model, Uncertainizer):
        raise TypeError(f"model must be an Uncertainizer, got {type(model).__name__}")
    backbone = model.backbone
    arch = (getattr(backbone, "pretrained_cfg", None) or {}).get("architecture")
    if arch is None or not callable(getattr(backbone, "forward_head", None)):
        raise ValueError(
            f"only timm backbones can be saved as a checkpoint folder, got {type(backbone).__name__}; "
            "save model.state_dict() with safetensors yourself"
        )
    if model._features is not None or model.extra_classifier is not None:
        raise ValueError("a model built with features= or classifier= cannot be rebuilt from a config; not saveable")
    cls = type(model.method)
    try:
        registered = get_method_class(model.method_name)
    except ValueError:
        registered = None
    if registered is not cls:
        raise ValueError(
            f"method {cls.__name__} is not registered under its name {model.method_name!r}; "
            "decorate it with @uncertain_repr.register_method(name) so it can be rebuilt"
        )
    for what, args in (("method_args", model.method_args), ("backbone_args", model.backbone_args)):
        for key, value in args.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise ValueError(f"{what}[{key!r}] = {value!r} is not JSON-serialisable; cannot save it") from None
    check_method_args_current(model)


def check_method_args_current(model: nn.Module) -> None:
    """``ValueError`` unless ``model.method_args`` rebuild ``model.method``: same state-dict keys and shapes,
    and the same value of every constructor argument the method keeps under its own name (``correction``,
    ``gp_mean_field_factor``, ...). Otherwise the checkpoint would fail to load, or load with other values
    (a hyperparameter changed after building, a method instance built with arguments of its own)."""
    import inspect

    from .methods import create_method

    with torch.random.fork_rng(devices=[]):  # rebuilding draws initial weights: leave the caller's RNG alone
        rebuilt = create_method(
            model.method_name, embed_dim=model.embed_dim, num_classes=model.num_classes, **model.method_args
        )
    ours, theirs = vars(model.method), vars(rebuilt)
    plain = (bool, int, float, str, tuple, list, type(None))
    changed = [
        f"model.method.{name} is {ours[name]!r}, rebuilt {theirs[name]!r}"
        for name in inspect.signature(type(model.method).__init__).parameters
        if name in ours and name in theirs and isinstance(ours[name], plain) and ours[name] != theirs[name]
    ]
    # (tensors that only ``attach`` creates, from the backbone, are not in ``rebuilt``: load_model checks those)
    state = model.method.state_dict()
    changed += [
        f"{key} {tuple(state[key].shape) if key in state else 'missing'}, rebuilt {tuple(value.shape)}"
        for key, value in rebuilt.state_dict().items()
        if key not in state or state[key].shape != value.shape
    ]
    if changed:
        raise ValueError(
            f"model.method_args {model.method_args} do not rebuild model.method ({'; '.join(changed[:5])}): the "
            "checkpoint would not load, or load with other values. Build the model with the method's name and all "
            f"its arguments (ur.Uncertainizer(backbone, {model.method_name!r}, **args)), or record a changed "
            "argument in model.method_args before saving"
        )


def write_checkpoint(
    model: nn.Module,
    folder: Path,
    *,
    card: Optional[ModelCard] = None,
    load_name: str = "path/to/checkpoint",
    backbone_weights: Optional[str] = None,
) -> None:
    """Write the checkpoint files into the existing (empty) ``folder``; ``load_name`` goes into the card.

    With ``backbone_weights`` (see :func:`save_pretrained`) the backbone file is left out.
    """
    import timm.data
    from timm.models._hub import save_config_for_hf  # timm's writer of the config it reads back

    check_saveable(model)
    if backbone_weights is not None:
        check_backbone_is(model, backbone_weights)
    card = card or ModelCard()
    block = {
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        **model.config,
        **({"backbone_weights": backbone_weights} if backbone_weights else {}),
        **({"training": card.training} if card.training else {}),
    }
    json.dumps(block)  # fail before writing anything if provenance is not JSON
    # The tensors are written here, contiguous, so that a channels-last model saves too; the
    # sha256 of each weight file goes into the config and is checked by load_model.
    digests = {}
    if backbone_weights is None:
        digests[BACKBONE_WEIGHTS] = write_safetensors(model.backbone, folder / BACKBONE_WEIGHTS)
    digests[HEAD_WEIGHTS] = write_safetensors(model.method, folder / HEAD_WEIGHTS)
    block[WEIGHTS_SHA256_KEY] = digests
    # timm's own config writer (what `timm.create_model("hf-hub:...")` reads), with the preprocessing the
    # model's transforms use: Uncertainizer(pretrained_cfg=...) replaces the backbone's own
    data_config = None if model._pretrained_cfg is None else timm.data.resolve_model_data_config(model)
    save_config_for_hf(model.backbone, folder / CONFIG_NAME, model_config={CONFIG_KEY: block}, data_config=data_config)
    config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    (folder / MODEL_CARD).write_text(render_model_card(config, card, load_name), encoding="utf-8")


def write_safetensors(module: nn.Module, path: Path) -> str:
    """``module.state_dict()`` as contiguous CPU tensors in a safetensors file; returns its sha256.

    Written with Python's ``open``, so the file mode follows the umask like every other file.
    """
    import safetensors.torch

    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    data = safetensors.torch.save(tensors, metadata={"format": "pt"})
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _check_replaceable(path: Path) -> None:
    if not path.exists():
        return
    if not path.is_dir():
        raise ValueError(f"path {path} exists and is not a folder; refusing to replace it")
    foreign = sorted(p.name for p in path.iterdir() if p.name not in CHECKPOINT_FILES)
    if foreign:
        raise ValueError(
            f"path {path} exists and holds files that are not part of a checkpoint ({', '.join(foreign[:10])}); "
            "refusing to replace it: choose a new or empty folder"
        )


def _fsync_tree(folder: Path) -> None:
    for file in folder.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success it replaces ``path`` in one rename.

    On any error the temporary folder is removed and ``path`` is left as it was.
    """
    path = Path(path)
    _check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        yield tmp
        _fsync_tree(tmp)
        _check_replaceable(path)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                raise
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------ model card
def _yaml_list(name: str, values) -> str:
    return f"{name}:\n" + "".join(f"- {json.dumps(v)}\n" for v in values)


def _table(rows: Mapping[str, Any]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows.items()]
    return "\n".join(lines) + "\n"


def render_model_card(config: Dict[str, Any], card: ModelCard, load_name: str) -> str:
    """The ``README.md`` of a checkpoint: YAML front matter (license, library_name, tags) and a description."""
    block = config[CONFIG_KEY]
    load_name = card.load_name or load_name
    pretrained_cfg = config.get("pretrained_cfg", {})
    arch = config["architecture"] + (f".{pretrained_cfg['tag']}" if pretrained_cfg.get("tag") else "")
    tags = dict.fromkeys([LIBRARY_NAME, "timm", "uncertainty-quantification", block["method"], *card.tags])
    timm_name = load_name if load_name.startswith(HUB_PREFIX) else LOCAL_PREFIX + load_name
    method_args = ", ".join(f"{k}={v!r}" for k, v in block["method_args"].items())
    details = {
        "Backbone (timm)": f"`{arch}`",
        "Embedding width D": block["embed_dim"],
        "Classifier classes": block["num_classes"],
        "Uncertainty method": f"`{block['method']}`" + (f" ({method_args})" if method_args else ""),
        "Stop-gradient into the backbone": "yes" if block["stopgrad"] else "no",
    }
    if card.paper:
        details["Paper"] = card.paper
    if card.source:
        details["Source of the weights"] = card.source
    preprocessing = {
        k: pretrained_cfg[k] for k in ("input_size", "interpolation", "crop_pct", "mean", "std") if k in pretrained_cfg
    }
    parts = [
        "---\n",
        f"license: {json.dumps(card.license)}\n",
        f"library_name: {LIBRARY_NAME}\n",
        "pipeline_tag: image-feature-extraction\n",
        _yaml_list("tags", tags),
        "---\n\n",
        f"# {card.title or arch + ' + ' + block['method']}\n\n",
        f"{card.description}\n\n" if card.description else "",
        "An uncertainty-aware image representation: `embedding, uncertainty = model(images)` gives a "
        "`[B, D]` embedding and a `[B]` uncertainty (higher = more uncertain).\n\n",
        "## Model details\n\n",
        _table(details),
        "\n## How to use\n\n```python\nimport timm.data\nimport uncertain_repr as ur\n\n",
        f"model = ur.load_model({load_name!r})\n",
        "transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))\n",
        "embedding, uncertainty = model(transform(image).unsqueeze(0))\n```\n\n",
        (
            f"The backbone weights come from the installed package `{block['backbone_weights']}` "
            "(checked by SHA-256 when loading).\n\n"
            if block.get("backbone_weights")
            else f"The backbone alone loads with timm: `timm.create_model({timm_name!r}, pretrained=True)`.\n\n"
        ),
        (
            f"The SHA-256 of each weight file is recorded in `config.json` (`{CONFIG_KEY}.{WEIGHTS_SHA256_KEY}`) "
            "and checked when loading; weights holding NaN or infinity are refused.\n\n"
            if block.get(WEIGHTS_SHA256_KEY)
            else ""
        ),
        "## Preprocessing (the model's `pretrained_cfg`)\n\n",
        _table({k: f"`{v}`" for k, v in preprocessing.items()}),
    ]
    if card.training:
        parts += ["\n## Training and provenance\n\n", _table({k: f"`{v}`" for k, v in card.training.items() if v is not None})]
    if card.metrics:
        parts += ["\n## Metrics\n\n", "| metric | value |\n|---|---|\n"]
        parts += [f"| {k} | {v:.4f} |\n" if isinstance(v, float) else f"| {k} | {v} |\n"
                  for k, v in card.metrics.items()]
    if card.body:
        parts += ["\n", card.body.strip() + "\n"]
    parts += ["\n## License\n\n", f"{card.license}. {card.license_note}".rstrip() + "\n"]
    return "".join(parts)


# ------------------------------------------------------------------------------------------ loading
def read_safetensors(path: Path, sha256: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """All tensors of ``path`` on the CPU, checked: ``ValueError`` naming the file if its sha256 is not
    ``sha256`` (when given), if it is truncated or corrupt, or if a tensor holds NaN or infinity."""
    import safetensors.torch
    from safetensors import SafetensorError

    data = Path(path).read_bytes()
    try:
        tensors = safetensors.torch.load(data)
    except SafetensorError as err:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {err}") from None
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise ValueError(f"{path} has sha256 {digest}, but config.json records {sha256}: the file was "
                             "changed or damaged after it was saved; download or copy it again")
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{path} holds NaN or infinite values in {', '.join(sorted(bad)[:5])}: refusing to load "
                         "weights that would make every output NaN")
    return tensors


def recorded_sha256(block: Mapping[str, Any], name: str, config_path: Path) -> Optional[str]:
    """The sha256 ``config.json`` records for the weight file ``name`` (``None`` in configs written before
    checksums were recorded); ``ValueError`` if the record is malformed."""
    digests = block.get(WEIGHTS_SHA256_KEY)
    if digests is None:
        return None
    digest = digests.get(name) if isinstance(digests, dict) else None
    if not isinstance(digest, str) or len(digest) != 64:
        raise ValueError(f"{config_path}: {CONFIG_KEY}.{WEIGHTS_SHA256_KEY} has no valid sha256 for {name}")
    return digest


def load_state_strict(module: nn.Module, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``tensors`` into ``module``; ``ValueError`` listing missing, unexpected and mis-shaped keys."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [
        f"{k} (file {tuple(tensors[k].shape)}, model {tuple(expected[k].shape)})"
        for k in sorted(set(expected) & set(tensors))
        if tensors[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        found = (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
        problems = [f"{label}: {', '.join(keys)}" for label, keys in found if keys]
        raise ValueError(f"{source} does not match the model: " + "; ".join(problems))
    module.load_state_dict(tensors, strict=True)


def read_config(folder: Path) -> Dict[str, Any]:
    """``config.json`` of a checkpoint folder, with its ``uncertain_repr`` block checked."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {folder} is not a checkpoint folder")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    block = config.get(CONFIG_KEY)
    if not isinstance(block, dict):
        raise ValueError(
            f"{path} has no {CONFIG_KEY!r} block: it is a plain timm checkpoint; load its backbone with "
            f"timm.create_model('local-dir:{folder}', pretrained=True) and wrap it in ur.Uncertainizer"
        )
    missing = [k for k in _REQUIRED_BLOCK_KEYS if k not in block]
    if missing:
        raise ValueError(f"{path}: the {CONFIG_KEY!r} block lacks {', '.join(missing)}")
    check_architecture(config, path)
    if block["format_version"] > FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format {block['format_version']}, newer than this uncertain_repr "
            f"{__version__} reads ({FORMAT_VERSION}); upgrade uncertain_repr"
        )
    unknown = sorted(set(block) - set(_REQUIRED_BLOCK_KEYS) - set(_OPTIONAL_BLOCK_KEYS))
    if unknown:
        raise ValueError(
            f"{path}: the {CONFIG_KEY!r} block has keys this uncertain_repr {__version__} does not read: "
            f"{', '.join(unknown)} (a method's arguments go in method_args); fix the config or upgrade uncertain_repr"
        )
    return config


def check_architecture(config: Mapping[str, Any], path: Path) -> None:
    """``ValueError`` naming ``path`` unless ``config["architecture"]`` is a timm model name."""
    import timm

    arch = config.get("architecture")
    if not isinstance(arch, str) or not arch:
        raise ValueError(f"{path} has no 'architecture' (the timm model name of the backbone)")
    if not timm.is_model(arch):
        raise ValueError(f"{path}: architecture {arch!r} is not a timm model in the installed timm "
                         f"{timm.__version__}; upgrade timm or fix the config")


def load_folder(folder: PathLike, *, head_folder: Optional[PathLike] = None) -> nn.Module:
    """Rebuild the ``Uncertainizer`` stored in a local checkpoint folder (CPU, eval mode).

    ``head_folder``: where ``uncertainty_head.safetensors`` is instead (a registered model whose entry
    names ``head_from``); it must have the SHA-256 that ``folder``'s config records.
    """
    import timm

    from .model import Uncertainizer

    folder = Path(folder)
    block = read_config(folder)[CONFIG_KEY]
    if head_folder is not None and (folder / HEAD_WEIGHTS).exists():
        raise ValueError(f"{folder} holds its own {HEAD_WEIGHTS}, but its registry entry takes the head from "
                         f"{head_folder}: ship one of them, not both")
    files = {BACKBONE_WEIGHTS: folder / BACKBONE_WEIGHTS, HEAD_WEIGHTS: Path(head_folder or folder) / HEAD_WEIGHTS}
    # A folder shipped inside the package may leave the backbone to an installed weights package.
    package_weights = block.get("backbone_weights")
    if package_weights and files[BACKBONE_WEIGHTS].exists():
        raise ValueError(f"{folder / CONFIG_NAME} takes the backbone from the package weights {package_weights!r}, but "
                         f"the folder also holds {BACKBONE_WEIGHTS}, which would be ignored: keep one of them")
    needed = (HEAD_WEIGHTS,) if package_weights else (BACKBONE_WEIGHTS, HEAD_WEIGHTS)
    for name in needed:
        if not files[name].is_file():
            entries = [get_pretrained(n) for n in list_pretrained()]
            shared = [e.name for e in entries if e.head_from and package_folder(e).resolve() == folder.resolve()]
            hint = f"; it shares another model's head: load it by its registered name {shared[0]!r}" if shared else ""
            raise FileNotFoundError(f"{files[name]} not found: the checkpoint folder is incomplete{hint}")
    backbone_args = confined_backbone_args(folder, block.get("backbone_args") or {})
    backbone = timm.create_model(f"{LOCAL_PREFIX}{folder}", pretrained=False, **backbone_args)
    if package_weights:
        from .backbone_weights import load_backbone_weights

        load_backbone_weights(backbone, package_weights)
    try:
        model = Uncertainizer(
            backbone, block["method"], stopgrad=block["stopgrad"], embed_dim=block["embed_dim"], **block["method_args"]
        )
    except (TypeError, ValueError) as err:  # the message names an argument: say it came from the config
        raise type(err)(f"{folder / CONFIG_NAME}: its {CONFIG_KEY!r} block (method, method_args, stopgrad, embed_dim) "
                        f"does not rebuild a model: {err}; fix the config or save the model again") from None
    if model.num_classes != block["num_classes"]:
        raise ValueError(
            f"{folder / CONFIG_NAME}: the rebuilt backbone has {model.num_classes} classes, the config says "
            f"{block['num_classes']}"
        )
    model.backbone_name = block.get("backbone")
    model.backbone_args = backbone_args
    parts = ((HEAD_WEIGHTS, model.method),) if package_weights else ((BACKBONE_WEIGHTS, model.backbone),
                                                                     (HEAD_WEIGHTS, model.method))
    for name, module in parts:
        digest = recorded_sha256(block, name, folder / CONFIG_NAME)
        tensors = read_safetensors(files[name], digest)
        cast_to_saved_dtype(module, tensors, str(files[name]))
        load_state_strict(module, tensors, str(files[name]))
    return model.eval()


def cast_to_saved_dtype(module: nn.Module, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Give ``module`` the floating dtype its saved ``tensors`` have (a float64 or bfloat16 model loads as
    one, not as float32 with other outputs); ``ValueError`` if the file mixes dtypes the rebuilt module
    does not have in the same places."""
    expected = module.state_dict()
    floating = {k: v.dtype for k, v in tensors.items() if v.is_floating_point() and k in expected}
    if all(expected[k].dtype == dtype for k, dtype in floating.items()):
        return
    if len(set(floating.values())) == 1 and all(expected[k].is_floating_point() for k in floating):
        module.to(next(iter(floating.values())))
        return
    mismatched = [f"{k} (file {d}, model {expected[k].dtype})" for k, d in sorted(floating.items()) if expected[k].dtype != d]
    raise ValueError(f"{source} mixes floating dtypes the rebuilt model does not have: {', '.join(mismatched[:5])}")


def confined_backbone_args(folder: Path, backbone_args: Mapping[str, Any]) -> Dict[str, Any]:
    """``backbone_args`` of ``folder``'s config, with a ``checkpoint_path`` resolved inside ``folder``.

    ``ValueError`` if it is absolute or leads outside the folder: a checkpoint reads only its own files.
    """
    args = dict(backbone_args)
    if "checkpoint_path" in args:
        value = args["checkpoint_path"]
        root = folder.resolve()
        target = (root / str(value)).resolve() if isinstance(value, str) and value else None
        if target is None or Path(str(value)).is_absolute() or not target.is_relative_to(root):
            raise ValueError(f"{folder / CONFIG_NAME}: backbone_args.checkpoint_path {value!r} is not a file "
                             f"inside the checkpoint folder; a checkpoint may only read its own files")
        args["checkpoint_path"] = str(target)
    return args


def conversion_instructions(entry: PretrainedEntry) -> str:
    """How to obtain and convert the original weights of a registered model that has no downloadable copy."""
    return (
        f"{entry.name!r} cannot be downloaded automatically: its weights are published as {entry.source_note}. "
        "To use it:\n"
        f"  1. download that file from {entry.source_url}\n"
        f"  2. uncertain-repr convert path/to/original.pth.tar pvu/{entry.name} --arch {entry.name}\n"
        f"  3. model = uncertain_repr.load_model('pvu/{entry.name}')\n"
        f"Paper: {entry.paper}. License: {entry.license}. {entry.license_note}"
    )


def check_hub_name(repo_id: str, revision: Optional[str]) -> None:
    """``ValueError`` unless ``repo_id`` is ``org/name`` and ``revision`` a branch, tag or commit name
    (no absolute or ``..`` paths: a Hub name never resolves to a local folder)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"{HUB_PREFIX}{repo_id!r} is not a Hub repo id (org/name): {err}") from None
    if revision is not None and (
        not _REVISION.fullmatch(revision) or ".." in revision or "//" in revision or revision.endswith("/")
    ):
        raise ValueError(f"revision {revision!r} is not a Hub branch, tag or commit name")


def _is_hub_name(text: str) -> bool:
    try:
        check_hub_name(text, None)
    except ValueError:
        return False
    return True


def _split_revision(repo: str, revision: Optional[str]) -> Tuple[str, Optional[str]]:
    repo_id, sep, rev = repo.partition("@")
    if not repo_id or (sep and not rev) or "@" in rev:
        raise ValueError(f"a Hub checkpoint is named 'hf-hub:org/name[@revision]', got {HUB_PREFIX + repo!r}")
    if sep and revision is not None and revision != rev:
        raise ValueError(f"two revisions given: {rev!r} in the name and revision={revision!r}")
    check_hub_name(repo_id, rev or revision)
    return repo_id, rev or revision


def _download(repo: str, revision: Optional[str], cache_dir: Optional[PathLike]) -> Path:
    from huggingface_hub import snapshot_download

    repo_id, revision = _split_revision(repo, revision)
    from .offline import check_hub_download

    check_hub_download(
        repo_id, (CONFIG_NAME,), revision=revision, cache_dir=cache_dir, what=f"checkpoint {HUB_PREFIX}{repo}",
        how="load it once with network access, or copy the checkpoint folder here and load the folder",
    )
    return Path(
        snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=list(CHECKPOINT_FILES),
            library_name=LIBRARY_NAME,
            library_version=__version__,
        )
    )


def resolve_checkpoint(
    name_or_path: PathLike, *, revision: Optional[str] = None, cache_dir: Optional[PathLike] = None
) -> Path:
    """The local checkpoint folder for a registered name, ``hf-hub:org/name[@rev]`` or a folder path."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a str or path, got {type(name_or_path).__name__}")
    text = os.fspath(name_or_path)
    if text.startswith(HUB_PREFIX):
        return _download(text[len(HUB_PREFIX) :], revision, cache_dir)
    if isinstance(name_or_path, str) and is_pretrained(text):
        if Path(text).is_dir():  # the registered name wins (timm's rule); say so, the folder may be the user's own
            warnings.warn(f"{text!r} is a registered model and also a folder in {Path.cwd()}; loading the registered "
                          f"model (write './{text}' or '{LOCAL_PREFIX}{text}' for the folder)", stacklevel=3)
        entry = get_pretrained(text)
        if entry.hf_hub_id is not None:
            return _download(entry.hf_hub_id, revision, cache_dir)
        if revision is not None:
            raise ValueError(f"revision= applies to Hub checkpoints only; {text!r} has no Hub repo")
        if entry.package_files is not None:
            return package_folder(entry)
        raise FileNotFoundError(conversion_instructions(entry))
    if revision is not None:
        raise ValueError(f"revision= applies to Hub checkpoints only ('hf-hub:org/name'), not to {text!r}")
    path = Path(text[len(LOCAL_PREFIX) :] if text.startswith(LOCAL_PREFIX) else text)
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(
            f"{path} is a file; load_model needs a checkpoint folder (for a checkpoint of the original "
            "research code run `uncertain-repr convert`)"
        )
    if os.sep in text or "/" in text or text.startswith(LOCAL_PREFIX):
        hub = text if not text.startswith(LOCAL_PREFIX) and _is_hub_name(text) else "org/name"
        raise FileNotFoundError(
            f"name_or_path {text!r}: checkpoint folder {path.absolute()} not found; for a Hub repo write "
            f"'{HUB_PREFIX}{hub}', for a registered name see ur.list_pretrained()"
        )
    close = difflib.get_close_matches(text, list_pretrained(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; registered: {', '.join(list_pretrained())}"
    raise ValueError(f"{text!r} is not a registered pretrained model, a folder, or 'hf-hub:org/name'{hint}")


def package_folder(entry: PretrainedEntry) -> Path:
    """The checkpoint folder a registered ``entry`` ships inside this package (``entry.package_files``)."""
    return Path(__file__).parent / entry.package_files


def shared_head_folder(name_or_path: PathLike) -> Optional[Path]:
    """The folder holding the head of a registered name whose entry names ``head_from``, else ``None``."""
    if not (isinstance(name_or_path, str) and is_pretrained(name_or_path)):
        return None
    head_from = get_pretrained(name_or_path).head_from
    return None if head_from is None else package_folder(get_pretrained(head_from))


def set_preprocessing(model: nn.Module, preset: str) -> None:
    """Make ``preset`` (``model`` or ``legacy``) the backbone's ``pretrained_cfg`` (what timm's transforms read)."""
    if preset not in PREPROCESSING_PRESETS:
        raise ValueError(f"preprocessing must be one of {PREPROCESSING_PRESETS}, got {preset!r}")
    if preset == "legacy":
        cfg = {**model.backbone.pretrained_cfg, **legacy_data_config(model)}
        model.backbone.pretrained_cfg = model.backbone.default_cfg = cfg


def load_model(
    name_or_path: PathLike,
    *,
    device: Optional[Union[str, torch.device]] = None,
    revision: Optional[str] = None,
    cache_dir: Optional[PathLike] = None,
    preprocessing: str = "model",
) -> nn.Module:
    """Load a pretrained ``Uncertainizer`` (eval mode): ``embedding, uncertainty = model(x)``.

    Args:
        name_or_path: a registered name (:func:`list_pretrained`), ``hf-hub:org/name[@revision]``
            (downloaded through the Hugging Face cache; works offline once cached), or a local
            checkpoint folder (``local-dir:`` prefix optional).
        device: where to put the model (default: CPU).
        revision: Hub branch, tag or commit (same as ``@revision`` in the name).
        cache_dir: Hugging Face cache folder (default: ``HF_HUB_CACHE``).
        preprocessing: ``"model"`` keeps the checkpoint's own ``pretrained_cfg``; ``"legacy"``
            sets the original research code's eval preprocessing (ImageNet mean/std, bicubic,
            crop 0.875, 224 px), which all published URL/PVU numbers used.
    """
    if preprocessing not in PREPROCESSING_PRESETS:
        raise ValueError(f"preprocessing must be one of {PREPROCESSING_PRESETS}, got {preprocessing!r}")
    if revision is not None and not isinstance(revision, str):
        raise TypeError(f"revision must be a str (Hub branch, tag or commit), got {type(revision).__name__}")
    if device is not None:
        device = check_device(device)
    folder = resolve_checkpoint(name_or_path, revision=revision, cache_dir=cache_dir)
    model = load_folder(folder, head_folder=shared_head_folder(name_or_path))
    set_preprocessing(model, preprocessing)
    return model if device is None else model.to(device)


# ------------------------------------------------------------------------------------------ Hub upload
def push_to_hub(
    model: nn.Module,
    repo_id: str,
    *,
    token: Optional[str] = None,
    private: bool = False,
    revision: Optional[str] = None,
    create_pr: bool = False,
    commit_message: str = "Upload uncertain_repr checkpoint",
    card: Optional[ModelCard] = None,
) -> Any:
    """Upload ``model`` as a checkpoint folder to the Hub repo ``repo_id`` (created if needed).

    Returns ``huggingface_hub``'s commit info. The folder is written by :func:`save_pretrained`
    into a temporary directory, removed afterwards.
    """
    from huggingface_hub import HfApi

    check_saveable(model)
    api = HfApi(token=token, library_name=LIBRARY_NAME, library_version=__version__)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory(prefix="uncertain_repr-push-") as tmp:
        folder = Path(tmp) / "checkpoint"
        folder.mkdir()
        write_checkpoint(model, folder, card=card, load_name=HUB_PREFIX + repo_id)
        return api.upload_folder(
            repo_id=repo_id, folder_path=folder, commit_message=commit_message, revision=revision, create_pr=create_pr
        )
