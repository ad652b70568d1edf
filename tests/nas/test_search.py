"""NeuralArchitectureSearch: strategies on the NAS-Bench-201 table, history, ask/tell, caching, training evaluator."""

from __future__ import annotations

import math

import optuna
import pytest
import torch

from meta_learning.nas import (
    MacroSpace,
    NASBench201Space,
    NeuralArchitectureSearch,
    TabularEvaluator,
)
from meta_learning.search import Categorical, SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize("strategy", ["random", "evolutionary", "bayesian"])
def test_strategies_on_the_table(strategy, nb201_table):
    n = 14 if strategy == "bayesian" else 40
    nas = NeuralArchitectureSearch(NASBench201Space(), strategy=strategy, evaluator=TabularEvaluator(nb201_table),
                                   seed=0, storage="memory")  # fmt: skip
    best = nas.search(num_architectures=n, progress=False)
    history = nas.history
    assert len(history) == n and all(r.state == "COMPLETE" for r in history)
    for r in history:
        assert r.score == nb201_table.accuracy(r.architecture)  # the score is the table's value of that cell
    assert nas.best_score == max(r.score for r in history) == nb201_table.accuracy(best)
    incumbent = nas.result.incumbent()
    assert incumbent == [max(r.score for r in history[: k + 1]) for k in range(n)]
    again = NeuralArchitectureSearch(NASBench201Space(), strategy=strategy, evaluator=TabularEvaluator(nb201_table),
                                     seed=0, storage="memory")  # fmt: skip
    again.search(num_architectures=n, progress=False)
    assert [r.architecture for r in again.history] == [r.architecture for r in history]


def test_default_evaluator_is_the_table(nb201_table_path, monkeypatch):
    monkeypatch.setenv("META_LEARNING_DATA", str(nb201_table_path.parents[1]))
    nas = NeuralArchitectureSearch(search_space="nas-bench-201", strategy="random", seed=1, storage="memory")
    best = nas.search(num_architectures=5, progress=False)
    assert nas.best_score == nas.evaluator.table.accuracy(best)


def test_ask_tell_and_minimisation():
    space = SearchSpace({"a": Categorical((0, 1, 2, 3)), "b": Categorical((0, 1, 2, 3))})
    nas = NeuralArchitectureSearch(space, strategy="evolutionary", seed=0, direction="minimize", storage="memory",
                                   population_size=4, sample_size=2)  # fmt: skip
    for _ in range(30):
        trial = nas.ask()
        arch = trial.architecture
        nas.tell(trial, float((arch["a"] - 2) ** 2 + (arch["b"] - 1) ** 2))
    assert nas.best_architecture == {"a": 2, "b": 1} and nas.best_score == 0.0
    with pytest.raises(TypeError, match="ArchitectureTrial"):
        nas.tell(3, 1.0)  # type: ignore[arg-type]


def test_repeated_architectures_are_evaluated_once():
    calls = []
    space = {"op": ["a", "b"]}
    nas = NeuralArchitectureSearch(space, strategy="random", evaluator=lambda a: calls.append(a) or len(a["op"]),
                                   seed=0, storage="memory")  # fmt: skip
    nas.search(num_architectures=12, progress=False)
    assert len(nas.history) == 12 and len(calls) == len({c["op"] for c in calls}) <= 2


def test_failed_evaluations_and_resume(tmp_path):
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    space = {"op": ["a", "b", "c"], "k": [1, 3]}
    score = lambda a: math.nan if a["op"] == "c" else {"a": 1.0, "b": 2.0}[a["op"]] * a["k"]  # noqa: E731
    nas = NeuralArchitectureSearch(space, evaluator=score, seed=0, storage=url, study_name="s")
    nas.search(num_architectures=8, progress=False)
    states = {r.state for r in nas.history}
    assert states <= {"COMPLETE", "FAIL"} and "FAIL" in states
    resumed = NeuralArchitectureSearch(space, evaluator=score, seed=0, storage=url, study_name="s")
    resumed.search(num_architectures=4, progress=False)
    assert len(resumed.history) == 12 and resumed.best_score == max(r.score or -1 for r in resumed.history)


def test_search_by_training(tmp_path):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 2
    x = torch.randn(60, 4, generator=g) + 2.0 * y[:, None]
    space = MacroSpace("mlp", input_shape=(4,), num_classes=2, depths=(1, 2), widths=(4, 8), activations=("relu",))
    nas = NeuralArchitectureSearch(space, strategy="random", seed=0, storage="memory")
    best = nas.search(num_architectures=3, train_data=(x[:40], y[:40]), val_data=(x[40:], y[40:]), epochs=3,
                      batch_size=8, progress=False)  # fmt: skip
    assert best.kind == "mlp" and 0.5 <= nas.best_score <= 1.0
    with pytest.raises(ValueError, match="no evaluator"):
        nas.search(num_architectures=1)
    with pytest.raises(TypeError, match="unexpected keyword"):
        nas.search(num_architectures=1, evaluator=lambda a: 1.0, epochs=3)


def test_argument_errors():
    with pytest.raises(ValueError, match="unknown"):
        NeuralArchitectureSearch("nb-101", storage="memory")
    with pytest.raises(ValueError, match="strategy"):
        NeuralArchitectureSearch("nas-bench-201", strategy="reinforce", storage="memory")
    with pytest.raises(TypeError, match="search_space"):
        NeuralArchitectureSearch(42, storage="memory")  # type: ignore[arg-type]
    nas = NeuralArchitectureSearch("darts", evaluator=lambda a: 1.0, storage="memory")
    with pytest.raises(ValueError, match="num_architectures"):
        nas.search(num_architectures=0)
