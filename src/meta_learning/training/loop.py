"""The episodic training loop shared by every episodic learner and by the CLI.

``fit`` draws one episode (or meta-batch) per step from a stream, calls ``learner.training_step``, steps the
optimizer, validates on a fixed set every ``eval_every`` steps, keeps the best checkpoint, stops early after
``patience`` evaluations without improvement, and writes ``metrics.jsonl`` plus resumable checkpoints into
``run_dir``. A run killed at any point and restarted with ``resume=True`` ends with the same weights as an
uninterrupted run (on CPU), because the stream's generator, the global RNG, optimizer and scheduler states are
all checkpointed and the metrics log is truncated back to the checkpoint.

Validation direction: an :class:`~meta_learning.metrics.Accuracy` improves when it rises, a
:class:`~meta_learning.metrics.MeanSquaredError` (regression tasks) when it falls; ``val_mode`` overrides this.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from meta_learning._checks import check_positive_float, check_positive_int
from meta_learning._io import atomic_write_text
from meta_learning.metrics import Accuracy, MeanSquaredError
from meta_learning.training.checkpoint import load_checkpoint, save_checkpoint
from meta_learning.training.memory import retain_cpu_memory


@dataclass(frozen=True)
class StepOutput:
    """What one training step reports: the differentiable ``loss`` and the query ``accuracy`` in [0, 1].

    ``backward_done=True`` means the step already accumulated its gradients (e.g. task by task, to free each
    task's graph early) and ``loss`` is only reported.
    """

    loss: Tensor
    accuracy: float
    backward_done: bool = False


class EpisodicModel(Protocol):
    """What ``fit`` needs from a learner."""

    def training_step(self, batch: Any) -> StepOutput: ...

    def evaluate(self, episodes: Any) -> Any: ...


@dataclass
class History:
    """Training record: one entry per logged step and per validation, plus the best validation.

    ``best_val_accuracy`` is the best validation figure: the highest accuracy, or for a regression metric
    (:class:`~meta_learning.metrics.MeanSquaredError`) the lowest error; ``val`` records keep it under
    ``"accuracy"`` either way. ``wall_time_s`` is the loop's wall time summed over all sessions of a resumed run,
    ``val_time_s`` the part of it spent validating.
    """

    train: list[dict[str, float]] = field(default_factory=list)
    val: list[dict[str, float]] = field(default_factory=list)
    best_step: int | None = None
    best_val_accuracy: float | None = None
    stopped_early: bool = False
    stopped_by_time: bool = False
    steps: int = 0
    wall_time_s: float = 0.0
    val_time_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _IterableStream:
    """Wraps a plain iterable of episodes; it cannot be checkpointed, so resuming from it is refused."""

    def __init__(self, episodes: Iterable[Any]) -> None:
        self._it: Iterator[Any] = iter(episodes)

    def sample(self) -> Any:
        try:
            return next(self._it)
        except StopIteration:
            raise ValueError("the episode iterable ran out before num_episodes steps; pass a sampler") from None


def _as_stream(episodes: Any) -> Any:
    if callable(getattr(episodes, "sample", None)):
        return episodes
    if isinstance(episodes, Iterable):
        return _IterableStream(episodes)
    raise TypeError(
        f"episodes must be a sampler with .sample() or an iterable of episodes, got {type(episodes).__name__}"
    )


Callback = Callable[[int, dict[str, float]], None]


def _device_type(module: nn.Module) -> str:
    """``"cpu"``/``"cuda"``/... of the module's first parameter (``"cpu"`` for a module without parameters)."""
    return next((p.device.type for p in module.parameters()), "cpu")


PRECISIONS = ("fp32", "bf16")


def autocast_dtype(precision: str, name: str = "precision") -> torch.dtype | None:
    """The ``torch.autocast`` dtype of a ``precision`` setting: ``"bf16"`` -> ``torch.bfloat16``, ``"fp32"`` ->
    None (no autocast). The one place the project maps its precision names to dtypes."""
    if precision not in PRECISIONS:
        raise ValueError(f"{name}={precision!r} is not supported; allowed: {', '.join(PRECISIONS)}")
    return torch.bfloat16 if precision == "bf16" else None


def fit(
    learner: nn.Module,
    episodes: Any,
    *,
    num_episodes: int = 1000,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    scheduler: Any | None = None,
    lr_decay_every: int | None = None,
    lr_decay: float = 0.5,
    lr_schedule: str = "step",
    autocast: torch.dtype | None = None,
    val_episodes: Sequence[Any] | None = None,
    val_mode: str | None = None,
    restore_best: bool = True,
    eval_every: int = 500,
    patience: int | None = None,
    max_time_s: float | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    log_every: int = 10,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    step_fn: Callable[[Any], StepOutput] | None = None,
    after_backward: Callable[[], None] | None = None,
    main_process: bool = True,
    keep_cpu_memory: bool = True,
) -> History:
    """Train ``learner`` for ``num_episodes`` steps drawn from ``episodes``.

    Args:
        learner: module with ``training_step(batch) -> StepOutput`` and ``evaluate(episodes) -> Accuracy``.
        episodes: a sampler (anything with ``sample()``; with ``state_dict()`` it is resumable) or an iterable.
        num_episodes: number of optimisation steps (one episode or meta-batch each).
        optimizer: defaults to Adam(lr, weight_decay) over the learner's parameters.
        scheduler: an LR scheduler stepped once per step; by default ``StepLR(lr_decay_every, lr_decay)`` if
            ``lr_decay_every`` is set (ProtoNet halves the rate every 2,000 episodes).
        lr_schedule: ``"step"`` (the ``lr_decay_every``/``lr_decay`` rule above) or ``"cosine"``: the rate follows
            ``lr * (1 + cos(pi * t / num_episodes)) / 2`` down to 0 at the last step (Loshchilov & Hutter 2017,
            no restarts); ignored when ``scheduler`` is given.
        autocast: run each training step's forward under ``torch.autocast`` with this dtype (``torch.bfloat16``:
            mixed precision; on CPUs with AMX/AVX512-BF16 the convolutions run ~1.5-2x faster, on CPUs without
            native bfloat16 (AVX2 only) several times slower: 7x measured); weights, optimizer state and gradients stay
            float32. ``None``: full float32. Validation always runs in float32.
        val_episodes: fixed validation episodes, evaluated every ``eval_every`` steps and at the end.
        val_mode: ``"max"`` (higher is better) or ``"min"`` (lower is better) for the figure ``evaluate`` returns;
            ``None`` infers it: ``"max"`` for an ``Accuracy``, ``"min"`` for a ``MeanSquaredError`` (any other
            type is a ``TypeError`` asking for ``val_mode``). A non-finite figure never counts as an improvement.
        restore_best: with ``val_episodes``, keep a copy of the best-validation weights in memory (and in
            ``last.pt``, so resuming keeps it) and load them into ``learner`` when training ends (normally, early
            or by time), with or without ``run_dir``; ``last.pt`` still holds the last weights. ``False``: the
            learner ends with the last weights (the best ones are then only in ``best.pt``, given ``run_dir``).
            State entries named in the learner's ``progress_state`` (training counters) are not rewound.
        patience: stop after this many validations without improvement (``None``: never).
        max_time_s: stop (with a validation and a checkpoint) after the step that passes this much training
            wall time, counted over all sessions of a resumed run (``None``: no limit).
        run_dir: where ``metrics.jsonl`` and ``checkpoints/{last,best}.pt`` go (``None``: nothing is written).
            A run that does not continue from a checkpoint starts ``run_dir`` afresh: an old ``metrics.jsonl``,
            ``last.pt`` and ``best.pt`` are removed.
        checkpoint_every: steps between resumable checkpoints (also written at the end).
        resume: continue from ``run_dir/checkpoints/last.pt`` if it exists (else start afresh, as above); the
            metrics log is cut back to the checkpoint's step.
        progress: tqdm bar with live loss/accuracy (only when stderr is a terminal).
        callbacks: ``fn(step, record)`` called after each step (``step`` counts from 1).
        step_fn: replaces ``learner.training_step`` (e.g. a meta-step over a meta-batch).
        after_backward: called between ``backward()`` and ``optimizer.step()`` (e.g. all-reducing gradients).
        main_process: whether this process writes ``run_dir`` (in data-parallel runs only rank 0 does; the
            others still read checkpoints to resume).
        keep_cpu_memory: for a learner on the CPU, keep freed memory mapped in the process while the loop runs
            (glibc only; :func:`meta_learning.training.memory.retain_cpu_memory`): the steps' large activations
            are then allocated from memory already faulted in instead of fresh pages; given back at the end.
            ``False`` leaves ``malloc`` alone.

    Returns:
        The :class:`History`. With ``val_episodes`` the best weights are in ``run_dir/checkpoints/best.pt`` and,
        with ``restore_best``, in ``learner``.
    """
    check_positive_int("num_episodes", num_episodes)
    check_positive_int("eval_every", eval_every)
    check_positive_int("checkpoint_every", checkpoint_every)
    check_positive_int("log_every", log_every)
    if patience is not None:
        check_positive_int("patience", patience)
    if max_time_s is not None:
        check_positive_float("max_time_s", max_time_s)
    if resume and run_dir is None:
        raise ValueError("resume=True needs run_dir: the checkpoint to resume from lives there")
    for flag, value in (("restore_best", restore_best), ("keep_cpu_memory", keep_cpu_memory)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be a bool, got {type(value).__name__} ({value!r})")
    if val_mode not in (None, "max", "min"):
        raise ValueError(f"val_mode={val_mode!r} is not supported; use 'max', 'min' or None (inferred)")
    stream = _as_stream(episodes)
    train_step: Callable[[Any], StepOutput] = step_fn or learner.training_step  # type: ignore[assignment]
    if optimizer is None:
        check_positive_float("lr", lr)
        optimizer = torch.optim.Adam(learner.parameters(), lr=lr, weight_decay=weight_decay)
    if autocast not in (None, torch.bfloat16, torch.float16):
        raise ValueError(f"autocast must be None, torch.bfloat16 or torch.float16, got {autocast!r}")
    autocast_device = _device_type(learner)
    if lr_schedule not in ("step", "cosine"):
        raise ValueError(f"lr_schedule must be 'step' or 'cosine', got {lr_schedule!r}")
    if scheduler is None and lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=num_episodes)
    elif scheduler is None and lr_decay_every is not None:
        check_positive_int("lr_decay_every", lr_decay_every)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_decay_every, gamma=lr_decay)

    run = Path(run_dir) if run_dir is not None else None
    ckpt_dir = run / "checkpoints" if run is not None else None
    history = History()
    start = 0
    evals_since_best = 0
    best_state: dict[str, Any] | None = None  # the best-validation weights, kept when restore_best
    running = [0.0, 0.0, 0]  # loss sum, accuracy sum, steps since the last log line
    if run is not None and ckpt_dir is not None:
        if main_process:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
        last = ckpt_dir / "last.pt"
        if resume and last.exists():
            state = load_checkpoint(last)
            learner.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state.get("scheduler") is not None:
                scheduler.load_state_dict(state["scheduler"])
            if state.get("stream") is not None:
                if not callable(getattr(stream, "load_state_dict", None)):
                    raise ValueError("the checkpoint holds a sampler state but episodes cannot load it")
                stream.load_state_dict(state["stream"])
            torch.set_rng_state(state["torch_rng"])
            start = int(state["step"])
            history = History(**json.loads(state["history"]))
            evals_since_best = int(state["evals_since_best"])
            running = list(state["running"])
            if restore_best:
                best_state = _resumed_best(state, ckpt_dir / "best.pt", history.best_step)
            if main_process:
                _truncate_jsonl(run / "metrics.jsonl", start)
        elif main_process:  # a fresh start: nothing of an earlier run in this folder may mix with this one
            for stale in (run / "metrics.jsonl", last, ckpt_dir / "best.pt"):
                stale.unlink(missing_ok=True)
    if resume and start > 0 and not callable(getattr(stream, "state_dict", None)):
        raise ValueError("cannot resume from a plain iterable of episodes; pass a sampler with state_dict()")

    def checkpoint(step: int) -> None:
        if ckpt_dir is None or not main_process:
            return
        history.steps = step
        save_checkpoint(
            ckpt_dir / "last.pt",
            {
                "step": step,
                "model": learner.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "stream": stream.state_dict() if callable(getattr(stream, "state_dict", None)) else None,
                "torch_rng": torch.get_rng_state(),
                "history": json.dumps(history.to_dict()),
                "evals_since_best": evals_since_best,
                "running": running,
                "best_model": best_state,
            },
        )

    bar = _progress_bar(progress and main_process, total=num_episodes, initial=start)
    t0 = time.perf_counter() - history.wall_time_s
    learner.train()
    keep_memory = keep_cpu_memory and autocast_device == "cpu"
    with retain_cpu_memory() if keep_memory else contextlib.nullcontext():
        for step in range(start + 1, num_episodes + 1):
            batch = stream.sample()
            optimizer.zero_grad(set_to_none=True)
            if autocast is None:
                out = train_step(batch)
            else:
                with torch.autocast(autocast_device, dtype=autocast):
                    out = train_step(batch)
            if not torch.isfinite(out.loss):
                raise FloatingPointError(f"loss became {out.loss.item()} at step {step}; lower lr or check the data")
            if not out.backward_done:
                out.loss.backward()
            if after_backward is not None:
                after_backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            loss_value = float(out.loss.detach())
            running = [running[0] + loss_value, running[1] + out.accuracy, int(running[2]) + 1]
            record = {"step": step, "loss": loss_value, "accuracy": out.accuracy}
            if step % log_every == 0 or step == num_episodes:
                entry = {
                    "step": step,
                    "loss": running[0] / running[2],
                    "accuracy": running[1] / running[2],
                    "lr": optimizer.param_groups[0]["lr"],
                    "time_s": time.perf_counter() - t0,
                }
                history.train.append(entry)
                _append_jsonl(run if main_process else None, {"kind": "train", **entry})
                if bar is not None:
                    bar.set_postfix(loss=f"{entry['loss']:.3f}", acc=f"{entry['accuracy']:.3f}")
                running = [0.0, 0.0, 0]
            out_of_time = max_time_s is not None and time.perf_counter() - t0 >= max_time_s
            stop = False
            if out_of_time:
                history.stopped_by_time = stop = True
            if val_episodes is not None and (step % eval_every == 0 or step == num_episodes or out_of_time):
                val_start = time.perf_counter()
                acc = learner.evaluate(val_episodes)  # type: ignore[operator]
                history.val_time_s += time.perf_counter() - val_start
                higher_is_better = _higher_is_better(acc, val_mode)
                val = {"step": step, "accuracy": acc.mean, "ci95": acc.ci95, "time_s": time.perf_counter() - t0}
                history.val.append(val)
                _append_jsonl(run if main_process else None, {"kind": "val", **val})
                if _improves(float(acc.mean), history.best_val_accuracy, higher_is_better):
                    history.best_val_accuracy, history.best_step = acc.mean, step
                    evals_since_best = 0
                    if restore_best:
                        best_state = copy.deepcopy(learner.state_dict())
                    if ckpt_dir is not None and main_process:
                        save_checkpoint(ckpt_dir / "best.pt", {"step": step, "model": learner.state_dict()})
                else:
                    evals_since_best += 1
                if bar is not None:
                    bar.set_description(f"val {100 * acc.mean:.2f}%" if higher_is_better else f"val {acc.mean:.4g}")
                if patience is not None and evals_since_best >= patience:
                    history.stopped_early = stop = True
            history.steps = step
            history.wall_time_s = time.perf_counter() - t0
            if step % checkpoint_every == 0 or step == num_episodes or stop:
                checkpoint(step)
            if bar is not None:
                bar.update(1)
            for cb in callbacks:
                cb(step, record)
            if stop:
                break
    if bar is not None:
        bar.close()
    if best_state is not None:
        # entries a learner names in ``progress_state`` (e.g. MAML's meta-iteration count, which drives its
        # annealing schedules) count training progress, not a model: they keep their current value
        current = learner.state_dict()
        keep = set(getattr(learner, "progress_state", ())) & current.keys()
        learner.load_state_dict({k: current[k] if k in keep else v for k, v in best_state.items()})
    return history


