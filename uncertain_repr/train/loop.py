"""``fit``: train an ``Uncertainizer`` (usually only its uncertainty method) with timm's optimizers and schedulers.

One epoch = ``len(sampler) / batch_size`` micro-batches per process. Gradients of a group of
``accumulation_steps`` micro-batches are averaged (each micro-batch loss is divided by the size
of its group) and the optimizer steps once per group; a trailing partial group at the end of an
epoch is stepped too, with its own (smaller) divisor, so no sample is wasted. The scheduler
counts optimizer updates, not micro-batches. Under torchrun the model and the loss's own
parameters are wrapped together in DDP, so gradients are averaged over ranks.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import random
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from .._locks import exclusive_lock
from ..losses import LossBatch
from ..methods.base import UncertaintyMethod
from ..metrics import Evaluator
from . import distributed as dist_utils
from .checkpoint import (check_resume_config, load_resume, load_scheduler_state, load_trained_state, rng_state,
                         save_resume, scheduler_state, set_rng_state, trained_state)
from .config import TrainConfig
from .optim import create_optimizer_and_scheduler
from .sampler import GlobalOrderSampler

RESUME_FILE = "resume.pt"
SUMMARY_FILE = "summary.csv"
RESULTS_FILE = "results.json"  # the last summary row, as the original's W&B run summary
LOCK_FILE = ".lock"  # held by the one run writing the folder
# What writes killed half-way leave (temp checkpoint folders, temp files); removed when a run starts.
LEFTOVERS = (".checkpoint-*.tmp", ".checkpoint-*.old-*", f".{RESUME_FILE}.tmp-*", f".{SUMMARY_FILE}.tmp-*",
             f".{RESULTS_FILE}.tmp-*",
             ".last.tmp-*", ".best.tmp-*")
INIT_UNC_BATCHES = 10  # global batches averaged for --unc_start_value, as the original
RESULT_PREFIXES = ("eval_", "test_", "furthertest_")  # carried as best_* from the best epoch (url-spec 3.7)


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        history: one summary row per epoch (``epoch``, ``lr``, ``train_loss``, ``eval_*``, ``test_*``,
            ``furthertest_*``, and the same keys of the best epoch so far with ``best_`` in front).
        best_epoch: epoch with the best ``eval_metric`` (``None`` without validation sets).
        best_metrics: that epoch's validation results (keys without the ``eval_`` prefix).
        output_dir: where checkpoints went (``None`` if nothing was written).
        eval_metric: the validation key that chose ``best_epoch``.
    """

    history: List[Dict[str, float]] = field(default_factory=list)
    best_epoch: Optional[int] = None
    best_metrics: Dict[str, float] = field(default_factory=dict)
    output_dir: Optional[Path] = None
    eval_metric: Optional[str] = None

    @property
    def best_checkpoint(self) -> Optional[Path]:
        """Checkpoint folder of the best epoch (the last one without validation), if written."""
        if self.output_dir is None or not self.history:
            return None
        epoch = self.best_epoch if self.best_epoch is not None else int(self.history[-1]["epoch"])
        return self.output_dir / f"checkpoint-{epoch}"


