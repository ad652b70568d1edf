"""The loop that drives any strategy through a stream, fills the accuracy matrix and checkpoints after each experience.

After experience ``i`` the strategy is evaluated on the test set of every experience ``j`` of the stream, giving row
``i`` of the accuracy matrix ``R`` (see :mod:`meta_learning.metrics`); with ``eval_initial=True`` the untrained
model is evaluated first (the ``b`` of forward transfer).

Forward transfer ``FWT = (1/(T-1)) sum_{i>=1} R[i-1][i] - b[i]`` (Lopez-Paz & Ranzato 2017) is left undefined
(``None``, with the reason in :attr:`StreamResult.fwt_undefined`) for a single-head model on a class-incremental
stream with ``mask_unseen_classes=True``: experience ``i``'s classes are masked until it is trained, so
``R[i-1][i] = 0`` by construction and the formula would only return ``-mean(b[1:])``. Measuring ``b`` under the same
masking does not help: no class of experience ``i`` is active before it either, so every ``b[i]`` would be 0 too.

With ``run_dir`` the loop writes ``checkpoints/last.pt`` (the strategy's full state, the matrix so far and the
global torch RNG) and ``results.json`` after every experience, atomically. A run killed at any point and started
again with ``resume=True`` and a strategy built the same way continues after the last finished experience and ends
with the same weights and matrix as an uninterrupted run (on CPU): every random choice of the strategies comes from
their checkpointed generator. Work inside the experience that was interrupted is redone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from meta_learning._io import atomic_write_json
from meta_learning.continual.base import Strategy
from meta_learning.data.streams import Stream
from meta_learning.metrics import ContinualMetrics, continual_metrics
from meta_learning.training.checkpoint import load_checkpoint, save_checkpoint


@dataclass
class StreamResult:
    """The record of one pass over a stream.

    Attributes:
        stream: the stream's name; strategy: the strategy's class name.
        accuracy_matrix: ``R[i][j]``, test accuracy on experience ``j`` after training experience ``i``.
        initial_accuracies: accuracies before any training (``None`` if not measured).
        train_time_s: wall time of each experience's ``learn_task`` (training only, no evaluation).
        eval_time_s: wall time of each evaluation row.
        task_logs: each experience's :class:`~meta_learning.continual.base.TaskLog` as a dict.
        fwt_undefined: why forward transfer is undefined for this run (``None``: it is defined; see the module
            docstring); :meth:`metrics` then reports ``fwt=None``.
    """

    stream: str
    strategy: str
    accuracy_matrix: list[list[float]] = field(default_factory=list)
    initial_accuracies: list[float] | None = None
    train_time_s: list[float] = field(default_factory=list)
    eval_time_s: list[float] = field(default_factory=list)
    task_logs: list[dict[str, Any]] = field(default_factory=list)
    fwt_undefined: str | None = None

    @property
    def complete(self) -> bool:
        return bool(self.accuracy_matrix) and len(self.accuracy_matrix) == len(self.accuracy_matrix[0])

    def metrics(self) -> ContinualMetrics:
        """Average accuracy, forgetting, BWT and FWT of the full matrix (``fwt=None`` when :attr:`fwt_undefined`)."""
        if not self.complete:
            raise ValueError(f"the stream is not finished ({len(self.accuracy_matrix)} rows); metrics need all rows")
        initial = None if self.fwt_undefined is not None else self.initial_accuracies
        return continual_metrics(self.accuracy_matrix, initial)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.complete:
            out["metrics"] = self.metrics().to_dict()
        return out


Callback = Callable[[int, StreamResult], None]


def train_stream(
    strategy: Strategy,
    stream: Stream,
    *,
    epochs: int | None = None,
    iterations: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    evaluate: bool = True,
    eval_initial: bool = True,
    run_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
) -> StreamResult:
    """Train ``strategy`` on each experience of ``stream`` in order and evaluate it after each.

    Args:
        strategy: any :class:`~meta_learning.continual.base.Strategy`; multi-head models need a task-incremental
            stream and single-head models a domain- or class-incremental one.
        stream: the experiences.
        epochs, iterations, batch_size, lr: per-experience overrides of the strategy's ``TrainConfig``.
        evaluate: fill the accuracy matrix (``False``: train only, e.g. to time training alone).
        eval_initial: evaluate the untrained model first (needed for forward transfer).
        run_dir: where ``checkpoints/last.pt`` and ``results.json`` go (``None``: nothing is written).
        resume: continue from ``run_dir/checkpoints/last.pt`` if it exists.
        callbacks: ``fn(experience_index, result)`` after each experience (after its checkpoint).

    Returns:
        The :class:`StreamResult`.
    """
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy must be a continual Strategy, got {type(strategy).__name__}")
    if not isinstance(stream, Stream):
        raise TypeError(f"stream must be a meta_learning.data.streams.Stream, got {type(stream).__name__}")
    if stream.multi_head != strategy.multi_head:
        need = "a multi-head (TaskAwareModule) model" if stream.multi_head else "a single-head model"
        raise ValueError(f"{stream.name} is {stream.scenario}-incremental and needs {need}")
    if resume and run_dir is None:
        raise ValueError("resume=True needs run_dir: the checkpoint to resume from lives there")
    run = Path(run_dir) if run_dir is not None else None
    ckpt = run / "checkpoints" / "last.pt" if run is not None else None
    result = StreamResult(stream=stream.name, strategy=type(strategy).__name__)
    start = 0
    if resume and ckpt is not None and ckpt.exists():
        state = load_checkpoint(ckpt)
        if state.get("stream") != stream.name or int(state.get("stream_length", -1)) != len(stream):
            raise ValueError(
                f"{ckpt} was written for stream {state.get('stream')!r} of {state.get('stream_length')} experiences, "
                f"not {stream.name!r} of {len(stream)}; use another run_dir"
            )
        strategy.load_state_dict(state["strategy"])
        torch.set_rng_state(state["torch_rng"])
        result = StreamResult(**state["result"])
        start = int(state["experience"])
    elif evaluate and eval_initial:
        result.initial_accuracies = evaluate_row(strategy, stream)
    result.fwt_undefined = fwt_undefined_reason(strategy, stream)

    for i in range(start, len(stream)):
        exp = stream[i]
        x, y = exp.train.tensors()
        t0 = time.perf_counter()
        log = strategy.learn_task(
            x, y, task_id=exp.task_id, epochs=epochs, iterations=iterations, batch_size=batch_size, lr=lr
        )
        result.train_time_s.append(time.perf_counter() - t0)
        result.task_logs.append(log.to_dict())
        if evaluate:
            t0 = time.perf_counter()
            result.accuracy_matrix.append(evaluate_row(strategy, stream))
            result.eval_time_s.append(time.perf_counter() - t0)
        if run is not None and ckpt is not None:
            save_checkpoint(
                ckpt,
                {
                    "experience": i + 1,
                    "stream": stream.name,
                    "stream_length": len(stream),
                    "strategy": strategy.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "result": asdict(result),
                },
            )
            atomic_write_json(run / "results.json", result.to_dict())
        for cb in callbacks:
            cb(i, result)
    return result


def fwt_undefined_reason(strategy: Strategy, stream: Stream) -> str | None:
    """Why forward transfer means nothing for ``strategy`` on ``stream`` (see the module docstring); ``None`` if it
    is defined."""
    if stream.scenario == "class" and not strategy.multi_head and strategy.mask_unseen_classes:
        return (
            "class-incremental stream with mask_unseen_classes=True: the classes of experience i are masked until it "
            "is trained, so R[i-1][i] = 0 by construction and R[i-1][i] - b[i] would only measure -b[i]"
        )
    return None


def evaluate_row(strategy: Strategy, stream: Stream) -> list[float]:
    """Test accuracy on every experience of ``stream``: one row of the accuracy matrix.

    :meth:`Strategy.evaluate <meta_learning.continual.base.Strategy.evaluate>`'s accuracies: a multi-head model is
    evaluated on the experiences it has not trained on with fresh heads, on a copy (``R[i][j]`` for ``j > i`` is the
    untrained head's accuracy, about chance, as for single-head models).
    """
    return list(strategy.evaluate(stream).accuracies)
