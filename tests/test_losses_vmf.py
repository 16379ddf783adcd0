"""vMF log normaliser and sampler against independent references (mpmath, scipy, closed forms)."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from scipy import special

from uncertain_repr.losses import log_bessel_iv, log_vmf_normalizer, sample_vmf

DIMS = [2, 3, 10, 128, 768]
KAPPAS = np.logspace(-2, 4, 19)  # six orders of magnitude


def _mp_log_c(dim: int, kappa: float) -> float:
    with mpmath.workdps(40):
        v = mpmath.mpf(dim) / 2 - 1
        k = mpmath.mpf(kappa)
        log_c = v * mpmath.log(k) - mpmath.mpf(dim) / 2 * mpmath.log(2 * mpmath.pi) - mpmath.log(mpmath.besseli(v, k))
        return float(log_c)


def _mp_mean_resultant(dim: int, kappa: float) -> float:
    with mpmath.workdps(40):
        return float(mpmath.besseli(mpmath.mpf(dim) / 2, kappa) / mpmath.besseli(mpmath.mpf(dim) / 2 - 1, kappa))


@pytest.mark.parametrize("dim", DIMS)
def test_normalizer_matches_mpmath(dim):
    got = log_vmf_normalizer(torch.tensor(KAPPAS, dtype=torch.float64), dim).numpy()
    want = np.array([_mp_log_c(dim, k) for k in KAPPAS])
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-9)


@pytest.mark.parametrize("dim", DIMS)
def test_normalizer_matches_scipy_where_ive_is_representable(dim):
    v = dim / 2 - 1
    ive = special.ive(v, KAPPAS)
    ok = ive > 1e-250
    want = v * np.log(KAPPAS[ok]) - dim / 2 * np.log(2 * np.pi) - (np.log(ive[ok]) + KAPPAS[ok])
    got = log_vmf_normalizer(torch.tensor(KAPPAS[ok]), dim).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-10)
    if dim == 768:
        assert not ok.all(), "the D=768 grid must exercise the underflow fallback"


def test_normalizer_float32_and_shape():
    kappa = torch.tensor([[0.5, 5.0], [50.0, 500.0]], dtype=torch.float32)
    got = log_vmf_normalizer(kappa, 768)
    assert got.shape == (2, 2) and got.dtype == torch.float32
    want = np.array([[_mp_log_c(768, k) for k in row] for row in kappa.tolist()])
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


@pytest.mark.parametrize("dim", [2, 3, 10, 768])
def test_normalizer_at_zero_is_uniform_limit(dim):
    got = log_vmf_normalizer(torch.tensor([0.0, 1e-9], dtype=torch.float64), dim)
    area = 2 * math.pi ** (dim / 2) / math.gamma(dim / 2) if dim < 300 else None
    want = -math.log(area) if area else math.lgamma(dim / 2) - math.log(2) - dim / 2 * math.log(math.pi)
    np.testing.assert_allclose(got.numpy(), [want, want], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dim", DIMS)
def test_normalizer_gradient_is_minus_bessel_ratio(dim):
    kappa = torch.tensor(KAPPAS, dtype=torch.float64, requires_grad=True)
    log_vmf_normalizer(kappa, dim).sum().backward()
    want = -np.array([_mp_mean_resultant(dim, k) for k in KAPPAS])
    np.testing.assert_allclose(kappa.grad.numpy(), want, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("dim,kappa", [(2, [0.3, 7.0]), (10, [0.01, 3.0, 900.0]), (768, [0.05, 2.0, 4000.0])])
def test_normalizer_gradcheck(dim, kappa):
    k = torch.tensor(kappa, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: log_vmf_normalizer(t, dim), (k,), eps=1e-6 * min(kappa), atol=1e-5)


def test_log_bessel_against_scipy_and_gradient():
    k = torch.tensor([0.1, 1.0, 10.0, 100.0], dtype=torch.float64, requires_grad=True)
    out = log_bessel_iv(k, 2.5)
    np.testing.assert_allclose(out.detach().numpy(), np.log(special.iv(2.5, k.detach().numpy())), rtol=1e-12)
    out.sum().backward()
    kn = k.detach().numpy()
    np.testing.assert_allclose(k.grad.numpy(), special.ivp(2.5, kn) / special.iv(2.5, kn), rtol=1e-10)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: log_vmf_normalizer(torch.tensor([1.0]), 1), ValueError, "dim must be an integer >= 2"),
        (lambda: log_vmf_normalizer(torch.tensor([-1.0]), 3), ValueError, "finite and >= 0"),
        (lambda: log_vmf_normalizer(torch.tensor([float("inf")]), 3), ValueError, "finite"),
        (lambda: log_vmf_normalizer(torch.tensor([1]), 3), TypeError, "floating-point"),
        (lambda: log_bessel_iv(torch.tensor([0.0]), 1.0), ValueError, "> 0"),
        (lambda: sample_vmf(torch.ones(2, 3), torch.ones(3)), ValueError, "kappa must have shape"),
        (lambda: sample_vmf(torch.ones(2, 1), torch.ones(2)), ValueError, "D >= 2"),
        (lambda: sample_vmf(torch.ones(2, 3), -torch.ones(2)), ValueError, ">= 0"),
        (lambda: sample_vmf(torch.ones(2, 3), torch.ones(2), n_samples=0), ValueError, "n_samples"),
    ],
)
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _unit(dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(1, dim, generator=g, dtype=torch.float64), dim=1)


@pytest.mark.parametrize("dim,kappa", [(2, 1.0), (3, 2.0), (10, 5.0), (128, 50.0), (768, 1000.0), (768, 0.5)])
def test_sampler_moments(dim, kappa):
    n = 20000
    mu = _unit(dim, dim)
    x = sample_vmf(mu, torch.tensor([kappa], dtype=torch.float64), n, torch.Generator().manual_seed(1))[:, 0]
    assert x.shape == (n, dim)
    np.testing.assert_allclose(x.norm(dim=1).numpy(), 1.0, atol=1e-12)
    cos = (x @ mu[0]).numpy()
    want = _mp_mean_resultant(dim, kappa)
    assert abs(cos.mean() - want) < 5 * cos.std() / math.sqrt(n) + 1e-9
    # the mean direction is mu: the tangent parts average out
    resid = x.mean(0) - torch.from_numpy(np.array(cos.mean())) * mu[0]
    assert resid.norm() < 5 * math.sqrt(max(1 - want**2, 1e-12) / n) + 1e-9


def test_sampler_extreme_kappas_and_generator():
    mu = torch.cat([_unit(5, 0), _unit(5, 1), _unit(5, 2)])
    kappa = torch.tensor([float("inf"), 0.0, 1e8], dtype=torch.float64)
    x = sample_vmf(mu, kappa, 4000, torch.Generator().manual_seed(3))
    torch.testing.assert_close(x[:, 0], mu[0].expand(4000, 5), rtol=0, atol=1e-12)
    assert abs(float((x[:, 1] @ mu[1]).mean())) < 5 / math.sqrt(4000 * 5)  # uniform: E<x, mu> = 0
    assert float((x[:, 2] @ mu[2]).min()) > 1 - 1e-6
    again = sample_vmf(mu, kappa, 4000, torch.Generator().manual_seed(3))
    other = sample_vmf(mu, kappa, 4000, torch.Generator().manual_seed(4))
    assert torch.equal(x, again) and not torch.equal(x[:, 1], other[:, 1])


def test_sampler_is_reparameterised():
    mu = _unit(6, 5).requires_grad_()
    kappa = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)
    x = sample_vmf(mu / mu.norm(), kappa, 64, torch.Generator().manual_seed(0))
    (x[..., 0].sum() + (x @ torch.arange(6.0, dtype=torch.float64)).sum()).backward()
    assert torch.isfinite(mu.grad).all() and mu.grad.abs().sum() > 0
    assert torch.isfinite(kappa.grad).all() and kappa.grad.abs().sum() > 0


def test_sampler_loop_is_bounded():
    with pytest.raises(RuntimeError, match="did not accept"):
        sample_vmf(_unit(5, 0), torch.tensor([2.0], dtype=torch.float64), 3, max_rounds=0)
