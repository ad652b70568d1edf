"""ProtoNet and RelationNet on Omniglot (Vinyals split): accuracy, training time, throughput, profile.

Usage:
    python benchmarks/fewshot_omniglot.py                       # everything, ~30 min of training per model
    python benchmarks/fewshot_omniglot.py --learners protonet --shots 1 --minutes 5
    python benchmarks/fewshot_omniglot.py --throughput-only

Trains one model per (learner, shot) on the train split (best validation checkpoint kept), then evaluates it on
>= 1,000 fixed test episodes at 5-way and 20-way. ProtoNet trains on 60-way episodes (Snell et al.); RelationNet
on 5-way episodes with 19 queries (Sung et al. train 5-way and 20-way models separately; we evaluate the 5-way
model at 20-way too — see RESULTS.md). Prints a table and writes JSON to --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info, matmul_peak_gflops

from meta_learning._io import atomic_write_json
from meta_learning.config import load_config
from meta_learning.experiment import (
    build_dataset,
    build_learner,
    evaluate_learner,
    prepare_learner,
    resolve_config_path,
    train_experiment,
    training_autocast,
    training_sampler,
)
from meta_learning.training.checkpoint import load_model_weights
from meta_learning.training.loop import PRECISIONS, autocast_dtype, fit

PAPER = {
    "protonet": {"5w1s": 98.8, "5w5s": 99.7, "20w1s": 96.0, "20w5s": 98.9},
    "relationnet": {"5w1s": 99.6, "5w5s": 99.8, "20w1s": 97.6, "20w5s": 99.1},
}


def _training_setup(cfg, root: str | None, seed: int):
    """The learner as a run trains it (:func:`prepare_learner`) and its stream of training episodes
    (:func:`training_sampler`, augmented as ``data.train_shift`` says), both seeded with ``seed``."""
    torch.manual_seed(seed)
    d = cfg.data
    data = build_dataset(replace(d, root=root, download=False), d.train_split)
    return prepare_learner(cfg, "cpu"), training_sampler(replace(cfg, seed=seed), data)


def _fit_seconds(learner, cfg, episodes, steps: int) -> float:
    """Wall time of ``steps`` steps of the library's training loop (``fit``: Adam at the config's rate, under
    the config's precision) on ``episodes`` (a sampler or a list)."""
    t = time.perf_counter()
    fit(learner, episodes, num_episodes=steps, lr=cfg.train.lr, autocast=training_autocast(cfg), progress=False)
    return time.perf_counter() - t


def throughput(
    cfg_name: str, root: str | None, steps: int = 10, precision: str = "fp32", channels_last: bool = False
) -> dict[str, float]:
    """Training episodes/s and achieved GFLOP/s of the learner's training step (forward, backward, Adam)."""
    cfg = load_config(resolve_config_path(cfg_name))
    cfg = replace(cfg, train=replace(cfg.train, precision=precision, channels_last=channels_last))
    learner, sampler = _training_setup(cfg, root, seed=0)
    episodes = [sampler.sample() for _ in range(steps + 3)]

    with FlopCounterMode(display=False) as counter:
        _fit_seconds(learner, cfg, episodes[:1], 1)
    flops = counter.get_total_flops()
    _fit_seconds(learner, cfg, episodes[1:3], 2)
    dt = _fit_seconds(learner, cfg, episodes[3:], steps) / steps
    t = time.perf_counter()
    for _ in range(steps):
        sampler.sample()
    sample_dt = (time.perf_counter() - t) / steps
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        _fit_seconds(learner, cfg, episodes[:3], 3)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    top = [
        {"op": e.key, "share": e.self_cpu_time_total / total}
        for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]
    ]
    return {
        "images_per_episode": cfg.data.train_way * (cfg.data.train_shot + cfg.data.train_query),
        "episode_s": dt,
        "episodes_per_s": 1 / dt,
        "gflop_per_episode": flops / 1e9,
        "achieved_gflops": flops / dt / 1e9,
        "sampling_ms_per_episode": 1e3 * sample_dt,
        "profile_top_ops": top,
        "profile_table": table,
        "precision": precision,
        "channels_last": channels_last,
    }


