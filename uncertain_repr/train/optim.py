"""The optimizer and learning-rate schedule of a run, from a :class:`TrainConfig` (timm factories)."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
from torch import nn

from .config import TrainConfig


def create_optimizer_and_scheduler(
    config: TrainConfig, module: nn.Module, *, updates_per_epoch: int, world_size: int = 1
) -> Tuple[torch.optim.Optimizer, Any]:
    """timm's ``create_optimizer_v2`` over ``module``'s trainable parameters (Adam-type betas from
    ``opt_beta1``/``opt_beta2``; no weight decay on biases and 1-D parameters) and
    ``create_scheduler_v2``, stepped per epoch unless ``sched_on_updates``."""
    import timm.optim
    import timm.scheduler

    optimizer_kwargs: Dict[str, Any] = {}
    if "sgd" not in config.opt.lower() and "momentum" not in config.opt.lower():
        optimizer_kwargs["betas"] = (config.opt_beta1, config.opt_beta2)
    optimizer = timm.optim.create_optimizer_v2(
        module, opt=config.opt, lr=config.learning_rate(world_size), weight_decay=config.weight_decay,
        momentum=config.momentum, **optimizer_kwargs,
    )
    scheduler, _ = timm.scheduler.create_scheduler_v2(
        optimizer, sched=config.sched, num_epochs=max(config.epochs, 1), decay_epochs=config.decay_epochs,
        decay_milestones=config.decay_milestones, decay_rate=config.decay_rate, min_lr=config.min_lr,
        warmup_lr=config.warmup_lr, warmup_epochs=config.warmup_epochs, plateau_mode="max",
        step_on_epochs=not config.sched_on_updates, updates_per_epoch=updates_per_epoch,
    )
    return optimizer, scheduler
