"""RGPE warm start: ranking losses by hand, weights on related vs unrelated studies, and end-to-end effect."""

from __future__ import annotations

import math
import warnings

import optuna
import pytest
import torch
from optuna.trial import TrialState

from _posterior import assert_posterior_with_grad_matches_autograd
from meta_learning.search import BayesianOptimizer, fit_gp, prior_data, rgpe_weights
from meta_learning.search.gp import standardize
from meta_learning.search.space import SearchSpace
from meta_learning.search.warm_start import RGPE, loo_ranking_losses, ranking_losses

optuna.logging.set_verbosity(optuna.logging.WARNING)
F64 = torch.float64


def target(x: float) -> float:  # minimised; optimum near x = 0.75
    return (6 * x - 2) ** 2 * math.sin(12 * x - 4)


def related(x: float) -> float:  # shifted, scaled and offset copy of the target
    return 2.0 * target(min(max(x + 0.02, 0.0), 1.0)) + 3.0


def unrelated(x: float) -> float:  # its optimum is where the target is worst
    return -target(x)


def prior_pairs(fn, n=25, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = torch.rand(n, generator=g, dtype=F64).tolist()
    return [({"x": x}, fn(x)) for x in xs]


def test_ranking_losses_count_misranked_pairs():
    y = torch.tensor([0.0, 1.0, 2.0])
    samples = torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    # ordered pairs (j, k): a fully reversed ranking misranks all 6, one swapped pair counts twice
    assert ranking_losses(samples, y).tolist() == [0, 6, 2]
    # leave-one-out form compares f_{-j}(x_j) with the observed y_k
    loo = torch.tensor([[0.0, 1.0, 2.0], [1.5, 1.0, 2.0]])
    assert loo_ranking_losses(loo, y).tolist() == [0, 1]


def fitted(fn, n, seed):
    space = SearchSpace.from_dict({"x": (0.0, 1.0)})
    d = prior_data(prior_pairs(fn, n, seed), space, "maximize")  # maximise -> the GP models fn as is
    return fit_gp(d.x, standardize(d.y)[0], generator=torch.Generator().manual_seed(0)), d


def test_ensemble_posterior_gradient_matches_autograd():
    g = torch.Generator().manual_seed(7)
    members = []
    for fn in (target, related, unrelated):
        x = torch.rand(10, 1, generator=g, dtype=F64)
        y = standardize(torch.tensor([fn(float(v)) for v in x[:, 0]], dtype=F64))[0]
        members.append(fit_gp(x, y, generator=g))
    ensemble = RGPE(members[:2], members[2], torch.tensor([0.5, 0.0, 0.8], dtype=F64))  # a zero-weight member
    xq = torch.rand(12, 1, generator=g, dtype=F64)
    assert_posterior_with_grad_matches_autograd(
        ensemble, xq, mean_rtol=1e-9, var_rtol=1e-6, dmean_rtol=1e-7, dvar_rtol=1e-6
    )


def test_weights_follow_ranking_quality():
    gp_related, _ = fitted(lambda x: related(x), 30, 1)
    gp_unrelated, _ = fitted(lambda x: unrelated(x), 30, 2)
    target_gp, _ = fitted(lambda x: target(x), 8, 3)
    w = rgpe_weights([gp_related, gp_unrelated], target_gp, num_samples=500, generator=torch.Generator().manual_seed(0))
    assert w.sum().item() == pytest.approx(1.0)
    assert w[0] > 0.5  # the related study ranks the target's points best (it has more data than the target)
    assert w[1] == 0.0  # the anti-correlated study is cut by weight-dilution prevention
    # with fewer than two target points there is nothing to rank: earlier studies share the weight
    empty_gp, _ = fitted(lambda x: target(x), 1, 4)
    w1 = rgpe_weights([gp_related, gp_unrelated], empty_gp, num_samples=10, generator=torch.Generator())
    assert w1.tolist() == [0.5, 0.5, 0.0]


def bowl(p):  # minimised, optimum near (0.69, 0.30)
    return (p["x"] - 0.7) ** 2 + 2 * (p["y"] - 0.3) ** 2 + 0.1 * math.sin(7 * p["x"])


BOWL_MIN = -0.09669  # scipy.optimize.minimize from (0.7, 0.3)


def trials_to_reach(warm_start, seed, budget, threshold=1e-2):
    bo = BayesianOptimizer("loss", {"x": (0.0, 1.0), "y": (0.0, 1.0)}, storage="memory", seed=seed,
                           warm_start=warm_start)  # fmt: skip
    for i in range(budget):
        trial = bo.ask()
        bo.tell(trial, bowl(trial.params))
        if bo.best_value - BOWL_MIN < threshold:
            return i + 1, bo
    return budget + 1, bo


def study_of(fn, seed):
    g = torch.Generator().manual_seed(seed)
    return [({"x": a, "y": b}, fn({"x": a, "y": b})) for a, b in torch.rand(25, 2, generator=g).tolist()]


def test_related_study_speeds_up_and_unrelated_study_does_not_hurt_much():
    related_study = study_of(lambda p: 3 * bowl({"x": p["x"] + 0.03, "y": p["y"] - 0.02}) + 1, 0)
    unrelated_study = study_of(lambda p: -bowl(p), 1)
    colds, bads = [], []
    for seed in range(6):
        cold, _ = trials_to_reach(None, seed, 12)
        warm, _ = trials_to_reach(related_study, seed, 12)
        bad, bo_bad = trials_to_reach(unrelated_study, seed, 12)
        assert warm <= 5 and warm < cold, (seed, warm, cold)
        assert bo_bad.warm_start_weights[0] == 0.0  # the unrelated study is switched off by weight-dilution prevention
        colds.append(cold)
        bads.append(bad)
    # an unrelated study costs at most about a trial on average (single seeds vary by several trials either way)
    assert sum(bads) / len(bads) <= sum(colds) / len(colds) + 1.0, (bads, colds)


def test_warm_start_from_a_named_study_in_the_same_storage(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    first = BayesianOptimizer("loss", {"x": (0.0, 1.0)}, storage=url, study_name="old", seed=0)
    first.optimize(lambda p: related(p["x"]), num_trials=12)
    second = BayesianOptimizer(
        "loss", {"x": (0.0, 1.0)}, storage=url, study_name="new", seed=0, warm_start="old", n_startup_trials=0
    )
    trial = second.ask()  # without a random start, the first suggestion goes to the earlier study's optimum
    assert trial.params["x"] == pytest.approx(0.73, abs=0.05)
    with pytest.raises(TypeError, match="warm_start"):
        BayesianOptimizer("loss", {"x": (0.0, 1.0)}, storage="memory", warm_start=3.0)


BOX = {"x": (0.0, 1.0), "y": (0.0, 1.0)}
RELATED_BOWL = lambda p: 3 * bowl({"x": p["x"] + 0.03, "y": p["y"] - 0.02}) + 1  # noqa: E731


def warm_bo(seed=0, **options):
    return BayesianOptimizer("loss", BOX, storage="memory", seed=seed, warm_start=study_of(RELATED_BOWL, 0), **options)


@pytest.mark.parametrize("told", [0, 3])
def test_pending_asks_with_a_warm_start_are_spread(told):
    """Four un-told asks: each must see the others as pending in every ensemble member, not only in the current
    study's GP (the earlier study holds all the weight at first). Reference: the same asks when each trial is
    pruned before the next ask (a pruned trial is neither observed nor pending), i.e. without the lie."""

    def batch(visible: bool) -> torch.Tensor:
        bo = warm_bo(n_startup_trials=0)
        for _ in range(told):
            t = bo.ask()
            bo.tell(t, bowl(t.params))
        points = []
        for _ in range(4):
            t = bo.ask()
            points.append([t.params["x"], t.params["y"]])
            if not visible:
                bo.study.tell(t.optuna_trial, state=TrialState.PRUNED)
        return torch.tensor(points, dtype=F64)

    blind, spread = batch(visible=False), batch(visible=True)
    assert torch.pdist(blind).max() < 0.05, blind  # without the lie every ask goes to the same maximiser
    assert torch.pdist(spread).min() > 0.05, spread


def test_weights_ignore_pending_trials():
    bo = warm_bo(n_startup_trials=0)
    for _ in range(3):
        bo.ask()  # running only: nothing observed to rank, so the earlier study keeps all the weight
    assert bo.warm_start_weights == [1.0, 0.0]


def test_reading_the_weights_does_not_change_the_suggestions():
    def run(read: bool) -> list[dict]:
        bo = warm_bo(seed=3)
        for _ in range(6):
            if read:
                assert len(bo.warm_start_weights) == 2
            t = bo.ask()
            bo.tell(t, bowl(t.params))
        return [t.params for t in bo.study.trials]

    assert run(read=True) == run(read=False)


def test_prior_points_outside_the_space_are_dropped_with_a_warning():
    space = SearchSpace.from_dict({"lr": (1e-4, 1e-1, "log"), "k": (1, 4), "act": ["relu", "gelu"]})
    inside = [({"lr": 1e-3, "k": 2, "act": "gelu"}, 0.5), ({"lr": 1e-4, "k": 4, "act": "relu"}, 0.7)]
    outside = [({"lr": 1.0, "k": 2, "act": "relu"}, 0.9), ({"lr": 1e-2, "k": 7, "act": "relu"}, 0.1),
               ({"lr": 5e-5, "k": 0, "act": "gelu"}, 0.2)]  # fmt: skip
    expected = r"dropped 3 of 5 .*'lr' \(2 outside \[0.0001, 0.1\]\), 'k' \(2 outside \[1, 4\]\)"
    with pytest.warns(UserWarning, match=expected):
        d = prior_data(inside + outside, space, "minimize")
    assert torch.equal(d.x, space.encode([p for p, _ in inside]))
    assert d.y.tolist() == [-0.5, -0.7]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prior_data(inside, space, "maximize").y.tolist() == [0.5, 0.7]
