"""Cross-entropy with optional temperature, label smoothing and soft (probability or count) targets."""

from __future__ import annotations

import torch
from torch import nn

from .base import LossInput, check_target, cross_entropy_per_sample, get_embedding, get_logits

__all__ = ["CrossEntropy"]


class CrossEntropy(nn.Module):
    """Mean cross-entropy ``L = (1/B) sum_i -sum_c q_ic log softmax(tau * z_i)_c``.

    ``q_i = (1 - eps) p_i + eps / C``, where ``p_i`` is the one-hot label (target LongTensor [B]) or the row of
    a soft target [B, C] normalised to sum to 1 (probabilities or annotator counts). With hard labels and
    ``eps > 0`` this equals the original ``LabelSmoothingCrossEntropy`` (``(1-eps) NLL + eps mean_c -log p_c``).

    Inputs: ``output.logits`` [B, C] (or ``output.classifier(output.embedding)``), ``target`` as above.

    Differences from the original: one class covers plain, label-smoothed and soft-target CE; soft targets are
    used as distributions instead of being collapsed to one sampled hard label (which failed for all-zero
    rows -- those raise ``ValueError`` here); ``inv_temp`` (tau) is honoured (the original ignored
    ``--inv_temp`` for CE). Default smoothing is 0 (the PVU-era default; the URL-era default was 0.1).
    """

    def __init__(self, label_smoothing: float = 0.0, inv_temp: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if inv_temp <= 0:
            raise ValueError(f"inv_temp must be > 0, got {inv_temp}")
        self.label_smoothing = float(label_smoothing)
        self.inv_temp = float(inv_temp)

    def forward(self, output: LossInput, target: torch.Tensor) -> torch.Tensor:
        batch = get_embedding(output).shape[0]
        logits = get_logits(output, batch)
        target = check_target(target, batch, logits.shape[1])
        return cross_entropy_per_sample(self.inv_temp * logits, target, self.label_smoothing).mean()

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}, inv_temp={self.inv_temp}"
