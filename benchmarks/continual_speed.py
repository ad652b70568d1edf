"""Continual-learning training speed: this library vs Avalanche 0.6, side by side, same model, data and epochs.

Stream: Split MNIST, class-incremental, 5 experiences of 2 digits, from the 10k official MNIST test images split
8,000 / 2,000 (stratified, seed 0; the 60k training images are not on this machine). Model: 784-400-400-10 ReLU MLP
(van de Ven & Tolias's), initialised from ``torch.manual_seed(seed)`` in both libraries (same torch, same weights).
Training: Adam lr 1e-3 reset at each experience, batch 128, ``--epochs`` epochs per experience, every output unit
trained from the start (``mask_unseen_classes=False``, Avalanche's behaviour). Strategies: Naive; EWC (offline,
lambda 1e4; ours: empirical per-example Fisher, Avalanche: its squared mini-batch gradients); Replay (memory 500,
128 memory examples joined to each batch; ours: reservoir, Avalanche: experience-balanced buffer).

A third column, "plain", is a minimal hand-written PyTorch loop (Naive only) with the same model, batches and
optimizer: the compute floor, so that the overhead of each library is visible.

Timed: the training call of each experience only (ours ``learn_task``, Avalanche ``strategy.train``), wall clock,
after the data are in memory. Avalanche runs with an evaluator without loggers, its cheapest configuration.
Each (library, strategy, repeat) runs in a fresh process with the same thread count; accuracy is the final mean
test accuracy over the 5 experiences.

Usage:
    python benchmarks/continual_speed.py [--fast] [--epochs 5] [--repeats 3] [--threads 1]
    python benchmarks/continual_speed.py --worker ours|avalanche --strategy naive --data FILE   (one run)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
PEERS = Path(os.environ.get("PEERS_PYTHON", REPO.parent / "peers-venv" / "bin" / "python"))
STRATEGIES = ("naive", "ewc", "replay")
# plain: a minimal hand-written PyTorch loop (Naive only); *_fused: the same with torch.optim.Adam(fused=True)
LIBRARIES = ("ours", "avalanche", "plain", "ours_bf16", "avalanche_fused", "plain_fused")
OPTIONAL = {"ours_bf16": "bf16", "avalanche_fused": "peer_fused", "plain_fused": "peer_fused"}
EWC_LAMBDA, MEMORY, BATCH, LR = 1e4, 500, 128, 1e-3


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 400), nn.ReLU(), nn.Linear(400, 10)
    )


def export_stream(path: Path) -> dict[str, object]:
    from meta_learning._io import atomic_torch_save
    from meta_learning.data.mnist import SplitMNIST

    stream = SplitMNIST(
        os.environ.get("META_LEARNING_DATA", REPO.parent / "shared" / "data"), "class", source="test10k"
    )
    data = {"train": [e.train.tensors() for e in stream], "test": [e.test.tensors() for e in stream]}
    atomic_torch_save(data, path)
    return {
        "stream": stream.name,
        "train_sizes": [len(e.train) for e in stream],
        "test_sizes": [len(e.test) for e in stream],
    }


def run_ours(strategy: str, data: dict, epochs: int, seed: int, precision: str = "fp32") -> dict[str, object]:
    from meta_learning.continual import EWC, ExperienceReplay, Naive, TrainConfig

    torch.manual_seed(seed)
    model = mlp()
    config = TrainConfig(epochs=epochs, batch_size=BATCH, lr=LR, precision=precision)
    common = {"config": config, "seed": seed, "mask_unseen_classes": False}
    if strategy == "naive":
        learner = Naive(model, **common)
    elif strategy == "ewc":
        learner = EWC(model, ewc_lambda=EWC_LAMBDA, fisher="empirical", **common)
    else:
        learner = ExperienceReplay(model, memory_size=MEMORY, **common)
    times = []
    for t, (x, y) in enumerate(data["train"]):
        start = time.perf_counter()
        learner.learn_task(x, y, task_id=t)
        times.append(time.perf_counter() - start)
    accs = learner.evaluate([(x, y) for x, y in data["test"]]).accuracies
    return {"times": times, "accuracies": list(accs)}


def run_plain(strategy: str, data: dict, epochs: int, seed: int, fused: bool = False) -> dict[str, object]:
    """Fine-tuning in the fewest lines of PyTorch: the compute floor both libraries are measured against."""
    if strategy != "naive":
        raise ValueError("the plain loop only implements Naive")
    torch.manual_seed(seed)
    model = mlp()
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for x, y in data["train"]:
        start = time.perf_counter()
        opt = torch.optim.Adam(model.parameters(), lr=LR, fused=fused or None)
        for _ in range(epochs):
            for idx in torch.randperm(len(y)).split(BATCH):
                opt.zero_grad()
                loss_fn(model(x[idx]), y[idx]).backward()
                opt.step()
        times.append(time.perf_counter() - start)
    with torch.no_grad():
        accs = [float((model(x).argmax(1) == y).float().mean()) for x, y in data["test"]]
    return {"times": times, "accuracies": accs}


def run_avalanche(strategy: str, data: dict, epochs: int, seed: int, fused: bool = False) -> dict[str, object]:
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.utils.classification_dataset import _make_taskaware_tensor_classification_dataset
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training import EWC, Naive, Replay
    from avalanche.training.plugins import EvaluationPlugin

    def as_dataset(x, y):
        return _make_taskaware_tensor_classification_dataset(x, y, task_labels=0, targets=y)

    bench = benchmark_from_datasets(
        train=[as_dataset(x, y) for x, y in data["train"]], test=[as_dataset(x, y) for x, y in data["test"]]
    )
    torch.manual_seed(seed)
    model = mlp()
    common = {
        "model": model,
        "optimizer": torch.optim.Adam(model.parameters(), lr=LR, fused=fused or None),
        "criterion": nn.CrossEntropyLoss(),
        "train_mb_size": BATCH,
        "train_epochs": epochs,
        "eval_mb_size": 1024,
        "device": "cpu",
        "evaluator": EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]),
    }
    if strategy == "naive":
        learner = Naive(**common)
    elif strategy == "ewc":
        learner = EWC(ewc_lambda=EWC_LAMBDA, mode="separate", **common)
    else:
        learner = Replay(mem_size=MEMORY, **common)
    times = []
    for exp in bench.train_stream:
        start = time.perf_counter()
        learner.train(exp, reset_optimizer_state=True)
        times.append(time.perf_counter() - start)
    res = learner.eval(bench.test_stream)
    accs = [v for k, v in sorted(res.items()) if k.startswith("Top1_Acc_Exp/eval_phase/test_stream")]
    return {"times": times, "accuracies": accs}


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    data = torch.load(args.data, weights_only=True)
    # The first optimizer built in a process imports torch._dynamo (~2 s, once). Avalanche's user builds the optimizer
    # before calling train(), outside the timed region; pay that import here too, before timing, in every worker.
    torch.optim.Adam([nn.Parameter(torch.zeros(1))])
    if args.worker == "ours_bf16":
        print(json.dumps(run_ours(args.strategy, data, args.epochs, args.seed, precision="bf16")))
        return
    if args.worker.endswith("_fused"):
        peer = run_avalanche if args.worker == "avalanche_fused" else run_plain
        print(json.dumps(peer(args.strategy, data, args.epochs, args.seed, fused=True)))
        return
    run = {"ours": run_ours, "avalanche": run_avalanche, "plain": run_plain}[args.worker]
    print(json.dumps(run(args.strategy, data, args.epochs, args.seed)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fast", action="store_true", help="1 epoch, 1 repeat")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true", help="also time ours with TrainConfig(precision='bf16')")
    p.add_argument("--peer-fused", action="store_true", help="also time Avalanche and plain with fused Adam")
    p.add_argument("--worker", choices=LIBRARIES)
    p.add_argument("--strategy", choices=STRATEGIES)
    p.add_argument("--data")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "continual_speed.json"))
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    if args.fast:
        args.epochs, args.repeats = 1, 1
    sys.path.insert(0, str(REPO / "benchmarks"))
    from _machine import machine_info

    if not PEERS.exists():
        raise SystemExit(f"peer venv not found at {PEERS}; set PEERS_PYTHON")
    versions = subprocess.run(
        [str(PEERS), "-c", "import avalanche, torch; print(avalanche.__version__, torch.__version__)"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data_file = Path(tmp) / "split_mnist.pt"
        info = export_stream(data_file)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO / "src")}
        libs = [lib for lib in LIBRARIES if lib not in OPTIONAL or getattr(args, OPTIONAL[lib])]
        jobs = [(st, lib) for st in STRATEGIES for lib in libs if not lib.startswith("plain") or st == "naive"]
        runs: dict[tuple[str, str], list[dict]] = {job: [] for job in jobs}
        for r in range(args.repeats):  # interleaved, so that background load spreads over every configuration
            for strategy, lib in jobs:
                python = str(PEERS) if lib.startswith("avalanche") else sys.executable
                cmd = [python, __file__, "--worker", lib, "--strategy", strategy, "--data", str(data_file)]
                cmd += ["--epochs", str(args.epochs), "--threads", str(args.threads), "--seed", str(args.seed)]
                out = subprocess.run(cmd, capture_output=True, text=True, env=env)  # a fresh process per run
                if out.returncode != 0:
                    raise SystemExit(f"{lib}/{strategy} run {r} failed:\n{out.stderr[-3000:]}")
                runs[(strategy, lib)].append(json.loads(out.stdout.strip().splitlines()[-1]))
        for (strategy, lib), done in runs.items():
            per_exp = [statistics.mean(run["times"]) for run in done]
            rows.append(
                {
                    "strategy": strategy,
                    "library": lib,
                    "s_per_experience_median": statistics.median(per_exp),
                    "s_per_experience_runs": per_exp,
                    "s_per_experience_excluding_first_median": statistics.median(
                        statistics.mean(run["times"][1:]) for run in done
                    ),
                    "final_mean_accuracy": statistics.mean(statistics.mean(run["accuracies"]) for run in done),
                    "final_accuracies_run0": done[0]["accuracies"],
                }
            )
    ratio = {}
    header = ["strategy", "ours s/exp", "avalanche s/exp", "plain s/exp", "ours/aval.", "ours acc", "aval. acc"]
    print("\n| " + " | ".join(header) + " |")
    for strategy in STRATEGIES:
        cell = {r["library"]: r for r in rows if r["strategy"] == strategy}
        ours, aval = cell["ours"], cell["avalanche"]
        ratio[strategy] = ours["s_per_experience_median"] / aval["s_per_experience_median"]
        plain = f"{cell['plain']['s_per_experience_median']:.3f}" if "plain" in cell else "-"
        acc = f"{100 * ours['final_mean_accuracy']:.2f}% | {100 * aval['final_mean_accuracy']:.2f}%"
        print(
            f"| {strategy} | {ours['s_per_experience_median']:.3f} | {aval['s_per_experience_median']:.3f} | {plain} | "
            f"{ratio[strategy]:.2f} | {acc} |"
        )
        if "avalanche_fused" in cell:
            c = cell["avalanche_fused"]
            print(f"| {strategy} (Avalanche with fused Adam) | | {c['s_per_experience_median']:.3f} | | | | "
                  f"{100 * c['final_mean_accuracy']:.2f}% |")  # fmt: skip
        if "plain_fused" in cell:
            c = cell["plain_fused"]
            print(f"| {strategy} (plain with fused Adam) | | | {c['s_per_experience_median']:.3f} | | | |")
        if "ours_bf16" in cell:
            b = cell["ours_bf16"]
            ratio[strategy + "_bf16"] = b["s_per_experience_median"] / aval["s_per_experience_median"]
            bf16_ratio = ratio[strategy + "_bf16"]
            print(
                f"| {strategy} (ours bf16) | {b['s_per_experience_median']:.3f} | | | {bf16_ratio:.2f} | "
                f"{100 * b['final_mean_accuracy']:.2f}% | |"
            )
    from meta_learning._io import atomic_write_json

    result = {
        "benchmark": "continual_speed", "machine": machine_info(), "avalanche": versions[0], "peer_torch": versions[1],
        "epochs": args.epochs, "repeats": args.repeats, "threads": args.threads, "batch_size": BATCH, "lr": LR,
        "ewc_lambda": EWC_LAMBDA, "memory": MEMORY, "data": info, "rows": rows, "time_ratio_ours_over_avalanche": ratio,
    }  # fmt: skip
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
