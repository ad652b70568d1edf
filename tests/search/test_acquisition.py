"""LogEI against EI in float64 (and against mpmath far in the tail); acquisition optimisation on known optima."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm

from meta_learning.search import Categorical, Float, SearchSpace
from meta_learning.search.acquisition import (
    expected_improvement,
    log_expected_improvement,
    log_h,
    maximize_acquisition,
    upper_confidence_bound,
)

F64 = torch.float64


def test_log_ei_equals_log_of_ei_where_ei_is_representable():
    g = torch.Generator().manual_seed(0)
    mean = torch.linspace(-6, 4, 400, dtype=F64)
    var = torch.rand(400, generator=g, dtype=F64) * 2 + 0.05
    best = 0.7
    ref = []
    for m, v in zip(mean.tolist(), var.tolist(), strict=True):
        s = math.sqrt(v)
        z = (m - best) / s
        ref.append(math.log(s * (norm.pdf(z) + z * norm.cdf(z))))  # SciPy's normal, independent of torch
    got = log_expected_improvement(mean, var, best)
    assert torch.allclose(got, torch.tensor(ref, dtype=F64), rtol=1e-9, atol=1e-11)
    assert torch.allclose(got.exp(), expected_improvement(mean, var, best), rtol=1e-9)


def test_log_h_in_the_far_tail_matches_high_precision():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 60
    zs = [-1.0, -3.0, -10.0, -40.0, -300.0, -1e5, -1e9]
    got = log_h(torch.tensor(zs, dtype=F64))
    for z, value in zip(zs, got.tolist(), strict=True):
        zm = mpmath.mpf(z)
        ref = mpmath.log(mpmath.npdf(zm) + zm * mpmath.ncdf(zm))
        assert value == pytest.approx(float(ref), rel=1e-10), z
    # where plain EI underflows to 0, LogEI still has a finite, correctly signed gradient
    z = torch.tensor([-40.0, -1e3], dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(log_h(z).sum(), z)
    assert torch.isfinite(grad).all() and (grad > 0).all()
    assert expected_improvement(torch.tensor([-40.0], dtype=F64), torch.ones(1, dtype=F64), 0.0).item() == 0.0


def test_ucb():
    mean, var = torch.tensor([0.0, 1.0], dtype=F64), torch.tensor([4.0, 0.25], dtype=F64)
    assert torch.allclose(upper_confidence_bound(mean, var, beta=9.0), torch.tensor([6.0, 2.5], dtype=F64))


def test_maximize_acquisition_finds_a_known_optimum_in_a_mixed_space():
    space = SearchSpace({"a": Float(0, 1), "c": Categorical(("x", "y", "z")), "b": Float(0, 1)})
    bonus = torch.tensor([0.0, 0.3, 0.1], dtype=F64)

    def acq(x):  # optimum at a=0.31, b=0.77, c='y'
        return -((x[:, 0] - 0.31) ** 2) - 2 * (x[:, 4] - 0.77) ** 2 + x[:, 1:4] @ bonus

    best = maximize_acquisition(acq, space, generator=torch.Generator().manual_seed(0), num_candidates=256)
    cfg = space.decode(best.unsqueeze(0))[0]
    assert cfg["c"] == "y"
    assert cfg["a"] == pytest.approx(0.31, abs=1e-4) and cfg["b"] == pytest.approx(0.77, abs=1e-4)


@pytest.mark.parametrize("lengthscales", [None, [0.05, 1.0, 1.0, 1.0, 3.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
def test_preconditioned_search_finds_the_same_optimum(lengthscales):
    space = SearchSpace({"a": Float(0, 1), "c": Categorical(("x", "y", "z")), "b": Float(0, 1)})

    def acq(x):  # anisotropic: sharp along a, flat along b; optimum at a=0.31, b=0.77 (interior), c free
        return -400 * (x[:, 0] - 0.31) ** 2 - 0.05 * (x[:, 4] - 0.77) ** 2

    ls = None if lengthscales is None else torch.tensor(lengthscales, dtype=F64)
    best = maximize_acquisition(acq, space, generator=torch.Generator().manual_seed(1), num_candidates=64,
                                lengthscales=ls)  # fmt: skip
    assert float(best[0]) == pytest.approx(0.31, abs=1e-5) and float(best[4]) == pytest.approx(0.77, abs=2e-3)
    # the preconditioned search stays inside the box even when 1/ℓ bounds are far from 1
    assert float(best.min()) >= 0.0 and float(best.max()) <= 1.0


def test_categorical_only_space_uses_coordinate_search():
    space = SearchSpace({f"op{i}": Categorical(("conv", "pool", "skip", "none")) for i in range(6)})
    target = torch.tensor([2, 0, 3, 1, 1, 2])

    def acq(x):  # one point of reward per matching choice
        return x.reshape(-1, 6, 4).gather(2, target.view(1, 6, 1).expand(x.shape[0], 6, 1)).sum((1, 2))

    best = maximize_acquisition(acq, space, generator=torch.Generator().manual_seed(0), num_candidates=64)
    assert float(acq(best.unsqueeze(0))) == 6.0
