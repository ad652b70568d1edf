"""Bayesian optimisation: simple regret and time per suggestion vs random search, Optuna TPE and Optuna GPSampler;
warm start from related and adversarial earlier studies.

Ours and our random search run in this process; Optuna's samplers run in the peers venv (Optuna 5.x with
``greenlet`` so that GPSampler uses its batched L-BFGS-B), in a subprocess per (method, function) on the other
core, on the same functions and search spaces. Every process runs with one thread. Every method starts from the
same 10 random points per seed (Optuna's default number of start-up trials), so the comparison is paired. Time per
suggestion: both libraries in fresh one-thread processes, alternating for ``--timing-rounds`` rounds.

Usage:
    python benchmarks/search_bo.py --fast                       # smoke run: 1 seed, budget 12
    python benchmarks/search_bo.py --seeds 10 --budget 50       # the size in RESULTS.md
    python benchmarks/search_bo.py --seeds 20 --budget 100      # the issue's full size
    python benchmarks/search_bo.py --worker optuna-gp --fn branin --seeds 3 --budget 50   # worker mode
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import optuna  # noqa: E402
import torch  # noqa: E402

from meta_learning.search import Categorical, Float, GPStrategy, Int, Searcher, SearchSpace  # noqa: E402
from meta_learning.search.strategies import RandomStrategy, suggest, trial_generator  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
torch.set_num_threads(1)
PEERS_PYTHON = Path(os.environ.get("PEERS_PYTHON", REPO.parent / "peers-venv" / "bin" / "python"))

# ------------------------------------------------------------------------------------------------- test functions


def branin(p: dict[str, Any]) -> float:
    x1, x2 = p["x0"], p["x1"]
    return (
        (x2 - 5.1 / (4 * math.pi**2) * x1**2 + 5 / math.pi * x1 - 6) ** 2
        + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1)
        + 10
    )


_H6_A = [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]]
_H6_P = [
    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
]
_H3_A = [[3.0, 10, 30], [0.1, 10, 35], [3.0, 10, 30], [0.1, 10, 35]]
_H3_P = [[0.3689, 0.1170, 0.2673], [0.4699, 0.4387, 0.7470], [0.1091, 0.8732, 0.5547], [0.0381, 0.5743, 0.8828]]
_ALPHA = [1.0, 1.2, 3.0, 3.2]


def _hartmann(x: list[float], a: list[list[float]], pp: list[list[float]]) -> float:
    return -sum(_ALPHA[i] * math.exp(-sum(a[i][j] * (x[j] - pp[i][j]) ** 2 for j in range(len(x)))) for i in range(4))


def hartmann6(p: dict[str, Any]) -> float:
    return _hartmann([p[f"x{i}"] for i in range(6)], _H6_A, _H6_P)


def ackley5(p: dict[str, Any]) -> float:
    x = [p[f"x{i}"] for i in range(5)]
    d = len(x)
    return (
        -20 * math.exp(-0.2 * math.sqrt(sum(v * v for v in x) / d))
        - math.exp(sum(math.cos(2 * math.pi * v) for v in x) / d)
        + 20
        + math.e
    )


def levy10(p: dict[str, Any]) -> float:
    w = [1 + (p[f"x{i}"] - 1) / 4 for i in range(10)]
    s = math.sin(math.pi * w[0]) ** 2
    s += sum((wi - 1) ** 2 * (1 + 10 * math.sin(math.pi * wi + 1) ** 2) for wi in w[:-1])
    return s + (w[-1] - 1) ** 2 * (1 + math.sin(2 * math.pi * w[-1]) ** 2)


_OFFSET = {"a": 0.5, "b": 0.0, "c": 1.0, "d": 0.25}


def mixed(p: dict[str, Any]) -> float:
    """Hartmann-3 on three floats + a quadratic in an int + an offset per category; minimum at k=7, c='b'."""
    return _hartmann([p["x0"], p["x1"], p["x2"]], _H3_A, _H3_P) + 0.05 * (p["k"] - 7) ** 2 + _OFFSET[p["c"]]


def _box(n: int, lo: float, hi: float) -> dict[str, Any]:
    return {f"x{i}": Float(lo, hi) for i in range(n)}


FUNCTIONS: dict[str, tuple[Callable[[dict[str, Any]], float], SearchSpace, float]] = {
    "branin": (branin, SearchSpace({"x0": Float(-5.0, 10.0), "x1": Float(0.0, 15.0)}), 0.39788735772973816),
    "hartmann6": (hartmann6, SearchSpace(_box(6, 0.0, 1.0)), -3.322368011415515),
    "ackley5": (ackley5, SearchSpace(_box(5, -32.768, 32.768)), 0.0),
    "levy10": (levy10, SearchSpace(_box(10, -10.0, 10.0)), 0.0),
    "mixed": (
        mixed,
        SearchSpace({**_box(3, 0.0, 1.0), "k": Int(0, 10), "c": Categorical(("a", "b", "c", "d"))}),
        -3.8627797869493365,
    ),
}

# ---------------------------------------------------------------------------------------------------------- runs


N_INIT = 10  # Optuna's default n_startup_trials for GPSampler and TPESampler


def initial_design(fn_name: str, seed: int, n: int = N_INIT) -> list[dict[str, Any]]:
    """The seed's ``n`` uniformly random start points, the same for every method (common random numbers: the
    methods differ only in what they do after the start, and a lucky or unlucky start is shared)."""
    space = FUNCTIONS[fn_name][1]
    # trial numbers from 10,000 on: generators no sampler of ours draws from in a 100-trial run
    return [space.sample(trial_generator(seed, 10_000 + i)) for i in range(n)]


def run_method(method: str, fn_name: str, seed: int, budget: int) -> dict[str, Any]:
    """One optimisation run from the seed's shared initial design; returns the objective values in trial order
    and the mean seconds per trial."""
    fn, space, _ = FUNCTIONS[fn_name]
    if method == "ours-gp":
        sampler: optuna.samplers.BaseSampler = GPStrategy(space, seed=seed, n_startup_trials=N_INIT)
    elif method == "random":
        sampler = RandomStrategy(space, seed=seed)
    elif method == "optuna-tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=N_INIT)
    else:
        sampler = optuna.samplers.GPSampler(seed=seed, n_startup_trials=N_INIT)
    study = optuna.create_study(sampler=sampler, direction="minimize")
    for params in initial_design(fn_name, seed):
        study.enqueue_trial(params)
    t0 = time.perf_counter()
    study.optimize(lambda t: fn(suggest(space, t)), n_trials=budget)
    return {"values": [t.value for t in study.trials], "sec_per_trial": (time.perf_counter() - t0) / budget}


def time_suggestions(method: str, n_trials: int, repeats: int, seed: int = 0) -> float:
    """Median seconds per suggestion on Hartmann-6 after ``n_trials`` identical random trials (and one warm-up)."""
    fn, space, _ = FUNCTIONS["hartmann6"]
    g = torch.Generator().manual_seed(seed)
    configs = space.decode(space.sample_encoded(n_trials, g))
    dists = GPStrategy(space).infer_relative_search_space(None, None)  # type: ignore[arg-type]
    trials = [optuna.trial.create_trial(params=c, distributions=dists, value=fn(c)) for c in configs]
    if method == "ours-gp":
        study = Searcher(space, strategy=GPStrategy(space, seed=seed, n_startup_trials=0), direction="minimize",
                         storage="memory").study  # fmt: skip
    else:
        study = optuna.create_study(sampler=optuna.samplers.GPSampler(seed=seed, n_startup_trials=0))
    study.add_trials(trials)
    times = []
    for i in range(repeats + 1):  # the first ask is a warm-up: both samplers then start from their previous fit
        t0 = time.perf_counter()
        trial = study.ask()
        params = suggest(space, trial)
        if i:
            times.append(time.perf_counter() - t0)
        study.tell(trial, fn(params))
    return statistics.median(times)


def worker(args: argparse.Namespace) -> None:
    out: dict[str, Any] = {"optuna": optuna.__version__}
    if args.fn == "timing":
        out["timing"] = {str(n): time_suggestions(args.worker, n, args.repeats) for n in args.timing_sizes}
    else:
        out["runs"] = [run_method(args.worker, args.fn, s, args.budget) for s in range(args.seeds)]
    print(json.dumps(out))


def peer(method: str, fn: str, args: argparse.Namespace, python: str | Path = PEERS_PYTHON) -> dict[str, Any]:
    cmd = [str(python), __file__, "--worker", method, "--fn", fn, "--seeds", str(args.seeds),
           "--budget", str(args.budget), "--repeats", str(args.repeats),
           "--timing-sizes", *map(str, args.timing_sizes)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if res.returncode != 0:
        raise RuntimeError(f"peer worker {method} {fn} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------- warm start


def variant(scale: float, shift: tuple[float, float], offset: float, sign: float = 1.0) -> Callable[..., float]:
    def f(p: dict[str, Any]) -> float:
        return sign * (scale * branin({"x0": p["x0"] + shift[0], "x1": p["x1"] + shift[1]}) + offset)

    return f


def minimum(f: Callable[..., float]) -> float:
    """Global minimum of a Branin variant on its box: dense grid, then a local polish."""
    from scipy.optimize import minimize

    grid = [(-5 + 15 * i / 150, 15 * j / 150) for i in range(151) for j in range(151)]
    best = sorted(grid, key=lambda v: f({"x0": v[0], "x1": v[1]}))[:5]
    vals = []
    for v in best:
        r = minimize(lambda z: f({"x0": z[0], "x1": z[1]}), v, bounds=[(-5, 10), (0, 15)], method="L-BFGS-B")
        vals.append(float(r.fun))
    return min(vals)


def warm_start_part(seeds: int, budget: int, threshold: float) -> dict[str, Any]:
    from meta_learning.search import BayesianOptimizer

    space = FUNCTIONS["branin"][1]
    related = [variant(1.5, (0.4, -0.3), 2.0), variant(0.7, (-0.3, 0.5), -1.0), variant(1.1, (0.2, 0.4), 5.0)]
    adversarial = [variant(1.0, (0.0, 0.0), 0.0, sign=-1.0), variant(1.5, (0.4, -0.3), 2.0, sign=-1.0)]
    target = variant(1.2, (-0.2, -0.2), 1.0)
    f_star = minimum(target)

    def prior_study(f: Callable[..., float], seed: int) -> optuna.Study:
        s = Searcher(space, strategy="gp", direction="minimize", storage="memory", seed=100 + seed)
        s.optimize(f, num_trials=25, progress=False)
        return s.study

    t0 = time.perf_counter()
    priors = {"related": [prior_study(f, i) for i, f in enumerate(related)],
              "adversarial": [prior_study(f, 10 + i) for i, f in enumerate(adversarial)]}  # fmt: skip
    prior_seconds = time.perf_counter() - t0
    out: dict[str, Any] = {"target_minimum": f_star, "threshold": threshold, "budget": budget,
                           "prior_trials_each": 25, "prior_build_seconds": prior_seconds}  # fmt: skip
    for name, warm in (("cold", None), ("related", priors["related"]), ("adversarial", priors["adversarial"])):
        reach, regrets = [], []
        for seed in range(seeds):
            bo = BayesianOptimizer("loss", space, storage="memory", seed=seed, warm_start=warm)
            bo.optimize(target, num_trials=budget, progress=False)
            vals = [t.value for t in bo.study.trials]
            reg = [min(vals[: i + 1]) - f_star for i in range(len(vals))]
            reach.append(next((i + 1 for i, r in enumerate(reg) if r < threshold), None))
            regrets.append(reg)
        out[name] = {"trials_to_threshold": reach, "regret_at_10": [r[9] for r in regrets],
                     "regret_at_budget": [r[-1] for r in regrets]}  # fmt: skip
    return out


# -------------------------------------------------------------------------------------------------------- report


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return q[0], statistics.median(xs), q[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=50)
    ap.add_argument("--functions", nargs="+", default=list(FUNCTIONS))
    ap.add_argument("--timing-sizes", nargs="+", type=int, default=[25, 100, 200])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timing-rounds", type=int, default=3)
    ap.add_argument("--warm-seeds", type=int, default=5)
    ap.add_argument("--warm-budget", type=int, default=30)
    ap.add_argument("--parts", nargs="+", default=["regret", "timing", "warm"])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "search_bo.json"))
    ap.add_argument("--worker", default=None)
    ap.add_argument("--fn", default=None)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.fast:
        args.seeds, args.budget, args.timing_sizes, args.repeats, args.timing_rounds = 1, 12, [25], 1, 1
        args.warm_seeds, args.warm_budget, args.functions = 1, 10, ["branin", "mixed"]
    from _machine import machine_info

    result: dict[str, Any] = {"machine": machine_info(), "seeds": args.seeds, "budget": args.budget,
                              "initial_design": N_INIT, "optuna_project": optuna.__version__}  # fmt: skip
    budgets = [b for b in (25, 50, 100) if b <= args.budget] or [args.budget]
    methods = ["ours-gp", "random", "optuna-tpe", "optuna-gp"]
    if "regret" in args.parts:
        result["regret"] = {}
        for fn in args.functions:
            f_star = FUNCTIONS[fn][2]
            runs: dict[str, list[dict[str, Any]]] = {}
            # Optuna's workers run on the second core while ours and random search run here
            with ThreadPoolExecutor(max_workers=1) as pool:
                pending = {m: pool.submit(peer, m, fn, args) for m in methods if m.startswith("optuna")}
                for m in methods:
                    if m not in pending:
                        runs[m] = [run_method(m, fn, s, args.budget) for s in range(args.seeds)]
                for m, fut in pending.items():
                    got = fut.result()
                    result["optuna_peers"] = got["optuna"]
                    runs[m] = got["runs"]
            runs = {m: runs[m] for m in methods}
            table = {}
            for m, rs in runs.items():
                row: dict[str, Any] = {"sec_per_trial": statistics.mean(r["sec_per_trial"] for r in rs)}
                for b in budgets:
                    row[str(b)] = quartiles([min(r["values"][:b]) - f_star for r in rs])
                table[m] = row
            result["regret"][fn] = {"table": table, "runs": {m: [r["values"] for r in rs] for m, rs in runs.items()}}
            print(f"\n{fn} (simple regret: median [IQR] over {args.seeds} seeds)")
            print(f"{'method':<12}" + "".join(f"{'@' + str(b):>30}" for b in budgets) + f"{'s/trial':>10}")
            for m, row in table.items():
                cells = "".join(
                    f"{row[str(b)][1]:>12.4g} [{row[str(b)][0]:.3g}, {row[str(b)][2]:.3g}]" for b in budgets
                )
                print(f"{m:<12}{cells}{row['sec_per_trial']:>10.3f}")
    if "timing" in args.parts:
        # both libraries in fresh one-thread processes, alternating, so that a slow spell of a shared machine hits
        # both; the figure per library is the median over rounds of each round's median suggestion time
        rounds: dict[str, list[dict[str, float]]] = {"ours-gp": [], "optuna-gp": []}
        for _ in range(args.timing_rounds):
            rounds["ours-gp"].append(peer("ours-gp", "timing", args, python=sys.executable)["timing"])
            rounds["optuna-gp"].append(peer("optuna-gp", "timing", args)["timing"])
        ours = {str(n): statistics.median(r[str(n)] for r in rounds["ours-gp"]) for n in args.timing_sizes}
        theirs = {str(n): statistics.median(r[str(n)] for r in rounds["optuna-gp"]) for n in args.timing_sizes}
        ratios = {str(n): [a[str(n)] / b[str(n)] for a, b in zip(rounds["ours-gp"], rounds["optuna-gp"], strict=True)]
                  for n in args.timing_sizes}  # fmt: skip
        result["timing"] = {"ours-gp": ours, "optuna-gp": theirs, "rounds": rounds, "round_ratios": ratios}
        print(f"\nseconds per suggestion on Hartmann-6 after n random trials (median of {args.repeats} asks; median "
              f"over {args.timing_rounds} alternating rounds)")  # fmt: skip
        for n in map(str, args.timing_sizes):
            print(f"  n={n:>4}: ours {ours[n]:.3f}  optuna GPSampler {theirs[n]:.3f}  ratio {ours[n] / theirs[n]:.2f}"
                  f"  (per round: {', '.join(f'{r:.2f}' for r in ratios[n])})")  # fmt: skip
    if "warm" in args.parts:
        w = warm_start_part(args.warm_seeds, args.warm_budget, threshold=0.5)
        result["warm_start"] = w
        print(f"\nwarm start on a Branin variant (minimum {w['target_minimum']:.4f}): trials to regret < 0.5, "
              f"budget {args.warm_budget}, {args.warm_seeds} seeds")  # fmt: skip
        for name in ("cold", "related", "adversarial"):
            r = w[name]
            reached = [t for t in r["trials_to_threshold"] if t is not None]
            med = statistics.median(reached) if reached else float("nan")
            print(f"  {name:<12} reached {len(reached)}/{args.warm_seeds}, median trials {med}, "
                  f"median regret@10 {statistics.median(r['regret_at_10']):.3g}")  # fmt: skip
    out = Path(args.out)
    from meta_learning._io import atomic_write_json

    atomic_write_json(out, result)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
