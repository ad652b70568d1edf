"""train_stream: the accuracy matrix, resumable atomic checkpoints, scenario checks."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from _continual import blobs
from meta_learning._io import safe_torch_load
from meta_learning.continual import (
    EWC,
    ExperienceReplay,
    MultiHeadClassifier,
    Naive,
    TrainConfig,
    evaluate_row,
    train_stream,
)
from meta_learning.data.streams import TensorClassificationDataset, split_classes
from meta_learning.metrics import forward_transfer


def toy_stream(scenario, n_tasks=3):
    classes = list(range(2 * n_tasks))
    x, y = blobs(30, classes, seed=0)
    xt, yt = blobs(10, classes, seed=1)
    groups = [(2 * t, 2 * t + 1) for t in range(n_tasks)]
    train, test = TensorClassificationDataset(x, y), TensorClassificationDataset(xt, yt)
    return split_classes(train, test, groups, scenario, "toy")


class DropMLP(nn.Module):
    """Dropout makes the global RNG matter: resuming must restore it."""

    def __init__(self, out):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, out))

    def forward(self, x):
        return self.net(x)


def make(kind, stream):
    torch.manual_seed(0)
    config = TrainConfig(iterations=8, batch_size=16)
    if kind == "ewc":
        return EWC(DropMLP(stream.num_classes), ewc_lambda=10.0, seed=1, config=config)
    body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3))
    return ExperienceReplay(MultiHeadClassifier(body, 16, 2), memory_size=20, seed=1, config=config)


def test_accuracy_matrix_rows_are_evaluations_after_each_experience():
    stream = toy_stream("class")
    torch.manual_seed(0)
    naive = Naive(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 6)), config=TrainConfig(iterations=60))
    rows = []
    result = train_stream(naive, stream, callbacks=[lambda i, r: rows.append(naive.evaluate(stream).accuracies)])
    assert len(result.accuracy_matrix) == 3 and all(len(r) == 3 for r in result.accuracy_matrix)
    assert [tuple(r) for r in result.accuracy_matrix] == rows
    assert len(result.initial_accuracies) == 3
    assert all(result.accuracy_matrix[i][i] > 0.85 for i in range(3))
    assert result.accuracy_matrix[0][1] == 0.0  # class-IL: classes of later tasks are masked
    m = result.metrics()
    assert m.average_accuracy == pytest.approx(sum(result.accuracy_matrix[-1]) / 3)
    # FWT used to be reported here, but R[i-1][i] = 0 by construction made it -mean(b[1:]) whatever was learned
    b = result.initial_accuracies
    assert forward_transfer(result.accuracy_matrix, b) == pytest.approx(-(b[1] + b[2]) / 2)
    assert m.fwt is None and "mask_unseen_classes=True" in result.fwt_undefined
    assert result.to_dict()["metrics"]["fwt"] is None
    assert len(result.train_time_s) == len(result.eval_time_s) == 3
    assert result.to_dict()["metrics"]["bwt"] == pytest.approx(m.bwt)


@pytest.mark.parametrize(("scenario", "mask"), [("class", False), ("domain", True), ("task", True)])
def test_fwt_is_lopez_paz_ranzato_where_defined(scenario, mask):
    stream = toy_stream(scenario)
    torch.manual_seed(0)
    config = TrainConfig(iterations=30)
    if scenario == "task":
        naive = Naive(MultiHeadClassifier(nn.Linear(8, 16), 16, 2), config=config)
    else:
        naive = Naive(nn.Linear(8, stream.num_classes), config=config, mask_unseen_classes=mask)
    result = train_stream(naive, stream)
    r, b = result.accuracy_matrix, result.initial_accuracies
    assert result.fwt_undefined is None
    assert result.metrics().fwt == pytest.approx(((r[0][1] - b[1]) + (r[1][2] - b[2])) / 2)


def test_multi_head_rows_evaluate_future_tasks_on_a_copy():
    stream = toy_stream("task")
    er = make("er", stream)
    result = train_stream(er, stream, callbacks=[lambda i, r: None])
    assert er.model.known_tasks() == [0, 1, 2]
    naive = Naive(MultiHeadClassifier(nn.Linear(8, 4), 4, 2), config=TrainConfig(iterations=2))
    naive.learn_task(*stream[0].train.tensors(), task_id=0)
    row = evaluate_row(naive, stream)
    assert len(row) == 3 and naive.model.known_tasks() == [0]  # the live model did not grow
    assert len(result.accuracy_matrix) == 3


def test_strategy_evaluate_mid_stream_uses_fresh_heads_for_unseen_tasks():
    """Strategy.evaluate raised "task_id=1 is unknown" for a multi-head model after 1 of 2 tasks."""
    stream = toy_stream("task", n_tasks=2)
    torch.manual_seed(0)
    naive = Naive(MultiHeadClassifier(nn.Linear(8, 4), 4, 2), config=TrainConfig(iterations=20))
    naive.learn_task(*stream[0].train.tensors(), task_id=0)
    live = {k: v.clone() for k, v in naive.model.state_dict().items()}
    ev = naive.evaluate(stream)
    # reference: task 0 on the live model; task 1 on a copy given the head task 1 will start from (seeded by id)
    fresh = copy.deepcopy(naive.model).eval()
    fresh.prepare_task(1)
    expected = []
    for t in (0, 1):
        x, y = stream[t].test.tensors()
        with torch.no_grad():
            expected.append(float((fresh(x, t).argmax(1) == y).float().mean()))
    assert ev.accuracies == pytest.approx(tuple(expected), abs=0)
    assert ev.task_ids == (0, 1) and ev.untrained_heads == (1,)
    assert naive.model.known_tasks() == [0]  # the live model did not grow or change
    assert all(torch.equal(v, naive.model.state_dict()[k]) for k, v in live.items())
    assert list(ev.accuracies) == evaluate_row(naive, stream)
    tuples = naive.evaluate([(*stream[t].test.tensors(), t) for t in (0, 1)])
    assert tuples.accuracies == ev.accuracies and tuples.untrained_heads == (1,)
    naive.learn_task(*stream[1].train.tensors(), task_id=1)
    assert naive.evaluate(stream).untrained_heads == ()


class Crash(Exception):
    pass


def crash_after(k):
    def cb(i, result):
        if i == k:
            raise Crash

    return cb


@pytest.mark.parametrize("kind", ["ewc", "er"])
def test_a_killed_run_resumes_to_the_same_weights_and_matrix(tmp_path, kind):
    stream = toy_stream("class" if kind == "ewc" else "task")
    reference = make(kind, stream)
    expected = train_stream(reference, stream)

    run = tmp_path / kind
    with pytest.raises(Crash):
        train_stream(make(kind, stream), stream, run_dir=run, callbacks=[crash_after(1)])
    saved = safe_torch_load(run / "checkpoints" / "last.pt")
    assert saved["experience"] == 2
    assert json.loads((run / "results.json").read_text())["accuracy_matrix"] == expected.accuracy_matrix[:2]
    torch.manual_seed(123)  # a different global RNG state in the new process; the checkpoint restores it
    resumed_strategy = make(kind, stream)
    resumed = train_stream(resumed_strategy, stream, run_dir=run, resume=True)
    assert resumed.accuracy_matrix == expected.accuracy_matrix
    assert resumed.initial_accuracies == expected.initial_accuracies
    ref_state, res_state = reference.model.state_dict(), resumed_strategy.model.state_dict()
    assert all(torch.equal(ref_state[k], res_state[k]) for k in ref_state)
    assert not list(run.rglob("*.tmp"))  # atomic writes leave no temporaries
    assert json.loads((run / "results.json").read_text())["metrics"]["average_accuracy"] == pytest.approx(
        expected.metrics().average_accuracy
    )


def test_stream_checks(tmp_path):
    stream = toy_stream("class")
    with pytest.raises(ValueError, match="needs a multi-head"):
        train_stream(Naive(nn.Linear(8, 2)), toy_stream("task"))
    with pytest.raises(ValueError, match="needs a single-head"):
        train_stream(Naive(MultiHeadClassifier(nn.Linear(8, 4), 4, 2)), stream)
    with pytest.raises(ValueError, match="resume=True needs run_dir"):
        train_stream(Naive(nn.Linear(8, 6)), stream, resume=True)
    with pytest.raises(TypeError, match="Stream"):
        train_stream(Naive(nn.Linear(8, 6)), [stream[0]])
    train_stream(Naive(nn.Linear(8, 6), config=TrainConfig(iterations=1)), stream, run_dir=tmp_path)
    with pytest.raises(ValueError, match="was written for stream"):
        train_stream(Naive(nn.Linear(8, 6)), toy_stream("class", n_tasks=2), run_dir=tmp_path, resume=True)
