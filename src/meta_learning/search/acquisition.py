"""Acquisition functions and their optimisation over a mixed search space.

Notation: ``μ [m]``, ``σ² [m]`` posterior mean and variance of the (maximised, standardised) objective at ``m``
points; ``y* `` the incumbent (best observed value); ``z = (μ - y*) / σ``; ``φ``, ``Φ`` the standard normal pdf and
cdf; ``h(z) = φ(z) + z Φ(z)``.

- Expected improvement ``EI = σ h(z)``; log expected improvement ``LogEI = log h(z) + log σ``, with ``log h``
  evaluated stably for very negative ``z`` as in Ament et al. 2023 ("Unexpected improvements to expected
  improvement for Bayesian optimization", eq. 9): for ``z > -1`` directly; for ``-1/√ε < z <= -1`` as
  ``-z²/2 - log √(2π) + log1mexp(log(erfcx(-z/√2) |z|) + log √(π/2))``; below that as ``-z²/2 - log √(2π) - 2 log|z|``.
  LogEI keeps a useful gradient where EI underflows to 0.
- Upper confidence bound ``UCB = μ + √β σ``.

Optimisation (:func:`maximize_acquisition`): score many random candidates (scrambled Sobol points for the continuous
columns, uniform choices for the categorical ones, plus perturbations of the best observed points), run L-BFGS-B over
the float columns from the best few (in lengthscale units, as Optuna's GPSampler does; with
``start_selection="roulette"`` from the best one, the best observed point and candidates drawn in proportion to
``exp(acq - max acq)``, as Optuna starts them), then improve the discrete choices by a greedy coordinate search: each
categorical parameter's alternatives and each int parameter's neighbours (``±1``). A space without float parameters of
at most ``MAX_ENUMERATE`` configurations is searched exhaustively instead. In spaces without float parameters,
configurations to avoid (e.g. those already evaluated) can be excluded, as BoTorch's
``optimize_acqf_discrete(X_avoid=...)`` does. Points are always evaluated at valid configurations (ints rounded,
inactive columns reset), so the GP never sees "phantom" variation inside one integer's bin (Garrido-Merchán &
Hernández-Lobato 2020).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from meta_learning._checks import check_choice
from meta_learning.search.space import SearchSpace

F64 = torch.float64
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_LOG_SQRT_PI_2 = 0.5 * math.log(math.pi / 2)
_INV_SQRT_EPS = 1.0 / math.sqrt(torch.finfo(F64).eps)
#: discrete spaces up to this many configurations are searched exhaustively (NAS-Bench-201's cell space: 15,625)
MAX_ENUMERATE = 32768


def _log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x < 0`` (Mächler 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _pdf(z: Tensor) -> Tensor:
    return torch.exp(-0.5 * z * z - _LOG_SQRT_2PI)


def _cdf(z: Tensor) -> Tensor:
    return 0.5 * torch.special.erfc(-z / math.sqrt(2.0))


def log_h(z: Tensor) -> Tensor:
    """``log(φ(z) + z Φ(z))`` evaluated without underflow."""
    z_hi = z.clamp_min(-1.0)  # branches are computed on safe inputs so that gradients stay finite
    direct = torch.log(_pdf(z_hi) + z_hi * _cdf(z_hi))
    z_mid = z.clamp(-_INV_SQRT_EPS, -1.0)
    log_erfcx_term = torch.log(torch.special.erfcx(-z_mid / math.sqrt(2)) * z_mid.abs()) + _LOG_SQRT_PI_2
    mid = -0.5 * z_mid**2 - _LOG_SQRT_2PI + _log1mexp(log_erfcx_term)
    z_lo = z.clamp_max(-_INV_SQRT_EPS)
    tail = -0.5 * z_lo**2 - _LOG_SQRT_2PI - 2.0 * torch.log(z_lo.abs())
    return torch.where(z > -1.0, direct, torch.where(z > -_INV_SQRT_EPS, mid, tail))


def log_expected_improvement(mean: Tensor, var: Tensor, best: float | Tensor) -> Tensor:
    """``log EI`` ``[m]`` for maximisation, from posterior ``mean [m]`` and ``var [m]``."""
    sigma = var.clamp_min(1e-12).sqrt()
    return log_h((mean - best) / sigma) + sigma.log()


def log_expected_improvement_and_grad(
    mean: Tensor, var: Tensor, dmean: Tensor, dvar: Tensor, best: float | Tensor
) -> tuple[Tensor, Tensor]:
    """:func:`log_expected_improvement` ``[m]`` and its gradient ``[m, D]`` from the posterior's gradients.

    From ``h'(z) = Φ(z)``: ``∂ LogEI/∂μ = Φ(z) / (h(z) σ)`` and ``∂ LogEI/∂σ = φ(z) / (h(z) σ)``; both ratios come
    from :func:`_h_ratios`, which stays accurate where ``h`` underflows."""
    sigma = var.clamp_min(1e-12).sqrt()
    z = (mean - best) / sigma
    cdf_ratio, pdf_ratio = _h_ratios(z)
    grad = (cdf_ratio / sigma).unsqueeze(-1) * dmean + (pdf_ratio / (2.0 * var.clamp_min(1e-12))).unsqueeze(-1) * dvar
    return log_h(z) + sigma.log(), grad


def _h_ratios(z: Tensor) -> tuple[Tensor, Tensor]:
    """``(Φ(z) / h(z), φ(z) / h(z))``. With the Mills ratio ``R = Φ/φ``, ``h = φ q`` where ``q = 1 + zR``: above
    ``z = -1`` directly from ``φ`` and ``Φ``; down to ``z = -100`` as ``R / q`` and ``1 / q`` with
    ``R = √(π/2) erfcx(-z/√2)`` and ``q = 1 - |z| R`` from ``log1mexp`` (relative error ~ ε z², so a difference of
    log-densities, which cancels catastrophically, is avoided); below that from the asymptotic series
    ``R = -(1/z)(1 - z⁻² + 3z⁻⁴ - 15z⁻⁶ + 105z⁻⁸)``, ``q = z⁻² (1 - 3z⁻² + 15z⁻⁴ - 105z⁻⁶)`` (next terms below 1e-13
    relative at ``|z| = 100``)."""
    z_hi = z.clamp_min(-1.0)
    pdf, cdf = _pdf(z_hi), _cdf(z_hi)
    h = pdf + z_hi * cdf
    z_mid = z.clamp(-100.0, -1.0)
    mills = torch.special.erfcx(-z_mid / math.sqrt(2)) * math.sqrt(math.pi / 2)
    q = torch.exp(_log1mexp(torch.log(mills * z_mid.abs())))
    u = z.clamp_max(-100.0).pow(-2)  # z⁻²
    q_tail = 1.0 - u * (3.0 - u * (15.0 - 105.0 * u))  # q z²
    r_tail = 1.0 - u * (1.0 - u * (3.0 - u * (15.0 - 105.0 * u)))  # -R z
    hi, mid = z > -1.0, z > -100.0
    z_lo = z.clamp_max(-100.0)
    cdf_ratio = torch.where(hi, cdf / h, torch.where(mid, mills / q, -z_lo * r_tail / q_tail))
    pdf_ratio = torch.where(hi, pdf / h, torch.where(mid, 1.0 / q, z_lo * z_lo / q_tail))
    return cdf_ratio, pdf_ratio


def expected_improvement(mean: Tensor, var: Tensor, best: float | Tensor) -> Tensor:
    """Plain ``EI = σ (φ(z) + z Φ(z))`` (underflows for very negative ``z``; use :func:`log_expected_improvement`)."""
    sigma = var.clamp_min(1e-12).sqrt()
    z = (mean - best) / sigma
    return sigma * (_pdf(z) + z * _cdf(z))


def upper_confidence_bound(mean: Tensor, var: Tensor, beta: float) -> Tensor:
    """``μ + √β σ``."""
    return mean + math.sqrt(beta) * var.clamp_min(0.0).sqrt()


def upper_confidence_bound_and_grad(
    mean: Tensor, var: Tensor, dmean: Tensor, dvar: Tensor, beta: float
) -> tuple[Tensor, Tensor]:
    """:func:`upper_confidence_bound` ``[m]`` and its gradient ``[m, D]``."""
    sigma = var.clamp_min(1e-12).sqrt()
    return mean + math.sqrt(beta) * sigma, dmean + (math.sqrt(beta) / (2.0 * sigma)).unsqueeze(-1) * dvar


def _evaluate(acq: Callable[[Tensor], Tensor], x: Tensor, chunk: int = 512) -> Tensor:
    # chunks of 512 rows keep the [chunk, n] kernel blocks in cache: 2x faster than one [4096, n] pass at n = 100
    with torch.no_grad():
        return torch.cat([acq(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)])


class _RowSet:
    """A set of valid encoded configurations ``[k, D]`` for membership tests of many rows.

    Rows are equal when they agree to 2⁻²⁰ in every column. The set's rows are quantised, de-duplicated, hashed
    and sorted once; a query hashes its rows, looks them up by binary search and confirms each hit column by column.
    (Two different set rows with the same 64-bit hash, probability ~k²/2⁶⁴, could hide one of them.)
    """

    def __init__(self, rows: Tensor) -> None:
        self._rows = torch.unique(self._quantise(rows), dim=0)
        # a random linear hash with fixed odd coefficients, in wrapping int64 arithmetic
        gen = torch.Generator().manual_seed(0)
        self._coef = torch.randint(-(2**62), 2**62, (rows.shape[1],), generator=gen) | 1
        self._hashes, self._order = torch.sort((self._rows * self._coef).sum(1))

    @staticmethod
    def _quantise(x: Tensor) -> Tensor:
        return torch.round(x * 2**20).to(torch.int64)

    def contains(self, x: Tensor) -> Tensor:
        """``[m]`` bool: which rows of ``x [m, D]`` are in the set."""
        qx = self._quantise(x)
        hx = (qx * self._coef).sum(1)
        pos = torch.searchsorted(self._hashes, hx).clamp_max(self._hashes.shape[0] - 1)
        hit = self._hashes[pos] == hx
        rows = hit.nonzero().squeeze(1)  # confirm: a hash collision between different rows must not count
        hit[rows] = (qx[rows] == self._rows[self._order[pos[rows]]]).all(1)
        return hit


def _avoiding(acq: Callable[[Tensor], Tensor], avoid: _RowSet, x: Tensor) -> Tensor:
    """``acq(x)`` with ``-inf`` at the rows of ``x`` that are in ``avoid``."""
    return acq(x).masked_fill(avoid.contains(x), -math.inf)


def _roulette(values: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Indices ``[<= k]``: the argmax of ``values [m]`` (log-scale scores, ``-inf`` allowed), then up to ``k - 1``
    others drawn without replacement with probability ``∝ exp(values - max)``; only those of nonzero weight."""
    best = int(torch.argmax(values))
    if k <= 1 or not math.isfinite(float(values[best])):
        return torch.tensor([best])
    weights = torch.exp(values - values[best])
    weights[best] = 0.0
    draws = min(k - 1, int((weights > 0).sum()))
    if draws == 0:
        return torch.tensor([best])
    others = torch.multinomial(weights, draws, replacement=False, generator=generator)
    return torch.cat([torch.tensor([best]), others])


