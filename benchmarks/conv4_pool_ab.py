"""Conv4 with nn.MaxPool2d vs meta_learning.models.MaxPool2x2: forward + backward time, same weights, one process.

For each batch size (the 5-image MAML support set, the 75-image MAML query set, the 360-image ProtoNet 60-way
1-shot training episode) the two networks alternate step by step (the order flips every round) so that the
machine's drift hits both alike; the table gives the median step times and the median and range of the paired
ratios. The two networks' outputs and gradients are checked bit-identical first. Also times the pooling layer
alone on Conv4's first feature map.

Usage:
    python benchmarks/conv4_pool_ab.py --rounds 10 --threads 2 --out benchmarks/out/conv4_pool_ab.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from meta_learning.models import Conv4, MaxPool2x2, max_pool2x2


def with_torch_pool(model: Conv4) -> Conv4:
    """A copy of the network (same weights) with nn.MaxPool2d(2) in place of MaxPool2x2."""
    import copy

    twin = copy.deepcopy(model)
    for block in twin.features:
        for i, m in enumerate(block):
            if isinstance(m, MaxPool2x2):
                block[i] = nn.MaxPool2d(2)
    return twin


def step_time(model: nn.Module, x: torch.Tensor) -> float:
    params = list(model.parameters())
    t = time.perf_counter()
    out = model(x)
    torch.autograd.grad(out.square().mean(), params)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/out/conv4_pool_ab.json")
    a = ap.parse_args()
    if a.rounds < 1:
        raise ValueError(f"--rounds={a.rounds} must be >= 1")
    from _machine import machine_info

    from meta_learning._io import atomic_write_json

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    ours = Conv4(in_channels=1)
    reference = with_torch_pool(ours)
    report: dict[str, object] = {"machine": machine_info(), "rounds": a.rounds, "threads": a.threads, "rows": []}
    rows: list[dict] = report["rows"]  # type: ignore[assignment]
    g = torch.Generator().manual_seed(0)
    print(f"{'batch':>6} {'nn.MaxPool2d ms':>16} {'MaxPool2x2 ms':>14} {'speed-up (range)':>18}")
    for batch in (5, 75, 360):
        x = torch.rand(batch, 1, 28, 28, generator=g)
        x[:, :, :5] = 0.0  # blank rows like Omniglot's background: tied pooling windows
        out_a, out_b = ours(x), reference(x)
        ga = torch.autograd.grad(out_a.square().mean(), list(ours.parameters()))
        gb = torch.autograd.grad(out_b.square().mean(), list(reference.parameters()))
        assert torch.equal(out_a, out_b) and all(torch.equal(p, q) for p, q in zip(ga, gb, strict=True))
        for _ in range(2):
            step_time(ours, x), step_time(reference, x)
        times: dict[str, list[float]] = {"torch": [], "ours": []}
        for r in range(a.rounds):
            for name in ("torch", "ours") if r % 2 == 0 else ("ours", "torch"):
                times[name].append(step_time(ours if name == "ours" else reference, x))
        ratios = [t / o for t, o in zip(times["torch"], times["ours"], strict=True)]
        row = {"batch": batch, "torch_ms": 1e3 * statistics.median(times["torch"]),
               "ours_ms": 1e3 * statistics.median(times["ours"]), "speedup": statistics.median(ratios),
               "speedup_range": [min(ratios), max(ratios)]}  # fmt: skip
        rows.append(row)
        print(f"{batch:>6} {row['torch_ms']:>16.1f} {row['ours_ms']:>14.1f} {row['speedup']:>7.2f}x "
              f"({min(ratios):.2f}-{max(ratios):.2f})", flush=True)  # fmt: skip
    # the layer alone on the first block's map of the 75-image query set, forward + backward
    y = torch.randn(75, 64, 28, 28, generator=g).requires_grad_()
    gy = torch.randn(75, 64, 14, 14, generator=g)
    layer: dict[str, list[float]] = {"torch": [], "ours": []}
    for r in range(5 * a.rounds):
        for name in ("torch", "ours") if r % 2 == 0 else ("ours", "torch"):
            pool = max_pool2x2 if name == "ours" else (lambda t: F.max_pool2d(t, 2))
            t = time.perf_counter()
            torch.autograd.grad(pool(y), y, gy)
            layer[name].append(time.perf_counter() - t)
    layer_ms = {k: 1e3 * statistics.median(v) for k, v in layer.items()}
    report["layer_75x64x28x28_ms"] = layer_ms
    print(f"pooling layer alone, 75 x 64 x 28 x 28, forward + backward: nn.MaxPool2d {layer_ms['torch']:.2f} ms, "
          f"MaxPool2x2 {layer_ms['ours']:.2f} ms")  # fmt: skip
    atomic_write_json(a.out, report)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