class _TrainStep(nn.Module):
    """Model + loss in one module, so DDP averages the gradients of both (loss scalars such as kappa).

    Under DDP the loss sees the global batch (every rank's rows, gathered in rank order: the batch one
    process would have under :class:`GlobalOrderSampler`), so losses that compare samples (all pairs of
    losspred-order, InfoNCE's negatives, HIB's pairs) compute what one process computes.
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, inputs: torch.Tensor, target: torch.Tensor, cached: bool) -> torch.Tensor:
        out = self.model(embedding=inputs) if cached else self.model(inputs)
        gather = dist_utils.gather_rows
        logits = None if out.logits is None else gather(out.logits)
        batch = LossBatch(gather(out.embedding), gather(out.uncertainty), logits, self.model.classifier)
        return self.loss_fn(batch, gather(target))


def loss_hparams(config: TrainConfig, model: nn.Module) -> Dict[str, Any]:
    """Keyword arguments of ``losses.create(config.loss, ...)``, see :func:`.original_flags.loss_hparams`."""
    from .original_flags import loss_hparams as from_table

    return from_table(config, model)


def _autocast(config: TrainConfig, device: torch.device) -> Tuple[Callable[[], Any], bool]:
    """(context factory, use GradScaler): fp16 on CUDA by default, CPU only with ``amp_dtype`` given."""
    dtype = config.amp_dtype or ("float16" if device.type == "cuda" else None)
    if not config.amp or dtype is None:
        return contextlib.nullcontext, False
    torch_dtype = getattr(torch, dtype)
    return (lambda: torch.autocast(device.type, dtype=torch_dtype)), dtype == "float16"


def _is_cached(dataset: Dataset) -> bool:
    item = dataset[0]
    if not isinstance(item, Mapping) or "label" not in item or not ({"embedding", "image"} & set(item)):
        raise TypeError("dataset items must be dicts with 'image' (or cached 'embedding'), 'label' and 'index'")
    return "embedding" in item


def _inputs(batch: Mapping[str, torch.Tensor], cached: bool, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    target = batch["soft_labels"] if "soft_labels" in batch else batch["label"]
    inputs = batch["embedding"] if cached else batch["image"]
    return inputs.to(device, non_blocking=True), target.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 256,
    device: Optional[torch.device] = None,
    num_workers: int = 0,
    autocast: Callable[[], Any] = contextlib.nullcontext,
) -> Dict[str, float]:
    """The URL metrics of ``model`` on ``dataset`` (images or cached embeddings), see :class:`Evaluator`.

    Under ``torch.distributed`` every rank evaluates its exact shard and the results are gathered.
    """
    from ..data import create_loader

    device = device or next(model.parameters()).device
    cached = _is_cached(dataset)
    was_training = model.training
    model.eval()
    evaluator = Evaluator(device=device)
    for batch in create_loader(dataset, batch_size, shuffle=False, num_workers=num_workers):
        inputs, _ = _inputs(batch, cached, device)
        with autocast():
            out = model(embedding=inputs) if cached else model(inputs)
        evaluator.update(
            out.embedding.float(), out.uncertainty.float(), batch["label"], indices=batch["index"],
            logits=None if out.logits is None else out.logits.float(), soft_labels=batch.get("soft_labels"),
        )
    model.train(was_training)
    return evaluator.compute()


def _validate(
    model: nn.Module, val_set: Optional[Dataset], downstream_sets: Mapping[str, Dataset], **kwargs: Any
) -> Dict[str, float]:
    """Upstream results (plain keys) + ``{name}_{metric}`` per downstream set + ``avg_downstream_{metric}``."""
    results: Dict[str, float] = {}
    if val_set is not None:
        results.update(evaluate(model, val_set, **kwargs))
    per_set = {name: evaluate(model, data, **kwargs) for name, data in downstream_sets.items()}
    for name, res in per_set.items():
        results.update({f"{name}_{k}": v for k, v in res.items()})
    if per_set:
        common = set.intersection(*(set(r) for r in per_set.values()))
        first = next(iter(per_set.values()))
        for key in (k for k in first if k in common):  # mean over sets, keys all sets have
            results[f"avg_downstream_{key}"] = float(np.mean([r[key] for r in per_set.values()]))
    return results


@torch.no_grad()
def initialize_mean_uncertainty(
    model: nn.Module, train_set: Dataset, target: float, *, global_batch: int, seed: int, cached: bool,
    device: torch.device,
) -> float:
    """``--unc_start_value``: rescale the method so its mean uncertainty over the first
    ``INIT_UNC_BATCHES`` global training batches of epoch 0 is ``target`` (a saved buffer)."""
    method = model.method
    if not callable(getattr(method, "set_mean_uncertainty", None)):
        raise ValueError(f"unc_start_value needs a method with set_mean_uncertainty (e.g. pred-net), "
                         f"not {model.method_name!r}")
    order = GlobalOrderSampler(len(train_set), global_batch, seed=seed).global_order()
    subset = Subset(train_set, order[: INIT_UNC_BATCHES * global_batch].tolist())
    was_training = model.training
    model.eval()

    def embeddings():
        for batch in DataLoader(subset, batch_size=global_batch, collate_fn=getattr(train_set, "collate_fn", None)):
            inputs, _ = _inputs(batch, cached, device)
            yield inputs if cached else model.forward_embedding(inputs)

    try:
        return method.set_mean_uncertainty(embeddings(), target)
    finally:
        model.train(was_training)


def _improves(value: float, best: Optional[float]) -> bool:
    """Strictly greater than ``best``; the first epoch always counts; NaN (undefined) is worse than any number."""
    if best is None:
        return True
    return not math.isnan(value) and (math.isnan(best) or value > best)


def _write_summary(path: Path, history: List[Dict[str, float]]) -> None:
    columns: List[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    _write_atomic(path, buffer.getvalue())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _point_link(link: Path, target: str) -> None:
    """Make ``link`` a relative symlink to ``target`` (atomically); skipped where symlinks are unsupported."""
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)


class _Loggers:
    """Optional TensorBoard / W&B logging, imported only when asked for, on rank 0 only."""

    def __init__(self, config: TrainConfig, output_dir: Optional[Path]) -> None:
        self.tensorboard = self.wandb = None
        if not dist_utils.is_main():
            return
        if config.log_tensorboard:
            if output_dir is None:
                raise ValueError("log_tensorboard needs an output folder")
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(output_dir / "tensorboard"))
        if config.log_wandb:
            import wandb

            self.wandb = wandb.init(project=config.wandb_project, config=config.to_dict(),
                                    dir=None if output_dir is None else str(output_dir))

    def log(self, row: Dict[str, float]) -> None:
        epoch = int(row["epoch"])
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, float) and math.isfinite(value):
                    self.tensorboard.add_scalar(key, value, epoch)
            self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.log(row, step=epoch)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def fit(
    model: nn.Module,
    train_set: Dataset,
    config: Optional[TrainConfig] = None,
    *,
    val_set: Optional[Dataset] = None,
    downstream_sets: Optional[Mapping[str, Dataset]] = None,
    test_sets: Optional[Mapping[str, Dataset]] = None,
    further_test_sets: Optional[Mapping[str, Dataset]] = None,
    loss_fn: Optional[nn.Module] = None,
    output_dir: Optional[os.PathLike] = None,
    on_epoch_end: Optional[Callable[[int, Dict[str, float]], None]] = None,
    **overrides: Any,
) -> FitResult:
    """Train ``model`` on ``train_set`` and validate every epoch.

    Args:
        model: an ``Uncertainizer``. Freezing and stop-gradient are set from the config
            (default: only the uncertainty method trains).
        train_set: map-style, items ``{"image": [C, H, W], "label", "index"}`` or cached
            ``{"embedding": [D], "label", "index"}`` (:class:`~uncertain_repr.cache.CachedEmbeddings`;
            the backbone is then never run), plus optional ``"soft_labels"`` [K] (soft targets).
        config: a :class:`TrainConfig`; ``**overrides`` change single fields (``epochs=3``).
        val_set: upstream validation set (results under plain keys, e.g. ``auroc_correct``).
        downstream_sets: ``{name: dataset}`` validated every epoch (``{name}_{metric}`` keys and
            ``avg_downstream_{metric}`` averages).
        test_sets: ``{name: dataset}`` on the test split (``--test_split``), evaluated every epoch
            (``test_{name}_{metric}``, ``test_avg_downstream_{metric}``); never used to choose the best epoch.
        further_test_sets: the same for ``--further-dataset-downstream`` (``furthertest_*`` keys).
        loss_fn: a ready loss (default: ``losses.create(config.loss, ...)``); its parameters are trained too.
        output_dir: checkpoints, ``resume.pt``, ``summary.csv`` and ``results.json`` (the last row) go
            here (default ``config.output``; nothing is written without one). A folder holding a run
            is continued with ``resume=True``.
            One run at a time writes a folder: a second one is refused (``LockedError``) while it runs.
        on_epoch_end: called on every rank with ``(epoch, summary_row)`` after the epoch is saved.

    Returns:
        a :class:`FitResult` (summary rows, best epoch and its metrics).
    """
    config = (config or TrainConfig()).replace(**overrides) if overrides else (config or TrainConfig())
    output = Path(output_dir) if output_dir is not None else (Path(config.output) if config.output else None)
    with _one_writer(output):
        return _fit(model, train_set, config, output, val_set=val_set, downstream_sets=downstream_sets,
                    test_sets=test_sets, further_test_sets=further_test_sets, loss_fn=loss_fn,
                    on_epoch_end=on_epoch_end)


@contextlib.contextmanager
def _one_writer(output: Optional[Path]) -> Iterator[None]:
    """Hold ``output``'s lock (rank 0) for the whole run, and remove what killed writes left behind."""
    if output is None or not dist_utils.is_main():
        yield
        return
    if output.exists() and not output.is_dir():
        raise ValueError(f"output {output} is an existing file; give a folder")
    output.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(output / LOCK_FILE, f"the training output {output}"):
        for pattern in LEFTOVERS:
            for leftover in output.glob(pattern):
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover)
                else:
                    leftover.unlink()
        yield


