"""The strategy base class: one training loop per task that every continual-learning strategy shares.

A strategy wraps a model and trains it *in place*, one task at a time (``learn_task``). Strategies differ only
through a few hooks, called in this order for each task:

``consolidate`` (earlier tasks handed in through ``previous_tasks`` that this object did not learn) ->
``before_task`` -> per step: ``training_loss`` (cross-entropy plus ``penalty()``) -> ``backward`` ->
``after_backward`` (e.g. A-GEM's projection) -> ``optimizer.step`` -> ``after_step`` (e.g. SI's path integral)
-> ``after_task`` (e.g. EWC's Fisher, the replay memory).

Heads and output units. A :class:`~meta_learning.continual.models.TaskAwareModule` (e.g. a
:class:`~meta_learning.continual.models.MultiHeadClassifier`) is called as ``model(x, task_id)``: task-incremental
learning. Any other module is single-headed (domain- and class-incremental learning); with
``mask_unseen_classes=True`` (default) the output units of classes not seen yet are excluded from the softmax, in
training and prediction, as in van de Ven & Tolias (2019)'s "active units"; set it to ``False`` to train every
unit from the start, as Avalanche does.

Each task gets a fresh optimizer (Adam by default, as in van de Ven & Tolias 2019 and Avalanche's default reset),
so the state that carries from task to task is the model plus each strategy's own buffers, all in
:meth:`Strategy.state_dict`.
"""

from __future__ import annotations

import copy
import hashlib
import math
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meta_learning._checks import check_choice, check_non_negative_int, check_positive_float, check_positive_int
from meta_learning._modes import eval_mode
from meta_learning.continual.models import TaskAwareModule
from meta_learning.data.streams import Experience
from meta_learning.training.loop import PRECISIONS, autocast_dtype

OPTIMIZERS = ("adam", "sgd")
TaskIds = int | Tensor  # one task id for the whole batch, or ``[B]`` per-example task ids


@dataclass(frozen=True)
class TrainConfig:
    """How each task is trained.

    The defaults fit an MNIST-sized task (a few thousand 28x28 images, an MLP of a few hundred units): Adam with
    lr 1e-3 and betas (0.9, 0.999), mini-batches of 128, 5 epochs (van de Ven & Tolias 2019 use Adam 1e-3, batch
    128 and 2,000 iterations per Split MNIST task, which is ~20 epochs of 12k images).

    Attributes:
        epochs: passes over the task's data (ignored when ``iterations`` is set).
        iterations: optimizer steps per task; overrides ``epochs`` when given.
        batch_size: examples per step (the last batch of an epoch may be smaller).
        lr: learning rate.
        optimizer: ``"adam"`` or ``"sgd"``.
        momentum: SGD momentum.
        weight_decay: L2 weight decay of the optimizer.
        eval_batch_size: examples per forward pass in ``predict``.
        precision: ``"fp32"``, or ``"bf16"``: each training step's forward and backward under
            ``torch.autocast(bfloat16)`` (mixed precision: matrix products in bf16, weights, optimizer state and
            the strategies' penalties in fp32). Fast on CPUs with AMX/AVX512-BF16 and on GPUs; several times
            slower on CPUs without native bf16 (benchmarks/RESULTS.md). Prediction stays fp32.
    """

    epochs: int = 5
    iterations: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.0
    weight_decay: float = 0.0
    eval_batch_size: int = 1024
    precision: str = "fp32"

    def __post_init__(self) -> None:
        check_positive_int("epochs", self.epochs)
        if self.iterations is not None:
            check_positive_int("iterations", self.iterations)
        check_positive_int("batch_size", self.batch_size)
        check_positive_float("lr", self.lr)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum={self.momentum} but it must be in [0, 1)")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay} but it must be >= 0")
        check_positive_int("eval_batch_size", self.eval_batch_size)
        check_choice("precision", self.precision, PRECISIONS)


@dataclass(frozen=True)
class TaskLog:
    """What training one task did: steps, the mean loss over all steps and over the last tenth, wall time."""

    task_id: int
    examples: int
    steps: int
    mean_loss: float
    final_loss: float
    wall_time_s: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class StreamEvaluation:
    """Test accuracy on each experience (fractions in [0, 1]), in stream order.

    ``untrained_heads``: the task ids a multi-head model had no head for yet, evaluated on a fresh, untrained one
    (see :meth:`Strategy.evaluate`); empty for single-head models.
    """

    accuracies: tuple[float, ...]
    task_ids: tuple[int | None, ...]
    examples: tuple[int, ...]
    untrained_heads: tuple[int, ...] = ()

    @property
    def mean(self) -> float:
        """Unweighted mean over experiences (the "average accuracy" of the continual-learning literature)."""
        return sum(self.accuracies) / len(self.accuracies)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": self.mean}


