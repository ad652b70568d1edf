"""Evaluation metrics shared by every learner: the five figures the library reports for a run.

1. **Transfer accuracy** (:func:`transfer_accuracy`): ``a_i`` the query accuracy on held-out test episode ``i`` of
   ``n`` (``N``-way ``K``-shot, classes never seen in training); the reported figure is the mean
   ``\\bar a = (1/n) sum_i a_i`` with the normal-approximation 95% half-width ``1.96 * s / sqrt(n)``, ``s`` the
   sample standard deviation (``n - 1`` in the denominator) — the convention of the few-shot literature.
2. **Adaptation speed** (:func:`adaptation_curve`, :func:`adaptation_speed`): ``a(k)`` the mean query accuracy
   after ``k`` inner-loop steps on each episode's support set, ``k = 0..K`` (``a(0)``: the un-adapted
   meta-parameters); steps to threshold ``k* = min {k : a(k) >= tau}``.
3. **Forgetting rate** (:func:`forgetting_rate`): average forgetting (Chaudhry et al. 2018) and backward transfer
   (Lopez-Paz & Ranzato 2017) of the accuracy matrix ``R [T, T]`` of a continual stream (notation below).
4. **Parameter efficiency** (:func:`parameter_efficiency`): trainable / total parameter counts.
5. **Computational cost** (:func:`computational_cost`, :func:`cost_summary`): FLOPs of one training step counted
   by ``torch.utils.flop_counter.FlopCounterMode``, wall time per step and peak memory.

Each function returns a plain JSON-ready dict: the ``"metrics"`` section of a run's ``results.json``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from meta_learning._checks import check_finite_non_negative, check_non_negative_int, check_positive_int

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class MeanCI:
    """A per-episode quantity averaged over ``n`` episodes, with its 95% confidence half-width."""

    mean: float
    ci95: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.ci95:.4f} (n={self.n})"

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class Accuracy(MeanCI):
    """Mean accuracy over ``n`` episodes with its 95% confidence half-width (both fractions in [0, 1])."""

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f}% ± {100 * self.ci95:.2f}% (n={self.n})"


@dataclass(frozen=True)
class MeanSquaredError(MeanCI):
    """Mean over ``n`` regression episodes of the query mean-squared error, with its 95% half-width.

    ``non_finite``: how many of the ``n`` episodes had a NaN or infinite error (adaptation diverged); the mean is
    then not finite either: it is never taken over the finite episodes only.
    """

    non_finite: int = 0


def mean_ci95(values: Sequence[float] | Tensor) -> tuple[float, float]:
    """Mean and 95% confidence half-width of ``values`` (half-width 0 for a single value)."""
    t = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    n = t.numel()
    if n == 0:
        raise ValueError("values is empty; need at least one episode to summarise")
    mean = float(t.mean())
    if n == 1:
        return mean, 0.0
    return mean, Z_95 * float(t.std(unbiased=True)) / math.sqrt(n)


def accuracy_from_episodes(per_episode: Sequence[float] | Tensor) -> Accuracy:
    """Summarise per-episode accuracies as an :class:`Accuracy`."""
    mean, ci = mean_ci95(per_episode)
    return Accuracy(mean=mean, ci95=ci, n=len(per_episode))


def mse_from_episodes(per_episode: Sequence[float] | Tensor) -> MeanSquaredError:
    """Summarise per-episode mean-squared errors as a :class:`MeanSquaredError`."""
    mean, ci = mean_ci95(per_episode)
    bad = int((~torch.isfinite(torch.as_tensor(per_episode, dtype=torch.float64))).sum())
    return MeanSquaredError(mean=mean, ci95=ci, n=len(per_episode), non_finite=bad)


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction of rows of ``logits [M, N]`` whose argmax equals ``labels [M]``."""
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits has {logits.shape[0]} rows but labels has {labels.shape[0]} entries")
    if labels.numel() == 0:
        raise ValueError("accuracy of no examples is undefined: the episode or batch has no query examples")
    return float((logits.argmax(dim=-1) == labels).float().mean())


# -- continual learning -------------------------------------------------------------------------------------------
#
# Notation: ``R [T, T]`` the accuracy matrix of a stream of ``T`` experiences, ``R[i, j]`` the test accuracy on
# experience ``j`` after training on experiences ``0..i`` (entries above the diagonal are accuracies on experiences
# not trained on yet). ``b [T]`` the accuracies of the model before any training (its random initialisation).


