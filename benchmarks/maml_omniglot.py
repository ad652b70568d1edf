"""MAML, FOMAML, ANIL, Meta-SGD and MAML++ on Omniglot (Vinyals split), 5-way and 20-way 1-shot, on a CPU budget.

Each (algorithm, way) trains from the shipped MAML config for --iterations meta-batches (optionally also a
wall-time budget, --minutes), validating on --val-tasks
fixed validation tasks every --eval-every iterations (the accuracy-vs-time curve), keeps the best validation
checkpoint, and evaluates it on >= 1,000 fixed test tasks: query accuracy after 0, 1, 2, 3, 5 and 10 inner steps
from one inner loop per task (the adaptation-speed metric); the headline figure is the accuracy at the config's
evaluation step count (5-way: 3 steps, 20-way: 5). One run per process invocation, so that runs can be queued
under a lock; results accumulate in --out. `--plot` draws accuracy vs training time for every run in --out.

Settings (what differs from the papers is said here and in RESULTS.md):
- Conv4 (64 filters, batch-statistics BatchNorm) + linear head, Adam on the meta-parameters (lr 1e-3).
- 5-way: 1 inner step of lr 0.4 in training (Finn et al.), 15 queries per class, meta-batch --meta-batch.
- 20-way: the paper's 5 second-order inner steps are out of reach on 2 cores, so training uses 1 inner step of
  lr 0.4 and 5 queries per class; evaluation uses 5 inner steps of that rate and 15 queries per class.
- Meta-batch 8 (papers: 32 for 5-way, 16 for 20-way): on a time budget, more updates beat larger batches.
- MAML++ (`--algo mamlpp`, 5-way) trains from the shipped `mamlpp_omniglot_5w1s` config (meta-batch from
  --meta-batch), which follows Antoniou et al.'s Omniglot configs instead (their repository's
  `experiment_config/omniglot_maml++-omniglot_*`): 5 second-order inner steps from a learned per-layer, per-step
  rate starting at 0.1 (LSLR), the multi-step loss annealed over the first 5,000 iterations (their 10 epochs of
  500), per-step BatchNorm weights and biases, 1 query per class in training, meta-batch 8; evaluation with 5
  steps and 15 queries per class. Not reproduced: their cosine annealing of the meta learning rate, and their
  BatchNorm parameters stay out of the inner loop (here every parameter is adapted, as in the other runs).
- Threads: OMP_NUM_THREADS=1 in run_maml_omniglot.sh (the machine was shared with other jobs; spin-waiting
  OpenMP threads collapse under oversubscription), so wall times are upper bounds.

Usage:
    python benchmarks/maml_omniglot.py --algo maml --way 5 --iterations 200
    python benchmarks/maml_omniglot.py --plot
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info

from meta_learning._io import atomic_write_json
from meta_learning.config import load_config
from meta_learning.data.omniglot import Omniglot
from meta_learning.data.sampler import EpisodeSampler
from meta_learning.experiment import build_learner, resolve_config_path
from meta_learning.training.checkpoint import load_model_weights

PAPER = {  # 5-way 1-shot / 20-way 1-shot, Omniglot
    "maml": {5: 98.7, 20: 95.8},  # Finn et al. 2017
    "fomaml": {5: 98.3, 20: 89.4},  # Finn et al. 2017 (first-order approximation)
    "anil": {5: None, 20: None},  # Raghu et al. 2020 report mini-ImageNet only
    "metasgd": {5: 99.53, 20: 95.93},  # Li et al. 2017
    "mamlpp": {5: 99.47, 20: 97.65},  # Antoniou et al. 2019 (MAML++, Table 1)
}
CURVE_STEPS = (0, 1, 2, 3, 5, 10)


def make_config(
    algo: str,
    way: int,
    meta_batch: int,
    minutes: float | None,
    iterations: int,
    eval_every: int,
    val_tasks: int,
    root: str | None,
):
    if algo == "mamlpp":  # the shipped MAML++ config: the authors' Omniglot settings (module docstring)
        if way != 5:
            raise ValueError(f"--algo mamlpp --way {way}: only the 5-way MAML++ config is shipped")
        cfg = load_config(resolve_config_path("mamlpp_omniglot_5w1s"))
        mc = replace(cfg.maml, meta_batch_size=meta_batch)
        train_query = cfg.data.train_query
    else:
        cfg = load_config(resolve_config_path(f"maml_omniglot_{way}w1s"))
        mc = replace(
            cfg.maml,
            lr_inner=0.4,
            num_inner_steps=1,
            first_order=algo == "fomaml",
            meta_batch_size=meta_batch,
            eval_inner_steps=3 if way == 5 else 5,
        )
        train_query = 15 if way == 5 else 5
    data = replace(cfg.data, root=root, download=False, train_query=train_query)
    train = replace(
        cfg.train, max_time_s=None if minutes is None else 60 * minutes, num_episodes=iterations,
        eval_every=eval_every, val_episodes=val_tasks, progress=False,
    )  # fmt: skip
    learner = replace(cfg.learner, name={"fomaml": "maml", "mamlpp": "maml"}.get(algo, algo))
    return replace(cfg, maml=mc, data=data, train=train, learner=learner)


def run(algo: str, way: int, args: argparse.Namespace) -> dict:
    cfg = make_config(
        algo, way, args.meta_batch, args.minutes, args.iterations, args.eval_every, args.val_tasks, args.root
    )
    torch.manual_seed(cfg.seed)
    learner = build_learner(cfg)
    d = cfg.data
    train_set = Omniglot(root=args.root, split="train")
    sampler = EpisodeSampler(train_set, d.train_way, d.train_shot, d.train_query, seed=cfg.seed)
    val = EpisodeSampler(Omniglot(root=args.root, split="val"), way, 1, 15, seed=cfg.eval.seed)
    val_eps = val.evaluation_episodes(cfg.train.val_episodes, seed=0)
    run_dir = Path(args.out).parent / "runs" / f"maml_omniglot_{algo}_{way}w1s"
    history = learner.meta_train(
        sampler, num_iterations=cfg.train.num_episodes, val_tasks=val_eps, eval_every=cfg.train.eval_every,
        max_time_s=cfg.train.max_time_s, run_dir=run_dir, checkpoint_every=50, progress=False,
    )  # fmt: skip
    load_model_weights(learner, run_dir / "checkpoints" / "best.pt")
    test = EpisodeSampler(Omniglot(root=args.root, split="test"), way, 1, 15, seed=cfg.eval.seed)
    steps = cfg.maml.eval_inner_steps
    tasks = test.evaluation_episodes(args.test_tasks, seed=cfg.eval.seed)
    curve_tasks = min(args.curve_tasks or args.test_tasks, args.test_tasks)
    t = time.perf_counter()
    if curve_tasks == args.test_tasks:  # one inner loop per task gives the headline and the curve
        curve = learner.adaptation_curve(tasks, CURVE_STEPS)
        headline = curve[steps]
    else:  # 20-way query forwards are costly on 2 cores: the curve uses the first curve_tasks tasks
        headline = learner.evaluate(tasks, num_steps=steps)
        curve = learner.adaptation_curve(tasks[:curve_tasks], CURVE_STEPS)
    eval_s = time.perf_counter() - t
    return {
        "algo": algo,
        "way": way,
        "shot": 1,
        "iterations": history.steps,
        "meta_batch_size": cfg.maml.meta_batch_size,
        "tasks_seen": history.steps * cfg.maml.meta_batch_size,
        "train_wall_time_s": history.wall_time_s,
        "best_step": history.best_step,
        "best_val_accuracy": history.best_val_accuracy,
        "val_curve": history.val,
        "eval_inner_steps": steps,
        "test_tasks": args.test_tasks,
        "test": headline.to_dict(),
        "curve_tasks": curve_tasks,
        "adaptation_curve": {str(s): acc.to_dict() for s, acc in curve.items()},
        "eval_s": eval_s,
        "paper": PAPER[algo][way],
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ways = sorted({r["way"] for r in results})
    fig, axes = plt.subplots(1, len(ways), figsize=(5.5 * len(ways), 4), squeeze=False)
    for ax, way in zip(axes[0], ways, strict=True):
        for res in (r for r in results if r["way"] == way):
            xs = [v["time_s"] / 60 for v in res["val_curve"]]
            ys = [100 * v["accuracy"] for v in res["val_curve"]]
            ax.plot(xs, ys, marker=".", label=res["algo"])
        ax.set(title=f"Omniglot {way}-way 1-shot (validation tasks)", xlabel="training wall time (min)")
        ax.set_ylabel("query accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algo", choices=sorted(PAPER))
    ap.add_argument("--way", type=int, choices=[5, 20])
    ap.add_argument("--iterations", type=int, default=200, help="meta-iterations (meta-batches)")
    ap.add_argument("--minutes", type=float, default=None, help="also stop after this wall time")
    ap.add_argument("--meta-batch", type=int, default=8)
    ap.add_argument("--eval-every", type=int, default=20, help="validate every this many iterations")
    ap.add_argument("--test-tasks", type=int, default=1000)
    ap.add_argument("--curve-tasks", type=int, default=None, help="tasks for the adaptation curve (default: all)")
    ap.add_argument("--val-tasks", type=int, default=100)
    ap.add_argument("--root", default=None, help="data root (default: $META_LEARNING_DATA)")
    ap.add_argument("--out", default="benchmarks/out/maml_omniglot.json")
    ap.add_argument("--plot", action="store_true", help="plot accuracy vs time for the runs in --out")
    args = ap.parse_args()
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() else {"runs": []}
    if args.algo is not None:
        if args.way is None:
            ap.error("--algo needs --way")
        res = run(args.algo, args.way, args)
        report["runs"] = [r for r in report["runs"] if (r["algo"], r["way"]) != (args.algo, args.way)] + [res]
        report["machine"] = machine_info()
        atomic_write_json(out, report)
    print(f"{'algo':<8} {'setting':<7} {'test acc (95% CI)':<18} {'paper':>6} {'train':>7} {'iters':>6} {'tasks':>6}"
          "  accuracy after 0/1/2/3/5/10 steps")  # fmt: skip
    for r in sorted(report["runs"], key=lambda r: (r["way"], r["algo"])):
        curve = " ".join(f"{100 * r['adaptation_curve'][str(s)]['mean']:.1f}" for s in CURVE_STEPS)
        paper = "-" if r["paper"] is None else f"{r['paper']:.2f}"
        print(
            f"{r['algo']:<8} {r['way']}w1s    {100 * r['test']['mean']:6.2f} ± {100 * r['test']['ci95']:.2f}     "
            f"{paper:>6} {r['train_wall_time_s'] / 60:6.1f}m {r['iterations']:6d} {r['tasks_seen']:6d}  {curve}"
        )
    if args.plot:
        plot(report["runs"], out.with_suffix(".png"))


if __name__ == "__main__":
    main()
