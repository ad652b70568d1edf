"""The five run metrics on short runs of the shipped Omniglot configs: what ``results.json``'s ``"metrics"`` holds.

Usage:
    python benchmarks/run_metrics.py            # ProtoNet 5w1s 300 episodes, MAML 5w1s 100 meta-iterations
    python benchmarks/run_metrics.py --fast     # 20 episodes / 5 meta-iterations, 100 test episodes
    python benchmarks/run_metrics.py --protonet-episodes 100 --maml-iterations 30 --test-episodes 300

Trains ``protonet_omniglot_5w1s`` and ``maml_omniglot_5w1s`` (meta-batch 8 instead of 32) for a small budget with
``meta-learning train`` (one process per run, so the peak RSS is the run's own), then reads each ``results.json``:
transfer accuracy, adaptation speed (MAML), parameter efficiency, computational cost. Checks the ProtoNet FLOPs
per step against the closed form of Conv4 (convolutions forward, their weight gradients, their input gradients
except the first, and the prototype mean), and times the metric probes that ``finish_run`` adds (the FLOP-counted
training step; for MAML the adaptation curve is the test evaluation itself). Prints a table, writes JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info

from meta_learning._io import atomic_write_json
from meta_learning.experiment import build_dataset, load_run, training_step_flops


def conv4_step_flops(images: int, c_in: int, hidden: int, size: int) -> int:
    """Closed form of FlopCounterMode's count for a Conv4 training step on ``images`` images (3x3, padding 1)."""
    per_image = []
    for c in (c_in, hidden, hidden, hidden):
        per_image.append(2 * hidden * size * size * c * 9)
        size //= 2
    return images * (3 * sum(per_image) - per_image[0])  # forward + weight grads + input grads of convs 2-4


def run(name: str, overrides: list[str], root: Path) -> dict[str, Any]:
    """``meta-learning train NAME --set ...`` in a fresh process (so peak RSS is this run's), then the FLOP probe."""
    sets = [arg for o in overrides for arg in ("--set", o)]
    command = [sys.executable, "-m", "meta_learning.cli", "train", name, "--run-dir", str(root / name), *sets]
    started = time.perf_counter()
    subprocess.run([*command, "--no-progress", "--no-report"], check=True)
    total = time.perf_counter() - started
    results = json.loads((root / name / "results.json").read_text())
    cfg, learner = load_run(root / name)
    t = time.perf_counter()
    flops = training_step_flops(cfg, learner, build_dataset(cfg.data, cfg.data.train_split))
    probe_s = time.perf_counter() - t
    m = results["metrics"]
    d = cfg.data
    row: dict[str, Any] = {"config": name, "overrides": overrides, "metrics": m, "run_total_s": total}
    row["flop_probe_s"] = probe_s
    row["flop_probe_repeatable"] = flops == m["computational_cost"]["flops_per_step"]
    if cfg.learner.name == "protonet":
        images = d.train_way * (d.train_shot + d.train_query)
        prototypes = 2 * (2 * d.train_way * d.train_way * d.train_shot * cfg.model.hidden_channels)
        size = d.image_size
        row["flops_closed_form"] = conv4_step_flops(images, cfg.model.in_channels, cfg.model.hidden_channels, size)
        row["flops_closed_form"] += prototypes
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="tiny budgets (a smoke run)")
    parser.add_argument("--protonet-episodes", type=int, default=None, help="override the ProtoNet budget")
    parser.add_argument("--maml-iterations", type=int, default=None, help="override the MAML budget")
    parser.add_argument("--test-episodes", type=int, default=None, help="override the number of test episodes")
    parser.add_argument("--out", default="benchmarks/out/run_metrics.json")
    args = parser.parse_args()
    proto, maml, test = (20, 5, 100) if args.fast else (300, 100, 500)
    proto = args.protonet_episodes or proto
    maml = args.maml_iterations or maml
    test = args.test_episodes or test
    common = [f"eval.episodes={test}", "train.val_episodes=50", "data.download=false"]
    jobs = [
        ("protonet_omniglot_5w1s", [f"train.num_episodes={proto}", f"train.eval_every={max(proto // 3, 1)}"]),
        ("maml_omniglot_5w1s", [f"train.num_episodes={maml}", f"train.eval_every={max(maml // 4, 1)}",
                                "maml.meta_batch_size=8"]),
    ]  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in jobs:
            rows.append(run(name, [*overrides, *common], Path(tmp)))
    budget = {"protonet_episodes": proto, "maml_iterations": maml, "test_episodes": test}
    report = {"machine": machine_info(), "fast": args.fast, "budget": budget, "runs": rows}
    atomic_write_json(Path(args.out), report)

    print(f"{'config':<24} {'steps':>5} {'test acc (95% CI)':>18} {'trainable/total':>17} {'GFLOP/step':>10} "
          f"{'step s':>7} {'peak MiB':>8} {'probe s':>7}")  # fmt: skip
    for r in rows:
        m = r["metrics"]
        ta, pe, cc = m["transfer_accuracy"], m["parameter_efficiency"], m["computational_cost"]
        print(
            f"{r['config']:<24} {cc['steps']:>5} {100 * ta['mean']:>9.2f} ± {100 * ta['ci95']:>5.2f} "
            f"{pe['trainable']:>8,}/{pe['total']:<8,} {cc['flops_per_step'] / 1e9:>10.3f} {cc['step_time_s']:>7.3f} "
            f"{cc['peak_memory_bytes'] / 2**20:>8.0f} {r['flop_probe_s']:>7.2f}"
        )
        if "flops_closed_form" in r:
            same = r["flops_closed_form"] == cc["flops_per_step"]
            print(f"    FLOPs closed form {r['flops_closed_form']:,} == counted {cc['flops_per_step']:,}: {same}")
        if "adaptation_speed" in m:
            a = m["adaptation_speed"]
            curve = " / ".join(f"{100 * v:.1f}" for v in a["accuracy"])
            print(f"    after {a['steps']} inner steps: {curve}; {a['steps_to_threshold']} step(s) to "
                  f"{100 * a['threshold']:.1f}%")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
