"""What the MAML family takes as tasks: support sets, meta-batches and streams of them, checked at the boundary."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from meta_learning._checks import check_tensors
from meta_learning.data.episode import Episode, EpisodeBatch

# A meta-batch: episodes, an EpisodeBatch, or a single Episode (a meta-batch of one); see meta_batch
MetaBatch = Iterable[Episode] | EpisodeBatch | Episode


def check_task_inputs(support_x: Tensor, support_y: Tensor, query_x: Any = None) -> None:
    """Validate a support set (and query inputs) at the public boundary: tensors, matching lengths and example
    shapes, finite values, integer labels >= 0 (or float regression targets)."""
    check_tensors(support_x=support_x, support_y=support_y, **({} if query_x is None else {"query_x": query_x}))
    if support_x.dim() == 0 or support_x.shape[0] == 0 or support_y.shape[:1] != support_x.shape[:1]:
        raise ValueError(
            f"support_x has shape {tuple(support_x.shape)} and support_y {tuple(support_y.shape)}; expected [S, ...] "
            "and [S] (or [S, ...] regression targets) with S >= 1"
        )
    if query_x is not None and query_x.shape[1:] != support_x.shape[1:]:
        raise ValueError(
            f"query_x has examples of shape {tuple(query_x.shape[1:])}, support_x {tuple(support_x.shape[1:])}"
        )
    integer = not support_y.is_floating_point()
    if support_y.dtype == torch.bool or (integer and support_y.numel() and int(support_y.min()) < 0):
        low = int(support_y.min()) if support_y.numel() else None
        raise ValueError(
            f"support_y must hold class indices >= 0 or float targets, got dtype {support_y.dtype}, min {low}"
        )


def as_episode(task: Any) -> Episode:
    """An :class:`Episode`, or a ``(support_x, support_y)`` pair as a support-only episode."""
    if isinstance(task, Episode):
        return task
    if isinstance(task, (tuple, list)) and len(task) == 2:
        x, y = task
        for name, value in (("support_x", x), ("support_y", y)):
            if not isinstance(value, Tensor):
                raise TypeError(f"task_support's {name} must be a torch.Tensor, got {type(value).__name__}")
        return Episode(x, y, x[:0], y[:0])
    raise TypeError(f"expected an Episode or a (support_x, support_y) pair, got {type(task).__name__}")


class _MetaBatches:
    """Draws ``size`` episodes per ``sample()`` from a sampler; checkpointable like the sampler."""

    def __init__(self, source: Any, size: int) -> None:
        self.source, self.size = source, size

    def sample(self) -> list[Episode]:
        return [self.source.sample() for _ in range(self.size)]

    def state_dict(self) -> Any:
        return self.source.state_dict()

    def load_state_dict(self, state: Any) -> None:
        self.source.load_state_dict(state)

    def __iter__(self) -> Iterator[list[Episode]]:
        while True:
            yield self.sample()


def meta_batch(tasks: Any) -> list[Episode]:
    """The episodes of one meta-batch: a single :class:`Episode` (a meta-batch of one), an :class:`EpisodeBatch`, or
    an iterable of episodes.

    Raises:
        TypeError: ``tasks`` is none of these, or an element is not an ``Episode``.
        ValueError: the meta-batch is empty.
    """
    if isinstance(tasks, Episode):
        return [tasks]
    if not isinstance(tasks, (Iterable, EpisodeBatch)):
        raise TypeError(
            f"tasks must be an Episode, an EpisodeBatch or an iterable of Episodes, got {type(tasks).__name__}"
        )
    episodes = list(tasks)
    for i, ep in enumerate(episodes):
        if not isinstance(ep, Episode):
            raise TypeError(f"the meta-batch's task {i} is a {type(ep).__name__}; a meta-batch holds Episodes")
    if not episodes:
        raise ValueError("the meta-batch is empty; give at least one task")
    return episodes


def meta_batches(tasks: Any, size: int) -> Any:
    """``tasks`` as a stream of meta-batches for the training loop.

    A sampler (anything with ``sample()`` returning an episode) gives ``size`` episodes per meta-batch and stays
    checkpointable. An iterable may yield meta-batches (``EpisodeBatch`` or lists of episodes), passed on as they
    are, or single episodes, grouped ``size`` at a time in order (a last, smaller group is a smaller meta-batch).
    """
    if callable(getattr(tasks, "sample", None)):
        return _MetaBatches(tasks, size)
    if not isinstance(tasks, Iterable):
        raise TypeError(
            "tasks must be an episode sampler (with .sample()) or an iterable of episodes or meta-batches, "
            f"got {type(tasks).__name__}"
        )
    return _grouped(tasks, size)


def _grouped(tasks: Iterable[Any], size: int) -> Iterator[Any]:
    group: list[Episode] = []
    for i, item in enumerate(tasks):
        if isinstance(item, Episode):
            group.append(item)
            if len(group) == size:
                yield group
                group = []
        elif group:
            raise TypeError(
                f"item {i} of tasks is a {type(item).__name__} after single Episodes; give single Episodes (grouped "
                "meta_batch_size at a time) or meta-batches, not both"
            )
        else:
            yield item
    if group:
        yield group
