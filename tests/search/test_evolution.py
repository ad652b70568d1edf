"""Regularized evolution: aging, tournament selection, mutation, the random start, reproducibility."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import optuna
import pytest
import torch
from optuna.trial import TrialState, create_trial

from meta_learning.search import Categorical, Condition, Float, Int, RandomStrategy, Searcher, SearchSpace
from meta_learning.search.evolution import RegularizedEvolution, mutate
from meta_learning.search.strategies import suggest, to_distribution

optuna.logging.set_verbosity(optuna.logging.WARNING)
OPS = ("a", "b", "c", "d", "e")
SPACE = SearchSpace({f"e{i}": Categorical(OPS) for i in range(6)})
T0 = dt.datetime(2024, 1, 1)


def _add(study, params, value, minute, state=TrialState.COMPLETE):
    t = create_trial(state=state, value=value if state == TrialState.COMPLETE else None, params=params,
                     distributions={k: to_distribution(SPACE.params[k]) for k in params})  # fmt: skip
    t.datetime_start = T0 + dt.timedelta(minutes=minute)
    t.datetime_complete = T0 + dt.timedelta(minutes=minute, seconds=30)
    study.add_trial(t)


def _cfg(k):
    return {f"e{i}": OPS[(k + i) % 5] for i in range(6)}


def test_population_ages_out_the_best_individual():
    sampler = RegularizedEvolution(SPACE, seed=0, population_size=4, sample_size=4)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    _add(study, _cfg(0), 100.0, 0)  # by far the best, and the oldest
    for k in range(1, 4):
        _add(study, _cfg(k), float(k), k)
    assert [t.number for t in sampler.population(study)] == [0, 1, 2, 3]
    gen = torch.Generator().manual_seed(0)
    assert sampler.select_parent(sampler.population(study), 1.0, gen).number == 0
    _add(study, _cfg(4), 4.0, 4)  # one more child: the oldest dies, however good it is
    pop = sampler.population(study)
    assert [t.number for t in pop] == [1, 2, 3, 4]
    assert sampler.select_parent(pop, 1.0, gen).number == 4  # S = P: the best of the living
    # the next proposal is the living best with exactly one edge changed
    trial = study.ask()
    params = suggest(SPACE, trial)
    assert sum(params[k] != _cfg(4)[k] for k in params) == 1


def test_population_is_ordered_by_completion_and_skips_failures():
    sampler = RegularizedEvolution(SPACE, seed=0, population_size=2, sample_size=1)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    _add(study, _cfg(0), 5.0, 10)  # completed last although numbered first
    _add(study, _cfg(1), 1.0, 0)
    _add(study, _cfg(2), 2.0, 1)
    _add(study, _cfg(3), None, 20, state=TrialState.FAIL)
    assert [t.number for t in sampler.population(study)] == [2, 0]
    # minimisation: a tournament over the whole population picks the smallest value
    two = RegularizedEvolution(SPACE, seed=0, population_size=2, sample_size=2)
    assert two.select_parent(two.population(study), -1.0, torch.Generator().manual_seed(1)).number == 2


def test_tournament_selection_frequencies_match_the_closed_form():
    """With S = 2 of P = 4, the member of rank r (1 = best) is the parent in (P - r) of the C(4, 2) = 6 pairs."""
    sampler = RegularizedEvolution(SPACE, population_size=4, sample_size=2)
    study = optuna.create_study(direction="maximize")
    for k in range(4):
        _add(study, _cfg(k), float(k), k)
    pop = sampler.population(study)
    gen = torch.Generator().manual_seed(0)
    n = 6000
    counts = Counter(sampler.select_parent(pop, 1.0, gen).number for _ in range(n))
    expected = {3: 3 / 6, 2: 2 / 6, 1: 1 / 6, 0: 0.0}
    for number, p in expected.items():
        assert abs(counts[number] / n - p) < 0.025
    # S = 1 is uniform selection
    uniform = RegularizedEvolution(SPACE, population_size=4, sample_size=1)
    counts = Counter(uniform.select_parent(pop, 1.0, gen).number for _ in range(n))
    assert all(abs(counts[k] / n - 0.25) < 0.025 for k in range(4))


def test_initial_population_is_the_random_strategy():
    evo = Searcher(SPACE, strategy=RegularizedEvolution(SPACE, seed=7, population_size=5), storage="memory")
    rnd = Searcher(SPACE, strategy=RandomStrategy(SPACE, seed=7), storage="memory")
    for _ in range(5):
        a, b = evo.ask(), rnd.ask()
        assert a.params == b.params
        evo.tell(a, 0.0)
        rnd.tell(b, 0.0)


def test_mutation_changes_exactly_one_active_parameter():
    gen = torch.Generator().manual_seed(0)
    space = SearchSpace({
        "depth": Int(1, 3),
        "w1": Categorical((8, 16), condition=Condition("depth", (2, 3))),
        "w2": Categorical((8, 16), condition=Condition("depth", (3,))),
        "lr": Float(1e-4, 1e-1, log=True),
        "fixed": Categorical(("only",)),
    })  # fmt: skip
    for _ in range(300):
        parent = space.sample(gen)
        child = mutate(space, parent, gen)
        space.validate_params(child)
        shared = [k for k in parent if k in child]
        changed = [k for k in shared if parent[k] != child[k]]
        assert len(changed) == 1 and "fixed" not in changed
        if changed != ["depth"]:
            assert set(child) == set(parent)
        else:
            assert abs(child["depth"] - parent["depth"]) >= 1
    for _ in range(200):
        parent = SPACE.sample(gen)
        assert sum(parent[k] != v for k, v in mutate(SPACE, parent, gen).items()) == 1


def test_evolution_solves_a_separable_problem_that_random_search_does_not():
    target = _cfg(2)

    def score(p):
        return sum(p[k] == v for k, v in target.items())

    found = {}
    for name in ("evolution", "random"):
        s = Searcher(SPACE, strategy=name, storage="memory", seed=3)
        s.optimize(score, num_trials=150, progress=False)
        found[name] = s.best_value
    assert found["evolution"] == 6.0 > found["random"]


def test_reproducible_and_validated():
    def run():
        s = Searcher(SPACE, strategy="evolution", storage="memory", seed=11, population_size=4, sample_size=2)
        s.optimize(lambda p: float(sum(ord(v) for v in p.values())), num_trials=20, progress=False)
        return [t.params for t in s.study.trials]

    assert run() == run()
    with pytest.raises(ValueError, match="sample_size"):
        RegularizedEvolution(SPACE, population_size=2, sample_size=3)
    with pytest.raises(ValueError, match="empty"):
        RegularizedEvolution(SPACE).select_parent([], 1.0, torch.Generator())
