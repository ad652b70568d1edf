"""Neural architecture search: search spaces, random / Bayesian / evolutionary search, DARTS, NAS-Bench-201.

- Spaces (architectures are frozen genotypes with a canonical string and JSON form, built into ``nn.Module``):
  :class:`NASBench201Space`, :class:`DARTSSpace`, :class:`MacroSpace`, or any ``SearchSpace`` (:class:`ParamSpace`).
- :class:`NeuralArchitectureSearch`: ask/tell search with the strategies of :mod:`meta_learning.search` (random,
  GP-BO) and regularized evolution, on any Optuna storage.
- Evaluators: the NAS-Bench-201 table (:class:`NASBench201Table`, :class:`TabularEvaluator`), short training with
  learning-curve early stopping (:class:`TrainingEvaluator`), a user function (:class:`FunctionEvaluator`).
- :class:`DARTS`: first- and second-order differentiable search with DARTS- / DARTS+ anti-collapse options.

Needs ``optuna`` (the ``search`` extra).
"""

from meta_learning.nas.darts import (
    DARTS,
    DARTSEpoch,
    darts_step,
    exact_unrolled_hypergradient,
    first_order_hypergradient,
    second_order_hypergradient,
    virtual_step,
)
from meta_learning.nas.darts_space import DARTSGenotype, DARTSNetwork, DARTSSpace
from meta_learning.nas.evaluators import (
    Evaluator,
    FunctionEvaluator,
    NASBench201Table,
    TabularEvaluator,
    TrainingEvaluator,
    TrainingRecord,
)
from meta_learning.nas.macro import MacroArchitecture, MacroNetwork, MacroSpace
from meta_learning.nas.nb201 import NASBench201Space, NB201Architecture, NB201Network
from meta_learning.nas.ops import DARTS_OPS, NB201_OPS
from meta_learning.nas.search import ArchitectureTrial, NASRecord, NASResult, NeuralArchitectureSearch
from meta_learning.nas.space import ArchitectureSpace, ParamSpace
from meta_learning.nas.supernet import DARTSSearchNetwork, MixedOp, NB201SearchNetwork
from meta_learning.nas.train import TrainResult, train_classifier

__all__ = [
    "DARTS",
    "DARTS_OPS",
    "NB201_OPS",
    "ArchitectureSpace",
    "ArchitectureTrial",
    "DARTSEpoch",
    "DARTSGenotype",
    "DARTSNetwork",
    "DARTSSearchNetwork",
    "DARTSSpace",
    "Evaluator",
    "FunctionEvaluator",
    "MacroArchitecture",
    "MacroNetwork",
    "MacroSpace",
    "MixedOp",
    "NASBench201Space",
    "NASBench201Table",
    "NASRecord",
    "NASResult",
    "NB201Architecture",
    "NB201Network",
    "NB201SearchNetwork",
    "NeuralArchitectureSearch",
    "ParamSpace",
    "TabularEvaluator",
    "TrainResult",
    "TrainingEvaluator",
    "TrainingRecord",
    "darts_step",
    "exact_unrolled_hypergradient",
    "first_order_hypergradient",
    "second_order_hypergradient",
    "train_classifier",
    "virtual_step",
]