@dataclass(frozen=True)
class ContinualMetrics:
    """Summary of an accuracy matrix ``R [T, T]`` (fractions in [0, 1]).

    Attributes:
        average_accuracy: ``A_T = (1/T) sum_j R[T-1, j]``, the mean final accuracy over all experiences.
        average_forgetting: ``F_T = (1/(T-1)) sum_{j<T-1} max_{l<T-1} R[l, j] - R[T-1, j]`` (Chaudhry et al. 2018;
            the maximum includes rows ``l < j``, see :func:`forgetting`).
        bwt: backward transfer ``(1/(T-1)) sum_{i<T-1} R[T-1, i] - R[i, i]`` (Lopez-Paz & Ranzato 2017).
        fwt: forward transfer ``(1/(T-1)) sum_{i>=1} R[i-1, i] - b[i]``; ``None`` without ``b``, and for
            class-incremental runs that mask the output units of unseen classes, where ``R[i-1, i] = 0`` by
            construction (:class:`~meta_learning.continual.loop.StreamResult` passes no ``b`` for those).
        final_accuracies: ``R[T-1, :]``.
    """

    average_accuracy: float
    average_forgetting: float
    bwt: float
    fwt: float | None
    final_accuracies: tuple[float, ...]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _accuracy_matrix(matrix: Sequence[Sequence[float]] | Tensor) -> Tensor:
    r = torch.as_tensor(matrix, dtype=torch.float64)
    if r.dim() != 2 or r.shape[0] != r.shape[1] or r.shape[0] == 0:
        raise ValueError(f"the accuracy matrix must be square [T, T] with T >= 1, got shape {tuple(r.shape)}")
    if not bool(torch.isfinite(r).all()):
        raise ValueError("the accuracy matrix holds non-finite entries")
    return r


def _step(r: Tensor, k: int | None) -> int:
    t = r.shape[0]
    k = t - 1 if k is None else k
    if not 0 <= k < t:
        raise ValueError(f"k={k} but the accuracy matrix has rows 0..{t - 1}")
    return k


def average_accuracy(matrix: Sequence[Sequence[float]] | Tensor, k: int | None = None) -> float:
    """``A_k = (1/(k+1)) sum_{j<=k} R[k, j]``: mean accuracy on the experiences seen by step ``k`` (default last)."""
    r = _accuracy_matrix(matrix)
    k = _step(r, k)
    return float(r[k, : k + 1].mean())


def forgetting(matrix: Sequence[Sequence[float]] | Tensor, k: int | None = None) -> list[float]:
    """Per-experience forgetting after step ``k``: ``f_j = max_{l<k} R[l, j] - R[k, j]`` for ``j < k``.

    This is Chaudhry et al. (2018)'s definition taken literally: ``f_j^k = max_{l in 1..k-1} a_{l,j} - a_{k,j}``,
    the maximum over *every* earlier row, including rows ``l < j`` measured before experience ``j`` was trained
    (on purpose, not an off-by-one). Those rows rarely decide the maximum (masked classes score 0 and an untrained
    head about chance), but when an experience was already solved before its own training (positive forward
    transfer, e.g. in a domain-incremental stream) they count as its best accuracy. Avalanche's forgetting uses
    another convention, the accuracy right after the experience's own training minus the current one,
    ``R[j, j] - R[k, j]`` (no maximum); compute that from the matrix when comparing with Avalanche.
    """
    r = _accuracy_matrix(matrix)
    k = _step(r, k)
    return [float(r[:k, j].max() - r[k, j]) for j in range(k)]


def average_forgetting(matrix: Sequence[Sequence[float]] | Tensor, k: int | None = None) -> float:
    """Mean of :func:`forgetting` after step ``k`` (Chaudhry et al. 2018); 0 when ``k == 0``."""
    f = forgetting(matrix, k)
    return sum(f) / len(f) if f else 0.0


def backward_transfer(matrix: Sequence[Sequence[float]] | Tensor) -> float:
    """BWT ``= (1/(T-1)) sum_{i<T-1} R[T-1, i] - R[i, i]`` (negative: forgetting); 0 for one experience."""
    r = _accuracy_matrix(matrix)
    t = r.shape[0]
    if t == 1:
        return 0.0
    return float((r[t - 1, : t - 1] - r.diagonal()[: t - 1]).mean())