def _fit(
    model: nn.Module,
    train_set: Dataset,
    config: TrainConfig,
    output: Optional[Path],
    *,
    val_set: Optional[Dataset],
    downstream_sets: Optional[Mapping[str, Dataset]],
    test_sets: Optional[Mapping[str, Dataset]],
    further_test_sets: Optional[Mapping[str, Dataset]],
    loss_fn: Optional[nn.Module],
    on_epoch_end: Optional[Callable[[int, Dict[str, float]], None]],
) -> FitResult:
    from .. import losses

    downstream_sets = dict(downstream_sets or {})
    test_groups = {"test": dict(test_sets or {}), "furthertest": dict(further_test_sets or {})}
    rank, world = dist_utils.rank(), dist_utils.world_size()
    if not callable(getattr(model, "set_trainable", None)):
        raise TypeError(f"model must be an Uncertainizer, got {type(model).__name__}")
    if len(train_set) == 0:
        raise ValueError("train_set is empty")
    has_validation = val_set is not None or bool(downstream_sets)
    if config.eval_metric and not has_validation:
        raise ValueError(f"eval_metric={config.eval_metric!r} needs val_set or downstream_sets")
    eval_metric = config.eval_metric or ("avg_downstream_auroc_correct" if downstream_sets else "auroc_correct")

    model.set_trainable(backbone=not config.freeze_backbone, classifier=not config.freeze_classifier,
                        method=not config.freeze_prednet)
    model.stopgrad = config.stopgrad
    cached = _is_cached(train_set)
    if cached and not config.freeze_backbone:
        raise ValueError("training on cached embeddings needs freeze_backbone=True (the backbone is never run)")
    device = torch.device(config.device) if config.device else next(model.parameters()).device
    model.to(device)
    loss_fn = (loss_fn if loss_fn is not None else losses.create(config.loss, **loss_hparams(config, model))).to(device)
    step_module = _TrainStep(model, loss_fn)
    if not any(p.requires_grad for p in step_module.parameters()):
        raise ValueError("nothing to train: backbone, classifier, method and loss are all frozen")

    sampler = GlobalOrderSampler(len(train_set), config.batch_size, world=world, rank=rank, seed=config.seed,
                                 samples_per_epoch=config.iters_instead_of_epochs)
    micro_batches = sampler.steps
    updates_per_epoch = math.ceil(micro_batches / config.accumulation_steps)
    autocast, use_scaler = _autocast(config, device)

    optimizer, scheduler = create_optimizer_and_scheduler(config, step_module, updates_per_epoch=updates_per_epoch,
                                                          world_size=world)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    optimizer.zero_grad(set_to_none=True)  # gradients left on the model (an interrupted fit) must not enter step 1

    result = FitResult(output_dir=output, eval_metric=eval_metric if has_validation else None)
    start_epoch, num_updates = 0, 0
    resume_path = None if output is None else output / RESUME_FILE
    if resume_path is not None and resume_path.exists():
        if not config.resume:
            raise FileExistsError(f"{output} already holds a run; pass resume=True (--resume on the command line) "
                                  "to continue it, or choose another output folder")
        state = load_resume(resume_path)
        check_resume_config(resume_path, state["config"], config.to_dict(), saved_world=len(state["rng"]), world=world)
        load_trained_state(model, state["model"])
        loss_fn.load_state_dict(state["loss"])
        optimizer.load_state_dict(state["optimizer"])
        load_scheduler_state(scheduler, state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, num_updates = int(state["epoch"]) + 1, int(state["num_updates"])
        result.history = list(state["history"])
        result.best_epoch = state["best_epoch"]
        result.best_metrics = dict(state["best_metrics"])
        set_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
        scheduler.step(start_epoch)
        if dist_utils.is_main():  # finish what a run killed right after writing resume.pt left undone
            _record_epoch(output, result, start_epoch - 1)
    else:
        if config.resume and dist_utils.is_main():  # a mistyped --output must not look like a resumed run
            warnings.warn(f"resume=True, but there is no {RESUME_FILE} in {output}: starting a new run"
                          if output is not None else "resume=True without an output folder: starting a new run",
                          UserWarning, stacklevel=2)
        seed = config.seed + rank
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        if config.unc_start_value > 0:
            initialize_mean_uncertainty(model, train_set, config.unc_start_value, seed=config.seed, cached=cached,
                                        global_batch=config.batch_size * world, device=device)

    if dist_utils.is_distributed():
        from torch.nn.parallel import DistributedDataParallel

        train_module: nn.Module = DistributedDataParallel(
            step_module, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True,
        )
    else:
        train_module = step_module
    # Not persistent: the workers restart every epoch, seeded from (seed, rank, epoch) below, so that the
    # augmentations of a resumed epoch are those of the uninterrupted run.
    loader = DataLoader(
        train_set, batch_size=config.batch_size, sampler=sampler, drop_last=True, num_workers=config.workers,
        collate_fn=getattr(train_set, "collate_fn", None),
        pin_memory=device.type == "cuda", generator=torch.Generator(),
    )
    if output is not None and dist_utils.is_main():
        output.mkdir(parents=True, exist_ok=True)
    loggers = _Loggers(config, output)
    eval_kwargs = {"batch_size": config.validation_batch_size or config.batch_size, "device": device,
                   "num_workers": config.workers, "autocast": autocast}
    from tqdm.auto import tqdm

    try:
        for epoch in range(start_epoch, config.epochs):
            sampler.set_epoch(epoch)
            loader.generator.manual_seed(int(np.random.SeedSequence([config.seed, rank, epoch]).generate_state(1)[0]))
            model.train()
            for method in model.modules():
                if isinstance(method, UncertaintyMethod):
                    method.begin_epoch()
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", disable=None if dist_utils.is_main() else True)
            for i, batch in enumerate(bar):
                inputs, target = _inputs(batch, cached, device)
                group_start = i - i % config.accumulation_steps
                group_size = min(config.accumulation_steps, micro_batches - group_start)
                steps_now = i - group_start == group_size - 1
                sync = contextlib.nullcontext() if steps_now or train_module is step_module else train_module.no_sync()
                with sync:
                    with autocast():
                        loss = train_module(inputs, target, cached)
                    scaler.scale(loss / group_size).backward()
                loss_sum += loss.detach().double()
                if steps_now:
                    if dist_utils.any_over_ranks(~torch.isfinite(loss_sum)):  # the sum holds every loss so far
                        where = f"micro-batch {i}" if group_size == 1 else f"micro-batches {group_start}-{i}"
                        raise ValueError(
                            f"training loss is not finite ({float(loss_sum):g}) in epoch {epoch}, {where} (on some "
                            "rank): the optimizer did not step, so no weights became NaN; lower the learning rate, "
                            "add --clip-grad, or check the data for NaN/inf")
                    if config.clip_grad is not None:
                        scaler.unscale_(optimizer)  # once per optimizer step
                        torch.nn.utils.clip_grad_norm_(step_module.parameters(), config.clip_grad)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    num_updates += 1
                    scheduler.step_update(num_updates=num_updates)
            bar.close()
            row: Dict[str, float] = {
                "epoch": epoch,
                "lr": float(optimizer.param_groups[0]["lr"]),
                "train_loss": dist_utils.mean_over_ranks(float(loss_sum) / micro_batches, device),
            }
            metrics = _validate(model, val_set, downstream_sets, **eval_kwargs) if has_validation else {}
            row.update({f"eval_{k}": v for k, v in metrics.items()})
            for prefix, sets in test_groups.items():  # every epoch, as the original (its best_test_*)
                if sets:
                    row.update({f"{prefix}_{k}": v for k, v in _validate(model, None, sets, **eval_kwargs).items()})
            if has_validation:
                if eval_metric not in metrics:
                    raise ValueError(f"eval_metric {eval_metric!r} is not among the validation results: "
                                     f"{', '.join(sorted(metrics))}")
                if _improves(metrics[eval_metric], None if result.best_epoch is None else result.best_metrics[eval_metric]):
                    result.best_epoch, result.best_metrics = epoch, dict(metrics)
            result.history.append(row)
            row.update(_best_keys(result))
            scheduler.step(epoch + 1, metrics.get(eval_metric))
            if output is not None:
                _save_epoch(output, model, loss_fn, optimizer, scheduler, scaler, epoch, num_updates, result, config)
            loggers.log(row)
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)
    finally:
        loggers.close()
    return result


