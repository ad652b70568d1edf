"""Rehearsal: a bounded memory of past examples, experience replay (Chaudhry et al. 2019, "On tiny episodic
memories") and A-GEM (Chaudhry et al. 2019, "Efficient lifelong learning with A-GEM").

Memory policies (``capacity`` ``M`` examples in total):

- ``"reservoir"`` (Vitter's algorithm R over every example ever offered): the ``n``-th example offered (0-based) is
  stored if ``n < M``, else it replaces slot ``j ~ U{0..n}`` when ``j < M``; after ``N`` offers every example is in
  memory with probability ``min(1, M / N)``.
- ``"class_balanced"``: each of the ``K`` classes seen so far gets a quota of ``M // K`` slots (the first
  ``M mod K`` classes one more) and keeps a reservoir of its own examples; when a new class shrinks the quotas, a
  random subset of each class's slots is kept, which keeps each reservoir a uniform sample of its class.

The memory is offered a task's examples (in a seeded random order) after training on that task.

A-GEM: with ``g`` the mini-batch gradient and ``g_ref`` the gradient of the loss on ``sample_size`` memory
examples, the update direction is ``g - (g . g_ref / g_ref . g_ref) g_ref`` when ``g . g_ref < 0``, else ``g``; the
projected direction has ``g~ . g_ref >= 0``, so a small step along ``-g~`` does not increase the memory loss to
first order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meta_learning._checks import check_choice, check_positive_int
from meta_learning.continual.base import Strategy, TaskIds

POLICIES = ("reservoir", "class_balanced")


def reservoir_slots(n_seen: int, capacity: int, n_new: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Algorithm R for ``n_new`` offers after ``n_seen``: ``(slots, offers)`` with offer ``offers[i]`` written into
    ``slots[i]``, keeping only the last write to a slot (so the writes may be applied in any order)."""
    counts = torch.arange(n_seen, n_seen + n_new, dtype=torch.float64)
    draws = torch.floor(torch.rand(n_new, generator=generator, dtype=torch.float64) * (counts + 1)).long()
    slots = torch.where(counts.long() < capacity, counts.long(), draws)
    accepted = (slots < capacity).nonzero().flatten()
    slots = slots[accepted]
    # keep the last offer written to each slot
    rev_slots = slots.flip(0).numpy()
    _, first_in_rev = np.unique(rev_slots, return_index=True)
    keep = len(slots) - 1 - first_in_rev
    return slots[keep], accepted[keep]


