"""Search core: spaces, Gaussian-process Bayesian optimisation, ask/tell strategies on Optuna storages.

Used directly for hyperparameter search (:class:`BayesianOptimizer`) and by architecture search (``nas``).
Needs ``optuna`` (the ``search`` extra).
"""

from meta_learning.search.acquisition import (
    expected_improvement,
    log_expected_improvement,
    maximize_acquisition,
    upper_confidence_bound,
)
from meta_learning.search.gp import GaussianProcess, GPPrior, fit_gp, log_marginal_likelihood, matern52
from meta_learning.search.optimizer import BayesianOptimizer, direction_from_objective, prior_data
from meta_learning.search.space import Categorical, Condition, Float, Int, SearchSpace
from meta_learning.search.strategies import (
    GPStrategy,
    RandomStrategy,
    SpaceSampler,
    available_strategies,
    make_strategy,
    register_strategy,
)
from meta_learning.search.study import Searcher, Trial
from meta_learning.search.warm_start import RGPE, PriorData, rgpe_weights

__all__ = [
    "RGPE",
    "BayesianOptimizer",
    "Categorical",
    "Condition",
    "Float",
    "GPPrior",
    "GPStrategy",
    "GaussianProcess",
    "Int",
    "PriorData",
    "RandomStrategy",
    "SearchSpace",
    "Searcher",
    "SpaceSampler",
    "Trial",
    "available_strategies",
    "direction_from_objective",
    "expected_improvement",
    "fit_gp",
    "log_expected_improvement",
    "log_marginal_likelihood",
    "make_strategy",
    "matern52",
    "maximize_acquisition",
    "prior_data",
    "register_strategy",
    "rgpe_weights",
    "upper_confidence_bound",
]
