"""Weight regularisation: EWC (Kirkpatrick et al. 2017), online EWC (Schwarz et al. 2018), SI (Zenke et al. 2017).

Notation (all diagonal, per parameter entry ``i``; ``theta`` the trainable parameters as a dict name -> tensor):

- ``p(y | x; theta)``: the model's softmax over its active output units; ``g(x, y) = d/dtheta log p(y | x; theta)``.
- Fisher information (diagonal), over ``N`` examples ``x_n`` of a task, at ``theta*`` (the weights after the task):
  ``true``: ``F_i = (1/N) sum_n sum_y p(y | x_n) g_i(x_n, y)^2`` (the exact expectation over the model's labels);
  ``sampled``: one ``y_n ~ p(. | x_n)`` per example (Kirkpatrick et al.); ``empirical``: ``y_n`` the true label.
- EWC penalty: ``(lambda / 2) sum_t sum_i F_{t,i} (theta_i - theta*_{t,i})^2``, one term per earlier task ``t``.
- Online EWC: one term, ``F~ <- gamma F~ + F_t`` and ``theta* <- theta*_t`` after each task; while the next task
  trains, the penalty is ``(lambda / 2) sum_i gamma F~_i (theta_i - theta*_i)^2``: the running Fisher is decayed
  once more, as in Schwarz et al. (2018), ``||theta - theta*_{k-1}||^2_{gamma F*_{k-1}}``, and van de Ven &
  Tolias's code (``fisher = gamma * fisher`` in the online loss). At ``gamma = 1`` it is the offline sum.
- SI: while training task ``mu``, ``w_i += -g_i(t) * (theta_i(t+1) - theta_i(t))`` after every optimizer step, with
  ``g`` the gradient of the task's loss without the SI term (as in Zenke et al.'s code; ``path_gradient="total"``
  uses the whole loss's gradient, SI term included, as van de Ven & Tolias's code does); after the task,
  ``Omega_i += w_i / ((Delta_i)^2 + xi)``, ``Delta_i`` the change of ``theta_i`` over the task, and the penalty is
  ``c sum_i Omega_i (theta_i - theta~_i)^2`` with ``theta~`` the weights at the end of the previous task.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from meta_learning._checks import check_choice, check_positive_float, check_positive_int
from meta_learning._modes import eval_mode
from meta_learning.continual.base import Strategy
from meta_learning.continual.models import TaskAwareModule

FISHER_KINDS = ("true", "sampled", "empirical")
SI_PATH_GRADIENTS = ("task", "total")
ParamDict = dict[str, Tensor]


def fisher_diagonal(
    model: nn.Module,
    data: Tensor,
    labels: Tensor,
    *,
    task_id: int | None = None,
    kind: str = "true",
    active: Tensor | None = None,
    generator: torch.Generator | None = None,
    max_chunk_elements: int = 1 << 25,
) -> ParamDict:
    """Diagonal Fisher information of ``model`` over ``data`` (see the module notation), one tensor per parameter.

    Per-example squared gradients are summed without materialising them when every trainable parameter belongs to
    an ``nn.Linear`` layer applied once to ``[B, in]`` inputs: the per-example gradient of ``W`` is
    ``delta_n a_n^T`` (``a_n`` the layer input, ``delta_n`` the gradient at its output), so
    ``sum_n (delta_n a_n^T)^2 = (delta^2)^T (a^2)``, one matrix product. Other models use ``torch.func.vmap`` of
    per-example gradients. The closed form also needs each parameter to reach the output only through its layer's
    call, with the call's input and output left unmodified; when the forward breaks that (an in-place op on a
    layer's output such as ``nn.ReLU(inplace=True)``, a weight also used by ``F.linear(x, layer.weight)`` or
    tied elsewhere, a layer whose output is unused), the vmap path is used instead, with a ``UserWarning`` naming
    the layer and the reason.

    Args:
        model: evaluated in eval mode (BatchNorm uses running statistics, no dropout) at its current weights.
        data: ``[N, ...]`` inputs; labels: ``[N]`` labels (used by ``kind="empirical"``).
        task_id: passed as ``model(x, task_id)`` to task-aware models.
        kind: ``"true"``, ``"sampled"`` or ``"empirical"``.
        active: ``[C]`` bool mask of the output units of the softmax (``None``: all).
        generator: draws the labels of ``kind="sampled"``.
        max_chunk_elements: on the vmap path, per-example gradients are computed ``chunk`` examples at a time with
            ``chunk * n_params <= max_chunk_elements`` (memory bound).

    Returns:
        ``{name: F}`` for every parameter with ``requires_grad``, each shaped like the parameter.
    """
    check_choice("kind", kind, FISHER_KINDS)
    check_positive_int("max_chunk_elements", max_chunk_elements)
    task_aware = isinstance(model, TaskAwareModule)
    if task_aware and task_id is None:
        raise ValueError("a task-aware model needs task_id to compute its Fisher")
    draws_from = generator.get_state() if generator is not None else None
    with eval_mode(model):
        try:
            fisher = _linear_fisher(model, data, labels, task_id, kind, active, generator)
        except _ClosedFormBroken as reason:
            warnings.warn(
                f"fisher_diagonal: the closed-form Fisher of nn.Linear layers does not apply because {reason}; "
                "computing exact per-example gradients with torch.func.vmap instead (slower)",
                stacklevel=2,
            )
            fisher = None
        if fisher is None:
            if generator is not None and draws_from is not None:  # the vmap path draws the same labels
                generator.set_state(draws_from)
            fisher = _vmap_fisher(model, data, labels, task_id, kind, active, generator, max_chunk_elements)
    return {n: f / data.shape[0] for n, f in fisher.items()}


def _log_probs(out: Tensor, active: Tensor | None) -> Tensor:
    if active is not None:
        out = out.masked_fill(~active, float("-inf"))
    return F.log_softmax(out, dim=-1)


def _targets(
    kind: str, log_probs: Tensor, labels: Tensor, active: Tensor | None, generator: torch.Generator | None
) -> list[tuple[Tensor, Tensor | None]]:
    """``(labels, per-example weights or None)`` whose weighted squared gradients sum to the chunk's Fisher."""
    if kind == "empirical":
        return [(labels, None)]
    probs = log_probs.detach().exp()
    if kind == "sampled":
        draw = torch.multinomial(probs.cpu().double(), 1, generator=generator).squeeze(1)
        return [(draw.to(labels.device), None)]
    classes = range(probs.shape[1]) if active is None else active.nonzero().flatten().tolist()
    return [(torch.full_like(labels, k), probs[:, k]) for k in classes]


