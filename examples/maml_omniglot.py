"""MAML on Omniglot (seed section "Basic MAML Training"): meta-train, then fast-adapt to new characters.

What it shows: ``MAML(model=..., lr_inner=..., lr_outer=...)``, ``maml.meta_train(tasks_train)`` on 5-way 1-shot
episodes of the Omniglot training characters (Vinyals split, 28x28), and ``maml.adapt(task_support, num_steps=5)``
on tasks of held-out test characters: the adapted module classifies the task's queries, the meta-parameters stay as
they were. Also the adaptation curve (query accuracy after 0, 1, 2, 5 inner steps) over fixed test tasks.

Expected output (``--fast``: 100 meta-iterations of 8 tasks, Conv4 with 32 channels, 100 test tasks, about 40 s on
2 CPU cores): the accuracy before adaptation is at chance (0.2: the head knows nothing of a new task's classes), one
inner step lifts it to about 0.68 and 5 steps to about 0.69 (measured: 0.18 / 0.68 / 0.69). The full budget
(600 iterations) was not measured here; ``benchmarks/maml_omniglot.py`` reports longer runs.
The last line reads like ``RESULT accuracy_step0=0.18 accuracy_step1=0.68 accuracy_adapted=0.69 ... chance=0.2``.

    python examples/maml_omniglot.py --fast
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root, parser, report, require, start, table

from meta_learning import MAML, Conv4, EpisodeSampler, Omniglot

WAY, SHOT = 5, 1


def main(argv: list[str] | None = None) -> dict:
    args = parser(__doc__).parse_args(argv)
    root = require(data_root(args.root), "omniglot")
    iterations, test_tasks = (100, 100) if args.fast else (600, 500)
    started = start(args.seed)

    tasks_train = EpisodeSampler(Omniglot(root, split="train"), n_way=WAY, k_shot=SHOT, n_query=5, seed=args.seed)
    test = EpisodeSampler(Omniglot(root, split="test"), n_way=WAY, k_shot=SHOT, n_query=15, seed=args.seed + 1)
    test_episodes = test.evaluation_episodes(test_tasks, seed=args.seed + 1)

    your_model = Conv4(in_channels=1, num_classes=WAY, hidden_channels=32)
    maml = MAML(model=your_model, lr_inner=0.4, lr_outer=0.001, num_inner_steps=1, meta_batch_size=8)
    history = maml.meta_train(tasks_train, num_iterations=iterations, progress=False)

    # Fast adapt to a new task: a new nn.Module; the meta-parameters are untouched.
    task = test_episodes[0]
    before = {k: v.clone() for k, v in maml.state_dict().items()}
    adapted_model = maml.adapt((task.support_x, task.support_y), num_steps=5)
    untouched = all(torch.equal(before[k], v) for k, v in maml.state_dict().items())
    with torch.no_grad():  # batch statistics, as MAML uses them at adaptation time
        one_task = float((adapted_model(task.query_x).argmax(1) == task.query_y).float().mean())

    curve = maml.adaptation_curve(test_episodes, steps=(0, 1, 2, 5))
    table([(s, acc.mean, acc.ci95) for s, acc in curve.items()], ("inner steps", "query accuracy", "95% CI"))
    return report(
        {
            "iterations": history.steps,
            "test_tasks": test_tasks,
            "accuracy_step0": curve[0].mean,
            "accuracy_step1": curve[1].mean,
            "accuracy_adapted": curve[5].mean,
            "ci95_adapted": curve[5].ci95,
            "first_task_accuracy": one_task,
            "meta_parameters_untouched": untouched,
            "chance": 1 / WAY,
        },
        started,
    )


if __name__ == "__main__":
    main()
