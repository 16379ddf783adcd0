"""Uncertainty methods: how an uncertainty ``[B]`` is computed from an embedding ``[B, D]``."""

from . import baselines, deep_pred_net, ensemble, hetxl, mc_dropout, pred_net, pred_net_logits, prototype, sngp  # noqa: F401  (registers the built-in methods)
from ._registry import create_method, get_method_class, list_methods, register_method
from .base import UncertaintyMethod

__all__ = ["UncertaintyMethod", "create_method", "get_method_class", "list_methods", "register_method"]
