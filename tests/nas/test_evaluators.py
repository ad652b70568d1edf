"""Evaluators: the NAS-Bench-201 table against the raw file, training with curve-based early stopping, functions."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from meta_learning.nas import (
    FunctionEvaluator,
    MacroSpace,
    NASBench201Table,
    NB201Architecture,
    TabularEvaluator,
    TrainingEvaluator,
)
from meta_learning.optim import LearningCurveAnalyzer

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"  # index 6111
INDEX0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"


def test_lookup_equals_the_raw_file(nb201_table, nb201_table_path):
    with open(nb201_table_path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    assert len(nb201_table) == len(rows) == 15_625
    for k, (arch, acc) in enumerate(rows):
        assert nb201_table.accuracy(arch) == float(acc)
        assert nb201_table.accuracy(NB201Architecture.from_string(arch)) == float(acc)
        assert nb201_table.index(arch) == k


def test_known_cells(nb201_table):
    arch, acc = nb201_table.best()
    assert str(arch) == BEST and round(acc, 2) == 94.37 and nb201_table.index(arch) == 6111
    assert nb201_table.index(INDEX0) == 0 and nb201_table.accuracy(INDEX0) == pytest.approx(85.8633333)
    # the all-skip cell: DARTS' collapse, reported as 54.30 in the NAS-Bench-201 paper (DARTS-V1/V2 on CIFAR-10)
    assert round(nb201_table.accuracy("|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|"
                                      "skip_connect~1|skip_connect~2|"), 2) == 54.30  # fmt: skip
    evaluator = TabularEvaluator(nb201_table)
    assert evaluator(arch) == acc and evaluator(BEST) == acc and evaluator.queries == 2
    with pytest.raises(TypeError):
        nb201_table.accuracy(42)  # type: ignore[arg-type]


def _write(path, rows, header=("ArchitectureString", "CIFAR10TestAccuracy200Epochs")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_table_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nats_bench_tss"):
        NASBench201Table(root=tmp_path)
    small = tmp_path / "t.csv"
    _write(small, [(INDEX0, "85.5"), (BEST, "94.0")])
    with pytest.raises(ValueError, match="sha256"):
        NASBench201Table(path=small)
    table = NASBench201Table(path=small, verify=False)
    assert len(table) == 2 and table.best()[1] == 94.0
    with pytest.raises(KeyError, match="not in the table"):
        table.accuracy("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    _write(small, [(INDEX0, "85.5"), (INDEX0, "94.0")])
    with pytest.raises(ValueError, match="repeats"):
        NASBench201Table(path=small, verify=False)
    _write(small, [(INDEX0, "185.5")])
    with pytest.raises(ValueError, match=r"not in \[0, 100\]"):
        NASBench201Table(path=small, verify=False)
    _write(small, [(INDEX0, "85.5")], header=("arch", "acc"))
    with pytest.raises(ValueError, match="header"):
        NASBench201Table(path=small, verify=False)


def test_function_evaluator_checks_the_return_value():
    assert FunctionEvaluator(lambda a: torch.tensor(0.5))("x") == 0.5
    assert FunctionEvaluator(lambda a: None)("x") is None
    with pytest.raises(TypeError, match="real number"):
        FunctionEvaluator(lambda a: "high")("x")
    with pytest.raises(TypeError, match="callable"):
        FunctionEvaluator(3)  # type: ignore[arg-type]


def _blobs(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = 2.0 * torch.nn.functional.one_hot(y, 3).float() + 0.5 * torch.randn(n, 3, generator=g)
    return torch.cat([x, torch.randn(n, 3, generator=g)], 1), y


def test_training_evaluator_early_stopping_rule():
    space = MacroSpace("mlp", input_shape=(6,), num_classes=3, depths=(1, 1), widths=(8,), activations=("relu",))
    arch = space.parse("mlp:8/relu")
    ev = TrainingEvaluator(space, _blobs(96, 0), _blobs(48, 1), epochs=8, min_epochs=3, batch_size=16, lr=0.05)
    score = ev(arch)  # no finished run yet: runs to the end
    rec = ev.records[-1]
    assert not rec.stopped_early and len(rec.val_accuracy) == 8 and score == rec.val_accuracy[-1] == ev.best
    assert score > 0.8  # separable blobs
    # a perfect incumbent: the curve rule stops the run at the first epoch where it holds, and not before
    ev.best = 1.0
    ev(arch)
    rec = ev.records[-1]
    analyzer = LearningCurveAnalyzer(mode="max", bounds=(0.0, 1.0), min_points=3)
    curve = list(rec.val_accuracy)
    assert rec.stopped_early and 3 <= len(curve) < 8 and rec.score == curve[-1]
    assert analyzer.should_stop(curve, horizon=8, best=1.0)
    assert not any(analyzer.should_stop(curve[:k], horizon=8, best=1.0) for k in range(3, len(curve)))
    assert rec.predicted_final == pytest.approx(analyzer.predict(curve, at=8).mean)
    assert ev.best == 1.0  # a stopped run does not become the incumbent
    # an incumbent of 0 is beaten for sure: the run is not stopped
    ev.best = 0.0
    ev(arch)
    assert not ev.records[-1].stopped_early and len(ev.records[-1].val_accuracy) == 8
    off = TrainingEvaluator(space, _blobs(96, 0), _blobs(48, 1), epochs=4, early_stopping=False, batch_size=16)
    off.best = 1.0
    off(arch)
    assert not off.records[-1].stopped_early and math.isclose(off.best, 1.0)
