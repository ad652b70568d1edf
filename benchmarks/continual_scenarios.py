"""van de Ven & Tolias (2019), "Three scenarios for continual learning": Split MNIST (task/domain/class-IL) and
Permuted MNIST (domain-IL), for Naive, EWC, Online EWC, SI, LwF, Replay, A-GEM and Joint, mean +- std over seeds.

Protocol (what follows the paper, and where this run departs from it):

- Data: the paper trains on the 60,000 MNIST training images; this machine has only the 10,000 official test images,
  split 8,000 / 2,000 (stratified, seed 0) for training / testing (``source="test10k"``). Each Split MNIST task has
  ~1,600 training images instead of ~12,000, each Permuted MNIST task 8,000 instead of 60,000.
- Model: ReLU MLP with 2 hidden layers of 400 units (the paper's Split MNIST model; its Permuted MNIST model has
  1,000 units: ``--perm-units 1000``). Task-IL: one 2-unit head per task; domain-IL: 2 (Split) or 10 (Permuted)
  outputs; class-IL: 10 outputs with the units of unseen classes inactive, as in the paper.
- Training: Adam (0.9, 0.999), batch 128, a fresh optimizer per task; ``--split-iters`` / ``--perm-iters`` iterations
  per task (paper: 2,000 / 5,000) and lr ``--lr`` (paper: 1e-3 Split, 1e-4 Permuted; with 25x fewer Permuted
  iterations 1e-4 does not converge, so the scaled run uses 1e-3 for both).
- Hyperparameters: EWC lambda and SI c are the defaults of the authors' repository (GMvandeVen/continual-learning,
  params/param_values.py, chosen there by grid search): Split MNIST lambda 1e5 / 1e10 / 1e9 and c 10 / 5e4 / 5e3
  (task / domain / class), Permuted MNIST lambda 100 and c 10; online EWC gamma 1; SI xi 0.1; EWC uses the exact
  ("true") Fisher over every training image of the task. LwF: temperature 2, loss CE + t*T^2*KD on the t-th task
  (the paper's 1/t : (1-1/t) weighting with its T^2-scaled distillation, up to the overall 1/t factor Adam absorbs);
  "LwF a=1" is the same with CE + KD on every task (Li & Hoiem's lambda_o = 1, Avalanche's default alpha).
  "SI total-grad" (only when named in ``--methods``): SI's path integral over the whole loss's gradient, SI term
  included, as in the authors' code (``SI(path_gradient="total")``); "SI" uses the task loss's (Zenke et al.).
  Replay: 1,000 examples (reservoir), 128 replayed per step, joined to the batch (the paper's "exact replay" weighs
  replayed and current losses 1/t : 1-1/t instead). A-GEM: the same memory, 256 examples for the reference gradient.
  Joint: each task trained on all data so far (after the last task: everything).

Usage:
    python benchmarks/continual_scenarios.py --fast                 # 1 seed, a few iterations: a smoke run
    python benchmarks/continual_scenarios.py --seeds 5 --split-iters 100 --perm-iters 200 --workers 2
    python benchmarks/continual_scenarios.py --paper                # the paper's budget (hours on a CPU)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
METHODS = ("Naive", "EWC", "Online EWC", "SI", "SI total-grad", "LwF", "LwF a=1", "Replay", "A-GEM", "Joint")
OPT_IN_METHODS = ("SI total-grad",)  # run only when named in --methods
SETTINGS = (("split", "task"), ("split", "domain"), ("split", "class"), ("perm", "domain"))
LAMBDA = {("split", "task"): 1e5, ("split", "domain"): 1e10, ("split", "class"): 1e9, ("perm", "domain"): 100.0}
SI_C = {("split", "task"): 10.0, ("split", "domain"): 5e4, ("split", "class"): 5e3, ("perm", "domain"): 10.0}
# Figures of van de Ven & Tolias (2019) as quoted in issue 4 (average test accuracy in %, the paper's full data and
# budget); other cells were not available offline to quote.
PAPER: dict[tuple[str, str], dict[str, str]] = {
    ("perm", "domain"): {"EWC": "94.31", "Online EWC": "94.42", "SI": "95.33", "LwF": "72.64", "Joint": "97.59"},
    ("split", "class"): {"EWC": "~20", "Online EWC": "~20", "SI": "~20", "Replay": "~90+ (replay methods)"},
}
MEMORY, BATCH, TEMPERATURE = 1000, 128, 2.0

_STREAMS: dict[tuple[str, str, int], Any] = {}


def data_root() -> Path:
    return Path(os.environ.get("META_LEARNING_DATA", REPO.parent / "shared" / "data"))


def stream_for(protocol: str, scenario: str, n_perm: int) -> Any:
    from meta_learning.data.mnist import PermutedMNIST, SplitMNIST

    key = (protocol, scenario, n_perm)
    if key not in _STREAMS:
        if protocol == "split":
            _STREAMS[key] = SplitMNIST(data_root(), scenario, source="test10k")
        else:
            _STREAMS[key] = PermutedMNIST(data_root(), n_perm, scenario, seed=0, source="test10k", pad_to=32)
    return _STREAMS[key]


def body(d_in: int, units: int) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(d_in, units), nn.ReLU(), nn.Linear(units, units), nn.ReLU())


def build(job: dict[str, Any], stream: Any) -> Any:
    from meta_learning.continual import (
        AGEM,
        EWC,
        SI,
        ExperienceReplay,
        Joint,
        LwF,
        MultiHeadClassifier,
        Naive,
        TrainConfig,
    )

    d_in = 784 if job["protocol"] == "split" else 1024
    units = job["units"]
    torch.manual_seed(job["seed"])
    if stream.multi_head:
        model: nn.Module = MultiHeadClassifier(body(d_in, units), units, stream.num_classes, seed=job["seed"])
    else:
        model = nn.Sequential(*body(d_in, units), nn.Linear(units, stream.num_classes))
    setting = (job["protocol"], job["scenario"])
    common = {"config": TrainConfig(iterations=job["iters"], batch_size=BATCH, lr=job["lr"]), "seed": job["seed"]}
    method = job["method"]
    if method == "Naive":
        return Naive(model, **common)
    if method == "Joint":
        return Joint(model, **common)
    if method in ("EWC", "Online EWC"):
        return EWC(model, ewc_lambda=LAMBDA[setting], online=method == "Online EWC", gamma=1.0, **common)
    if method in ("SI", "SI total-grad"):  # the path integral over the task loss's / the whole loss's gradient
        path_gradient = "total" if method == "SI total-grad" else "task"
        return SI(model, c=SI_C[setting], xi=0.1, path_gradient=path_gradient, **common)
    if method == "LwF":
        alphas = [t * TEMPERATURE**2 if t else 1.0 for t in range(len(stream))]
        return LwF(model, alpha=alphas, temperature=TEMPERATURE, **common)
    if method == "LwF a=1":  # Li & Hoiem's and Avalanche's weighting: CE + 1 * KD on every task
        return LwF(model, alpha=1.0, temperature=TEMPERATURE, **common)
    if method == "Replay":
        return ExperienceReplay(model, memory_size=MEMORY, batch_size_mem=BATCH, **common)
    if method == "A-GEM":
        return AGEM(model, memory_size=MEMORY, sample_size=256, **common)
    raise ValueError(f"unknown method {method!r}")


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)
    sys.path.insert(0, str(REPO / "src"))
    from meta_learning._io import atomic_write_json
    from meta_learning.continual import train_stream

    stream = stream_for(job["protocol"], job["scenario"], job["perm_tasks"])
    strategy = build(job, stream)
    start = time.perf_counter()
    result = train_stream(strategy, stream, eval_initial=True)
    record = {**job, **result.to_dict(), "wall_time_s": time.perf_counter() - start}
    atomic_write_json(job_path(job), record)
    return record


def job_path(job: dict[str, Any]) -> Path:
    tag = f"{job['protocol']}-{job['scenario']}-{job['method'].replace(' ', '_')}-s{job['seed']}"
    budget = f"i{job['iters']}-lr{job['lr']:g}-u{job['units']}" + (
        f"-t{job['perm_tasks']}" if job["protocol"] == "perm" else ""
    )
    return OUT / "continual_scenarios" / budget / f"{tag}.json"


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for protocol, scenario in SETTINGS:
        for method in METHODS:
            mine = [r for r in records if (r["protocol"], r["scenario"], r["method"]) == (protocol, scenario, method)]
            if not mine:
                continue
            acc = [100 * r["metrics"]["average_accuracy"] for r in mine]
            forget = [100 * r["metrics"]["average_forgetting"] for r in mine]
            bwt = [100 * r["metrics"]["bwt"] for r in mine]
            mats = [r["accuracy_matrix"] for r in mine]
            new_task = [100 * statistics.mean(m[i][i] for i in range(len(m))) for m in mats]  # R's diagonal
            first_task_end = [100 * m[-1][0] for m in mats]
            rows.append(
                {
                    "protocol": protocol,
                    "scenario": scenario,
                    "method": method,
                    "seeds": len(mine),
                    "accuracy_mean": statistics.mean(acc),
                    "accuracy_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                    "forgetting_mean": statistics.mean(forget),
                    "bwt_mean": statistics.mean(bwt),
                    "new_task_mean": statistics.mean(new_task),
                    "first_task_at_end_mean": statistics.mean(first_task_end),
                    "train_s_mean": statistics.mean(sum(r["train_time_s"]) for r in mine),
                    "paper": PAPER.get((protocol, scenario), {}).get(method, ""),
                }
            )
    return rows


def heatmaps(records: list[dict[str, Any]], stem: Path) -> list[Path]:
    """Mean accuracy matrix of Permuted MNIST (domain-IL) per method, drawn by the report module:
    ``<stem>_<method>.png``; returns the paths written."""
    from meta_learning._io import atomic_open
    from meta_learning.report.figures import accuracy_matrix

    written = []
    for method in METHODS:
        mats = [r["accuracy_matrix"] for r in records if r["protocol"] == "perm" and r["method"] == method]
        if not mats:
            continue
        mean = torch.tensor(mats).mean(0).tolist()
        path = stem.with_name(f"{stem.name}_{method.replace(' ', '_').replace('=', '')}.png")
        with atomic_open(path) as fh:
            fh.write(accuracy_matrix(f"Permuted MNIST, {method} (mean of {len(mats)} seeds)", mean))
        written.append(path)
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fast", action="store_true", help="smoke run: 1 seed, 20/30 iterations, 3 permutations")
    p.add_argument("--paper", action="store_true", help="the paper's budget: 2,000 / 5,000 iterations, 1,000 units")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--split-iters", type=int, default=100)
    p.add_argument("--perm-iters", type=int, default=200)
    p.add_argument("--perm-tasks", type=int, default=10)
    p.add_argument("--perm-units", type=int, default=400)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--methods", default=",".join(m for m in METHODS if m not in OPT_IN_METHODS))
    p.add_argument("--settings", default=",".join(f"{a}-{b}" for a, b in SETTINGS))
    p.add_argument(
        "--summarize-only",
        action="store_true",
        help="start no run: summarise the finished runs of this configuration (e.g. after a stop)",
    )
    p.add_argument("--out", type=Path, default=OUT / "continual_scenarios.json")
    args = p.parse_args()
    if args.fast:
        args.seeds, args.split_iters, args.perm_iters, args.perm_tasks = 1, 20, 30, 3
    if args.paper:
        args.split_iters, args.perm_iters, args.perm_units = 2000, 5000, 1000
    sys.path.insert(0, str(REPO / "benchmarks"))
    from _machine import COMMIT_AT_START, machine_info

    from meta_learning._io import atomic_write_json

    methods = [m for m in args.methods.split(",") if m]
    settings = [tuple(s.split("-")) for s in args.settings.split(",") if s]
    jobs = []
    for protocol, scenario in settings:
        for seed in range(args.seeds):
            for method in methods:
                perm = protocol == "perm"
                jobs.append({
                    "protocol": protocol, "scenario": scenario, "method": method, "seed": seed,
                    "iters": args.perm_iters if perm else args.split_iters, "lr": args.lr,
                    "units": args.perm_units if perm else 400, "perm_tasks": args.perm_tasks, "commit": COMMIT_AT_START,
                })  # fmt: skip
    records, todo = [], []
    for job in jobs:  # finished jobs are reused: a killed run picks up where it stopped
        path = job_path(job)
        if path.is_file():
            records.append(json.loads(path.read_text()))
        else:
            todo.append(job)
    print(f"{len(jobs)} runs, {len(jobs) - len(todo)} already done", flush=True)
    start = time.perf_counter()
    if todo and not args.summarize_only:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            for rec in pool.map(run_job, todo):
                records.append(rec)
                m = rec["metrics"]
                print(
                    f"{rec['protocol']:5s} {rec['scenario']:6s} {rec['method']:10s} seed {rec['seed']}: "
                    f"acc {100 * m['average_accuracy']:.2f}  forgetting {100 * m['average_forgetting']:.2f}  "
                    f"{rec['wall_time_s']:.1f}s",
                    flush=True,
                )
    wall = time.perf_counter() - start
    rows = summarise(records)
    print(
        "\n| protocol | scenario | method | ours: avg accuracy (%) mean +- std | forgetting (%) | BWT (%) "
        "| new task (%) | task 1 at the end (%) | min / run | paper |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['protocol']} | {r['scenario']} | {r['method']} | {r['accuracy_mean']:.2f} +- {r['accuracy_std']:.2f}"
            f" (n={r['seeds']}) | {r['forgetting_mean']:.2f} | {r['bwt_mean']:.2f} | {r['new_task_mean']:.1f}"
            f" | {r['first_task_at_end_mean']:.1f} | {r['train_s_mean'] / 60:.1f} | {r['paper']} |"
        )
    pngs = heatmaps(records, args.out.with_name(args.out.stem + "_perm"))
    atomic_write_json(
        args.out,
        {
            "benchmark": "continual_scenarios",
            "machine": machine_info(),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "wall_time_s_this_session": wall,
            "runs_missing": [job_path(j).name for j in todo] if args.summarize_only else [],
            "rows": rows,
            "runs": [{k: v for k, v in r.items() if k != "task_logs"} for r in records],
        },
    )
    print(f"wrote {args.out}" + "".join(f", {p.name}" for p in pngs) + f" ({wall:.0f} s)")


if __name__ == "__main__":
    main()
