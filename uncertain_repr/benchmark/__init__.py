"""The URL benchmark runner: zero-shot evaluation of an uncertainty-aware model, reports and plots.

``ur.benchmark.run(model, ["repr/cub", "soft/cifar10h"], data_dir)`` returns (and with
``out=`` writes) the benchmark's numbers in the original's key names; see ``docs/benchmark.md``.
Not imported by ``import uncertain_repr``.
"""

from .controls import random_uncertainty, sharpness_uncertainty
from .outputs import DatasetOutputs, load_npz, save_npz
from .results import compare_table, format_differences, format_table, load_results, to_csv, write_results
from .runner import load_benchmark_model, recompute, run, weights_sha256

__all__ = [
    "DatasetOutputs",
    "compare_table",
    "format_differences",
    "format_table",
    "load_benchmark_model",
    "load_npz",
    "load_results",
    "random_uncertainty",
    "recompute",
    "run",
    "save_npz",
    "sharpness_uncertainty",
    "to_csv",
    "weights_sha256",
    "write_results",
]
