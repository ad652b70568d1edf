"""Few-shot multimodal digits: PrototypicalNetwork(encoder=MultiModalAdapter) on novel digits, 5-way 1-shot.

Usage:
    python benchmarks/multimodal_fewshot.py                  # 1,000 training episodes, 600 test episodes
    python benchmarks/multimodal_fewshot.py --fast           # 100 / 100

Meta-train on digits 0-4 (FSDD train split x 3 pairings with MNIST's 8,000-image part and clues), test 5-way
1-shot (5 queries per class) on the novel digits 5-9 (FSDD test split x 3 pairings with MNIST's disjoint
2,000-image part). Each example is one packed row (``ModalityLayout``), so the adapter is the ProtoNet encoder.
Models: one ProtoNet per single modality, and fused ProtoNets (concat, attention) trained with modality dropout
(p=0.3) and evaluated with all modalities, each one dropped, and each one alone. Accuracy is mean ± 95% CI over
the fixed test episodes. Prints a table, writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info
from _multimodal_common import LAYOUT, clue_embeddings, make_adapter, pack

from meta_learning._io import atomic_write_json
from meta_learning.data.episode import Episode
from meta_learning.data.sampler import EpisodeSampler
from meta_learning.data.streams import TensorClassificationDataset
from meta_learning.fewshot.protonet import PrototypicalNetwork
from meta_learning.multimodal import drop_modalities, modality_dropout
from meta_learning.multimodal.digits import build_digit_triples

ALL = ("text", "image", "audio")
MODELS = {"text only": ("text",), "image only": ("image",), "audio only": ("audio",), "concat": ALL, "attention": ALL}
CONDITIONS = {
    "all": (),
    "no text": ("text",),
    "no image": ("image",),
    "no audio": ("audio",),
    "text only": ("image", "audio"),
    "image only": ("text", "audio"),
    "audio only": ("text", "image"),
}
_DATA: dict[str, Any] = {}


class ModalityDropoutStream:
    """Episodes from ``sampler`` with each present modality of each example dropped with probability ``p``."""

    def __init__(self, sampler: EpisodeSampler, p: float, seed: int) -> None:
        self.sampler, self.p = sampler, p
        self.generator = torch.Generator().manual_seed(seed)

    def _drop(self, rows: torch.Tensor) -> torch.Tensor:
        inputs, present = LAYOUT.unpack(rows)
        return LAYOUT.pack(inputs, modality_dropout(present, self.p, self.generator))

    def sample(self) -> Episode:
        ep = self.sampler.sample()
        return Episode(self._drop(ep.support_x), ep.support_y, self._drop(ep.query_x), ep.query_y, ep.classes)


def datasets() -> tuple[TensorClassificationDataset, TensorClassificationDataset]:
    if not _DATA:
        train = build_digit_triples(split="train", pairs_per_recording=3, seed=0, digits=range(5))
        test = build_digit_triples(split="test", pairs_per_recording=3, seed=1, digits=range(5, 10))
        e_train, e_test = clue_embeddings(train, test)
        _DATA["train"] = TensorClassificationDataset(pack(train, e_train), train.labels)
        _DATA["test"] = TensorClassificationDataset(pack(test, e_test), test.labels)
    return _DATA["train"], _DATA["test"]


def run(job: tuple[str, int, int, float]) -> dict[str, Any]:
    name, train_episodes, test_episodes, drop_p = job
    torch.set_num_threads(1)
    train, test = datasets()
    modalities = MODELS[name]
    torch.manual_seed(0)
    proto = PrototypicalNetwork(encoder=make_adapter(modalities, "concat" if len(modalities) == 1 else name))
    sampler = EpisodeSampler(train, n_way=5, k_shot=1, n_query=5, seed=0)
    stream: Any = ModalityDropoutStream(sampler, drop_p, seed=0) if len(modalities) > 1 and drop_p > 0 else sampler
    t0 = time.perf_counter()
    proto.meta_train(stream, num_episodes=train_episodes, lr=1e-3, eval_every=train_episodes, progress=False)
    train_s = time.perf_counter() - t0
    episodes = EpisodeSampler(test, n_way=5, k_shot=1, n_query=5, seed=0).evaluation_episodes(test_episodes, seed=1)
    results = {}
    conditions = {"all": ()} if len(modalities) == 1 else CONDITIONS
    for cond, dropped in conditions.items():

        def strip(rows: torch.Tensor, dropped: tuple[str, ...] = dropped) -> torch.Tensor:
            return drop_modalities(LAYOUT, rows, list(dropped))

        eps = [Episode(strip(e.support_x), e.support_y, strip(e.query_x), e.query_y, e.classes) for e in episodes]
        acc = proto.evaluate(eps)
        results[cond] = {"mean": acc.mean, "ci95": acc.ci95, "n": acc.n}
    return {"model": name, "accuracy": results, "train_seconds": train_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-episodes", type=int, default=1000)
    parser.add_argument("--test-episodes", type=int, default=600)
    parser.add_argument("--modality-dropout", type=float, default=0.3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fast", action="store_true", help="100 training and 100 test episodes")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "multimodal_fewshot.json"))
    args = parser.parse_args()
    if args.fast:
        args.train_episodes, args.test_episodes = 100, 100
    jobs = [(n, args.train_episodes, args.test_episodes, args.modality_dropout) for n in MODELS]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        runs = list(pool.map(run, jobs))
    wall = time.perf_counter() - t0
    print(
        f"\nnovel digits 5-9, 5-way 1-shot, 5 queries/class: accuracy (%) ± 95% CI over {args.test_episodes} "
        f"episodes; {args.train_episodes} training episodes on digits 0-4; wall {wall:.0f} s"
    )
    print(f"{'model':12s} " + " ".join(f"{c:>13s}" for c in CONDITIONS) + f" {'train s':>8s}")
    for r in runs:
        cells = [
            f"{100 * r['accuracy'][c]['mean']:6.2f} ± {100 * r['accuracy'][c]['ci95']:4.2f}"
            if c in r["accuracy"]
            else "-"
            for c in CONDITIONS
        ]
        print(f"{r['model']:12s} " + " ".join(f"{c:>13s}" for c in cells) + f" {r['train_seconds']:8.0f}")
    atomic_write_json(
        args.out,
        {
            "benchmark": "multimodal_fewshot",
            "command": " ".join(sys.argv),
            "machine": machine_info(),
            "train_episodes": args.train_episodes,
            "test_episodes": args.test_episodes,
            "modality_dropout": args.modality_dropout,
            "wall_seconds": wall,
            "runs": runs,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
