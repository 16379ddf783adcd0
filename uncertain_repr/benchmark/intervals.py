"""``bootstrap=N``: percentile intervals of R@1 and the AUROC-type metrics, and paired differences of methods.

Resampling is over the samples of each dataset (seeded by the run's seed and the dataset name).
1-NN metrics reuse the per-sample 1-NN correctness computed once on the full set, i.e. the
queries are resampled, their neighbours are not (see :mod:`uncertain_repr.metrics.bootstrap`).
The mixed ID+OOD metrics resample the union of the chosen ID and OOD samples. Every method and
control of a dataset is scored on the same resamples, so differences between them are paired;
``avg_downstream`` intervals average the datasets' resampled values (datasets resampled independently).
"""

from __future__ import annotations

import zlib
from itertools import combinations
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..metrics import auroc, bootstrap_distribution, paired_difference, percentile_interval, singleton_query_mask
from ..metrics.evaluator import labels_are_classes
from .controls import CONTROLS
from .outputs import DatasetOutputs
from .results import AVERAGE

INTERVAL_METRICS = ("r1", "auroc_correct", "auroc_classification", "auroc_ood", "auroc_correct_mixed")
PAIRED_METRICS = INTERVAL_METRICS[1:]  # r1 does not depend on the uncertainty

# method -> metric -> (value on all samples, resampled values [R])
Distributions = Dict[str, Dict[str, Tuple[float, np.ndarray]]]


def _key(seed: int, dataset: str, purpose: str) -> List[int]:
    return [int(seed), zlib.crc32(dataset.encode()), zlib.crc32(purpose.encode())]


def _both(metric, arrays, n_resamples: int, seed) -> Tuple[float, np.ndarray]:
    if len(arrays[0]) == 0:  # no sample (e.g. every query a singleton, left out): undefined, as in the metrics
        return float("nan"), np.full(int(n_resamples), np.nan)
    return float(metric(*arrays)), bootstrap_distribution(metric, *arrays, n_resamples=n_resamples, seed=seed)


def dataset_distributions(
    outputs: DatasetOutputs, *, classify: bool, n_resamples: int, seed: int, correct: np.ndarray,
    exclude_singleton_queries: bool = False,
) -> Distributions:
    """Resampled ``r1``, ``auroc_correct`` (and ``auroc_classification`` if ``classify``) of every row of ``outputs``.

    ``correct``: the dataset's 1-NN correctness ``[N]`` (``scoring.nn_correct``). With
    ``exclude_singleton_queries`` the R@1 / R-AUROC resamples are over the other queries only.
    ``auroc_classification`` only where the metrics have it: labels that are the classifier's classes.
    """
    key = _key(seed, outputs.name, "bootstrap")
    queries = ~singleton_query_mask(outputs.labels).numpy() if exclude_singleton_queries else np.ones(len(correct), bool)
    r1 = _both(np.mean, (correct[queries],), n_resamples, key)
    wrong_class = None
    if classify and outputs.logits is not None and labels_are_classes(outputs.labels, outputs.logits):
        wrong_class = outputs.predictions != outputs.labels
    result: Distributions = {}
    for row, method in enumerate(outputs.methods):
        unc = outputs.uncertainties[row]
        result[method] = {"r1": r1, "auroc_correct": _both(auroc, (unc[queries], ~correct[queries]), n_resamples, key)}
        if wrong_class is not None:
            result[method]["auroc_classification"] = _both(auroc, (unc, wrong_class), n_resamples, key)
    return result


def mixed_distributions(
    a: DatasetOutputs, b: DatasetOutputs, *, correct: np.ndarray, n_resamples: int, seed: int
) -> Distributions:
    """Resampled ``auroc_ood`` and ``auroc_correct_mixed`` over the union of the chosen ID (``a``) and OOD (``b``) samples.

    ``a``, ``b`` and ``correct`` (the union's 1-NN correctness) come from ``scoring.mixed_union`` / ``nn_correct``.
    """
    is_ood = np.r_[np.zeros(len(a), bool), np.ones(len(b), bool)]
    key = _key(seed, b.name, "bootstrap-mixed")
    result: Distributions = {}
    for method in [m for m in b.methods if m in a.methods]:
        unc = np.r_[a.uncertainties[a.method_row(method)], b.uncertainties[b.method_row(method)]]
        result[method] = {
            "auroc_ood": _both(auroc, (unc, is_ood), n_resamples, key),
            "auroc_correct_mixed": _both(auroc, (unc, ~correct), n_resamples, key),
        }
    return result


def _average(per_dataset: Dict[str, Distributions], names: Sequence[str], method: str, metric: str):
    have = [per_dataset[n][method][metric] for n in names if metric in per_dataset[n].get(method, {})]
    if not have:
        return None
    return float(np.mean([p for p, _ in have])), np.mean([v for _, v in have], axis=0)


def _floats(values) -> List[Optional[float]]:
    return [None if not np.isfinite(v) else float(v) for v in values]


def summarize(
    per_dataset: Dict[str, Distributions], downstream: Sequence[str], *, n_resamples: int, seed: int, confidence: float = 0.95
) -> Dict:
    """The ``"bootstrap"`` entry of a result: ``intervals`` per method/control and paired ``differences``.

    ``intervals[method]["<dataset>_<metric>"] = [low, high]``; ``differences["A - B"][key] =
    {"difference", "low", "high", "p_value"}`` for every pair of methods and each method vs each
    control (A listed first in the run), for the metrics that depend on the uncertainty.
    """
    methods = list(dict.fromkeys(m for d in per_dataset.values() for m in d))
    cells: Dict[str, Dict[Tuple[str, str], Tuple[float, np.ndarray]]] = {m: {} for m in methods}
    for name, dists in per_dataset.items():
        for method, metrics in dists.items():
            cells[method].update({(name, metric): value for metric, value in metrics.items()})
    for method in methods:
        for metric in INTERVAL_METRICS:
            avg = _average(per_dataset, downstream, method, metric)
            if avg is not None:
                cells[method][(AVERAGE, metric)] = avg
    intervals = {
        m: {f"{name}_{metric}": _floats(percentile_interval(v, confidence)) for (name, metric), (_, v) in cells[m].items()}
        for m in methods
    }
    differences: Dict[str, Dict[str, Dict[str, Optional[float]]]] = {}
    for a, b in combinations(methods, 2):
        if a in CONTROLS and b in CONTROLS:
            continue
        pair = {}
        for (name, metric), (point_a, values_a) in cells[a].items():
            if metric in PAIRED_METRICS and (name, metric) in cells[b]:
                point_b, values_b = cells[b][(name, metric)]
                d = paired_difference(values_a, values_b, point_a, point_b, confidence)
                pair[f"{name}_{metric}"] = dict(zip(("difference", "low", "high", "p_value"), _floats(d)))
        differences[f"{a} - {b}"] = pair
    return {"n_resamples": int(n_resamples), "seed": int(seed), "confidence": float(confidence),
            "intervals": intervals, "differences": differences}
