"""Sinusoid MAML, this library vs learn2learn 0.2.0: same initial weights, same task stream, same evaluation.

A cross-check of the sinusoid figures (benchmarks/RESULTS.md, "Sinusoid regression") against an independent
implementation: both libraries meta-train the 1-40-40-1 ReLU MLP from the same seed on the same sequence of
meta-batches (25 tasks, K support + K query points, inner lr 0.01, one inner step, Adam 1e-3) for --iterations, and
both trained models are scored by the same library-neutral evaluation (plain autograd SGD on a copy of the
weights): MSE on 100 query points of 1,000 fixed test tasks after 0, 1 and 10 steps on the K support points. Ours
runs its default path for MLPs (stacked parameters); learn2learn its per-task ``clone``/``adapt`` loop. Each
library runs in its own process (learn2learn from the peers venv); seconds per meta-iteration are reported too.

Usage:
    python benchmarks/maml_sinusoid_vs_l2l.py --iterations 3000 --shots 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
META_BATCH, INNER_LR, OUTER_LR, STEPS = 25, 0.01, 1e-3, (0, 1, 10)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1))


def _forward(x: torch.Tensor, ps: list[torch.Tensor]) -> torch.Tensor:
    h = F.relu(F.linear(x, ps[0], ps[1]))
    h = F.relu(F.linear(h, ps[2], ps[3]))
    return F.linear(h, ps[4], ps[5])


def neutral_mse(model: nn.Module, shots: int) -> dict[str, list[float]]:
    """Per-task query MSE after each of STEPS plain SGD steps (lr 0.01) on the support set, on a copy of the weights."""
    from meta_learning import Sinusoid

    out: dict[str, list[float]] = {str(s): [] for s in STEPS}
    for ep in Sinusoid(k_shot=shots, n_query=100).evaluation_episodes(1000, seed=1):
        params = [p.detach().clone().requires_grad_() for p in model.parameters()]

        for s in range(max(STEPS) + 1):
            if s in STEPS:
                out[str(s)].append(float(F.mse_loss(_forward(ep.query_x, params), ep.query_y)))
            if s == max(STEPS):
                break
            grads = torch.autograd.grad(F.mse_loss(_forward(ep.support_x, params), ep.support_y), params)
            params = [(p - INNER_LR * g).detach().requires_grad_() for p, g in zip(params, grads, strict=True)]
    return out


def worker(impl: str, iterations: int, shots: int) -> dict:
    from meta_learning import Sinusoid
    from meta_learning.metrics import mse_from_episodes

    torch.set_num_threads(1)
    model = mlp()
    stream = Sinusoid(k_shot=shots, n_query=shots, seed=0)
    if impl == "ours":
        from meta_learning.maml import MAML

        maml = MAML(model, lr_inner=INNER_LR, lr_outer=OUTER_LR, num_inner_steps=1)

        def step(batch):
            maml.meta_step(batch)
    else:
        import learn2learn as l2l

        meta = l2l.algorithms.MAML(model, lr=INNER_LR)
        opt = torch.optim.Adam(model.parameters(), lr=OUTER_LR)

        def step(batch):
            opt.zero_grad(set_to_none=True)
            for ep in batch:
                learner = meta.clone()
                learner.adapt(F.mse_loss(learner(ep.support_x), ep.support_y))
                (F.mse_loss(learner(ep.query_x), ep.query_y) / len(batch)).backward()
            opt.step()

    start = time.perf_counter()
    for _ in range(iterations):
        step([stream.sample() for _ in range(META_BATCH)])
    seconds = time.perf_counter() - start
    summaries = {k: mse_from_episodes(v) for k, v in neutral_mse(model, shots).items()}
    return {"impl": impl, "iterations": iterations, "shots": shots, "s_per_iteration": seconds / iterations,
            "mse": {k: m.mean for k, m in summaries.items()},
            "mse_ci95": {k: m.ci95 for k, m in summaries.items()}}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", choices=["ours", "l2l"], help="run one library in this process")
    ap.add_argument("--iterations", type=int, default=3000)
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--peers-python", default=str(REPO.parent / "peers-venv" / "bin" / "python"))
    ap.add_argument("--out", default="benchmarks/out/maml_sinusoid_vs_l2l.json")
    a = ap.parse_args()
    if a.impl:
        print(json.dumps(worker(a.impl, a.iterations, a.shots)))
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from _machine import machine_info

    from meta_learning._io import atomic_write_json

    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    rows = []
    for impl, python in (("l2l", a.peers_python), ("ours", sys.executable)):
        cmd = [python, __file__, "--impl", impl, "--iterations", str(a.iterations), "--shots", str(a.shots)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"{'library':<8} {'ms/iter':>8} " + " ".join(f"{'MSE ' + str(s) + ' steps':>18}" for s in STEPS))
    for r in rows:
        cells = " ".join(f"{r['mse'][str(s)]:>10.3f} ± {r['mse_ci95'][str(s)]:.3f}" for s in STEPS)
        print(f"{r['impl']:<8} {1e3 * r['s_per_iteration']:>8.1f} {cells}")
    atomic_write_json(a.out, {"machine": machine_info(), "rows": rows})
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
