"""Exact Bayesian linear regression with a component shared by all arms and one component per arm.

This is the model of hybrid LinUCB (Li, Chu, Langford & Schapire, WWW 2010, Algorithm 2), written as the
Gaussian posterior it computes, so that the same statistics serve LinUCB and Thompson sampling (Agrawal & Goyal,
ICML 2013).

Notation:

- ``k`` shared width, ``d`` per-arm width, ``a`` an arm, ``t`` a round.
- ``z_{t,a} [k]`` shared features (of the task and the arm), ``x_t [d]`` per-arm features (of the task).
- Reward ``y_t = z_{t,a}^T beta + x_t^T theta_a + eps``, ``eps ~ N(0, sigma^2)``.
- Priors ``beta ~ N(0, sigma^2 / lambda_s I_k)``, ``theta_a ~ N(0, sigma^2 / lambda_a I_d)``, all independent.
- Per arm: ``A_a = lambda_a I + sum x x^T [d, d]``, ``B_a = sum x z^T [d, k]``, ``b_a = sum y x [d]``
  (sums over the rounds where arm ``a`` was played).
- Shared: ``A_0 = lambda_s I + sum z z^T - sum_a B_a^T A_a^{-1} B_a [k, k]``,
  ``b_0 = sum y z - sum_a B_a^T A_a^{-1} b_a [k]`` (sums over all rounds / arms).

Posterior: ``beta | data ~ N(A_0^{-1} b_0, sigma^2 A_0^{-1})`` and
``theta_a | beta, data ~ N(A_a^{-1} (b_a - B_a beta), sigma^2 A_a^{-1})``. For ``f = z^T beta + x^T theta_a``
with ``w = z - B_a^T A_a^{-1} x``: ``E f = w^T beta_hat + x^T A_a^{-1} b_a`` and
``Var f = sigma^2 (w^T A_0^{-1} w + x^T A_a^{-1} x)`` (Li et al.'s ``s_{t,a}`` times ``sigma^2``). An arm never
played has ``A_a = lambda_a I``, ``B_a = 0``, ``b_a = 0``: its prediction comes from the shared part only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from meta_learning._checks import check_positive_float, check_positive_int

_DT = torch.float64


@dataclass
class _ArmStats:
    xx: Tensor  # (d, d) sum x x^T
    xz: Tensor  # (d, k) B_a
    xy: Tensor  # (d,)   b_a
    n: int
    # derived from the sums above, recomputed after every update of this arm
    a_inv: Tensor  # (d, d) A_a^{-1}
    c: Tensor  # (d, k) A_a^{-1} B_a
    u: Tensor  # (d,)   A_a^{-1} b_a
    gram: Tensor  # (k, k) B_a^T A_a^{-1} B_a
    proj: Tensor  # (k,)   B_a^T A_a^{-1} b_a


class HybridLinearPosterior:
    """Posterior over a shared weight vector and per-arm weight vectors (module notations).

    Args:
        shared_dim: ``k``.
        arm_dim: ``d``.
        shared_prior_precision: ``lambda_s``.
        arm_prior_precision: ``lambda_a``; larger values keep arms closer to the shared model.
        noise_variance: ``sigma^2`` (0.25 bounds the variance of a reward in ``[0, 1]``).
        refresh_every: an arm's derived matrices are updated by rank-one (Sherman-Morrison) steps and recomputed
            exactly from its sums every ``refresh_every``-th observation, which bounds round-off drift.

    Example:
        >>> post = HybridLinearPosterior(shared_dim=3, arm_dim=2)
        >>> post.update("a", x=torch.ones(2), z=torch.ones(3), reward=1.0)
        >>> mean, var = post.predict(["a", "b"], x=torch.ones(2), z=torch.ones(2, 3))
    """

    def __init__(
        self,
        shared_dim: int,
        arm_dim: int,
        shared_prior_precision: float = 1.0,
        arm_prior_precision: float = 1.0,
        noise_variance: float = 0.25,
        refresh_every: int = 64,
    ) -> None:
        self.shared_dim = check_positive_int("shared_dim", shared_dim)
        self.arm_dim = check_positive_int("arm_dim", arm_dim)
        self.shared_prior_precision = check_positive_float("shared_prior_precision", shared_prior_precision)
        self.arm_prior_precision = check_positive_float("arm_prior_precision", arm_prior_precision)
        self.noise_variance = check_positive_float("noise_variance", noise_variance)
        self.refresh_every = check_positive_int("refresh_every", refresh_every)
        self.zz = torch.zeros(shared_dim, shared_dim, dtype=_DT)
        self.zy = torch.zeros(shared_dim, dtype=_DT)
        self.arms: dict[str, _ArmStats] = {}
        self._refresh_shared()

    # ------------------------------------------------------------------------------------------------ updates
    def update(self, arm: str, x: Tensor, z: Tensor, reward: float) -> None:
        """Add one observation ``(x [d], z [k], reward)`` of ``arm``."""
        x, z = self._check_x(x), self._check_z(z, 1).reshape(-1)
        if not math.isfinite(reward):
            raise ValueError(f"reward={reward} but it must be a finite number")
        stats = self.arms.get(arm)
        if stats is None:
            d, k = self.arm_dim, self.shared_dim
            stats = self._derive(
                torch.zeros(d, d, dtype=_DT), torch.zeros(d, k, dtype=_DT), torch.zeros(d, dtype=_DT), 0
            )
        if (stats.n + 1) % self.refresh_every == 0:
            new = self._derive(
                stats.xx + torch.outer(x, x), stats.xz + torch.outer(x, z), stats.xy + reward * x, stats.n + 1
            )
        else:
            new = self._rank_one(stats, x, z, reward)
        self.arms[arm] = new
        self.zz += torch.outer(z, z)
        self.zy += reward * z
        self._refresh_shared()

    @staticmethod
    def _rank_one(s: _ArmStats, x: Tensor, z: Tensor, y: float) -> _ArmStats:
        """The derived quantities after adding ``(x, z, y)``, by Sherman-Morrison in ``O(d^2 + dk + k^2)``.

        With ``v = A^{-1} x``, ``s = x^T v``, ``q = B^T v``, ``r = z - C^T x`` and ``e = y - x^T u``:
        ``A'^{-1} = A^{-1} - v v^T / (1 + s)``, ``C' = C + v r^T / (1 + s)``, ``u' = u + v e / (1 + s)``,
        ``B'^T A'^{-1} B' = G + (q z^T + z q^T - q q^T + s z z^T) / (1 + s)`` and
        ``B'^T A'^{-1} b' = g + q e / (1 + s) + z x^T u'``.
        """
        v = s.a_inv @ x
        denom = 1.0 + float(x @ v)
        q = s.xz.t() @ v
        r = z - s.c.t() @ x
        e = y - float(x @ s.u)
        u = s.u + v * (e / denom)
        gram = (
            s.gram
            + (torch.outer(q, z) + torch.outer(z, q) - torch.outer(q, q) + (denom - 1.0) * torch.outer(z, z)) / denom
        )
        return _ArmStats(
            xx=s.xx + torch.outer(x, x),
            xz=s.xz + torch.outer(x, z),
            xy=s.xy + y * x,
            n=s.n + 1,
            a_inv=s.a_inv - torch.outer(v, v) / denom,
            c=s.c + torch.outer(v, r) / denom,
            u=u,
            gram=0.5 * (gram + gram.t()),
            proj=s.proj + q * (e / denom) + z * float(x @ u),
        )

    def _derive(self, xx: Tensor, xz: Tensor, xy: Tensor, n: int) -> _ArmStats:
        a = xx + self.arm_prior_precision * torch.eye(self.arm_dim, dtype=_DT)
        a_inv = torch.cholesky_inverse(torch.linalg.cholesky(a))
        c, u = a_inv @ xz, a_inv @ xy
        return _ArmStats(xx, xz, xy, n, a_inv, c, u, xz.t() @ c, xz.t() @ u)

    def _refresh_shared(self) -> None:
        a0 = self.zz + self.shared_prior_precision * torch.eye(self.shared_dim, dtype=_DT)
        b0 = self.zy.clone()
        for s in self.arms.values():
            a0 -= s.gram
            b0 -= s.proj
        a0 = 0.5 * (a0 + a0.t())
        self._l0 = torch.linalg.cholesky(a0)  # A_0 = L L^T
        self._a0_inv = torch.cholesky_inverse(self._l0)
        self.beta_hat = torch.cholesky_solve(b0.unsqueeze(1), self._l0).squeeze(1)

    # ------------------------------------------------------------------------------------------------ queries
    def _arm_parts(self, arms: Sequence[str], x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per arm: ``C_a^T x [K, k]``, ``x^T A_a^{-1} b_a [K]``, ``x^T A_a^{-1} x [K]``."""
        k = self.shared_dim
        prior_quad = float(x @ x) / self.arm_prior_precision
        ctx, ux, quad = [], [], []
        for arm in arms:
            s = self.arms.get(arm)
            if s is None:
                ctx.append(torch.zeros(k, dtype=_DT))
                ux.append(torch.zeros((), dtype=_DT))
                quad.append(torch.tensor(prior_quad, dtype=_DT))
            else:
                ctx.append(s.c.t() @ x)
                ux.append(s.u @ x)
                quad.append(x @ s.a_inv @ x)
        return torch.stack(ctx), torch.stack(ux), torch.stack(quad)

    def predict(self, arms: Sequence[str], x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and variance of ``f_a = z_a^T beta + x^T theta_a`` for each arm.

        Args:
            arms: ``K`` arm names (arms never updated use the prior).
            x: ``[d]`` per-arm features of the task.
            z: ``[K, k]`` shared features, row ``i`` for ``arms[i]``.

        Returns:
            ``mean [K]`` and ``variance [K]`` (float64; the variance includes ``sigma^2``).
        """
        x, z = self._check_x(x), self._check_z(z, len(arms))
        ctx, ux, quad = self._arm_parts(arms, x)
        w = z - ctx  # (K, k)
        mean = w @ self.beta_hat + ux
        var = self.noise_variance * ((w @ self._a0_inv * w).sum(dim=1) + quad)
        return mean, var.clamp_min(0.0)

    def sample(
        self, arms: Sequence[str], x: Tensor, z: Tensor, generator: torch.Generator, scale: float = 1.0
    ) -> Tensor:
        """One joint posterior draw of ``f_a`` for every arm ``[K]`` (Thompson sampling).

        ``beta`` is drawn once from its marginal and shared by all arms, then each ``theta_a`` from its
        conditional given ``beta``; ``scale`` multiplies the posterior standard deviations (``v`` in Agrawal &
        Goyal 2013).
        """
        x, z = self._check_x(x), self._check_z(z, len(arms))
        ctx, ux, quad = self._arm_parts(arms, x)
        eps0 = torch.randn(self.shared_dim, generator=generator, dtype=_DT)
        eps = torch.randn(len(arms), generator=generator, dtype=_DT)
        sd = scale * math.sqrt(self.noise_variance)
        # beta = beta_hat + sd * L^{-T} eps0 has covariance sd^2 (L L^T)^{-1} = sd^2 A_0^{-1}
        beta = self.beta_hat + sd * torch.linalg.solve_triangular(self._l0.t(), eps0.unsqueeze(1), upper=True)[:, 0]
        # x^T theta_a | beta ~ N(x^T (u_a - C_a beta), sd^2 x^T A_a^{-1} x): draw that scalar directly
        return (z - ctx) @ beta + ux + sd * quad.clamp_min(0.0).sqrt() * eps

    def refresh(self) -> None:
        """Recompute every derived matrix exactly from the sums (drops round-off of the rank-one updates).

        A posterior rebuilt by :meth:`from_state_dict` is in this state, so refreshing before saving makes the
        saved and the live posterior predict bit-for-bit the same.
        """
        self.arms = {name: self._derive(s.xx, s.xz, s.xy, s.n) for name, s in self.arms.items()}
        self._refresh_shared()

    def count(self, arm: str) -> int:
        """Number of observations of ``arm`` (0 if never updated)."""
        s = self.arms.get(arm)
        return 0 if s is None else s.n

    # ------------------------------------------------------------------------------------------------ checks
    def _check_x(self, x: Tensor) -> Tensor:
        x = torch.as_tensor(x, dtype=_DT)
        if x.shape != (self.arm_dim,):
            raise ValueError(f"x has shape {tuple(x.shape)} but it must be [{self.arm_dim}] (arm_dim)")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x has non-finite entries")
        return x

    def _check_z(self, z: Tensor, rows: int) -> Tensor:
        z = torch.as_tensor(z, dtype=_DT)
        if z.dim() == 1:
            z = z.unsqueeze(0)
        if z.shape != (rows, self.shared_dim):
            raise ValueError(f"z has shape {tuple(z.shape)} but it must be [{rows}, {self.shared_dim}]")
        if not bool(torch.isfinite(z).all()):
            raise ValueError("z has non-finite entries")
        return z

    # ------------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The sufficient statistics as plain lists (JSON-ready); floats round-trip exactly through JSON."""
        return {
            "shared_dim": self.shared_dim,
            "arm_dim": self.arm_dim,
            "shared_prior_precision": self.shared_prior_precision,
            "arm_prior_precision": self.arm_prior_precision,
            "noise_variance": self.noise_variance,
            "zz": self.zz.tolist(),
            "zy": self.zy.tolist(),
            "arms": {
                name: {"xx": s.xx.tolist(), "xz": s.xz.tolist(), "xy": s.xy.tolist(), "n": s.n}
                for name, s in self.arms.items()
            },
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> HybridLinearPosterior:
        post = cls(
            state["shared_dim"],
            state["arm_dim"],
            state["shared_prior_precision"],
            state["arm_prior_precision"],
            state["noise_variance"],
        )
        k, d = post.shared_dim, post.arm_dim
        post.zz = _tensor(state["zz"], (k, k), "zz")
        post.zy = _tensor(state["zy"], (k,), "zy")
        for name, s in state["arms"].items():
            post.arms[name] = post._derive(
                _tensor(s["xx"], (d, d), f"arms[{name!r}].xx"),
                _tensor(s["xz"], (d, k), f"arms[{name!r}].xz"),
                _tensor(s["xy"], (d,), f"arms[{name!r}].xy"),
                int(s["n"]),
            )
        post._refresh_shared()
        return post


def _tensor(values: Any, shape: tuple[int, ...], name: str) -> Tensor:
    t = torch.tensor(values, dtype=_DT)
    if tuple(t.shape) != shape:
        raise ValueError(f"saved {name} has shape {tuple(t.shape)} but the model expects {shape}")
    return t
