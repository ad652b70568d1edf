"""``BayesianOptimizer``: Gaussian-process hyperparameter search with warm start from earlier studies.

Example:
    >>> bo = BayesianOptimizer(objective="validation_accuracy",
    ...                        search_space={"lr": (1e-5, 1e-1, "log"), "depth": (1, 6), "act": ["relu", "gelu"]})
    >>> best_params = bo.optimize(train_and_validate, num_trials=50)      # maximises: "accuracy" in the name
    >>> later = BayesianOptimizer("validation_accuracy", search_space=bo.space, warm_start=[bo.study])
"""

from __future__ import annotations

import math
import numbers
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
import torch
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import TrialState

from meta_learning.search.space import Float, Int, SearchSpace
from meta_learning.search.strategies import GPStrategy, trial_generator
from meta_learning.search.study import Searcher, open_storage
from meta_learning.search.warm_start import PriorData

# metric names (whole words, case-insensitive) whose direction is conventional
_MAXIMIZE_WORDS = frozenset({
    "accuracy", "acc", "score", "auc", "auroc", "auprc", "roc", "f1", "precision", "recall", "map", "ndcg", "mrr",
    "bleu", "rouge", "meteor", "chrf", "iou", "miou", "dice", "psnr", "ssim", "r2", "spearman", "pearson", "kappa",
    "mcc", "reward", "return", "likelihood", "loglik", "elbo", "throughput", "speedup",
})  # fmt: skip
_MINIMIZE_WORDS = frozenset({
    "loss", "error", "err", "nll", "mse", "mae", "rmse", "mape", "smape", "perplexity", "ppl", "regret", "cost",
    "time", "runtime", "duration", "latency", "wer", "cer", "fid", "ece", "brier", "kl", "divergence", "distance",
})  # fmt: skip
# a "neg"/"negative" word turns the metric around (scikit-learn's "neg_log_loss", "negative_log_likelihood")
_NEGATION_WORDS = frozenset({"neg", "negative"})
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def objective_words(objective: str) -> set[str]:
    """The lower-case words of a metric name: split at non-alphanumerics and at camelCase boundaries, each
    unsplit piece kept too (``"valAcc"`` -> val, acc, valacc; ``"mAP@5"`` -> map, m, ap, 5)."""
    words = set()
    for chunk in re.split(r"[^0-9A-Za-z]+", objective):
        if chunk:
            words.add(chunk.lower())
            words.update(w.lower() for w in _CAMEL_BOUNDARY.split(chunk))
    return words


def direction_from_objective(objective: str) -> str:
    """``"maximize"`` for accuracy/score-like names, ``"minimize"`` for loss/error-like names (see
    ``_MAXIMIZE_WORDS``/``_MINIMIZE_WORDS``; a "neg"/"negative" word flips the answer)."""
    if not isinstance(objective, str) or not objective:
        raise TypeError(f"objective must be a non-empty string naming the metric, got {objective!r}")
    words = objective_words(objective)
    up = bool(words & _MAXIMIZE_WORDS)
    down = bool(words & _MINIMIZE_WORDS)
    if up == down:
        found = sorted(words & (_MAXIMIZE_WORDS | _MINIMIZE_WORDS))
        why = (f"it names metrics of both kinds: {found}" if found else
               "it names no known metric such as 'accuracy', 'f1', 'bleu', 'loss', 'nll' or 'error'")  # fmt: skip
        raise ValueError(
            f"cannot tell from objective={objective!r} whether to maximise or minimise ({why}); pass "
            "direction='maximize' or direction='minimize'"
        )
    if words & _NEGATION_WORDS:
        up = not up
    return "maximize" if up else "minimize"


WarmStartItem = Any  # optuna.Study | str | Sequence[tuple[Mapping[str, Any], float]] | PriorData


def prior_data(
    item: WarmStartItem, space: SearchSpace, direction: str, storage: BaseStorage | None = None
) -> PriorData:
    """One earlier study as :class:`PriorData` in ``space``'s encoding, values in maximisation sign.

    ``item`` is an ``optuna.Study``, a study name in ``storage``, a :class:`Searcher`, or a sequence of
    ``(params, value)`` pairs measured in this study's ``direction``.
    """
    if isinstance(item, PriorData):
        return item
    if isinstance(item, Searcher):
        item = item.study
    if isinstance(item, str):
        if storage is None:
            raise ValueError(f"warm_start names study {item!r} but there is no storage to load it from")
        item = optuna.load_study(study_name=item, storage=storage)
    if isinstance(item, optuna.Study):
        sign = 1.0 if item.direction == StudyDirection.MAXIMIZE else -1.0
        trials = item.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        pairs = [(t.params, t.value) for t in trials]
    elif isinstance(item, Sequence):
        sign = 1.0 if direction == "maximize" else -1.0
        pairs = list(item)
    else:
        raise TypeError(
            f"warm_start item {item!r} is not understood; give an optuna.Study, a study name, a Searcher or a "
            "list of (params, value) pairs"
        )
    keep = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], Mapping)):
            raise TypeError(f"warm_start entry {i} must be a (params dict, value) pair, got {pair!r}")
        params, value = pair
        if value is None or not math.isfinite(float(value)):
            continue
        keep.append(({k: v for k, v in params.items() if k in space.params}, sign * float(value)))
    keep = _drop_outside(keep, space)
    x = space.encode([p for p, _ in keep]) if keep else torch.zeros(0, space.dim, dtype=torch.float64)
    return PriorData(x, torch.tensor([v for _, v in keep], dtype=torch.float64))


