"""Continual learning: strategies that learn tasks in sequence without forgetting, and the loop that drives them.

Strategies (all share ``learn_task`` / ``predict`` / ``evaluate`` and one training loop, :mod:`.base`):
:class:`EWC` (and online EWC), :class:`SI`, :class:`LwF`, :class:`ExperienceReplay`, :class:`AGEM`,
:class:`ProgressiveNetwork`, and the :class:`Naive` / :class:`Joint` baselines. :func:`train_stream` runs one over a
:class:`~meta_learning.data.streams.Stream` (``SplitMNIST``, ``PermutedMNIST``, ``SplitOmniglot``, ``SplitCIFAR100``)
and returns the accuracy matrix; forgetting metrics are in :mod:`meta_learning.metrics`.

Exports are lazy (PEP 562), as in :mod:`meta_learning.data`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meta_learning._lazy import lazy_getattr

_EXPORTS: dict[str, str] = {
    "Strategy": "base",
    "TrainConfig": "base",
    "TaskLog": "base",
    "StreamEvaluation": "base",
    "Naive": "baselines",
    "Joint": "baselines",
    "EWC": "regularization",
    "SI": "regularization",
    "fisher_diagonal": "regularization",
    "LwF": "distill",
    "distillation_loss": "distill",
    "ExperienceReplay": "replay",
    "AGEM": "replay",
    "ReplayBuffer": "replay",
    "agem_project": "replay",
    "ProgressiveNetwork": "progressive",
    "ProgressiveColumns": "progressive",
    "MultiHeadClassifier": "models",
    "TaskAwareModule": "models",
    "StreamResult": "loop",
    "train_stream": "loop",
    "evaluate_row": "loop",
}

__all__ = [
    "AGEM",
    "EWC",
    "SI",
    "ExperienceReplay",
    "Joint",
    "LwF",
    "MultiHeadClassifier",
    "Naive",
    "ProgressiveColumns",
    "ProgressiveNetwork",
    "ReplayBuffer",
    "Strategy",
    "StreamEvaluation",
    "StreamResult",
    "TaskAwareModule",
    "TaskLog",
    "TrainConfig",
    "agem_project",
    "distillation_loss",
    "evaluate_row",
    "fisher_diagonal",
    "train_stream",
]

if TYPE_CHECKING:
    from meta_learning.continual.base import Strategy, StreamEvaluation, TaskLog, TrainConfig
    from meta_learning.continual.baselines import Joint, Naive
    from meta_learning.continual.distill import LwF, distillation_loss
    from meta_learning.continual.loop import StreamResult, evaluate_row, train_stream
    from meta_learning.continual.models import MultiHeadClassifier, TaskAwareModule
    from meta_learning.continual.progressive import ProgressiveColumns, ProgressiveNetwork
    from meta_learning.continual.regularization import EWC, SI, fisher_diagonal
    from meta_learning.continual.replay import AGEM, ExperienceReplay, ReplayBuffer, agem_project


__getattr__ = lazy_getattr("meta_learning.continual", _EXPORTS, globals())
