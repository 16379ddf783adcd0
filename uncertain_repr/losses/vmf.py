"""von Mises-Fisher machinery shared by the vMF losses: log normaliser and reparameterised sampler.

The vMF density on the unit sphere S^{D-1} is ``p(x | mu, kappa) = C_D(kappa) exp(kappa <mu, x>)`` with

    log C_D(kappa) = (D/2 - 1) log kappa - (D/2) log(2 pi) - log I_{D/2-1}(kappa),

where ``I_v`` is the modified Bessel function of the first kind. ``log I_v`` is evaluated in float64 with
``scipy.special.ive`` (``log I_v(k) = log ive(v, k) + k``); where ``ive`` underflows (large order ``v``,
small ``k``) the uniform asymptotic (Debye) expansion, A&S 9.7.7, is used for ``v >= 15`` and the leading terms
of the power series for smaller ``v``. The gradient is exact:
``d/dk log I_v(k) = I_{v+1}(k) / I_v(k) + v / k``.

Differences from the original (``log_vmf_norm_const``): exact for every dimension ``D >= 2`` and every
``kappa >= 0`` (the original used polynomial fits valid for kappa in [10, 500] and a handful of dimensions,
reused the 1024 fit for all larger ones, and crashed on tensors for other dimensions such as 768); the
polynomial fits are not kept.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["log_bessel_iv", "log_vmf_normalizer", "sample_vmf"]

# ive values below this are treated as underflowed (denormal / zero) and replaced by the fallbacks.
_IVE_TINY = 1e-280
_DEBYE_MIN_ORDER = 15.0
# A&S 9.3.9/9.3.10: coefficients of the Debye polynomials u_1..u_4 in t, lowest power first.
_DEBYE_U = (
    (np.array([0.0, 3.0, 0.0, -5.0]) / 24.0),
    (np.array([0.0, 0.0, 81.0, 0.0, -462.0, 0.0, 385.0]) / 1152.0),
    (np.array([0.0, 0.0, 0.0, 30375.0, 0.0, -369603.0, 0.0, 765765.0, 0.0, -425425.0]) / 414720.0),
    (
        np.array(
            [0.0, 0.0, 0.0, 0.0, 4465125.0, 0.0, -94121676.0, 0.0, 349922430.0, 0.0, -446185740.0, 0.0,
             185910725.0]
        )
        / 39813120.0
    ),
)


def _log_iv_debye(v: float, k: np.ndarray) -> np.ndarray:
    """log I_v(k) by the uniform asymptotic expansion in v (accurate for large v, uniformly in k > 0)."""
    z = k / v
    s = np.sqrt(1.0 + z * z)
    t = 1.0 / s
    eta = s + np.log(z / (1.0 + s))
    series = 1.0 + sum(np.polynomial.polynomial.polyval(t, c) / v ** (n + 1) for n, c in enumerate(_DEBYE_U))
    return v * eta - 0.5 * np.log(2.0 * math.pi * v) - 0.5 * np.log(s) + np.log(series)


def _log_iv_series(v: float, k: np.ndarray, n_terms: int = 8) -> np.ndarray:
    """log I_v(k) by its power series (used only where ive underflows and v is small, i.e. k is tiny)."""
    from scipy import special  # imported where used: scipy costs ~0.2 s of `import uncertain_repr`

    log_half_k = np.log(k / 2.0)
    m = np.arange(n_terms, dtype=np.float64)[:, None]
    terms = 2.0 * m * log_half_k[None] - special.gammaln(m + 1.0) - special.gammaln(v + m + 1.0)
    return v * log_half_k + special.logsumexp(terms, axis=0)


def _log_iv_numpy(v: float, k: np.ndarray, ive_v: np.ndarray | None = None) -> np.ndarray:
    """log I_v(k) for v >= 0 and k > 0 (float64 numpy); ``ive_v`` = ive(v, k) if already computed."""
    from scipy import special
    ive_v = special.ive(v, k) if ive_v is None else ive_v
    ok = ive_v > _IVE_TINY
    out = np.empty_like(k)
    out[ok] = np.log(ive_v[ok]) + k[ok]
    if not ok.all():
        fallback = _log_iv_debye if v >= _DEBYE_MIN_ORDER else _log_iv_series
        out[~ok] = fallback(v, k[~ok])
    return out


def _bessel_ratio_numpy(v: float, k: np.ndarray, ive_v: np.ndarray) -> np.ndarray:
    """I_{v+1}(k) / I_v(k) for k > 0 (float64 numpy), given ive_v = ive(v, k)."""
    from scipy import special
    num = special.ive(v + 1.0, k)
    ok = (num > _IVE_TINY) & (ive_v > _IVE_TINY)
    out = np.empty_like(k)
    out[ok] = num[ok] / ive_v[ok]
    if not ok.all():
        out[~ok] = np.exp(_log_iv_numpy(v + 1.0, k[~ok]) - _log_iv_numpy(v, k[~ok]))
    return out


class _LogBesselIv(torch.autograd.Function):
    """log I_v(kappa) elementwise, differentiable in kappa (float64 evaluation on the CPU)."""

    @staticmethod
    def forward(ctx, kappa: torch.Tensor, v: float) -> torch.Tensor:  # type: ignore[override]
        from scipy import special

        k = kappa.detach().to("cpu", torch.float64).numpy()
        ive_v = special.ive(v, k)
        ctx.save_for_backward(kappa)
        ctx.v, ctx.k, ctx.ive_v = v, k, ive_v
        return torch.from_numpy(_log_iv_numpy(v, k, ive_v)).to(kappa.device, kappa.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (kappa,) = ctx.saved_tensors
        deriv = _bessel_ratio_numpy(ctx.v, ctx.k, ctx.ive_v) + ctx.v / ctx.k
        return grad * torch.from_numpy(deriv).to(kappa.device, kappa.dtype), None


def _check_kappa(kappa: torch.Tensor, name: str) -> None:
    if not torch.is_tensor(kappa) or not kappa.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {type(kappa).__name__}"
                        f"{'' if not torch.is_tensor(kappa) else ' of dtype ' + str(kappa.dtype)}")
    if kappa.numel() and not bool(torch.isfinite(kappa).all() and (kappa >= 0).all()):
        raise ValueError(f"{name} must be finite and >= 0")


def log_bessel_iv(kappa: torch.Tensor, v: float) -> torch.Tensor:
    """``log I_v(kappa)`` elementwise for order ``v >= 0`` and ``kappa > 0``; any shape, differentiable in kappa."""
    _check_kappa(kappa, "kappa")
    if v < 0:
        raise ValueError(f"order v must be >= 0, got {v}")
    if kappa.numel() and not bool((kappa > 0).all()):
        raise ValueError("kappa must be > 0 for log I_v(kappa)")
    return _LogBesselIv.apply(kappa, float(v))


def log_vmf_normalizer(kappa: torch.Tensor, dim: int) -> torch.Tensor:
    """Log normaliser ``log C_D(kappa)`` of the vMF distribution on S^{D-1}, elementwise.

    ``log C_D(k) = (D/2-1) log k - (D/2) log(2 pi) - log I_{D/2-1}(k)``; at ``k = 0`` the limit
    ``-log |S^{D-1}| = lgamma(D/2) - log 2 - (D/2) log pi`` (uniform distribution) is returned, with gradient 0
    (``d/dk log C_D(k) = -I_{D/2}(k) / I_{D/2-1}(k)``).

    Args:
        kappa: concentrations, any shape, finite and ``>= 0``.
        dim: the ambient dimension ``D >= 2``.
    Returns:
        tensor of the same shape, dtype and device as ``kappa``.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an integer >= 2, got {dim!r}")
    _check_kappa(kappa, "kappa")
    v = dim / 2.0 - 1.0
    positive = kappa > 0
    safe = torch.where(positive, kappa, torch.ones_like(kappa))
    value = v * torch.log(safe) - (dim / 2.0) * math.log(2.0 * math.pi) - _LogBesselIv.apply(safe, v)
    at_zero = math.lgamma(dim / 2.0) - math.log(2.0) - (dim / 2.0) * math.log(math.pi)
    return torch.where(positive, value, torch.full_like(value, at_zero))


