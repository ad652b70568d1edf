"""Prototypical networks on Omniglot (seed section "Few-Shot Learning"): train on episodes, classify with a support set.

What it shows: ``PrototypicalNetwork(encoder=..., distance_metric='euclidean')``, ``proto_net.train_episodes(...)`` on
episodes of the Omniglot training characters (Vinyals split, 28x28, 4 rotations), ``proto_net.classify(query_samples=,
support_samples=, support_labels=)`` on a task of held-out test characters whose support labels are arbitrary class
ids, and ``proto_net.evaluate(episodes)`` (mean accuracy and 95% CI over fixed 5-way 1-shot test episodes).

Expected output (``--fast``: 200 training episodes of 20-way 1-shot, 200 test episodes, about 40 s of CPU time):
5-way 1-shot test accuracy about 0.92 (chance 0.2; measured 0.917 ± 0.009). The full budget (2,000 60-way episodes)
was not measured here; ``benchmarks/fewshot_omniglot.py`` reports trained models.
The last line reads like ``RESULT accuracy=0.92 ci95=0.009 chance=0.2 ...``.

    python examples/fewshot_protonet.py --fast
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root, parser, report, require, start

from meta_learning import Conv4, EpisodeSampler, Omniglot, PrototypicalNetwork


def main(argv: list[str] | None = None) -> dict:
    args = parser(__doc__).parse_args(argv)
    root = require(data_root(args.root), "omniglot")
    train_way, num_episodes, test_episodes = (20, 200, 200) if args.fast else (60, 2000, 1000)
    started = start(args.seed)

    training_episodes = EpisodeSampler(
        Omniglot(root, split="train"), n_way=train_way, k_shot=1, n_query=5, seed=args.seed
    )
    proto_net = PrototypicalNetwork(encoder=Conv4(in_channels=1), distance_metric="euclidean")
    history = proto_net.train_episodes(training_episodes, num_episodes=num_episodes, lr=1e-3, progress=False)

    test = EpisodeSampler(Omniglot(root, split="test"), n_way=5, k_shot=1, n_query=15, seed=args.seed + 1)
    episodes = test.evaluation_episodes(test_episodes, seed=args.seed + 1)

    # Classify with a support set whose labels are any ids (here: the dataset's own class ids).
    ep = episodes[0]
    class_ids = torch.tensor(ep.classes)
    support_labels = class_ids[ep.support_y]
    predictions = proto_net.classify(
        query_samples=ep.query_x, support_samples=ep.support_x, support_labels=support_labels
    )
    first = float((predictions == class_ids[ep.query_y]).float().mean())
    print(f"first test task: classes {list(ep.classes)}, predicted ids {predictions[:10].tolist()}...")

    with torch.no_grad():
        acc = proto_net.evaluate(episodes)
    print(f"5-way 1-shot on {len(episodes)} test episodes: {acc}")
    return report(
        {
            "episodes": history.steps,
            "train_way": train_way,
            "accuracy": acc.mean,
            "ci95": acc.ci95,
            "first_task_accuracy": first,
            "chance": 0.2,
        },
        started,
    )


if __name__ == "__main__":
    main()
