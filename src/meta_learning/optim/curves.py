"""Parametric learning-curve families and their least-squares fits with uncertainty.

The families are those of Domhan, Springenberg & Hutter 2015 ("Speeding up automatic hyperparameter
optimization of deep neural networks by extrapolation of learning curves", IJCAI, Table 1), written for a curve
that rises towards an asymptote (a loss is fitted with its sign flipped). Notation:

- ``x [n] > 0`` the steps (epochs) observed, ``y [n]`` the values, ``θ [p]`` a family's parameters,
  ``f(x; θ)`` the family.
- Fit: ``θ̂ = argmin Σ_i (y_i - f(x_i; θ))²`` (Levenberg-Marquardt from several data-driven starts).
- Uncertainty (Laplace / delta method in place of Domhan's MCMC): ``s² = RSS / (n - p)``,
  ``Σ_θ = s² (JᵀJ)⁺`` with ``J [n, p] = ∂f(x_i)/∂θ``; at ``x*`` the predictive variance is
  ``g*ᵀ Σ_θ g* + s²`` with ``g* = ∂f(x*)/∂θ``.
- Model averaging over the families that fit: weights ``∝ exp(-BIC/2)``, ``BIC = n log(RSS/n) + p log n``;
  the mixture mean is ``Σ w_k μ_k`` and its variance ``Σ w_k (σ_k² + μ_k²) - μ²``.

| name | ``f(x; θ)`` |
| --- | --- |
| pow3 | ``c - a x^(-α)`` |
| pow4 | ``c - (a x + b)^(-α)`` |
| exp3 | ``c - exp(-a x + b)`` |
| exp4 | ``c - exp(-a x^α + b)`` |
| log_power | ``a / (1 + (x / e^b)^c)`` |
| janoschek | ``α - (α - β) exp(-κ x^δ)`` |
| weibull | ``α - (α - β) exp(-(κ x)^δ)`` |
| mmf | ``α - (α - β) / (1 + (κ x)^δ)`` |
| hill3 | ``y_max x^η / (κ^η + x^η)`` |
| ilog2 | ``c - a / log(x + 1)`` |
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import leastsq
from torch import Tensor

F64 = torch.float64
Family = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _pow3(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    c, a, alpha = t
    return c - a * x ** (-alpha)


def _pow4(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    c, a, b, alpha = t
    return c - np.maximum(a * x + b, 1e-12) ** (-alpha)


def _exp3(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    c, a, b = t
    return c - np.exp(-a * x + b)


def _exp4(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    c, a, b, alpha = t
    return c - np.exp(-a * x**alpha + b)


def _log_power(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    a, b, c = t
    return a / (1.0 + (x / np.exp(b)) ** c)


def _janoschek(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    alpha, beta, kappa, delta = t
    return alpha - (alpha - beta) * np.exp(-kappa * x**delta)


def _weibull(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    alpha, beta, kappa, delta = t
    return alpha - (alpha - beta) * np.exp(-((abs(kappa) * x) ** delta))


def _mmf(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    alpha, beta, kappa, delta = t
    return alpha - (alpha - beta) / (1.0 + (abs(kappa) * x) ** delta)


def _hill3(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    ymax, eta, kappa = t
    return ymax * x**eta / (abs(kappa) ** eta + x**eta)


def _ilog2(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    c, a = t
    return c - a / np.log(x + 1.0)


def _jacobian(fn: Family, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``[n, p]`` central finite differences of ``fn(x; θ)`` in ``θ``."""
    jac = np.empty((x.size, t.size))
    for k in range(t.size):
        h = 1e-6 * max(abs(t[k]), 1e-3)
        up, down = t.copy(), t.copy()
        up[k] += h
        down[k] -= h
        jac[:, k] = (fn(x, up) - fn(x, down)) / (2 * h)
    return jac


