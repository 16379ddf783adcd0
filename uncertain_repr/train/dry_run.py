"""``uncertain-repr train --dry-run``: build everything a run would build from its flags, touching no data."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

import torch
from torch import nn

from .config import TrainConfig

#: losses that read the classifier's logits (or its weights), so the backbone needs a classifier
LOSSES_NEEDING_CLASSIFIER = ("cross-entropy", "losspred", "losspred-order", "riskpred", "elk", "nivmf")


@dataclass
class DryRun:
    """What :func:`dry_run` built: the model, the loss, the optimizer and schedule, a one-line summary."""

    model: nn.Module
    loss: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    summary: str


def _args(values: Dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v!r}" for k, v in values.items())


def build_loss(config: TrainConfig, model: nn.Module) -> nn.Module:
    """``losses.create(config.loss, ...)`` with the flags mapped; ``ValueError`` naming both flags for a
    loss that needs logits on a backbone without a classifier, or contradictory ``--ssl``."""
    from .. import losses
    from .original_flags import loss_hparams

    if config.loss in LOSSES_NEEDING_CLASSIFIER and getattr(model, "classifier", None) is None:
        raise ValueError(f"--loss {config.loss} needs the backbone's classifier logits, but --model "
                         f"{config.model!r} (--num-classes {config.num_classes}) has no classifier")
    return losses.create(config.loss, **loss_hparams(config, model))


def dry_run(config: TrainConfig) -> DryRun:
    """Build backbone (never downloading weights: ``--pretrained`` is reported, not fetched), method,
    loss, optimizer and schedule exactly as a run would, without reading any data.

    ``--initial-checkpoint`` must be an existing local folder (``FileNotFoundError`` otherwise).
    """
    from .launch import build_model
    from .optim import create_optimizer_and_scheduler
    from .original_flags import loss_notes, warn

    if config.initial_checkpoint and not Path(config.initial_checkpoint).exists():
        raise FileNotFoundError(f"--initial-checkpoint {config.initial_checkpoint}: no such file or folder")
    # a new model: shapes and hyperparameters only, no weights initialised; a checkpoint is read for real
    with contextlib.nullcontext() if config.initial_checkpoint else torch.device("meta"):
        model = build_model(config.replace(pretrained=False))
    model.set_trainable(backbone=not config.freeze_backbone, classifier=not config.freeze_classifier,
                        method=not config.freeze_prednet)
    model.stopgrad = config.stopgrad
    loss = build_loss(config, model)
    for note in loss_notes(config):
        warn(note)
    module = nn.ModuleList([model, loss])
    if not any(p.requires_grad for p in module.parameters()) and not config.validate_only:
        raise ValueError("nothing to train: backbone, classifier, method and loss are all frozen "
                         "(--freeze_backbone, --freeze_classifier, --freeze_prednet)")
    updates = max(1, config.iters_instead_of_epochs // (config.batch_size * config.accumulation_steps))
    optimizer, scheduler = create_optimizer_and_scheduler(config, module, updates_per_epoch=updates)
    trains = [part for part, on in model.trainable_parts.items() if on]
    if config.initial_checkpoint:
        weights = f"from {config.initial_checkpoint}"
    elif config.pretrained is True:
        weights = "timm's pretrained, not loaded in a dry run"
    elif config.pretrained:
        weights = f"package {config.pretrained}, not loaded in a dry run"
    else:
        weights = "random init"
    method_args = dict(getattr(model, "method_args", {}))
    what = "validate only (zero-shot)" if config.validate_only else (
        f"{config.opt} lr {config.learning_rate():.4g} (lr_base {config.lr_base:.4g}), "
        f"wd {config.weight_decay:g}, {config.sched} over {config.epochs} epochs, warm-up {config.warmup_epochs} "
        f"from {config.warmup_lr:.3g}, batch {config.batch_size} x {config.accumulation_steps} accumulation"
    )
    summary = (
        f"dry run: backbone {model.backbone_name} (weights: {weights}; "
        f"embed_dim {model.embed_dim}, {model.num_classes} classes, img_size {config.img_size or 'model default'})"
        f" | method {model.method_name}({_args(method_args)}) [{type(model.method).__name__}]"
        f" | loss {config.loss} {loss!r}".replace("\n", "")
        + f" | trains {', '.join(trains) or 'nothing'}{' (ssl: two views per image)' if config.ssl else ''}"
        f" | {what}"
    )
    return DryRun(model, loss, optimizer, scheduler, summary)
