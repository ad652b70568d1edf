"""Search strategies as Optuna samplers: random search and Gaussian-process Bayesian optimisation.

A strategy keeps no state apart from what it reads from the study's trials (plus a cache of the last GP
hyperparameters, used only as one of the fitting starts), so that any Optuna storage — in memory, SQLite,
PostgreSQL/MySQL, journal files — can hold a study that many processes or machines share. Each suggestion draws
its randomness from ``(seed, trial.number)``, so a seeded sequential study is reproducible.

The GP strategy:

- encodes finished trials with the :class:`~meta_learning.search.space.SearchSpace` (``y`` in maximisation sign,
  standardised); failed trials (an exception, NaN or inf) that got parameters are imputed with the worst observed
  value, so the model learns to avoid the region instead of re-proposing it;
- trials still running (other workers, or earlier ``ask`` calls) are pending points: the GP is conditioned on
  them with a constant lie (Ginsbourger, Le Riche & Carraro 2010) — ``"mean"``, ``"best"`` or ``"worst"`` of
  the observed values — which spreads a batch of parallel suggestions;
- with earlier studies given (``warm_start``) the surrogate is the RGPE ensemble of :mod:`.warm_start`: its weights
  come from the finished trials only, and every member with weight is conditioned on the lie at the pending points
  (in its own standardised units), so that a batch spreads while the earlier studies still hold the weight;
- maximises LogEI (default) or UCB with :func:`~meta_learning.search.acquisition.maximize_acquisition`.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState
from torch import Tensor

from meta_learning._checks import check_choice, check_non_negative_int, check_positive_float, check_positive_int
from meta_learning.search.acquisition import (
    log_expected_improvement,
    log_expected_improvement_and_grad,
    maximize_acquisition,
    upper_confidence_bound,
    upper_confidence_bound_and_grad,
)
from meta_learning.search.gp import GaussianProcess, GPPrior, fit_gp, standardize
from meta_learning.search.space import Float, Int, Param, SearchSpace
from meta_learning.search.warm_start import RGPE, PriorData, rgpe_weights

F64 = torch.float64


def to_distribution(param: Param) -> BaseDistribution:
    """The Optuna distribution of a parameter."""
    if isinstance(param, Float):
        return FloatDistribution(param.low, param.high, log=param.log)
    if isinstance(param, Int):
        return IntDistribution(param.low, param.high, log=param.log)
    return CategoricalDistribution(param.choices)


def suggest(space: SearchSpace, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
    """Ask ``trial`` for every active parameter of ``space`` in order; returns the configuration."""
    params: dict[str, Any] = {}
    for name, p in space.params.items():
        if not space.active(name, params):
            continue
        if isinstance(p, Float):
            params[name] = trial.suggest_float(name, p.low, p.high, log=p.log)
        elif isinstance(p, Int):
            params[name] = trial.suggest_int(name, p.low, p.high, log=p.log)
        else:
            params[name] = trial.suggest_categorical(name, list(p.choices))
    return params


def trial_generator(seed: int | None, number: int) -> torch.Generator:
    """A generator for trial ``number``: derived from ``(seed, number)``, or fresh entropy when ``seed`` is None."""
    if seed is None:
        return torch.Generator().manual_seed(secrets.randbits(63))
    digest = hashlib.sha256(f"{seed}:{number}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


# L-BFGS-B's projected-gradient tolerance for the acquisition search, in lengthscale units (Optuna's GPSampler uses
# the same 1e-2 for LogEI; SciPy's 1e-5 spends about twice the iterations on digits the next proposal does not need)
ACQUISITION_GTOL = 1e-2


def _sign(study: Study) -> float:
    if len(study.directions) != 1:
        raise ValueError(f"study {study.study_name!r} has {len(study.directions)} objectives; these strategies "
                         "optimise a single objective")  # fmt: skip
    return 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0


class SpaceSampler(BaseSampler):
    """Common part of our samplers: the space's distributions as the relative search space, random fallback."""

    def __init__(self, space: SearchSpace | dict[str, Any], seed: int | None = None) -> None:
        self.space = SearchSpace.from_dict(space)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        self.seed = seed
        self._independent = optuna.samplers.RandomSampler(seed=seed)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {name: to_distribution(p) for name, p in self.space.params.items()}

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        # parameters the objective asks for that are not in the space: uniform, as Optuna's RandomSampler does
        return self._independent.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        self._independent.reseed_rng()

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        generator = trial_generator(self.seed, trial.number)
        return self.propose(study, trial, generator)

    def propose(self, study: Study, trial: FrozenTrial, generator: torch.Generator) -> dict[str, Any]:
        raise NotImplementedError


