"""The original research code's flags, as one table: original flag -> setting here.

Shared by ``uncertain-repr train``, ``cache`` and ``benchmark`` so that a command line of the
original ``train.py`` / ``create_cached_dataset.py`` runs unchanged. Three kinds of entries:

- a :class:`TrainConfig` field name: the flag means the same here (flags named exactly like a field,
  such as ``--lr-base``/``--lr_base``, are not listed: every field is a flag in both spellings);
- :class:`Ignored`: genuinely meaningless here (accepted with a one-line warning saying why);
- :class:`DefaultOnly`: a timm ``train.py`` feature this library does not implement; accepted at
  the original's default value (a no-op, with a warning), an error with any other value.

The original's model-name suffixes (``resnet50hetxl``, ``..._256sngp``, ``resnet50dropout``) and
``--num-heads`` select a method here (:data:`MODEL_SUFFIXES`), ``--unc-module`` names map by
:data:`UNC_MODULES` / :data:`PREDICTIVE_MODES`, and :data:`METHOD_SETTINGS` says which flags become
which method hyperparameter. :func:`resolve_approach` applies all of them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..cli import closest

Nargs = Union[None, str, int]


@dataclass(frozen=True)
class Ignored:
    """An original flag accepted with any value and ignored, because ``reason``."""

    reason: str
    nargs: Nargs = None


@dataclass(frozen=True)
class DefaultOnly:
    """An original flag for a feature not implemented here: fine at its original ``default``."""

    default: Any
    feature: str
    nargs: Nargs = None


Setting = Union[str, Ignored, DefaultOnly]

_NOT_CUDA = "runtime/performance switch of the original's CUDA loop; this library picks its own"
_NO_PREFETCH = "there is no prefetcher here (normalisation happens in the transform)"
_LOGGING = "logging/checkpoint bookkeeping of the original; here see --output and summary.csv"
_CROPS = ("validation during training runs no crop test; `uncertain-repr benchmark` does "
          "(crop range 0.1-0.75, `WithCrops(low=, high=)` in Python)")
_MODEL_CHECK = "the original re-checked this itself; here the model's own configuration is used"

#: original option string -> setting here (see the module docstring for the three kinds).
ORIGINAL_FLAGS: Dict[str, Setting] = {
    # --- renamed / new meaning here
    "--test-split": "test_split",
    "--test_split": "test_split",
    "--img-size": "img_size",
    "--num-classes": "num_classes",
    "--dr": "decay_rate",
    # --- meaningless here: accepted with a warning
    "--local_rank": Ignored("torchrun sets LOCAL_RANK; the flag of torch.distributed.launch is not needed"),
    "--log-interval": Ignored(_LOGGING),
    "--recovery-interval": Ignored("every epoch is saved and resumes bit-exactly (--resume)"),
    "--checkpoint-hist": Ignored("the last and the best checkpoint folders are kept"),
    "--experiment": Ignored("--output names the run folder"),
    "--wandb-key": Ignored("log in with `wandb login` (the key is never passed on the command line)"),
    "--save-images": Ignored(_LOGGING),
    "--pin-mem": Ignored(_NOT_CUDA),
    "--no-prefetcher": Ignored(_NO_PREFETCH),
    "--use-multi-epochs-loader": Ignored(_NOT_CUDA),
    "--worker-seeding": Ignored("workers are always seeded from --seed, rank and sample index"),
    "--amp-impl": Ignored("only native torch AMP exists here (no apex)"),
    "--no-ddp-bb": Ignored(_NOT_CUDA),
    "--dist-bn": Ignored("frozen BatchNorm stays in eval mode; trainable BN is synchronised by DDP"),
    "--channels-last": Ignored(_NOT_CUDA),
    "--fuser": Ignored(_NOT_CUDA),
    "--fast-norm": Ignored(_NOT_CUDA),
    "--grad-checkpointing": Ignored(_NOT_CUDA),
    "--torchscript": Ignored(_NOT_CUDA),
    "--torchcompile": Ignored(_NOT_CUDA, nargs="?"),
    "--aot-autograd": Ignored(_NOT_CUDA),
    "--dataset-download": Ignored("datasets are never downloaded at run time (no network)"),
    "--max-num-samples": Ignored("the ID+OOD mixed metrics are computed by `uncertain-repr benchmark --upstream`"),
    "--crop_min": Ignored(_CROPS),
    "--crop_max": Ignored(_CROPS),
    "--in-chans": Ignored(_MODEL_CHECK),
    "--start-epoch": Ignored("--resume continues at the saved epoch"),
    "--no-resume-opt": Ignored("--resume always restores the optimizer (bit-exact resume)"),
    # --- timm train.py features not implemented here: only their (no-op) default is accepted
    "--tta": DefaultOnly(0, "test-time augmentation"),
    "--model-ema": DefaultOnly(False, "model EMA"),
    "--model-ema-force-cpu": DefaultOnly(False, "model EMA"),
    "--model-ema-decay": DefaultOnly(0.9998, "model EMA"),
    "--mixup": DefaultOnly(0.0, "mixup"),
    "--cutmix": DefaultOnly(0.0, "cutmix"),
    "--cutmix-minmax": DefaultOnly(None, "cutmix", nargs="+"),
    "--mixup-prob": DefaultOnly(1.0, "mixup"),
    "--mixup-switch-prob": DefaultOnly(0.5, "mixup"),
    "--mixup-mode": DefaultOnly("batch", "mixup"),
    "--mixup-off-epoch": DefaultOnly(0, "mixup"),
    "--aa": DefaultOnly(None, "AutoAugment"),
    "--aug-repeats": DefaultOnly(0, "repeated augmentation"),
    "--aug-splits": DefaultOnly(0, "augmentation splits"),
    "--jsd-loss": DefaultOnly(False, "the JSD + CE loss of AugMix"),
    "--bce-loss": DefaultOnly(False, "binary cross-entropy"),
    "--bce-target-thresh": DefaultOnly(None, "binary cross-entropy"),
    "--reprob": DefaultOnly(0.0, "random erasing"),
    "--remode": DefaultOnly("pixel", "random erasing"),
    "--recount": DefaultOnly(1, "random erasing"),
    "--resplit": DefaultOnly(False, "random erasing"),
    "--no-aug": DefaultOnly(False, "disabling augmentation"),
    "--scale": DefaultOnly([0.08, 1.0], "custom RandomResizedCrop scales", nargs="+"),
    "--ratio": DefaultOnly([0.75, 4.0 / 3.0], "custom RandomResizedCrop ratios", nargs="+"),
    "--hflip": DefaultOnly(0.5, "custom flip probabilities"),
    "--vflip": DefaultOnly(0.0, "custom flip probabilities"),
    "--color-jitter": DefaultOnly(0.4, "custom colour jitter"),
    "--train-interpolation": DefaultOnly("random", "custom training interpolation"),
    "--blur_prob": DefaultOnly(0.0, "training-time blur"),
    "--drop-connect": DefaultOnly(None, "drop connect"),
    "--drop-path": DefaultOnly(None, "drop path"),
    "--drop-block": DefaultOnly(None, "drop block"),
    "--bn-momentum": DefaultOnly(None, "BatchNorm overrides"),
    "--bn-eps": DefaultOnly(None, "BatchNorm overrides"),
    "--sync-bn": DefaultOnly(False, "synchronised BatchNorm"),
    "--split-bn": DefaultOnly(False, "split BatchNorm"),
    "--gp": DefaultOnly(None, "global-pool overrides"),
    "--input-size": DefaultOnly(None, "--input-size (use --img-size)", nargs=3),
    "--crop-pct": DefaultOnly(None, "custom crop_pct"),
    "--mean": DefaultOnly(None, "custom normalisation", nargs="+"),
    "--std": DefaultOnly(None, "custom normalisation", nargs="+"),
    "--interpolation": DefaultOnly("", "custom interpolation"),
    "--opt-eps": DefaultOnly(None, "custom optimizer epsilon"),
    "--opt-betas": DefaultOnly(None, "--opt-betas (use --opt-beta1/--opt-beta2)", nargs="+"),
    "--clip-mode": DefaultOnly("norm", "gradient clipping modes other than norm"),
    "--layer-decay": DefaultOnly(None, "layer-wise learning-rate decay"),
    "--opt-kwargs": DefaultOnly(None, "extra optimizer kwargs", nargs="*"),
    "--model-kwargs": DefaultOnly(None, "extra model kwargs", nargs="*"),
    "--lr-noise": DefaultOnly(None, "learning-rate noise", nargs="+"),
    "--lr-noise-pct": DefaultOnly(0.67, "learning-rate noise"),
    "--lr-noise-std": DefaultOnly(1.0, "learning-rate noise"),
    "--lr-cycle-mul": DefaultOnly(1.0, "cyclic schedules"),
    "--lr-cycle-decay": DefaultOnly(0.5, "cyclic schedules"),
    "--lr-cycle-limit": DefaultOnly(1, "cyclic schedules"),
    "--lr-k-decay": DefaultOnly(1.0, "k-decay schedules"),
    "--epoch-repeats": DefaultOnly(0.0, "epoch repeats"),
    "--warmup-prefix": DefaultOnly(False, "warm-up prefix"),
    "--cooldown-epochs": DefaultOnly(0, "cool-down epochs"),
    "--patience-epochs": DefaultOnly(10, "plateau patience"),
    "--class-map": DefaultOnly("", "class maps"),
    "--n_few_shot": DefaultOnly(None, "few-shot subsets"),
    "--unc_reg_lambda": DefaultOnly(0.0, "the mean-uncertainty regulariser"),
    "--init_prednet_zero": DefaultOnly(False, "zero-initialised pred-nets (untrainable, url-spec §9.4)"),
    "--reset_classifier": DefaultOnly(False, "re-initialising the classifier"),
    "--reset_optimizer": DefaultOnly(False, "resetting the optimizer every epoch"),
}

#: ``uncertain-repr benchmark``: original flag -> its option here (the original validated zero-shot
#: with train.py's flags, e.g. ``--lr-base 0 --dataset-downstream=[repr/cub, ...] --test_split test``).
BENCHMARK_FLAGS: Dict[str, str] = {
    "--dataset-downstream": "--datasets",
    "--dataset_downstream": "--datasets",
    "--data-dir-downstream": "--data-dir",
    "--test-split": "--split",
    "--test_split": "--split",
    "--dataset_eval": "--upstream",
}

def add_benchmark_aliases(parser: Any, names: Any) -> None:
    """Register :data:`BENCHMARK_FLAGS` on the ``benchmark`` parser (``names`` parses a dataset list)."""
    import argparse

    for flag, option in BENCHMARK_FLAGS.items():
        parser.add_argument(flag, dest=option.lstrip("-").replace("-", "_"), default=argparse.SUPPRESS,
                            type=names if option == "--datasets" else None,
                            help=argparse.SUPPRESS)  # listed in docs/migrating.md


#: model-name suffix of the original's benchmark variants -> method here (the base name is the backbone).
MODEL_SUFFIXES: Dict[str, str] = {"hetxl": "hetxl", "sngp": "sngp", "dropout": "mc-dropout"}

#: original ``--unc-module`` -> method here, for backbones without a suffix and ``--num-heads 1``.
UNC_MODULES: Dict[str, str] = {
    "none": "constant",
    "embed-norm": "embed-norm",
    "class-entropy": "class-entropy",
    "pred-net": "pred-net",
    "prednet": "pred-net",
    "deep-prednet": "deep-pred-net",
}

#: methods with their own predictive distribution: original ``--unc-module`` -> their ``mode``.
PREDICTIVE_MODES: Dict[str, Dict[str, str]] = {
    "hetxl": {"class-entropy": "entropy", "hetxl-det": "log_var_sum"},
    "sngp": {"class-entropy": "entropy"},
    "mc-dropout": {"class-entropy": "entropy", "jsd": "jsd"},
    "ensemble": {"class-entropy": "entropy", "jsd": "jsd"},
}

#: method -> {method argument: TrainConfig field}; a field left at ``None`` keeps the method's default.
METHOD_SETTINGS: Dict[str, Dict[str, str]] = {
    "pred-net": {"width": "unc_width", "depth": "unc_depth"},
    "deep-pred-net": {"width": "unc_width", "depth": "unc_depth"},
    "hetxl": {"rank_V": "rank_V", "c_mult": "c_mult"},
    "sngp": {"gp_input_normalization": "gp_input_normalization", "gp_cov_momentum": "gp_cov_discount_factor",
             "use_spec_norm": "use_spec_norm", "spec_norm_bound": "spec_norm_bound"},
    "ensemble": {"num_heads": "num_heads"},
}

#: fixed method arguments that make a method the original's variant of it.
ORIGINAL_METHOD_ARGS: Dict[str, Dict[str, Any]] = {
    "ensemble": {"init": "random"},  # a fresh Linear(D, K * C), as the original's ShallowEnsembleWrapper
    "mc-dropout": {"drop_rate": 0.0},  # no dropout before the classifier; --drop acts inside the backbone
}

#: loss -> {loss argument: TrainConfig field}; ``"!field"`` negates a boolean field, ``"@attr"`` reads the model.
LOSS_SETTINGS: Dict[str, Dict[str, str]] = {
    "losspred-order": {"lambda_value": "lambda_value", "inv_temp": "inv_temp", "train_classifier": "!freeze_classifier",
                       "leeway": "orderloss_leeway"},
    "losspred": {"lambda_value": "lambda_value", "inv_temp": "inv_temp", "train_classifier": "!freeze_classifier"},
    "riskpred": {"lambda_value": "lambda_value"},
    "cross-entropy": {"label_smoothing": "smoothing"},  # the original ignored --inv_temp for CE
    "elk": {"inv_temp": "inv_temp"},
    "nivmf": {"num_classes": "@num_classes", "embed_dim": "@embed_dim", "inv_temp": "inv_temp",
              "n_samples": "mc_samples", "learnable": "loss_learnable"},
    "hib": {"kappa": "inv_temp", "bias": "hib_add_const", "n_samples": "mc_samples", "learnable": "loss_learnable"},
    "mcinfonce": {"kappa": "inv_temp", "n_samples": "mc_samples", "learnable": "loss_learnable"},
    "infonce": {"kappa": "inv_temp", "learnable": "loss_learnable"},
}

#: fixed loss arguments of the original: its contrastive losses paired the interleaved rows of a
#: batch (two views with ``--ssl``), never rows of equal class labels.
ORIGINAL_LOSS_ARGS: Dict[str, Dict[str, Any]] = {name: {"supervised": False} for name in ("hib", "mcinfonce", "infonce")}

#: losses that need interleaved two-view batches (``--ssl true``) ...
SSL_LOSSES: Tuple[str, ...] = ("mcinfonce", "infonce")
#: ... and losses that read class labels, which a two-view batch does not give.
SUPERVISED_LOSSES: Tuple[str, ...] = ("cross-entropy", "losspred", "losspred-order", "riskpred", "elk", "nivmf")


def loss_hparams(config: Any, model: Any) -> Dict[str, Any]:
    """Keyword arguments of ``losses.create(config.loss, ...)`` by :data:`LOSS_SETTINGS` and
    :data:`ORIGINAL_LOSS_ARGS`, then ``loss_args``.

    ``ValueError`` naming both flags for ``--ssl`` with a loss that reads class labels, or a
    two-view loss without ``--ssl``. The contrastive losses pair the interleaved rows of a batch
    (never class labels): with ``--ssl`` those are two views of an image; HIB without ``--ssl``
    pairs consecutive images, as the original did.
    """
    name = config.loss
    if config.ssl and name in SUPERVISED_LOSSES:
        raise ValueError(f"--ssl true gives two-view batches without class labels, but --loss {name} "
                         f"needs class labels; use --ssl false, or a contrastive loss ({', '.join(SSL_LOSSES)}, hib)")
    if not config.ssl and name in SSL_LOSSES:
        raise ValueError(f"--loss {name} needs two views per image: add --ssl true")
    hp: Dict[str, Any] = dict(ORIGINAL_LOSS_ARGS.get(name, {}))
    for arg, source in LOSS_SETTINGS.get(name, {}).items():
        if source.startswith("@"):
            hp[arg] = getattr(model, source[1:])
        elif source.startswith("!"):
            hp[arg] = not getattr(config, source[1:])
        else:
            hp[arg] = getattr(config, source)
    hp.update(config.loss_args)
    return hp


def loss_notes(config: Any) -> List[str]:
    """One-line warnings about loss flags that the chosen loss does not read (as in the original)."""
    notes = []
    if config.loss == "hib" and not config.ssl:
        notes.append("--loss hib without --ssl: consecutive images of a batch are its positive pairs, "
                     "as in the original; add --ssl true for two views of each image")
    defaults = type(config)()
    read = set(LOSS_SETTINGS.get(config.loss, {}).values()) | set(config.loss_args)
    for name in ("inv_temp", "lambda_value", "hib_add_const", "orderloss_leeway", "smoothing", "mc_samples",
                 "loss_learnable"):
        if name not in read and getattr(config, name) != getattr(defaults, name) and config.loss in LOSS_SETTINGS:
            notes.append(f"--{name} has no effect on --loss {config.loss} (as in the original); ignored")
    return notes


@dataclass
class Approach:
    """What a set of flags builds: backbone name + its timm kwargs, method name + its arguments."""

    backbone: str
    method: str
    method_args: Dict[str, Any] = field(default_factory=dict)
    backbone_args: Dict[str, Any] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)


def split_model_name(name: str) -> Tuple[str, Optional[str]]:
    """``"resnet50hetxl"`` -> ``("resnet50", "hetxl")``; a plain timm name -> ``(name, None)``.

    Raises ``ValueError`` naming ``--model`` (and the closest timm name) for anything else.
    """
    import timm

    if timm.is_model(name):
        return name, None
    arch, dot, tag = name.partition(".")
    for suffix, method in MODEL_SUFFIXES.items():
        if arch.endswith(suffix) and timm.is_model(arch[: -len(suffix)] + dot + tag):
            return arch[: -len(suffix)] + dot + tag, method
    hint = closest(arch, timm.list_models())
    raise ValueError(
        f"--model {name!r} is neither a timm model nor a timm model with one of the original suffixes "
        f"{', '.join(MODEL_SUFFIXES)}" + (f"; did you mean {hint!r}?" if hint else "")
    )


def _family(config: Any, suffix_method: Optional[str]) -> Optional[str]:
    if config.num_heads is not None and config.num_heads > 1:
        if suffix_method is not None:
            raise ValueError(f"--num-heads {config.num_heads} (a shallow ensemble) cannot be combined with "
                             f"--model {config.model!r} (the {suffix_method} variant)")
        return "ensemble"
    return suffix_method


def resolve_approach(config: Any) -> Approach:
    """Backbone, method and their arguments from a :class:`TrainConfig` (original flags mapped).

    ``ValueError`` naming both flags for contradictions (e.g. ``--unc-module jsd`` on a plain model).
    """
    from ..methods import list_methods

    backbone, suffix_method = split_model_name(config.model)
    family = _family(config, suffix_method)
    unc = config.unc_module
    approach = Approach(backbone, "")
    if family is not None:
        modes = PREDICTIVE_MODES[family]
        given = "--num-heads" if family == "ensemble" else "--model"
        if unc == family:
            approach.method = family
        elif unc in modes:
            approach.method, approach.method_args["mode"] = family, modes[unc]
        else:
            raise ValueError(
                f"{given} {config.num_heads if family == 'ensemble' else config.model!r} builds the {family} method, "
                f"whose uncertainty --unc-module picks from {', '.join(modes)}; got --unc-module {unc!r}"
            )
        approach.method_args.update(ORIGINAL_METHOD_ARGS.get(family, {}))
    elif unc in UNC_MODULES:
        approach.method = UNC_MODULES[unc]
    elif any(unc in modes for modes in PREDICTIVE_MODES.values()):
        needs = [m for m, modes in PREDICTIVE_MODES.items() if unc in modes]
        raise ValueError(
            f"--unc-module {unc!r} needs a model with several predictions ({', '.join(needs)}: "
            f"--num-heads > 1 or a --model name ending in {', '.join(s for s, m in MODEL_SUFFIXES.items() if m in needs)}), "
            f"but --model {config.model!r} is a plain backbone"
        )
    elif unc in list_methods():
        approach.method = unc
    else:
        known = sorted(set(UNC_MODULES) | {u for m in PREDICTIVE_MODES.values() for u in m} | set(list_methods()))
        hint = closest(unc, known)
        raise ValueError(f"unknown --unc-module {unc!r}" + (f"; did you mean {hint!r}?" if hint else "")
                         + f" (known: {', '.join(known)})")

    used = METHOD_SETTINGS.get(approach.method, {})
    approach.method_args.update({arg: getattr(config, name) for arg, name in used.items()
                                 if getattr(config, name) is not None})
    defaults = type(config)()
    owners: Dict[str, List[str]] = {}
    for method, settings in METHOD_SETTINGS.items():
        for name in settings.values():
            owners.setdefault(name, []).append(method)
    for name, methods in owners.items():
        if name not in used.values() and getattr(config, name) != getattr(defaults, name):
            approach.notes.append(f"--{name} only applies to {', '.join(methods)} (here {approach.method}); "
                                  "ignored, as the original did")
    if config.drop:
        if approach.method == "mc-dropout":
            approach.method_args["backbone_dropout"] = config.drop
            approach.method_args["backbone_dropout_at"] = "dropout-layers" if _has_dropout_layers(backbone) else "activations"
        else:
            approach.backbone_args["drop_rate"] = config.drop
    elif approach.method == "mc-dropout" and suffix_method == "mc-dropout":
        raise ValueError(f"--model {config.model!r} (MC dropout) needs --drop > 0 (the dropout rate), got --drop 0")
    if config.num_classes is not None:
        approach.backbone_args["num_classes"] = config.num_classes
    if config.img_size is not None and _fixed_input_size(backbone):
        size = config.img_size
        approach.backbone_args.update(img_size=size, pretrained_cfg_overlay={"input_size": (3, size, size)})
    return approach


def _pretrained_cfg(backbone: str) -> Dict[str, Any]:
    import timm

    cfg = timm.get_pretrained_cfg(backbone)
    return {} if cfg is None else cfg.to_dict()


def _fixed_input_size(backbone: str) -> bool:
    """ViT-like models are built for one input size (their position embedding follows ``img_size``)."""
    return bool(_pretrained_cfg(backbone).get("fixed_input_size"))


def _has_dropout_layers(backbone: str) -> bool:
    """ViTs: the original dropped at their dropout layers; ResNets: after every activation."""
    return _fixed_input_size(backbone)


def warn(message: str) -> None:
    """One-line warning about an original flag (a ``UserWarning``)."""
    warnings.warn(message, UserWarning, stacklevel=3)


def check_flag_value(flag: str, value: Any) -> None:
    """Warn for an :class:`Ignored` / at-default :class:`DefaultOnly` flag; ``ValueError`` otherwise."""
    setting = ORIGINAL_FLAGS[flag]
    if isinstance(setting, Ignored):
        warn(f"{flag} is ignored: {setting.reason}")
    elif isinstance(setting, DefaultOnly):
        if not _same_value(value, setting.default):
            raise ValueError(f"{flag} {_shown(value)}: {setting.feature} is not implemented here "
                             f"(only the original default {setting.default!r} is accepted)")
        warn(f"{flag} {_shown(value)} is the original default, a no-op ({setting.feature} is not implemented here)")


def _shown(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _same_value(value: Any, default: Any) -> bool:
    if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
        return len(value) == len(default) and all(_same_value(a, b) for a, b in zip(value, default))
    if default is None:
        return value is None or (isinstance(value, (str, list, tuple, dict)) and str(value) in ("", "None", "none", "[]", "{}", "()"))
    if isinstance(default, bool):
        return str(value).lower() in (("true", "1", "yes") if default else ("false", "0", "no", "none"))
    if isinstance(default, (int, float)):
        try:
            return float(value) == float(default)
        except (TypeError, ValueError):
            return False
    return str(value) == str(default)


def split_names(values: Union[str, Sequence[str]]) -> List[str]:
    """Dataset names from ``["repr/cub", "repr/cars"]``, ``"[repr/cub, repr/cars]"`` or ``"a,b c"``."""
    if isinstance(values, str):
        values = [values]
    return [part for value in values for part in value.replace("[", " ").replace("]", " ").replace(",", " ").split()]


def yaml_defaults(path: str, fields: Mapping[str, Any]) -> Dict[str, Any]:
    """Read a timm/original YAML config (keys = the original's argparse dests, e.g. ``lr_base``).

    Returns the values for :class:`TrainConfig` fields (``fields``: name -> default); keys of
    :data:`ORIGINAL_FLAGS` are checked like their flags; unknown keys raise ``ValueError``
    naming the closest accepted key.
    """
    import yaml

    with open(path) as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        raise ValueError(f"-c {path}: a YAML config must hold a mapping of settings")
    by_dest = {flag.lstrip("-").replace("-", "_"): flag for flag in ORIGINAL_FLAGS}
    out: Dict[str, Any] = {}
    ignored: List[str] = []
    for key, value in values.items():
        dest = str(key).replace("-", "_")
        setting = ORIGINAL_FLAGS.get(by_dest.get(dest, ""))
        if dest in fields:
            out[dest] = value
        elif isinstance(setting, str):
            out[setting] = value
        elif isinstance(setting, DefaultOnly) and not _same_value(value, setting.default):
            check_flag_value(by_dest[dest], value)  # raises: a feature not implemented here
        elif setting is not None or dest == "data":
            ignored += [str(key)] if isinstance(setting, Ignored) else []
        else:
            hint = closest(dest, list(fields) + list(by_dest))
            raise ValueError(f"-c {path}: unknown setting {key!r}" + (f"; did you mean {hint!r}?" if hint else ""))
    if ignored:  # a saved args.yaml holds every setting: one line for all that mean nothing here
        warn(f"-c {path}: ignoring {', '.join(ignored)} (meaningless here; see docs/migrating.md)")
    return out
