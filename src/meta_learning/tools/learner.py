"""ToolMetaLearner: learned tool selection as a contextual bandit with a shared and a per-tool component.

Each call of :meth:`ToolMetaLearner.select_tool` scores every available tool ``a`` for the task by
``U_a = f_a - cost_weight * cost_a - latency_weight * latency_a``, where ``f_a`` is the predicted success of the
tool on this task (:mod:`meta_learning.tools.posterior`, features from :mod:`meta_learning.tools.features`):

- ``exploration="thompson"``: ``f_a`` is one joint draw from the posterior (Thompson sampling);
- ``exploration="ucb"``: ``f_a = mean_a + alpha * std_a`` (LinUCB);
- ``explore=False`` (and :meth:`rank_tools`): ``f_a = mean_a`` (greedy).

``cost_a`` and ``latency_a`` are running means of the values reported to :meth:`update`, starting from the
tool's declared ``cost``/``latency`` (counted as one observation); a tool with neither gets the mean over the
tools that have one (0 when none has).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from meta_learning._checks import (
    check_choice,
    check_finite_non_negative,
    check_non_negative_int,
    check_positive_float,
)
from meta_learning._io import atomic_write_json
from meta_learning.tools.features import (
    FeatureConfig,
    TextEncoder,
    Tool,
    ToolFeaturizer,
    as_tools,
    complexity_value,
)
from meta_learning.tools.posterior import HybridLinearPosterior

EXPLORATIONS = ("ucb", "thompson")
TEXT_ENCODERS = ("hashing", "minilm")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ToolChoice:
    """The learner's decision for one task.

    Attributes:
        tool: name of the chosen tool.
        expected_reward: posterior mean of the tool's success on this task.
        uncertainty: posterior standard deviation of that mean.
        reason: the decision in words (how the score was made and from how much evidence).
        score: the value that ranked the tools (sample, upper bound or mean, minus cost and latency penalties).
        expected_cost: the cost estimate used in ``score``.
        expected_latency: the latency estimate used in ``score``.
    """

    tool: str
    expected_reward: float
    uncertainty: float
    reason: str
    score: float
    expected_cost: float = 0.0
    expected_latency: float = 0.0

    def __str__(self) -> str:
        return self.tool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Usage:
    uses: int = 0
    cost_sum: float = 0.0
    cost_n: int = 0
    latency_sum: float = 0.0
    latency_n: int = 0


class ToolMetaLearner:
    """Learns which tool to use for a task from the rewards of earlier choices.

    Args:
        exploration: ``"ucb"`` (default; LinUCB) or ``"thompson"``. On the simulated benchmark
            (``benchmarks/tools_bandit.py``) UCB had the lower regret; Thompson sampling over-explores there.
        alpha: width of the LinUCB bonus in posterior standard deviations (``"ucb"`` only).
        exploration_scale: multiplier of the posterior standard deviation in Thompson draws (``v`` of Agrawal &
            Goyal 2013; values below 1 are the usual practice with many features).
        cost_weight: reward units given up per unit of cost.
        latency_weight: reward units given up per unit of latency.
        shared: keep the component shared by all tools (False gives per-tool "disjoint" models with no transfer
            between tools and no prior for new tools: an ablation).
        shared_prior_precision: ``lambda_s`` of the shared weights.
        tool_prior_precision: ``lambda_a`` of each tool's own weights.
        noise_variance: ``sigma^2`` of the reward noise.
        text_encoder: ``"hashing"`` (built in), ``"minilm"`` (the offline all-MiniLM-L6-v2 sentence encoder), or
            any callable mapping ``B`` strings to a ``[B, D]`` tensor (not saved by :meth:`save`; pass it again to
            :meth:`load`).
        features: sizes of the feature blocks.
        seed: seed of the learner's own ``torch.Generator`` (Thompson draws).

    Example:
        >>> tool_learner = ToolMetaLearner()
        >>> choice = tool_learner.select_tool(
        ...     task_description="What is 17 times 23?", available_tools=["calculator", "web_search"],
        ...     task_complexity="low")
        >>> tool_learner.update("What is 17 times 23?", choice.tool, reward=1.0, task_complexity="low")
    """

    def __init__(
        self,
        exploration: str = "ucb",
        alpha: float = 0.5,
        exploration_scale: float = 0.3,
        cost_weight: float = 0.0,
        latency_weight: float = 0.0,
        shared: bool = True,
        shared_prior_precision: float = 1.0,
        tool_prior_precision: float = 1.0,
        noise_variance: float = 0.25,
        text_encoder: str | TextEncoder = "hashing",
        features: FeatureConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.exploration = check_choice("exploration", exploration, EXPLORATIONS)
        self.alpha = check_finite_non_negative("alpha", alpha)
        self.exploration_scale = check_finite_non_negative("exploration_scale", exploration_scale)
        self.cost_weight = check_finite_non_negative("cost_weight", cost_weight)
        self.latency_weight = check_finite_non_negative("latency_weight", latency_weight)
        self.shared = bool(shared)
        self.features_config = features if features is not None else FeatureConfig()
        if not isinstance(self.features_config, FeatureConfig):
            raise TypeError(f"features must be a FeatureConfig, got {type(features).__name__}")
        self.seed = check_non_negative_int("seed", seed)
        if isinstance(text_encoder, str):
            self.text_encoder_name = check_choice("text_encoder", text_encoder, TEXT_ENCODERS)
            encoder: TextEncoder | None = None
            if text_encoder == "minilm":
                from meta_learning.models.minilm import MiniLMEncoder

                encoder = MiniLMEncoder()
        elif callable(text_encoder):
            self.text_encoder_name, encoder = "custom", text_encoder
        else:
            raise TypeError(
                f"text_encoder must be 'hashing', 'minilm' or a callable, got {type(text_encoder).__name__}"
            )
        self.featurizer = ToolFeaturizer(self.features_config, encoder)
        self.posterior = HybridLinearPosterior(
            shared_dim=self.featurizer.shared_dim,
            arm_dim=self.featurizer.task_dim,
            shared_prior_precision=check_positive_float("shared_prior_precision", shared_prior_precision),
            arm_prior_precision=check_positive_float("tool_prior_precision", tool_prior_precision),
            noise_variance=check_positive_float("noise_variance", noise_variance),
        )
        self.tools: dict[str, Tool] = {}
        self._usage: dict[str, _Usage] = {}
        self.generator = torch.Generator().manual_seed(self.seed)

    def __repr__(self) -> str:
        return (
            f"ToolMetaLearner(exploration={self.exploration!r}, shared={self.shared}, "
            f"text_encoder={self.text_encoder_name!r}, tools={len(self.tools)}, "
            f"observations={sum(u.uses for u in self._usage.values())})"
        )

    # --------------------------------------------------------------------------------------------- tools
    def add_tools(self, tools: Sequence[Any]) -> list[Tool]:
        """Register tools (names, :class:`Tool` objects or mappings); a known name gets the new description."""
        parsed = as_tools(tools)
        for tool in parsed:
            self.tools[tool.name] = tool
            self._usage.setdefault(tool.name, _Usage())
        return parsed

    def _features(
        self, task_description: str, tools: Sequence[Tool], complexity: float | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, z = self.featurizer.features(task_description, tools, complexity)
        if not self.shared:
            # Z = 0 leaves only the per-tool models: beta never sees data and contributes nothing
            z = torch.zeros_like(z)
        return x, z

    def _estimate(self, name: str, kind: str) -> float:
        usage, tool = self._usage[name], self.tools[name]
        declared = getattr(tool, kind)
        total, n = getattr(usage, f"{kind}_sum"), getattr(usage, f"{kind}_n")
        if declared is not None:
            return (declared + total) / (1 + n)
        if n:
            return total / n
        known = [self._estimate(other, kind) for other in self.tools if other != name and self._has(other, kind)]
        return sum(known) / len(known) if known else 0.0

    def _has(self, name: str, kind: str) -> bool:
        return getattr(self.tools[name], kind) is not None or getattr(self._usage[name], f"{kind}_n") > 0

    # --------------------------------------------------------------------------------------------- decisions
    def rank_tools(
        self, task_description: str, available_tools: Sequence[Any], task_complexity: Any = None
    ) -> list[ToolChoice]:
        """Every available tool as a :class:`ToolChoice`, best first, by the posterior mean minus penalties."""
        return self._score(task_description, available_tools, task_complexity, mode="mean")

    def select_tool(
        self,
        task_description: str,
        available_tools: Sequence[Any],
        task_complexity: Any = None,
        explore: bool = True,
    ) -> ToolChoice:
        """Choose a tool for the task.

        Args:
            task_description: the task in words.
            available_tools: the tools to choose from (names, :class:`Tool` objects or mappings with ``name``,
                ``description``, ``cost``, ``latency``); may differ between calls.
            task_complexity: ``None``, a number in ``[0, 1]`` or ``'low'``/``'medium'``/``'high'``.
            explore: sample (Thompson) or add the bonus (UCB); False picks the best posterior mean.

        Returns:
            A :class:`ToolChoice` (``str(choice)`` is the tool name).
        """
        mode = self.exploration if explore else "mean"
        return self._score(task_description, available_tools, task_complexity, mode=mode)[0]

    def _score(
        self, task_description: str, available_tools: Sequence[Any], task_complexity: Any, mode: str
    ) -> list[ToolChoice]:
        if not isinstance(task_description, str):
            raise TypeError(f"task_description must be a string, got {type(task_description).__name__}")
        complexity = complexity_value(task_complexity)
        tools = self.add_tools(available_tools)
        names = [t.name for t in tools]
        x, z = self._features(task_description, tools, complexity)
        mean, var = self.posterior.predict(names, x, z)
        std = var.sqrt()
        if mode == "thompson":
            value = self.posterior.sample(names, x, z, self.generator, scale=self.exploration_scale)
        elif mode == "ucb":
            value = mean + self.alpha * std
        else:
            value = mean
        costs = [self._estimate(n, "cost") for n in names]
        latencies = [self._estimate(n, "latency") for n in names]
        scores = [
            float(value[i]) - self.cost_weight * costs[i] - self.latency_weight * latencies[i]
            for i in range(len(names))
        ]
        order = sorted(range(len(names)), key=lambda i: (-scores[i], names[i]))
        choices = []
        for rank, i in enumerate(order):
            reason = self._reason(
                names[i], float(mean[i]), float(std[i]), float(value[i]), mode, costs[i], latencies[i], rank, len(names)
            )
            choices.append(
                ToolChoice(names[i], float(mean[i]), float(std[i]), reason, scores[i], costs[i], latencies[i])
            )
        return choices

    def _reason(
        self,
        name: str,
        mean: float,
        std: float,
        value: float,
        mode: str,
        cost: float,
        latency: float,
        rank: int,
        n_tools: int,
    ) -> str:
        uses = self.posterior.count(name)
        evidence = (
            f"from {uses} past use{'s' if uses != 1 else ''} of this tool and the shared model"
            if uses
            else "never used: prior from its name/description via the shared model"
            if self.shared
            else "never used: prior only"
        )
        how = {
            "thompson": f"Thompson sample {value:.3f}",
            "ucb": f"upper bound {value:.3f} (mean + {self.alpha:g} std)",
            "mean": "posterior mean",
        }[mode]
        penalty = ""
        if self.cost_weight or self.latency_weight:
            penalty = f"; minus cost {self.cost_weight:g}*{cost:.3g} and latency {self.latency_weight:g}*{latency:.3g}"
        place = "best" if rank == 0 else f"rank {rank + 1}"
        return (
            f"{name}: expected success {mean:.3f} ± {std:.3f} {evidence}; {place} of {n_tools} tools by {how}{penalty}"
        )

    # --------------------------------------------------------------------------------------------- learning
    def update(
        self,
        task_description: str,
        tool: Any,
        reward: float,
        task_complexity: Any = None,
        cost: float | None = None,
        latency: float | None = None,
    ) -> None:
        """Record the outcome of using ``tool`` on the task.

        Args:
            task_description: the same text given to :meth:`select_tool`.
            tool: a tool name (or :class:`Tool`/:class:`ToolChoice`) seen before in ``available_tools`` or
                :meth:`add_tools`.
            reward: observed success, a finite number (1/0 for success/failure, or a graded score).
            task_complexity: as in :meth:`select_tool`.
            cost: observed cost of this call, if known (finite, >= 0).
            latency: observed latency of this call, if known (finite, >= 0).
        """
        name = tool.tool if isinstance(tool, ToolChoice) else tool.name if isinstance(tool, Tool) else tool
        if not isinstance(name, str):
            raise TypeError(f"tool must be a tool name, Tool or ToolChoice, got {type(tool).__name__}")
        if name not in self.tools:
            known = ", ".join(map(repr, sorted(self.tools))) or "none yet"
            raise ValueError(
                f"tool={name!r} is unknown; update only tools seen in available_tools or add_tools (known: {known})"
            )
        if isinstance(reward, bool):
            reward = float(reward)
        if not isinstance(reward, (int, float)):
            raise TypeError(f"reward must be a number, got {type(reward).__name__} ({reward!r})")
        if not math.isfinite(reward):
            raise ValueError(f"reward={reward} but it must be a finite number")
        complexity = complexity_value(task_complexity)
        usage = self._usage[name]
        for kind, value in (("cost", cost), ("latency", latency)):
            if value is not None:
                checked = check_finite_non_negative(kind, value)
                setattr(usage, f"{kind}_sum", getattr(usage, f"{kind}_sum") + checked)
                setattr(usage, f"{kind}_n", getattr(usage, f"{kind}_n") + 1)
        x, z = self._features(task_description, [self.tools[name]], complexity)
        self.posterior.update(name, x, z[0], float(reward))
        usage.uses += 1

    # --------------------------------------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the learner (settings, tools, posterior statistics, RNG state) to ``path`` as JSON, atomically.

        The posterior is first recomputed exactly from its sums (:meth:`HybridLinearPosterior.refresh`), so the
        loaded learner and this one make the same choices from here on.
        """
        self.posterior.refresh()
        state = {
            "format": "meta_learning.ToolMetaLearner",
            "version": FORMAT_VERSION,
            "settings": {
                "exploration": self.exploration,
                "alpha": self.alpha,
                "exploration_scale": self.exploration_scale,
                "cost_weight": self.cost_weight,
                "latency_weight": self.latency_weight,
                "shared": self.shared,
                "shared_prior_precision": self.posterior.shared_prior_precision,
                "tool_prior_precision": self.posterior.arm_prior_precision,
                "noise_variance": self.posterior.noise_variance,
                "text_encoder": self.text_encoder_name,
                "features": asdict(self.features_config),
                "seed": self.seed,
            },
            "tools": [t.to_dict() for t in self.tools.values()],
            "usage": {name: asdict(u) for name, u in self._usage.items()},
            "posterior": self.posterior.state_dict(),
            "generator_state": self.generator.get_state().tolist(),
        }
        atomic_write_json(path, state)

    @classmethod
    def load(cls, path: str | os.PathLike[str], text_encoder: TextEncoder | None = None) -> ToolMetaLearner:
        """Rebuild a learner written by :meth:`save`; a custom ``text_encoder`` must be passed again."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no saved ToolMetaLearner at {path}")
        state = json.loads(path.read_text(encoding="utf-8"))
        if state.get("format") != "meta_learning.ToolMetaLearner" or state.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{path} is not a ToolMetaLearner file of version {FORMAT_VERSION} "
                f"(format={state.get('format')!r}, version={state.get('version')!r})"
            )
        settings = dict(state["settings"])
        settings["features"] = FeatureConfig(**settings["features"])
        if settings["text_encoder"] == "custom":
            if text_encoder is None:
                raise ValueError(f"{path} was saved with a custom text_encoder; pass text_encoder= to load it")
            settings["text_encoder"] = text_encoder
        elif text_encoder is not None:
            raise ValueError(
                f"{path} uses text_encoder={settings['text_encoder']!r}; text_encoder= is only for custom encoders"
            )
        learner = cls(**settings)
        learner.add_tools([Tool(**t) for t in state["tools"]])
        for name, usage in state["usage"].items():
            learner._usage[name] = _Usage(**usage)
        posterior = HybridLinearPosterior.from_state_dict(state["posterior"])
        if (posterior.shared_dim, posterior.arm_dim) != (learner.posterior.shared_dim, learner.posterior.arm_dim):
            raise ValueError(
                f"{path}: saved posterior has dims (k={posterior.shared_dim}, d={posterior.arm_dim}) but the "
                f"features give (k={learner.posterior.shared_dim}, d={learner.posterior.arm_dim})"
            )
        learner.posterior = posterior
        learner.generator.set_state(torch.tensor(state["generator_state"], dtype=torch.uint8))
        return learner
