"""From a :class:`TrainConfig` to a finished run: process group, model, datasets, ``fit``."""

from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import Dataset

from . import distributed as dist_utils
from .config import TrainConfig, parse_args
from .loop import FitResult, fit

CACHE_PREFIX = "hdf5/"


def build_model(config: TrainConfig) -> nn.Module:
    """``--initial-checkpoint`` (its backbone and method), else a new ``Uncertainizer`` from the flags
    (the original's model suffixes, ``--num-heads`` and ``--unc-module`` names are mapped by
    :func:`~.original_flags.resolve_approach`).

    The new uncertainty head is initialised from ``config.seed``, identically on every rank.
    """
    if config.initial_checkpoint:
        from ..hub import load_model

        return load_model(config.initial_checkpoint)
    from ..model import Uncertainizer
    from .original_flags import resolve_approach, warn

    approach = resolve_approach(config)
    for note in approach.notes:
        warn(note)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return Uncertainizer(approach.backbone, approach.method, pretrained=config.pretrained,
                             stopgrad=config.stopgrad, backbone_args=approach.backbone_args or None,
                             **approach.method_args)


def open_dataset(name: str, root: str, split: str, model: nn.Module, *, train: bool, img_size: Optional[int] = None,
                 ssl: bool = False) -> Dataset:
    """``hdf5/PATH`` -> :class:`CachedEmbeddings` checked against ``model``; else a registered image dataset
    with the model's train (augmenting) or eval transform at ``img_size``. ``ssl``: two views per item
    (:func:`~.ssl.two_views`)."""
    if name.startswith(CACHE_PREFIX):
        from ..cache import CachedEmbeddings

        dataset: Dataset = CachedEmbeddings(name[len(CACHE_PREFIX):], expect=model)
        if ssl:
            from .ssl import CachedViewPairs

            dataset = CachedViewPairs(dataset)
        return dataset
    from .. import data

    if not root:
        raise ValueError(f"dataset {name!r} needs a root folder (--data-dir)")
    if ssl:
        dataset = data.create_dataset(name, root, split)
        return data.TwoViews(dataset, data.ssl_transform(model, img_size=img_size))
    transform = data.train_transform(model, img_size=img_size) if train else data.eval_transform(model, img_size=img_size)
    return data.create_dataset(name, root, split, transform=transform)


def build_datasets(
    config: TrainConfig, model: nn.Module
) -> Tuple[Dataset, Optional[Dataset], Dict[str, Dataset]]:
    """(training set, upstream validation set or None, downstream validation sets by name).

    The upstream validation set is ``--dataset_eval``; without it, ``--dataset``'s ``--val-split``
    when there are no downstream sets and the training set is not a cache.
    """
    if not config.dataset:
        raise ValueError("no training set: pass --dataset (a name, or hdf5/PATH.h5 for an embedding cache)")
    train_set = open_dataset(config.dataset, config.data_dir, config.train_split, model, train=True)
    eval_name = config.dataset_eval
    if not eval_name and not config.dataset_downstream and not config.dataset.startswith(CACHE_PREFIX):
        eval_name = config.dataset
    val_set = None
    if eval_name:
        val_set = open_dataset(eval_name, config.data_dir_eval or config.data_dir, config.val_split, model,
                               train=False)
    downstream = {
        name: open_dataset(name, config.data_dir_downstream or config.data_dir, config.val_split, model, train=False)
        for name in config.dataset_downstream
    }
    return train_set, val_set, downstream


def run(config: TrainConfig) -> FitResult:
    """Join torchrun's process group (if any), build the model and datasets, and train."""
    device = dist_utils.init_from_env(config.device)
    try:
        model = build_model(config).to(device)
        train_set, val_set, downstream = build_datasets(config, model)
        return fit(model, train_set, config.replace(device=str(device)), val_set=val_set,
                   downstream_sets=downstream)
    finally:
        dist_utils.shutdown()


def report(result: FitResult) -> str:
    """One human-readable line about the finished run."""
    where = f"; checkpoints in {result.output_dir}" if result.output_dir else ""
    if result.best_epoch is None:
        last = result.history[-1] if result.history else {}
        return f"trained {len(result.history)} epoch(s), last train_loss {last.get('train_loss', float('nan')):.6g}{where}"
    metric = result.eval_metric
    return f"best epoch {result.best_epoch}: {metric} = {result.best_metrics[metric]:.6g}{where}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m uncertain_repr.train``."""
    config = parse_args(argv)
    result = run(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(report(result), file=sys.stdout)
    return 0
