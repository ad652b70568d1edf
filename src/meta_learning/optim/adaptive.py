"""``AdaptiveOptimizer``: Adam/AdamW/SGD whose learning rate learns itself online.

Notation (per parameter group; ``t`` the step):

- ``g_t`` the loss gradient at ``θ_{t-1}`` (all the group's parameters, flattened; with Adam's or SGD's L2
  ``weight_decay`` λ, ``g_t = ∇f + λ θ_{t-1}``, the gradient of ``f + λ/2 |θ|²`` that the base step uses);
  ``d_t`` the base optimiser's update direction, so that ``θ_t = θ_{t-1} - α_t d_t``: for Adam
  ``d_t = m̂_t / (√v̂_t + ε)`` (``+ λ θ_{t-1}`` for AdamW's decoupled decay), for SGD the (Nesterov) momentum
  buffer.
- ``α_t = α_base · exp(ℓ_t) · τ_t``: ``α_base`` the group's ``lr`` (which torch LR schedulers set), ``ℓ_t`` the
  learned log-scale, ``τ_t`` the trend factor.
- Hypergradient (Baydin et al. 2018, "Online learning rate adaptation with hypergradient descent", ICLR):
  ``∂f(θ_{t-1}) / ∂α_{t-1} = -g_t · d_{t-1}``, so in log space ``∂f / ∂ℓ = -α_{t-1} g_t · d_{t-1}``.
  Minibatch hypergradients are noisy and their scale changes by orders of magnitude over training, so ``ℓ`` is
  itself updated by Adam on ``h_t = ∂f/∂ℓ`` (moments ``μ_t = b₁ μ_{t-1} + (1-b₁) h_t``,
  ``ν_t = b₂ ν_{t-1} + (1-b₂) h_t²`` with ``b₁ = 0.9, b₂ = 0.99``, bias-corrected):
  ``ℓ_t = clip(ℓ_{t-1} - β μ̂_t / (√ν̂_t + ε), log s_min, log s_max)``, ``β = hyper_lr`` — at most about ``β``
  per step, in the direction the hypergradient keeps pointing. The raw ``∂f/∂ℓ`` of the last step is kept in
  ``last_hypergradients``.
- Groups: given an ``nn.Module`` (not parameters or groups), the parameters of its embedding tables
  (``nn.Embedding``, ``nn.EmbeddingBag``) form a second group, so they get their own ``ℓ``
  (``separate_embeddings=True``). One rate per group follows ``Σ g·d`` over the group, which the dense layers
  dominate; an embedding table's rows get sparse, infrequent gradients and want a different step. On the SST-2
  Transformer of ``benchmarks/adaptive_optim.py`` the embedding group's rate rose to 70-280x the start while the
  dense layers' fell, and the held-out loss went from 1.11x to 0.93x grid-tuned Adam's (benchmarks/RESULTS.md);
  models without embeddings are unaffected.
- Trend: values given to :meth:`AdaptiveOptimizer.report` (e.g. a validation loss per epoch) go to a
  :class:`~meta_learning.optim.analyzer.LearningCurveAnalyzer`; on a plateau ``τ ← τ · plateau_factor`` and on
  divergence ``τ ← τ · divergence_factor``, each followed by ``cooldown`` reports without change. A plateau
  needs a whole analyzer window of reports since the last cut (ReduceLROnPlateau restarts its count after a cut
  too): judged right after the cooldown, the window would still hold the reports from before the cut, and a
  noisy curve was halved every ``cooldown + 1`` reports (5 cuts in 250 steps on a sinusoid-MAML run).

Limits (measured; benchmarks/RESULTS.md, "the sinusoid task's held-out set was one task"): the hypergradient is a
one-step signal, and where it settles need not be the best rate for the whole run. Over 15 seeds of the five
250-step tasks of ``benchmarks/adaptive_optim.py`` the final held-out loss is within 2% of, or below, grid-tuned
Adam's on MNIST, Omniglot classification, Omniglot ProtoNet and SST-2, and 12% above it on sinusoid MAML, where
the rate settles near 4e-3 to 8e-3 against the best fixed 1e-2 (Adam fixed at 7e-3 is itself 5% behind Adam at
1e-2 there, at 5e-3 7%); on the ProtoNet it would settle above the best fixed rate,
and only its slow drift keeps it close (15 seeds pooled; on six of them alone the ProtoNet figure was 8% above).
Signals with a longer horizon (the gradient against a decayed sum of past steps; a forward-mode hypergradient with
the curvature term, as in MARTHE) settled no higher on the sinusoid task in probes.

With ``meta_learning_enabled=False`` (and no reports) the optimiser is exactly the base optimiser, so it can be
compared against ``torch.optim.Adam``/``AdamW``/``SGD``.

Example:
    >>> opt = AdaptiveOptimizer(model, base_optimizer="adam", meta_learning_enabled=True)
    >>> for epoch in range(epochs):
    ...     for x, y in loader:
    ...         opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
    ...     opt.report(validation_loss())        # optional: plateau / divergence aware schedule
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from meta_learning._checks import check_choice, check_non_negative_int, check_positive_float
from meta_learning.optim.analyzer import LearningCurveAnalyzer

_DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "sgd": 1e-2}


def _module_groups(model: nn.Module, separate_embeddings: bool) -> list[dict[str, Any]]:
    """A module's parameters as groups: everything else first, then (if any) its embedding tables."""
    if not isinstance(separate_embeddings, bool):
        raise TypeError(f"separate_embeddings={separate_embeddings!r} must be a bool")
    embedding: dict[int, Tensor] = {}  # by id: a table shared by two modules is counted once
    if separate_embeddings:
        for module in model.modules():
            if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
                embedding.update((id(p), p) for p in module.parameters(recurse=False) if p.requires_grad)
    rest = [p for p in model.parameters() if id(p) not in embedding]
    return [{"params": ps} for ps in (rest, list(embedding.values())) if ps]


class AdaptiveOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` with a hypergradient-learned, trend-aware learning rate per parameter group.

    Args:
        model: an ``nn.Module`` or an iterable of parameters / parameter-group dicts.
        base_optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        meta_learning_enabled: learn the learning rate by hypergradient descent.
        lr: base learning rate (default 1e-3 for Adam/AdamW, 1e-2 for SGD).
        betas, eps: Adam's constants.
        weight_decay: L2 penalty (Adam, SGD) or decoupled decay (AdamW; default 0.01 there, else 0).
        momentum, nesterov: SGD's momentum (default 0.9).
        hyper_lr: ``β``, Adam's step size on the log learning rate ``ℓ`` (it moves by at most about ``β`` a step).
        scale_bounds: ``(s_min, s_max)``, the learned factor ``exp(ℓ)`` stays within them.
        plateau_factor, divergence_factor, cooldown: the trend schedule (see the module notes).
        analyzer: the analyzer of reported values (default ``LearningCurveAnalyzer(mode="min", window=10)``).
        separate_embeddings: when ``model`` is an ``nn.Module``, put its embedding tables' parameters in a group of
            their own (own learned rate; see the module notes). Ignored when parameters or groups are given.
    """

    def __init__(
        self,
        model: nn.Module | Iterable[Any],
        base_optimizer: str = "adam",
        meta_learning_enabled: bool = True,
        *,
        lr: float | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float | None = None,
        momentum: float = 0.9,
        nesterov: bool = False,
        hyper_lr: float = 0.1,
        scale_bounds: tuple[float, float] = (1e-3, 1e3),
        plateau_factor: float = 0.5,
        divergence_factor: float = 0.1,
        cooldown: int = 2,
        analyzer: LearningCurveAnalyzer | None = None,
        separate_embeddings: bool = True,
    ) -> None:
        self.base = check_choice("base_optimizer", base_optimizer, ("adam", "adamw", "sgd"))
        params = _module_groups(model, separate_embeddings) if isinstance(model, nn.Module) else model
        lr = _DEFAULT_LR[self.base] if lr is None else check_positive_float("lr", lr)
        if weight_decay is None:
            weight_decay = 0.01 if self.base == "adamw" else 0.0
        if weight_decay < 0:
            raise ValueError(f"weight_decay={weight_decay} must be >= 0")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas={betas} must each be in [0, 1)")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum={momentum} must be in [0, 1)")
        if not (0 < scale_bounds[0] <= 1.0 <= scale_bounds[1]):
            raise ValueError(f"scale_bounds={scale_bounds} must satisfy 0 < low <= 1 <= high")
        for name, f in (("plateau_factor", plateau_factor), ("divergence_factor", divergence_factor)):
            if not 0.0 < f < 1.0:
                raise ValueError(f"{name}={f} must be in (0, 1)")
        defaults = dict(lr=lr, betas=tuple(betas), eps=check_positive_float("eps", eps), weight_decay=weight_decay,
                        momentum=momentum, nesterov=bool(nesterov), log_lr_scale=0.0, trend_scale=1.0)  # fmt: skip
        super().__init__(params, defaults)
        self.meta_learning_enabled = bool(meta_learning_enabled)
        self.hyper_lr = check_positive_float("hyper_lr", hyper_lr)
        self.log_scale_bounds = (math.log(scale_bounds[0]), math.log(scale_bounds[1]))
        self.plateau_factor, self.divergence_factor = plateau_factor, divergence_factor
        self.cooldown = check_non_negative_int("cooldown", cooldown)
        self.analyzer = analyzer or LearningCurveAnalyzer(mode="min", window=10)
        self.reported: list[float] = []
        self._cooldown_left = 0
        self._last_action_at = 0  # len(reported) when the schedule last acted
        self.last_hypergradients: list[float | None] = [None] * len(self.param_groups)

    # ------------------------------------------------------------------------------------------------ learning rate
    def effective_lr(self, group_index: int = 0) -> float:
        """``α = lr · exp(ℓ) · τ`` of a parameter group."""
        g = self.param_groups[group_index]
        return float(g["lr"] * math.exp(g["log_lr_scale"]) * g["trend_scale"])

    def effective_lrs(self) -> list[float]:
        return [self.effective_lr(i) for i in range(len(self.param_groups))]

    def report(self, value: float) -> str | None:
        """Record a monitored value (lower is better, e.g. an epoch's validation loss); returns the schedule's
        action (``"plateau"``, ``"divergence"``) or None."""
        self.reported.append(float(value))
        if self._cooldown_left > 0:
            self._cooldown_left -= 1
            return None
        action = None
        if self.analyzer.is_diverging(self.reported):
            action, factor = "divergence", self.divergence_factor
        elif len(self.reported) - self._last_action_at >= self.analyzer.window and self.analyzer.is_plateau(
            self.reported
        ):  # a plateau is a whole window without a new best *since the last cut* (as ReduceLROnPlateau counts)
            action, factor = "plateau", self.plateau_factor
        if action is not None:
            for g in self.param_groups:
                g["trend_scale"] *= factor
            self._cooldown_left = self.cooldown
            self._last_action_at = len(self.reported)
        return action

    # ---------------------------------------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if len(self.last_hypergradients) != len(self.param_groups):  # groups added with add_param_group
            self.last_hypergradients += [None] * (len(self.param_groups) - len(self.last_hypergradients))
        for gi, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if self.meta_learning_enabled:
                self._hypergradient_step(gi, group, params)
            alpha = self.effective_lr(gi)
            for p in params:
                direction = self._direction(group, p)
                p.add_(direction, alpha=-alpha)
                if self.meta_learning_enabled:
                    self.state[p]["prev_direction"] = direction
        return loss

    def _l2(self, group: dict[str, Any]) -> float:
        """The coupled L2 coefficient ``λ``: Adam and SGD step on ``g + λ θ``, the gradient of ``f + λ/2 |θ|²``
        (AdamW's decay is decoupled: it is in the direction, not in the objective)."""
        return 0.0 if self.base == "adamw" else float(group["weight_decay"])

    def _hypergradient_step(self, gi: int, group: dict[str, Any], params: list[Tensor]) -> None:
        # g_t · d_{t-1} with g_t the gradient the base step uses: with L2 decay, (∇f + λ θ_{t-1}) · d_{t-1}
        l2 = self._l2(group)
        dot = torch.zeros((), dtype=torch.float64)
        seen = False
        for p in params:
            prev = self.state[p].get("prev_direction")
            if prev is None:
                continue
            seen = True
            dot += (p.grad.double() * prev).sum()  # type: ignore[union-attr]  # params are filtered on grad
            if l2:
                dot += l2 * (p.double() * prev).sum()
        if not seen:
            return
        h = -self.effective_lr(gi) * float(dot)  # ∂f/∂ℓ
        self.last_hypergradients[gi] = h
        if not math.isfinite(h):
            return
        b1, b2 = 0.9, 0.99
        group["hyper_step"] = t = group.get("hyper_step", 0) + 1
        group["hyper_m"] = m = b1 * group.get("hyper_m", 0.0) + (1 - b1) * h
        group["hyper_v"] = v = b2 * group.get("hyper_v", 0.0) + (1 - b2) * h * h
        update = (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + 1e-30)
        lo, hi = self.log_scale_bounds
        group["log_lr_scale"] = min(max(group["log_lr_scale"] - self.hyper_lr * update, lo), hi)

    def _direction(self, group: dict[str, Any], p: Tensor) -> Tensor:
        """``d_t`` for one parameter (updates the base optimiser's state)."""
        state = self.state[p]
        grad = p.grad
        assert grad is not None  # filtered by the caller
        l2 = self._l2(group)
        if l2:
            grad = grad.add(p, alpha=l2)
        if self.base == "sgd":
            if group["momentum"] == 0:
                return grad.clone()
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.clone()
            else:
                buf.mul_(group["momentum"]).add_(grad)
            return grad.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf.clone()
        beta1, beta2 = group["betas"]
        if "step" not in state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        t = float(state["step"])
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2**t)).add_(group["eps"])
        direction = state["exp_avg"] / denom / (1 - beta1**t)
        if self.base == "adamw" and group["weight_decay"]:
            direction.add_(p, alpha=group["weight_decay"])
        return direction

    # ------------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["adaptive"] = {"reported": list(self.reported), "cooldown_left": self._cooldown_left,
                          "last_action_at": self._last_action_at,
                          "meta_learning_enabled": self.meta_learning_enabled}  # fmt: skip
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        sd = dict(state_dict)
        extra = sd.pop("adaptive", None)
        saved, ours = len(sd.get("param_groups", [])), len(self.param_groups)
        if saved != ours:
            hint = ""
            if saved == ours - 1:  # the likely cause: a model's embedding tables, now a group of their own
                hint = ("; an optimiser built from a model puts its embedding tables in a group of their own: to "
                        "load a state saved without that group, build it with separate_embeddings=False (or from "
                        "model.parameters())")  # fmt: skip
            raise ValueError(f"the state dict has {saved} parameter group(s), this optimiser {ours}{hint}")
        super().load_state_dict(sd)
        if extra is not None:
            self.reported = [float(v) for v in extra["reported"]]
            self._cooldown_left = int(extra["cooldown_left"])
            self._last_action_at = int(extra.get("last_action_at", 0))
            self.meta_learning_enabled = bool(extra["meta_learning_enabled"])
