"""MultiModalAdapter on real paired digits: FSDD speech + MNIST images + text clues (10-way classification).

Usage:
    python benchmarks/multimodal_digits.py                 # 2 seeds x 10 epochs, all models
    python benchmarks/multimodal_digits.py --fast          # 1 seed x 2 epochs

Data (``meta_learning.multimodal.digits``): every FSDD recording paired with MNIST images of its digit and a
partial text clue (20% name the digit, the rest state a property such as "an odd number"). Train: FSDD train
split (2,700 recordings x 3 pairings, 2,700 drawn per epoch) with MNIST's 8,000-image part; test: FSDD test split
(300 recordings x 3 pairings = 900 examples) with MNIST's disjoint 2,000-image part. Models: one per single
modality (its encoder + linear head), and the four fusions of all three encoders, trained with modality dropout
(p=0.3) and evaluated with all modalities and with each one dropped or alone. Accuracy is mean ± 95% CI over
seeds (each seed redraws the pairing, clues and initialisation). Prints a table, writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info
from _multimodal_common import LAYOUT, clue_embeddings, make_adapter, pack

from meta_learning._io import atomic_write_json
from meta_learning.metrics import mean_ci95
from meta_learning.multimodal import FUSION_METHODS, drop_modalities, modality_dropout
from meta_learning.multimodal.digits import build_digit_triples

ALL = ("text", "image", "audio")
SINGLE = {f"{m} only": (m,) for m in ALL}
CONDITIONS = {
    "all": (),
    "no text": ("text",),
    "no image": ("image",),
    "no audio": ("audio",),
    "text only": ("image", "audio"),
    "image only": ("text", "audio"),
    "audio only": ("text", "image"),
}
_DATA: dict[tuple[int, int], Any] = {}


def data(seed: int, pairs: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    key = (seed, pairs)
    if key not in _DATA:
        train = build_digit_triples(split="train", pairs_per_recording=pairs, seed=seed)
        test = build_digit_triples(split="test", pairs_per_recording=3, seed=1000 + seed)
        e_train, e_test = clue_embeddings(train, test)
        _DATA.clear()
        _DATA[key] = (pack(train, e_train), train.labels, pack(test, e_test), test.labels)
    return _DATA[key]


def train_and_eval(job: tuple[str, int, int, int, float]) -> dict[str, Any]:
    name, seed, epochs, pairs, drop_p = job
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = data(seed, pairs)
    modalities = SINGLE.get(name, ALL)
    fusion = "concat" if name in SINGLE else name
    torch.manual_seed(seed)
    adapter = make_adapter(modalities, fusion)
    head = nn.Linear(adapter.out_features, 10)
    params = [*adapter.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, 1e-3)
    g = torch.Generator().manual_seed(seed)
    per_epoch = len(x_train) // pairs
    t0 = time.perf_counter()
    adapter.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=g)[:per_epoch]
        for i in range(0, per_epoch, 64):
            idx = order[i : i + 64]
            inputs, present = LAYOUT.unpack(x_train[idx])
            present = {m: present[m] for m in modalities}
            if name not in SINGLE and drop_p > 0:
                present = modality_dropout(present, drop_p, g)
            logits = head(adapter({m: inputs[m] for m in modalities}, masks=present))
            loss = nn.functional.cross_entropy(logits, y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    train_s = time.perf_counter() - t0
    adapter.eval()
    results = {}
    conditions = {"all": ()} if name in SINGLE else CONDITIONS
    with torch.no_grad():
        for cond, dropped in conditions.items():
            rows = drop_modalities(LAYOUT, x_test, [m for m in dropped if m in LAYOUT.modalities])
            inputs, present = LAYOUT.unpack(rows)
            logits = head(adapter({m: inputs[m] for m in modalities}, masks={m: present[m] for m in modalities}))
            results[cond] = float((logits.argmax(1) == y_test).float().mean())
    return {"model": name, "seed": seed, "accuracy": results, "train_seconds": train_s, "n_test": len(y_test)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=3, help="pairings per training recording")
    parser.add_argument("--modality-dropout", type=float, default=0.3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fast", action="store_true", help="1 seed x 2 epochs")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "multimodal_digits.json"))
    args = parser.parse_args()
    if args.fast:
        args.seeds, args.epochs = 1, 2
    names = [*SINGLE, *FUSION_METHODS]
    jobs = [(n, s, args.epochs, args.pairs, args.modality_dropout) for s in range(args.seeds) for n in names]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        runs = list(pool.map(train_and_eval, jobs))
    wall = time.perf_counter() - t0

    summary: dict[str, dict[str, dict[str, float]]] = {}
    for n in names:
        mine = [r for r in runs if r["model"] == n]
        summary[n] = {}
        for cond in mine[0]["accuracy"]:
            mean, ci = mean_ci95([r["accuracy"][cond] for r in mine])
            summary[n][cond] = {"mean": mean, "ci95": ci}
        summary[n]["train_seconds"] = {"mean": sum(r["train_seconds"] for r in mine) / len(mine), "ci95": 0.0}
    print(
        f"\nFSDD + MNIST + clue triples, 10-way test accuracy (%), {runs[0]['n_test']} test examples, "
        f"{args.epochs} epochs, {args.seeds} seed(s), mean ± 95% CI over seeds; wall {wall:.0f} s"
    )
    cols = list(CONDITIONS)
    print(f"{'model':14s} " + " ".join(f"{c:>13s}" for c in cols) + f" {'train s':>8s}")
    for n in names:
        cells = []
        for c in cols:
            s = summary[n].get(c)
            cells.append(f"{100 * s['mean']:6.2f} ± {100 * s['ci95']:4.2f}" if s else f"{'-':>13s}")
        print(f"{n:14s} " + " ".join(f"{c:>13s}" for c in cells) + f" {summary[n]['train_seconds']['mean']:8.0f}")
    atomic_write_json(
        args.out,
        {
            "benchmark": "multimodal_digits",
            "command": " ".join(sys.argv),
            "machine": machine_info(),
            "seeds": args.seeds,
            "epochs": args.epochs,
            "pairs": args.pairs,
            "modality_dropout": args.modality_dropout,
            "wall_seconds": wall,
            "summary": summary,
            "runs": runs,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
