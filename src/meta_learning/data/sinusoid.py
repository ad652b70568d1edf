"""The sinusoid regression task family of Finn et al. (2017), as episodes.

Notation: a task is ``y = A * sin(x - phi)`` with amplitude ``A ~ U(amplitude)`` and phase ``phi ~ U(phase)``;
its ``K`` support and ``Q`` query points have ``x ~ U(x_range)``. Inputs and targets are ``[K, 1]`` / ``[Q, 1]``
float32 tensors; ``Episode.classes`` is empty (regression).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from meta_learning._checks import check_non_negative_int, check_positive_int
from meta_learning.data.episode import Episode
from meta_learning.data.source import EpisodeSource


@dataclass(frozen=True)
class SinusoidParams:
    """The parameters of one sinusoid task: ``y = amplitude * sin(x - phase)``."""

    amplitude: float
    phase: float

    def __call__(self, x: Tensor) -> Tensor:
        """The task's noiseless targets at ``x`` (any shape)."""
        return self.amplitude * torch.sin(x - self.phase)


class Sinusoid(EpisodeSource):
    """Sinusoid regression tasks, deterministically for a seed (same interface as ``EpisodeSampler``).

    Args:
        k_shot: support points per task ``K``.
        n_query: query points per task ``Q`` (0 allowed).
        amplitude: ``(low, high)`` range of ``A``; the paper uses ``(0.1, 5.0)``.
        phase: ``(low, high)`` range of the phase; the paper uses ``(0, pi)``.
        x_range: ``(low, high)`` range of the inputs; the paper uses ``(-5, 5)``.
        seed: seed of the family's own ``torch.Generator``; the global RNG is never touched.

    Example:
        >>> tasks = Sinusoid(k_shot=10, n_query=10, seed=0)
        >>> episode, params = tasks.sample_with_params()
        >>> episode.support_x.shape, episode.support_y.shape
        (torch.Size([10, 1]), torch.Size([10, 1]))
        >>> bool(torch.allclose(episode.support_y, params(episode.support_x)))
        True
    """

    def __init__(
        self,
        k_shot: int,
        n_query: int,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        self.k_shot = check_positive_int("k_shot", k_shot)
        self.n_query = check_non_negative_int("n_query", n_query)
        self.amplitude = _check_range("amplitude", amplitude)
        self.phase = _check_range("phase", phase)
        self.x_range = _check_range("x_range", x_range)
        if self.x_range[0] == self.x_range[1]:
            raise ValueError(f"x_range={x_range!r} is empty; it needs low < high")

    def __repr__(self) -> str:
        return (
            f"Sinusoid(k_shot={self.k_shot}, n_query={self.n_query}, amplitude={self.amplitude}, "
            f"phase={self.phase}, x_range={self.x_range})"
        )

    def sample_with_params(self, generator: torch.Generator | None = None) -> tuple[Episode, SinusoidParams]:
        """One task and its parameters, drawn with ``generator`` (default: the family's own)."""
        g = self.generator if generator is None else generator
        u = torch.rand(2, generator=g, dtype=torch.float64)
        params = SinusoidParams(
            amplitude=float(self.amplitude[0] + (self.amplitude[1] - self.amplitude[0]) * u[0]),
            phase=float(self.phase[0] + (self.phase[1] - self.phase[0]) * u[1]),
        )
        n = self.k_shot + self.n_query
        low, high = self.x_range
        x = low + (high - low) * torch.rand(n, 1, generator=g)  # (K+Q, 1)
        y = params(x)
        episode = Episode(x[: self.k_shot], y[: self.k_shot], x[self.k_shot :], y[self.k_shot :])
        return episode, params

    def sample(self, generator: torch.Generator | None = None) -> Episode:
        """One task as an :class:`Episode` with float targets ``support_y [K, 1]``, ``query_y [Q, 1]``."""
        return self.sample_with_params(generator)[0]


def _check_range(name: str, value: Any) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise TypeError(f"{name} must be a (low, high) pair of numbers, got {value!r}")
    low, high = value
    for v in (low, high):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise TypeError(f"{name} must be a (low, high) pair of finite numbers, got {value!r}")
    if low > high:
        raise ValueError(f"{name}={value!r} has low > high; give (low, high) with low <= high")
    return float(low), float(high)
