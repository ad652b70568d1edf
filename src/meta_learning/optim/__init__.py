"""Adaptive optimisation: a learning-rate-learning optimiser and learning-curve analysis.

``LearningCurvePruner`` (an Optuna pruner) is imported on first use, so that this package does not need Optuna.
"""

from __future__ import annotations

import importlib
from typing import Any

from meta_learning.optim.adaptive import AdaptiveOptimizer
from meta_learning.optim.analyzer import CurvePrediction, LearningCurveAnalyzer
from meta_learning.optim.curves import FAMILIES, FamilyFit, fit_family

__all__ = [
    "FAMILIES",
    "AdaptiveOptimizer",
    "CurvePrediction",
    "FamilyFit",
    "LearningCurveAnalyzer",
    "LearningCurvePruner",
    "fit_family",
]


def __getattr__(name: str) -> Any:
    if name == "LearningCurvePruner":
        return importlib.import_module("meta_learning.optim.pruner").LearningCurvePruner
    raise AttributeError(f"module 'meta_learning.optim' has no attribute {name!r}")
