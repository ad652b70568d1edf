"""BayesianOptimizer / Searcher: finds optima, Optuna compatibility, failures, batches, reproducibility, errors."""

from __future__ import annotations

import math
import time

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from meta_learning.search import BayesianOptimizer, GPStrategy, Searcher, direction_from_objective

optuna.logging.set_verbosity(optuna.logging.WARNING)

FORRESTER_MIN = (0.7572487144081974, -6.020740055767083)


def forrester(x: float) -> float:
    return (6 * x - 2) ** 2 * math.sin(12 * x - 4)


@pytest.mark.parametrize("start_selection", ["top", "roulette"])
def test_finds_the_optimum_of_a_1d_function_in_few_steps(start_selection):
    bo = BayesianOptimizer("loss", {"x": (0.0, 1.0)}, storage="memory", seed=0, start_selection=start_selection)
    best = bo.optimize(lambda p: forrester(p["x"]), num_trials=15)
    assert best["x"] == pytest.approx(FORRESTER_MIN[0], abs=5e-3)
    assert bo.best_value - FORRESTER_MIN[1] < 1e-3
    # random search with the same budget is far worse on this function (median regret over seeds)
    regrets = []
    for seed in range(5):
        rs = Searcher({"x": (0.0, 1.0)}, strategy="random", direction="minimize", storage="memory", seed=seed)
        rs.optimize(lambda p: forrester(p["x"]), num_trials=15)
        regrets.append(rs.best_value - FORRESTER_MIN[1])
    assert sorted(regrets)[2] > 10 * (bo.best_value - FORRESTER_MIN[1])


def test_strategy_is_an_optuna_sampler_for_define_by_run_objectives():
    study = optuna.create_study(sampler=GPStrategy({"x": (0.0, 1.0)}, seed=0))
    study.optimize(lambda t: forrester(t.suggest_float("x", 0.0, 1.0)), n_trials=15)
    assert study.best_value - FORRESTER_MIN[1] < 1e-3
    # a parameter outside the strategy's space is sampled independently and stays in range
    study.optimize(lambda t: forrester(t.suggest_float("x", 0.0, 1.0)) + t.suggest_int("extra", 0, 3), n_trials=2)
    assert all(0 <= t.params["extra"] <= 3 for t in study.trials[-2:])


def test_mixed_conditional_space_and_dataframe():
    space = {
        "opt": ["adam", "sgd"],
        "lr": (1e-4, 1e-1, "log"),
        "layers": (1, 4),
    }
    bo = BayesianOptimizer("validation_accuracy", space, storage="memory", seed=1)
    assert bo.direction == "maximize"

    def objective(p):
        return -abs(math.log10(p["lr"]) + 2.5) - 0.3 * abs(p["layers"] - 3) + (0.2 if p["opt"] == "adam" else 0.0)

    best = bo.optimize(objective, num_trials=14)
    assert best["opt"] == "adam" and best["layers"] == 3 and abs(math.log10(best["lr"]) + 2.5) < 0.3
    df = bo.trials_dataframe()
    assert len(df) == 14 and {"params_lr", "params_opt", "params_layers", "value"} <= set(df.columns)
    assert bo.best_trial.value == pytest.approx(df["value"].max())


def test_conditional_parameters_only_when_active():
    from meta_learning.search import Categorical, Float, SearchSpace

    space = SearchSpace({"opt": Categorical(("adam", "sgd")), "momentum": Float(0.0, 0.99, condition=("opt", "sgd"))})
    bo = BayesianOptimizer("loss", space, storage="memory", seed=0, n_startup_trials=3)
    bo.optimize(lambda p: (p.get("momentum", 0.5) - 0.9) ** 2 + (0.0 if p["opt"] == "sgd" else 0.3), num_trials=8)
    for t in bo.study.trials:
        assert ("momentum" in t.params) == (t.params["opt"] == "sgd")


def test_failed_trials_are_recorded_and_avoided():
    def objective(p):  # the region x > 0.6 fails; the optimum sits just left of it
        return float("nan") if p["x"] > 0.6 else (p["x"] - 0.55) ** 2

    bo = BayesianOptimizer("loss", {"x": (0.0, 1.0)}, storage="memory", seed=0, n_startup_trials=6)
    bo.optimize(objective, num_trials=20)
    states = [t.state for t in bo.study.trials]
    assert states.count(TrialState.FAIL) >= 1
    gp_phase = [t for t in bo.study.trials[6:]]
    assert sum(t.state == TrialState.FAIL for t in gp_phase) <= 3  # random search would fail 40% of the time
    assert bo.best_params["x"] == pytest.approx(0.55, abs=0.02)


