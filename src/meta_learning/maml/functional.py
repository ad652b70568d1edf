"""The functional core shared by every gradient-based meta-learner (MAML, FOMAML, ANIL, Meta-SGD, MAML++, Reptile).

Notation (Finn et al. 2017; Li et al. 2017; Antoniou et al. 2019):

- ``theta``: the meta-parameters, a ``dict[str, Tensor]`` of the model's parameters.
- ``I``: the names adapted in the inner loop (all by default; the head only for ANIL).
- ``L_S(p)``, ``L_Q(p)``: the loss on a task's support / query set with parameters ``p``.
- Inner step ``s = 0..S-1``: ``p_{s+1}[n] = p_s[n] - alpha_{s,n} * dL_S(p_s)/dp_s[n]`` for ``n`` in ``I``;
  ``alpha_{s,n}`` is a float (MAML), a tensor shaped like the parameter (Meta-SGD) or a per-step scalar
  (MAML++ learned per-layer per-step rates). ``p_0 = theta``.
- Second order: the inner gradients keep their graph, so ``dL_Q(p_S)/dtheta`` differentiates through every step.
  First order (FOMAML): the inner gradients are constants, so ``dL_Q(p_S)/dtheta = dL_Q(p_S)/dp_S``.

Inner gradients: ``torch.autograd.grad`` (``create_graph`` for second order) on the plain per-task path, and
``torch.func.grad`` only where the inner loop runs inside a ``torch.func`` transform (the vmap-batched path, where
autograd.grad cannot be called). The two give bit-identical meta-gradients; functorch's wrapping of every operation
cost 0-3% of a Conv4 meta-step in an alternating in-process A/B (benchmarks/RESULTS.md, MAML family).

Buffers are passed explicitly to every forward: mutating a captured tensor inside ``torch.func.grad`` is an error,
and the caller decides whether updates are kept. MAML passes ``None`` for BatchNorm running statistics
(:func:`~meta_learning.maml.batchnorm.running_stat_names`), so BatchNorm normalises with batch statistics whatever
the module's train/eval mode and the running statistics are neither read nor updated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad

Params = dict[str, Tensor]
Buffers = dict[str, Tensor | None]  # None: a BatchNorm running statistic replaced by batch statistics
LossFn = Callable[[Tensor, Tensor], Tensor]
# alpha for one inner step: a float for all names, or a mapping name -> float / scalar tensor / tensor like the param
StepSize = float | Mapping[str, float | Tensor]


def check_regression_shapes(outputs: Tensor, targets: Tensor) -> None:
    """Refuse float targets not shaped like the outputs (``mse_loss`` would broadcast ``[K]`` against ``[K, C]``)."""
    if targets.shape != outputs.shape:
        raise ValueError(
            f"float targets (support_y/query_y, regression) have shape {tuple(targets.shape)} but the model's "
            f"outputs {tuple(outputs.shape)}; give targets shaped like the outputs, or integer class labels"
        )


def default_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy for integer labels, mean-squared error for float targets."""
    if torch.is_floating_point(targets):
        check_regression_shapes(outputs, targets)
        return nn.functional.mse_loss(outputs, targets)
    return nn.functional.cross_entropy(outputs, targets)


def gradient_step(current: Params, grads: Mapping[str, Tensor], alpha: StepSize) -> Params:
    """One inner step: ``p[n] - alpha_n * grads[n]`` for every name in ``grads``, the other names unchanged."""
    updated = dict(current)
    for k, g in grads.items():
        a = alpha if isinstance(alpha, (int, float)) else alpha[k]
        updated[k] = current[k] - a * g
    return updated


def forward(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor | None], x: Tensor) -> Tensor:
    """``model(x)`` evaluated with ``params`` and ``buffers`` in place of its own tensors (a ``None`` buffer is
    absent for the call: BatchNorm without running statistics uses batch statistics)."""
    # functional_call's annotation says Tensor, but it takes None for a buffer (set as the attribute for the call)
    return functional_call(model, (dict(params), dict(buffers)), (x,), strict=False)  # type: ignore[arg-type]


class InferenceModeError(RuntimeError):
    """The inner loop was asked for gradient steps under ``torch.inference_mode()``, which forbids them."""


def _under_functorch(tensors: Iterable[Tensor]) -> bool:
    """Whether any of ``tensors`` is wrapped by a ``torch.func`` transform (vmap, grad) being traced (a private
    torch function: a torch without it fails here loudly rather than picking a path silently)."""
    return any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors)


def support_gradients(
    loss_of: Callable[[Params, Buffers], Tensor], point: Params, buffers: Buffers, first_order: bool, transformed: bool
) -> dict[str, Tensor]:
    """``dL_S/dp`` at ``point`` for every name in it (``loss_of(p, buffers)``; the buffers are an argument, not
    captured, since a transform refuses the mutation of a captured tensor).

    Second order (``first_order=False``, gradients enabled, ``point`` with a graph): the gradients keep their graph
    (``create_graph``), so they are differentiable with respect to ``theta`` and to anything the loss captured.
    Otherwise they are constants, taken at detached copies of ``point``. Names the loss does not use get zero
    gradients (as ``torch.func.grad`` gives). ``transformed``: inside a ``torch.func`` transform, where only
    ``torch.func.grad`` can differentiate.
    """
    if transformed:
        return grad(loss_of)(point, buffers)
    keep_graph = torch.is_grad_enabled() and not first_order
    with torch.enable_grad():
        leaves = {k: v if keep_graph and v.requires_grad else v.detach().requires_grad_() for k, v in point.items()}
        grads = torch.autograd.grad(
            loss_of(leaves, buffers),
            list(leaves.values()),
            create_graph=keep_graph,
            allow_unused=True,
            materialize_grads=True,
        )
    return dict(zip(leaves, grads, strict=True))


