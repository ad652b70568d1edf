"""DARTS on a real small task (MNIST), with and without the DARTS- anti-collapse option, first and second order.

Data: the 10,000 official MNIST test images (the only MNIST images in the shared data), split by
``load_mnist(source="test10k")`` into 8,000 training and 2,000 held-out images. The search uses the first
``--search-examples`` training images, half to train the supernet weights and half (DARTS' split) to train the
architecture. Search space: the NAS-Bench-201 cell (5 ops, 6 edges) in a reduced skeleton (``--channels`` C,
``--cells`` cells per stage, 28x28 grey inputs).

Reported per DARTS variant: the derived cell, its skip-connection count, search time, the CIFAR-10 test accuracy of
that cell in the NAS-Bench-201 table (a transfer read-out: the search ran on MNIST, not CIFAR-10), and its
held-out MNIST accuracy after retraining from scratch on the 8,000 training images. Baseline: ``--random`` cells
drawn uniformly from the space, retrained with exactly the same skeleton, epochs and seed (equal retraining
compute per architecture).

Usage:
    python benchmarks/nas_darts.py --fast
    python benchmarks/nas_darts.py --epochs 10 --search-examples 2000 --retrain-epochs 4 --random 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("META_LEARNING_DATA", str(REPO.parent / "shared" / "data"))

import torch  # noqa: E402
from _machine import machine_info  # noqa: E402

from meta_learning._io import atomic_write_json  # noqa: E402
from meta_learning.data.mnist import load_mnist  # noqa: E402
from meta_learning.nas import DARTS, NASBench201Space, NASBench201Table  # noqa: E402
from meta_learning.nas.space import sample_architecture  # noqa: E402

torch.set_num_threads(1)
MEAN, STD = 0.1307, 0.3081  # MNIST pixel statistics


def data(search_examples: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    train, test = load_mnist(source="test10k")
    x, y = train.tensors()
    xt, yt = test.tensors()
    x, xt = (x - MEAN) / STD, (xt - MEAN) / STD
    half = search_examples // 2
    return {"search_w": (x[:half], y[:half]), "search_alpha": (x[half:search_examples], y[half:search_examples]),
            "train": (x, y), "test": (xt, yt)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--cells", type=int, default=1, help="cells per stage")
    ap.add_argument("--epochs", type=int, default=10, help="search epochs")
    ap.add_argument("--search-examples", type=int, default=2000)
    ap.add_argument("--retrain-epochs", type=int, default=4)
    ap.add_argument("--random", type=int, default=8, help="random cells retrained as the baseline")
    ap.add_argument("--variants", default="first,first+darts-,second,second+darts-")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "nas_darts.json"))
    args = ap.parse_args()
    if args.fast:
        args.epochs, args.search_examples, args.retrain_epochs, args.random = 1, 256, 1, 2
        args.variants = "first,second+darts-"
    d = data(args.search_examples)
    table = NASBench201Table()
    space = NASBench201Space(channels=args.channels, cells_per_stage=args.cells, in_channels=1, num_classes=10)
    common = {"search_space": space, "num_classes": 10, "in_channels": 1, "cells_per_stage": args.cells,
              "epochs": args.epochs, "batch_size": 64, "seed": args.seed, "progress": False}  # fmt: skip

    def retrain(darts: DARTS, arch: Any) -> dict[str, Any]:
        model, res = darts.retrain(arch, d["train"], d["test"], epochs=args.retrain_epochs, batch_size=64, lr=0.05)
        return {"test_accuracy": res.val_accuracy[-1], "params": sum(p.numel() for p in model.parameters()),
                "retrain_s": res.wall_time_s}  # fmt: skip

    rows: list[dict[str, Any]] = []
    darts = None
    for variant in args.variants.split(","):
        order, _, anti = variant.partition("+")
        darts = DARTS(args.channels, 5, order=order, anti_collapse=anti or None, **common)
        arch = darts.search(train_data=d["search_w"], val_data=d["search_alpha"])
        row = {"variant": variant, "arch": str(arch), "skips": arch.count("skip_connect"),
               "search_s": darts.search_time_s, "supernet_val_acc": darts.history[-1].val_accuracy,
               "cifar10_table": table.accuracy(arch),
               "skips_per_epoch": [h.skip_count for h in darts.history]}  # fmt: skip
        row |= retrain(darts, arch)
        rows.append(row)
        print(
            f"{variant:<16} {row['arch']}  skips={row['skips']}  search {row['search_s']:.0f}s  "
            f"MNIST {100 * row['test_accuracy']:.2f}%  CIFAR-10 table {row['cifar10_table']:.2f}%",
            flush=True,
        )

    assert darts is not None
    gen = torch.Generator().manual_seed(args.seed + 1)
    randoms = []
    for _ in range(args.random):
        arch = sample_architecture(space, gen)
        r = {"arch": str(arch), "cifar10_table": table.accuracy(arch)} | retrain(darts, arch)
        randoms.append(r)
        print(
            f"random           {r['arch']}  MNIST {100 * r['test_accuracy']:.2f}%  "
            f"CIFAR-10 table {r['cifar10_table']:.2f}%",
            flush=True,
        )
    accs = [r["test_accuracy"] for r in randoms]
    summary = {
        "random_mean": statistics.fmean(accs),
        "random_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "random_max": max(accs),
        "random_table_mean": statistics.fmean(r["cifar10_table"] for r in randoms),
        "random_params_mean": statistics.fmean(r["params"] for r in randoms),
    }
    print(f"\n{'variant':<16}{'skips':>6}{'search s':>10}{'params':>9}{'MNIST %':>9}{'C10 table %':>13}")
    for r in rows:
        print(f"{r['variant']:<16}{r['skips']:>6}{r['search_s']:>10.0f}{r['params']:>9}"
              f"{100 * r['test_accuracy']:>9.2f}{r['cifar10_table']:>13.2f}")  # fmt: skip
    print(f"{'random (n=' + str(len(randoms)) + ')':<16}{'':>6}{'':>10}{summary['random_params_mean']:>9.0f}"
          f"{100 * summary['random_mean']:>6.2f}±{100 * summary['random_std']:.2f}"
          f"{summary['random_table_mean']:>10.2f}")  # fmt: skip
    payload = {"machine": machine_info(), "args": vars(args), "darts": rows, "random": randoms, "summary": summary}
    atomic_write_json(args.out, payload)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