class ReplayBuffer:
    """A bounded memory of ``(x, y, task_id)`` examples.

    Args:
        capacity: total number of examples ``M``.
        policy: ``"reservoir"`` or ``"class_balanced"`` (see the module docstring).
        generator: the source of every random choice.
    """

    def __init__(self, capacity: int, policy: str = "reservoir", generator: torch.Generator | None = None) -> None:
        self.capacity = check_positive_int("capacity", capacity)
        self.policy = check_choice("policy", policy, POLICIES)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.x: Tensor | None = None
        self.y: Tensor | None = None
        self.t: Tensor | None = None
        self.n_seen: dict[int, int] = {}  # per class for class_balanced; key -1 for reservoir

    def __len__(self) -> int:
        return 0 if self.y is None else int(self.y.shape[0])

    def add(self, x: Tensor, y: Tensor, task_id: int | Tensor) -> None:
        """Offer the examples ``x [N, ...]``, ``y [N]`` (of task ``task_id``) to the memory, in the given order."""
        t = task_id if isinstance(task_id, Tensor) else torch.full_like(y, int(task_id))
        if self.policy == "reservoir":
            self._reservoir(-1, x, y, t)
            return
        classes = sorted(set(self.n_seen) | set(torch.unique(y).tolist()))
        quotas = self._quotas(classes)
        parts = []
        for c in classes:
            rows = self._rows_of(c)
            if len(rows) > quotas[c]:
                rows = rows[torch.randperm(len(rows), generator=self.generator)[: quotas[c]].sort().values]
            parts.append(rows)
        self._keep(torch.cat(parts) if parts else torch.empty(0, dtype=torch.long))
        for c in classes:
            new = (y == c).nonzero().flatten()
            if len(new):
                self._reservoir(c, x[new], y[new], t[new], capacity=quotas[c])

    def sample(self, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """``min(n, len)`` distinct memory examples drawn uniformly: ``(x, y, task_ids)``."""
        if self.x is None or self.y is None or self.t is None:
            raise ValueError("the memory is empty")
        pick = torch.randperm(len(self), generator=self.generator)[:n].to(self.y.device)
        return self.x[pick], self.y[pick], self.t[pick]

    def state_dict(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y, "t": self.t, "n_seen": dict(self.n_seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.x, self.y, self.t = (None if state[k] is None else state[k].clone() for k in ("x", "y", "t"))
        self.n_seen = {int(k): int(v) for k, v in state["n_seen"].items()}

    # -- internals --------------------------------------------------------------------------------------------------

    def _quotas(self, classes: list[int]) -> dict[int, int]:
        base, extra = divmod(self.capacity, len(classes))
        return {c: base + (1 if i < extra else 0) for i, c in enumerate(classes)}

    def _rows_of(self, c: int) -> Tensor:
        if self.y is None:
            return torch.empty(0, dtype=torch.long)
        return (self.y == c).nonzero().flatten().cpu()

    def _keep(self, rows: Tensor) -> None:
        if self.x is None or self.y is None or self.t is None:
            return
        rows = rows.to(self.y.device)
        self.x, self.y, self.t = self.x[rows], self.y[rows], self.t[rows]

    def _reservoir(self, key: int, x: Tensor, y: Tensor, t: Tensor, capacity: int | None = None) -> None:
        capacity = self.capacity if capacity is None else capacity
        seen = self.n_seen.get(key, 0)
        slots, offers = reservoir_slots(seen, capacity, x.shape[0], self.generator)
        self.n_seen[key] = seen + x.shape[0]
        own = torch.arange(len(self)) if key == -1 else self._rows_of(key)
        # slots index this key's own rows; slots beyond them append new rows
        grow = int(slots.max()) + 1 - len(own) if len(slots) else 0
        if self.x is None or self.y is None or self.t is None:
            self.x = x.new_empty((0, *x.shape[1:]))
            self.y, self.t = y.new_empty(0), t.new_empty(0)
        if grow > 0:
            self.x = torch.cat([self.x, x.new_zeros((grow, *x.shape[1:]))])
            self.y = torch.cat([self.y, y.new_full((grow,), -1)])
            self.t = torch.cat([self.t, t.new_zeros(grow)])
            own = torch.cat([own, torch.arange(len(self) - grow, len(self))])
        rows = own[slots].to(self.y.device)
        offers = offers.to(x.device)
        self.x[rows], self.y[rows], self.t[rows] = x[offers], y[offers], t[offers]
        filled = self.y >= 0  # a quota that grew can leave never-written rows; drop them
        if not bool(filled.all()):
            self._keep(filled.nonzero().flatten())


class _MemoryStrategy(Strategy):
    """A strategy with a replay memory filled after each task (and with ``previous_tasks`` it did not learn)."""

    def __init__(self, model: nn.Module, memory_size: int, strategy: str, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.memory_size = check_positive_int("memory_size", memory_size)
        self.memory = ReplayBuffer(memory_size, strategy, self.generator)

    def consolidate(self, data: Tensor, labels: Tensor, task_id: int) -> None:
        self._remember(data, labels, task_id)

    def after_task(self, data: Tensor, labels: Tensor, task_id: int) -> None:
        self._remember(data, labels, task_id)

    def _remember(self, data: Tensor, labels: Tensor, task_id: int) -> None:
        order = torch.randperm(data.shape[0], generator=self.generator).to(data.device)
        self.memory.add(data[order], labels[order], task_id)

    def memory_loss(self, n: int) -> Tensor:
        """Cross-entropy on ``n`` memory examples, each through its own task's head."""
        x, y, t = self.memory.sample(n)
        return F.cross_entropy(self.logits(x, t), y)

    def extra_state(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])


class ExperienceReplay(_MemoryStrategy):
    """Experience replay: every mini-batch of the current task is concatenated with one of the memory.

    Args:
        model: trained in place.
        memory_size: total memory ``M``.
        strategy: memory policy, ``"reservoir"`` or ``"class_balanced"``.
        batch_size_mem: memory examples per step (default: the task's batch size).
        **kwargs: :class:`~meta_learning.continual.base.Strategy` options.

    The loss is the mean cross-entropy over the joint batch (current and memory examples weigh the same), each
    example through its own task's head for multi-head models.
    """

    def __init__(
        self,
        model: nn.Module,
        memory_size: int = 1000,
        strategy: str = "reservoir",
        *,
        batch_size_mem: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, memory_size, strategy, **kwargs)
        self.batch_size_mem = None if batch_size_mem is None else check_positive_int("batch_size_mem", batch_size_mem)

    def training_loss(self, x: Tensor, y: Tensor, task_ids: TaskIds) -> Tensor:
        if len(self.memory) == 0:
            return super().training_loss(x, y, task_ids)
        mx, my, mt = self.memory.sample(self.batch_size_mem or x.shape[0])
        t = task_ids if isinstance(task_ids, Tensor) else torch.full_like(y, task_ids)
        return super().training_loss(torch.cat([x, mx]), torch.cat([y, my]), torch.cat([t, mt]))


def agem_project(grad: Tensor, grad_ref: Tensor, eps: float = 0.0) -> Tensor:
    """A-GEM's projection of the flat gradient ``grad`` against the memory gradient ``grad_ref``."""
    dot = torch.dot(grad, grad_ref)
    if dot >= 0:
        return grad
    return grad - (dot / (torch.dot(grad_ref, grad_ref) + eps)) * grad_ref


class AGEM(_MemoryStrategy):
    """Averaged gradient episodic memory.

    Args:
        model: trained in place.
        memory_size: total memory ``M`` (filled with ``strategy``, reservoir by default).
        sample_size: memory examples drawn for ``g_ref`` at each step.
        strategy: memory policy.
        **kwargs: :class:`~meta_learning.continual.base.Strategy` options.
    """

    def __init__(
        self,
        model: nn.Module,
        memory_size: int = 1000,
        sample_size: int = 256,
        strategy: str = "reservoir",
        **kwargs: Any,
    ) -> None:
        super().__init__(model, memory_size, strategy, **kwargs)
        self.sample_size = check_positive_int("sample_size", sample_size)
        self.projections = 0  # steps whose gradient was projected

    def after_backward(self, x: Tensor, y: Tensor, task_ids: TaskIds) -> None:
        if len(self.memory) == 0:
            return
        params = list(self.trainable_parameters().values())
        ref = torch.autograd.grad(self.memory_loss(self.sample_size), params, allow_unused=True)
        g_ref = torch.cat(
            [(r if r is not None else torch.zeros_like(p)).reshape(-1) for r, p in zip(ref, params, strict=True)]
        )
        g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        projected = agem_project(g, g_ref)
        if projected is g:
            return
        self.projections += 1
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = projected[offset : offset + n].view_as(p).clone()
            offset += n
