"""Monte-Carlo predictive distributions: S sets of logits ``[S, B, C]`` -> mean prediction and its uncertainty.

Shared by the methods that produce several predictions per sample (MC dropout, shallow ensembles,
HET-XL). With ``p_s = softmax(logits_s)`` and ``p = mean_s p_s``:

- ``entropy``: the predictive entropy ``H(p)`` (total uncertainty);
- ``jsd``: the mutual information ``H(p) - mean_s H(p_s)`` (the Jensen-Shannon divergence of the
  ``p_s``; epistemic part, 0 when all samples agree);
- ``variance``: ``sum_c Var_s(p_s,c)``, the trace of the covariance of the sampled probability vectors.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from .baselines import softmax_entropy

PREDICTIVE_MODES: Tuple[str, ...] = ("entropy", "jsd", "variance")


def check_mode(mode: str, allowed: Tuple[str, ...], method: str) -> str:
    """``mode`` if it is one of ``allowed``, else a ``ValueError`` naming the method."""
    if mode not in allowed:
        raise ValueError(f"{method}: mode must be one of {', '.join(map(repr, allowed))}; got {mode!r}")
    return mode


def check_positive_int(value: int, name: str, method: str, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (default 1), else a ``ValueError`` naming the argument."""
    try:
        ok = not isinstance(value, bool) and int(value) == value and value >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{method}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_seed(seed: Optional[int], method: str) -> Optional[int]:
    """``seed`` as an int, or ``None``; else a ``ValueError`` (a float seed would be truncated silently)."""
    try:
        ok = seed is None or (not isinstance(seed, (bool, float, str)) and int(seed) == seed)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{method}: seed must be an integer or None, got {seed!r}")
    return None if seed is None else int(seed)


def log_mean_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``log(mean_s softmax(logits_s))`` of ``logits [S, B, C]`` -> ``[B, C]``, computed stably in log space."""
    return torch.logsumexp(torch.log_softmax(logits, dim=-1), dim=0) - math.log(logits.shape[0])


def predictive_uncertainty(logits: torch.Tensor, mode: str) -> torch.Tensor:
    """Uncertainty ``[B]`` (float32, nats for the entropies) of the S predictions ``logits [S, B, C]``."""
    logits = logits.float()
    if mode == "variance":
        return torch.softmax(logits, dim=-1).var(dim=0, unbiased=False).sum(dim=-1)
    total = softmax_entropy(log_mean_softmax(logits))
    if mode == "entropy":
        return total
    if mode == "jsd":
        # H(p) >= mean H(p_s) by concavity; clamp the rounding error so the value stays >= 0
        return (total - softmax_entropy(logits).mean(dim=0)).clamp_min(0.0)
    raise ValueError(f"unknown predictive uncertainty mode {mode!r}; expected one of {PREDICTIVE_MODES}")


def seeded_generator(seed: Optional[int], device: torch.device) -> Optional[torch.Generator]:
    """A fresh generator on ``device`` seeded with ``seed`` (``None``: use torch's global RNG)."""
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(int(seed))


def apply_classifier(classifier: torch.nn.Module, embeddings: torch.Tensor) -> torch.Tensor:
    """``classifier`` applied to ``embeddings [S, B, D]`` as one batch of ``S * B`` rows -> ``[S, B, C]``."""
    s, b, d = embeddings.shape
    return classifier(embeddings.reshape(s * b, d)).reshape(s, b, -1)