class _ClosedFormBroken(Exception):
    """The model's forward defeats the closed-form Fisher (the message says why); use per-example gradients."""


def _edges_into_leaves(out: Tensor) -> dict[int, int]:
    """``{id(leaf): k}``: how many edges of ``out``'s autograd graph lead into each leaf tensor (one per use)."""
    counts: dict[int, int] = {}
    stack = [out.grad_fn] if out.grad_fn is not None else []
    seen = set(stack)
    while stack:
        node = stack.pop()
        for child, _ in node.next_functions:
            if child is None:
                continue
            leaf = getattr(child, "variable", None)  # AccumulateGrad nodes hold the leaf they write to
            if leaf is not None:
                counts[id(leaf)] = counts.get(id(leaf), 0) + 1
            elif child not in seen:
                seen.add(child)
                stack.append(child)
    return counts


def _check_closed_form(
    out: Tensor, layers: dict[str, nn.Linear], captured: dict[str, tuple[Tensor, Tensor, int, int]]
) -> None:
    """Raise :class:`_ClosedFormBroken` unless every trainable parameter enters ``out`` once, through its layer's
    hooked call, and the inputs and outputs the hooks kept are the tensors that call saw and produced."""
    for name, (inp, output, in_version, out_version) in captured.items():
        if inp._version != in_version or output._version != out_version:
            raise _ClosedFormBroken(
                f"the input or output of layer {name!r} was modified in place after the layer ran "
                "(e.g. by nn.ReLU(inplace=True))"
            )
    uses = _edges_into_leaves(out)
    for name, layer in layers.items():
        expected = 1 if name in captured else 0
        for pname, p in layer.named_parameters(recurse=False):
            if p.requires_grad and uses.get(id(p), 0) != expected:
                raise _ClosedFormBroken(
                    f"parameter {pname!r} of layer {name!r} reaches the output {uses.get(id(p), 0)} time(s) but the "
                    f"layer's own call ran {expected} time(s): it is used outside that call (e.g. "
                    "F.linear(x, layer.weight) or weight tying) or the call's output is unused"
                )


