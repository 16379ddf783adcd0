"""``sngp``: a random-feature Gaussian-process output layer (SNGP, Liu et al., 2020) on any backbone.

Random features ``phi(e) = sqrt(2 / M) cos(W x + b)`` of ``x = norm(e) / sqrt(gp_kernel_scale)``
approximate an RBF-kernel GP; ``W [M, D]`` are orthogonal random features (rows orthogonal in
blocks of D, row norms ~ chi_D, Yu et al., 2016) and ``b ~ U(0, 2 pi)``, both fixed buffers. The
logits are ``phi(e) beta^T`` with a trainable ``beta [C, M]``. Its Laplace posterior has precision
``ridge * I + P`` where ``P`` accumulates ``Phi^T Phi`` over training batches; the predictive
variance is ``var(e) = ridge * phi^T (ridge * I + P)^-1 phi`` (about 1 far from the data, small
near it), and eval-mode logits are the mean-field ``logits / sqrt(1 + gp_mean_field_factor * var)``.

Covariance protocol: every training-mode forward (method in train mode and ``update_covariance``)
adds its batch to ``P``: with ``gp_cov_momentum < 0`` exactly (``P += Phi^T Phi``), else as a moving
average ``P = m P + (1 - m) Phi^T Phi / B``. Under torch.distributed (DDP) the batch is the global
one: each such forward all-reduces ``Phi^T Phi`` and ``B`` over the ranks, so every rank must run
as many of them, and every rank then holds the ``P`` of one process with the global batch (DDP's
buffer broadcast from rank 0 copies equal values). Eval-mode forwards and single processes
communicate nothing. With exact accumulation, :func:`~uncertain_repr.train.fit` resets ``P`` at the
start of every epoch (:meth:`SNGP.begin_epoch`), so that after training ``P`` holds the last epoch
(the SNGP paper's recipe; the moving average forgets old epochs by itself and is never reset). The
reset happens at the epoch's first update of ``P``: a frozen (eval-mode) method, or one with
``update_covariance=False``, never updates ``P`` and so keeps it. A custom training loop calls
``begin_epoch()`` itself.
The inverse is computed lazily at the first eval forward after a change and cached; it is not saved
(``P`` is).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from ._registry import register_method
from .base import UncertaintyMethod
from .baselines import softmax_entropy
from .predictive import check_mode, check_positive_int
from .spectral_norm import apply_spectral_norm

SNGP_MODES: Tuple[str, ...] = ("entropy", "variance")
OUTPUT_INIT_STD = 0.01


def orthogonal_random_features(num_features: int, dim: int) -> torch.Tensor:
    """``[num_features, dim]`` rows orthogonal within blocks of ``dim``, each scaled to a chi_dim norm."""
    blocks = []
    for _ in range(math.ceil(num_features / dim)):
        q, r = torch.linalg.qr(torch.randn(dim, dim))
        blocks.append(q * torch.sign(torch.diagonal(r)))  # Haar-distributed orthogonal matrix
    rows = torch.cat(blocks)[:num_features]
    return rows * torch.randn(num_features, dim).norm(dim=1, keepdim=True)


def global_gram(features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(Phi^T Phi [M, M], B [])`` of a batch ``Phi [B, M]``, summed over all ranks' batches when
    torch.distributed is initialised with several ranks: one all-reduce that every rank must call
    (as SyncBatchNorm's), after which each rank holds the gram and size of the global batch."""
    gram = features.t() @ features
    count = torch.tensor(float(features.shape[0]), dtype=gram.dtype, device=gram.device)
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return gram, count
    packed = torch.cat([gram.flatten(), count.view(1)])
    dist.all_reduce(packed)
    return packed[:-1].view_as(gram), packed[-1]


