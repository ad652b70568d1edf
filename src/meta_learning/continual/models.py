"""Task-aware models: a shared body with one output head per task (task-incremental learning).

A strategy calls a :class:`TaskAwareModule` as ``model(x, task_id)`` and any other module as ``model(x)``; before
training a task it calls ``model.prepare_task(task_id)`` so that the model can grow (a new head, a new column)
before the optimizer is built.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from meta_learning._checks import check_non_negative_int, check_positive_int


class TaskAwareModule(nn.Module):
    """A model whose output depends on the task id; subclasses implement ``forward(x, task_id)``."""

    def prepare_task(self, task_id: int) -> None:
        """Grow the model for ``task_id`` if needed (called before the task's optimizer is built)."""

    def known_tasks(self) -> list[int]:
        """The task ids the model has parts for, in the order they were added (used to rebuild from a checkpoint)."""
        return []

    def forward_heads(self, x: Tensor, task_ids: list[int]) -> list[Tensor]:
        """The outputs of several tasks' heads for the same inputs, ``[model(x, t) for t in task_ids]``."""
        return [self(x, t) for t in task_ids]

    def forward_tasks(self, x: Tensor, task_ids: Tensor) -> Tensor:
        """Outputs for a batch that mixes tasks (``task_ids [B]``): each row goes through its own task's output."""
        out: Tensor | None = None
        for t in torch.unique(task_ids).tolist():
            rows = (task_ids == t).nonzero(as_tuple=True)[0]
            y = self(x[rows], int(t))
            if out is None:
                out = y.new_zeros((x.shape[0], *y.shape[1:]))
            out = out.index_copy(0, rows, y)
        if out is None:
            raise ValueError("forward_tasks got an empty batch")
        return out


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Run module construction/initialisation with the global RNG seeded to ``seed``, restoring its state after.

    Layers initialise themselves from the global RNG; this makes new heads and columns a function of ``seed`` alone
    without touching the caller's random stream.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class MultiHeadClassifier(TaskAwareModule):
    """A shared ``body`` followed by one ``nn.Linear(in_features, num_classes)`` head per task.

    Args:
        body: maps ``x [B, ...]`` to features ``[B, in_features]``.
        in_features: feature size of the body.
        num_classes: outputs of every head (e.g. 2 for task-incremental Split MNIST).
        seed: a head is initialised (PyTorch's default ``nn.Linear`` init) from seed ``seed + task_id``, so its
            initial weights do not depend on when it is added; the global RNG state is left as it was.

    Heads are added by :meth:`prepare_task` (strategies call it before each task). Because the heads are separate
    parameters, a task's loss never moves another task's head (unlike a shared layer with masked outputs, whose
    Adam moments can still move masked rows).

    Example:
        >>> model = MultiHeadClassifier(MLP(784, [400], 400), in_features=400, num_classes=2)
        >>> model.prepare_task(0); model(torch.zeros(3, 784), 0).shape
        torch.Size([3, 2])
    """

    def __init__(self, body: nn.Module, in_features: int, num_classes: int, *, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(body, nn.Module):
            raise TypeError(f"body must be an nn.Module, got {type(body).__name__}")
        self.body = body
        self.in_features = check_positive_int("in_features", in_features)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.seed = check_non_negative_int("seed", seed)
        self.heads = nn.ModuleDict()

    def prepare_task(self, task_id: int) -> None:
        check_non_negative_int("task_id", task_id)
        key = str(task_id)
        if key not in self.heads:
            with seeded_init(self.seed + task_id):
                head = nn.Linear(self.in_features, self.num_classes)
            ref = next(self.body.parameters(), None)
            if ref is not None:
                head = head.to(device=ref.device, dtype=ref.dtype)
            self.heads[key] = head

    def known_tasks(self) -> list[int]:
        return [int(k) for k in self.heads]

    def forward(self, x: Tensor, task_id: int) -> Tensor:
        return self._head(task_id)(self.body(x))

    def forward_heads(self, x: Tensor, task_ids: list[int]) -> list[Tensor]:
        """Several heads on one pass of the shared body."""
        feats = self.body(x)
        return [self._head(t)(feats) for t in task_ids]

    def _head(self, task_id: int) -> nn.Module:
        key = str(task_id)
        if key not in self.heads:
            raise ValueError(f"task_id={task_id} has no head; known tasks: {self.known_tasks()} (call prepare_task)")
        return self.heads[key]

    def forward_tasks(self, x: Tensor, task_ids: Tensor) -> Tensor:
        """Like :meth:`TaskAwareModule.forward_tasks`, running the shared body once for the whole batch."""
        feats = self.body(x)
        out = feats.new_zeros((x.shape[0], self.num_classes))
        for t in torch.unique(task_ids).tolist():
            rows = (task_ids == t).nonzero(as_tuple=True)[0]
            out = out.index_copy(0, rows, self._head(int(t))(feats[rows]))
        return out
