"""meta_learning: few-shot and meta-learning for PyTorch.

Public names are imported lazily (PEP 562) so that ``import meta_learning`` stays fast and never pulls in
optional dependencies; ``from meta_learning import PrototypicalNetwork`` imports only what that needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meta_learning._lazy import lazy_getattr

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
    "EWC": "meta_learning.continual.regularization",
    "SI": "meta_learning.continual.regularization",
    "LwF": "meta_learning.continual.distill",
    "ExperienceReplay": "meta_learning.continual.replay",
    "AGEM": "meta_learning.continual.replay",
    "ProgressiveNetwork": "meta_learning.continual.progressive",
    "Naive": "meta_learning.continual.baselines",
    "Joint": "meta_learning.continual.baselines",
    "MNIST": "meta_learning.data.mnist",
    "SplitMNIST": "meta_learning.data.mnist",
    "PermutedMNIST": "meta_learning.data.mnist",
    "SplitOmniglot": "meta_learning.data.split_omniglot",
    "SplitCIFAR100": "meta_learning.data.cifar",
    "FreeSpokenDigits": "meta_learning.data.fsdd",
    "LoRAAdapter": "meta_learning.adapters.lora",
    "LinearAdapter": "meta_learning.adapters.bottleneck",
    "PrefixTuningAdapter": "meta_learning.adapters.prefix",
    "BitFitAdapter": "meta_learning.adapters.bitfit",
    "IA3Adapter": "meta_learning.adapters.ia3",
    "CompacterAdapter": "meta_learning.adapters.compacter",
    "BayesianOptimizer": "meta_learning.search.optimizer",
    "SearchSpace": "meta_learning.search.space",
    "AdaptiveOptimizer": "meta_learning.optim.adaptive",
    "LearningCurveAnalyzer": "meta_learning.optim.analyzer",
    "NeuralArchitectureSearch": "meta_learning.nas.search",
    "DARTS": "meta_learning.nas.darts",
    "NASBench201Space": "meta_learning.nas.nb201",
    "ToolMetaLearner": "meta_learning.tools.learner",
    "ToolChoice": "meta_learning.tools.learner",
    "Tool": "meta_learning.tools.features",
    "MultiModalAdapter": "meta_learning.multimodal.adapter",
    "ModalityLayout": "meta_learning.multimodal.adapter",
    "MiniLMEncoder": "meta_learning.models.minilm",
}

__all__ = [
    "AGEM",
    "ANIL",
    "DARTS",
    "EWC",
    "MAML",
    "MLP",
    "MNIST",
    "SI",
    "Accuracy",
    "AdaptiveOptimizer",
    "BayesianOptimizer",
    "BitFitAdapter",
    "CompacterAdapter",
    "Conv4",
    "Episode",
    "EpisodeBatch",
    "EpisodeSampler",
    "ExperienceReplay",
    "ExperimentConfig",
    "FreeSpokenDigits",
    "History",
    "IA3Adapter",
    "ImageFolderFewShot",
    "Joint",
    "LearningCurveAnalyzer",
    "LinearAdapter",
    "LoRAAdapter",
    "LwF",
    "MetaSGD",
    "MiniImageNet",
    "MiniLMEncoder",
    "ModalityLayout",
    "MultiModalAdapter",
    "NASBench201Space",
    "Naive",
    "NeuralArchitectureSearch",
    "Omniglot",
    "PermutedMNIST",
    "PrefixTuningAdapter",
    "ProgressiveNetwork",
    "PrototypicalNetwork",
    "RelationNetwork",
    "Reptile",
    "ResNet12",
    "SearchSpace",
    "Sinusoid",
    "SplitCIFAR100",
    "SplitMNIST",
    "SplitOmniglot",
    "Tool",
    "ToolChoice",
    "ToolMetaLearner",
    "fit",
    "load_config",
]

if TYPE_CHECKING:
    from meta_learning.adapters.bitfit import BitFitAdapter
    from meta_learning.adapters.bottleneck import LinearAdapter
    from meta_learning.adapters.compacter import CompacterAdapter
    from meta_learning.adapters.ia3 import IA3Adapter
    from meta_learning.adapters.lora import LoRAAdapter
    from meta_learning.adapters.prefix import PrefixTuningAdapter
    from meta_learning.config import ExperimentConfig, load_config
    from meta_learning.continual.baselines import Joint, Naive
    from meta_learning.continual.distill import LwF
    from meta_learning.continual.progressive import ProgressiveNetwork
    from meta_learning.continual.regularization import EWC, SI
    from meta_learning.continual.replay import AGEM, ExperienceReplay
    from meta_learning.data.cifar import SplitCIFAR100
    from meta_learning.data.episode import Episode, EpisodeBatch
    from meta_learning.data.fsdd import FreeSpokenDigits
    from meta_learning.data.image_folder import ImageFolderFewShot, MiniImageNet
    from meta_learning.data.mnist import MNIST, PermutedMNIST, SplitMNIST
    from meta_learning.data.omniglot import Omniglot
    from meta_learning.data.sampler import EpisodeSampler
    from meta_learning.data.sinusoid import Sinusoid
    from meta_learning.data.split_omniglot import SplitOmniglot
    from meta_learning.fewshot.protonet import PrototypicalNetwork
    from meta_learning.fewshot.relation import RelationNetwork
    from meta_learning.maml.maml import MAML
    from meta_learning.maml.variants import ANIL, MetaSGD, Reptile
    from meta_learning.metrics import Accuracy
    from meta_learning.models.conv4 import Conv4
    from meta_learning.models.minilm import MiniLMEncoder
    from meta_learning.models.mlp import MLP
    from meta_learning.models.resnet12 import ResNet12
    from meta_learning.multimodal.adapter import ModalityLayout, MultiModalAdapter
    from meta_learning.nas.darts import DARTS
    from meta_learning.nas.nb201 import NASBench201Space
    from meta_learning.nas.search import NeuralArchitectureSearch
    from meta_learning.optim.adaptive import AdaptiveOptimizer
    from meta_learning.optim.analyzer import LearningCurveAnalyzer
    from meta_learning.search.optimizer import BayesianOptimizer
    from meta_learning.search.space import SearchSpace
    from meta_learning.tools.features import Tool
    from meta_learning.tools.learner import ToolChoice, ToolMetaLearner
    from meta_learning.training.loop import History, fit


__getattr__ = lazy_getattr("meta_learning", _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