@register_method("sngp")
class SNGP(UncertaintyMethod):
    """Random-feature GP head: its own logits ``[B, C]`` (the backbone's classifier is not used).

    Args:
        num_inducing: M, the number of random features.
        gp_kernel_scale: squared length-scale of the RBF kernel (inputs are divided by its square
            root; with ``gp_input_normalization`` a value near D keeps ``|x|`` near 1).
        gp_input_normalization: apply a learnable ``LayerNorm(D)`` to the embedding first.
        gp_cov_momentum: < 0: exact accumulation of the precision; in [0, 1): moving average.
        gp_cov_ridge_penalty: ridge of the precision (the prior precision of ``beta``).
        gp_mean_field_factor: lambda of the mean-field logits (0: plain logits).
        mode: ``"entropy"`` of the (mean-field) softmax, or the GP ``"variance"``.
        update_covariance: update the precision in training-mode forwards (also an attribute).
        use_spec_norm: cap the spectral norm of every ``nn.Linear``/``nn.Conv{1,2,3}d`` of the backbone
            except its classifier at ``spec_norm_bound`` (applied by :meth:`attach`; see
            :mod:`uncertain_repr.methods.spectral_norm` for the state-dict keys).
        spec_norm_bound: the cap.
        spec_norm_iterations: power iterations per training forward.
    """

    def __init__(
        self,
        embed_dim: int,
        num_classes: int = 0,
        *,
        num_inducing: int = 1024,
        gp_kernel_scale: float = 1.0,
        gp_input_normalization: bool = False,
        gp_cov_momentum: float = -1.0,
        gp_cov_ridge_penalty: float = 1.0,
        gp_mean_field_factor: float = 1.0,
        mode: str = "entropy",
        update_covariance: bool = True,
        use_spec_norm: bool = False,
        spec_norm_bound: float = 6.0,
        spec_norm_iterations: int = 1,
    ) -> None:
        super().__init__(embed_dim, num_classes)
        if num_classes < 1:
            raise ValueError("sngp needs num_classes >= 1: give the backbone a classifier (or num_classes)")
        # infinite scale / factor: constant features or zero logits, every softmax uniform
        checks = (
            ("gp_kernel_scale", gp_kernel_scale, 0 < gp_kernel_scale < math.inf, "a finite number > 0"),
            ("gp_cov_momentum", gp_cov_momentum, gp_cov_momentum < 1, "< 1 (negative: exact accumulation)"),
            ("gp_cov_ridge_penalty", gp_cov_ridge_penalty, 0 < gp_cov_ridge_penalty < math.inf, "a finite number > 0"),
            ("gp_mean_field_factor", gp_mean_field_factor, 0 <= gp_mean_field_factor < math.inf, "a finite number >= 0"),
            ("spec_norm_bound", spec_norm_bound, spec_norm_bound > 0, "> 0"),
        )
        for name, value, ok, expected in checks:
            if not ok:
                raise ValueError(f"sngp: {name} must be {expected}, got {value!r}")
        self.num_inducing = check_positive_int(num_inducing, "num_inducing", "sngp")
        self.spec_norm_iterations = check_positive_int(spec_norm_iterations, "spec_norm_iterations", "sngp")
        self.mode = check_mode(mode, SNGP_MODES, "sngp")
        self.gp_kernel_scale = float(gp_kernel_scale)
        self.gp_cov_momentum = float(gp_cov_momentum)
        self.gp_cov_ridge_penalty = float(gp_cov_ridge_penalty)
        self.gp_mean_field_factor = float(gp_mean_field_factor)
        self.update_covariance = bool(update_covariance)
        self.use_spec_norm = bool(use_spec_norm)
        self.spec_norm_bound = float(spec_norm_bound)

        m = self.num_inducing
        self.input_norm = nn.LayerNorm(embed_dim) if gp_input_normalization else nn.Identity()
        self.register_buffer("feature_weight", orthogonal_random_features(m, embed_dim))
        self.register_buffer("feature_bias", 2 * math.pi * torch.rand(m))
        self.output = nn.Linear(m, num_classes, bias=False)
        nn.init.normal_(self.output.weight, std=OUTPUT_INIT_STD)
        self.register_buffer("precision", torch.zeros(m, m))
        self._covariance_cache: Optional[Tuple[tuple, torch.Tensor]] = None
        self._reset_pending = False  # set by begin_epoch, applied by the next update_precision

    def attach(self, backbone: nn.Module, classifier: Optional[nn.Module] = None) -> None:
        """With ``use_spec_norm``: cap the spectral norms of the backbone's layers (idempotent)."""
        if self.use_spec_norm and not apply_spectral_norm(
            backbone, self.spec_norm_bound, n_power_iterations=self.spec_norm_iterations, exclude=classifier
        ):
            raise ValueError("sngp: use_spec_norm=True but the backbone has no nn.Linear/nn.Conv layer to normalise")

    # ---------------------------------------------------------------- GP pieces
    def random_features(self, embedding: torch.Tensor) -> torch.Tensor:
        """``phi(e) [B, M]`` of ``embedding [B, D]``."""
        x = self.input_norm(embedding) / math.sqrt(self.gp_kernel_scale)
        projection = x @ self.feature_weight.to(x.dtype).t() + self.feature_bias.to(x.dtype)
        return math.sqrt(2.0 / self.num_inducing) * torch.cos(projection)

    @torch.no_grad()
    def update_precision(self, features: torch.Tensor) -> None:
        """Add the random features ``[B, M]`` of one batch to the precision (see the module docstring);
        under torch.distributed the batch is the global one, all ranks' (see :func:`global_gram`)."""
        with torch.autocast(features.device.type, enabled=False):  # under AMP the gram would be half precision
            gram, count = global_gram(features.to(self.precision.dtype))
        if self._reset_pending:
            self.reset_covariance()
        if self.gp_cov_momentum < 0:
            self.precision.add_(gram)
        else:
            m = self.gp_cov_momentum
            self.precision.mul_(m).add_(gram / count, alpha=1.0 - m)

    def begin_epoch(self) -> None:
        """Exact accumulation (``gp_cov_momentum < 0``): forget the previous epochs at this epoch's first
        update of the precision (none for a frozen method: it keeps ``P``; see the module docstring)."""
        if self.gp_cov_momentum < 0:
            self._reset_pending = True

    @torch.no_grad()
    def reset_covariance(self) -> None:
        """Forget the accumulated data: the posterior becomes the prior (under exact accumulation
        :meth:`begin_epoch` has it called at the epoch's first update)."""
        self.precision.zero_()
        self._reset_pending = False

    @property
    def covariance(self) -> torch.Tensor:
        """``(ridge * I + P)^-1 [M, M]``, recomputed only after the precision changed (in-place or loaded)."""
        p = self.precision
        key = (p.data_ptr(), p._version, p.device, self.gp_cov_ridge_penalty)
        if self._covariance_cache is None or self._covariance_cache[0] != key:
            ridge = self.gp_cov_ridge_penalty * torch.eye(p.shape[0], dtype=torch.float64, device=p.device)
            chol = torch.linalg.cholesky(p.double() + ridge)
            self._covariance_cache = (key, torch.cholesky_inverse(chol).to(p.dtype))
        return self._covariance_cache[1]

    def posterior_variance(self, features: torch.Tensor) -> torch.Tensor:
        """GP predictive variance ``[B]`` (float32 or wider, also under autocast) of random features ``[B, M]``."""
        features = features.to(torch.promote_types(features.dtype, torch.float32))
        with torch.autocast(features.device.type, enabled=False):  # Sigma's entries reach 1 / ridge
            return self.gp_cov_ridge_penalty * ((features @ self.covariance.to(features.dtype)) * features).sum(-1)

    # ---------------------------------------------------------------- forward
    def forward(
        self, embedding: torch.Tensor, classifier: Optional[nn.Module], *, stopgrad: bool = False
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(uncertainty [B], logits [B, C])``: posterior-mean logits in training, mean-field logits in eval."""
        features = self.random_features(embedding)
        logits = self.output(features)
        if self.training and self.update_covariance:
            self.update_precision(features.detach())
        variance = None
        if not self.training or self.mode == "variance":
            variance = self.posterior_variance(features)
        if not self.training:
            logits = logits / torch.sqrt(1.0 + self.gp_mean_field_factor * variance).unsqueeze(-1)
        if self.mode == "variance":
            uncertainty = (variance.detach() if stopgrad else variance).float()
        else:
            uncertainty = softmax_entropy(logits.detach() if stopgrad else logits)
        return uncertainty, logits

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_covariance_cache"] = None  # recomputed on demand
        return state