def _best_keys(result: FitResult) -> Dict[str, float]:
    """``best_eval_*``, ``best_test_*``, ``best_furthertest_*``: the results of the epoch chosen by the
    validation metric (the last epoch without validation), as the original carried them."""
    best = result.history[-1] if result.best_epoch is None else next(
        r for r in result.history if int(r["epoch"]) == result.best_epoch)
    return {f"best_{k}": v for k, v in best.items() if k.startswith(RESULT_PREFIXES)}


def _save_epoch(
    output: Path, model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
    scaler: torch.amp.GradScaler, epoch: int, num_updates: int, result: FitResult, config: TrainConfig,
) -> None:
    """Checkpoint folder, then ``resume.pt``, then ``summary.csv`` (rank 0); prune old folders; barrier."""
    rngs: List[Dict[str, Any]] = [rng_state()]
    if dist_utils.is_distributed():
        import torch.distributed as dist

        rngs = [{} for _ in range(dist_utils.world_size())]
        dist.all_gather_object(rngs, rng_state())
    if dist_utils.is_main():
        from ..hub import ModelCard

        card = ModelCard(training={"epoch": epoch, "loss": config.loss, "row": result.history[-1]})
        model.save_pretrained(output / f"checkpoint-{epoch}", card=card)
        save_resume(output / RESUME_FILE, {
            "model": trained_state(model), "loss": loss_fn.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler_state(scheduler), "scaler": scaler.state_dict(), "epoch": epoch,
            "num_updates": num_updates, "history": result.history, "best_epoch": result.best_epoch,
            "best_metrics": result.best_metrics, "rng": rngs, "config": config.to_dict(),
        })
        _record_epoch(output, result, epoch)
    dist_utils.barrier()


def _record_epoch(output: Path, result: FitResult, epoch: int) -> None:
    """After ``resume.pt`` of ``epoch``: ``summary.csv``, the ``last``/``best`` links, pruning (idempotent)."""
    _write_summary(output / SUMMARY_FILE, result.history)
    _write_atomic(output / RESULTS_FILE, json.dumps(result.history[-1], indent=2, default=float))
    best = result.best_epoch if result.best_epoch is not None else epoch
    _point_link(output / "last", f"checkpoint-{epoch}")
    _point_link(output / "best", f"checkpoint-{best}")
    keep = {f"checkpoint-{epoch}", f"checkpoint-{best}"}
    for folder in output.glob("checkpoint-*"):
        if folder.name not in keep and folder.is_dir():
            shutil.rmtree(folder)
