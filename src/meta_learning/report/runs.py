"""Read a run folder into plain data for the report: its ``results.json`` and ``metrics.jsonl``, checked.

A run folder is what ``meta-learning train`` (``experiment.train_experiment``) or the continual loop
(``continual.train_stream``) writes: ``results.json`` (final figures, an optional ``"metrics"`` section),
``metrics.jsonl`` (one ``{"kind": "train" | "val", "step", ...}`` record per logged step, from
``training.loop.fit``) and ``config.yaml``. Either of the first two is enough: a run still training (or killed)
has only ``metrics.jsonl``. Nothing is invented: a field that the files do not hold stays ``None``.

The ``"metrics"`` section of ``results.json`` (each part optional)::

    transfer_accuracy:    {mean, ci95, n, n_way, k_shot}
    adaptation_speed:     {steps: [...], accuracy: [...], threshold, steps_to_threshold}
    parameter_efficiency: {trainable, total, fraction}
    computational_cost:   {flops_per_step, train_wall_time_s, steps, step_time_s, peak_memory_bytes, device}
    forgetting:           {accuracy_matrix: [[...]], average_forgetting, bwt}

A continual run's ``results.json`` (``StreamResult.to_dict()``) holds its accuracy matrix at the top level;
it is read from there (with the ``average_forgetting``/``bwt`` of its ``"metrics"``) when
``metrics.forgetting`` is absent.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"


@dataclass(frozen=True)
class Curve:
    """A logged series: ``steps [P]`` and ``values [P]``, with an optional 95% half-width per point."""

    steps: tuple[float, ...]
    values: tuple[float, ...]
    ci95: tuple[float, ...] | None = None


@dataclass(frozen=True)
class RunRecord:
    """Everything the report shows about one run folder; ``None`` where the folder does not record it.

    Attributes:
        path: the run folder.
        name: ``results.json``'s ``name``, else the config's ``name``, else the folder's name.
        learner: the config's ``learner.name`` (few-shot) or the continual ``strategy``.
        results: the parsed ``results.json`` (``None`` when absent).
        train_loss, train_accuracy, val_accuracy: curves from ``metrics.jsonl`` (``None`` when absent or empty).
        skipped_lines: ``metrics.jsonl`` lines that are not JSON (a line torn by a kill); reported, not drawn.
        transfer_accuracy ... forgetting: the parts of ``results.json``'s ``"metrics"`` section, checked;
            ``forgetting["accuracy_matrix"]`` holds the rows ``R[i][j]`` (a running stream has fewer rows than
            columns; ``None`` before the first row).
        test: ``results.json``'s ``test``: setting (``"5-way 1-shot"``) -> ``{mean, ci95, n}``.
    """

    path: Path
    name: str
    learner: str | None
    results: dict[str, Any] | None
    train_loss: Curve | None = None
    train_accuracy: Curve | None = None
    val_accuracy: Curve | None = None
    skipped_lines: int = 0
    transfer_accuracy: dict[str, Any] | None = None
    adaptation_speed: dict[str, Any] | None = None
    parameter_efficiency: dict[str, Any] | None = None
    computational_cost: dict[str, Any] | None = None
    forgetting: dict[str, Any] | None = None
    test: dict[str, dict[str, float]] = field(default_factory=dict)


def load_run_record(run_dir: str | os.PathLike[str]) -> RunRecord:
    """Read and check a run folder.

    Raises:
        FileNotFoundError: ``run_dir`` is not a folder, or holds neither ``results.json`` nor ``metrics.jsonl``.
        ValueError: a file is not valid JSON/YAML or a recorded metric has the wrong shape (the message names the
            file and the key).
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run folder {str(run)!r} does not exist or is not a folder")
    results_path, metrics_path = run / RESULTS_FILE, run / METRICS_FILE
    if not results_path.is_file() and not metrics_path.is_file():
        raise FileNotFoundError(
            f"{str(run)!r} is not a run folder: it has neither {RESULTS_FILE} nor {METRICS_FILE} "
            "(pass folders written by `meta-learning train` or the continual loop)"
        )
    results = _read_results(results_path) if results_path.is_file() else None
    config = _read_config(run, results)
    curves, skipped = _read_curves(metrics_path) if metrics_path.is_file() else ({}, 0)
    metrics = results.get("metrics") if results is not None else None
    where = f"{results_path}: metrics"
    if metrics is not None and not isinstance(metrics, dict):
        raise ValueError(f"{where} must be an object, got {type(metrics).__name__}")
    metrics = metrics or {}
    forgetting = _forgetting(metrics.get("forgetting"), f"{where}.forgetting")
    if forgetting is None and results is not None and "accuracy_matrix" in results:
        # a continual StreamResult: the matrix at the top level, its summaries (ContinualMetrics) in "metrics"
        summary = {k: metrics[k] for k in ("average_forgetting", "bwt") if k in metrics}
        forgetting = _forgetting({"accuracy_matrix": results["accuracy_matrix"], **summary}, str(results_path))
    return RunRecord(
        path=run,
        name=_first_str(results, config, run),
        learner=_learner(results, config),
        results=results,
        train_loss=curves.get("loss"),
        train_accuracy=curves.get("accuracy"),
        val_accuracy=curves.get("val"),
        skipped_lines=skipped,
        transfer_accuracy=_checked(
            metrics.get("transfer_accuracy"), f"{where}.transfer_accuracy", ("mean", "ci95", "n"), ("n_way", "k_shot")
        ),
        adaptation_speed=_adaptation(metrics.get("adaptation_speed"), f"{where}.adaptation_speed"),
        parameter_efficiency=_checked(
            metrics.get("parameter_efficiency"), f"{where}.parameter_efficiency", ("trainable", "total", "fraction")
        ),
        computational_cost=_checked(
            metrics.get("computational_cost"),
            f"{where}.computational_cost",
            (),
            ("flops_per_step", "train_wall_time_s", "steps", "step_time_s", "peak_memory_bytes"),
        ),
        forgetting=forgetting,
        test=_test(results.get("test") if results is not None else None, f"{results_path}: test"),
    )


