"""Short ProtoNet runs at a fixed number of steps, to compare Adam learning rates before a full time-budgeted run.

Usage:
    python benchmarks/fewshot_lr_probe.py --lr 3e-3 --steps 2000 --split train --out benchmarks/out/lr_probe.json
    python benchmarks/fewshot_lr_probe.py --lr 3e-3 --steps 3000 --split trainval --score test --out ...

Trains ProtoNet (the shipped ``protonet_omniglot_5w1s`` config: Conv4, 60-way 1-shot episodes with 5 queries)
for ``--steps`` steps with Adam at ``--lr`` under a cosine decay to 0, bf16 autocast and channels-last weights
(``--shift N``: training images moved by random whole pixels up to N, ``data.train_shift``),
as ``fewshot_omniglot.py --schedule cosine --precision bf16 --channels-last`` trains, but for a fixed number of
steps instead of a time budget, so that runs sharing the machine (``--threads 1``) are comparable. Then scores
the final weights on 1,000 fixed N-way 1-shot episodes (``--ways``, default 5): ``--score val`` (the validation
characters, episode seed 7; needs ``--split train``) or ``--score test`` (the test episodes of the full
benchmark, seed 1). Choose hyperparameters with ``val``; ``test`` is what the full benchmark reports. Writes JSON
to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info
from fewshot_omniglot import _training_setup

from meta_learning._io import atomic_write_json
from meta_learning.config import load_config
from meta_learning.experiment import (
    build_dataset,
    evaluate_learner,
    evaluation_sampler,
    resolve_config_path,
    training_autocast,
)
from meta_learning.training.loop import fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (peak of the cosine decay)")
    parser.add_argument("--steps", type=int, default=2000, help="training episodes")
    parser.add_argument("--seed", type=int, default=0, help="training seed (initialisation and episode order)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--shift", type=int, default=0, help="random shift of training images, pixels (0: none)")
    parser.add_argument("--split", choices=["train", "trainval"], default="train", help="training characters")
    parser.add_argument("--score", choices=["val", "test"], default="val", help="which fixed episodes score it")
    parser.add_argument("--ways", type=int, nargs="+", default=[5], help="score N-way 1-shot for each N given")
    parser.add_argument("--root", default=None, help="data root (default: $META_LEARNING_DATA)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.score == "val" and args.split != "train":
        parser.error("--score val needs --split train (trainval trains on the validation characters)")
    torch.set_num_threads(args.threads)
    cfg = load_config(resolve_config_path("protonet_omniglot_5w1s"))
    cfg = replace(
        cfg,
        data=replace(cfg.data, root=args.root, download=False, train_split=args.split, train_shift=args.shift),
        seed=args.seed,
        train=replace(cfg.train, precision="bf16", channels_last=True, lr=args.lr),
    )
    d = cfg.data
    learner, sampler = _training_setup(cfg, args.root, args.seed)  # as the full benchmark builds them
    t = time.perf_counter()
    fit(
        learner, sampler, num_episodes=args.steps, lr=args.lr, lr_schedule="cosine",
        autocast=training_autocast(cfg), progress=False,
    )  # fmt: skip
    train_s = time.perf_counter() - t
    by_way = {}
    val_set = build_dataset(d, "val") if args.score == "val" else None  # loaded once for all ways
    for way in args.ways:
        if args.score == "val":
            episodes = evaluation_sampler(cfg, val_set, way, 1).evaluation_episodes(1000, seed=7)
            acc = learner.evaluate(episodes)
        else:
            acc = evaluate_learner(cfg, learner, n_way=way, k_shot=1)
        by_way[f"{way}w1s"] = acc.to_dict()
        print(
            f"lr {args.lr:g}, shift {args.shift}, {args.steps} steps on {args.split}, seed {args.seed}: "
            f"{args.score} {way}-way 1-shot {acc}"
        )
    result = {"args": vars(args), "machine": machine_info(), "train_s": train_s, args.score: by_way}
    atomic_write_json(Path(args.out), result)


if __name__ == "__main__":
    main()
