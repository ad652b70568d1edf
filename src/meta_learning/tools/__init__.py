"""Learned tool selection: a contextual bandit over task and tool-description features.

``ToolMetaLearner.select_tool(task_description, available_tools, task_complexity)`` returns a :class:`ToolChoice`;
``update(...)`` feeds back the reward. :mod:`~meta_learning.tools.simulate` holds a simulated environment with an
oracle and :mod:`~meta_learning.tools.baselines` the context-free baselines used to evaluate it.
"""

from meta_learning.tools.baselines import BetaThompsonPolicy, EpsilonGreedyPolicy, RandomPolicy, ToolPolicy
from meta_learning.tools.features import FeatureConfig, FeatureHasher, Tool, ToolFeaturizer
from meta_learning.tools.learner import ToolChoice, ToolMetaLearner
from meta_learning.tools.posterior import HybridLinearPosterior
from meta_learning.tools.simulate import BanditRun, SimulatedTask, ToolEnvironment, run_bandit

__all__ = [
    "BanditRun",
    "BetaThompsonPolicy",
    "EpsilonGreedyPolicy",
    "FeatureConfig",
    "FeatureHasher",
    "HybridLinearPosterior",
    "RandomPolicy",
    "SimulatedTask",
    "Tool",
    "ToolChoice",
    "ToolEnvironment",
    "ToolFeaturizer",
    "ToolMetaLearner",
    "ToolPolicy",
    "run_bandit",
]