class RandomStrategy(SpaceSampler):
    """Uniform random search over the space (log-uniform for log parameters), honouring conditions."""

    def propose(self, study: Study, trial: FrozenTrial, generator: torch.Generator) -> dict[str, Any]:
        return self.space.sample(generator)


def history(study: Study, space: SearchSpace, exclude: int | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Encoded trials of ``study``: ``(x_done [n, D], y_done [n] maximised, x_failed [f, D], x_pending [p, D])``."""
    sign = _sign(study)
    done, values, failed, pending = [], [], [], []
    states = (TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING)
    for t in study.get_trials(deepcopy=False, states=states):
        if t.number == exclude or not t.params:
            continue
        params = {k: v for k, v in t.params.items() if k in space.params}
        if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value):
            done.append(params)
            values.append(sign * t.value)
        elif t.state == TrialState.RUNNING:
            pending.append(params)
        else:
            failed.append(params)
    empty = torch.zeros(0, space.dim, dtype=F64)
    enc = lambda cfgs: space.encode(cfgs) if cfgs else empty  # noqa: E731
    return enc(done), torch.tensor(values, dtype=F64), enc(failed), enc(pending)


@dataclass(frozen=True)
class Surrogate:
    """What :meth:`GPStrategy.surrogate` returns: ``model`` (``posterior``/``posterior_with_grad``), the incumbent
    for LogEI, the RGPE ``weights [T + 1]`` (None without a warm start) and the fitted ``theta`` of the current
    study's GP (None before two observations)."""

    model: GaussianProcess | RGPE
    incumbent: float
    weights: Tensor | None
    theta: Tensor | None


class GPStrategy(SpaceSampler):
    """Gaussian-process Bayesian optimisation as an Optuna sampler.

    Args:
        space: the search space (a :class:`SearchSpace` or a plain dict, see :meth:`SearchSpace.from_dict`).
        seed: seeds every random choice (per trial number); None for fresh entropy.
        acquisition: ``"logei"`` (log expected improvement) or ``"ucb"``.
        ucb_beta: ``β`` of UCB.
        n_startup_trials: random trials before the GP takes over (default ``max(4, min(10, D + 1))``; 2 with a
            warm start, enough for RGPE to rank the earlier studies).
        constant_liar: the value imputed at pending trials: ``"mean"``, ``"best"`` or ``"worst"``.
        warm_start: earlier studies' data (see :func:`meta_learning.search.optimizer.prior_data`).
        num_candidates, num_starts: acquisition optimisation effort.
        start_selection: how the acquisition's local searches are started: ``"top"`` (the best candidates) or
            ``"roulette"`` (the best, the incumbent and EI-weighted draws; see :func:`maximize_acquisition`).
        num_gp_restarts: random restarts of the hyperparameter fit (besides the previous optimum and the prior
            mode), made at the first fit and at every 10th observation; the fits in between start from the
            previous optimum only.
        avoid_repeats: in a space without float parameters, never propose a configuration already evaluated,
            failed or pending while an untried one remains (a deterministic objective, e.g. a tabular NAS
            benchmark, gains nothing from a repeat). Set False for noisy objectives where re-measuring a
            configuration is worth a trial. Spaces with a float parameter are unaffected.

    Example:
        >>> sampler = GPStrategy({"x": (-5.0, 5.0)}, seed=0)
        >>> study = optuna.create_study(sampler=sampler)
        >>> study.optimize(lambda t: t.suggest_float("x", -5, 5) ** 2, n_trials=20)
    """

    def __init__(
        self,
        space: SearchSpace | dict[str, Any],
        seed: int | None = None,
        *,
        acquisition: str = "logei",
        ucb_beta: float = 4.0,
        n_startup_trials: int | None = None,
        constant_liar: str = "mean",
        warm_start: Sequence[PriorData] = (),
        num_candidates: int = 2048,
        num_starts: int = 8,
        start_selection: str = "top",
        num_gp_restarts: int = 2,
        num_rgpe_samples: int = 256,
        avoid_repeats: bool = True,
    ) -> None:
        super().__init__(space, seed)
        self.acquisition = check_choice("acquisition", acquisition, ("logei", "ucb"))
        self.ucb_beta = check_positive_float("ucb_beta", ucb_beta)
        self.constant_liar = check_choice("constant_liar", constant_liar, ("mean", "best", "worst"))
        self.warm_start = list(warm_start)
        for i, d in enumerate(self.warm_start):
            if not isinstance(d, PriorData) or d.x.ndim != 2 or d.x.shape[1] != self.space.dim:
                raise ValueError(f"warm_start[{i}] must be PriorData with x of shape [n, {self.space.dim}]")
        # with a warm start, two random trials give RGPE a pair to rank before the earlier studies take over
        default_startup = 2 if self.warm_start else max(4, min(10, self.space.dim + 1))
        if n_startup_trials is not None:
            default_startup = check_non_negative_int("n_startup_trials", n_startup_trials)
        self.n_startup_trials = default_startup
        self.num_candidates = check_positive_int("num_candidates", num_candidates)
        self.num_starts = check_positive_int("num_starts", num_starts)
        self.start_selection = check_choice("start_selection", start_selection, ("top", "roulette"))
        self.num_gp_restarts = check_non_negative_int("num_gp_restarts", num_gp_restarts)
        self.num_rgpe_samples = check_positive_int("num_rgpe_samples", num_rgpe_samples)
        if not isinstance(avoid_repeats, bool):
            raise TypeError(f"avoid_repeats must be a bool, got {avoid_repeats!r}")
        self.avoid_repeats = avoid_repeats
        self.gp_prior = GPPrior(categorical_columns=tuple(c for g in self.space.categorical_groups for c in g))
        self._theta: Tensor | None = None  # last fitted hyperparameters: one of the fitting starts
        self._base: list[GaussianProcess] | None = None  # earlier studies' GPs, fitted once

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_base"] = None  # refitted lazily in the receiving process
        return state

    def _base_models(self) -> list[GaussianProcess]:
        if self._base is None:
            gen = torch.Generator().manual_seed(0 if self.seed is None else self.seed)
            self._base = [fit_gp(d.x, standardize(d.y)[0], generator=gen, prior=self.gp_prior,
                                 num_restarts=self.num_gp_restarts)
                          for d in self.warm_start if d.x.shape[0] > 0]  # fmt: skip
        return self._base

    def training_data(self, study: Study, exclude: int | None = None) -> tuple[Tensor, Tensor, Tensor, int]:
        """``(x [n, D], y [n], x_pending [p, D], num_completed)``: finished trials (maximisation sign), failed ones
        imputed with the worst observed value, and the trials still running."""
        x, y, x_failed, x_pending = history(study, self.space, exclude=exclude)
        num_completed = x.shape[0]
        if x_failed.shape[0]:
            worst = float(y.min()) if y.numel() else 0.0
            x = torch.cat([x, x_failed])
            y = torch.cat([y, torch.full((x_failed.shape[0],), worst, dtype=F64)])
        return x, y, x_pending, num_completed

    def _lie(self, gp: GaussianProcess, x_pending: Tensor) -> GaussianProcess:
        """``gp`` conditioned on the constant lie at the pending points. Every model here is fitted on standardised
        values, so ``"mean"`` is 0 and ``"best"``/``"worst"`` are the model's own largest/smallest value."""
        if not x_pending.shape[0]:
            return gp
        y = gp.y
        lie = {"mean": 0.0, "best": float(y.max()) if y.numel() else 0.0,
               "worst": float(y.min()) if y.numel() else 0.0}[self.constant_liar]  # fmt: skip
        return gp.condition_on(x_pending, torch.full((x_pending.shape[0],), lie, dtype=F64))

    def surrogate(self, x: Tensor, y: Tensor, x_pending: Tensor, generator: torch.Generator) -> Surrogate:
        """The model of observations ``(x [n, D], y [n])`` (maximised) with trials ``x_pending`` still running.

        Reads the previous hyperparameters as a fitting start but does not store the new ones (:meth:`propose`
        does), so calling it for inspection leaves later suggestions unchanged.
        """
        y_std, _, _ = standardize(y)
        # the prior mode and random restarts at the first fit and at every 10th observation; in between, only the
        # previous optimum (the posterior moves little when one point is added; Optuna's GPSampler does the same)
        full = self._theta is None or x.shape[0] % 10 == 0
        gp = fit_gp(
            x,
            y_std,
            generator=generator,
            prior=self.gp_prior,
            init=self._theta,
            num_restarts=self.num_gp_restarts if full else 0,
            include_mode=full,
        )
        theta = gp.theta if x.shape[0] >= 2 else self._theta
        best = float(y_std.max()) if y_std.numel() else 0.0
        base = self._base_models()
        if not base:
            return Surrogate(self._lie(gp, x_pending), best, None, theta)
        # RGPE ranks the models on the real observations only; the lie then goes into every member with weight, so
        # that pending points also lower the earlier studies' means (which hold most of the weight early on)
        weights = rgpe_weights(base, gp, num_samples=self.num_rgpe_samples, generator=generator)
        members = [self._lie(m, x_pending) if w > 0 else m for m, w in zip(base, weights[:-1].tolist(), strict=True)]
        ensemble = RGPE(members, self._lie(gp, x_pending), weights)
        if x.shape[0]:
            # plug-in incumbent: the ensemble's own mean at the observed points. The earlier studies' means are in
            # their own units, so comparing them with this study's best y would promise improvement at points
            # already evaluated and repeat them.
            with torch.no_grad():
                best = float(ensemble.posterior(x)[0].max())
        return Surrogate(ensemble, best, weights, theta)

    def propose(self, study: Study, trial: FrozenTrial, generator: torch.Generator) -> dict[str, Any]:
        x, y, x_pending, num_completed = self.training_data(study, exclude=trial.number)
        if x.shape[0] < self.n_startup_trials or (num_completed == 0 and not self.warm_start):
            return self.space.sample(generator)
        fit = self.surrogate(x, y, x_pending, generator)
        self._theta = fit.theta
        model, best = fit.model, fit.incumbent

        if self.acquisition == "logei":
            acq = lambda xq: log_expected_improvement(*model.posterior(xq), best)  # noqa: E731
            acq_grad = lambda xq: log_expected_improvement_and_grad(*model.posterior_with_grad(xq), best)  # noqa: E731
        else:
            acq = lambda xq: upper_confidence_bound(*model.posterior(xq), self.ucb_beta)  # noqa: E731
            acq_grad = lambda xq: upper_confidence_bound_and_grad(*model.posterior_with_grad(xq), self.ucb_beta)  # noqa: E731
        incumbents = x[torch.argsort(y, descending=True)[:5]] if y.numel() else None
        # the fitted lengthscales precondition the acquisition search (θ = (log ℓ, log σ_f², log σ_n²); none yet
        # before the second observation)
        lengthscales = self._theta[: self.space.dim].exp() if self._theta is not None else None
        point = maximize_acquisition(acq, self.space, generator=generator, incumbents=incumbents,
                                     num_candidates=self.num_candidates, num_starts=self.num_starts,
                                     lengthscales=lengthscales, acq_with_grad=acq_grad,
                                     gtol=ACQUISITION_GTOL, start_selection=self.start_selection,
                                     avoid=torch.cat([x, x_pending]) if self.avoid_repeats else None)  # fmt: skip
        return self.space.decode(point.unsqueeze(0))[0]


_STRATEGIES: dict[str, Callable[..., SpaceSampler]] = {}


def register_strategy(name: str, factory: Callable[..., SpaceSampler]) -> None:
    """Make ``factory(space, seed=..., **options)`` available by ``name`` (e.g. from configs); refuses duplicates."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    if name in _STRATEGIES:
        raise ValueError(f"a search strategy named {name!r} is already registered")
    _STRATEGIES[name] = factory


def make_strategy(
    name: str, space: SearchSpace | dict[str, Any], seed: int | None = None, **options: Any
) -> SpaceSampler:
    """Build a registered strategy by name (``"random"``, ``"gp"``, and any registered later)."""
    check_choice("strategy", name, sorted(_STRATEGIES))
    return _STRATEGIES[name](space, seed=seed, **options)


def available_strategies() -> list[str]:
    return sorted(_STRATEGIES)


register_strategy("random", RandomStrategy)
register_strategy("gp", GPStrategy)