def _read_results(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the run may have been written by another tool") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _read_config(run: Path, results: dict[str, Any] | None) -> dict[str, Any] | None:
    if results is not None and isinstance(results.get("config"), dict):
        return results["config"]
    path = run / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML ({err})") from err
    return config if isinstance(config, dict) else None


def _read_curves(path: Path) -> tuple[dict[str, Curve], int]:
    """``loss``/``accuracy`` train curves and the ``val`` accuracy curve of a ``metrics.jsonl``."""
    train: list[dict[str, Any]] = []
    val: list[dict[str, Any]] = []
    skipped = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1  # a line torn by a kill; the loop itself drops these on resume
            continue
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object per line, got {type(record).__name__}")
        kind = record.get("kind")
        if kind == "train":
            train.append(record)
        elif kind == "val":
            val.append(record)
    curves: dict[str, Curve] = {}
    for key in ("loss", "accuracy"):
        rows = [r for r in train if key in r]
        if rows:
            curves[key] = Curve(
                _floats([r["step"] for r in rows], f"{path}: train step"),
                _floats([r[key] for r in rows], f"{path}: train {key}"),
            )
    if val:
        ci = [r.get("ci95") for r in val]
        curves["val"] = Curve(
            _floats([r["step"] for r in val], f"{path}: val step"),
            _floats([r["accuracy"] for r in val], f"{path}: val accuracy"),
            _floats(ci, f"{path}: val ci95") if all(c is not None for c in ci) else None,
        )
    return curves, skipped


def _first_str(results: dict[str, Any] | None, config: dict[str, Any] | None, run: Path) -> str:
    for source in (results, config):
        if source is not None and isinstance(source.get("name"), str) and source["name"]:
            return str(source["name"])
    return run.resolve().name


def _learner(results: dict[str, Any] | None, config: dict[str, Any] | None) -> str | None:
    learner = config.get("learner") if config is not None else None
    if isinstance(learner, dict) and isinstance(learner.get("name"), str):
        return str(learner["name"])
    if results is not None and isinstance(results.get("strategy"), str):
        return str(results["strategy"])
    return None


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}={value!r} but expected a number")
    return float(value)


def _floats(values: list[Any], where: str) -> tuple[float, ...]:
    return tuple(_number(v, where) for v in values)


def _checked(part: Any, where: str, required: tuple[str, ...], nullable: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """``part`` with each ``required`` key a number and each present ``nullable`` key a number or ``None``.

    Other keys (``device``, extras a newer writer adds) pass through unchecked.
    """
    if part is None:
        return None
    if not isinstance(part, dict):
        raise ValueError(f"{where} must be an object, got {type(part).__name__}")
    for key in required:
        if key not in part:
            raise ValueError(f"{where} has no {key!r}; expected keys {', '.join(required)}")
        _number(part[key], f"{where}.{key}")
    for key in nullable:
        if part.get(key) is not None:
            _number(part[key], f"{where}.{key}")
    return dict(part)


def _adaptation(part: Any, where: str) -> dict[str, Any] | None:
    checked = _checked(part, where, (), ("threshold", "steps_to_threshold"))
    if checked is None:
        return None
    steps, acc = checked.get("steps"), checked.get("accuracy")
    if not isinstance(steps, list) or not isinstance(acc, list) or len(steps) != len(acc) or not steps:
        raise ValueError(f"{where}: steps and accuracy must be non-empty lists of equal length, got {steps!r}, {acc!r}")
    checked["steps"] = _floats(steps, f"{where}.steps")
    checked["accuracy"] = _floats(acc, f"{where}.accuracy")
    return checked


def _matrix(value: Any, where: str) -> tuple[tuple[float, ...], ...] | None:
    """Rows of an accuracy matrix; ``None`` for an empty one (a stream that has not finished one experience)."""
    if not isinstance(value, list) or not all(isinstance(row, list) for row in value):
        raise ValueError(f"{where} must be a list of rows (lists of numbers), got {type(value).__name__}")
    if not value:
        return None
    width = len(value[0])
    if width == 0 or any(len(row) != width for row in value) or len(value) > width:
        shape = [len(row) for row in value]
        raise ValueError(f"{where}: rows must have equal, non-zero length and be at most as many; row lengths {shape}")
    rows = tuple(_floats(row, where) for row in value)
    if not all(math.isfinite(v) for row in rows for v in row):
        raise ValueError(f"{where} holds non-finite entries")
    return rows


def _forgetting(part: Any, where: str) -> dict[str, Any] | None:
    checked = _checked(part, where, (), ("average_forgetting", "bwt"))
    if checked is None:
        return None
    checked["accuracy_matrix"] = _matrix(checked.get("accuracy_matrix", []), f"{where}.accuracy_matrix")
    return checked


def _test(part: Any, where: str) -> dict[str, dict[str, float]]:
    """``results.json``'s ``test``: setting (``"5-way 1-shot"``) -> ``{mean, ci95, n}``."""
    if part is None:
        return {}
    if not isinstance(part, dict):
        raise ValueError(f"{where} must be an object of settings, got {type(part).__name__}")
    out: dict[str, dict[str, float]] = {}
    for setting, acc in part.items():
        if not isinstance(acc, dict):
            raise ValueError(f"{where}[{setting!r}] must be an object with mean, ci95, n")
        out[str(setting)] = {k: _number(acc.get(k), f"{where}[{setting!r}].{k}") for k in ("mean", "ci95", "n")}
    return out