def test_exceptions_fail_the_trial_and_propagate_unless_caught():
    bo = BayesianOptimizer("loss", {"x": (0.0, 1.0)}, storage="memory", seed=0)

    def boom(p):
        raise RuntimeError("diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        bo.optimize(boom, num_trials=3)
    assert [t.state for t in bo.study.trials] == [TrialState.FAIL]
    with pytest.raises(ValueError, match="no trial of study"):
        bo.optimize(boom, num_trials=2, catch=(RuntimeError,))  # all failed: there is no best trial to return
    assert [t.state for t in bo.study.trials] == [TrialState.FAIL] * 3


def test_pending_trials_spread_a_batch():
    bo = BayesianOptimizer("loss", {"x": (0.0, 1.0), "y": (0.0, 1.0)}, storage="memory", seed=0)
    bo.optimize(lambda p: (p["x"] - 0.3) ** 2 + (p["y"] - 0.6) ** 2, num_trials=8)
    batch = [bo.ask() for _ in range(4)]  # none told yet: each sees the others as pending
    pts = torch.tensor([[t.params["x"], t.params["y"]] for t in batch])
    assert torch.pdist(pts).min() > 1e-3
    for t in batch:
        bo.tell(t, (t.params["x"] - 0.3) ** 2 + (t.params["y"] - 0.6) ** 2)
    assert len(bo.study.get_trials(states=(TrialState.COMPLETE,))) == 12


def test_discrete_space_is_covered_without_repeats():
    space = {"op": ["conv", "pool", "skip", "none"], "k": (1, 5)}  # 20 configurations
    value = lambda p: -abs(p["k"] - 3) + {"conv": 1.0, "pool": 0.5, "skip": 0.0, "none": -1.0}[p["op"]]  # noqa: E731
    bo = BayesianOptimizer("accuracy", space, storage="memory", seed=0)
    bo.optimize(value, num_trials=16)
    batch = [bo.ask() for _ in range(4)]  # pending trials are avoided too
    seen = [(t.params["op"], t.params["k"]) for t in bo.study.trials]
    assert len(set(seen)) == len(seen) == 20  # every configuration once
    assert bo.best_params == {"op": "conv", "k": 3}
    for t in batch:
        bo.tell(t, value(t.params))
    # with every configuration evaluated, a further suggestion repeats rather than failing
    bo.optimize(value, num_trials=1)
    last = bo.study.trials[-1]
    assert last.state == TrialState.COMPLETE and (last.params["op"], last.params["k"]) in set(seen)
    # without the rule, the GP re-proposes evaluated configurations on this deterministic objective
    plain = Searcher(space, strategy="gp", direction="maximize", storage="memory", seed=0, avoid_repeats=False)
    plain.optimize(value, num_trials=20)
    plain_seen = [(t.params["op"], t.params["k"]) for t in plain.study.trials]
    assert len(set(plain_seen)) < 20
    with pytest.raises(TypeError, match="avoid_repeats"):
        GPStrategy(space, avoid_repeats="yes")


def test_same_seed_same_suggestions():
    def run():
        bo = BayesianOptimizer("loss", {"x": (-2.0, 2.0), "k": [1, 2, 3]}, storage="memory", seed=7)
        bo.optimize(lambda p: (p["x"] - 0.5) ** 2 * p["k"], num_trials=8)
        return [t.params for t in bo.study.trials]

    assert run() == run()


def test_ask_tell_with_failures_and_type_errors():
    s = Searcher({"x": (0.0, 1.0)}, strategy="random", direction="maximize", storage="memory", seed=0)
    t = s.ask()
    assert set(t.params) == {"x"} and t.number == 0
    s.tell(t, None)
    t2 = s.ask()
    for bad in ("0.5", True, np.bool_(False), [0.5], torch.tensor([0.5, 0.6]), 1 + 0j):
        with pytest.raises(TypeError, match=r"value must be a real number, got"):
            s.tell(t2, bad)  # type: ignore[arg-type]
    s.tell(t2, 0.5)
    # NumPy scalars and one-element tensors are real numbers too; a NumPy NaN marks the trial failed
    for value in (np.float32(0.25), np.int64(3), torch.tensor(0.75, dtype=torch.float64), np.float64("nan")):
        s.tell(s.ask(), value)
    assert [tr.state for tr in s.study.trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 4 + [TrialState.FAIL]
    assert [tr.value for tr in s.study.trials[1:5]] == [0.5, 0.25, 3.0, 0.75]
    assert all(type(tr.value) is float for tr in s.study.trials[1:5])


def test_an_objective_returning_a_non_number_fails_its_trial_and_raises():
    s = Searcher({"x": (0.0, 1.0)}, strategy="random", direction="maximize", storage="memory", seed=0)
    with pytest.raises(TypeError, match=r"the objective's return value must be a real number, got str \('0.5'\)"):
        s.optimize(lambda p: "0.5", num_trials=2)
    assert [tr.state for tr in s.study.trials] == [TrialState.FAIL]  # not left running (a pending point forever)
    s.optimize(lambda p: np.float32(p["x"]), num_trials=2)
    assert s.best_value == pytest.approx(max(tr.params["x"] for tr in s.study.trials[1:]), rel=1e-6)


def test_direction_from_objective_and_errors():
    assert direction_from_objective("validation_accuracy") == "maximize"
    assert direction_from_objective("val_loss") == "minimize"
    assert direction_from_objective("F1-score") == "maximize"
    with pytest.raises(ValueError, match="it names no known metric.*pass direction="):
        direction_from_objective("validation_metric")
    with pytest.raises(ValueError, match=r"metrics of both kinds: \['acc', 'loss'\]"):
        direction_from_objective("acc_minus_loss")
    with pytest.raises(ValueError, match="search_space is required"):
        BayesianOptimizer("loss")
    with pytest.raises(ValueError, match="acquisition='ei' is not supported"):
        BayesianOptimizer("loss", {"x": (0.0, 1.0)}, storage="memory", acquisition="ei")
    with pytest.raises(ValueError, match="strategy='grid' is not supported"):
        Searcher({"x": (0.0, 1.0)}, strategy="grid", storage="memory")
    with pytest.raises(ValueError, match="n_jobs > 1 needs a storage"):
        BayesianOptimizer("loss", {"x": (0.0, 1.0)}, storage="memory").optimize(lambda p: 0.0, 4, n_jobs=2)
    with pytest.raises(ValueError, match="num_trials=0"):
        BayesianOptimizer("loss", {"x": (0.0, 1.0)}, storage="memory").optimize(lambda p: 0.0, 0)


@pytest.mark.parametrize(
    ("objective", "direction"),
    [
        ("ValAccuracy", "maximize"), ("valAcc", "maximize"), ("valF1", "maximize"), ("mAP@5", "maximize"),
        ("NDCG@10", "maximize"), ("bleu", "maximize"), ("rougeL", "maximize"), ("test AUC", "maximize"),
        ("top1Acc", "maximize"), ("nll", "minimize"), ("valNLL", "minimize"), ("trainLoss", "minimize"),
        ("val-rmse", "minimize"), ("HTTPLatency", "minimize"), ("wall time (s)", "minimize"),
        ("neg_log_loss", "maximize"), ("negative_log_likelihood", "minimize"),
    ],
)  # fmt: skip
def test_direction_from_camel_case_and_common_metric_names(objective, direction):
    assert direction_from_objective(objective) == direction


def test_ucb_acquisition_runs_the_same_loop():
    bo = BayesianOptimizer("loss", {"x": (0.0, 1.0)}, storage="memory", seed=0, acquisition="ucb", ucb_beta=1.0)
    bo.optimize(lambda p: forrester(p["x"]), num_trials=15)
    assert bo.best_value - FORRESTER_MIN[1] < 0.05


def test_default_storage_is_sqlite_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("META_LEARNING_CACHE", str(tmp_path))
    bo = BayesianOptimizer("loss", {"x": (0.0, 1.0)}, study_name="s1", seed=0)
    bo.optimize(lambda p: p["x"], num_trials=2)
    assert bo.storage_url == f"sqlite:///{tmp_path / 'search' / 'studies.db'}"
    assert (tmp_path / "search" / "studies.db").is_file()
    again = optuna.load_study(study_name="s1", storage=bo.storage_url)
    assert len(again.trials) == 2


def test_timeout_stops_starting_trials():
    s = Searcher({"x": (0.0, 1.0)}, strategy="random", direction="minimize", storage="memory", seed=0)
    start = time.monotonic()
    s.optimize(lambda p: time.sleep(0.1) or p["x"], num_trials=1000, timeout=0.35)
    elapsed = time.monotonic() - start
    # trials start at 0, 0.1, 0.2 and 0.3 s (fewer on a loaded machine); none after the deadline
    assert 1 <= len(s.study.trials) <= 5 and elapsed < 3.0, (len(s.study.trials), elapsed)
    assert all(t.state == TrialState.COMPLETE for t in s.study.trials)


@pytest.mark.parametrize("liar", ["mean", "best", "worst"])
def test_constant_liar_imputes_the_documented_value(liar):
    """The pending point is conditioned on 0 (the standardised mean), the best or the worst observed value."""
    strategy = GPStrategy({"x": (0.0, 1.0)}, seed=0, constant_liar=liar)
    x = torch.tensor([[0.1], [0.3], [0.5], [0.7]], dtype=torch.float64)
    y = torch.tensor([1.0, 4.0, 2.0, -3.0], dtype=torch.float64)
    z = (y.numpy() - y.numpy().mean()) / y.numpy().std(ddof=1)  # standardised by hand
    lie = {"mean": 0.0, "best": z.max(), "worst": z.min()}[liar]
    pending = torch.tensor([[0.95]], dtype=torch.float64)
    fit = strategy.surrogate(x, y, pending, torch.Generator().manual_seed(0))
    mean, _ = fit.model.posterior(pending)
    assert mean.item() == pytest.approx(lie, abs=0.02)
    assert fit.model.posterior(x)[0].numpy() == pytest.approx(z, abs=0.02)  # the observations are unchanged