def _linear_fisher(
    model: nn.Module,
    data: Tensor,
    labels: Tensor,
    task_id: int | None,
    kind: str,
    active: Tensor | None,
    generator: torch.Generator | None,
    chunk: int = 1024,
) -> ParamDict | None:
    """The closed-form path for all-``nn.Linear`` models; ``None`` when the model is not one.

    Raises :class:`_ClosedFormBroken` when the model is made of ``nn.Linear`` layers but its forward defeats the
    closed form (see :func:`_check_closed_form`).
    """
    layers: dict[str, nn.Linear] = {}
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own and not isinstance(module, nn.Linear):
            return None
        if own:
            layers[name] = module
    prefix = {name: f"{name}." if name else "" for name in layers}
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}
    captured: dict[str, tuple[Tensor, Tensor, int, int]] = {}  # layer -> (input, output, their versions)
    reused: list[str] = []

    def hook(name: str) -> Any:
        def fn(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            if name in captured or inputs[0].dim() != 2:
                reused.append(name)
            captured[name] = (inputs[0].detach(), output, inputs[0]._version, output._version)

        return fn

    handles = [layer.register_forward_hook(hook(name)) for name, layer in layers.items()]
    try:
        with torch.enable_grad():
            for xb, yb in zip(data.split(chunk), labels.split(chunk), strict=True):
                captured.clear()
                out = model(xb, task_id) if task_id is not None else model(xb)
                if reused:
                    return None  # a layer ran twice or on [B, T, in] inputs: per-example gradients do not factor
                _check_closed_form(out, layers, captured)
                used = [n for n in layers if n in captured]
                log_probs = _log_probs(out, active)
                for target, weight in _targets(kind, log_probs, yb, active, generator):
                    loss = F.nll_loss(log_probs, target, reduction="sum")
                    deltas = torch.autograd.grad(loss, [captured[n][1] for n in used], retain_graph=True)
                    for name, delta in zip(used, deltas, strict=True):
                        sq = delta.pow(2)
                        if weight is not None:
                            sq = sq * weight.unsqueeze(1)
                        w_name, b_name = prefix[name] + "weight", prefix[name] + "bias"
                        if w_name in fisher:
                            fisher[w_name] += sq.T @ captured[name][0].pow(2)
                        if b_name in fisher:
                            fisher[b_name] += sq.sum(0)
    finally:
        for h in handles:
            h.remove()
    return fisher


def _vmap_fisher(
    model: nn.Module,
    data: Tensor,
    labels: Tensor,
    task_id: int | None,
    kind: str,
    active: Tensor | None,
    generator: torch.Generator | None,
    max_chunk_elements: int,
) -> ParamDict:
    """Per-example gradients with ``torch.func`` (any model whose forward is vmap-able in eval mode)."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())

    def log_probs(p: ParamDict, x: Tensor) -> Tensor:
        out = functional_call(model, {**p, **buffers}, (x, task_id) if task_id is not None else (x,))
        return _log_probs(out, active)

    def nll_one(p: ParamDict, x: Tensor, k: Tensor) -> Tensor:
        return F.nll_loss(log_probs(p, x.unsqueeze(0)), k.unsqueeze(0))

    per_example_grads = vmap(grad(nll_one), in_dims=(None, 0, 0))
    n_params = sum(p.numel() for p in params.values())
    chunk = max(1, min(data.shape[0], max_chunk_elements // max(1, n_params)))
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    for xb, yb in zip(data.split(chunk), labels.split(chunk), strict=True):
        with torch.no_grad():
            lp = log_probs(params, xb)
        for target, weight in _targets(kind, lp, yb, active, generator):
            for n, g in per_example_grads(params, xb, target).items():
                sq = g.pow(2)
                if weight is not None:
                    sq = sq * weight.view(-1, *([1] * (sq.dim() - 1)))
                fisher[n] += sq.sum(0)
    return fisher


class _WeightedSquares(torch.autograd.Function):
    """``sum_k sum_i w_ki (x_ki - c_ki)^2`` over tensors ``x_k``, differentiable in the ``x_k``.

    Its gradient ``2 w (x - c)`` is read off the product ``w (x - c)`` kept from the forward pass: a step costs
    about half the memory passes (and none of the temporaries) of composing ``sub``, ``pow``, ``mul`` and ``sum``
    under autograd, which made an EWC or SI task take 2-2.5x plain fine-tuning's time on a 2x400 MLP. Under
    ``create_graph=True`` the gradient is rebuilt from the saved inputs with differentiable ops, so second
    derivatives (Hessian-vector products through a loss holding the penalty) are exact too."""

    @staticmethod
    def forward(ctx: Any, weights: list[Tensor], centres: list[Tensor], *xs: Tensor) -> Tensor:
        total = xs[0].new_zeros(())
        products = []
        for w, c, x in zip(weights, centres, xs, strict=True):
            d = x - c
            wd = w * d
            total = total + torch.dot(wd.reshape(-1), d.reshape(-1).to(wd.dtype))
            products.append(wd)
        ctx.save_for_backward(*xs)
        ctx.weights, ctx.centres, ctx.products = weights, centres, products
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():  # create_graph: a gradient that is itself differentiable in the x_k
            xs = ctx.saved_tensors
            grads = [2.0 * grad_out * w * (x - c) for w, c, x in zip(ctx.weights, ctx.centres, xs, strict=True)]
        else:
            grads = [wd.mul(2.0 * grad_out) for wd in ctx.products]
        return (None, None, *grads)


def quadratic_penalty(params: Mapping[str, Tensor], anchor: ParamDict, importance: ParamDict) -> Tensor:
    """``sum_i importance_i (theta_i - anchor_i)^2`` over the names of ``importance``."""
    names = list(importance)
    return _WeightedSquares.apply(
        [importance[n] for n in names], [anchor[n] for n in names], *(params[n] for n in names)
    )


def _snapshot(params: dict[str, nn.Parameter]) -> ParamDict:
    return {n: p.detach().clone() for n, p in params.items()}


class EWC(Strategy):
    """Elastic weight consolidation, offline (one penalty per task) or online (one decayed running penalty).

    Args:
        model: trained in place.
        ewc_lambda: the penalty weight ``lambda``.
        fisher_scale: every new Fisher is multiplied by this before it is stored.
        online: online EWC (Schwarz et al. 2018) with decay ``gamma``; else one term per task (Kirkpatrick).
        gamma: decay of the running Fisher, in (0, 1]; online, the penalty uses ``gamma`` times the running
            Fisher (``terms`` stores the running Fisher itself, undecayed).
        fisher: ``"true"`` (default; exact expectation over the model's labels), ``"sampled"`` or ``"empirical"``.
        fisher_samples: examples of the task used for the Fisher (a seeded random subset); ``None``: all.
        **kwargs: :class:`~meta_learning.continual.base.Strategy` options (``config``, ``seed``, ``device``, ...).

    ``previous_tasks`` that this object did not learn are consolidated at the current weights before training.

    Example:
        >>> ewc = EWC(model=MLP(784, [400, 400], 10), ewc_lambda=1000)   # doctest: +SKIP
        >>> ewc.learn_task(x1, y1); ewc.learn_task(x2, y2)               # doctest: +SKIP
    """

    @classmethod
    def from_config(cls, model: nn.Module, config: Any, **kwargs: Any) -> EWC:
        """Built from the ``ewc`` section of a config (an :class:`~meta_learning.config.EWCConfig` or the seed's
        dict ``{"lambda": 1000, "fisher_scale": 1.0}``); ``kwargs`` add the other options (``online``, ...)."""
        from meta_learning.config import EWCConfig, as_section

        c = as_section(EWCConfig, config, "ewc")
        return cls(model, **{"ewc_lambda": c.ewc_lambda, "fisher_scale": c.fisher_scale, **kwargs})

    def __init__(
        self,
        model: nn.Module,
        ewc_lambda: float = 1000.0,
        fisher_scale: float = 1.0,
        online: bool = False,
        gamma: float = 1.0,
        *,
        fisher: str = "true",
        fisher_samples: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        self.ewc_lambda = check_positive_float("ewc_lambda", ewc_lambda)
        self.fisher_scale = check_positive_float("fisher_scale", fisher_scale)
        self.online = bool(online)
        gamma = check_positive_float("gamma", gamma)
        if gamma > 1.0:
            raise ValueError(f"gamma={gamma} but it must be in (0, 1]")
        self.gamma = gamma
        self.fisher_kind = check_choice("fisher", fisher, FISHER_KINDS)
        self.fisher_samples = None if fisher_samples is None else check_positive_int("fisher_samples", fisher_samples)
        self.terms: list[tuple[ParamDict, ParamDict]] = []  # (anchor theta*, Fisher F), one per task or one online
        self._merged: tuple[ParamDict, ParamDict, Tensor] | None = None

    def penalty(self) -> Tensor | None:
        if self._merged is None:
            return None
        importance, centre, constant = self._merged
        params = dict(self.model.named_parameters())
        decay = self.gamma if self.online else 1.0  # online: gamma F~, Schwarz et al. 2018 (see the module notation)
        return 0.5 * self.ewc_lambda * decay * (quadratic_penalty(params, centre, importance) + constant)

    def _merge_terms(self) -> None:
        """Fold the per-task terms into one: ``sum_t F_t (theta - theta*_t)^2 = A (theta - mu)^2 + K`` with
        ``A = sum_t F_t``, ``mu = sum_t F_t theta*_t / A`` and ``K = sum_t F_t (theta*_t - mu)^2`` (exact), so a
        step costs one quadratic however many tasks there are."""
        if not self.terms:
            self._merged = None
            return
        names = sorted({n for _, fisher in self.terms for n in fisher})
        importance, centre = {}, {}
        constant = torch.zeros((), dtype=torch.float64)
        for n in names:
            pairs = [(anchor[n], fisher[n]) for anchor, fisher in self.terms if n in fisher]
            if len(pairs) == 1:  # one term: keep theta* itself, so the penalty is exactly 0 at the anchor
                centre[n], importance[n] = pairs[0]
                continue
            a = torch.stack([f for _, f in pairs]).sum(0)
            weighted = torch.stack([f * t for t, f in pairs]).sum(0)
            mu = torch.where(a > 0, weighted / a.clamp_min(torch.finfo(a.dtype).tiny), pairs[-1][0])
            importance[n], centre[n] = a, mu
            constant += sum(float((f * (t - mu).pow(2)).sum()) for t, f in pairs)
        self._merged = (importance, centre, constant.to(next(iter(importance.values())).dtype).to(self.device))

    def after_task(self, data: Tensor, labels: Tensor, task_id: int) -> None:
        self._consolidate_now(data, labels, task_id)

    def consolidate(self, data: Tensor, labels: Tensor, task_id: int) -> None:
        self._consolidate_now(data, labels, task_id)

    def compute_fisher(self, data: Tensor, labels: Tensor, task_id: int) -> ParamDict:
        """The (scaled) diagonal Fisher of the model at its current weights over the task's data."""
        if self.fisher_samples is not None and self.fisher_samples < data.shape[0]:
            pick = torch.randperm(data.shape[0], generator=self.generator)[: self.fisher_samples].to(data.device)
            data, labels = data[pick], labels[pick]
        fisher = fisher_diagonal(
            self.model,
            data,
            labels,
            task_id=task_id if self.multi_head else None,
            kind=self.fisher_kind,
            active=self.active_mask(),
            generator=self.generator,
        )
        return {n: f * self.fisher_scale for n, f in fisher.items()}

    def _consolidate_now(self, data: Tensor, labels: Tensor, task_id: int) -> None:
        fisher = self.compute_fisher(data, labels, task_id)
        anchor = _snapshot(self.trainable_parameters())
        if self.online and self.terms:
            _, previous = self.terms[0]
            for n, f in previous.items():
                fisher[n] = self.gamma * f + fisher[n] if n in fisher else self.gamma * f
            params = dict(self.model.named_parameters())
            anchor = {n: params[n].detach().clone() for n in fisher}
            self.terms = [(anchor, fisher)]
        else:
            self.terms.append((anchor, fisher))
        self._merge_terms()

    def extra_state(self) -> dict[str, Any]:
        return {"terms": [{"anchor": a, "fisher": f} for a, f in self.terms]}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.terms = [(dict(t["anchor"]), dict(t["fisher"])) for t in state["terms"]]
        self._merge_terms()


class SI(Strategy):
    """Synaptic intelligence: a per-parameter importance accumulated online along the training trajectory.

    Args:
        model: trained in place.
        c: weight of the surrogate loss.
        xi: damping ``xi`` of ``Omega = w / (Delta^2 + xi)``.
        path_gradient: the gradient ``g`` in ``w += -g * step``: ``"task"`` (default) the task loss's gradient
            without the SI term, as in Zenke et al.'s code; ``"total"`` the gradient of the whole training loss,
            surrogate included, as in van de Ven & Tolias's code (GMvandeVen/continual-learning).
        **kwargs: :class:`~meta_learning.continual.base.Strategy` options.

    SI needs the path of a task's training, so it cannot consolidate ``previous_tasks`` it did not learn itself
    (it raises ``ValueError`` for such tasks).
    """

    def __init__(
        self, model: nn.Module, c: float = 1.0, xi: float = 0.1, path_gradient: str = "task", **kwargs: Any
    ) -> None:
        super().__init__(model, **kwargs)
        self.c = check_positive_float("c", c)
        self.xi = check_positive_float("xi", xi)
        self.path_gradient = check_choice("path_gradient", path_gradient, SI_PATH_GRADIENTS)
        self.omega: ParamDict = {}
        self.anchor: ParamDict = {}
        self._w: ParamDict = {}
        self._prev: ParamDict = {}
        self._start: ParamDict = {}
        self._grad: ParamDict = {}
        self._scratch: ParamDict = {}

    def consolidate(self, data: Tensor, labels: Tensor, task_id: int) -> None:
        raise ValueError(
            f"SI cannot protect task {task_id} from previous_tasks: its importance is accumulated while training "
            "the task, so train earlier tasks through learn_task on this SI object"
        )

    def before_task(self, data: Tensor, labels: Tensor, task_id: int) -> None:
        params = self.trainable_parameters()
        self._w = {n: torch.zeros_like(p) for n, p in params.items()}
        self._prev = _snapshot(params)
        self._start = _snapshot(params)
        self._grad = {n: torch.zeros_like(p) for n, p in params.items()}
        self._scratch = {n: torch.zeros_like(p) for n, p in params.items()}

    def penalty(self) -> Tensor | None:
        if not self.omega:
            return None
        return self.c * quadratic_penalty(dict(self.model.named_parameters()), self.anchor, self.omega)

    # The per-step updates below work in place on buffers allocated once per task: on a 2x400 MLP, fresh
    # temporaries for every step cost as much as the step's matrix products.
    def after_backward(self, x: Tensor, y: Tensor, task_ids: Any) -> None:
        # The task-loss gradient: the total gradient minus the surrogate's, d/dtheta c Omega (theta - theta~)^2.
        for n, p in self.trainable_parameters().items():
            g = self._grad[n]
            if p.grad is None:
                g.zero_()
            else:
                g.copy_(p.grad)
            if n in self.omega and self.path_gradient == "task":
                surrogate = torch.sub(p.detach(), self.anchor[n], out=self._scratch[n]).mul_(self.omega[n])
                g.add_(surrogate, alpha=-2.0 * self.c)

    def after_step(self) -> None:
        for n, p in self.trainable_parameters().items():
            now = p.detach()
            step = torch.sub(now, self._prev[n], out=self._scratch[n])
            self._w[n].addcmul_(self._grad[n], step, value=-1.0)
            self._prev[n].copy_(now)

    def after_task(self, data: Tensor, labels: Tensor, task_id: int) -> None:
        for n, p in self.trainable_parameters().items():
            now = p.detach().clone()
            contribution = self._w[n] / ((now - self._start[n]).pow(2) + self.xi)
            self.omega[n] = self.omega[n] + contribution if n in self.omega else contribution
            self.anchor[n] = now
        self._w, self._prev, self._start, self._grad, self._scratch = {}, {}, {}, {}, {}

    def extra_state(self) -> dict[str, Any]:
        return {"omega": dict(self.omega), "anchor": dict(self.anchor)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.omega, self.anchor = dict(state["omega"]), dict(state["anchor"])
