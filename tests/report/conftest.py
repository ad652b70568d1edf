"""Run-folder fixtures for the report tests (formats: see ``_report_runs``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _report_runs import EVIL_NAME, results, write_metrics_jsonl


@pytest.fixture
def protonet_run(tmp_path: Path) -> Path:
    """Learning curves, transfer accuracy, parameter efficiency and cost; no adaptation or forgetting."""
    run = tmp_path / "protonet"
    run.mkdir()
    write_metrics_jsonl(run, steps=40, log_every=10, eval_every=20, torn=True)
    metrics = {
        "transfer_accuracy": {"mean": 0.9861, "ci95": 0.0016, "n": 1000, "n_way": 5, "k_shot": 1},
        "parameter_efficiency": {"trainable": 112980, "total": 112980, "fraction": 1.0},
        "computational_cost": {"flops_per_step": 2.5e9, "train_wall_time_s": 1803.9, "steps": 40,
                               "step_time_s": 0.376, "peak_memory_bytes": 3 * 2**30 // 2, "device": "cpu"},
    }  # fmt: skip
    (run / "results.json").write_text(json.dumps(results("protonet-omniglot-5w1s", "protonet", metrics)))
    return run


@pytest.fixture
def maml_run(tmp_path: Path) -> Path:
    """Adaptation speed and a small trainable share (an adapter); a name that needs escaping; no metrics.jsonl."""
    run = tmp_path / "maml"
    run.mkdir()
    metrics = {
        "transfer_accuracy": {"mean": 0.91, "ci95": 0.01, "n": 600, "n_way": 5, "k_shot": 5},
        "adaptation_speed": {"steps": [0, 1, 2, 3, 4, 5], "accuracy": [0.2, 0.55, 0.7, 0.78, 0.81, 0.82],
                             "threshold": 0.75, "steps_to_threshold": 3},
        "parameter_efficiency": {"trainable": 2048, "total": 1000000, "fraction": 0.002048},
    }  # fmt: skip
    data = results(EVIL_NAME, "maml", metrics)
    del data["test"]  # the 5-way 5-shot figure is only in metrics.transfer_accuracy
    (run / "results.json").write_text(json.dumps(data))
    return run


@pytest.fixture
def continual_run(tmp_path: Path) -> Path:
    """A finished continual stream as ``StreamResult.to_dict()`` writes it (no metrics.jsonl)."""
    run = tmp_path / "ewc"
    run.mkdir()
    matrix = [[0.99, 0.1, 0.1], [0.80, 0.97, 0.1], [0.70, 0.85, 0.98]]
    data = {
        "stream": "SplitMNIST(task)",
        "strategy": "EWC",
        "accuracy_matrix": matrix,
        "initial_accuracies": [0.1, 0.1, 0.1],
        "train_time_s": [1.0, 1.0, 1.0],
        "eval_time_s": [0.1, 0.1, 0.1],
        "task_logs": [],
        "metrics": {"average_accuracy": 0.843, "average_forgetting": 0.205, "bwt": -0.205, "fwt": 0.0,
                    "final_accuracies": [0.70, 0.85, 0.98]},
    }  # fmt: skip
    (run / "results.json").write_text(json.dumps(data))
    return run