def inner_loop(
    model: nn.Module,
    params: Params,
    buffers: Buffers,
    x: Tensor,
    y: Tensor,
    *,
    num_steps: int,
    step_size: Callable[[int], StepSize] | StepSize,
    inner_names: Sequence[str],
    first_order: bool,
    loss_fn: LossFn = default_loss,
    before_forward: Callable[[int], None] | None = None,
) -> list[Params]:
    """Run ``num_steps`` gradient steps on ``(x, y)`` and return ``[p_0, p_1, ..., p_S]``.

    Args:
        model: the module whose forward is evaluated functionally.
        params: ``theta`` (``p_0``); tensors that require grad keep their graph to it.
        buffers: buffers passed to every forward (``None`` entries: see :func:`forward`).
        x, y: the support set, ``[K, ...]`` and ``[K]`` (or ``[K, ...]`` float targets).
        num_steps: ``S`` >= 0.
        step_size: ``alpha`` for all steps, or a function ``s -> alpha`` for per-step rates.
        inner_names: the parameter names ``I`` that the inner loop adapts; the others stay ``theta``.
        first_order: drop the second-order terms (inner gradients as constants).
        loss_fn: ``(outputs, targets) -> scalar``.
        before_forward: called with ``s`` before the support forward of step ``s`` (per-step BatchNorm).

    Returns:
        The parameters after each step; ``result[s]`` holds all names (adapted and not).
    """
    if num_steps > 0 and torch.is_inference_mode_enabled():
        raise InferenceModeError(
            "the inner loop takes gradient steps, which torch.inference_mode() forbids; adapt or predict under "
            "torch.no_grad() instead (no graph to the meta-parameters is built there either)"
        )
    names = list(inner_names)
    trajectory = [params]
    current = params
    transformed = _under_functorch([x, *params.values()])
    for s in range(num_steps):
        frozen = {k: v for k, v in current.items() if k not in names}
        # First order: the inner gradient is a constant, so it is taken at detached parameters; otherwise the
        # support pass's graph back to theta would be recorded for nothing.
        point = {k: current[k].detach() if first_order else current[k] for k in names}
        if first_order:
            frozen = {k: v.detach() for k, v in frozen.items()}

        def support_loss(adapted: Params, bufs: Buffers, frozen: Params = frozen) -> Tensor:
            return loss_fn(forward(model, {**frozen, **adapted}, bufs, x), y)

        if before_forward is not None:
            before_forward(s)
        grads = support_gradients(support_loss, point, buffers, first_order, transformed)
        alpha = step_size(s) if callable(step_size) else step_size
        current = gradient_step(current, {k: grads[k].detach() if first_order else grads[k] for k in names}, alpha)
        trajectory.append(current)
    return trajectory


def resolve_inner_names(model: nn.Module, inner_params: Sequence[str] | Callable[[str], bool] | None) -> list[str]:
    """The names adapted in the inner loop: all trainable parameters, listed names/prefixes, or a predicate.

    A prefix selects a module's parameters (``"head"``: ``head.weight``, ``head.bias``, ...); the empty prefix ``""``
    is the root module, so it selects every trainable parameter.

    Raises:
        ValueError: a listed name matches no parameter, or nothing is selected.
    """
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if inner_params is None:
        selected = trainable
    elif callable(inner_params):
        selected = [n for n in trainable if inner_params(n)]
    else:
        if isinstance(inner_params, str) or not isinstance(inner_params, Iterable):
            raise TypeError(f"inner_params must be a list of names or a predicate, got {inner_params!r}")
        selected = []
        for entry in inner_params:
            if not isinstance(entry, str):
                raise TypeError(f"inner_params must list parameter names (strings), got the entry {entry!r}")
            hits = [n for n in trainable if entry == "" or n == entry or n.startswith(entry + ".")]
            if not hits:
                raise ValueError(
                    f"inner_params entry {entry!r} matches no trainable parameter; names look like {trainable[:4]}"
                )
            selected.extend(h for h in hits if h not in selected)
    if not selected:
        raise ValueError("inner_params selects no parameter; the inner loop would adapt nothing")
    return selected


def last_module_with_parameters(model: nn.Module) -> str:
    """Name prefix of the last module that owns parameters directly (the classifier head, for ANIL); ``""`` when
    only the root does (a model that is a single layer, such as one ``nn.Linear``)."""
    owner: str | None = None
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            owner = name
    if owner is None:
        raise ValueError(f"the model ({type(model).__name__}) has no parameters; ANIL has nothing to adapt")
    return owner