def fingerprint(data: Tensor, labels: Tensor) -> str:
    """A cheap content key for a task's tensors: shapes, dtypes, exact sums and a strided sample of the values."""
    h = hashlib.blake2b(digest_size=16)
    for t in (data, labels):
        flat = t.detach().reshape(-1)
        stride = max(1, flat.numel() // 65536)
        h.update(f"{tuple(t.shape)}|{t.dtype}|{float(flat.double().sum())!r}|".encode())
        h.update(flat[::stride].contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def _check_task_tensors(name: str, data: Any, labels: Any) -> tuple[Tensor, Tensor]:
    if not isinstance(data, Tensor) or data.dim() < 2 or not data.is_floating_point():
        raise TypeError(f"{name} data must be a float tensor [N, ...], got {type(data).__name__}")
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} labels must be an int64 tensor [N], got {getattr(labels, 'dtype', type(labels))}")
    if labels.shape[0] != data.shape[0] or data.shape[0] == 0:
        raise ValueError(f"{name} has {data.shape[0]} examples but {labels.shape[0]} labels; need N >= 1 of each")
    if int(labels.min()) < 0:
        raise ValueError(f"{name} labels must be >= 0, got min {int(labels.min())}")
    return data, labels.long()


def make_optimizer(params: Iterable[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``config`` names over ``params``.

    Adam runs torch's fused kernel where it can (floating-point parameters on a CPU or CUDA device): one pass over
    the parameters per step instead of about ten element-wise ones. The update is Adam's, up to float rounding; on
    the 784-400-400-10 MLP of the continual benchmarks the for-each Adam step was half of all training time on one
    CPU thread, and the fused one made a Split MNIST experience ~1.6x faster (benchmarks/RESULTS.md).
    """
    params = list(params)
    if not params:
        raise ValueError("the model has no trainable parameters for this task")
    if config.optimizer == "adam":
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
        return torch.optim.Adam(
            params, lr=config.lr, betas=(0.9, 0.999), weight_decay=config.weight_decay, fused=fused or None
        )
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


class Strategy:
    """Base class of continual-learning strategies (plain fine-tuning when used as is; see :class:`Naive`).

    Args:
        model: the network, trained in place. A ``TaskAwareModule`` is multi-headed (task-incremental).
        config: the per-task training budget and optimizer (:class:`TrainConfig`).
        seed: seeds the strategy's ``torch.Generator`` (mini-batch order, memory sampling, Fisher samples).
        device: where the model and data go (default: the model's device).
        mask_unseen_classes: exclude output units of classes not seen yet from the softmax (single-head models).
        progress: show a tqdm bar with the live loss for each task (only when stderr is a terminal; False: never).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        config: TrainConfig | None = None,
        seed: int = 0,
        device: str | torch.device | None = None,
        mask_unseen_classes: bool = True,
        progress: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if config is not None and not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.model = model
        self.config = config or TrainConfig()
        self.seed = check_non_negative_int("seed", seed)
        self.generator = torch.Generator().manual_seed(seed)
        first = next(model.parameters(), None)
        self.device = torch.device(device) if device is not None else (first.device if first is not None else None)
        if self.device is not None:
            self.model.to(self.device)
        self.mask_unseen_classes = bool(mask_unseen_classes)
        self.progress = bool(progress)
        self.task_ids: list[int] = []  # every task learned or consolidated, in order
        self.seen_classes: list[int] = []
        self.previous_classes: list[int] = []  # classes seen before the task being learned (single-head models)
        self.num_outputs: int | None = None  # width of a single-head model's output
        self._fingerprints: list[str] = []
        self.logs: list[TaskLog] = []

    # -- public API ------------------------------------------------------------------------------------------------

    @property
    def multi_head(self) -> bool:
        return isinstance(self.model, TaskAwareModule)

    def learn_task(
        self,
        data: Tensor,
        labels: Tensor,
        previous_tasks: Sequence[tuple[Tensor, Tensor] | tuple[Tensor, Tensor, int]] | None = None,
        task_id: int | None = None,
        *,
        epochs: int | None = None,
        iterations: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
    ) -> TaskLog:
        """Train the model on one task, protecting what earlier tasks learned (as the strategy defines).

        Args:
            data: ``[N, ...]`` float inputs of the task.
            labels: ``[N]`` int64 labels (local to the task for multi-head models, output units otherwise).
            previous_tasks: earlier tasks as ``(data, labels)`` or ``(data, labels, task_id)``. Tasks this object
                already learned (recognised by content) are skipped; others are consolidated before training
                (EWC computes their Fisher, replay stores them, ...; see each strategy).
            task_id: the task's id (default: the next unused id). Multi-head models pick their head with it.
            epochs, iterations, batch_size, lr: override the strategy's :class:`TrainConfig` for this task.

        Returns:
            A :class:`TaskLog`.
        """
        data, labels = _check_task_tensors("task", data, labels)
        config = self._config_for(epochs, iterations, batch_size, lr)
        for i, prev in enumerate(previous_tasks or ()):
            px, py, ptid = self._unpack_previous(i, prev)
            key = fingerprint(px, py)
            if key in self._fingerprints:
                continue
            ptid = self._resolve_task_id(ptid)
            self._register_task(px, py, ptid)
            self.consolidate(px.to(self.device), py.to(self.device), ptid)
            self._fingerprints.append(key)
        tid = self._resolve_task_id(task_id)
        key = fingerprint(data, labels)
        x, y = data.to(self.device), labels.to(self.device)
        self.previous_classes = list(self.seen_classes)
        self._register_task(x, y, tid)
        self.before_task(x, y, tid)
        x, y, t = self.training_data(x, y, tid)
        log = self._train(x, y, t, tid, config)
        self.after_task(data.to(self.device), labels.to(self.device), tid)
        self._fingerprints.append(key)
        self.logs.append(log)
        return log

    @torch.no_grad()
    def predict(self, x: Tensor, task_id: int | None = None) -> Tensor:
        """Logits ``[N, C]`` for inputs ``x [N, ...]`` (eval mode; unseen classes at ``-inf`` when masked).

        ``task_id`` is required by multi-head models and ignored by single-head ones.
        """
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a float tensor [N, ...], got {type(x).__name__}")
        if self.multi_head:
            if task_id is None:
                raise ValueError("this model is multi-headed (task-incremental): pass task_id to predict")
            if task_id not in self.model.known_tasks():  # type: ignore[operator]
                raise ValueError(f"task_id={task_id} is unknown; known tasks: {self.model.known_tasks()}")  # type: ignore[operator]
        with eval_mode(self.model):
            outs = [
                self.logits(chunk.to(self.device), task_id if task_id is not None else 0)
                for chunk in x.split(self.config.eval_batch_size)
            ]
        return torch.cat(outs)

    def evaluate(self, stream: Iterable[Any]) -> StreamEvaluation:
        """Test accuracy on each experience of ``stream``.

        ``stream`` is a :class:`~meta_learning.data.streams.Stream` (each experience's test set; task ids are given
        to multi-head models only) or a sequence of ``(x, y)`` / ``(x, y, task_id)`` tuples.

        A multi-head model has no head yet for the tasks it has not trained on (mid-stream); those are evaluated on
        a deep copy of the model that adds them (the live model does not grow), and listed in the result's
        ``untrained_heads``. Heads and columns are seeded by their task id, so the copy's new head is the one the
        task will start from: its accuracy is the untrained head's (about chance), as for the masked classes of a
        single-head model.
        """
        items = list(stream)
        if not items:
            raise ValueError("stream is empty; nothing to evaluate")
        tids = [self._evaluation_task_id(i, item) for i, item in enumerate(items)]
        probe, untrained = self._with_heads_for(tids)
        accs, counts = [], []
        for i, (item, tid) in enumerate(zip(items, tids, strict=True)):
            x, y = item.test.tensors() if isinstance(item, Experience) else (item[0], item[1])
            _check_task_tensors(f"stream[{i}]", x, y)
            pred = probe.predict(x, tid).argmax(dim=1).cpu()
            accs.append(float((pred == y.cpu()).float().mean()))
            counts.append(int(y.shape[0]))
        return StreamEvaluation(tuple(accs), tuple(tids), tuple(counts), untrained)

    # -- hooks for subclasses ----------------------------------------------------------------------------------------

    def consolidate(self, data: Tensor, labels: Tensor, task_id: int) -> None:
        """Protect an earlier task this object did not learn (``previous_tasks``); the base class does nothing."""

    def before_task(self, data: Tensor, labels: Tensor, task_id: int) -> None:
        """Called once before training on a task (after the model grew for it)."""

    def training_data(self, data: Tensor, labels: Tensor, task_id: int) -> tuple[Tensor, Tensor, TaskIds]:
        """The examples the task's loop draws mini-batches from (Joint returns all tasks so far)."""
        return data, labels, task_id

    def training_loss(self, x: Tensor, y: Tensor, task_ids: TaskIds) -> Tensor:
        """Loss of one mini-batch: cross-entropy plus :meth:`penalty` (if any)."""
        loss = F.cross_entropy(self.logits(x, task_ids), y)
        pen = self.penalty()
        return loss if pen is None else loss + pen

    def penalty(self) -> Tensor | None:
        """A regulariser added to every mini-batch loss (EWC, SI); ``None`` for none."""
        return None

    def after_backward(self, x: Tensor, y: Tensor, task_ids: TaskIds) -> None:
        """Called between ``backward()`` and ``optimizer.step()``."""

    def after_step(self) -> None:
        """Called after each ``optimizer.step()``."""

    def after_task(self, data: Tensor, labels: Tensor, task_id: int) -> None:
        """Called once after training on a task, with the task's own data."""

    def extra_state(self) -> dict[str, Any]:
        """Strategy-specific state for checkpoints (tensors and plain containers only)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state`."""

    # -- helpers shared by the strategies ----------------------------------------------------------------------------

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters that receive gradients, by name."""
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def logits(self, x: Tensor, task_ids: TaskIds) -> Tensor:
        """Model outputs for a batch: per-task heads for multi-head models, masked units for single-head ones."""
        if self.multi_head:
            if isinstance(task_ids, Tensor):
                return self.model.forward_tasks(x, task_ids)  # type: ignore[operator]
            return self.model(x, task_ids)
        out = self.model(x)
        mask = self.active_mask()
        return out if mask is None else out.masked_fill(~mask, float("-inf"))

    def active_mask(self) -> Tensor | None:
        """``[C]`` bool mask of the output units in play (``None`` when all are, or for multi-head models)."""
        if self.multi_head or not self.mask_unseen_classes or self.num_outputs is None:
            return None
        if len(self.seen_classes) == self.num_outputs:
            return None
        mask = torch.zeros(self.num_outputs, dtype=torch.bool, device=self.device)
        mask[self.seen_classes] = True
        return mask

    # -- checkpoints ------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the stream: model, generator, bookkeeping and the strategy's buffers."""
        tasks = self.model.known_tasks() if self.multi_head else []  # type: ignore[operator]
        return {
            "model_tasks": list(tasks),
            "model": self.model.state_dict(),
            "generator": self.generator.get_state(),
            "task_ids": list(self.task_ids),
            "seen_classes": list(self.seen_classes),
            "num_outputs": self.num_outputs,
            "fingerprints": list(self._fingerprints),
            "logs": [log.to_dict() for log in self.logs],
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` into a strategy built like the one that saved it."""
        for t in state["model_tasks"]:
            self.model.prepare_task(int(t))  # type: ignore[operator]
        self.model.load_state_dict(state["model"])
        self.generator.set_state(state["generator"])
        self.task_ids = [int(t) for t in state["task_ids"]]
        self.seen_classes = [int(c) for c in state["seen_classes"]]
        self.num_outputs = None if state["num_outputs"] is None else int(state["num_outputs"])
        self._fingerprints = [str(f) for f in state["fingerprints"]]
        self.logs = [TaskLog(**log) for log in state["logs"]]
        self.load_extra_state(state["extra"])

    # -- internals --------------------------------------------------------------------------------------------------

    def _config_for(
        self, epochs: int | None, iterations: int | None, batch_size: int | None, lr: float | None
    ) -> TrainConfig:
        changes: dict[str, Any] = {}
        if epochs is not None:
            changes["epochs"], changes["iterations"] = epochs, None
        if iterations is not None:
            changes["iterations"] = iterations
        if batch_size is not None:
            changes["batch_size"] = batch_size
        if lr is not None:
            changes["lr"] = lr
        return replace(self.config, **changes) if changes else self.config

    def _unpack_previous(self, i: int, item: Any) -> tuple[Tensor, Tensor, int | None]:
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise TypeError(f"previous task {i} must be (data, labels) or (data, labels, task_id), got {type(item)}")
        x, y = _check_task_tensors(f"previous task {i}", item[0], item[1])
        tid = item[2] if len(item) == 3 else None
        if tid is not None:
            check_non_negative_int(f"previous task {i} task_id", tid)
        elif self.multi_head:
            raise ValueError(f"previous task {i} needs a task id for a multi-head model: pass (data, labels, task_id)")
        return x, y, tid

    def _evaluation_task_id(self, i: int, item: Any) -> int | None:
        if isinstance(item, Experience):
            return item.task_id if self.multi_head else None
        return self._unpack_previous(i, item)[2]

    def _with_heads_for(self, task_ids: Sequence[int | None]) -> tuple[Strategy, tuple[int, ...]]:
        """``(strategy, missing)``: this strategy when its model knows every task in ``task_ids``; else a shallow
        copy whose model is a deep copy grown (``prepare_task``) for the ``missing`` ones, so nothing live changes."""
        if not self.multi_head:
            return self, ()
        known = set(self.model.known_tasks())  # type: ignore[operator]
        missing = tuple(sorted({t for t in task_ids if t is not None and t not in known}))
        if not missing:
            return self, ()
        probe = copy.copy(self)
        probe.model = copy.deepcopy(self.model)
        for t in missing:
            probe.model.prepare_task(t)  # type: ignore[operator]
        return probe, missing

    def _resolve_task_id(self, task_id: int | None) -> int:
        if task_id is None:
            return max(self.task_ids, default=-1) + 1
        return check_non_negative_int("task_id", task_id)

    def _register_task(self, data: Tensor, labels: Tensor, task_id: int) -> None:
        """Grow the model for the task, check the labels fit its outputs, record the task and its classes."""
        if self.multi_head:
            self.model.prepare_task(task_id)  # type: ignore[operator]
        self.model.to(self.device)
        with torch.no_grad(), eval_mode(self.model):
            probe = self.model(data[:1], task_id) if self.multi_head else self.model(data[:1])
        if probe.dim() != 2:
            raise ValueError(f"the model must return logits [B, C], got shape {tuple(probe.shape)}")
        width = probe.shape[1]
        if int(labels.max()) >= width:
            raise ValueError(f"labels go up to {int(labels.max())} but the model has {width} output units")
        if not self.multi_head:
            if self.num_outputs is not None and self.num_outputs != width:
                raise ValueError(f"the model's output width changed from {self.num_outputs} to {width}")
            self.num_outputs = width
            self.seen_classes = sorted(set(self.seen_classes) | set(torch.unique(labels).tolist()))
        if task_id not in self.task_ids:
            self.task_ids.append(task_id)

    def _train(self, x: Tensor, y: Tensor, t: TaskIds, task_id: int, config: TrainConfig) -> TaskLog:
        n = x.shape[0]
        bs = min(config.batch_size, n)
        per_epoch = math.ceil(n / bs)
        steps = config.iterations if config.iterations is not None else config.epochs * per_epoch
        optimizer = make_optimizer(self.trainable_parameters().values(), config)
        bar = _progress_bar(self.progress, steps, f"task {task_id}")
        self.model.train()
        start = time.perf_counter()
        total = torch.zeros((), dtype=torch.float64)
        tail = torch.zeros((), dtype=torch.float64)
        tail_from = steps - max(1, steps // 10)
        order = torch.empty(0, dtype=torch.long)
        pos = 0
        device_type = x.device.type
        amp_dtype = autocast_dtype(config.precision)
        for step in range(steps):
            if pos >= order.numel():
                order, pos = torch.randperm(n, generator=self.generator).to(x.device), 0
            idx = order[pos : pos + bs]
            pos += bs
            xb, yb = x[idx], y[idx]
            tb = t[idx] if isinstance(t, Tensor) else t
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = self.training_loss(xb, yb, tb)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {float(loss)} at step {step} of task {task_id}; lower lr")
            loss.backward()
            self.after_backward(xb, yb, tb)
            optimizer.step()
            self.after_step()
            value = loss.detach().double().cpu()
            total += value
            if step >= tail_from:
                tail += value
            if bar is not None:
                bar.update(1)
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{float(value):.4f}")
        if bar is not None:
            bar.close()
        return TaskLog(
            task_id=task_id,
            examples=n,
            steps=steps,
            mean_loss=float(total) / steps,
            final_loss=float(tail) / (steps - tail_from),
            wall_time_s=time.perf_counter() - start,
        )


def _progress_bar(enabled: bool, total: int, desc: str) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)
