"""Validation without training (the original's ``--lr-base 0`` / ``--epochs 0``) and test-split results.

Result keys follow the original (url-spec §3.7): ``eval_*`` for the upstream validation set and
the downstream sets on ``--val-split`` (``eval_avg_downstream_auroc_correct``, ...), ``test_*``
for the downstream sets on ``--test-split``, ``furthertest_*`` for ``--further-dataset-downstream``,
and the same with ``best_`` in front for the best epoch (the only one when nothing is trained).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Mapping

from torch import nn
from torch.utils.data import Dataset

from .config import TrainConfig
from .loop import RESULTS_FILE, SUMMARY_FILE, FitResult, _autocast, _validate, _write_summary


def _eval_kwargs(config: TrainConfig, model: nn.Module) -> Dict:
    import torch

    device = torch.device(config.device) if config.device else next(model.parameters()).device
    autocast, _ = _autocast(config, device)
    return {"batch_size": config.validation_batch_size or config.batch_size, "device": device,
            "num_workers": config.workers, "autocast": autocast}


def test_results(model: nn.Module, config: TrainConfig, tests: Mapping[str, Dataset],
                 further: Mapping[str, Dataset]) -> Dict[str, float]:
    """``test_{set}_{metric}``, ``test_avg_downstream_{metric}`` and the ``furthertest_`` ones."""
    kwargs = _eval_kwargs(config, model)
    row: Dict[str, float] = {}
    for prefix, sets in (("test", tests), ("furthertest", further)):
        if sets:
            row.update({f"{prefix}_{k}": v for k, v in _validate(model, None, sets, **kwargs).items()})
    return row


def validate_only(model: nn.Module, config: TrainConfig) -> FitResult:
    """Evaluate ``model`` once on every validation and test set of ``config``; with ``--output``
    write ``summary.csv`` (one row, epoch 0) and ``results.json`` (the same keys)."""
    from . import distributed as dist_utils
    from .launch import CACHE_PREFIX, _downstream, build_test_sets, open_dataset

    eval_name = config.dataset_eval or ("" if config.dataset.startswith(CACHE_PREFIX) else config.dataset)
    val_set = None
    if eval_name:
        val_set = open_dataset(eval_name, config.data_dir_eval or config.data_dir, config.val_split, model,
                               train=False, img_size=config.img_size, legacy=config.legacy_preprocessing)
    downstream = _downstream(config, model, config.dataset_downstream, config.val_split)
    if val_set is None and not downstream and not config.test_split:
        raise ValueError("validation only (--lr-base 0 / --epochs 0) needs something to evaluate: "
                         "--dataset_eval, --dataset-downstream or --test-split")
    metrics = _validate(model, val_set, downstream, **_eval_kwargs(config, model)) if val_set or downstream else {}
    row: Dict[str, float] = {"epoch": 0, "lr": 0.0}
    row.update({f"eval_{k}": v for k, v in metrics.items()})
    row.update(test_results(model, config, *build_test_sets(config, model)))
    row.update({f"best_{k}": v for k, v in list(row.items()) if k not in ("epoch", "lr")})
    eval_metric = config.eval_metric or ("avg_downstream_auroc_correct" if downstream else "auroc_correct")
    result = FitResult(history=[row], best_epoch=0 if metrics else None, best_metrics=metrics,
                       eval_metric=eval_metric if metrics else None,
                       output_dir=Path(config.output) if config.output else None)
    if metrics and eval_metric not in metrics:
        raise ValueError(f"eval_metric {eval_metric!r} is not among the validation results: {', '.join(sorted(metrics))}")
    if result.output_dir is not None and dist_utils.is_main():
        result.output_dir.mkdir(parents=True, exist_ok=True)
        _write_summary(result.output_dir / SUMMARY_FILE, result.history)
        (result.output_dir / RESULTS_FILE).write_text(json.dumps(row, indent=2, default=float))
    return result
