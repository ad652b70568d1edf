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


# -- continual learning -------------------------------------------------------------------------------------------
#
# Notation: ``R [T, T]`` the accuracy matrix of a stream of ``T`` experiences, ``R[i, j]`` the test accuracy on
# experience ``j`` after training on experiences ``0..i`` (entries above the diagonal are accuracies on experiences
# not trained on yet). ``b [T]`` the accuracies of the model before any training (its random initialisation).


@dataclass(frozen=True)
class ContinualMetrics:
    """Summary of an accuracy matrix ``R [T, T]`` (fractions in [0, 1]).

    Attributes:
        average_accuracy: ``A_T = (1/T) sum_j R[T-1, j]``, the mean final accuracy over all experiences.
        average_forgetting: ``F_T = (1/(T-1)) sum_{j<T-1} max_{l<T-1} R[l, j] - R[T-1, j]`` (Chaudhry et al. 2018).
        bwt: backward transfer ``(1/(T-1)) sum_{i<T-1} R[T-1, i] - R[i, i]`` (Lopez-Paz & Ranzato 2017).
        fwt: forward transfer ``(1/(T-1)) sum_{i>=1} R[i-1, i] - b[i]``; ``None`` without ``b``.
        final_accuracies: ``R[T-1, :]``.
    """

    average_accuracy: float
    average_forgetting: float
    bwt: float
    fwt: float | None
    final_accuracies: tuple[float, ...]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _accuracy_matrix(matrix: Sequence[Sequence[float]] | Tensor) -> Tensor:
    r = torch.as_tensor(matrix, dtype=torch.float64)
    if r.dim() != 2 or r.shape[0] != r.shape[1] or r.shape[0] == 0:
        raise ValueError(f"the accuracy matrix must be square [T, T] with T >= 1, got shape {tuple(r.shape)}")
    if not bool(torch.isfinite(r).all()):
        raise ValueError("the accuracy matrix holds non-finite entries")
    return r


def _step(r: Tensor, k: int | None) -> int:
    t = r.shape[0]
    k = t - 1 if k is None else k
    if not 0 <= k < t:
        raise ValueError(f"k={k} but the accuracy matrix has rows 0..{t - 1}")
    return k


def average_accuracy(matrix: Sequence[Sequence[float]] | Tensor, k: int | None = None) -> float:
    """``A_k = (1/(k+1)) sum_{j<=k} R[k, j]``: mean accuracy on the experiences seen by step ``k`` (default last)."""
    r = _accuracy_matrix(matrix)
    k = _step(r, k)
    return float(r[k, : k + 1].mean())


def forgetting(matrix: Sequence[Sequence[float]] | Tensor, k: int | None = None) -> list[float]:
    """Per-experience forgetting after step ``k``: ``f_j = max_{l<k} R[l, j] - R[k, j]`` for ``j < k``."""
    r = _accuracy_matrix(matrix)
    k = _step(r, k)
    return [float(r[:k, j].max() - r[k, j]) for j in range(k)]


def average_forgetting(matrix: Sequence[Sequence[float]] | Tensor, k: int | None = None) -> float:
    """Mean of :func:`forgetting` after step ``k`` (Chaudhry et al. 2018); 0 when ``k == 0``."""
    f = forgetting(matrix, k)
    return sum(f) / len(f) if f else 0.0


def backward_transfer(matrix: Sequence[Sequence[float]] | Tensor) -> float:
    """BWT ``= (1/(T-1)) sum_{i<T-1} R[T-1, i] - R[i, i]`` (negative: forgetting); 0 for one experience."""
    r = _accuracy_matrix(matrix)
    t = r.shape[0]
    if t == 1:
        return 0.0
    return float((r[t - 1, : t - 1] - r.diagonal()[: t - 1]).mean())


def forward_transfer(matrix: Sequence[Sequence[float]] | Tensor, initial: Sequence[float] | Tensor) -> float:
    """FWT ``= (1/(T-1)) sum_{i>=1} R[i-1, i] - b[i]``, ``b`` the accuracies before training; 0 for one experience."""
    r = _accuracy_matrix(matrix)
    b = torch.as_tensor(initial, dtype=torch.float64).reshape(-1)
    t = r.shape[0]
    if b.shape[0] != t:
        raise ValueError(f"initial has {b.shape[0]} entries but the accuracy matrix has {t} experiences")
    if t == 1:
        return 0.0
    return float((r[:-1].diagonal(offset=1) - b[1:]).mean())


def continual_metrics(
    matrix: Sequence[Sequence[float]] | Tensor, initial: Sequence[float] | Tensor | None = None
) -> ContinualMetrics:
    """All summaries of an accuracy matrix (see :class:`ContinualMetrics`)."""
    r = _accuracy_matrix(matrix)
    return ContinualMetrics(
        average_accuracy=average_accuracy(r),
        average_forgetting=average_forgetting(r),
        bwt=backward_transfer(r),
        fwt=None if initial is None else forward_transfer(r, initial),
        final_accuracies=tuple(float(a) for a in r[-1]),
    )
