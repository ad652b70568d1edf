"""Reference points: fine-tuning (the lower bound) and joint training on everything seen (the upper bound)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from meta_learning.continual.base import Strategy, TaskIds


class Naive(Strategy):
    """Plain fine-tuning on each task in turn: no protection against forgetting (``previous_tasks`` are ignored,
    by definition of the baseline)."""


class Joint(Strategy):
    """Joint (cumulative) training: each task is trained on the union of every task given so far.

    After the last task of a stream the model has been trained on all of its data at once, the usual upper bound
    ("offline" in van de Ven & Tolias 2019, ``JointTraining`` / ``Cumulative`` in Avalanche). Each call trains for
    the task's budget (``epochs`` are passes over the union; ``iterations`` are steps). ``previous_tasks`` this
    object did not see are added to the union. Its :meth:`state_dict` holds every stored example.

    Args:
        model: trained in place.
        **kwargs: :class:`~meta_learning.continual.base.Strategy` options.
    """

    def __init__(self, model: nn.Module, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.stored: list[tuple[Tensor, Tensor, int]] = []

    def consolidate(self, data: Tensor, labels: Tensor, task_id: int) -> None:
        self.stored.append((data, labels, task_id))

    def training_data(self, data: Tensor, labels: Tensor, task_id: int) -> tuple[Tensor, Tensor, TaskIds]:
        self.stored.append((data, labels, task_id))
        xs, ys, ts = zip(*self.stored, strict=True)
        t = torch.cat([torch.full_like(y, tid) for y, tid in zip(ys, ts, strict=True)])
        return torch.cat(xs), torch.cat(ys), t

    def extra_state(self) -> dict[str, Any]:
        return {"stored": [{"x": x, "y": y, "task_id": t} for x, y, t in self.stored]}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.stored = [(s["x"], s["y"], int(s["task_id"])) for s in state["stored"]]
