"""Sinusoid regression (Finn et al. 2017, Fig. 2; Li et al. 2017, Table 1): MAML and Meta-SGD.

MLP(1 -> 40 -> 40 -> 1, ReLU), inner lr 0.01 (Meta-SGD: initial per-parameter rates 0.01), one inner step in
meta-training, Adam 1e-3, meta-batch 25, K support and K query points per training task (the settings of Finn et
al.'s code); the papers train 70,000 iterations, this script takes --iterations (default 70,000). Reported: MSE on
100 query points of each of 1,000 fixed test tasks after 0, 1 and 10 inner steps on K support points, for K = 5,
10, 20 shots, mean +- 95% CI over tasks.

Usage:
    python benchmarks/maml_sinusoid.py --iterations 70000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info

from meta_learning import MLP, Sinusoid
from meta_learning._io import atomic_write_json
from meta_learning.maml import MAML, MetaSGD

PAPER = {  # Li et al. 2017, Table 1 (MSE after 1 step; MAML's and Meta-SGD's own training)
    "maml": {5: 1.13, 10: 0.77, 20: 0.48},
    "metasgd": {5: 0.90, 10: 0.53, 20: 0.31},
}


def run(algo: str, shots: int, iterations: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    cls = MAML if algo == "maml" else MetaSGD
    learner = cls(MLP(1, [40, 40], 1), lr_inner=0.01, lr_outer=1e-3, num_inner_steps=1, meta_batch_size=25)
    t = time.perf_counter()
    learner.meta_train(Sinusoid(k_shot=shots, n_query=shots, seed=seed), num_iterations=iterations, progress=False)
    train_s = time.perf_counter() - t
    test = Sinusoid(k_shot=shots, n_query=100).evaluation_episodes(1000, seed=1)
    curve = learner.adaptation_curve(test, steps=(0, 1, 10))
    return {
        "algo": algo,
        "shots": shots,
        "iterations": iterations,
        "train_s": train_s,
        "mse": {str(k): v.to_dict() for k, v in curve.items()},
        "paper_mse_1_step": PAPER[algo][shots],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=70_000)
    ap.add_argument("--algos", nargs="+", default=["maml", "metasgd"], choices=sorted(PAPER))
    ap.add_argument("--shots", nargs="+", type=int, default=[5, 10, 20])
    ap.add_argument("--out", default="benchmarks/out/maml_sinusoid.json")
    a = ap.parse_args()
    report: dict = {"machine": machine_info(), "runs": []}
    print(f"{'algo':<8} {'K':>3} {'iters':>6} {'MSE 0 steps':>14} {'MSE 1 step':>14} {'paper':>6} {'MSE 10 steps':>14} "
          f"{'train':>7}")  # fmt: skip
    for algo in a.algos:
        for shots in a.shots:
            r = run(algo, shots, a.iterations)
            report["runs"].append(r)
            atomic_write_json(a.out, report)
            m = r["mse"]
            print(f"{algo:<8} {shots:>3} {a.iterations:>6} {m['0']['mean']:>7.3f} ± {m['0']['ci95']:.3f} "
                  f"{m['1']['mean']:>7.3f} ± {m['1']['ci95']:.3f} {r['paper_mse_1_step']:>6.2f} "
                  f"{m['10']['mean']:>7.3f} ± {m['10']['ci95']:.3f} {r['train_s'] / 60:>6.1f}m",
                  flush=True)  # fmt: skip
            for steps, summary in m.items():  # some tasks diverge (Meta-SGD's rates are learned for one step)
                if summary["non_finite"]:
                    print(f"    after {steps} steps {summary['non_finite']} of {summary['n']} tasks diverged")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
