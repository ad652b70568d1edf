"""``NeuralArchitectureSearch``: random, Bayesian or evolutionary search over an architecture space, ask/tell on an
Optuna study.

The architecture space's parameters (:attr:`ArchitectureSpace.search_space`) are what the strategy samples: the
search core's :class:`~meta_learning.search.RandomStrategy` (``"random"``), its Gaussian-process BO over the
encoded (one-hot) space :class:`~meta_learning.search.GPStrategy` (``"bayesian"``), or regularized evolution
:class:`~meta_learning.search.evolution.RegularizedEvolution` (``"evolutionary"``). Each trial's configuration
becomes an architecture, the evaluator scores it, and the study (any Optuna storage) keeps the history, so a
search can be resumed, inspected in Optuna's dashboard, or shared by workers on several machines.

Example:
    >>> nas = NeuralArchitectureSearch(NASBench201Space(), strategy="evolutionary", seed=0, storage="memory")
    >>> best = nas.search(num_architectures=100)   # NB201 cell, scored by the tabular benchmark by default
    >>> nas.best_score, len(nas.history)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

import meta_learning.search.evolution  # noqa: F401  (registers the "evolution" strategy)
from meta_learning._checks import check_positive_int
from meta_learning.nas.darts_space import DARTSSpace
from meta_learning.nas.evaluators import FunctionEvaluator, TabularEvaluator, TrainingEvaluator
from meta_learning.nas.nb201 import NASBench201Space
from meta_learning.nas.space import ArchitectureSpace, ParamSpace
from meta_learning.search.space import SearchSpace
from meta_learning.search.strategies import SpaceSampler
from meta_learning.search.study import Searcher, Trial

STRATEGIES = {"random": "random", "bayesian": "gp", "evolutionary": "evolution"}
SPACES: dict[str, Callable[[], ArchitectureSpace]] = {
    "nas-bench-201": NASBench201Space,
    "darts": DARTSSpace,
}


def resolve_space(search_space: Any) -> ArchitectureSpace:
    """An :class:`ArchitectureSpace` from a space object, a name (``"nas-bench-201"``, ``"darts"``), or a plain
    :class:`SearchSpace`/dict (whose architectures are configuration dicts)."""
    if isinstance(search_space, str):
        if search_space not in SPACES:
            raise ValueError(f"search_space={search_space!r} is unknown; named spaces: {', '.join(SPACES)}")
        return SPACES[search_space]()
    if isinstance(search_space, (SearchSpace, Mapping)):
        return ParamSpace(search_space)
    if isinstance(search_space, ArchitectureSpace):
        return search_space
    raise TypeError(
        f"search_space must be an architecture space (NASBench201Space, DARTSSpace, MacroSpace, ...), a space name, "
        f"or a SearchSpace/dict, got {type(search_space).__name__}"
    )


@dataclass(frozen=True)
class ArchitectureTrial:
    """A running trial: its number, the architecture to evaluate and the underlying search trial."""

    number: int
    architecture: Any
    trial: Trial


@dataclass(frozen=True)
class NASRecord:
    """One queried architecture: trial number, canonical string, score (None unless complete), state, seconds."""

    number: int
    architecture: str | None
    score: float | None
    state: str
    duration_s: float | None


@dataclass(frozen=True)
class NASResult:
    """The search's outcome: the best architecture's string and score, and every trial in order."""

    strategy: str
    best_architecture: str
    best_score: float
    records: tuple[NASRecord, ...]

    def incumbent(self) -> list[float]:
        """Best score after each trial (``-inf``/``inf`` before the first completed one), in trial order."""
        out, best = [], -math.inf
        for r in self.records:
            if r.score is not None:
                best = max(best, r.score)
            out.append(best)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NeuralArchitectureSearch:
    """Search an architecture space with a named strategy and an evaluator.

    Args:
        search_space: an architecture space (:class:`NASBench201Space`, :class:`DARTSSpace`, :class:`MacroSpace`,
            any :class:`ArchitectureSpace`), a space name, or a plain ``SearchSpace``/dict.
        strategy: ``"random"``, ``"bayesian"`` (GP-BO of the search core), ``"evolutionary"`` (regularized
            evolution), another registered strategy name, or a :class:`~meta_learning.search.SpaceSampler`.
        evaluator: ``arch -> score`` to maximise (a :class:`TabularEvaluator`, :class:`TrainingEvaluator` or any
            callable). None: the NAS-Bench-201 table for the NB201 space; otherwise give one, or training data, to
            :meth:`search`.
        seed: seeds the strategy.
        direction: ``"maximize"`` (accuracy, default) or ``"minimize"`` (an error or a loss).
        storage, study_name: the Optuna storage and study (see :class:`~meta_learning.search.Searcher`; None is
            an SQLite file under the cache root, ``"memory"`` keeps the study in this process).
        cache: evaluate each distinct architecture once in this process (a repeat query returns the stored score
            and still counts as a query).
        strategy_options: keyword arguments of the strategy (``population_size``, ``sample_size``,
            ``n_startup_trials``, ...).
    """

    def __init__(
        self,
        search_space: Any,
        strategy: str | SpaceSampler = "random",
        evaluator: Callable[[Any], Any] | None = None,
        seed: int | None = None,
        *,
        direction: str = "maximize",
        storage: str | BaseStorage | None = None,
        study_name: str | None = None,
        cache: bool = True,
        **strategy_options: Any,
    ) -> None:
        self.space = resolve_space(search_space)
        if isinstance(strategy, str):
            name = STRATEGIES.get(strategy, strategy)
            self.strategy = strategy
        elif isinstance(strategy, SpaceSampler):
            name, self.strategy = strategy, type(strategy).__name__  # type: ignore[assignment]
        else:
            raise TypeError(f"strategy must be one of {list(STRATEGIES)} or a SpaceSampler, got {strategy!r}")
        self.searcher = Searcher(self.space.search_space, strategy=name, direction=direction, storage=storage,
                                 study_name=study_name, seed=seed, **strategy_options)  # fmt: skip
        self.evaluator = None if evaluator is None else _as_evaluator(evaluator)
        self.cache = bool(cache)
        self._scores: dict[str, float | None] = {}

    # ---------------------------------------------------------------------------------------------- ask / tell
    def ask(self) -> ArchitectureTrial:
        """Open a trial; returns the architecture the strategy proposes."""
        trial = self.searcher.ask()
        return ArchitectureTrial(trial.number, self.space.from_params(trial.params), trial)

    def tell(self, trial: ArchitectureTrial, score: float | None) -> None:
        """Record ``score`` for ``trial`` (None or NaN: the evaluation failed)."""
        if not isinstance(trial, ArchitectureTrial):
            raise TypeError(f"trial must be the ArchitectureTrial returned by ask(), got {type(trial).__name__}")
        self.searcher.tell(trial.trial, score)

    # ---------------------------------------------------------------------------------------------- search
    def search(
        self,
        num_architectures: int = 100,
        *,
        evaluator: Callable[[Any], Any] | None = None,
        train_data: Any = None,
        val_data: Any = None,
        n_jobs: int = 1,
        timeout: float | None = None,
        catch: tuple[type[BaseException], ...] = (),
        progress: bool | None = None,
        **training_options: Any,
    ) -> Any:
        """Query ``num_architectures`` architectures and return the best one found so far in the study.

        Args:
            num_architectures: trials to run now (a resumed study keeps its earlier trials).
            evaluator: overrides the constructor's evaluator for this call.
            train_data, val_data: build a :class:`TrainingEvaluator` (short training with curve-based early
                stopping) when no evaluator is given; ``training_options`` go to it (``epochs``, ``build_kwargs``...).
            n_jobs, timeout, catch, progress: as :meth:`~meta_learning.search.Searcher.optimize`.

        The full history is :attr:`history` (and :attr:`result`).
        """
        check_positive_int("num_architectures", num_architectures)
        score_fn = self._evaluator(evaluator, train_data, val_data, training_options)

        def objective(params: dict[str, Any]) -> float | None:
            arch = self.space.from_params(params)
            key = self.space.to_string(arch)
            if self.cache and key in self._scores:
                return self._scores[key]
            score = score_fn(arch)
            if self.cache:
                self._scores[key] = score
            return score

        self.searcher.optimize(objective, num_trials=num_architectures, n_jobs=n_jobs, timeout=timeout, catch=catch,
                               progress=progress)  # fmt: skip
        return self.best_architecture

    def _evaluator(
        self, evaluator: Any, train_data: Any, val_data: Any, options: dict[str, Any]
    ) -> Callable[[Any], float | None]:
        if options and (train_data is None or evaluator is not None):
            raise TypeError(f"unexpected keyword arguments {sorted(options)}; they configure the training evaluator "
                            "and need train_data/val_data without an evaluator")  # fmt: skip
        if evaluator is not None:
            return _as_evaluator(evaluator)
        if train_data is not None or val_data is not None:
            if train_data is None or val_data is None:
                raise ValueError("give both train_data and val_data to score architectures by training")
            return TrainingEvaluator(self.space, train_data, val_data, **options)
        if self.evaluator is not None:
            return self.evaluator
        if isinstance(self.space, NASBench201Space):
            self.evaluator = TabularEvaluator()
            return self.evaluator
        raise ValueError(f"no evaluator for {self.space!r}: pass evaluator= (a function arch -> score) or "
                         "train_data= and val_data= to train each architecture")  # fmt: skip

    # ---------------------------------------------------------------------------------------------- results
    @property
    def best_architecture(self) -> Any:
        return self.space.from_params(self.searcher.best_params)

    @property
    def best_score(self) -> float:
        return self.searcher.best_value

    @property
    def history(self) -> list[NASRecord]:
        """Every trial of the study, in trial order."""
        return [self._record(t) for t in self.searcher.study.get_trials(deepcopy=False)]

    @property
    def result(self) -> NASResult:
        return NASResult(self.strategy, self.space.to_string(self.best_architecture), self.best_score,
                         tuple(self.history))  # fmt: skip

    def _record(self, t: FrozenTrial) -> NASRecord:
        try:
            arch = self.space.to_string(self.space.from_params(t.params)) if t.params else None
        except ValueError:  # a trial that failed while its parameters were being chosen
            arch = None
        duration = t.duration.total_seconds() if t.duration is not None else None
        return NASRecord(t.number, arch, t.value if t.state.name == "COMPLETE" else None, t.state.name, duration)


def _as_evaluator(evaluator: Any) -> Callable[[Any], float | None]:
    if isinstance(evaluator, (TabularEvaluator, TrainingEvaluator, FunctionEvaluator)):
        return evaluator
    return FunctionEvaluator(evaluator)


__all__ = ["ArchitectureTrial", "NASRecord", "NASResult", "NeuralArchitectureSearch", "resolve_space"]
