"""uncertain_repr: uncertainty-aware pretrained image representations.

``embedding, uncertainty = model(x)`` with shapes ``[B, D]`` and ``[B]``; higher = more uncertain.
"""

from . import losses, metrics
from .hub import load_model
from .methods import UncertaintyMethod, list_methods, register_method
from .model import UncertainOutput, Uncertainizer
from .pretrained import list_pretrained
from .version import __version__

__all__ = [
    "UncertainOutput",
    "Uncertainizer",
    "UncertaintyMethod",
    "__version__",
    "list_methods",
    "list_pretrained",
    "load_model",
    "losses",
    "metrics",
    "register_method",
]
