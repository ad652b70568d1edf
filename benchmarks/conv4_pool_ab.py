"""Conv4 with nn.MaxPool2d vs meta_learning.models.MaxPool2x2: forward + backward time, same weights, one process.

For each batch size (the 5-image MAML support set, the 75-image MAML query set, the 360-image ProtoNet 60-way
1-shot training episode) the two networks alternate step by step (the order flips every round) so that the
machine's drift hits both alike; the table gives the median step times and the median and range of the paired
ratios. The two networks' outputs and gradients are checked bit-identical first. Also times the pooling layer
alone on the feature-map sizes a Conv4 meets, the strided computation forced at every size (``max_pool2x2`` sends
maps under its size threshold to ``max_pool2d``).

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
    # the layer alone, forward + backward, on the maps a Conv4 meets (the strided path forced at every size, to
    # show where the size threshold of max_pool2x2 sits)
    from meta_learning.models import pooling

    layer_rows: list[dict] = []
    report["layer"] = layer_rows
    print(f"\n{'pooling layer alone':>22} {'elements':>9} {'nn.MaxPool2d ms':>16} {'strided ms':>11} {'speed-up':>9}")
    for shape in ((5, 64, 14, 14), (5, 64, 28, 28), (75, 64, 7, 7), (75, 64, 14, 14), (75, 64, 28, 28),
                  (360, 64, 28, 28)):  # fmt: skip
        y = torch.randn(shape, generator=g).requires_grad_()
        gy = torch.randn(*shape[:2], shape[2] // 2, shape[3] // 2, generator=g)
        layer: dict[str, list[float]] = {"torch": [], "ours": []}
        saved, pooling._MIN_ELEMENTS = pooling._MIN_ELEMENTS, 0
        try:
            for r in range(4 * a.rounds):
                for name in ("torch", "ours") if r % 2 == 0 else ("ours", "torch"):
                    pool = max_pool2x2 if name == "ours" else (lambda t: F.max_pool2d(t, 2))
                    t = time.perf_counter()
                    torch.autograd.grad(pool(y), y, gy)
                    layer[name].append(time.perf_counter() - t)
        finally:
            pooling._MIN_ELEMENTS = saved
        ms = {k: 1e3 * statistics.median(v) for k, v in layer.items()}
        layer_rows.append({"shape": list(shape), "torch_ms": ms["torch"], "strided_ms": ms["ours"]})
        print(f"{shape!s:>22} {y.numel():>9} {ms['torch']:>16.3f} {ms['ours']:>11.3f} "
              f"{ms['torch'] / ms['ours']:>8.2f}x", flush=True)  # fmt: skip
    atomic_write_json(a.out, report)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
