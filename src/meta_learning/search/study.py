"""Ask/tell search over a :class:`SearchSpace`, persisted in an Optuna storage.

``Searcher`` is a thin client of an Optuna study: :meth:`Searcher.ask` opens a trial and lets the strategy (an
Optuna sampler) choose every active parameter, :meth:`Searcher.tell` records the value, and
:meth:`Searcher.optimize` is a loop over the two — in this process, or in ``n_jobs`` worker processes that share
the study through its storage. Because the study lives in the storage, Optuna's dashboard, pruners and
``optuna.load_study`` work on it, and workers on other machines can join it with the same ``study_name`` and an
RDB (PostgreSQL/MySQL) URL.

Example:
    >>> searcher = Searcher({"x": (-5.0, 5.0)}, strategy="gp", direction="minimize", storage="memory", seed=0)
    >>> best = searcher.optimize(lambda p: (p["x"] - 1.0) ** 2, num_trials=20)
"""

from __future__ import annotations

import inspect
import math
import multiprocessing as mp
import numbers
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, SupportsFloat, cast

import numpy as np
import optuna
import torch
from optuna.storages import BaseStorage, InMemoryStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from meta_learning._checks import check_choice, check_positive_float, check_positive_int
from meta_learning._io import cache_root
from meta_learning.search.space import SearchSpace
from meta_learning.search.strategies import SpaceSampler, make_strategy, suggest


@dataclass(frozen=True)
class Trial:
    """A running trial: its ``number`` in the study and the configuration ``params`` to evaluate."""

    number: int
    params: dict[str, Any]
    optuna_trial: optuna.Trial = field(repr=False, compare=False)


def default_storage_url() -> str:
    """SQLite file under the cache root (``$META_LEARNING_CACHE/search/studies.db``)."""
    path = cache_root() / "search" / "studies.db"
    return f"sqlite:///{path}"


def open_storage(storage: str | BaseStorage | None) -> tuple[BaseStorage, str | None]:
    """``(storage, url)``: None -> the default SQLite file, ``"memory"`` -> in memory, a URL -> an RDB storage."""
    if isinstance(storage, BaseStorage):
        return storage, getattr(storage, "url", None)
    if storage is None:
        storage = default_storage_url()
    if not isinstance(storage, str):
        raise TypeError(f"storage must be None, 'memory', a database URL or an optuna storage, got {storage!r}")
    if storage == "memory":
        return InMemoryStorage(), None
    return _rdb(storage), storage


def _rdb(url: str) -> RDBStorage:
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # concurrent writers wait for the file lock instead of failing with "database is locked"
        kwargs = {"connect_args": {"timeout": 120}}
    return RDBStorage(url, engine_kwargs=kwargs)