def _candidates(space: SearchSpace, n: int, incumbents: Tensor, generator: torch.Generator) -> Tensor:
    x = space.sample_encoded(n, generator)
    cont = space.continuous_columns
    if cont:  # ints take Sobol values too, and are rounded by the final snap
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        sobol = torch.quasirandom.SobolEngine(len(cont), scramble=True, seed=seed)
        x[:, cont] = sobol.draw(n, dtype=F64)
    if incumbents.shape[0]:
        # local candidates: the best observed points with jittered continuous columns and one re-drawn categorical
        reps = max(1, n // (4 * incumbents.shape[0]))
        local = incumbents.repeat(reps, 1)
        if cont:
            pick = torch.randint(3, (local.shape[0], 1), generator=generator)
            scale = torch.tensor([0.02, 0.1, 0.3], dtype=F64)[pick]
            noise = scale * torch.randn(local.shape[0], len(cont), generator=generator, dtype=F64)
            local[:, cont] = (local[:, cont] + noise).clamp(0.0, 1.0)
        groups = space.categorical_groups
        if groups:
            fresh = space.sample_encoded(local.shape[0], generator)
            which = torch.randint(len(groups), (local.shape[0],), generator=generator)
            for gi, group in enumerate(groups):
                rows = which == gi
                local[rows.nonzero().squeeze(-1).unsqueeze(-1), torch.tensor(group)] = fresh[rows][:, group]
        x = torch.cat([x, local])
    return space.snap(x)


def _lbfgsb(
    acq: Callable[[Tensor], Tensor],
    starts: Tensor,
    cont: list[int],
    maxiter: int,
    scales: Tensor | None = None,
    acq_with_grad: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None,
    gtol: float = 1e-5,
) -> Tensor:
    """Jointly maximise the acquisition over the continuous columns of every start (the starts are independent,
    so the gradient of the summed value is each start's own gradient).

    With ``scales`` (the GP's lengthscales of the ``cont`` columns) the search runs in ``u = x / ℓ``, where the
    kernel, and so the acquisition, varies equally fast along every coordinate: a better-conditioned problem for
    L-BFGS-B, which then needs fewer iterations. ``acq_with_grad`` (values and their gradients ``[m, D]`` in
    closed form) replaces autograd through ``acq`` when given."""
    fixed = starts.clone()
    shape = (starts.shape[0], len(cont))
    s = torch.ones(len(cont), dtype=F64) if scales is None else scales.to(F64).clamp(1e-3, 1e3)

    def objective(vec: np.ndarray) -> tuple[float, np.ndarray]:
        u = torch.tensor(vec, dtype=F64).reshape(shape).requires_grad_(acq_with_grad is None)
        x = fixed.clone()
        x[:, cont] = (u * s).clamp(0.0, 1.0)  # the bounds keep u * s inside [0, 1]; the clamp removes round-off
        if acq_with_grad is not None:
            val, grad_x = acq_with_grad(x)
            total, grad = -val.sum(), -grad_x[:, cont] * s
        else:
            total = -acq(x).sum()
            (grad,) = torch.autograd.grad(total, u)
        if not torch.isfinite(total):
            return 1e10, np.zeros_like(vec)
        return float(total.detach()), np.nan_to_num(grad.numpy().ravel())

    x0 = (starts[:, cont] / s).numpy().ravel()
    bounds = [(0.0, float(1.0 / v)) for v in s] * shape[0]
    res = minimize(objective, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": maxiter, "gtol": gtol})  # fmt: skip
    out = fixed.clone()
    out[:, cont] = (torch.tensor(res.x, dtype=F64).reshape(shape) * s).clamp(0.0, 1.0)
    return out


def _discrete_search(
    acq: Callable[[Tensor], Tensor], space: SearchSpace, x: Tensor, value: Tensor, passes: int = 3
) -> tuple[Tensor, Tensor]:
    """Greedy coordinate ascent over each row's categorical choices and integer neighbours."""
    moves: list[Callable[[Tensor], Tensor]] = []
    for group in space.categorical_groups:
        moves += [functools.partial(_set_choice, group=group, j=j) for j in group]
    for col, p in space.int_columns:
        moves += [functools.partial(_shift_int, col=col, p=p, shift=shift) for shift in (-1, 1)]
    for _ in range(passes):
        improved = False
        for move in moves:
            alt = space.snap(move(x))
            v = torch.nan_to_num(_evaluate(acq, alt), nan=-math.inf)
            better = v > value + 1e-12
            if better.any():
                x[better], value[better] = alt[better], v[better]
                improved = True
        if not improved:
            break
    return x, value


def _set_choice(x: Tensor, group: list[int], j: int) -> Tensor:
    alt = x.clone()
    alt[:, group] = 0.0
    alt[:, j] = 1.0
    return alt


def _shift_int(x: Tensor, col: int, p: Any, shift: int) -> Tensor:
    alt = x.clone()
    alt[:, col] = p.snap(x[:, col], shift)
    return alt


def maximize_acquisition(
    acq: Callable[[Tensor], Tensor],
    space: SearchSpace,
    *,
    generator: torch.Generator,
    incumbents: Tensor | None = None,
    num_candidates: int = 2048,
    num_starts: int = 8,
    maxiter: int = 100,
    lengthscales: Tensor | None = None,
    acq_with_grad: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None,
    gtol: float = 1e-5,
    avoid: Tensor | None = None,
    max_enumerate: int = MAX_ENUMERATE,
    start_selection: str = "top",
) -> Tensor:
    """Return the encoded point ``[D]`` with the highest acquisition value found.

    Args:
        acq: maps ``[m, D]`` encoded points to ``[m]`` values; differentiable in the continuous columns.
        space: the search space (column layout, conditions).
        generator: randomness of the candidates.
        incumbents: ``[k, D]`` good observed points to search around (optional).
        num_candidates: random candidates scored before the local searches.
        num_starts: candidates refined by L-BFGS-B and categorical search.
        maxiter: L-BFGS-B iterations.
        lengthscales: ``[D]`` the surrogate's lengthscales, to precondition the continuous search (optional).
        acq_with_grad: ``acq``'s values ``[m]`` and gradients ``[m, D]`` in closed form, used by the continuous
            search instead of autograd (optional; e.g. :func:`log_expected_improvement_and_grad` of
            :meth:`GaussianProcess.posterior_with_grad`).
        gtol: L-BFGS-B's tolerance on the projected gradient (in lengthscale units when ``lengthscales`` is
            given); SciPy's default here, :class:`GPStrategy` passes Optuna GPSampler's 1e-2 for LogEI.
        avoid: ``[k, D]`` encoded configurations not to return while another one is available (e.g. those already
            evaluated); honoured in spaces without float parameters, where an exact repeat is otherwise likely.
        max_enumerate: a space without float parameters holding at most this many configurations is searched
            exhaustively (every configuration scored) instead of by candidates and coordinate search.
        start_selection: which candidates start the local searches. ``"top"``: the ``num_starts`` highest-scoring
            ones. ``"roulette"``: the highest-scoring one, the best incumbent, and the rest drawn without
            replacement with probability proportional to ``exp(acq - max acq)`` (the EI ratio for LogEI), so the
            searches spread over the acquisition's other modes, as Optuna's GPSampler does; fewer when fewer
            candidates have a weight that does not underflow.
    """
    check_choice("start_selection", start_selection, ("top", "roulette"))
    discrete = not space.float_columns
    # avoidance applies where exact repeats happen: spaces without float parameters
    avoided = _RowSet(space.canonical(avoid.to(F64))) if discrete and avoid is not None and avoid.shape[0] else None
    if discrete and (space.num_configurations or 0) <= max_enumerate:
        every = space.enumerate_encoded()
        values = torch.nan_to_num(_evaluate(acq, every), nan=-math.inf)
        if avoided is not None:
            hit = avoided.contains(every)
            if not hit.all():  # when every configuration is to be avoided, the best one is repeated
                values = values.masked_fill(hit, -math.inf)
        return every[int(torch.argmax(values))]
    if avoided is not None:
        acq = functools.partial(_avoiding, acq, avoided)
    inc = incumbents if incumbents is not None else torch.zeros(0, space.dim, dtype=F64)
    cand = _candidates(space, num_candidates, inc.to(F64), generator)
    values = _evaluate(acq, cand)
    values = torch.nan_to_num(values, nan=-math.inf)
    incumbent_start = start_selection == "roulette" and inc.shape[0] > 0 and num_starts > 1
    if start_selection == "top":
        chosen = torch.argsort(values, descending=True)[: min(num_starts, cand.shape[0])]
    else:
        chosen = _roulette(values, num_starts - int(incumbent_start), generator)
    starts, start_vals = cand[chosen].clone(), values[chosen].clone()
    if incumbent_start:
        best_inc = space.snap(inc[:1].to(F64))
        starts = torch.cat([starts, best_inc])
        start_vals = torch.cat([start_vals, torch.nan_to_num(_evaluate(acq, best_inc), nan=-math.inf)])
    floats = space.float_columns
    if floats:
        scales = lengthscales[floats] if lengthscales is not None else None
        refined = space.snap(_lbfgsb(acq, starts, floats, maxiter, scales, acq_with_grad, gtol))
        ref_vals = torch.nan_to_num(_evaluate(acq, refined), nan=-math.inf)
        keep = ref_vals > start_vals
        starts[keep], start_vals[keep] = refined[keep], ref_vals[keep]
    if space.categorical_groups or space.int_columns:
        starts, start_vals = _discrete_search(acq, space, starts, start_vals)
    return starts[int(torch.argmax(start_vals))]
