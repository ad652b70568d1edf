"""AdaptiveOptimizer with default settings vs Adam (7-point learning-rate grid, and 1e-3), Prodigy and
schedule-free AdamW on five real tasks (see ``_adaptive_tasks.py``); also saves every held-out loss curve for
``curve_prediction.py``.

Ours and Adam run in this process; Prodigy (``prodigyopt``) and schedule-free AdamW (``schedulefree``) run in the
peers venv on the same data, initialisation and steps. One thread per process. The figure of merit is the final
held-out loss; the goal is to be within 5% of grid-tuned Adam on every task.

Usage:
    python benchmarks/adaptive_optim.py --fast                  # 40 steps, 2 tasks, 3-point grid
    python benchmarks/adaptive_optim.py                         # 250 steps, 5 tasks, 7-point grid, seed 0
    python benchmarks/adaptive_optim.py --seeds 0 1 2           # more seeds (--out: where the JSON goes)
    python benchmarks/adaptive_optim.py --worker peers --tasks mnist_mlp --steps 250 --seeds 0   # worker mode
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from _adaptive_tasks import TASKS, run  # noqa: E402

torch.set_num_threads(1)
GRID = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
PEERS_PYTHON = Path(os.environ.get("PEERS_PYTHON", REPO.parent / "peers-venv" / "bin" / "python"))


def peers_worker(args: argparse.Namespace) -> None:
    import prodigyopt
    import schedulefree

    out: dict[str, Any] = {"versions": {"prodigyopt": _version("prodigyopt"), "schedulefree": _version("schedulefree")}}
    makers = {
        "prodigy": lambda m: prodigyopt.Prodigy(m.parameters(), lr=1.0),
        "schedulefree_adamw": lambda m: schedulefree.AdamWScheduleFree(m.parameters()),
    }
    for task in args.tasks:
        for seed in args.seeds:
            for name, make in makers.items():
                out[f"{task}/{seed}/{name}"] = run(task, make, seed, args.steps)
    print(json.dumps(out))


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--worker", default=None)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "adaptive_optim.json"))
    args = ap.parse_args()
    if args.worker:
        peers_worker(args)
        return
    grid = GRID
    if args.fast:
        args.tasks, args.steps, grid = ["mnist_mlp", "sinusoid_maml"], 40, [1e-4, 1e-3, 1e-2]
    from _machine import machine_info

    from meta_learning._io import atomic_write_json
    from meta_learning.optim import AdaptiveOptimizer

    runs: dict[str, Any] = {}
    for task in args.tasks:
        for seed in args.seeds:
            runs[f"{task}/{seed}/ours"] = run(task, lambda m: AdaptiveOptimizer(m, "adam"), seed, args.steps)
            for lr in grid:
                runs[f"{task}/{seed}/adam_{lr:g}"] = run(
                    task, lambda m, lr=lr: torch.optim.Adam(m.parameters(), lr=lr), seed, args.steps
                )
            print(f"done {task} seed {seed}: ours {runs[f'{task}/{seed}/ours']['final_val']:.4f}", flush=True)
    cmd = [str(PEERS_PYTHON), __file__, "--worker", "peers", "--tasks", *args.tasks, "--seeds",
           *map(str, args.seeds), "--steps", str(args.steps)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"peers worker failed:\n{res.stderr[-3000:]}")
    peers = json.loads(res.stdout.strip().splitlines()[-1])
    versions = peers.pop("versions")
    runs.update(peers)

    summary: dict[str, Any] = {}
    print(f"\nfinal held-out loss after {args.steps} steps (seed(s) {args.seeds}); ratio = ours / grid-tuned Adam")
    header = f"{'task':<20}{'ours':>9}{'Adam*':>9}{'lr*':>8}{'Adam1e-3':>10}{'Prodigy':>9}{'SF-AdamW':>10}{'ratio':>7}"
    print(header)
    for task in args.tasks:

        def mean(name: str, task: str = task) -> float:
            return sum(runs[f"{task}/{s}/{name}"]["final_val"] for s in args.seeds) / len(args.seeds)

        grid_means = {lr: mean(f"adam_{lr:g}") for lr in grid}
        best_lr = min(grid_means, key=lambda lr: grid_means[lr])
        row = {"ours": mean("ours"), "adam_best": grid_means[best_lr], "adam_best_lr": best_lr,
               "adam_1e-3": grid_means.get(1e-3), "prodigy": mean("prodigy"),
               "schedulefree_adamw": mean("schedulefree_adamw"),
               "ours_lr_final": [runs[f"{task}/{s}/ours"]["group_lr_curve"][-1] for s in args.seeds]}  # fmt: skip
        row["ratio"] = row["ours"] / row["adam_best"]
        summary[task] = row
        a1 = row["adam_1e-3"] if row["adam_1e-3"] is not None else float("nan")
        print(f"{task:<20}{row['ours']:>9.4f}{row['adam_best']:>9.4f}{best_lr:>8.0e}{a1:>10.4f}"
              f"{row['prodigy']:>9.4f}{row['schedulefree_adamw']:>10.4f}{row['ratio']:>7.3f}")  # fmt: skip
    result = {"machine": machine_info(), "steps": args.steps, "seeds": args.seeds, "grid": grid,
              "peer_versions": versions, "summary": summary, "runs": runs}  # fmt: skip
    out = Path(args.out)
    atomic_write_json(out, result)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
