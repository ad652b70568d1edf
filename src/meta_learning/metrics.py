"""Evaluation metrics shared by every learner.

Notation: ``a_i`` the accuracy on test episode ``i`` of ``n``; the reported figure is the mean
``\\bar a = (1/n) sum_i a_i`` with the normal-approximation 95% half-width ``1.96 * s / sqrt(n)``, ``s`` the
sample standard deviation (``n - 1`` in the denominator) — the convention of the few-shot literature.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class MeanCI:
    """A per-episode quantity averaged over ``n`` episodes, with its 95% confidence half-width."""

    mean: float
    ci95: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.ci95:.4f} (n={self.n})"

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class Accuracy(MeanCI):
    """Mean accuracy over ``n`` episodes with its 95% confidence half-width (both fractions in [0, 1])."""

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f}% ± {100 * self.ci95:.2f}% (n={self.n})"


@dataclass(frozen=True)
class MeanSquaredError(MeanCI):
    """Mean over ``n`` regression episodes of the query mean-squared error, with its 95% half-width."""


def mean_ci95(values: Sequence[float] | Tensor) -> tuple[float, float]:
    """Mean and 95% confidence half-width of ``values`` (half-width 0 for a single value)."""
    t = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    n = t.numel()
    if n == 0:
        raise ValueError("values is empty; need at least one episode to summarise")
    mean = float(t.mean())
    if n == 1:
        return mean, 0.0
    return mean, Z_95 * float(t.std(unbiased=True)) / math.sqrt(n)


def accuracy_from_episodes(per_episode: Sequence[float] | Tensor) -> Accuracy:
    """Summarise per-episode accuracies as an :class:`Accuracy`."""
    mean, ci = mean_ci95(per_episode)
    return Accuracy(mean=mean, ci95=ci, n=len(per_episode))


def mse_from_episodes(per_episode: Sequence[float] | Tensor) -> MeanSquaredError:
    """Summarise per-episode mean-squared errors as a :class:`MeanSquaredError`."""
    mean, ci = mean_ci95(per_episode)
    return MeanSquaredError(mean=mean, ci95=ci, n=len(per_episode))


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction of rows of ``logits [M, N]`` whose argmax equals ``labels [M]``."""
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits has {logits.shape[0]} rows but labels has {labels.shape[0]} entries")
    return float((logits.argmax(dim=-1) == labels).float().mean())