def forward_transfer(matrix: Sequence[Sequence[float]] | Tensor, initial: Sequence[float] | Tensor) -> float:
    """FWT ``= (1/(T-1)) sum_{i>=1} R[i-1, i] - b[i]``, ``b`` the accuracies before training; 0 for one experience.

    Lopez-Paz & Ranzato (2017), ``b[i]`` the accuracy of the randomly initialised model on experience ``i``. It
    needs ``R[i-1, i]`` to be a real prediction on experience ``i``: in a class-incremental run whose unseen classes
    are masked it is 0 by construction and the result is just ``-mean(b[1:])``; don't call it for such runs (the
    continual loop reports ``None`` there).
    """
    r = _accuracy_matrix(matrix)
    b = torch.as_tensor(initial, dtype=torch.float64).reshape(-1)
    t = r.shape[0]
    if b.shape[0] != t:
        raise ValueError(f"initial has {b.shape[0]} entries but the accuracy matrix has {t} experiences")
    if t == 1:
        return 0.0
    return float((r[:-1].diagonal(offset=1) - b[1:]).mean())


def continual_metrics(
    matrix: Sequence[Sequence[float]] | Tensor, initial: Sequence[float] | Tensor | None = None
) -> ContinualMetrics:
    """All summaries of an accuracy matrix (see :class:`ContinualMetrics`)."""
    r = _accuracy_matrix(matrix)
    return ContinualMetrics(
        average_accuracy=average_accuracy(r),
        average_forgetting=average_forgetting(r),
        bwt=backward_transfer(r),
        fwt=None if initial is None else forward_transfer(r, initial),
        final_accuracies=tuple(float(a) for a in r[-1]),
    )


def forgetting_rate(matrix: Sequence[Sequence[float]] | Tensor | Any) -> dict[str, Any]:
    """The forgetting-rate record of a finished stream: its accuracy matrix, average forgetting and BWT.

    With ``R [T, T]`` as above: ``average_forgetting = (1/(T-1)) sum_{j<T-1} max_{l<T-1} R[l, j] - R[T-1, j]``
    (Chaudhry et al. 2018; higher is worse; negative when old tasks end above their best earlier accuracy) and
    ``bwt = (1/(T-1)) sum_{i<T-1} R[T-1, i] - R[i, i]`` (Lopez-Paz & Ranzato 2017; negative when the model
    forgets); both 0 for a single experience.

    Args:
        matrix: ``R`` as nested lists or a tensor, or anything with an ``accuracy_matrix`` attribute (the
            continual loop's ``StreamResult``).

    Returns:
        ``{"accuracy_matrix": [[...]], "average_forgetting": float, "bwt": float}``.

    Example:
        >>> forgetting_rate([[0.9, 0.1], [0.6, 0.8]])["bwt"]   # (0.6 - 0.9) / 1
        -0.3...
    """
    rows = getattr(matrix, "accuracy_matrix", matrix)
    r = _accuracy_matrix(rows)
    return {
        "accuracy_matrix": [[float(v) for v in row] for row in r.tolist()],
        "average_forgetting": average_forgetting(r),
        "bwt": backward_transfer(r),
    }


# -- transfer accuracy ---------------------------------------------------------------------------------------------


def transfer_accuracy(result: MeanCI | Sequence[float] | Tensor, n_way: int, k_shot: int) -> dict[str, Any]:
    """The transfer-accuracy record: mean and 95% half-width over ``n`` held-out ``n_way``-way ``k_shot``-shot episodes.

    Args:
        result: an :class:`Accuracy` (what ``learner.evaluate(episodes)`` returns) or the per-episode accuracies
            ``a_i`` in [0, 1], summarised by :func:`mean_ci95`.
        n_way, k_shot: the test episodes' ways and shots.

    Returns:
        ``{"mean": float, "ci95": float, "n": int, "n_way": int, "k_shot": int}``.
    """
    check_positive_int("n_way", n_way)
    check_positive_int("k_shot", k_shot)
    if isinstance(result, MeanSquaredError):
        raise TypeError("result is a MeanSquaredError (a regression figure); transfer accuracy needs an Accuracy")
    acc = result if isinstance(result, MeanCI) else accuracy_from_episodes(result)
    if not 0.0 <= acc.mean <= 1.0:
        raise ValueError(f"result has mean {acc.mean} but an accuracy is a fraction in [0, 1]")
    return {"mean": float(acc.mean), "ci95": float(acc.ci95), "n": int(acc.n), "n_way": n_way, "k_shot": k_shot}


# -- adaptation speed ----------------------------------------------------------------------------------------------


