"""Gradient-based meta-learning on ``torch.func``: MAML (second and first order), MAML++ options, ANIL, Meta-SGD,
Reptile."""

from meta_learning.maml.functional import default_loss, forward, inner_loop, resolve_inner_names
from meta_learning.maml.maml import MAML
from meta_learning.maml.variants import ANIL, MetaSGD, Reptile

__all__ = ["ANIL", "MAML", "MetaSGD", "Reptile", "default_loss", "forward", "inner_loop", "resolve_inner_names"]
