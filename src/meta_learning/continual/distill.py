"""Learning without Forgetting (Li & Hoiem 2017): distil the previous model's outputs on the new task's data.

Notation: ``s`` the current model's logits and ``o`` the frozen previous model's logits for the old outputs
(every earlier head of a multi-head model; the output units of earlier classes of a single-head one), ``T`` the
temperature. The loss of a mini-batch of the new task is

    ``L = CE(s_new, y) + alpha * sum_old KD(s_old, o_old)``,  ``KD(s, o) = -(1/B) sum_b sum_k q_bk log p_bk``,

with ``p = softmax(s / T)`` and ``q = softmax(o / T)`` (Li & Hoiem's eq. for ``L_old``; it differs from the
Kullback-Leibler divergence Avalanche uses by the entropy of ``q``, a constant for the student, so gradients agree).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meta_learning._checks import check_positive_float
from meta_learning.continual.base import Strategy, TaskIds


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``-(1/B) sum_b sum_k softmax(o_b / T)_k log softmax(s_b / T)_k`` for logits ``[B, K]``."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} differ")
    q = F.softmax(teacher_logits / temperature, dim=-1)
    return -(q * F.log_softmax(student_logits / temperature, dim=-1)).sum(-1).mean()


class LwF(Strategy):
    """Learning without Forgetting.

    Args:
        model: trained in place.
        alpha: weight of the distillation term; a sequence gives one weight per task in learning order (entry
            ``t`` is used while learning the ``t``-th task, 0-based; entry 0 is never used), as in Avalanche.
        temperature: softmax temperature ``T`` (Li & Hoiem use 2).
        **kwargs: :class:`~meta_learning.continual.base.Strategy` options.

    The teacher is a frozen copy of the model taken at the start of each task after the first. LwF uses no data of
    earlier tasks, so ``previous_tasks`` only matter through their task ids (multi-head) or classes (single-head).
    """

    def __init__(
        self, model: nn.Module, alpha: float | Sequence[float] = 1.0, temperature: float = 2.0, **kwargs: Any
    ) -> None:
        super().__init__(model, **kwargs)
        if isinstance(alpha, Sequence) and not isinstance(alpha, (str, bytes)):
            self.alpha: float | tuple[float, ...] = tuple(
                check_positive_float(f"alpha[{i}]", a) for i, a in enumerate(alpha)
            )
            if not self.alpha:
                raise ValueError("alpha is an empty sequence; give one weight per task or a single float")
        else:
            self.alpha = check_positive_float("alpha", alpha)
        self._alpha_now = 0.0
        self.temperature = check_positive_float("temperature", temperature)
        self.teacher: nn.Module | None = None
        self._old_tasks: list[int] = []
        self._old_units: Tensor | None = None

    def before_task(self, data: Tensor, labels: Tensor, task_id: int) -> None:
        earlier = [t for t in self.task_ids if t != task_id]
        old_units = self.previous_classes
        if not earlier or (not self.multi_head and not old_units):
            self.teacher = None
            return
        position = len(earlier)  # this task's place in the learning order
        if isinstance(self.alpha, tuple):
            if position >= len(self.alpha):
                raise ValueError(
                    f"alpha has {len(self.alpha)} entries but this is task number {position} (0-based); give one "
                    "weight per task"
                )
            self._alpha_now = self.alpha[position]
        else:
            self._alpha_now = self.alpha
        self.teacher = copy.deepcopy(self.model).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self._old_tasks = earlier
        self._old_units = torch.tensor(old_units, dtype=torch.long, device=self.device)

    def training_loss(self, x: Tensor, y: Tensor, task_ids: TaskIds) -> Tensor:
        if self.teacher is None:
            return super().training_loss(x, y, task_ids)
        if isinstance(task_ids, Tensor):
            raise TypeError("LwF trains on one task at a time; got per-example task ids")
        if self.multi_head:
            current, *student_old = self.model.forward_heads(x, [task_ids, *self._old_tasks])  # type: ignore[operator]
            loss = F.cross_entropy(current, y)
            with torch.no_grad():
                teacher_old = self.teacher.forward_heads(x, self._old_tasks)  # type: ignore[operator]
        else:
            out = self.model(x)
            mask = self.active_mask()
            loss = F.cross_entropy(out if mask is None else out.masked_fill(~mask, float("-inf")), y)
            student_old = [out[:, self._old_units]]
            with torch.no_grad():
                teacher_old = [self.teacher(x)[:, self._old_units]]
        kd = torch.stack(
            [distillation_loss(s, o, self.temperature) for s, o in zip(student_old, teacher_old, strict=True)]
        ).sum()
        return loss + self._alpha_now * kd

    def after_task(self, data: Tensor, labels: Tensor, task_id: int) -> None:
        self.teacher = None  # rebuilt from the model at the start of the next task
