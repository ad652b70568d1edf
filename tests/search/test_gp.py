"""Gaussian process against closed forms computed independently in NumPy/SciPy (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import gamma as gamma_dist
from scipy.stats import multivariate_normal, norm

from _posterior import assert_posterior_with_grad_matches_autograd
from meta_learning.search.gp import (
    GaussianProcess,
    GPPrior,
    _matern52_and_slope,
    fit_gp,
    log_marginal_likelihood,
    log_marginal_likelihood_and_grad,
    matern52,
    standardize,
)

F64 = torch.float64


def matern52_np(a, b, ls, s2):
    """Matern-5/2 written out element by element."""
    k = np.empty((len(a), len(b)))
    for i in range(len(a)):
        for j in range(len(b)):
            r = math.sqrt(sum(((a[i, d] - b[j, d]) / ls[d]) ** 2 for d in range(a.shape[1])))
            k[i, j] = s2 * (1 + math.sqrt(5) * r + 5 * r * r / 3) * math.exp(-math.sqrt(5) * r)
    return k


def data(n=12, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=F64)
    y = torch.sin(6 * x[:, 0]) + x[:, 1] ** 2 + 0.05 * torch.randn(n, generator=g, dtype=F64)
    return x, y, torch.tensor([0.3, 0.7, 1.5, math.log(0.8), math.log(0.01)], dtype=F64)


def unpack(theta, d):
    return np.exp(theta[:d].numpy()), math.exp(theta[d]), math.exp(theta[d + 1])


def test_posterior_matches_closed_form():
    x, y, theta = data()
    theta[:3] = theta[:3].log()
    gp = GaussianProcess(x, y, theta)
    xq = torch.rand(7, 3, generator=torch.Generator().manual_seed(5), dtype=F64)
    ls, s2, noise = unpack(theta, 3)
    k = matern52_np(x.numpy(), x.numpy(), ls, s2) + noise * np.eye(len(x))
    ks = matern52_np(xq.numpy(), x.numpy(), ls, s2)
    mean_ref = ks @ np.linalg.solve(k, y.numpy())
    var_ref = s2 - np.einsum("ij,ji->i", ks, np.linalg.solve(k, ks.T))
    mean, var = gp.posterior(xq)
    np.testing.assert_allclose(mean.numpy(), mean_ref, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(var.numpy(), var_ref, rtol=1e-8, atol=1e-11)


def test_kernel_in_place_and_under_autograd_agree_with_the_element_wise_formula():
    g = torch.Generator().manual_seed(5)
    a, b = torch.rand(7, 3, generator=g, dtype=F64), torch.rand(5, 3, generator=g, dtype=F64)
    ls = torch.tensor([0.3, 0.9, 2.0], dtype=F64)
    a_copy, b_copy = a.clone(), b.clone()
    ref = matern52_np(a.numpy(), b.numpy(), ls.numpy(), 1.7)
    with torch.no_grad():  # in place
        k_torch, slope = _matern52_and_slope(a, b, ls, 1.7)
    k_np, slope_np = _matern52_and_slope(a.numpy(), b.numpy(), ls.numpy(), 1.7)  # NumPy: in place
    a_rec = a.clone().requires_grad_(True)  # autograd recording: fresh arrays
    k_rec = matern52(a_rec, b, ls, 1.7)
    for k in (k_torch.numpy(), k_np, k_rec.detach().numpy()):
        np.testing.assert_allclose(k, ref, rtol=1e-12, atol=1e-14)
    assert torch.equal(a, a_copy) and torch.equal(b, b_copy)  # the inputs are never written
    # the slope G = -2 dk/d(r²): against a central difference of the kernel in r²
    r2 = ((a[:, None] - b[None]) / ls).pow(2).sum(-1).numpy()
    m52 = lambda q: 1.7 * (1 + np.sqrt(5 * q) + 5 * q / 3) * np.exp(-np.sqrt(5 * q))  # noqa: E731
    np.testing.assert_allclose(slope.numpy(), -2 * (m52(r2 + 1e-7) - m52(r2 - 1e-7)) / 2e-7, rtol=1e-6)
    np.testing.assert_allclose(slope_np, slope.numpy(), rtol=1e-14)
    k_rec.sum().backward()  # and the recorded one differentiates
    assert a_rec.grad is not None and torch.isfinite(a_rec.grad).all()


def test_log_marginal_likelihood_matches_scipy():
    x, y, theta = data()
    theta[:3] = theta[:3].log()
    ls, s2, noise = unpack(theta, 3)
    cov = matern52_np(x.numpy(), x.numpy(), ls, s2) + noise * np.eye(len(x))
    ref = multivariate_normal(mean=np.zeros(len(x)), cov=cov).logpdf(y.numpy())
    assert float(log_marginal_likelihood(theta, x, y)) == pytest.approx(ref, rel=1e-10)


def scipy_log_prior(theta):
    """GPPrior(categorical_columns=(0,)) with its defaults, from SciPy: column 0 lognormal N(½ log D, 3), the other
    lengthscales Gamma(3, 6 min(1, √(2/D))) densities of ℓ = e^θ, log σ_f² ~ N(0, 1), log σ_n² ~ N(-8, 2)."""
    d = theta.numel() - 2
    v = theta.tolist()
    total = norm(0.5 * math.log(d), math.sqrt(3.0)).logpdf(v[0])
    rate = 6.0 * min(1.0, math.sqrt(2.0 / d))
    total += sum(gamma_dist(3.0, scale=1 / rate).logpdf(math.exp(t)) for t in v[1:d])
    return total + norm(0.0, 1.0).logpdf(v[d]) + norm(-8.0, 2.0).logpdf(v[d + 1])


@pytest.mark.parametrize("d", [1, 3, 6])
def test_closed_form_gradient_matches_autograd(d):
    g = torch.Generator().manual_seed(d)
    x = torch.rand(15, d, generator=g, dtype=F64)
    x[3] = x[2]  # a repeated point: r = 0 on an off-diagonal entry
    y = torch.randn(15, generator=g, dtype=F64)
    for _ in range(3):
        theta = torch.cat([0.7 * torch.randn(d, generator=g, dtype=F64) - 0.5,
                           torch.randn(2, generator=g, dtype=F64) - torch.tensor([0.0, 3.0], dtype=F64)])  # fmt: skip
        t = theta.clone().requires_grad_(True)
        value = log_marginal_likelihood(t, x, y)
        (ref,) = torch.autograd.grad(value, t)
        got_value, got = log_marginal_likelihood_and_grad(theta, x, y)
        assert got_value == pytest.approx(float(value.detach()), rel=1e-12)
        torch.testing.assert_close(torch.as_tensor(got), ref, rtol=1e-9, atol=1e-9)
        prior = GPPrior(categorical_columns=(0,))  # one lognormal lengthscale, the others Gamma
        t = theta.clone().requires_grad_(True)
        (ref_prior,) = torch.autograd.grad(prior.log_prob(t), t)
        lp, lp_grad = prior.log_prob_and_grad(theta)
        torch.testing.assert_close(torch.as_tensor(lp_grad), ref_prior, rtol=1e-12, atol=1e-12)
        assert lp - float(prior.log_prob(theta)) == pytest.approx(0.0, abs=1e-9)
        # the value against SciPy's densities (log p(θ) is defined up to a constant: compare with θ = 0)
        zero = torch.zeros_like(theta)
        assert lp - prior.log_prob_and_grad(zero)[0] == pytest.approx(
            scipy_log_prior(theta) - scipy_log_prior(zero), rel=1e-9, abs=1e-9
        )


@pytest.mark.parametrize("d", [1, 4])
def test_posterior_gradient_in_closed_form_matches_autograd(d):
    g = torch.Generator().manual_seed(10 + d)
    x = torch.rand(20, d, generator=g, dtype=F64)
    y = torch.randn(20, generator=g, dtype=F64)
    theta = torch.cat([torch.full((d,), math.log(0.4), dtype=F64), torch.tensor([0.2, math.log(1e-3)], dtype=F64)])
    gp = GaussianProcess(x, y, theta)
    xq = torch.cat([torch.rand(9, d, generator=g, dtype=F64), x[5:6]])  # the last query is an observed point
    assert_posterior_with_grad_matches_autograd(gp, xq, mean_rtol=1e-10, var_rtol=1e-7, dmean_rtol=1e-8, dvar_rtol=1e-7)
    dmean = gp.posterior_with_grad(xq)[2]
    # the mean's gradient against central differences of the NumPy closed form, independently of torch
    ls, s2, noise = unpack(theta, d)
    k_inv_y = np.linalg.solve(matern52_np(x.numpy(), x.numpy(), ls, s2) + noise * np.eye(20), y.numpy())
    q, h = xq[0].numpy(), 1e-6
    for j in range(d):
        e = np.eye(d)[j] * h
        fd = (matern52_np((q + e)[None], x.numpy(), ls, s2) - matern52_np((q - e)[None], x.numpy(), ls, s2)) @ k_inv_y
        assert float(dmean[0, j]) == pytest.approx(float(fd[0]) / (2 * h), rel=1e-5, abs=1e-7)
    # without observations: the prior, flat
    empty = GaussianProcess(x[:0], y[:0], theta).posterior_with_grad(xq)
    assert torch.equal(empty[2], torch.zeros_like(xq)) and torch.equal(empty[3], torch.zeros_like(xq))


def test_leave_one_out_matches_refitting_without_the_point():
    x, y, theta = data(n=9)
    theta[:3] = theta[:3].log()
    gp = GaussianProcess(x, y, theta)
    loo_mean, loo_var = gp.leave_one_out()
    noise = math.exp(float(theta[-1]))
    for i in range(len(x)):
        keep = torch.arange(len(x)) != i
        m, v = GaussianProcess(x[keep], y[keep], theta).posterior(x[i : i + 1])
        assert float(loo_mean[i]) == pytest.approx(float(m[0]), rel=1e-8, abs=1e-10)
        assert float(loo_var[i]) == pytest.approx(float(v[0]) + noise, rel=1e-8)


def test_joint_samples_have_the_posterior_moments():
    x, y, _ = data(n=6, d=2)
    theta = torch.tensor([math.log(0.3), 0.0, math.log(1e-3)], dtype=F64)
    gp = GaussianProcess(x[:, :1], y, theta)
    xq = torch.linspace(0, 1, 5, dtype=F64).unsqueeze(1)
    s = gp.sample_joint(xq, 40000, torch.Generator().manual_seed(0))
    mean, var = gp.posterior(xq)
    assert torch.allclose(s.mean(0), mean, atol=0.02)
    assert torch.allclose(s.var(0), var, rtol=0.05, atol=1e-3)


def test_fit_finds_the_map_and_relevant_dimensions():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 2, generator=g, dtype=F64)
    y, _, _ = standardize(torch.sin(8 * x[:, 0]))  # the second input is irrelevant
    gp = fit_gp(x, y, generator=torch.Generator().manual_seed(1))
    prior = GPPrior()

    def log_post(t):
        return float(log_marginal_likelihood(t, x, y) + prior.log_prob(t))

    # the optimum beats the prior median and random perturbations of itself
    assert log_post(gp.theta) > log_post(prior.mode(2))
    for _ in range(10):
        assert log_post(gp.theta) >= log_post(gp.theta + 0.05 * torch.randn(4, generator=g, dtype=F64)) - 1e-6
    assert gp.lengthscale[1] > 5 * gp.lengthscale[0]
    assert gp.noise_var < 1e-2


def test_empty_gp_is_the_prior():
    gp = fit_gp(torch.zeros(0, 2, dtype=F64), torch.zeros(0, dtype=F64), generator=torch.Generator())
    mean, var = gp.posterior(torch.rand(3, 2, dtype=F64))
    assert torch.equal(mean, torch.zeros(3, dtype=F64)) and torch.allclose(var, gp.signal_var.expand(3))


def test_shape_errors():
    with pytest.raises(ValueError, match="theta has shape"):
        GaussianProcess(torch.zeros(3, 2, dtype=F64), torch.zeros(3, dtype=F64), torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="x must be"):
        GaussianProcess(torch.zeros(3, 2, dtype=F64), torch.zeros(4, dtype=F64), torch.zeros(4, dtype=F64))