def adaptation_curve(learner: Any, episodes: Iterable[Any], max_steps: int) -> list[Accuracy]:
    """``a(k)`` for ``k = 0..max_steps``: query accuracy after ``k`` inner steps, over the same ``episodes``.

    For episode ``i`` with support set ``S_i`` and query set ``Q_i``, the inner loop gives ``theta_0 = theta`` (the
    meta-parameters) and ``theta_{k+1} = theta_k - alpha * grad L_{S_i}(theta_k)`` (ANIL adapts the head only,
    Meta-SGD uses learned per-parameter ``alpha``); ``a(k) = (1/n) sum_i acc(f_{theta_k}(Q_i), y_{Q_i})``, each
    with its 95% half-width. ``a(0)`` is the accuracy of the un-adapted model. One inner loop of ``max_steps``
    steps per episode gives every point (no meta-gradient is kept).

    Args:
        learner: a gradient-based meta-learner with ``adaptation_curve(episodes, steps)`` (the MAML family).
        episodes: held-out classification episodes (a list: it is read once).
        max_steps: ``K`` >= 0, the last number of inner steps.

    Returns:
        ``[a(0), ..., a(K)]`` as :class:`Accuracy` values.
    """
    check_non_negative_int("max_steps", max_steps)
    if not callable(getattr(learner, "adaptation_curve", None)):
        raise TypeError(
            f"learner must adapt with inner steps (have adaptation_curve(episodes, steps), like MAML, ANIL and "
            f"MetaSGD); got {type(learner).__name__}"
        )
    curve = learner.adaptation_curve(list(episodes), tuple(range(max_steps + 1)))
    out = [curve[k] for k in range(max_steps + 1)]
    if any(not isinstance(a, Accuracy) for a in out):
        raise TypeError("the episodes are regression tasks; the adaptation curve is defined for accuracy")
    return out


def steps_to_threshold(curve: Sequence[float | MeanCI], threshold: float) -> int | None:
    """``k* = min {k : a(k) >= threshold}`` over ``curve = [a(0), ..., a(K)]``; ``None`` if no step reaches it."""
    for k, a in enumerate(_curve_values(curve)):
        if a >= threshold:
            return k
    return None


def adaptation_speed(
    curve: Sequence[float | MeanCI], threshold: float | None = None, *, fraction: float = 0.9
) -> dict[str, Any]:
    """The adaptation-speed record of a curve ``[a(0), ..., a(K)]`` (see :func:`adaptation_curve`).

    Args:
        curve: accuracies after ``0..K`` inner steps (floats or :class:`Accuracy`).
        threshold: the accuracy ``tau`` in [0, 1] to reach; default ``fraction * a(K)``, i.e. the steps needed to
            get within ``1 - fraction`` (relative) of the accuracy after all ``K`` steps.
        fraction: in (0, 1]; used only when ``threshold`` is ``None``.

    Returns:
        ``{"steps": [0, ..., K], "accuracy": [a(0), ..., a(K)], "threshold": tau, "steps_to_threshold": k* | None}``.

    Example:
        >>> adaptation_speed([0.2, 0.6, 0.7], threshold=0.5)["steps_to_threshold"]
        1
    """
    values = _curve_values(curve)
    if threshold is None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction={fraction!r} but it must be a number in (0, 1]")
        tau = float(fraction) * values[-1]
    else:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold={threshold!r} but it must be an accuracy in [0, 1]")
        tau = float(threshold)
    return {
        "steps": list(range(len(values))),
        "accuracy": values,
        "threshold": tau,
        "steps_to_threshold": steps_to_threshold(values, tau),
    }


def _curve_values(curve: Sequence[float | MeanCI]) -> list[float]:
    values = [float(a.mean) if isinstance(a, MeanCI) else float(a) for a in curve]
    if not values:
        raise ValueError("curve is empty; give the accuracies after 0..K inner steps")
    if not all(0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"curve={values} but accuracies must be fractions in [0, 1]")
    return values


# -- parameter efficiency ------------------------------------------------------------------------------------------


