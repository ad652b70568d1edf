"""Gaussian-process regression for Bayesian optimisation (torch, float64).

Notation (shapes in brackets):

- ``n`` observations, ``m`` query points, ``D`` encoded input columns (see :mod:`.space`).
- ``X [n, D]`` observed inputs in the unit cube; ``y [n]`` observed outputs, standardised to zero mean and unit
  variance by the caller (maximisation sign).
- ``ℓ [D]`` ARD lengthscales, ``σ_f²`` signal variance, ``σ_n²`` noise variance;
  ``θ = (log ℓ, log σ_f², log σ_n²) [D + 2]``.
- Matern-5/2 kernel: ``k(x, x') = σ_f² (1 + √5 r + 5/3 r²) exp(-√5 r)``, ``r² = Σ_d (x_d - x'_d)² / ℓ_d²``.
- ``K = k(X, X) + σ_n² I [n, n]``, ``L = chol(K)``, ``α = K⁻¹ y [n]``.
- Posterior of the latent ``f`` at ``x*``: ``μ(x*) = k(x*, X) α``,
  ``σ²(x*) = σ_f² - k(x*, X) K⁻¹ k(X, x*)`` (add ``σ_n²`` for a new noisy observation).
- Log marginal likelihood: ``log p(y | θ) = -½ yᵀ α - Σ_i log L_ii - (n/2) log 2π``.
- Priors (independent, :class:`GPPrior`): ``ℓ_d ~ Gamma(3, 6 min(1, √(2/D)))`` for continuous columns,
  ``log ℓ_d ~ N(½ log D, 3)`` for one-hot categorical columns, ``log σ_f² ~ N(0, 1)``, ``log σ_n² ~ N(-8, 2)``;
  ``θ̂ = argmax log p(y | θ) + log p(θ)`` within box bounds, by L-BFGS-B (closed-form gradient) from several
  starts (the previous optimum, the prior mode and random perturbations of it).
  An earlier version put ``log ℓ_d ~ N(½ log D, 3)`` on every column (after Hvarfner, Hellsten & Nardi 2024); on
  Hartmann-6, Ackley-5 and Levy-10 it let lengthscales of relevant dimensions run to 10 after points piled up on
  the box's faces, and the search stalled there (benchmarks/RESULTS.md, issue 6).
- Leave-one-out posterior (Rasmussen & Williams 2006, eq. 5.12): ``μ_{-i} = y_i - α_i / [K⁻¹]_ii``,
  ``σ²_{-i} = 1 / [K⁻¹]_ii``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from scipy.linalg.lapack import dpotrf, dpotri, dpotrs
from scipy.optimize import minimize
from torch import Tensor

F64 = torch.float64
Array = TypeVar("Array", Tensor, np.ndarray)
SQRT5 = math.sqrt(5.0)

# box bounds of θ (inputs live in [0, 1], outputs are standardised)
LOG_LENGTHSCALE_BOUNDS = (math.log(5e-3), math.log(1e3))
LOG_SIGNAL_BOUNDS = (math.log(1e-2), math.log(1e2))
LOG_NOISE_BOUNDS = (math.log(1e-6), math.log(1.0))


@dataclass(frozen=True)
class GPPrior:
    """Independent priors on the hyperparameters ``θ``.

    - Lengthscales of continuous (float and int) columns: ``ℓ_d ~ Gamma(3, 6 min(1, √(2/D)))`` for ``D`` encoded
      columns: for ``D <= 2`` the long-standing default of BoTorch's ``SingleTaskGP`` (mode ``1/3`` of the unit
      cube), for larger ``D`` its mode grows as ``√D`` (0.58 at ``D = 6``, 0.75 at ``D = 10``) — distances in the
      cube grow as ``√D``, and with a fixed mode a 10-D search saw too little of the objective's global trend
      (Hvarfner, Hellsten & Nardi 2024 scale their lengthscale prior the same way; benchmarks/RESULTS.md, issue 6:
      Levy-10 median regret at 50 / 100 trials 24.9 / 5.7 -> 14.5 / 3.5 over 20 seeds). The Gamma's exponential
      tail keeps a dimension from being declared irrelevant (``ℓ`` of 10 or more) on the strength of a few points
      that happen to vary little along it.
    - Lengthscales of one-hot categorical columns: ``log ℓ_d ~ N(½ log D, 3)``, long enough that observations in
      one category inform the others.
    - ``log σ_f² ~ N(0, 1)``, ``log σ_n² ~ N(-8, 2)`` (outputs are standardised): median noise 3e-4 of the output
      variance, 95% between 7e-6 and 0.017; the data raise it for a noisy objective. BoTorch's ``N(-4, 1)`` (median
      0.018) kept the GP from resolving the last digits of deterministic functions (Branin regret 3e-3 instead of
      3e-4 after 40 trials).

    Args:
        categorical_columns: indices of the one-hot columns (from :attr:`SearchSpace.categorical_groups`).
    """

    lengthscale_concentration: float = 3.0
    lengthscale_rate: float = 6.0  # at D <= 2; see lengthscale_rate_at
    categorical_loc: float = 0.0
    categorical_scale: float = math.sqrt(3.0)
    signal_loc: float = 0.0
    signal_scale: float = 1.0
    noise_loc: float = -8.0
    noise_scale: float = 2.0
    categorical_columns: tuple[int, ...] = ()

    def lengthscale_rate_at(self, dim: int) -> float:
        """The Gamma rate of the continuous lengthscales for ``dim`` encoded columns: ``rate · min(1, √(2/dim))``."""
        return self.lengthscale_rate * min(1.0, math.sqrt(2.0 / max(dim, 1)))

    def _categorical_mask(self, dim: int) -> Tensor:
        mask = torch.zeros(dim, dtype=torch.bool)
        if self.categorical_columns:
            mask[list(self.categorical_columns)] = True
        return mask

    def _normal_parts(self, dim: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(mask, loc, scale)`` of the coordinates of ``θ`` with a normal prior (categorical ℓ, σ_f², σ_n²);
        cached per dimension, since the fit evaluates the prior at every step (read-only tensors)."""
        return _prior_parts(self, dim)

    def _build_normal_parts(self, dim: int) -> tuple[Tensor, Tensor, Tensor]:
        mask = torch.cat([self._categorical_mask(dim), torch.ones(2, dtype=torch.bool)])
        loc = torch.full((dim + 2,), self.categorical_loc + 0.5 * math.log(dim), dtype=F64)
        scale = torch.full((dim + 2,), self.categorical_scale, dtype=F64)
        loc[dim:] = torch.tensor([self.signal_loc, self.noise_loc], dtype=F64)
        scale[dim:] = torch.tensor([self.signal_scale, self.noise_scale], dtype=F64)
        return mask, loc, scale

    def mode(self, dim: int) -> Tensor:
        """The most probable ``θ [D + 2]`` (a fitting start)."""
        mask, loc, _ = self._normal_parts(dim)
        gamma_mode = math.log((self.lengthscale_concentration - 1.0) / self.lengthscale_rate_at(dim))
        return torch.where(mask, loc, torch.full_like(loc, gamma_mode))

    def draw_start(self, dim: int, generator: torch.Generator) -> Tensor:
        """A random fitting start: the mode plus standard-normal noise (scaled by the prior scale where normal)."""
        mask, _, scale = self._normal_parts(dim)
        noise = torch.randn(dim + 2, generator=generator, dtype=F64)
        return self.mode(dim) + torch.where(mask, scale, torch.ones_like(scale)) * noise

    def log_prob(self, theta: Tensor) -> Tensor:
        """``log p(θ)`` up to a constant (differentiable)."""
        dim = theta.shape[-1] - 2
        mask, loc, scale = self._normal_parts(dim)
        z = (theta - loc) / scale
        a, b = self.lengthscale_concentration, self.lengthscale_rate_at(dim)
        gamma = (a - 1.0) * theta - b * theta.exp()  # Gamma(a, b) log-density of ℓ = e^θ
        return torch.where(mask, -0.5 * z * z, gamma).sum(-1)

    def log_prob_terms(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The independent terms of :meth:`log_prob`, one per coordinate of a ``θ [D + 2]`` (NumPy), and their
        derivatives in closed form (normal: ``-(θ - loc) / scale²``; Gamma in ``ℓ = e^θ``: ``(a - 1) - b e^θ``)."""
        dim = theta.shape[-1] - 2
        mask, loc, scale = (v.numpy() for v in self._normal_parts(dim))
        a, b = self.lengthscale_concentration, self.lengthscale_rate_at(dim)
        z = (theta - loc) / scale
        e = np.exp(theta)
        return np.where(mask, -0.5 * z * z, (a - 1.0) * theta - b * e), np.where(mask, -z / scale, (a - 1.0) - b * e)

    def log_prob_and_grad(self, theta: np.ndarray | Tensor) -> tuple[float, np.ndarray]:
        """:meth:`log_prob` of a ``θ [D + 2]`` and its gradient, in NumPy for the fit (sums of
        :meth:`log_prob_terms`)."""
        theta = np.asarray(theta.detach() if isinstance(theta, Tensor) else theta, dtype=np.float64)
        terms, grads = self.log_prob_terms(theta)
        return float(terms.sum()), grads


@functools.lru_cache(maxsize=64)
def _prior_parts(prior: GPPrior, dim: int) -> tuple[Tensor, Tensor, Tensor]:
    return prior._build_normal_parts(dim)


def theta_bounds(dim: int) -> list[tuple[float, float]]:
    return [LOG_LENGTHSCALE_BOUNDS] * dim + [LOG_SIGNAL_BOUNDS, LOG_NOISE_BOUNDS]


def _xp(a: Tensor | np.ndarray) -> Any:
    """The array module of ``a``: the kernel helpers below serve torch (posterior, autograd) and NumPy (the fit)."""
    return np if isinstance(a, np.ndarray) else torch


def _matern52_and_slope(x1: Array, x2: Array, lengthscale: Array, signal_var: Tensor | float) -> tuple[Array, Array]:
    """``(k, G) [m, n]`` between ``x1 [m, D]`` and ``x2 [n, D]``: the Matern-5/2 kernel and
    ``G = (5/3) σ_f² (1 + √5 r) e^{-√5 r} = -2 dk/d(r²)``, so that ``∂k(x, x')/∂x_d = -G (x_d - x'_d) / ℓ_d²`` and
    ``∂k/∂ log ℓ_d = G (x_d - x'_d)² / ℓ_d²``."""
    k, g = _matern52(x1, x2, lengthscale, signal_var, slope=True)
    assert g is not None  # for the type checker: slope=True always returns it
    return k, g


def _matern52(
    x1: Array, x2: Array, lengthscale: Array, signal_var: Tensor | float, *, slope: bool
) -> tuple[Array, Array | None]:
    """The kernel and, when ``slope``, ``G`` of :func:`_matern52_and_slope` (else None).

    One formula for torch (differentiable by autograd) and NumPy (the fit). When no autograd graph is being
    recorded, every ``[m, n]`` step writes into the previous step's array: the kernel is element-wise work on
    large blocks (all NB201 cells against 500 observations: 2048 x 500 per chunk), and fresh arrays cost page
    faults; in place it runs ~2x faster.
    """
    xp = _xp(x1)
    recorded = (
        xp is torch
        and torch.is_grad_enabled()
        and any(isinstance(v, Tensor) and v.requires_grad for v in (x1, x2, lengthscale, signal_var))
    )
    own: Any = (lambda a: None) if recorded else (lambda a: a)  # the ``out=`` of each step: in place or fresh
    a, b = x1 / lengthscale, x2 / lengthscale
    # |a - b|² through a matrix product: [m, n] work in the backward pass instead of [m, n, D]
    d2 = xp.multiply(a @ b.swapaxes(-1, -2), -2.0)
    d2 = xp.add(d2, (a * a).sum(-1)[..., :, None], out=own(d2))
    d2 = xp.add(d2, (b * b).sum(-1)[..., None, :], out=own(d2))
    d2 = xp.clip(d2, 0.0, None, out=own(d2))
    # under autograd the floor keeps d r / d x finite at r = 0, where the kernel's own derivative in r is 0 anyway
    r = xp.sqrt(xp.clip(d2, 1e-30, None) if recorded else d2)
    e = xp.exp(xp.multiply(r, -SQRT5))
    t = xp.add(xp.multiply(r, SQRT5, out=own(r)), 1.0, out=own(r))  # 1 + √5 r, over r
    g = xp.multiply(xp.multiply(t, e), (5.0 / 3.0) * signal_var) if slope else None
    k = xp.add(xp.multiply(d2, 5.0 / 3.0, out=own(d2)), t, out=own(d2))  # over r²
    k = xp.multiply(xp.multiply(k, e, out=own(k)), signal_var, out=own(k))
    return k, g


def matern52(x1: Tensor, x2: Tensor, lengthscale: Tensor, signal_var: Tensor | float) -> Tensor:
    """Matern-5/2 ARD kernel matrix ``[m, n]`` between ``x1 [m, D]`` and ``x2 [n, D]``."""
    return _matern52(x1, x2, lengthscale, signal_var, slope=False)[0]


_JITTERS = (1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4)  # relative to the mean diagonal, tried in turn when K is not PD


def _cholesky(k: Array) -> Array:
    """Lower Cholesky factor (torch, or LAPACK for a NumPy matrix, upper triangle zeroed), adding diagonal jitter
    (up to 1e-4 of the mean diagonal) only when needed."""
    mat: Any = k  # one body for both array types
    numpy = isinstance(mat, np.ndarray)
    for jitter in (0.0, *_JITTERS):
        a = mat
        if jitter:  # k + jitter · mean(diag k) · I, built only after a failure
            n = mat.shape[0]
            a = mat + jitter * float(mat.diagonal().mean()) * (np.eye(n) if numpy else torch.eye(n, dtype=mat.dtype))
        factor, info = dpotrf(a, lower=1, clean=1) if numpy else torch.linalg.cholesky_ex(a)
        if int(info) == 0:
            return factor
    raise torch.linalg.LinAlgError("kernel matrix is not positive definite even with 1e-4 relative jitter")


def log_marginal_likelihood_and_grad(
    theta: np.ndarray | Tensor, x: np.ndarray | Tensor, y: np.ndarray | Tensor
) -> tuple[float, np.ndarray]:
    """``log p(y | θ)`` and its gradient ``[D + 2]`` in closed form, in NumPy/LAPACK (no autograd: this runs
    inside L-BFGS-B, where torch's per-operation overhead on ``n x n`` matrices made the fit ~30% slower).

    ``∂ log p / ∂θ_j = ½ tr(W ∂K/∂θ_j)`` with ``W = α αᵀ - K⁻¹`` (Rasmussen & Williams 2006, eq. 5.9), where
    ``∂K/∂ log σ_f² = σ_f² M(r)``, ``∂K/∂ log σ_n² = σ_n² I`` and, from ``dM/d(r²) = -⅚ (1 + √5 r) e^{-√5 r}``,
    ``∂K/∂ log ℓ_d = G ∘ Δ_d² / ℓ_d²`` with ``G = (5/3) σ_f² (1 + √5 r) e^{-√5 r}`` and ``Δ_d² = (x_d - x_d')²``.
    The lengthscale terms reduce to two matrix products: with ``P = W ∘ G``,
    ``½ Σ_ij P_ij Δ_{d,ij}² = (1ᵀP)(x_d²) - Σ_i x_{id} (P x)_{id}``.
    """
    theta, x, y = (np.asarray(v.detach() if isinstance(v, Tensor) else v, dtype=np.float64) for v in (theta, x, y))
    n, dim = x.shape
    lengthscale, signal, noise = np.exp(theta[:dim]), math.exp(theta[dim]), math.exp(theta[dim + 1])
    k_f, slope = _matern52_and_slope(x, x, lengthscale, signal)
    k = k_f.copy()
    k[np.diag_indices(n)] += noise
    factor = _cholesky(k)
    alpha = dpotrs(factor, y, lower=1)[0]
    value = float(-0.5 * y @ alpha - np.log(np.diag(factor)).sum() - 0.5 * n * math.log(2 * math.pi))
    k_inv = dpotri(factor, lower=1)[0]  # lower triangle of K⁻¹
    k_inv = np.tril(k_inv) + np.tril(k_inv, -1).T
    w = np.outer(alpha, alpha) - k_inv
    p = w * slope
    grad_ls = (p.sum(0) @ (x * x) - (x * (p @ x)).sum(0)) / (lengthscale * lengthscale)
    grad = np.concatenate([grad_ls, [0.5 * float((w * k_f).sum()), 0.5 * noise * float(np.trace(w))]])
    return value, grad


def log_marginal_likelihood(theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """``log p(y | θ)`` for ``θ [D + 2]``, ``x [n, D]``, ``y [n]``."""
    dim = x.shape[1]
    lengthscale, signal, noise = theta[:dim].exp(), theta[dim].exp(), theta[dim + 1].exp()
    k = matern52(x, x, lengthscale, signal) + noise * torch.eye(x.shape[0], dtype=x.dtype)
    factor = _cholesky(k)
    alpha = torch.cholesky_solve(y.unsqueeze(-1), factor).squeeze(-1)
    n = x.shape[0]
    return -0.5 * (y * alpha).sum() - factor.diagonal().log().sum() - 0.5 * n * math.log(2 * math.pi)


class GaussianProcess:
    """A GP conditioned on ``(x [n, D], y [n])`` with fixed hyperparameters ``θ [D + 2]``.

    Example:
        >>> gp = fit_gp(x, y, generator=torch.Generator().manual_seed(0))
        >>> mean, var = gp.posterior(x_query)   # [m], [m]
    """

    def __init__(self, x: Tensor, y: Tensor, theta: Tensor) -> None:
        if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(f"x must be [n, D] and y [n]; got x {tuple(x.shape)} and y {tuple(y.shape)}")
        if theta.shape != (x.shape[1] + 2,):
            raise ValueError(f"theta has shape {tuple(theta.shape)}; expected [{x.shape[1] + 2}] (D + 2)")
        self.x, self.y = x.to(F64), y.to(F64)
        self.theta = theta.detach().to(F64)
        dim = x.shape[1]
        self.lengthscale = self.theta[:dim].exp()
        self.signal_var = self.theta[dim].exp()
        self.noise_var = self.theta[dim + 1].exp()
        n = x.shape[0]
        self._k_inv: Tensor | None = None  # K⁻¹, computed on first use by posterior_with_grad
        if n:
            k = matern52(self.x, self.x, self.lengthscale, self.signal_var) + self.noise_var * torch.eye(n, dtype=F64)
            self._factor = _cholesky(k)
            self.alpha = torch.cholesky_solve(self.y.unsqueeze(-1), self._factor).squeeze(-1)
        else:
            self._factor = torch.zeros(0, 0, dtype=F64)
            self.alpha = torch.zeros(0, dtype=F64)

    @property
    def num_observations(self) -> int:
        return int(self.x.shape[0])

    def posterior(self, xq: Tensor) -> tuple[Tensor, Tensor]:
        """Mean ``[m]`` and variance ``[m]`` of the latent function at ``xq [m, D]`` (differentiable in ``xq``)."""
        if self.num_observations == 0:
            zeros = xq.new_zeros(xq.shape[0], dtype=F64)
            return zeros, zeros + self.signal_var
        ks = matern52(xq, self.x, self.lengthscale, self.signal_var)  # [m, n]
        mean = ks @ self.alpha
        v = torch.linalg.solve_triangular(self._factor, ks.T, upper=False)  # [n, m]
        var = (self.signal_var - v.pow(2).sum(0)).clamp_min(1e-12)
        return mean, var

    def posterior_with_grad(self, xq: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Mean ``[m]``, variance ``[m]`` and their gradients ``[m, D]`` in ``xq [m, D]``, in closed form (the
        acquisition search calls this in its inner loop; autograd costs ~5x more for small ``m``).

        With ``k = k(xq, X) [m, n]``, ``B = k K⁻¹`` and ``G`` from :func:`_matern52_and_slope`:
        ``∂μ/∂x_d = -Σ_j G_j α_j (x_d - X_jd) / ℓ_d²`` and ``∂σ²/∂x_d = 2 Σ_j G_j B_j (x_d - X_jd) / ℓ_d²``
        (zero where the variance is clamped at its floor).
        """
        if self.num_observations == 0:
            mean, var = self.posterior(xq)
            return mean, var, torch.zeros_like(xq, dtype=F64), torch.zeros_like(xq, dtype=F64)
        if self._k_inv is None:
            self._k_inv = torch.cholesky_inverse(self._factor)
        k, slope = _matern52_and_slope(xq, self.x, self.lengthscale, self.signal_var)
        mean = k @ self.alpha
        b = k @ self._k_inv
        var = self.signal_var - (b * k).sum(-1)
        inv_l2 = self.lengthscale.pow(-2)
        ga, gb = slope * self.alpha, slope * b
        dmean = (ga @ self.x - ga.sum(-1, keepdim=True) * xq) * inv_l2
        dvar = 2.0 * (gb.sum(-1, keepdim=True) * xq - gb @ self.x) * inv_l2
        floor = var < 1e-12
        return mean, var.clamp_min(1e-12), dmean, dvar.masked_fill(floor.unsqueeze(-1), 0.0)

    def condition_on(self, x_new: Tensor, y_new: Tensor) -> GaussianProcess:
        """The same hyperparameters conditioned on extra points (used for constant-liar batches)."""
        return GaussianProcess(torch.cat([self.x, x_new.to(F64)]), torch.cat([self.y, y_new.to(F64)]), self.theta)

    def leave_one_out(self) -> tuple[Tensor, Tensor]:
        """LOO predictive mean ``[n]`` and variance ``[n]`` of each ``y_i`` given the others."""
        k_inv = torch.cholesky_inverse(self._factor)
        diag = k_inv.diagonal()
        return self.y - self.alpha / diag, 1.0 / diag

    def sample_joint(self, xq: Tensor, num_samples: int, generator: torch.Generator) -> Tensor:
        """``[num_samples, m]`` joint draws of the latent function at ``xq [m, D]``."""
        m = xq.shape[0]
        mean = self.posterior(xq)[0]
        kqq = matern52(xq, xq, self.lengthscale, self.signal_var)
        if self.num_observations:
            v = torch.linalg.solve_triangular(self._factor, matern52(self.x, xq, self.lengthscale, self.signal_var),
                                              upper=False)  # fmt: skip
            kqq = kqq - v.T @ v
        factor = _cholesky(0.5 * (kqq + kqq.T) + 1e-9 * torch.eye(m, dtype=F64))
        z = torch.randn(num_samples, m, generator=generator, dtype=F64)
        return mean + z @ factor.T


def fit_gp(
    x: Tensor,
    y: Tensor,
    *,
    generator: torch.Generator,
    prior: GPPrior | None = None,
    init: Tensor | None = None,
    num_restarts: int = 2,
    maxiter: int = 200,
    include_mode: bool = True,
    gtol: float = 1e-2,
) -> GaussianProcess:
    """Fit ``θ`` by maximum a posteriori (marginal likelihood plus priors) and return the conditioned GP.

    Args:
        x: ``[n, D]`` inputs in the unit cube.
        y: ``[n]`` standardised outputs.
        generator: draws the random restarts.
        prior: hyperparameter priors (default :class:`GPPrior`).
        init: a previous ``θ̂ [D + 2]`` to start from (warm start across suggestions).
        num_restarts: extra random starts around the prior mode, besides ``init`` and the mode itself.
        maxiter: L-BFGS-B iterations per start.
        include_mode: also start from the prior mode when ``init`` is given (it always is without ``init``).
        gtol: L-BFGS-B stops when every component of the projected gradient of ``-log p(y, θ)`` is below this
            (Optuna's GPSampler uses the same 1e-2; SciPy's default 1e-5 took about twice the evaluations for
            changes in ``θ`` below 0.01).
    """
    prior = prior or GPPrior()
    x, y = x.to(F64), y.to(F64)
    dim = x.shape[1]
    bounds = theta_bounds(dim)
    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] for b in bounds])
    mode = prior.mode(dim)
    if x.shape[0] == 0:
        return GaussianProcess(x, y, mode.clamp(torch.as_tensor(lo), torch.as_tensor(hi)))

    x_np, y_np = x.numpy(), y.numpy()

    def objective(vec: np.ndarray) -> tuple[float, np.ndarray]:
        try:
            lml, lml_grad = log_marginal_likelihood_and_grad(vec, x_np, y_np)
        except torch.linalg.LinAlgError:
            return 1e10, np.zeros_like(vec)
        lp, lp_grad = prior.log_prob_and_grad(vec)
        loss, grad = -(lml + lp), -(lml_grad + lp_grad)
        if not math.isfinite(loss) or not np.isfinite(grad).all():
            return 1e10, np.zeros_like(vec)
        return loss, grad

    starts = [mode]
    if init is not None and init.shape == mode.shape:
        starts = [init.to(F64)] + ([mode] if include_mode else [])
    starts += [prior.draw_start(dim, generator) for _ in range(num_restarts)]
    best_val, best_theta = math.inf, starts[0].numpy().clip(lo, hi)
    for s in starts:
        res = minimize(objective, s.numpy().clip(lo, hi), jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": maxiter, "gtol": gtol})  # fmt: skip
        if res.fun < best_val:
            best_val, best_theta = float(res.fun), res.x
    return GaussianProcess(x, y, torch.as_tensor(best_theta, dtype=F64))


def standardize(y: Tensor) -> tuple[Tensor, float, float]:
    """``(y - mean) / std`` and the two constants (std 1 when ``y`` is constant or has one entry)."""
    y = y.to(F64)
    if y.numel() == 0:
        return y, 0.0, 1.0
    mean = float(y.mean())
    std = float(y.std()) if y.numel() > 1 else 1.0
    if not std > 1e-12:
        std = 1.0
    return (y - mean) / std, mean, std
