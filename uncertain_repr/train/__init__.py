"""Training an uncertainty method (optional submodule; not imported by ``import uncertain_repr``).

    from uncertain_repr.train import TrainConfig, fit

    result = fit(model, train_set, TrainConfig(epochs=10, batch_size=128), downstream_sets={...})

Command line: ``uncertain-repr train ...`` or ``torchrun --nproc_per_node=N -m uncertain_repr.train ...``.
"""

from .config import TrainConfig, parse_args
from .launch import build_datasets, build_model, main, run
from .loop import FitResult, evaluate, fit, initialize_mean_uncertainty
from .sampler import GlobalOrderSampler

__all__ = [
    "FitResult",
    "GlobalOrderSampler",
    "TrainConfig",
    "build_datasets",
    "build_model",
    "evaluate",
    "fit",
    "initialize_mean_uncertainty",
    "main",
    "parse_args",
    "run",
]