def _drop_outside(pairs: list[tuple[dict[str, Any], float]], space: SearchSpace) -> list[tuple[dict[str, Any], float]]:
    """The pairs whose active float/int parameters lie within the space's ranges; warns about the others (the
    encoding would clip them onto the boundary, where they were never measured)."""
    ranged = {name: p for name, p in space.params.items() if isinstance(p, (Float, Int))}
    outside: Counter[str] = Counter()
    keep = []
    for params, value in pairs:
        bad = []
        for name, p in ranged.items():
            if name not in params or not space.active(name, params):
                continue
            v = params[name]
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise TypeError(f"warm_start: {name}={v!r} in {params!r} must be a number for {p}")
            if not p.low <= float(v) <= p.high:
                bad.append(name)
        outside.update(bad)
        if not bad:
            keep.append((params, value))
    if outside:
        ranges = ", ".join(f"{name!r} ({n} outside [{ranged[name].low}, {ranged[name].high}])"
                           for name, n in outside.items())  # fmt: skip
        warnings.warn(
            f"warm_start: dropped {len(pairs) - len(keep)} of {len(pairs)} earlier observations with parameters "
            f"outside this search space: {ranges}",
            stacklevel=3,
        )
    return keep


class BayesianOptimizer(Searcher):
    """Gaussian-process Bayesian optimisation of a named objective (the seed's ``BayesianOptimizer``).

    Args:
        objective: the metric's name; sets ``direction`` when that is None (accuracy/score -> maximise,
            loss/error -> minimise).
        search_space: a :class:`SearchSpace` or a dict: ``(low, high)`` a float or int range, ``(low, high, 'log')``
            a log range, a list a categorical.
        direction: ``"maximize"``/``"minimize"``, overriding the guess from ``objective``.
        storage: None (an SQLite file under the cache root), ``"memory"``, a database URL or an Optuna storage.
        warm_start: earlier studies on related tasks (``optuna.Study`` objects, names of studies in ``storage``,
            :class:`Searcher`s, or lists of ``(params, value)`` pairs); combined by RGPE, which weights each by how
            well it ranks this study's observations and drops those that rank them badly.
        seed: seeds every random choice.
        study_name: join an existing study in ``storage`` (e.g. from other machines) or name the new one.
        strategy_options: passed to :class:`~meta_learning.search.strategies.GPStrategy` (``acquisition``,
            ``n_startup_trials``, ``constant_liar``, ...).
    """

    def __init__(
        self,
        objective: str = "validation_accuracy",
        search_space: SearchSpace | Mapping[str, Any] | None = None,
        direction: str | None = None,
        storage: str | BaseStorage | None = None,
        warm_start: WarmStartItem | Sequence[WarmStartItem] | None = None,
        seed: int | None = None,
        study_name: str | None = None,
        **strategy_options: Any,
    ) -> None:
        if search_space is None:
            raise ValueError("search_space is required: a SearchSpace or a dict such as {'lr': (1e-5, 1e-1, 'log')}")
        self.objective = objective
        direction = direction_from_objective(objective) if direction is None else direction
        space = SearchSpace.from_dict(search_space)
        items = _as_items(warm_start)
        # studies named by string live in the same storage as this one
        storage_obj = None
        if any(isinstance(i, str) for i in items):
            storage_obj, _ = open_storage(storage) if not isinstance(storage, BaseStorage) else (storage, None)
            storage = storage_obj
        priors = [prior_data(i, space, direction, storage_obj) for i in items]
        sampler = GPStrategy(space, seed=seed, warm_start=priors, **strategy_options)
        super().__init__(space, strategy=sampler, direction=direction, storage=storage, study_name=study_name)

    @property
    def warm_start_weights(self) -> list[float] | None:
        """The RGPE weights (earlier studies first, this study last) the next suggestion would use, or None."""
        sampler = self.sampler
        if not isinstance(sampler, GPStrategy) or not sampler.warm_start:
            return None
        x, y, pending, _ = sampler.training_data(self.study)
        weights = sampler.surrogate(x, y, pending, trial_generator(sampler.seed, len(self.study.trials))).weights
        return None if weights is None else weights.tolist()


def _as_items(warm_start: Any) -> list[Any]:
    if warm_start is None:
        return []
    if isinstance(warm_start, (optuna.Study, str, Searcher, PriorData)):
        return [warm_start]
    if isinstance(warm_start, Sequence):
        # a bare list of (params, value) pairs is one study, not many
        first = warm_start[0] if warm_start else None
        if isinstance(first, tuple) and len(first) == 2 and isinstance(first[0], Mapping):
            return [warm_start]
        return list(warm_start)
    raise TypeError(f"warm_start must be None, a study, a study name, or a list of them, got {warm_start!r}")
