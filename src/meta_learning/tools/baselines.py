"""Context-free bandit baselines with the :class:`ToolMetaLearner` call shapes, for evaluations.

They ignore the task text and complexity: ``RandomPolicy`` picks uniformly, ``EpsilonGreedyPolicy`` plays the best
empirical mean with probability ``1 - epsilon`` (each new tool once first), ``BetaThompsonPolicy`` keeps a
``Beta(1 + successes, 1 + failures)`` posterior per tool (rewards in ``[0, 1]`` count fractionally) and plays the
largest draw (Thompson 1933; Chapelle & Li 2011).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from meta_learning._checks import check_non_negative_int
from meta_learning.tools.features import as_tools
from meta_learning.tools.learner import ToolChoice


class ToolPolicy(Protocol):
    """What an evaluation needs from a tool-selection policy."""

    def select_tool(
        self, task_description: str, available_tools: Sequence[Any], task_complexity: Any = None
    ) -> ToolChoice: ...

    def update(self, task_description: str, tool: Any, reward: float, task_complexity: Any = None) -> None: ...


class _CountingPolicy:
    """Per-tool reward sums and counts; ``update`` validates like :meth:`ToolMetaLearner.update`."""

    name = "counting"

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(check_non_negative_int("seed", seed))
        self.n: dict[str, int] = {}
        self.total: dict[str, float] = {}

    def _names(self, available_tools: Sequence[Any]) -> list[str]:
        names = [t.name for t in as_tools(available_tools)]
        for name in names:
            self.n.setdefault(name, 0)
            self.total.setdefault(name, 0.0)
        return names

    def _choice(self, name: str, reason: str) -> ToolChoice:
        n = self.n[name]
        mean = self.total[name] / n if n else 0.0
        return ToolChoice(name, mean, float("nan"), reason, mean)

    def update(self, task_description: str, tool: Any, reward: float, task_complexity: Any = None) -> None:
        name = tool.tool if isinstance(tool, ToolChoice) else tool
        if name not in self.n:
            raise ValueError(f"tool={name!r} is unknown; known: {sorted(self.n)}")
        if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
            raise ValueError(f"reward={reward!r} but it must be a finite number")
        self.n[name] += 1
        self.total[name] += float(reward)


class RandomPolicy(_CountingPolicy):
    """Uniformly random tool."""

    name = "random"

    def select_tool(
        self, task_description: str, available_tools: Sequence[Any], task_complexity: Any = None
    ) -> ToolChoice:
        names = self._names(available_tools)
        i = int(torch.randint(len(names), (1,), generator=self.generator))
        return self._choice(names[i], "uniformly random")


class EpsilonGreedyPolicy(_CountingPolicy):
    """Best empirical mean with probability ``1 - epsilon``, else a uniformly random tool."""

    name = "epsilon-greedy"

    def __init__(self, epsilon: float = 0.1, seed: int = 0) -> None:
        super().__init__(seed)
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon={epsilon} but it must be in [0, 1]")
        self.epsilon = float(epsilon)

    def select_tool(
        self, task_description: str, available_tools: Sequence[Any], task_complexity: Any = None
    ) -> ToolChoice:
        names = self._names(available_tools)
        untried = [n for n in names if self.n[n] == 0]
        if untried:
            return self._choice(untried[0], "never tried")
        if float(torch.rand((), generator=self.generator)) < self.epsilon:
            i = int(torch.randint(len(names), (1,), generator=self.generator))
            return self._choice(names[i], "exploring at random")
        best = max(names, key=lambda n: self.total[n] / self.n[n])
        return self._choice(best, "best empirical mean")


class BetaThompsonPolicy(_CountingPolicy):
    """Beta-Bernoulli Thompson sampling per tool, without context."""

    name = "beta-thompson"

    def select_tool(
        self, task_description: str, available_tools: Sequence[Any], task_complexity: Any = None
    ) -> ToolChoice:
        names = self._names(available_tools)
        wins = torch.tensor([self.total[n] for n in names], dtype=torch.float64)
        counts = torch.tensor([self.n[n] for n in names], dtype=torch.float64)
        alpha, beta = 1.0 + wins, 1.0 + (counts - wins).clamp_min(0.0)
        draws = _beta_sample(alpha, beta, self.generator)
        return self._choice(names[int(draws.argmax())], "largest Beta posterior draw")


def _beta_sample(alpha: torch.Tensor, beta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Beta draws as ``G_a / (G_a + G_b)`` with Gamma draws from the seeded generator.

    ``torch._standard_gamma`` takes no generator, so Gamma variates use Marsaglia & Tsang (2000) with the
    ``alpha < 1`` boost ``G(a) = G(a + 1) U^{1/a}``.
    """
    ga, gb = _gamma(alpha, generator), _gamma(beta, generator)
    return ga / (ga + gb)


def _gamma(shape: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    boost = shape < 1
    a = torch.where(boost, shape + 1, shape)
    d = a - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    while bool(todo.any()):
        x = torch.randn(a.shape, generator=generator, dtype=a.dtype)
        u = torch.rand(a.shape, generator=generator, dtype=a.dtype)
        v = (1 + c * x) ** 3
        accept = (v > 0) & (torch.log(u) < 0.5 * x**2 + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        take = todo & accept
        out = torch.where(take, d * v, out)
        todo = todo & ~accept
    u = torch.rand(a.shape, generator=generator, dtype=a.dtype)
    return torch.where(boost, out * u ** (1.0 / shape), out)