def _draw(kind: str, shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None,
          dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Standard normal (``kind="normal"``) or U(0, 1] draws on ``like``'s device, from ``generator`` if given
    (drawn on the generator's own device, then moved)."""
    device = like.device if generator is None else generator.device
    fn = torch.randn if kind == "normal" else torch.rand
    out = fn(shape, generator=generator, device=device, dtype=dtype).to(like.device)
    return out if kind == "normal" else out.clamp_min(torch.finfo(dtype).tiny)


def _sample_w(
    kappa: torch.Tensor, dim: int, n_samples: int, generator: torch.Generator | None, max_rounds: int
) -> torch.Tensor:
    """Cosine ``w = <x, mu>`` of vMF samples, shape [S, B], differentiable in kappa (Wood 1994)."""
    shape = (n_samples, kappa.shape[0])
    k = kappa.unsqueeze(0).expand(shape)
    finite = torch.isfinite(k)
    k_safe = torch.where(finite, k, torch.ones_like(k))
    if dim == 3:  # exact inverse CDF: w = 1 + log(u + (1-u) exp(-2k)) / k
        u = _draw("uniform", shape, kappa, generator, kappa.dtype)
        w = 1.0 + torch.logaddexp(torch.log(u), torch.log1p(-u) - 2.0 * k_safe) / k_safe
        w = torch.where(k_safe > 0, w, 1.0 - 2.0 * u)
    else:
        m1 = dim - 1.0
        # b = (-2k + sqrt(4k^2 + (D-1)^2)) / (D-1), written without cancellation for large k.
        b = m1 / (2.0 * k_safe + torch.sqrt(4.0 * k_safe**2 + m1**2))
        # Acceptance in the form of Davidson et al. (2018), finite for every kappa (Wood's x0 -> 1 overflows):
        # t = 2ab / (1 - (1-b) e), accept iff (D-1) log t - t + d >= log u.
        k64 = k_safe.detach().double()
        root = torch.sqrt(4.0 * k64**2 + m1**2)
        b64 = m1 / (2.0 * k64 + root)
        ab = m1 * (m1 + 2.0 * k64 + root) / (4.0 * (2.0 * k64 + root))
        d = 4.0 * ab / (1.0 + b64) - m1 * math.log(m1)
        e = torch.zeros(shape, dtype=torch.float64, device=kappa.device).flatten()
        pending = torch.arange(e.numel(), device=kappa.device)  # flat indices still to accept
        b_flat, ab_flat, d_flat = b64.flatten(), ab.flatten(), d.flatten()
        for _ in range(max_rounds):
            z = _draw("normal", (pending.numel(), dim), kappa, generator)
            e_prop = 0.5 * (1.0 + z[:, 0] / z.norm(dim=1))  # ~ Beta((D-1)/2, (D-1)/2)
            t = 2.0 * ab_flat[pending] / (1.0 - (1.0 - b_flat[pending]) * e_prop)
            log_u = torch.log(_draw("uniform", (pending.numel(),), kappa, generator))
            accept = m1 * torch.log(t) - t + d_flat[pending] >= log_u
            e[pending[accept]] = e_prop[accept]
            pending = pending[~accept]
            if pending.numel() == 0:
                break
        else:
            raise RuntimeError(f"vMF rejection sampler did not accept all samples within {max_rounds} rounds")
        e = e.view(shape).to(kappa.dtype)
        w = (1.0 - (1.0 + b) * e) / (1.0 - (1.0 - b) * e)
    return torch.where(finite, w, torch.ones_like(w))


def sample_vmf(
    mu: torch.Tensor,
    kappa: torch.Tensor,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
    max_rounds: int = 1000,
) -> torch.Tensor:
    """Reparameterised samples from vMF(mu_i, kappa_i): returns [S, B, D].

    Wood (1994) rejection sampling of the cosine ``w = <x, mu>`` (exact inverse CDF for D = 3), a uniform
    tangent direction, and a Householder reflection mapping e_1 to ``mu``. Gradients flow to ``mu`` and to
    ``kappa`` (through ``w``, for the accepted proposals). ``kappa = inf`` gives ``x = mu`` exactly, ``kappa = 0``
    the uniform distribution.

    Args:
        mu: [B, D] unit-norm mean directions, D >= 2.
        kappa: [B] concentrations, ``>= 0`` (``inf`` allowed).
        n_samples: S >= 1.
        generator: optional ``torch.Generator`` (on any device) for reproducible draws.
        max_rounds: bound on rejection rounds (the acceptance rate is above ~0.5, so this never binds in
            practice); exceeding it raises ``RuntimeError`` instead of recursing.
    """
    if mu.dim() != 2 or mu.shape[1] < 2:
        raise ValueError(f"mu must have shape [B, D] with D >= 2, got {tuple(mu.shape)}")
    if kappa.shape != mu.shape[:1]:
        raise ValueError(f"kappa must have shape [B] = {tuple(mu.shape[:1])}, got {tuple(kappa.shape)}")
    if kappa.numel() and bool(torch.isnan(kappa).any() or (kappa < 0).any()):
        raise ValueError("kappa must be >= 0 (inf allowed)")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    batch, dim = mu.shape
    w = _sample_w(kappa.to(mu.dtype), dim, n_samples, generator, max_rounds).unsqueeze(-1)  # [S, B, 1]
    v = _draw("normal", (n_samples, batch, dim - 1), mu, generator, mu.dtype)
    v = v / v.norm(dim=-1, keepdim=True)
    radius = torch.where(w * w < 1.0, torch.sqrt((1.0 - w * w).clamp_min(1e-14)), torch.zeros_like(w))
    x = torch.cat([w, radius * v], dim=-1)  # around e_1
    e1 = torch.zeros_like(mu)
    e1[:, 0] = 1.0
    h = e1 - mu
    h = h / h.norm(dim=-1, keepdim=True).clamp_min(1e-14)
    return x - 2.0 * (x * h).sum(-1, keepdim=True) * h
