"""Warm start from earlier studies: the ranking-weighted Gaussian-process ensemble (RGPE).

Feurer, Letham & Bakshy 2018, "Scalable meta-learning for Bayesian optimization using ranking-weighted Gaussian
process ensembles" (AutoML workshop at ICML). Notation:

- ``t = 1..T`` earlier studies, each with its own GP ``f_t`` fitted once on its own standardised data;
  ``f_0`` the GP of the current study on ``(X [n, D], y [n])``.
- Ranking loss of a model on the current data (pairs ``j, k`` of observed points):
  ``ℓ(f) = Σ_j Σ_k 1[(f(x_j) < f(x_k)) xor (y_j < y_k)]``. For earlier studies ``f_t`` is a joint posterior draw at
  ``X``; for the current study each ``f_0(x_j)`` is a leave-one-out draw (so it cannot simply memorise ``y_j``).
- Weights: ``w_t = P(t = argmin_s ℓ(f_s))`` over ``S`` draws (ties split at random).
- Weight dilution prevention: a model ``t >= 1`` whose median loss exceeds the 95th percentile of the current
  study's loss gets weight 0 — so unrelated studies are switched off once the current data disagree with them.
- Ensemble: ``μ(x) = Σ_t w_t μ_t(x)``, ``σ²(x) = Σ_t w_t² σ_t²(x)``.

With fewer than two current observations no ranking is possible, and the earlier studies share the weight
equally (this is what makes the first suggestions of a warm-started study start from where earlier optima were).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from meta_learning.search.gp import GaussianProcess

F64 = torch.float64


@dataclass(frozen=True)
class PriorData:
    """One earlier study's observations in the current space's encoding: ``x [n, D]``, ``y [n]`` (maximised)."""

    x: Tensor
    y: Tensor


def ranking_losses(samples: Tensor, y: Tensor) -> Tensor:
    """Misranked pairs per draw: ``samples [S, n]`` against targets ``y [n]`` -> ``[S]``."""
    sample_less = samples.unsqueeze(-1) < samples.unsqueeze(-2)  # [S, n, n]
    y_less = y.unsqueeze(-1) < y.unsqueeze(-2)  # [n, n]
    return (sample_less ^ y_less).sum((-1, -2))


def loo_ranking_losses(loo_samples: Tensor, y: Tensor) -> Tensor:
    """Misranked pairs when ``x_j`` is predicted without its own observation: ``[S, n]`` -> ``[S]``."""
    sample_less = loo_samples.unsqueeze(-1) < y  # [S, n, n]: f_{-j}(x_j) < y_k
    y_less = y.unsqueeze(-1) < y.unsqueeze(-2)
    return (sample_less ^ y_less).sum((-1, -2))


def rgpe_weights(
    base: Sequence[GaussianProcess], target: GaussianProcess, *, num_samples: int, generator: torch.Generator
) -> Tensor:
    """Ensemble weights ``[T + 1]`` (earlier studies first, the current study last); they sum to 1."""
    n = target.num_observations
    num_models = len(base) + 1
    if n < 2:
        w = torch.zeros(num_models, dtype=F64)
        w[:-1] = 1.0 / len(base) if base else 0.0
        if not base:
            w[-1] = 1.0
        return w
    y = target.y
    losses = torch.empty(num_samples, num_models, dtype=F64)
    for t, gp in enumerate(base):
        losses[:, t] = ranking_losses(gp.sample_joint(target.x, num_samples, generator), y).to(F64)
    loo_mean, loo_var = target.leave_one_out()
    loo = loo_mean + loo_var.sqrt() * torch.randn(num_samples, n, generator=generator, dtype=F64)
    losses[:, -1] = loo_ranking_losses(loo, y).to(F64)
    # argmin with random tie-breaking: add a uniform jitter smaller than one misranked pair
    jitter = 0.5 * torch.rand(num_samples, num_models, generator=generator, dtype=F64)
    best = torch.argmin(losses + jitter, dim=1)
    w = torch.bincount(best, minlength=num_models).to(F64) / num_samples
    # weight dilution prevention
    target_p95 = torch.quantile(losses[:, -1], 0.95)
    medians = losses[:, :-1].median(dim=0).values
    w[:-1] = torch.where(medians > target_p95, torch.zeros_like(w[:-1]), w[:-1])
    total = w.sum()
    if total <= 0:
        w = torch.zeros(num_models, dtype=F64)
        w[-1] = 1.0
        return w
    return w / total


class RGPE:
    """The weighted ensemble's posterior, used by the acquisition like a single GP."""

    def __init__(self, base: Sequence[GaussianProcess], target: GaussianProcess, weights: Tensor) -> None:
        if weights.shape != (len(base) + 1,):
            raise ValueError(f"weights has shape {tuple(weights.shape)}; expected [{len(base) + 1}]")
        self.models = [*base, target]
        self.weights = weights

    def posterior(self, xq: Tensor) -> tuple[Tensor, Tensor]:
        mean = xq.new_zeros(xq.shape[0], dtype=F64)
        var = xq.new_zeros(xq.shape[0], dtype=F64)
        for w, gp in zip(self.weights.tolist(), self.models, strict=True):
            if w > 0:
                m, v = gp.posterior(xq)
                mean = mean + w * m
                var = var + w * w * v
        return mean, var.clamp_min(1e-12)

    def posterior_with_grad(self, xq: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Mean, variance ``[m]`` and their gradients ``[m, D]`` (weighted sums of the members')."""
        mean, var = xq.new_zeros(xq.shape[0], dtype=F64), xq.new_zeros(xq.shape[0], dtype=F64)
        dmean, dvar = torch.zeros_like(xq, dtype=F64), torch.zeros_like(xq, dtype=F64)
        for w, gp in zip(self.weights.tolist(), self.models, strict=True):
            if w > 0:
                m, v, dm, dv = gp.posterior_with_grad(xq)
                mean, var = mean + w * m, var + w * w * v
                dmean, dvar = dmean + w * dm, dvar + w * w * dv
        return mean, var.clamp_min(1e-12), dmean, dvar.masked_fill((var < 1e-12).unsqueeze(-1), 0.0)
