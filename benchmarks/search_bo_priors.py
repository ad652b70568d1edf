"""GP-BO hyperparameter-prior variants against a stored Optuna GPSampler run, paired per seed, with a signed-rank test.

Runs only our GP strategy (the variants below) on ``search_bo.py``'s functions, from the same 10-point start per
seed, and compares each seed's simple regret at 25 / 50 / 100 trials with Optuna GPSampler's values stored by a
full ``search_bo.py`` run (``--reference``; Optuna's sampler is deterministic for a seed, so they need not be
re-run). The question: is a loss against Optuna at some (function, budget) a property of our GP's priors or seed
noise? Each cell prints the 20-seed medians, the seeds on which ours is better, and the two-sided Wilcoxon
signed-rank p-value of the paired log regrets.

Variants (``GPPrior`` fields changed; the rest as shipped):
- ``default``: the shipped priors (``meta_learning.search.gp.GPPrior``);
- ``noise``: ``log σ_n² ~ N(-5, 1.5)`` instead of ``N(-8, 2)`` (nearer Optuna's Gamma(1.1, 30) noise prior);
- ``long``: lengthscale rate 3 instead of 6 (twice the lengthscale mode);
- ``noise-long``: both;
- ``optuna-ls``: Optuna's lengthscale prior ``-(0.1/λ + 0.1 λ)``, ``λ = 1/ℓ²`` (mode ``ℓ = 1``) on the continuous
  columns, our other priors;
- ``optuna``: Optuna's three priors (lengthscales as above, ``σ_f² ~ Gamma(2, 1)``, ``σ_n² ~ Gamma(1.1, 30)``);
- ``no-restarts``: default priors, no random restarts of the hyperparameter fit (Optuna fits from one start);
- ``optuna-start``: Optuna's three priors, no random restarts, and the fit's fresh start at Optuna's initial values
  (every lengthscale, the signal and the noise variance 1) instead of the prior mode;
- ``lognormal-ls``: the dimension-scaled lengthscale prior of Hvarfner, Hellsten & Nardi (2024), BoTorch's default
  since 0.12: ``log ℓ ~ N(√2 + ½ log D, 3)`` on the continuous columns (median ``ℓ`` 5.8 at ``D = 2``, 9.2 at 5,
  16.5 at 10, with a wide spread), our other priors;
- ``mixture-ls``: on each continuous lengthscale an equal mixture of ours and Optuna's (each normalised over
  ``log ℓ``), fitting starts at either mode;
- ``short-penalty``: ours plus the short-lengthscale side of Optuna's, ``-0.1 ℓ^{-2}`` in the log-density of
  ``log ℓ``: short lengthscales as costly as under Optuna's prior, long ones as under ours.

Acquisition-search variants (shipped priors; ``GPStrategy`` options changed):
- ``roulette``: ``start_selection="roulette"`` — local searches from the best candidate, the best trial and
  EI-weighted random candidates (Optuna's scheme) instead of the 8 best candidates;
- ``roulette-10``: the same with 10 local searches, Optuna's number;
- ``roulette-sobol``: ``roulette-10`` with Sobol candidates only (no perturbations of the best trials among the
  2,048), as Optuna samples them.

Usage:
    python benchmarks/search_bo_priors.py --reference benchmarks/out/search_bo.json --seeds 20 --workers 2
    # fresh seeds 20-39, Optuna GPSampler run here on the same seeds:
    python benchmarks/search_bo_priors.py --reference run --first-seed 20 --seeds 20 --variants default
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import search_bo  # noqa: E402

from meta_learning.search import GPStrategy, acquisition  # noqa: E402
from meta_learning.search.gp import GPPrior  # noqa: E402

BUDGETS = (25, 50, 100)


@dataclasses.dataclass(frozen=True)
class _LengthscaleOverride(GPPrior):
    """Our priors with the terms of the continuous lengthscales replaced by another family (``_ls_terms``, mode
    ``_ls_mode``); categorical columns, signal and noise keep ours. Serves the NumPy fit only."""

    def _continuous(self, dim: int) -> np.ndarray:
        """``[D + 2]`` mask of the continuous lengthscales in ``θ``."""
        cont = np.zeros(dim + 2, dtype=bool)
        cont[:dim] = ~self._categorical_mask(dim).numpy()
        return cont

    def _ls_mode(self, dim: int) -> float:
        raise NotImplementedError

    def _ls_terms(self, theta: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Log-density terms and derivatives of the continuous ``θ_d = log ℓ_d``."""
        raise NotImplementedError

    def mode(self, dim: int) -> torch.Tensor:
        m = super().mode(dim).clone()
        m[torch.as_tensor(self._continuous(dim))] = self._ls_mode(dim)
        return m

    def log_prob_terms(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        terms, grads = super().log_prob_terms(theta)
        dim = theta.shape[-1] - 2
        cont = self._continuous(dim)
        terms[cont], grads[cont] = self._ls_terms(theta[cont], dim)
        return terms, grads

    def log_prob(self, theta: torch.Tensor) -> torch.Tensor:
        # the torch form would otherwise be inherited and return *our* prior; nothing here calls it
        raise NotImplementedError(f"{type(self).__name__} serves the NumPy fit only (log_prob_and_grad)")


@dataclasses.dataclass(frozen=True)
class LogNormalLengthscalePrior(_LengthscaleOverride):
    """Hvarfner et al. (2024): ``log ℓ ~ N(√2 + ½ log D, √3²)`` on the continuous columns (a normal density in our
    ``θ = log ℓ`` coordinates)."""

    def _ls_mode(self, dim: int) -> float:
        return math.sqrt(2.0) + 0.5 * math.log(dim)

    def _ls_terms(self, theta: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
        z = theta - self._ls_mode(dim)
        return -z * z / 6.0, -z / 3.0


@dataclasses.dataclass(frozen=True)
class OptunaStylePrior(_LengthscaleOverride):
    """Optuna GPSampler's heuristic priors (``optuna/_gp/prior.py``) in our ``θ = (log ℓ, log σ_f², log σ_n²)``
    coordinates, without a Jacobian as there: on continuous lengthscales ``-(0.1 e^{2θ} + 0.1 e^{-2θ})``; with
    ``all_priors`` also ``θ_f - e^{θ_f}`` (Gamma(2, 1) on ``σ_f²``) and ``0.1 θ_n - 30 e^{θ_n}`` (Gamma(1.1, 30) on
    ``σ_n²``). Categorical columns keep our normal prior."""

    all_priors: bool = False
    start_at_ones: bool = False  # the fresh fitting start at ℓ = σ_f² = σ_n² = 1 (θ = 0), Optuna's initial values

    def _ls_mode(self, dim: int) -> float:
        return 0.0

    def _ls_terms(self, theta: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
        up, down = np.exp(2.0 * theta), np.exp(-2.0 * theta)
        return -(0.1 * up + 0.1 * down), -(0.2 * up - 0.2 * down)

    def mode(self, dim: int) -> torch.Tensor:
        if self.start_at_ones:
            return torch.zeros(dim + 2, dtype=torch.float64)
        m = super().mode(dim)
        if self.all_priors:
            m[dim], m[dim + 1] = 0.0, math.log(0.1 / 30.0)
        return m

    def log_prob_terms(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        terms, grads = super().log_prob_terms(theta)
        if self.all_priors:
            dim = theta.shape[-1] - 2
            s, n = theta[dim], theta[dim + 1]
            terms[dim], grads[dim] = s - math.exp(s), 1.0 - math.exp(s)
            terms[dim + 1], grads[dim + 1] = 0.1 * n - 30.0 * math.exp(n), 0.1 - 30.0 * math.exp(n)
        return terms, grads


@dataclasses.dataclass(frozen=True)
class MixtureLengthscalePrior(_LengthscaleOverride):
    """Each continuous ``θ_d = log ℓ_d`` drawn from an equal mixture of our Gamma term and Optuna's term, each
    normalised as a density over ``θ`` (the forms above, no Jacobian): ours ``(a - 1) θ - b e^θ`` integrates to
    ``Γ(a - 1) / b^{a - 1}``, Optuna's ``-0.2 cosh 2θ`` to ``K₀(0.2)``. The MAP fit then picks, per dimension,
    whichever family the data favour; random fitting starts pick a component's mode at random."""

    weight: float = 0.5  # of our component

    def _ls_mode(self, dim: int) -> float:
        return math.log((self.lengthscale_concentration - 1.0) / self.lengthscale_rate_at(dim))

    def _ls_terms(self, theta: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
        from scipy.special import gammaln, k0

        a, b = self.lengthscale_concentration, self.lengthscale_rate_at(dim)
        e = np.exp(theta)
        log1 = math.log(self.weight) + (a - 1.0) * theta - b * e - (gammaln(a - 1.0) - (a - 1.0) * math.log(b))
        log2 = math.log(1.0 - self.weight) - 0.2 * np.cosh(2.0 * theta) - math.log(k0(0.2))
        total = np.logaddexp(log1, log2)
        r1 = np.exp(log1 - total)
        return total, r1 * ((a - 1.0) - b * e) + (1.0 - r1) * (-0.4 * np.sinh(2.0 * theta))

    def draw_start(self, dim: int, generator: torch.Generator) -> torch.Tensor:
        start = super().draw_start(dim, generator)
        cont = torch.as_tensor(self._continuous(dim))
        if float(torch.rand((), generator=generator, dtype=torch.float64)) >= self.weight:
            start[cont] -= self._ls_mode(dim)  # centred on Optuna's mode θ = 0 instead of ours
        return start


@dataclasses.dataclass(frozen=True)
class ShortPenaltyLengthscalePrior(_LengthscaleOverride):
    """Our Gamma term on each continuous ``θ_d = log ℓ_d`` plus the short-lengthscale side of Optuna's term,
    ``-c e^{-2θ}`` (``c = 0.1`` there): short lengthscales cost as much as under Optuna's prior, long ones as much as
    under ours."""

    short_penalty: float = 0.1

    def _ls_mode(self, dim: int) -> float:
        from scipy.optimize import brentq

        a, b, c = self.lengthscale_concentration, self.lengthscale_rate_at(dim), self.short_penalty
        return brentq(lambda t: (a - 1.0) - b * math.exp(t) + 2.0 * c * math.exp(-2.0 * t), -10.0, 10.0)

    def _ls_terms(self, theta: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
        a, b, c = self.lengthscale_concentration, self.lengthscale_rate_at(dim), self.short_penalty
        e, s = np.exp(theta), np.exp(-2.0 * theta)
        return (a - 1.0) * theta - b * e - c * s, (a - 1.0) - b * e + 2.0 * c * s


@dataclasses.dataclass(frozen=True)
class Variant:
    """``changes``: GPPrior fields replaced; ``prior``: builds the prior from the categorical columns instead of
    ours; ``restarts``: random restarts of the fit; ``strategy``: GPStrategy options; ``local_candidates``:
    perturbations of the best trials among the acquisition's candidates."""

    changes: dict[str, float] = dataclasses.field(default_factory=dict)
    prior: Callable[..., GPPrior] | None = None
    restarts: bool = True
    strategy: dict[str, Any] = dataclasses.field(default_factory=dict)
    local_candidates: bool = True


VARIANTS: dict[str, Variant] = {
    "default": Variant(),
    "noise": Variant({"noise_loc": -5.0, "noise_scale": 1.5}),
    "long": Variant({"lengthscale_rate": 3.0}),
    "noise-long": Variant({"noise_loc": -5.0, "noise_scale": 1.5, "lengthscale_rate": 3.0}),
    "optuna-ls": Variant(prior=OptunaStylePrior),
    "optuna": Variant(prior=functools.partial(OptunaStylePrior, all_priors=True)),
    "no-restarts": Variant(restarts=False),
    "optuna-start": Variant(
        prior=functools.partial(OptunaStylePrior, all_priors=True, start_at_ones=True), restarts=False
    ),
    "lognormal-ls": Variant(prior=LogNormalLengthscalePrior),
    "mixture-ls": Variant(prior=MixtureLengthscalePrior),
    "short-penalty": Variant(prior=ShortPenaltyLengthscalePrior),
    "roulette": Variant(strategy={"start_selection": "roulette"}),
    "roulette-10": Variant(strategy={"start_selection": "roulette", "num_starts": 10}),
    "roulette-sobol": Variant(strategy={"start_selection": "roulette", "num_starts": 10}, local_candidates=False),
}


def run_variant(name: str, fn: str, seeds: int, first_seed: int = 0) -> list[list[float]]:
    """Values in trial order of our GP strategy with the variant's priors, seeds ``first_seed ..
    first_seed + seeds - 1``."""
    original_init = GPStrategy.__init__
    variant = VARIANTS[name]

    def init(self: GPStrategy, *args: Any, **kwargs: Any) -> None:
        if not variant.restarts:
            kwargs["num_gp_restarts"] = 0
        kwargs.update(variant.strategy)
        original_init(self, *args, **kwargs)
        if variant.prior is not None:
            self.gp_prior = variant.prior(categorical_columns=self.gp_prior.categorical_columns)
        self.gp_prior = dataclasses.replace(self.gp_prior, **variant.changes)

    GPStrategy.__init__ = init  # type: ignore[method-assign]
    if not variant.local_candidates:  # each job runs in a fresh process, so the patch stays in this one
        sobol_only = acquisition._candidates
        acquisition._candidates = lambda space, n, incumbents, generator: sobol_only(
            space, n, incumbents[:0], generator
        )
    try:
        return method_runs("ours-gp", fn, seeds, first_seed)
    finally:
        GPStrategy.__init__ = original_init  # type: ignore[method-assign]


def method_runs(method: str, fn: str, seeds: int, first_seed: int = 0) -> list[list[float]]:
    """A ``search_bo.py`` method's values in trial order on seeds ``first_seed .. first_seed + seeds - 1``."""
    torch.set_num_threads(1)
    return [search_bo.run_method(method, fn, s, max(BUDGETS))["values"] for s in range(first_seed, first_seed + seeds)]


def compare(values: list[list[float]], reference: list[list[float]], f_star: float) -> dict[str, Any]:
    """``values`` and ``reference`` hold the runs of the same seeds, in the same order."""
    from scipy.stats import wilcoxon

    out: dict[str, Any] = {}
    for b in BUDGETS:
        ours = np.array([min(v[:b]) - f_star for v in values])
        theirs = np.array([min(v[:b]) - f_star for v in reference])
        lo, lt = np.log(np.maximum(ours, 1e-12)), np.log(np.maximum(theirs, 1e-12))
        out[str(b)] = {"median_ours": float(np.median(ours)), "median_optuna_gp": float(np.median(theirs)),
                       "ours_better": int((ours < theirs).sum()), "n": len(ours),
                       "wilcoxon_p": float(wilcoxon(lo, lt).pvalue) if np.any(lo != lt) else 1.0}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", default=str(REPO / "benchmarks" / "out" / "search_bo.json"),
                    help="search_bo.py JSON holding Optuna GPSampler runs (>= --seeds seeds, budget 100), or "
                         "'run': run Optuna GPSampler here on the same seeds (Optuna in this venv)")  # fmt: skip
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0,
                    help="run seeds FIRST_SEED .. FIRST_SEED + SEEDS - 1 (the reference must hold them)")  # fmt: skip
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--functions", nargs="+", default=list(search_bo.FUNCTIONS), choices=list(search_bo.FUNCTIONS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "search_bo_priors.json"))
    a = ap.parse_args()
    from _machine import machine_info

    from meta_learning._io import atomic_write_json

    stored: dict[str, list[list[float]]] = {}  # Optuna GPSampler's runs of the compared seeds, per function
    if a.reference != "run":
        ref = json.loads(Path(a.reference).read_text())["regret"]
        for f in a.functions:  # before hours of runs: the reference must hold every seed asked for
            held = ref[f]["runs"]["optuna-gp"] if f in ref else []
            if len(held) < a.first_seed + a.seeds:
                raise ValueError(f"--reference holds {len(held)} Optuna GP runs of {f}; --first-seed "
                                 f"{a.first_seed} --seeds {a.seeds} needs {a.first_seed + a.seeds}")  # fmt: skip
            stored[f] = held[a.first_seed : a.first_seed + a.seeds]
    jobs = [(v, f) for v in a.variants for f in a.functions]
    with ProcessPoolExecutor(a.workers, max_tasks_per_child=1) as pool:  # a fresh process per job
        futures = {job: pool.submit(run_variant, *job, a.seeds, a.first_seed) for job in jobs}
        # --reference run: Optuna on the same seeds, in the same pool
        optuna = {f: pool.submit(method_runs, "optuna-gp", f, a.seeds, a.first_seed)
                  for f in a.functions if f not in stored}  # fmt: skip
        runs = {job: fut.result() for job, fut in futures.items()}
        stored.update({f: fut.result() for f, fut in optuna.items()})
    report: dict[str, Any] = {"machine": machine_info(), "reference": a.reference, "seeds": a.seeds,
                              "first_seed": a.first_seed, "cells": []}  # fmt: skip
    if a.reference == "run":
        import optuna

        report["optuna"] = optuna.__version__
        report["optuna_gp_runs"] = stored  # seeds first_seed .. first_seed + seeds - 1
    print(f"{'variant':12} {'function':10} " + " ".join(f"{'@' + str(b) + ' ours / Optuna GP (better, p)':>36}"
                                                     for b in BUDGETS))  # fmt: skip
    for (v, f), values in runs.items():
        cell = compare(values, stored[f], search_bo.FUNCTIONS[f][2])
        report["cells"].append({"variant": v, "function": f, "values": values, "budgets": cell})
        parts = [f"{c['median_ours']:.3g} / {c['median_optuna_gp']:.3g} ({c['ours_better']}/{c['n']}, "
                 f"p={c['wilcoxon_p']:.2f})" for c in cell.values()]  # fmt: skip
        print(f"{v:12} {f:10} " + " ".join(f"{p:>36}" for p in parts), flush=True)
    atomic_write_json(a.out, report)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
