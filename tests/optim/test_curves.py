"""Learning-curve families recover known parameters; predictions, trend tests, early stopping and the pruner."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
import torch

from meta_learning.optim import FAMILIES, LearningCurveAnalyzer, LearningCurvePruner, fit_family

F64 = torch.float64
X = torch.arange(1, 41, dtype=F64)


def curve(name, x, params):
    """The family evaluated at ``x`` (the families are NumPy functions)."""
    return torch.as_tensor(FAMILIES[name][0](np.asarray(x, dtype=float), np.asarray(params, dtype=float)))


def noisy(name, params, sigma=1e-3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return curve(name, X, params) + sigma * torch.randn(X.numel(), generator=g, dtype=F64)


@pytest.mark.parametrize(
    ("name", "params", "tol"),
    [
        ("pow3", [0.92, 0.6, 0.8], 0.02),
        ("exp3", [0.9, 0.15, -0.2], 0.02),
        ("janoschek", [0.95, 0.2, 0.08, 0.9], 0.05),
        ("weibull", [0.9, 0.1, 0.1, 1.2], 0.05),
        ("ilog2", [0.95, 0.4], 0.02),
    ],
)
def test_fit_recovers_known_parameters(name, params, tol):
    p = FAMILIES[name][1]
    y = noisy(name, params)
    fit = fit_family(name, X, y)
    assert fit is not None and fit.params.numel() == p
    assert torch.allclose(fit.params, torch.tensor(params, dtype=F64), rtol=tol, atol=tol)
    assert fit.noise_var == pytest.approx(1e-6, rel=0.5)  # the residual variance is the noise we added
    # the parameter covariance is the Laplace one: the truth lies within 4 standard deviations
    z = (fit.params - torch.tensor(params, dtype=F64)).abs() / fit.covariance.diagonal().sqrt()
    assert (z < 4).all()


def test_prediction_of_the_final_value_from_half_a_curve():
    truth = curve("pow3", np.arange(1, 101), [0.9, 0.7, 0.6])
    g = torch.Generator().manual_seed(1)
    observed = truth[:50] + 2e-3 * torch.randn(50, generator=g, dtype=F64)
    analyzer = LearningCurveAnalyzer(mode="max", bounds=(0.0, 1.0))
    pred = analyzer.predict(observed, at=100)
    assert pred.method == "family_mixture" and sum(pred.weights.values()) == pytest.approx(1.0)
    err = abs(pred.mean - float(truth[-1]))
    assert err < abs(float(observed[-1]) - float(truth[-1])) / 3  # far better than "the last value"
    assert err < 3 * pred.std + 1e-3
    # a loss curve in mode="min" is the same problem mirrored
    loss_pred = LearningCurveAnalyzer(mode="min").predict(-observed, at=100)
    assert loss_pred.mean == pytest.approx(-pred.mean, abs=2e-3)


def test_predictive_variance_has_the_equal_weight_floor():
    """On a curve no family describes (two phases), the families extrapolate differently and the BIC weights pick
    one: the std is then the equal-weight mixture's spread about the BIC mean, per the module's formula."""
    x = np.arange(1, 13, dtype=float)
    observed = torch.as_tensor(0.9 - 0.5 * np.exp(-x / 3) - 0.2 / (1 + x / 30), dtype=F64)
    analyzer = LearningCurveAnalyzer(mode="max", bounds=(0.0, 1.0))
    pred = analyzer.predict(observed, at=60)
    assert set(pred.extrapolations) == set(pred.weights) and len(pred.weights) >= 3
    fits = {f.name: f for f in analyzer.fit(observed)}
    names = sorted(pred.weights)
    w = torch.tensor([pred.weights[k] for k in names], dtype=F64)
    mu = torch.tensor([pred.extrapolations[k] for k in names], dtype=F64)
    at = torch.tensor([60.0], dtype=F64)
    fam_mean, s2 = (torch.cat(parts) for parts in zip(*(fits[k].predict(at) for k in names), strict=True))
    assert torch.allclose(mu, fam_mean)
    mean = float((w * mu).sum())
    bic_var = float((w * (s2 + mu**2)).sum()) - mean**2
    equal_var = float((s2 + (mu - mean) ** 2).mean())
    assert pred.mean == pytest.approx(mean, rel=1e-12)
    assert equal_var > 2 * bic_var  # the floor binds here
    assert pred.std == pytest.approx(math.sqrt(equal_var), rel=1e-9)


def test_too_short_curves_fall_back_to_the_last_value_and_say_so():
    pred = LearningCurveAnalyzer(min_points=5).predict([1.0, 0.8, 0.7], at=10)
    assert pred.method == "last_value" and pred.mean == 0.7 and pred.weights == {}


def test_trend_detection():
    a = LearningCurveAnalyzer(mode="min", window=5)
    improving = [1 / k for k in range(1, 13)]
    flat = [*improving, *[improving[-1]] * 6]
    assert not a.is_plateau(improving[:8])
    assert a.is_plateau(flat)
    assert a.is_diverging([1.0, 0.5, float("nan")])
    assert a.is_diverging([1.0, 0.8, 0.9, 1.1, 1.4, 2.0])
    assert not a.is_diverging(improving)
    # a noisy curve is not diverging because its last reports happen to sit above its first (a sinusoid-MAML
    # training loss, 10-step means); the same curve that then blows up is
    noisy = [3.69, 4.06, 2.94, 5.12, 4.46]
    assert not a.is_diverging(noisy)
    assert a.is_diverging([*noisy, 9.0, 14.0, 20.0])
    # flat curves with 20% noise: the old rule (last three vs the first value) raised a false alarm on 40 of 50
    alarms = 0
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        flat_noise = (1.0 + 0.2 * torch.randn(200, generator=g, dtype=torch.float64)).tolist()
        alarms += any(a.is_diverging(flat_noise[:n]) for n in range(5, 201))
    assert alarms <= 2
    train = [1 / k for k in range(1, 21)]
    val = [0.5 + (k - 10) ** 2 / 200 for k in range(1, 21)]  # best at epoch 10, then rising
    assert a.is_overfitting(train, val)
    assert not a.is_overfitting(train, train)


def test_early_stopping_rule():
    a = LearningCurveAnalyzer(mode="max", bounds=(0.0, 1.0))
    partial = curve("pow3", np.arange(1, 21), [0.8, 0.5, 0.7])
    assert a.should_stop(partial, horizon=100, best=0.9)  # heading for 0.8, the best is 0.9
    assert not a.should_stop(partial, horizon=100, best=0.7)
    assert 0.0 <= a.probability_of_improving(partial, horizon=100, best=0.79) <= 1.0


def test_errors():
    with pytest.raises(ValueError, match="mode='up' is not supported"):
        LearningCurveAnalyzer(mode="up")
    with pytest.raises(ValueError, match="families entry='cubic' is not supported"):
        LearningCurveAnalyzer(families=["cubic"])
    with pytest.raises(ValueError, match="at=3 must be >="):
        LearningCurveAnalyzer().predict([1.0, 0.5, 0.4, 0.3, 0.2], at=3)
    with pytest.raises(ValueError, match="steps must be > 0"):
        LearningCurveAnalyzer().predict([1.0, 0.5], at=3, steps=[0, 1])


def test_pruner_stops_hopeless_trials_in_an_optuna_study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    finals = {0: 0.9, 1: 0.88, 2: 0.91, 3: 0.5, 4: 0.92}

    def objective(trial):
        c = finals[trial.number]
        value = 0.0
        for epoch in range(1, 31):
            value = c - 0.4 * epoch**-0.8
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=LearningCurvePruner(max_resource=30, bounds=(0.0, 1.0)))  # fmt: skip
    study.optimize(lambda t: objective(t), n_trials=5)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]
    assert len(study.trials[3].intermediate_values) < 10  # stopped early, not at the end
    assert math.isfinite(study.best_value)


def test_pruner_without_startup_trials_waits_for_a_first_incumbent():
    """n_startup_trials=0: with no finished trial there is nothing to compare with, so nothing is pruned (it used to
    raise from study.best_value); once a trial has finished, a hopeless curve is pruned."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    finals = [0.5, 0.9, 0.5]
    reported = []

    def objective(trial):
        value = 0.0
        for epoch in range(1, 31):
            value = finals[trial.number] - 0.4 * epoch**-0.8
            trial.report(value, epoch)
            reported.append(trial.number)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    pruner = LearningCurvePruner(max_resource=30, n_startup_trials=0, bounds=(0.0, 1.0))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0), pruner=pruner)
    study.optimize(objective, n_trials=3)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert reported.count(0) == 30  # the first trial, hopeless as it is, ran to the end: there was no incumbent
