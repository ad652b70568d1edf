"""Run folders for the report tests, written by hand in the on-disk format of ``training.loop.fit`` (metrics.jsonl),
``experiment.finish_run`` (results.json, with the ``"metrics"`` section) and ``continual.train_stream``."""

from __future__ import annotations

import json
from pathlib import Path

EVIL_NAME = '<script>alert("x")</script> & $\\alpha$ maml'


def write_metrics_jsonl(run: Path, steps: int, log_every: int, eval_every: int, torn: bool = False) -> None:
    lines = []
    for step in range(log_every, steps + 1, log_every):
        lines.append({"kind": "train", "step": step, "loss": 2.0 / step, "accuracy": 1 - 1 / (1 + step),
                      "lr": 0.001, "time_s": 0.1 * step})  # fmt: skip
        if step % eval_every == 0:
            lines.append({"kind": "val", "step": step, "accuracy": 0.5 + step / (4 * steps), "ci95": 0.02,
                          "time_s": 0.1 * step + 0.05})  # fmt: skip
    text = "".join(json.dumps(r) + "\n" for r in lines)
    if torn:
        text += '{"kind": "train", "step": 99'  # a line cut by a kill
    (run / "metrics.jsonl").write_text(text)


def results(name: str, learner: str, metrics: dict | None = None, **extra) -> dict:
    out = {
        "name": name,
        "test": {"5-way 1-shot": {"mean": 0.9861, "ci95": 0.0016, "n": 1000}},
        "best_val_accuracy": 0.9895,
        "best_step": 40,
        "steps": 40,
        "stopped_early": False,
        "train_wall_time_s": 1803.9,
        "this_session_s": 1803.9,
        "run_dir": "somewhere",
        "config": {"name": name, "seed": 0, "learner": {"name": learner}},
    }
    if metrics is not None:
        out["metrics"] = metrics
    return {**out, **extra}