class Searcher:
    """Ask/tell search with a registered strategy (``"random"``, ``"gp"``, ...) on an Optuna storage.

    Args:
        search_space: a :class:`SearchSpace` or a plain dict (see :meth:`SearchSpace.from_dict`).
        strategy: a registered strategy name or a :class:`SpaceSampler` instance.
        direction: ``"maximize"`` or ``"minimize"``.
        storage: None (SQLite file under the cache root), ``"memory"``, a database URL
            (``sqlite:///path.db``, ``postgresql://...``) or any ``optuna.storages.BaseStorage``.
        study_name: join this study if it exists in ``storage`` (else create it); default a fresh unique name.
        seed: seeds the strategy.
        strategy_options: extra keyword arguments of the strategy.
    """

    def __init__(
        self,
        search_space: SearchSpace | Mapping[str, Any],
        strategy: str | SpaceSampler = "gp",
        direction: str = "maximize",
        storage: str | BaseStorage | None = None,
        study_name: str | None = None,
        seed: int | None = None,
        **strategy_options: Any,
    ) -> None:
        self.space = SearchSpace.from_dict(search_space)
        self.direction = check_choice("direction", direction, ("maximize", "minimize"))
        if isinstance(strategy, SpaceSampler):
            if strategy_options:
                raise ValueError(f"strategy options {sorted(strategy_options)} given with a strategy instance; "
                                 "pass them to the instance instead")  # fmt: skip
            self.sampler = strategy
        else:
            self.sampler = make_strategy(strategy, self.space, seed=seed, **strategy_options)
        self.storage, self._url = open_storage(storage)
        name = study_name or f"study-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        direction_literal = cast(Literal["minimize", "maximize"], self.direction)
        self.study = optuna.create_study(
            storage=self.storage,
            sampler=self.sampler,
            study_name=name,
            direction=direction_literal,
            load_if_exists=True,
        )
        if self.study.direction.name.lower() != self.direction:
            raise ValueError(f"study {name!r} already exists with direction {self.study.direction.name.lower()!r}, "
                             f"not {self.direction!r}")  # fmt: skip

    @property
    def study_name(self) -> str:
        return self.study.study_name

    @property
    def storage_url(self) -> str | None:
        """The database URL (None for in-memory or journal storages)."""
        return self._url

    # ---------------------------------------------------------------------------------------------- ask / tell
    def ask(self) -> Trial:
        """Open a trial and choose its configuration."""
        ot = self.study.ask()
        return Trial(ot.number, suggest(self.space, ot), ot)

    def tell(self, trial: Trial | int, value: SupportsFloat | None) -> None:
        """Record ``value`` for ``trial``: a real number (Python, NumPy or a one-element tensor); ``None``, NaN or inf
        marks it failed (the GP then avoids the region)."""
        ref = trial.optuna_trial if isinstance(trial, Trial) else trial
        number = None if value is None else real_number("value", value)
        if number is None or not math.isfinite(number):
            self.study.tell(ref, state=TrialState.FAIL)
            return
        self.study.tell(ref, number)

    # ---------------------------------------------------------------------------------------------- results
    @property
    def best_trial(self) -> FrozenTrial:
        """The best finished trial (an ``optuna.trial.FrozenTrial``)."""
        if not self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            counts = {st.name: 0 for st in TrialState}
            for t in self.study.get_trials(deepcopy=False):
                counts[t.state.name] += 1
            summary = ", ".join(f"{n}={c}" for n, c in counts.items() if c)
            raise ValueError(f"no trial of study {self.study_name!r} has completed yet ({summary or 'no trials'})")
        return self.study.best_trial

    @property
    def best_params(self) -> dict[str, Any]:
        return dict(self.best_trial.params)

    @property
    def best_value(self) -> float:
        return float(self.best_trial.value)  # type: ignore[arg-type]  # a COMPLETE trial has a value

    def trials_dataframe(self) -> Any:
        """All trials as a pandas DataFrame (Optuna's columns: number, value, params_*, state, ...)."""
        return self.study.trials_dataframe()

    # ---------------------------------------------------------------------------------------------- optimize
    def optimize(
        self,
        objective_function: Callable[..., float | None],
        num_trials: int = 50,
        n_jobs: int = 1,
        timeout: float | None = None,
        catch: tuple[type[BaseException], ...] = (),
        progress: bool | None = None,
    ) -> dict[str, Any]:
        """Evaluate ``num_trials`` configurations and return the best parameters.

        Args:
            objective_function: ``f(params) -> float``; ``f(params, trial=optuna_trial)`` if it declares a
                ``trial`` parameter (for ``trial.report`` / ``trial.should_prune`` with Optuna pruners). Return
                None or NaN for a failed evaluation.
            num_trials: trials to run in total (split over the workers).
            n_jobs: worker processes sharing the study through its storage (not an in-memory one). Running
                trials count as pending (constant liar), but a trial whose sampler has not returned yet has no
                parameters to lie about: two workers asking at the same moment may propose the same point.
            timeout: seconds after which no new trial is started.
            catch: exception types recorded as failed trials instead of stopping the search.
            progress: tqdm bar (default: on when attached to a terminal; single process only).
        """
        check_positive_int("num_trials", num_trials)
        check_positive_int("n_jobs", n_jobs)
        if timeout is not None:
            check_positive_float("timeout", timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        if n_jobs == 1:
            run_trials(self, objective_function, num_trials, deadline, catch, progress)
        else:
            self._optimize_parallel(objective_function, num_trials, n_jobs, timeout, catch)
        return self.best_params

    def _optimize_parallel(
        self,
        objective: Callable[..., float | None],
        num_trials: int,
        n_jobs: int,
        timeout: float | None,
        catch: tuple[type[BaseException], ...],
    ) -> None:
        if isinstance(self.storage, InMemoryStorage):
            raise ValueError("n_jobs > 1 needs a storage that processes can share (a database URL, the default "
                             "SQLite file, or a journal storage); got storage='memory'")  # fmt: skip
        ctx: Any = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        errors = ctx.SimpleQueue()
        shares = [num_trials // n_jobs + (1 if i < num_trials % n_jobs else 0) for i in range(n_jobs)]
        spec = {"space": self.space, "sampler": self.sampler, "direction": self.direction, "url": self._url,
                "storage": None if self._url else self.storage, "study_name": self.study_name}  # fmt: skip
        procs = [ctx.Process(target=_worker, args=(spec, objective, share, timeout, catch, errors))
                 for share in shares if share]  # fmt: skip
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        messages = []
        while not errors.empty():
            messages.append(errors.get())
        failed = [p.exitcode for p in procs if p.exitcode != 0]
        if messages or failed:
            raise RuntimeError(f"{len(failed)} of {len(procs)} search workers failed: {'; '.join(messages)}")


def _call(objective: Callable[..., float | None], params: dict[str, Any], trial: optuna.Trial) -> Any:
    try:
        wants_trial = "trial" in inspect.signature(objective).parameters
    except (TypeError, ValueError):  # builtins without a signature
        wants_trial = False
    return objective(params, trial=trial) if wants_trial else objective(params)


def run_trials(
    searcher: Searcher,
    objective: Callable[..., float | None],
    num_trials: int,
    deadline: float | None,
    catch: tuple[type[BaseException], ...],
    progress: bool | None,
) -> None:
    """The ask -> evaluate -> tell loop of one process."""
    bar = tqdm(total=num_trials, disable=None if progress is None else not progress, leave=False)
    # The bar's "best" is tracked from the values told here: asking the storage for the best trial after every
    # trial deep-copies the whole history, which made long searches quadratic.
    sign = 1.0 if searcher.study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
    best: float | None = None
    try:
        for _ in range(num_trials):
            if deadline is not None and time.monotonic() >= deadline:
                break
            trial = searcher.ask()
            try:
                value = _call(objective, trial.params, trial.optuna_trial)
            except optuna.TrialPruned:
                searcher.study.tell(trial.optuna_trial, state=TrialState.PRUNED)
                bar.update()
                continue
            except catch:
                searcher.tell(trial, None)
                bar.update()
                continue
            except BaseException:
                searcher.tell(trial, None)
                raise
            try:
                told = None if value is None else real_number("the objective's return value", value)
            except TypeError:
                searcher.tell(trial, None)  # not left running, where the GP would count it as pending forever
                raise
            searcher.tell(trial, told)
            bar.update()
            if told is not None and math.isfinite(told) and (best is None or sign * told > sign * best):
                best = told
                bar.set_postfix(best=f"{best:.4g}")
    finally:
        bar.close()


def real_number(name: str, value: Any) -> float:
    """``float(value)`` for a real number: an ``int``/``float``, a NumPy scalar or anything with ``__float__`` (a
    one-element tensor); booleans, complex numbers, strings and other objects raise ``TypeError`` naming ``name``."""
    is_bool = isinstance(value, (bool, np.bool_)) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool)
    is_complex = isinstance(value, numbers.Complex) and not isinstance(value, numbers.Real)
    if is_bool or is_complex or not (isinstance(value, numbers.Real) or hasattr(type(value), "__float__")):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError) as err:  # e.g. a tensor with several elements
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})") from err


def _worker(
    spec: dict[str, Any],
    objective: Callable[..., float | None],
    num_trials: int,
    timeout: float | None,
    catch: tuple[type[BaseException], ...],
    errors: Any,
) -> None:
    # a fresh connection per process: database connections must not cross a fork
    storage = _rdb(spec["url"]) if spec["url"] else spec["storage"]
    try:
        searcher = Searcher(spec["space"], strategy=spec["sampler"], direction=spec["direction"], storage=storage,
                            study_name=spec["study_name"])  # fmt: skip
        deadline = None if timeout is None else time.monotonic() + timeout
        run_trials(searcher, objective, num_trials, deadline, catch, progress=False)
    except BaseException as err:
        errors.put(f"{type(err).__name__}: {err}")
        raise SystemExit(1) from err
