"""LogEI against EI in float64 (and against mpmath far in the tail); acquisition optimisation on known optima."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from scipy.stats import norm
from torch import Tensor

from meta_learning.search import Categorical, Float, Int, SearchSpace
from meta_learning.search.acquisition import (
    _roulette,
    _RowSet,
    expected_improvement,
    log_expected_improvement,
    log_expected_improvement_and_grad,
    log_h,
    maximize_acquisition,
    upper_confidence_bound,
    upper_confidence_bound_and_grad,
)
from meta_learning.search.gp import GaussianProcess

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


def test_closed_form_acquisition_gradients_match_autograd():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(12, 2, generator=g, dtype=F64)
    gp = GaussianProcess(x, torch.randn(12, generator=g, dtype=F64), torch.tensor([-1.0, -0.5, 0.0, -7.0], dtype=F64))
    xq = torch.rand(40, 2, generator=g, dtype=F64)
    leaf = xq.clone().requires_grad_(True)
    mean = gp.posterior(leaf)[0].detach()
    # incumbents that put z above -1, between -1 and -100 (the far tail is checked against mpmath below)
    for best in (float(mean.min()) - 1.0, float(mean.max()) + 3.0, float(mean.max()) + 20.0):
        value = log_expected_improvement(*gp.posterior(leaf), best)
        (ref,) = torch.autograd.grad(value.sum(), leaf)
        got_value, got = log_expected_improvement_and_grad(*gp.posterior_with_grad(xq), best)
        torch.testing.assert_close(got_value, value.detach(), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-9)
        assert torch.isfinite(got).all()
    value = upper_confidence_bound(*gp.posterior(leaf), beta=4.0)
    (ref,) = torch.autograd.grad(value.sum(), leaf)
    got_value, got = upper_confidence_bound_and_grad(*gp.posterior_with_grad(xq), beta=4.0)
    torch.testing.assert_close(got_value, value.detach(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-9)


def test_log_ei_gradient_in_the_far_tail_matches_high_precision():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 80
    zs = [-1e9, -1e5, -300.0, -100.0, -99.9, -40.0, -3.0, -1.0, 0.0, 2.0, 30.0]
    mean, var = torch.tensor(zs, dtype=F64), torch.full((len(zs),), 4.0, dtype=F64)  # σ = 2, best = 0: z = μ / 2
    ones, zeros = torch.ones(len(zs), 1, dtype=F64), torch.zeros(len(zs), 1, dtype=F64)
    _, d_mean = log_expected_improvement_and_grad(mean, var, ones, zeros, 0.0)
    _, d_var = log_expected_improvement_and_grad(mean, var, zeros, ones, 0.0)
    for i, m in enumerate(zs):
        z = mpmath.mpf(m) / 2
        h = mpmath.npdf(z) + z * mpmath.ncdf(z)
        # ∂/∂μ = Φ(z) / (h σ); ∂/∂σ² = φ(z) / (2 h σ²)
        assert float(d_mean[i, 0]) == pytest.approx(float(mpmath.ncdf(z) / h / 2), rel=1e-11), m
        assert float(d_var[i, 0]) == pytest.approx(float(mpmath.npdf(z) / h / 8), rel=1e-11), m


def test_closed_form_and_autograd_searches_agree():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(15, 3, generator=g, dtype=F64)
    y = -((x - 0.6) ** 2).sum(1)
    gp = GaussianProcess(x, y, torch.tensor([-1.0, -1.0, -1.0, 0.0, -9.0], dtype=F64))
    space = SearchSpace({f"x{i}": Float(0, 1) for i in range(3)})
    best = float(y.max())
    found = [
        maximize_acquisition(lambda xq: log_expected_improvement(*gp.posterior(xq), best), space,
                             generator=torch.Generator().manual_seed(0), acq_with_grad=grad, gtol=1e-8)
        for grad in (None, lambda xq: log_expected_improvement_and_grad(*gp.posterior_with_grad(xq), best))
    ]  # fmt: skip
    torch.testing.assert_close(found[0], found[1], rtol=0, atol=1e-4)


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


def test_roulette_starts_the_argmax_then_draws_in_proportion_to_the_acquisition_ratio():
    # log-scale scores: weights exp(v - max) = 1, 0.5, 0.25, 0.25, 0
    values = torch.log(torch.tensor([0.25, 1.0, 0.5, 0.25, 0.0], dtype=F64))
    g = torch.Generator().manual_seed(0)
    seconds = []
    for _ in range(4000):
        idx = _roulette(values, 2, g)
        assert idx[0] == 1 and idx.shape == (2,)
        seconds.append(int(idx[1]))
    freq = torch.bincount(torch.tensor(seconds), minlength=5).to(F64) / 4000
    # the second start: P = 0.5 / 1 for index 2, 0.25 / 1 for 0 and 3 (argmax removed), never the zero weight
    assert torch.allclose(freq, torch.tensor([0.25, 0.0, 0.5, 0.25, 0.0], dtype=F64), atol=0.03)
    # more starts asked than nonzero weights: each nonzero one once, no repeats
    assert sorted(_roulette(values, 10, g).tolist()) == [0, 1, 2, 3]
    assert _roulette(values, 1, g).tolist() == [1]


@pytest.mark.parametrize("selection", ["top", "roulette"])
def test_roulette_also_searches_from_the_best_incumbent(selection):
    space = SearchSpace({"a": Float(0, 1), "b": Float(0, 1)})
    peak = torch.tensor([0.123456, 0.654321], dtype=F64)

    def acq(x):  # a needle of width 1e-4 at the incumbent (height 1) and a broad hill at (0.8, 0.2) (height 0.5)
        needle = torch.exp(-((x - peak) ** 2).sum(1) / (2 * 1e-4**2))
        hill = 0.5 * torch.exp(-((x - torch.tensor([0.8, 0.2], dtype=F64)) ** 2).sum(1) / 0.1)
        return needle + hill

    best = maximize_acquisition(acq, space, generator=torch.Generator().manual_seed(0), num_candidates=256,
                                incumbents=peak.unsqueeze(0), start_selection=selection)  # fmt: skip
    if selection == "roulette":  # the incumbent is a start, and no local search leaves its needle
        assert torch.allclose(best, peak, atol=1e-6)
    else:  # the jittered copies of the incumbent (scale >= 0.02) all miss a needle of width 1e-4
        assert torch.allclose(best, torch.tensor([0.8, 0.2], dtype=F64), atol=1e-3)


def test_start_selection_is_validated():
    space = SearchSpace({"a": Float(0, 1)})
    with pytest.raises(ValueError, match="start_selection.*'best'"):
        maximize_acquisition(lambda x: x[:, 0], space, generator=torch.Generator(), start_selection="best")


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

    best = maximize_acquisition(acq, space, generator=torch.Generator().manual_seed(0), num_candidates=64,
                                max_enumerate=0)  # fmt: skip
    assert float(acq(best.unsqueeze(0))) == 6.0


def _needle(target: Tensor) -> Callable[[Tensor], Tensor]:
    """Reward per matching choice, a trap everywhere one step from ``target`` and a large bonus at it: coordinate
    ascent from a random point rarely reaches it, an exhaustive search always does."""

    def acq(x: Tensor) -> Tensor:
        hits = x.reshape(-1, 6, 4).gather(2, target.view(1, 6, 1).expand(x.shape[0], 6, 1)).sum((1, 2))
        return torch.where(hits == 6, 100.0, torch.where(hits == 5, -50.0, hits.to(F64)))

    return acq


def test_small_discrete_spaces_are_searched_exhaustively():
    space = SearchSpace({f"op{i}": Categorical(("conv", "pool", "skip", "none")) for i in range(6)})
    target = torch.tensor([2, 0, 3, 1, 1, 2])
    acq = _needle(target)
    best = maximize_acquisition(acq, space, generator=torch.Generator().manual_seed(0))
    assert float(acq(best.unsqueeze(0))) == 100.0
    greedy = maximize_acquisition(acq, space, generator=torch.Generator().manual_seed(0), num_candidates=16,
                                  num_starts=2, max_enumerate=0)  # fmt: skip
    assert float(acq(greedy.unsqueeze(0))) < 100.0  # the trap is real: the candidate search misses the needle


@pytest.mark.parametrize("max_enumerate", [0, 10**6])
def test_avoided_configurations_are_not_returned_while_others_remain(max_enumerate):
    space = SearchSpace({"c": Categorical(("a", "b", "c")), "k": Int(0, 1000), "d": Categorical((1, 2))})

    def acq(x):  # best: c='b', k=700, d=2; next: k=699 or 701
        return -((x[:, 3] - space.encode([{"c": "b", "k": 700, "d": 2}])[0, 3]) ** 2) + x[:, 1] + x[:, 5]

    def best_config(avoid):
        x = maximize_acquisition(acq, space, generator=torch.Generator().manual_seed(0), avoid=avoid,
                                 max_enumerate=max_enumerate)  # fmt: skip
        return space.decode(x.unsqueeze(0))[0]

    assert best_config(None) == {"c": "b", "k": 700, "d": 2}
    avoid = space.encode([{"c": "b", "k": 700, "d": 2}, {"c": "a", "k": 3, "d": 1}])
    second = best_config(avoid)
    assert second != {"c": "b", "k": 700, "d": 2}
    assert second["c"] == "b" and second["d"] == 2 and second["k"] in (699, 701)


def test_when_every_configuration_is_avoided_the_best_is_repeated():
    space = SearchSpace({"c": Categorical(("a", "b", "c"))})
    acq = lambda x: x @ torch.tensor([0.0, 2.0, 1.0], dtype=F64)  # noqa: E731
    every = space.enumerate_encoded()
    best = maximize_acquisition(acq, space, generator=torch.Generator().manual_seed(0), avoid=every)
    assert space.decode(best.unsqueeze(0))[0] == {"c": "b"}


def test_row_set_membership_agrees_with_exact_distances():
    space = SearchSpace({"c": Categorical(("a", "b", "c", "d")), "k": Int(0, 100_000), "j": Int(1, 50, log=True)})
    g = torch.Generator().manual_seed(3)
    x = space.canonical(space.sample_encoded(3000, g))
    avoid = torch.cat([x[torch.randperm(3000, generator=g)[:400]], space.canonical(space.sample_encoded(100, g))])
    ref = torch.cdist(x, avoid, compute_mode="donot_use_mm_for_euclid_dist").min(1).values == 0
    got = _RowSet(avoid).contains(x)
    assert ref.sum() >= 400 and torch.equal(got, ref)
    # neighbouring integers differ by 1e-5 in the encoding and must not match
    near = space.encode([{"c": "a", "k": 50_000, "j": 7}, {"c": "a", "k": 50_001, "j": 7}])
    assert _RowSet(near[1:]).contains(near[:1]).tolist() == [False]
