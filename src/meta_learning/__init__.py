"""meta_learning: few-shot and meta-learning for PyTorch.

Public names are imported lazily (PEP 562) so that ``import meta_learning`` stays fast and never pulls in
optional dependencies; ``from meta_learning import PrototypicalNetwork`` imports only what that needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "MAML": "meta_learning.maml.maml",
    "ANIL": "meta_learning.maml.variants",
    "MetaSGD": "meta_learning.maml.variants",
    "Reptile": "meta_learning.maml.variants",
    "PrototypicalNetwork": "meta_learning.fewshot.protonet",
    "RelationNetwork": "meta_learning.fewshot.relation",
    "Episode": "meta_learning.data.episode",
    "EpisodeBatch": "meta_learning.data.episode",
    "EpisodeSampler": "meta_learning.data.sampler",
    "Omniglot": "meta_learning.data.omniglot",
    "ImageFolderFewShot": "meta_learning.data.image_folder",
    "MiniImageNet": "meta_learning.data.image_folder",
    "Sinusoid": "meta_learning.data.sinusoid",
    "Conv4": "meta_learning.models.conv4",
    "ResNet12": "meta_learning.models.resnet12",
    "MLP": "meta_learning.models.mlp",
    "Accuracy": "meta_learning.metrics",
    "History": "meta_learning.training.loop",
    "fit": "meta_learning.training.loop",
    "ExperimentConfig": "meta_learning.config",
    "load_config": "meta_learning.config",
}

__all__ = [
    "ANIL",
    "MAML",
    "MLP",
    "Accuracy",
    "Conv4",
    "Episode",
    "EpisodeBatch",
    "EpisodeSampler",
    "ExperimentConfig",
    "History",
    "ImageFolderFewShot",
    "MetaSGD",
    "MiniImageNet",
    "Omniglot",
    "PrototypicalNetwork",
    "RelationNetwork",
    "Reptile",
    "ResNet12",
    "Sinusoid",
    "fit",
    "load_config",
]

if TYPE_CHECKING:
    from meta_learning.config import ExperimentConfig, load_config
    from meta_learning.data.episode import Episode, EpisodeBatch
    from meta_learning.data.image_folder import ImageFolderFewShot, MiniImageNet
    from meta_learning.data.omniglot import Omniglot
    from meta_learning.data.sampler import EpisodeSampler
    from meta_learning.data.sinusoid import Sinusoid
    from meta_learning.fewshot.protonet import PrototypicalNetwork
    from meta_learning.fewshot.relation import RelationNetwork
    from meta_learning.maml.maml import MAML
    from meta_learning.maml.variants import ANIL, MetaSGD, Reptile
    from meta_learning.metrics import Accuracy
    from meta_learning.models.conv4 import Conv4
    from meta_learning.models.mlp import MLP
    from meta_learning.models.resnet12 import ResNet12
    from meta_learning.training.loop import History, fit


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'meta_learning' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
