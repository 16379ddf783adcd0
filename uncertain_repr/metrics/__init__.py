"""Evaluation metrics for uncertainty-aware representations (URL benchmark and beyond).

Functional metrics (one concept per module) take torch tensors, numpy arrays or lists, on CPU or
CUDA, and return Python floats (or tensors for per-sample results). Convention everywhere:
higher uncertainty = more uncertain = expected to be wrong / OOD. :class:`Evaluator` streams
batches and returns the URL benchmark's results dict, also under ``torch.distributed``.
"""

from ._checks import UndefinedMetricWarning
from .auroc import auroc, auroc_ood
from .bootstrap import (
    BootstrapInterval,
    PairedDifference,
    bootstrap_ci,
    bootstrap_distribution,
    paired_bootstrap_difference,
    paired_difference,
    percentile_interval,
)
from .classification import top_k_accuracy
from .cropped import cropped_has_bigger_uncertainty
from .evaluator import Evaluator
from .nearest_neighbor import nearest_neighbor_correct, nearest_neighbor_index, recall_at_1, singleton_query_mask
from .r_auroc import r_auroc, r_auroc_mixed
from .retrieval import retrieval_metrics
from .rank_correlation import rank_correlation, rcorr_crop_unc, rcorr_entropy
from .risk_coverage import aurc, risk_coverage_curve
from .soft_label_entropy import soft_label_entropy
from .summary import uncertainty_summary

__all__ = [
    "BootstrapInterval",
    "Evaluator",
    "PairedDifference",
    "UndefinedMetricWarning",
    "aurc",
    "auroc",
    "auroc_ood",
    "bootstrap_ci",
    "bootstrap_distribution",
    "cropped_has_bigger_uncertainty",
    "nearest_neighbor_correct",
    "nearest_neighbor_index",
    "paired_bootstrap_difference",
    "paired_difference",
    "percentile_interval",
    "r_auroc",
    "r_auroc_mixed",
    "rank_correlation",
    "rcorr_crop_unc",
    "rcorr_entropy",
    "recall_at_1",
    "retrieval_metrics",
    "risk_coverage_curve",
    "singleton_query_mask",
    "soft_label_entropy",
    "top_k_accuracy",
    "uncertainty_summary",
]
