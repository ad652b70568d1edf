"""Gradient-based meta-learning on ``torch.func``: MAML (second and first order), MAML++ options, ANIL, Meta-SGD,
Reptile."""

from meta_learning.maml.batchnorm import PerStepBatchNorm, per_step_batchnorm, set_step
from meta_learning.maml.functional import default_loss, forward, inner_loop, resolve_inner_names
from meta_learning.maml.maml import MAML
from meta_learning.maml.variants import ANIL, MetaSGD, Reptile

__all__ = [
    "ANIL",
    "MAML",
    "MetaSGD",
    "PerStepBatchNorm",
    "Reptile",
    "default_loss",
    "forward",
    "inner_loop",
    "per_step_batchnorm",
    "resolve_inner_names",
    "set_step",
]
