"""Supervised training of candidate networks: data normalisation, a seeded SGD loop, accuracy.

Used by the training evaluator (short runs with curve-based early stopping), by DARTS' retraining of the found
cell, and by the benchmarks. The loop is plain SGD with momentum, Nesterov off, cosine annealing over the planned
epochs and gradient-norm clipping — the recipe of the NAS-Bench-201 and DARTS training pipelines.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meta_learning._checks import check_finite_non_negative, check_positive_float, check_positive_int
from meta_learning._modes import eval_mode

Data = Any  # (x, y) tensors, a TensorLabelledDataset (gather + labels), or a map-style dataset of (x, y)


def as_tensors(data: Data, name: str = "data") -> tuple[Tensor, Tensor]:
    """``(x float [N, ...], y int64 [N])`` from a pair of tensors, a tensor-backed dataset or a map-style dataset."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data
    elif hasattr(data, "gather") and hasattr(data, "labels"):
        x, y = data.gather(torch.arange(len(data))), torch.as_tensor(data.labels)
    elif hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, (str, bytes, Tensor)):
        if len(data) == 0:
            raise ValueError(f"{name} is empty")
        items = [data[i] for i in range(len(data))]
        if not all(isinstance(it, (tuple, list)) and len(it) == 2 for it in items):
            raise TypeError(f"{name} must yield (x, y) pairs")
        x = torch.stack([torch.as_tensor(it[0]) for it in items])
        y = torch.as_tensor([int(it[1]) for it in items])
    else:
        raise TypeError(f"{name} must be an (x, y) pair of tensors or a dataset of (x, y) pairs, got "
                        f"{type(data).__name__}")  # fmt: skip
    y = torch.as_tensor(y)
    if y.dim() != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"{name}: x has shape {tuple(x.shape)} and y {tuple(y.shape)}; need x [N, ...], y [N], N > 0")
    if y.is_floating_point():
        raise TypeError(f"{name}: labels must be integers, got dtype {y.dtype}")
    return (x.float() if not x.is_floating_point() else x), y.long()


def batches(n: int, batch_size: int, generator: torch.Generator, drop_last: bool = False) -> Iterator[Tensor]:
    """Indices of one epoch in a random order, ``batch_size`` at a time."""
    perm = torch.randperm(n, generator=generator)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        yield perm[i : i + batch_size]


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy in ``[0, 1]`` of ``model`` in eval mode (restores its mode)."""
    device = next(model.parameters()).device
    correct = 0
    with eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            logits = model(x[i : i + batch_size].to(device))
            correct += int((logits.argmax(-1).cpu() == y[i : i + batch_size]).sum())
    return correct / x.shape[0]


@dataclass
class TrainResult:
    """Per-epoch curves of one training run (accuracies in ``[0, 1]``)."""

    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    epochs_planned: int = 0
    stopped_early: bool = False
    wall_time_s: float = 0.0

    @property
    def epochs_run(self) -> int:
        return len(self.train_loss)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "epochs_run": self.epochs_run}


def train_classifier(
    model: nn.Module,
    train_data: Data,
    val_data: Data | None = None,
    *,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 0.025,
    momentum: float = 0.9,
    weight_decay: float = 3e-4,
    grad_clip: float | None = 5.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[TrainResult], bool] | None = None,
) -> TrainResult:
    """Train ``model`` with cross-entropy; returns its curves.

    Args:
        model: maps ``x [B, ...]`` to logits ``[B, classes]``; moved to ``device`` and trained in place.
        train_data, val_data: see :func:`as_tensors`; validation accuracy is measured after every epoch.
        epochs: planned epochs (the cosine schedule's length).
        batch_size, lr, momentum, weight_decay, grad_clip: SGD settings (``grad_clip=None``: no clipping).
        seed: seeds the batch order (a torch.Generator; no global RNG is touched).
        on_epoch: called with the result so far after every epoch; returning True stops training early.
    """
    check_positive_int("epochs", epochs)
    check_positive_int("batch_size", batch_size)
    check_positive_float("lr", lr)
    check_finite_non_negative("momentum", momentum)
    check_finite_non_negative("weight_decay", weight_decay)
    if grad_clip is not None:
        check_positive_float("grad_clip", grad_clip)
    x, y = as_tensors(train_data, "train_data")
    val = as_tensors(val_data, "val_data") if val_data is not None else None
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator().manual_seed(seed)
    result = TrainResult(epochs_planned=epochs)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        total, correct, seen = 0.0, 0, 0
        for idx in batches(x.shape[0], batch_size, gen):
            xb, yb = x[idx].to(device), y[idx].to(device)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            total += float(loss.detach()) * idx.numel()
            correct += int((logits.argmax(-1) == yb).sum())
            seen += idx.numel()
        sched.step()
        result.train_loss.append(total / seen)
        result.train_accuracy.append(correct / seen)
        if val is not None:
            result.val_accuracy.append(evaluate_accuracy(model, *val))
        if not math.isfinite(result.train_loss[-1]):
            result.stopped_early = True
            break
        if on_epoch is not None and on_epoch(result) and len(result.train_loss) < epochs:
            result.stopped_early = True
            break
    result.wall_time_s = time.perf_counter() - start
    return result