def _inits(name: str, x: np.ndarray, y: np.ndarray) -> list[list[float]]:
    """Starting points from the data: the asymptote near the last value, the start near the first."""
    first, last = float(y[0]), float(y[-1])
    span = max(abs(last - first), 1e-3 * max(abs(last), 1.0))
    top = last + 0.1 * span
    xm = float(np.median(x))
    if name == "pow3":
        return [[top, span * x[0] ** a, a] for a in (0.5, 1.0, 2.0)]
    if name == "pow4":
        return [[top, 1.0 / xm, 1.0, a] for a in (0.5, 1.0)]
    if name == "exp3":
        return [[top, a / xm, math.log(span) + a * x[0] / xm] for a in (0.5, 2.0)]
    if name == "exp4":
        return [[top, a / xm, math.log(span) + a * x[0] / xm, 1.0] for a in (0.5, 2.0)]
    if name == "log_power":
        return [[top, math.log(xm), c] for c in (-0.5, -1.0, -2.0)] if top > 0 else []
    if name in ("janoschek", "weibull"):
        return [[top, first, k / xm, 1.0] for k in (0.5, 2.0)]
    if name == "mmf":
        return [[top, first, k / xm, 1.0] for k in (0.5, 2.0)]
    if name == "hill3":
        return [[top, e, xm] for e in (0.5, 1.0, 2.0)] if top > 0 else []
    if name == "ilog2":
        return [[top, span * math.log(x[0] + 1.0)]]
    raise KeyError(name)


FAMILIES: dict[str, tuple[Family, int]] = {
    "pow3": (_pow3, 3),
    "pow4": (_pow4, 4),
    "exp3": (_exp3, 3),
    "exp4": (_exp4, 4),
    "log_power": (_log_power, 3),
    "janoschek": (_janoschek, 4),
    "weibull": (_weibull, 4),
    "mmf": (_mmf, 4),
    "hill3": (_hill3, 3),
    "ilog2": (_ilog2, 2),
}


@dataclass(frozen=True)
class FamilyFit:
    """A fitted family: parameters ``θ̂ [p]``, their covariance ``[p, p]``, residual variance and BIC."""

    name: str
    params: Tensor
    covariance: Tensor
    noise_var: float
    rss: float
    bic: float

    def __call__(self, x: Tensor) -> Tensor:
        fn = FAMILIES[self.name][0]
        return torch.as_tensor(fn(x.to(F64).reshape(-1).numpy(), self.params.numpy()), dtype=F64)

    def predict(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance ``[m]`` of a new observation at steps ``x [m]``."""
        fn = FAMILIES[self.name][0]
        xs, theta = x.to(F64).reshape(-1).numpy(), self.params.numpy()
        with np.errstate(all="ignore"):
            jac = _jacobian(fn, xs, theta)  # [m, p]
            var = np.einsum("mp,pq,mq->m", jac, self.covariance.numpy(), jac) + self.noise_var
            mean = fn(xs, theta)
        return torch.as_tensor(mean, dtype=F64), torch.as_tensor(var, dtype=F64)


def fit_family(name: str, x: Tensor, y: Tensor) -> FamilyFit | None:
    """Least-squares fit of one family; None when it cannot be fitted (too few points, no finite solution)."""
    fn, p = FAMILIES[name]
    n = x.numel()
    if n <= p:
        return None
    xn, yn = x.to(F64).numpy(), y.to(F64).numpy()

    def residual(t: np.ndarray) -> np.ndarray:
        r = fn(xn, t) - yn
        return r if np.isfinite(r).all() else np.nan_to_num(r, nan=1e6, posinf=1e6, neginf=-1e6)

    best = None
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for init in _inits(name, xn, yn):
            # MINPACK's Levenberg-Marquardt with forward-difference Jacobians computed inside the C loop
            theta = leastsq(residual, np.asarray(init, dtype=float), maxfev=100 * (p + 1))[0]
            rss = float((residual(theta) ** 2).sum())
            if math.isfinite(rss) and (best is None or rss < best[1]):
                best = (theta, rss)
        if best is None or not np.isfinite(fn(xn, best[0])).all():
            return None
        jac = _jacobian(fn, xn, best[0])
    if not np.isfinite(jac).all():
        return None
    rss = max(best[1], 1e-300)
    noise = rss / (n - p)
    with np.errstate(all="ignore"):
        cov = noise * np.linalg.pinv(jac.T @ jac)
    if not np.isfinite(cov).all():  # a degenerate fit (e.g. parameters run off to huge values)
        return None
    bic = n * math.log(rss / n) + p * math.log(n)
    return FamilyFit(name, torch.as_tensor(best[0], dtype=F64), torch.as_tensor(cov, dtype=F64), noise, rss, bic)
