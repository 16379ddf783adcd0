"""Loss prediction (URL "Losspred") and its ranking variant (the PVU objective, "losspred-order").

Both share: per-sample task loss ``l_i = CE(tau * z_i, y_i)`` (logits ``z`` [B, C], soft-target CE when
``target`` is a float [B, C] probability/count matrix), used DETACHED as the regression target, and the total

    L = c * (1/B) sum_i l_i + lambda * L_unc,     c = 1 if train_classifier else 0.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import LossInput, check_target, cross_entropy_per_sample, get_embedding, get_logits, get_uncertainty

__all__ = ["LossPred", "LossPredOrder", "RiskPred"]


class _LossPredictionBase(nn.Module):
    """Shared task-loss computation; subclasses define ``uncertainty_loss(u, l)`` with ``l`` detached."""

    min_batch = 1

    def __init__(self, lambda_value: float = 1.0, inv_temp: float = 1.0, train_classifier: bool = False) -> None:
        super().__init__()
        if inv_temp <= 0:
            raise ValueError(f"inv_temp must be > 0, got {inv_temp}")
        if not lambda_value >= 0:
            raise ValueError(f"lambda_value must be >= 0 (a negative weight trains the opposite), got {lambda_value}")
        self.lambda_value = float(lambda_value)
        self.inv_temp = float(inv_temp)
        self.train_classifier = bool(train_classifier)

    def uncertainty_loss(self, unc: torch.Tensor, task_loss: torch.Tensor) -> torch.Tensor:
        """The uncertainty term from predicted ``unc`` [B] and the detached per-sample ``task_loss`` [B]."""
        raise NotImplementedError

    def forward(self, output: LossInput, target: torch.Tensor) -> torch.Tensor:
        batch = get_embedding(output, self.min_batch).shape[0]
        unc = get_uncertainty(output, batch)
        unc = unc.to(torch.promote_types(unc.dtype, torch.float32))  # the targets' precision (float32 or more)
        logits = get_logits(output, batch)
        target = check_target(target, batch, logits.shape[1])
        task_loss = cross_entropy_per_sample(self.inv_temp * logits, target)
        loss = self.lambda_value * self.uncertainty_loss(unc, task_loss.detach().to(unc.dtype))
        if self.train_classifier:
            loss = loss + task_loss.mean()
        return loss

    def extra_repr(self) -> str:
        return (f"lambda_value={self.lambda_value}, inv_temp={self.inv_temp}, "
                f"train_classifier={self.train_classifier}")


class LossPred(_LossPredictionBase):
    """URL "Losspred": the uncertainty regresses the detached per-sample task loss.

    ``L_unc = (1/B) sum_i (u_i - l_i)^2`` with ``u`` = ``output.uncertainty`` [B], ``l_i = CE(tau z_i, y_i)``
    (see the module docstring for the total). Any B >= 1.

    Args:
        lambda_value: weight of ``L_unc`` (``--lambda-value``).
        inv_temp: tau, multiplies the logits before the CE.
        train_classifier: add the mean CE term (c = 1). Default False, as the original's HEAD default
            ``--freeze_classifier True`` (the URL-era runs trained the classifier: pass True).
    """

    def uncertainty_loss(self, unc: torch.Tensor, task_loss: torch.Tensor) -> torch.Tensor:
        return ((unc - task_loss) ** 2).mean()


class RiskPred(LossPred):
    """URL-era "Riskpred" (``--loss riskpred``, renamed ``losspred`` later): the classifier's mean CE
    plus the MSE of the uncertainty to the detached per-sample CE,

        L = (1/B) sum_i l_i + lambda * (1/B) sum_i (u_i - l_i)^2,    l_i = CE(z_i, y_i),

    i.e. :class:`LossPred` with ``inv_temp = 1`` and the CE term always on (the original
    ``RiskPrediction`` had neither a temperature nor a way to drop the task loss).

    Args:
        lambda_value: weight of the uncertainty term (``--lambda-value``).
    """

    def __init__(self, lambda_value: float = 1.0) -> None:
        super().__init__(lambda_value=lambda_value, inv_temp=1.0, train_classifier=True)


class LossPredOrder(_LossPredictionBase):
    """PVU pairwise ranking loss on the ORDER of the per-sample task losses.

    For each pair (i, j): ``s_ij = sign(l_i - l_j)``, set to 0 when ``|l_i - l_j| < leeway`` or on an exact tie,
    ``h_ij = max(0, margin - s_ij (u_i - u_j))`` if ``s_ij != 0`` else 0, and
    ``L_unc = (1/P) sum_pairs h_ij`` over all P pairs (uninformative pairs count in P but add 0).

    Pairing: ``"consecutive"`` (the original) pairs (0,1), (2,3), ... -- with an odd batch the last sample is
    unpaired and ignored; ``"all"`` uses every i < j (P = B(B-1)/2). Needs B >= 2.

    Differences from the original: ties with ``leeway = 0`` give no ranking signal (the original scored them as
    "second is larger", a spurious gradient); uninformative pairs add 0 instead of the constant ``margin``
    (same gradients, loss value lower by a constant); odd batches work; an all-pairs variant; ``margin`` is a
    parameter (hard-coded 0.1 in the original, in raw uncertainty units).

    Args:
        margin: hinge margin gamma (> 0).
        leeway: rho >= 0; pairs whose task losses differ by less than rho give no signal.
        pairing: ``"consecutive"`` or ``"all"``.
        lambda_value: weight of the ranking term (as in :class:`LossPred`).
        inv_temp: inverse temperature of the per-sample task loss (as in :class:`LossPred`).
        train_classifier: also train the classifier with the mean task loss (as in :class:`LossPred`).
    """

    min_batch = 2

    def __init__(
        self,
        margin: float = 0.1,
        leeway: float = 0.0,
        pairing: str = "consecutive",
        lambda_value: float = 1.0,
        inv_temp: float = 1.0,
        train_classifier: bool = False,
    ) -> None:
        super().__init__(lambda_value, inv_temp, train_classifier)
        if margin <= 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        if leeway < 0:
            raise ValueError(f"leeway must be >= 0, got {leeway}")
        if pairing not in ("consecutive", "all"):
            raise ValueError(f"pairing must be 'consecutive' or 'all', got {pairing!r}")
        self.margin = float(margin)
        self.leeway = float(leeway)
        self.pairing = pairing

    def pairs(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Index tensors (i, j) of the compared pairs for a batch of size ``batch``."""
        if self.pairing == "all":
            idx = torch.triu_indices(batch, batch, offset=1, device=device)
            return idx[0], idx[1]
        first = torch.arange(0, batch - 1, 2, device=device)
        return first, first + 1

    def uncertainty_loss(self, unc: torch.Tensor, task_loss: torch.Tensor) -> torch.Tensor:
        i, j = self.pairs(unc.shape[0], unc.device)
        diff = task_loss[i] - task_loss[j]
        sign = torch.sign(diff) * (diff.abs() >= self.leeway)
        hinge = torch.relu(self.margin - sign * (unc[i] - unc[j]))
        return torch.where(sign != 0, hinge, torch.zeros_like(hinge)).mean()

    def extra_repr(self) -> str:
        return f"margin={self.margin}, leeway={self.leeway}, pairing={self.pairing!r}, " + super().extra_repr()