def probe_episodes_per_s(cfg, root: str | None, steps: int = 20) -> float:
    """Training episodes/s of a throwaway copy of the learner (to size a cosine schedule to the time budget)."""
    learner, sampler = _training_setup(cfg, root, seed=9)
    _fit_seconds(learner, cfg, sampler, 3)  # warm-up
    return steps / _fit_seconds(learner, cfg, sampler, steps)


def train_and_evaluate(
    learner: str, shot: int, minutes: float, root: str | None, out_dir: Path, schedule: str = "step",
    train_split: str = "train", precision: str = "fp32", channels_last: bool = False, resume: bool = False,
    seed: int | None = None, lr: float | None = None, shift: int = 0,
) -> dict:  # fmt: skip
    """Train under the time budget and evaluate at 5- and 20-way.

    ``schedule="cosine"`` sizes a cosine decay to the budget: the number of episodes is 97% of what a 20-step
    probe says fits (the time limit still stops the run if the machine slows down). With ``train_split="trainval"``
    (the papers' final protocol) the validation characters are part of training, so validation cannot select a
    checkpoint: the final weights are evaluated. ``precision="bf16"`` trains with bfloat16 autocast and
    ``channels_last`` stores the convolution weights channels-last (evaluation runs in float32 either way).
    ``seed`` replaces the config's training seed (initialisation and episode order; the test episodes stay fixed);
    ``lr`` replaces the config's Adam learning rate (the peak of the cosine schedule); ``shift`` > 0 moves the
    training images by random whole pixels up to that many (``data.train_shift``).
    The run folder is ``out_dir/runs/<config name>``: one holding a checkpoint is continued with ``resume=True``
    and refused otherwise (continuing an earlier run after a code change would evaluate that run's weights).
    """
    name = f"{learner}_omniglot_5w{shot}s"
    cfg = load_config(resolve_config_path(name))
    cfg = replace(
        cfg,
        data=replace(cfg.data, root=root, download=False, train_split=train_split, train_shift=shift),
        seed=cfg.seed if seed is None else seed,
        train=replace(
            cfg.train, precision=precision, channels_last=channels_last, lr=cfg.train.lr if lr is None else lr
        ),
    )
    num_episodes = 10**6
    probe = None
    if schedule == "cosine":
        probe = probe_episodes_per_s(cfg, root)
        num_episodes = int(0.97 * probe * 60 * minutes)
        print(f"{name}: probe {probe:.2f} episodes/s -> cosine schedule over {num_episodes} episodes")
    cfg = replace(
        cfg,
        train=replace(
            cfg.train, max_time_s=60 * minutes, num_episodes=num_episodes, progress=False, lr_schedule=schedule
        ),
    )
    suffix = "" if (schedule, train_split) == ("step", "train") else f"_{train_split}_{schedule}"
    suffix += "" if (precision, channels_last) == ("fp32", False) else f"_{precision}{'_cl' if channels_last else ''}"
    suffix += "" if lr is None else f"_lr{lr:g}"
    suffix += "" if shift == 0 else f"_shift{shift}"
    suffix += "" if seed is None else f"_seed{seed}"
    run = out_dir / "runs" / (name + suffix)
    if (run / "checkpoints" / "last.pt").exists() and not resume:
        raise SystemExit(f"{run} holds an earlier run's checkpoint: pass --resume to continue it, or remove the folder")
    results = train_experiment(cfg, run, progress=False, resume=resume)
    trained = build_learner(cfg)
    weights = "last.pt" if train_split == "trainval" else "best.pt"
    load_model_weights(trained, run / "checkpoints" / weights)
    evals = {}
    for way in (5, 20):
        t = time.perf_counter()
        acc = evaluate_learner(cfg, trained, n_way=way, k_shot=shot)
        evals[f"{way}w{shot}s"] = {**acc.to_dict(), "eval_s": time.perf_counter() - t}
    return {
        "learner": learner,
        "shot": shot,
        "train_way": cfg.data.train_way,
        "train_query": cfg.data.train_query,
        "steps": results["steps"],
        "train_wall_time_s": results["train_wall_time_s"],
        "best_step": results["best_step"],
        "best_val_accuracy": results["best_val_accuracy"],
        "test": evals,
        "schedule": schedule,
        "precision": precision,
        "channels_last": channels_last,
        "train_split": train_split,
        "probe_episodes_per_s": probe,
        "evaluated_checkpoint": weights,
        "run_dir": str(run),
        "resumed": resume,
        "seed": cfg.seed,
        "lr": cfg.train.lr,
        "train_shift": cfg.data.train_shift,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learners", nargs="+", default=["protonet", "relationnet"], choices=sorted(PAPER))
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 5])
    parser.add_argument("--minutes", type=float, default=30.0, help="training time budget per model")
    parser.add_argument("--root", default=None, help="data root (default: $META_LEARNING_DATA)")
    parser.add_argument("--out", default="benchmarks/out/fewshot_omniglot.json")
    parser.add_argument("--throughput-only", action="store_true")
    parser.add_argument("--no-throughput", action="store_true", help="skip the throughput/profile section")
    parser.add_argument("--schedule", choices=["step", "cosine"], default="step", help="LR schedule (see docs)")
    parser.add_argument("--train-split", choices=["train", "trainval"], default="train")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="train + throughput dtype")
    parser.add_argument("--channels-last", action="store_true", help="channels-last convolution weights")
    parser.add_argument("--resume", action="store_true", help="continue the runs in the output folder's runs/")
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: the config's)")
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the config's)")
    parser.add_argument("--shift", type=int, default=0, help="random shift of training images, in pixels (0: none)")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    out = Path(args.out)
    report: dict = {"machine": machine_info(), "matmul_peak_gflops": matmul_peak_gflops()}
    print(f"matmul peak (2048^2 fp32): {report['matmul_peak_gflops']:.1f} GFLOP/s")
    peak, peak_name = report["matmul_peak_gflops"], "fp32"
    amp_dtype = autocast_dtype(args.precision, "--precision")
    if amp_dtype is not None and not args.no_throughput:  # the step's convolutions run in bf16: their ceiling
        peak = report[f"matmul_peak_gflops_{args.precision}"] = matmul_peak_gflops(dtype=amp_dtype)
        peak_name = args.precision
        print(f"matmul peak (2048^2 {peak_name}): {peak:.1f} GFLOP/s")
    names = (
        () if args.no_throughput else ("protonet_omniglot_5w1s", "protonet_omniglot_5w5s", "relationnet_omniglot_5w1s")
    )
    report["throughput"] = {
        name: throughput(name, args.root, precision=args.precision, channels_last=args.channels_last) for name in names
    }
    if names and (args.precision, args.channels_last) != ("fp32", False):
        print(f"training steps below: {args.precision}{' + channels-last' if args.channels_last else ''}")
    for name, tp in report["throughput"].items():
        print(
            f"{name:<28} {tp['episodes_per_s']:6.2f} episodes/s  {tp['images_per_episode']:4d} img/episode  "
            f"{tp['achieved_gflops']:6.1f} GFLOP/s ({100 * tp['achieved_gflops'] / peak:.0f}%"
            f" of the {peak_name} peak)  sampling {tp['sampling_ms_per_episode']:.2f} ms"
        )
    if names:
        print(report["throughput"][names[0]]["profile_table"])
    atomic_write_json(out, report)
    if not args.throughput_only:
        report["runs"] = []
        for learner in args.learners:
            for shot in args.shots:
                res = train_and_evaluate(
                    learner, shot, args.minutes, args.root, out.parent, args.schedule, args.train_split,
                    args.precision, args.channels_last, args.resume, args.seed, args.lr, args.shift,
                )  # fmt: skip
                report["runs"].append(res)
                atomic_write_json(out, report)
        print(f"\n{'learner':<12} {'setting':<7} {'ours (95% CI)':<18} {'paper':>6} {'train':>8} {'steps':>6}")
        for res in report["runs"]:
            for setting, acc in res["test"].items():
                print(
                    f"{res['learner']:<12} {setting:<7} {100 * acc['mean']:6.2f} ± {100 * acc['ci95']:.2f}     "
                    f"{PAPER[res['learner']][setting]:6.1f} {res['train_wall_time_s'] / 60:6.1f}m {res['steps']:6d}"
                )
    atomic_write_json(out, report)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
