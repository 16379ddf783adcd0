"""From per-sample outputs to the benchmark's numbers: per dataset, mixed ID+OOD, and averages.

Every function here works on one rank's shard under ``torch.distributed`` (the metrics'
:class:`~uncertain_repr.metrics.Evaluator` gathers all ranks and orders samples by index) and
on complete outputs in one process, with exactly the same numbers.
"""

from __future__ import annotations

import zlib
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..metrics import Evaluator, nearest_neighbor_correct
from .outputs import DatasetOutputs

Device = Union[str, torch.device, None]


def seeded_subset(indices: np.ndarray, n: int, *, seed: int, dataset: str, purpose: str) -> np.ndarray:
    """``n`` of ``indices [N]`` drawn without replacement, sorted; depends only on (seed, dataset, purpose).

    The draw is a prefix of one seeded permutation, so a smaller ``n`` gives a subset of a larger one.
    """
    key = [int(seed), zlib.crc32(dataset.encode()), zlib.crc32(purpose.encode())]
    return np.sort(np.random.default_rng(key).permutation(np.asarray(indices))[: int(n)])


def nn_correct(embeddings: np.ndarray, labels: np.ndarray, device: Device = None) -> np.ndarray:
    """Per-sample leave-one-out 1-NN correctness ``[N]`` (bool) of complete outputs, in index order.

    The one search of a dataset (or of a mixed ID+OOD set): its embeddings are the same for every
    method and control, so all of them, and the bootstrap, reuse this.
    """
    emb = torch.as_tensor(embeddings, dtype=torch.float32).to(device or "cpu")
    return nearest_neighbor_correct(emb, labels).numpy()


def mixed_union(
    ind: DatasetOutputs, ood: DatasetOutputs, *, id_chosen: np.ndarray, ood_chosen: np.ndarray
) -> Tuple[DatasetOutputs, DatasetOutputs, np.ndarray]:
    """The chosen ID and OOD samples and the union's labels ``[N_id + N_ood]`` (OOD ids shifted as in ``r_auroc_mixed``)."""
    a, b = ind.select(np.isin(ind.indices, id_chosen)), ood.select(np.isin(ood.indices, ood_chosen))
    return a, b, np.r_[a.labels, b.labels - b.labels.min() + a.labels.max() + 1]


def score_dataset(
    outputs: DatasetOutputs, method: str, *, classify: bool, correct: np.ndarray, device: Device = None,
    exclude_singleton_queries: bool = False,
) -> Dict[str, float]:
    """The per-dataset metrics of ``method`` (keys without the dataset prefix, see ``Evaluator.compute``).

    ``outputs`` may be one rank's shard; ``correct`` is :func:`nn_correct` of the complete
    dataset. ``classify`` adds ``top1``, ``top5`` and ``auroc_classification``: only meaningful
    when the classifier's label space is the dataset's. ``exclude_singleton_queries``: see ``Evaluator``.
    """
    if classify and outputs.logits is None and len(outputs):
        raise ValueError(f"classification metrics on {outputs.name!r} need logits, but the model has no classifier")
    evaluator = Evaluator(device=device, exclude_singleton_queries=exclude_singleton_queries)
    if len(outputs):  # under torch.distributed a rank may hold no sample of a tiny dataset
        row = outputs.method_row(method)
        cropped = outputs.uncertainties_cropped
        evaluator.update(
            outputs.embeddings,
            outputs.uncertainties[row],
            outputs.labels,
            soft_labels=outputs.soft_labels,
            uncertainties_cropped=None if cropped is None else cropped[row],
            crop_fractions=outputs.crop_fractions,
            logits=outputs.logits if classify else None,
            indices=outputs.indices,
        )
    try:
        return evaluator.compute(correct=torch.from_numpy(correct))
    except ValueError as err:
        raise ValueError(f"dataset {outputs.name!r}: {err}") from err


def mixed_selection(
    id_indices: np.ndarray, ood_indices: np.ndarray, *, id_name: str, ood_name: str, seed: int, max_samples: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Equal-size random subsets (n = min(N_id, N_ood, max_samples)) of the ID and OOD sample indices."""
    n = min(len(id_indices), len(ood_indices), int(max_samples))
    return (
        seeded_subset(id_indices, n, seed=seed, dataset=id_name, purpose="mixed"),
        seeded_subset(ood_indices, n, seed=seed, dataset=ood_name, purpose="mixed"),
    )


def score_mixed(
    ind: DatasetOutputs,
    ood: DatasetOutputs,
    method: str,
    *,
    id_chosen: np.ndarray,
    ood_chosen: np.ndarray,
    correct: np.ndarray,
    device: Device = None,
) -> Dict[str, float]:
    """``auroc_ood`` and ``auroc_correct_mixed`` of ``method`` on the chosen ID (upstream) and OOD samples.

    ``ind``/``ood`` may be shards; ``correct`` is :func:`nn_correct` of the complete :func:`mixed_union`.
    """
    evaluators = []
    for outputs, chosen in ((ind, id_chosen), (ood, ood_chosen)):
        evaluator = Evaluator(device=device)
        part = outputs.select(np.isin(outputs.indices, chosen))
        if len(part):
            row = part.method_row(method)
            evaluator.update(part.embeddings, part.uncertainties[row], part.labels, indices=part.indices)
        evaluators.append(evaluator)
    return evaluators[0].compute_mixed(evaluators[1], correct=torch.from_numpy(correct))


def flatten(
    per_dataset: Mapping[str, Mapping[str, float]], downstream: Sequence[str]
) -> Dict[str, Optional[float]]:
    """``{"<dataset>_<metric>": value}`` plus ``avg_downstream_<metric>``.

    The average of a metric is the unweighted mean over the ``downstream`` datasets that have it
    (e.g. ``rcorr_entropy`` only over soft-label sets); NaN in any of them makes it NaN.
    """
    flat: Dict[str, Optional[float]] = {
        f"{name}_{key}": value for name, metrics in per_dataset.items() for key, value in metrics.items()
    }
    keys = list(dict.fromkeys(key for name in downstream for key in per_dataset[name]))
    for key in keys:
        values = [per_dataset[name][key] for name in downstream if key in per_dataset[name]]
        flat[f"avg_downstream_{key}"] = float(np.mean(values))
    return flat