def _higher_is_better(result: Any, val_mode: str | None) -> bool:
    """Whether a larger ``result.mean`` is a better validation figure (see ``fit``'s ``val_mode``)."""
    if val_mode is not None:
        return val_mode == "max"
    if isinstance(result, MeanSquaredError):
        return False
    if isinstance(result, Accuracy):
        return True
    raise TypeError(
        f"evaluate returned a {type(result).__name__}, so whether a higher or lower validation figure is better is "
        "unknown; pass val_mode='max' (higher is better) or val_mode='min' (lower is better)"
    )


def _improves(value: float, best: float | None, higher_is_better: bool) -> bool:
    """Whether ``value`` beats ``best`` (``None``: no finite figure yet); a non-finite value never does."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if higher_is_better else value < best


def _resumed_best(state: dict[str, Any], best_path: Path, best_step: int | None) -> dict[str, Any] | None:
    """The best-validation weights of a resumed run: from ``last.pt``, or from ``best.pt`` for a checkpoint that
    predates that entry (only when ``best.pt`` holds the step the history names)."""
    if "best_model" in state or best_step is None:
        return state.get("best_model")
    best = load_checkpoint(best_path) if best_path.is_file() else None
    if best is None or int(best["step"]) != best_step:
        found = "is missing" if best is None else f"holds step {int(best['step'])}"
        raise ValueError(
            f"the checkpoint's history names best step {best_step} but {best_path} {found}; the best weights cannot "
            "be restored: resume with restore_best=False or start the run again"
        )
    return dict(best["model"])


def _progress_bar(enabled: bool, total: int, initial: int) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, dynamic_ncols=True, unit="ep")


def _append_jsonl(run: Path | None, record: dict[str, Any]) -> None:
    if run is None:
        return
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_jsonl(path: Path, last_step: int) -> None:
    """Drop records written after the checkpoint at ``last_step`` (they are recomputed on resume)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by the kill
        if rec.get("step", math.inf) <= last_step:
            kept.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in kept))