def parameter_efficiency(module: nn.Module) -> dict[str, Any]:
    """The parameter-efficiency record: ``trainable`` and ``total`` parameter counts and ``fraction = trainable/total``.

    ``total`` counts every entry of every parameter once (shared tensors once); ``trainable`` those with
    ``requires_grad`` — what an optimiser over ``module.parameters()`` would update. An adapter object
    (:mod:`meta_learning.adapters`, anything with ``efficiency()``) reports its own counts: the active adapter's
    tensors over the whole adapted model (PEFT's ``print_trainable_parameters`` convention).

    Returns:
        ``{"trainable": int, "total": int, "fraction": float}``.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    report = getattr(module, "efficiency", None)
    if callable(report):
        counts = report()
        trainable, total = int(counts.trainable), int(counts.total)
    else:
        params = list(module.parameters())
        total = sum(p.numel() for p in params)
        trainable = sum(p.numel() for p in params if p.requires_grad)
    if total == 0:
        raise ValueError(f"module ({type(module).__name__}) has no parameters; parameter efficiency is undefined")
    return {"trainable": trainable, "total": total, "fraction": trainable / total}


# -- computational cost --------------------------------------------------------------------------------------------


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call of ``fn()``, counted by ``torch.utils.flop_counter.FlopCounterMode``.

    The counter sees every ATen op that runs, through autograd and ``torch.func`` transforms: matrix products
    (``mm``, ``addmm``, ``bmm``, ``baddbmm``), convolutions and scaled-dot-product attention, in the forward and in
    the backward pass (so second-order MAML terms are included). A multiply-add counts 2 FLOPs (``nn.Linear`` on
    ``[m, n] -> [m, k]``: ``2 m n k`` forward). Element-wise ops (activations, normalisation, optimiser updates)
    are not counted; they are memory-bound and small next to the products.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a callable taking no arguments, got {type(fn).__name__}")
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def reset_peak_memory(device: str | torch.device) -> None:
    """Start a new peak-memory window on a CUDA ``device`` (the CPU's peak RSS cannot be reset: no-op)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def peak_memory_bytes(device: str | torch.device) -> int:
    """Peak memory so far: ``torch.cuda.max_memory_allocated`` on CUDA (since :func:`reset_peak_memory`), else the
    process's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, over the process's life)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return int(torch.cuda.max_memory_allocated(dev))
    if dev.type != "cpu":
        raise ValueError(f"device={str(dev)!r}: peak memory is measured on 'cpu' or 'cuda' devices")
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def cost_summary(
    flops_per_step: int,
    train_wall_time_s: float,
    steps: int,
    device: str | torch.device,
    *,
    step_time_s: float | None = None,
    peak_memory: int | None = None,
) -> dict[str, Any]:
    """The computational-cost record of a training run.

    Args:
        flops_per_step: :func:`count_flops` of one training step (forward and backward of one episode or meta-batch).
        train_wall_time_s: wall time of training.
        steps: optimisation steps taken.
        device: where it ran.
        step_time_s: mean wall time of one step; default ``train_wall_time_s / steps`` (pass the time without
            validation when training interleaves it).
        peak_memory: peak memory in bytes; default :func:`peak_memory_bytes` of ``device`` now.

    Returns:
        ``{"flops_per_step": int, "train_wall_time_s": float, "steps": int, "step_time_s": float,
        "peak_memory_bytes": int, "device": str}``.
    """
    check_non_negative_int("flops_per_step", flops_per_step)
    check_finite_non_negative("train_wall_time_s", train_wall_time_s)
    check_positive_int("steps", steps)
    dev = torch.device(device)
    per_step = (
        train_wall_time_s / steps if step_time_s is None else check_finite_non_negative("step_time_s", step_time_s)
    )
    peak = peak_memory_bytes(dev) if peak_memory is None else check_non_negative_int("peak_memory", peak_memory)
    return {
        "flops_per_step": flops_per_step,
        "train_wall_time_s": float(train_wall_time_s),
        "steps": steps,
        "step_time_s": float(per_step),
        "peak_memory_bytes": peak,
        "device": str(dev),
    }


def computational_cost(
    step_fn: Callable[[], object], steps: int = 10, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Measure a training step: its FLOPs (:func:`count_flops`), its mean wall time over ``steps`` calls, and the
    peak memory (:func:`peak_memory_bytes`; on CUDA the window starts here and the device is synchronised before
    each clock reading).

    ``step_fn`` is called ``steps + 1`` times: once under the FLOP counter (not timed; it also warms up), then
    ``steps`` timed calls. It should run one full step (forward, backward, optimiser update).

    Returns:
        The :func:`cost_summary` record, ``train_wall_time_s`` being the ``steps`` timed calls.
    """
    check_positive_int("steps", steps)
    dev = torch.device(device)
    reset_peak_memory(dev)
    flops = count_flops(step_fn)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step_fn()
    sync()
    return cost_summary(flops, time.perf_counter() - start, steps, dev)
