"""Regularized (aging) evolution as an Optuna sampler (Real, Aggarwal, Huang & Le 2019, Algorithm 1).

Notation: ``P`` the population size, ``S`` the tournament (sample) size, ``s = +1`` when the study maximises and
``-1`` otherwise.

- The first ``P`` trials of a study are uniformly random (the initial population).
- The population is the ``P`` most recently *completed* trials (by completion time, then trial number): a new
  child joins it when it completes and the oldest member leaves. This is the paper's aging: an individual dies
  of age, however good it is, not because it is the worst.
- Parent: ``S`` distinct members drawn uniformly from the population, the best of them by ``s * value``
  (tournament selection).
- Child: the parent with one active parameter mutated (:func:`mutate`): a categorical takes a different choice
  uniformly, an int or float moves by a Gaussian step of ``mutation_sd`` on its encoded ``[0, 1]`` scale (an int
  at least one step), and parameters that become active under their condition are drawn uniformly. For the
  NAS-Bench-201 space (6 categorical edges) this is the benchmark's own mutation: one edge gets another op.

Like every strategy here, the sampler keeps no state: the population is read from the study's trials, so any
Optuna storage can hold an evolution that many workers share, and ``(seed, trial.number)`` seeds each proposal.

Example:
    >>> sampler = RegularizedEvolution(space, seed=0, population_size=10, sample_size=3)
    >>> study = optuna.create_study(direction="maximize", sampler=sampler)
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

import torch
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from meta_learning._checks import check_positive_float, check_positive_int
from meta_learning.search.space import Categorical, Int, Param, SearchSpace
from meta_learning.search.strategies import SpaceSampler, register_strategy

_EPOCH = dt.datetime(1970, 1, 1)


def _random_value(p: Param, generator: torch.Generator) -> Any:
    if isinstance(p, Categorical):
        return p.choices[int(torch.randint(len(p.choices), (1,), generator=generator))]
    return p.decode([float(torch.rand(1, generator=generator, dtype=torch.float64))])


def _mutable(p: Param) -> bool:
    if isinstance(p, Categorical):
        return len(p.choices) > 1
    return True  # Float and Int ranges have low < high


def _mutate_value(p: Param, value: Any, generator: torch.Generator, sd: float) -> Any:
    if isinstance(p, Categorical):
        others = [c for c in p.choices if not (type(c) is type(value) and c == value)]
        return others[int(torch.randint(len(others), (1,), generator=generator))]
    step = sd * float(torch.randn(1, generator=generator, dtype=torch.float64))
    u = p.encode(value)[0] + step
    if not isinstance(p, Int):
        return p.decode([min(max(u, 0.0), 1.0)])
    new = p.decode([min(max(u, 0.0), 1.0)])
    if new == value:  # an int always moves: one step in the direction of the draw (or the only open side)
        new = value + (1 if step >= 0 else -1)
        if not p.low <= new <= p.high:
            new = value - (new - value)
    return new


def mutate(
    space: SearchSpace, params: Mapping[str, Any], generator: torch.Generator, sd: float = 0.1
) -> dict[str, Any]:
    """A copy of ``params`` with one uniformly chosen active parameter changed (see the module notes).

    Parameters whose condition the change switches on are drawn uniformly; those it switches off are dropped.
    Returns ``params`` unchanged when no active parameter can change (every categorical has a single choice).
    """
    names = [n for n, p in space.params.items() if space.active(n, params) and n in params and _mutable(p)]
    if not names:
        return dict(params)
    name = names[int(torch.randint(len(names), (1,), generator=generator))]
    child = dict(params)
    child[name] = _mutate_value(space.params[name], params[name], generator, sd)
    out: dict[str, Any] = {}
    for n, p in space.params.items():
        if space.active(n, out):
            out[n] = child[n] if n in child else _random_value(p, generator)
    return out


class RegularizedEvolution(SpaceSampler):
    """Aging evolution with tournament selection over a :class:`SearchSpace`.

    Args:
        space: the search space (a :class:`SearchSpace` or a plain dict).
        seed: seeds every random choice (per trial number); None for fresh entropy.
        population_size: ``P``, also the number of initial random trials (NAS-Bench-201's REA setting: 10).
        sample_size: ``S``, the tournament size (NAS-Bench-201: 3); ``S = P`` always picks the population's best,
            ``S = 1`` picks uniformly.
        mutation_sd: Gaussian step of int/float mutations on the encoded ``[0, 1]`` scale.
    """

    def __init__(
        self,
        space: SearchSpace | dict[str, Any],
        seed: int | None = None,
        *,
        population_size: int = 10,
        sample_size: int = 3,
        mutation_sd: float = 0.1,
    ) -> None:
        super().__init__(space, seed)
        self.population_size = check_positive_int("population_size", population_size)
        self.sample_size = check_positive_int("sample_size", sample_size)
        if sample_size > population_size:
            raise ValueError(f"sample_size={sample_size} must be <= population_size={population_size}")
        self.mutation_sd = check_positive_float("mutation_sd", mutation_sd)

    def population(self, study: Study, exclude: int | None = None) -> list[FrozenTrial]:
        """The ``P`` most recently completed trials with a finite value, oldest first."""
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.number != exclude and t.value is not None and math.isfinite(t.value)]  # fmt: skip
        done.sort(key=lambda t: (t.datetime_complete or _EPOCH, t.number))
        return done[-self.population_size :]

    def select_parent(self, population: list[FrozenTrial], sign: float, generator: torch.Generator) -> FrozenTrial:
        """Tournament: the best of ``min(S, len(population))`` distinct members drawn uniformly."""
        if not population:
            raise ValueError("the population is empty; there is no parent to select")
        k = min(self.sample_size, len(population))
        picks = torch.randperm(len(population), generator=generator)[:k].tolist()
        return max((population[i] for i in picks), key=lambda t: sign * float(t.value or 0.0))

    def propose(self, study: Study, trial: FrozenTrial, generator: torch.Generator) -> dict[str, Any]:
        started = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number
                   and t.state != TrialState.WAITING]  # fmt: skip
        population = self.population(study, exclude=trial.number)
        if len(started) < self.population_size or not population:
            return self.space.sample(generator)
        if len(study.directions) != 1:
            raise ValueError(f"study {study.study_name!r} has {len(study.directions)} objectives; regularized "
                             "evolution optimises a single objective")  # fmt: skip
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        parent = self.select_parent(population, sign, generator)
        params = {k: v for k, v in parent.params.items() if k in self.space.params}
        return mutate(self.space, params, generator, self.mutation_sd)


register_strategy("evolution", RegularizedEvolution)

__all__ = ["RegularizedEvolution", "mutate"]
