"""An Optuna pruner that stops trials whose extrapolated learning curve is unlikely to beat the best trial.

Domhan, Springenberg & Hutter 2015: extrapolate the intermediate values a trial has reported
(``trial.report(value, step)``) to ``max_resource`` with a :class:`LearningCurveAnalyzer`, and prune when
``P(value at max_resource better than the best finished trial's value) < threshold``. The study's objective must be
the same quantity as the reported values at the final step (e.g. validation accuracy per epoch).

Example:
    >>> study = optuna.create_study(direction="maximize", pruner=LearningCurvePruner(max_resource=50))
"""

from __future__ import annotations

from optuna.pruners import BasePruner
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from meta_learning._checks import check_non_negative_int, check_positive_float, check_positive_int
from meta_learning.optim.analyzer import LearningCurveAnalyzer


class LearningCurvePruner(BasePruner):
    """Prune trials whose learning curve is predicted (with uncertainty) not to beat the incumbent.

    Args:
        max_resource: the step the objective is measured at (e.g. the last epoch).
        threshold: prune when the probability of improving on the best trial is below this.
        min_points: reported values needed before pruning is considered.
        n_startup_trials: finished trials needed before any pruning (at least one is always needed: it is the
            incumbent the curve is compared with).
        bounds: the metric's range, passed to the analyzer (e.g. ``(0, 1)`` for accuracy).
    """

    def __init__(
        self,
        max_resource: int,
        threshold: float = 0.05,
        min_points: int = 5,
        n_startup_trials: int = 3,
        bounds: tuple[float, float] | None = None,
    ) -> None:
        self.max_resource = check_positive_int("max_resource", max_resource)
        self.threshold = check_positive_float("threshold", threshold)
        if self.threshold >= 1:
            raise ValueError(f"threshold={threshold} must be in (0, 1)")
        self.min_points = check_positive_int("min_points", min_points)
        self.n_startup_trials = check_non_negative_int("n_startup_trials", n_startup_trials)
        self.bounds = bounds

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        values = trial.intermediate_values
        if len(values) < self.min_points:
            return False
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done or len(done) < self.n_startup_trials:
            return False  # no incumbent to compare with yet (n_startup_trials=0 included)
        steps = sorted(values)
        if steps[0] <= 0:
            steps_arg = [s + 1 - steps[0] for s in steps]  # the curve families need positive steps
            horizon = self.max_resource + 1 - steps[0]
        else:
            steps_arg, horizon = list(steps), self.max_resource
        if horizon <= steps_arg[-1]:
            return False
        maximize = study.direction == StudyDirection.MAXIMIZE
        analyzer = LearningCurveAnalyzer(mode="max" if maximize else "min", bounds=self.bounds,
                                         min_points=self.min_points)  # fmt: skip
        best = study.best_value
        curve = [values[s] for s in steps]
        return analyzer.should_stop(curve, horizon=horizon, best=best, threshold=self.threshold, steps=steps_arg)


__all__ = ["LearningCurvePruner"]
