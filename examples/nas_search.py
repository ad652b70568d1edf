"""Neural architecture search (seed section "Neural Architecture Search"): random and evolutionary search on the
NAS-Bench-201 table, and DARTS on MNIST.

What it shows: ``NeuralArchitectureSearch(search_space=NASBench201Space(), strategy='random')`` and
``.search(num_architectures=100)`` scored by the NAS-Bench-201 / NATS-Bench table (CIFAR-10 test accuracy after 200
epochs of each of the 15,625 cells, a real tabular benchmark: a query is a lookup), the same with
``strategy='evolutionary'`` (regularized evolution); then ``DARTS(model_size=..., num_operations=len(operations))``
and ``darts_search.search(train_data=..., val_data=...)`` on MNIST images (the 10,000 test images of the data root,
split 8,000 / 2,000), whose learned cell is retrained from scratch and also looked up in the table.

Expected output (``--fast``: 100 table queries per strategy; DARTS for 3 epochs on 600 images, then 1 retraining
epoch on the 8,000; about a minute on 2 CPU cores): the best of 100 random cells is in the table's top 2% (about
93.5-94%; optimum 94.37%, median cell 90.75%), regularized evolution usually gets closer to the optimum; this short
DARTS search is a smoke-sized run whose retrained cell classifies MNIST well above chance (about 0.5 after one epoch;
``benchmarks/nas_darts.py`` runs DARTS at a useful size). The last line reads like ``RESULT random_best=93.64
evolutionary_best=94.25 table_optimum=94.37 ... darts_retrained_accuracy=0.56 ...``.

    python examples/nas_search.py --fast
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root, parser, report, require, start, table

from meta_learning import DARTS, NASBench201Space, NeuralArchitectureSearch
from meta_learning.data.mnist import load_mnist
from meta_learning.nas import NASBench201Table, TabularEvaluator

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def main(argv: list[str] | None = None) -> dict:
    args = parser(__doc__).parse_args(argv)
    root = require(data_root(args.root), "nats_bench_tss", "mnist")
    queries = 100
    darts_epochs, search_examples, retrain_epochs = (3, 600, 1) if args.fast else (8, 1600, 3)
    started = start(args.seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    nb201 = NASBench201Table(root)
    all_accuracies = sorted(acc for _, acc in nb201)
    _, optimum = nb201.best()
    values: dict = {"queries": queries}
    rows = []
    for strategy in ("random", "evolutionary"):
        nas = NeuralArchitectureSearch(
            search_space=NASBench201Space(), strategy=strategy, evaluator=TabularEvaluator(nb201), seed=args.seed,
            storage="memory",
        )  # fmt: skip
        best_arch = nas.search(num_architectures=queries, progress=False)
        best = nb201.accuracy(best_arch)
        top = sum(a > best for a in all_accuracies) / len(all_accuracies)  # fraction of the table above it
        rows.append((strategy, str(best_arch), best, top))
        values |= {f"{strategy}_best": best, f"{strategy}_top_fraction": top}
    table(rows, ("strategy", "best cell", "CIFAR-10 acc %", "table fraction above"))

    # DARTS: a supernet over the NB201 cell on MNIST (1 input channel, 8 channels, 1 cell per stage)
    train, test = load_mnist(root, source="test10k")
    x, y = train.tensors()
    x, x_test = (x - MNIST_MEAN) / MNIST_STD, (test.tensors()[0] - MNIST_MEAN) / MNIST_STD
    half = search_examples // 2
    training_data, validation_data = (x[:half], y[:half]), (x[half:search_examples], y[half:search_examples])
    space = NASBench201Space(channels=8, cells_per_stage=1, in_channels=1, num_classes=10)
    your_operations = space.operations
    darts_search = DARTS(
        model_size=8, num_operations=len(your_operations), search_space=space, in_channels=1, num_classes=10,
        cells_per_stage=1, epochs=darts_epochs, order="first", seed=args.seed, progress=False,
    )  # fmt: skip
    learned_arch = darts_search.search(train_data=training_data, val_data=validation_data)
    model, curves = darts_search.retrain(
        learned_arch, (x, y), (x_test, test.tensors()[1]), epochs=retrain_epochs, batch_size=64, lr=0.05
    )
    with torch.no_grad():
        params = sum(p.numel() for p in model.parameters())
    print(f"DARTS cell: {learned_arch} ({params:,} parameters retrained), search {darts_search.search_time_s:.1f} s")
    values |= {
        "table_optimum": optimum,
        "table_median": statistics.median(all_accuracies),
        "darts_cell": str(learned_arch),
        "darts_supernet_val_accuracy": darts_search.history[-1].val_accuracy,
        "darts_retrained_accuracy": curves.val_accuracy[-1],
        "darts_cell_table_accuracy": nb201.accuracy(learned_arch),
        "chance_mnist": 0.1,
    }
    return report(values, started)


if __name__ == "__main__":
    main()
