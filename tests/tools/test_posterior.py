"""The hybrid posterior against (1) the joint Gaussian posterior written out in full and (2) Li et al.'s
hybrid LinUCB (WWW 2010, Algorithm 2) executed line by line."""

from __future__ import annotations

import json
import math

import pytest
import torch

from meta_learning.tools.posterior import HybridLinearPosterior

D, K = 3, 4
ARMS = ["a", "b", "c"]


def stream(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in range(n):
        arm = ARMS[int(torch.randint(len(ARMS), (1,), generator=g))] if t >= 3 else ARMS[t]
        x = torch.randn(D, generator=g, dtype=torch.float64)
        z = torch.randn(K, generator=g, dtype=torch.float64)
        y = float(torch.rand((), generator=g, dtype=torch.float64))
        out.append((arm, x, z, y))
    return out


def fitted(lam_s=1.5, lam_a=0.7, sigma2=0.3, refresh_every=64, data=None):
    post = HybridLinearPosterior(K, D, lam_s, lam_a, sigma2, refresh_every=refresh_every)
    for arm, x, z, y in data or stream():
        post.update(arm, x, z, y)
    return post


def joint_posterior(data, arms, lam_s, lam_a, sigma2):
    """Mean and covariance of (beta, theta_arm1, ...) from the full design matrix (one column block per arm)."""
    p = K + D * len(arms)
    phi = torch.zeros(len(data), p, dtype=torch.float64)
    y = torch.zeros(len(data), dtype=torch.float64)
    for i, (arm, x, z, r) in enumerate(data):
        j = arms.index(arm)
        phi[i, :K] = z
        phi[i, K + D * j : K + D * (j + 1)] = x
        y[i] = r
    f64 = torch.float64
    prior = torch.cat([torch.full((K,), lam_s, dtype=f64), torch.full((D * len(arms),), lam_a, dtype=f64)])
    precision = torch.diag(prior) + phi.t() @ phi
    cov = torch.linalg.inv(precision)
    return cov @ phi.t() @ y, sigma2 * cov


def query_rows(arms, x, z):
    rows = torch.zeros(len(arms), K + D * len(arms), dtype=torch.float64)
    for j in range(len(arms)):
        rows[j, :K] = z[j]
        rows[j, K + D * j : K + D * (j + 1)] = x
    return rows


def test_predictions_equal_the_joint_gaussian_posterior_including_an_unseen_arm():
    lam_s, lam_a, sigma2 = 1.5, 0.7, 0.3
    data = stream()
    post = fitted(lam_s, lam_a, sigma2, data=data)
    arms = [*ARMS, "never_played"]
    mean, cov = joint_posterior(data, arms, lam_s, lam_a, sigma2)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(D, generator=g, dtype=torch.float64)
    z = torch.randn(len(arms), K, generator=g, dtype=torch.float64)
    rows = query_rows(arms, x, z)
    got_mean, got_var = post.predict(arms, x, z)
    torch.testing.assert_close(got_mean, rows @ mean, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got_var, torch.einsum("ip,pq,iq->i", rows, cov, rows), rtol=1e-10, atol=1e-12)


def test_rank_one_updates_match_exact_recomputation():
    exact = fitted(refresh_every=1)
    fast = fitted(refresh_every=10_000)
    x = torch.linspace(-1, 1, D, dtype=torch.float64)
    z = torch.ones(4, K, dtype=torch.float64)
    for a, b in zip(fast.predict([*ARMS, "new"], x, z), exact.predict([*ARMS, "new"], x, z), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_thompson_draws_have_the_joint_predictive_moments():
    lam_s, lam_a, sigma2 = 1.5, 0.7, 0.3
    data = stream(30)
    post = fitted(lam_s, lam_a, sigma2, data=data)
    arms = [*ARMS, "new"]
    x = torch.tensor([0.5, -1.0, 0.3], dtype=torch.float64)
    z = torch.linspace(-1, 1, len(arms) * K, dtype=torch.float64).reshape(len(arms), K)
    mean, cov = joint_posterior(data, arms, lam_s, lam_a, sigma2)
    rows = query_rows(arms, x, z)
    want_mean, want_cov = rows @ mean, rows @ cov @ rows.t()  # arms are correlated through the shared beta
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([post.sample(arms, x, z, g) for _ in range(8000)])
    sd = want_cov.diag().sqrt()
    assert ((draws.mean(0) - want_mean).abs() / sd).max() < 4 / math.sqrt(8000)
    torch.testing.assert_close(torch.cov(draws.t()), want_cov, rtol=0.08, atol=0.02 * float(want_cov.diag().max()))
    half = torch.stack([post.sample(arms, x, z, g, scale=0.5) for _ in range(4000)])
    torch.testing.assert_close(half.std(0), 0.5 * sd, rtol=0.08, atol=0.0)


def li_hybrid_linucb(data, alpha, query):
    """Li et al. (2010) Algorithm 2, transcribed (identity priors, unit noise)."""
    k, d = K, D
    a0, b0 = torch.eye(k, dtype=torch.float64), torch.zeros(k, dtype=torch.float64)
    A, B, b = {}, {}, {}

    def ensure(a):
        if a not in A:
            A[a], B[a], b[a] = (
                torch.eye(d, dtype=torch.float64),
                torch.zeros(d, k, dtype=torch.float64),
                torch.zeros(d, dtype=torch.float64),
            )

    for arm, x, z, r in data:
        ensure(arm)
        inv = torch.linalg.inv
        a0 = a0 + B[arm].t() @ inv(A[arm]) @ B[arm]
        b0 = b0 + B[arm].t() @ inv(A[arm]) @ b[arm]
        A[arm] = A[arm] + torch.outer(x, x)
        B[arm] = B[arm] + torch.outer(x, z)
        b[arm] = b[arm] + r * x
        a0 = a0 + torch.outer(z, z) - B[arm].t() @ inv(A[arm]) @ B[arm]
        b0 = b0 + r * z - B[arm].t() @ inv(A[arm]) @ b[arm]
    arms, x, z = query
    beta = torch.linalg.inv(a0) @ b0
    out = []
    for j, arm in enumerate(arms):
        ensure(arm)
        ai, a0i = torch.linalg.inv(A[arm]), torch.linalg.inv(a0)
        theta = ai @ (b[arm] - B[arm] @ beta)
        s = (
            z[j] @ a0i @ z[j]
            - 2 * z[j] @ a0i @ B[arm].t() @ ai @ x
            + x @ ai @ x
            + x @ ai @ B[arm] @ a0i @ B[arm].t() @ ai @ x
        )
        out.append(z[j] @ beta + x @ theta + alpha * s.sqrt())
    return torch.stack(out)


def test_upper_confidence_bounds_equal_hybrid_linucb_algorithm_2():
    data = stream(40, seed=3)
    post = fitted(1.0, 1.0, 1.0, data=data)
    arms = [*ARMS, "new"]
    x = torch.tensor([1.0, 0.2, -0.4], dtype=torch.float64)
    z = torch.arange(len(arms) * K, dtype=torch.float64).reshape(len(arms), K) / 10
    mean, var = post.predict(arms, x, z)
    torch.testing.assert_close(mean + 0.8 * var.sqrt(), li_hybrid_linucb(data, 0.8, (arms, x, z)), rtol=1e-9, atol=1e-9)


def test_state_dict_round_trips_through_json_exactly():
    post = fitted()
    post.refresh()
    again = HybridLinearPosterior.from_state_dict(json.loads(json.dumps(post.state_dict())))
    x, z = torch.ones(D, dtype=torch.float64), torch.ones(2, K, dtype=torch.float64)
    for a, b in zip(post.predict(["a", "zz"], x, z), again.predict(["a", "zz"], x, z), strict=True):
        assert torch.equal(a, b)
    assert again.count("a") == post.count("a") > 0


def test_bad_inputs_raise_naming_the_problem():
    post = HybridLinearPosterior(K, D)
    with pytest.raises(ValueError, match=r"x has shape \(2,\)"):
        post.update("a", torch.ones(2), torch.ones(K), 1.0)
    with pytest.raises(ValueError, match=r"reward=nan"):
        post.update("a", torch.ones(D), torch.ones(K), float("nan"))
    with pytest.raises(ValueError, match=r"z has shape"):
        post.predict(["a", "b"], torch.ones(D), torch.ones(3, K))
    with pytest.raises(ValueError, match="shared_dim=0"):
        HybridLinearPosterior(0, D)
    state = post.state_dict()
    state["zz"] = [[0.0]]
    with pytest.raises(ValueError, match="saved zz has shape"):
        HybridLinearPosterior.from_state_dict(state)
