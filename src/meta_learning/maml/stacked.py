"""Exact task batching for MLPs: each task's parameters stacked on a leading dimension, one batched matmul per layer.

For a chain of ``nn.Linear`` layers and element-wise activations, the inner loops of a meta-batch's ``T`` tasks are
the same computation on different numbers. Stacking every parameter to ``[T, ...]`` (``theta.expand``: no copy)
turns ``T`` small matrix products into one ``baddbmm`` and ``T`` graphs into one, which removes most of the
per-operation dispatch that dominates small models on a CPU. Tasks do not interact: row ``t`` of the gradient of
``sum_t L_t`` w.r.t. the stacked parameters is task ``t``'s own gradient, and the gradient through ``expand`` sums the
tasks' meta-gradients into ``theta``. The result is the per-task loop's up to floating-point summation order
(``tests/maml/test_batched.py``: float64, second and first order, ANIL, Meta-SGD, MAML++ per-step rates and
multi-step loss, classification and regression).

Unlike :mod:`meta_learning.maml.batched` (``torch.func.vmap``, any proven layer) this is plain autograd on batched
kernels, so it is fast on a CPU as well (benchmarks/RESULTS.md, "Sinusoid regression").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meta_learning.maml.functional import LossFn, Params, StepSize, check_regression_shapes, default_loss, gradient_step

# Activations applied element-wise, so a leading task dimension passes through them unchanged (exact types only:
# a subclass may override forward).
ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Identity,
)  # fmt: skip


_MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOKS = (
    "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks",
)  # fmt: skip


def has_hooks(model: nn.Module) -> bool:
    """Whether a forward/backward (pre-)hook is registered on ``model``, one of its submodules, or globally
    (``torch.nn.modules.module.register_module_forward_hook`` and friends).

    The stacked path calls no module but the activations, so it would skip such hooks: a hooked model takes the
    per-task loop, which calls every module.
    """
    if any(getattr(nn.modules.module, name, None) for name in _GLOBAL_HOOKS):
        return True
    return any(getattr(m, name, None) for m in model.modules() for name in _MODULE_HOOKS)


class LinearChain:
    """A model recognised as ``Linear -> activation -> ... -> Linear``: the layers with their parameter prefixes.

    ``flatten``: the model flattens inputs of more than two dimensions from dim 1 first (:class:`~meta_learning.MLP`).
    """

    def __init__(self, layers: list[tuple[str, nn.Module]], flatten: bool) -> None:
        self.layers = layers
        self.flatten = flatten

    @classmethod
    def of(cls, model: nn.Module) -> LinearChain | None:
        """The chain of ``model``, or ``None`` when it is not a plain MLP or has hooks (:func:`has_hooks`; then the
        per-task loop is used)."""
        from meta_learning.models.mlp import MLP

        if type(model) is MLP:
            seq, prefix, flatten = model.net, "net.", True
        elif type(model) is nn.Sequential:
            seq, prefix, flatten = model, "", False
        else:
            return None
        if any(True for _ in model.buffers()) or has_hooks(model):
            return None
        layers: list[tuple[str, nn.Module]] = []
        for name, module in seq.named_children():
            if type(module) is not nn.Linear and type(module) not in ELEMENTWISE:
                return None
            layers.append((prefix + name, module))
        if not any(type(m) is nn.Linear for _, m in layers):
            return None
        return cls(layers, flatten)

    def inputs(self, x: Tensor) -> Tensor | None:
        """Stacked task inputs ``[T, N, D]`` as the chain sees them, or ``None`` if they are not of that form."""
        if self.flatten and x.dim() > 3:
            x = x.flatten(2)
        return x if x.dim() == 3 else None

    def forward(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """``[T, N, D] -> [T, N, out]`` with task ``t`` run on parameters ``params[k][t]``."""
        for name, module in self.layers:
            if type(module) is nn.Linear:
                weight = params[name + ".weight"].transpose(1, 2)
                bias = params.get(name + ".bias")
                x = torch.bmm(x, weight) if bias is None else torch.baddbmm(bias.unsqueeze(1), x, weight)
            else:
                x = module(x)
        return x


def per_task_losses(loss_fn: LossFn, outputs: Tensor, targets: Tensor) -> Tensor:
    """``[loss_fn(outputs[t], targets[t]) for t]`` as a ``[T]`` tensor; the default loss in one batched call."""
    if loss_fn is not default_loss:
        return torch.stack([loss_fn(o, y) for o, y in zip(outputs, targets, strict=True)])
    if torch.is_floating_point(targets):
        check_regression_shapes(outputs, targets)
        return (outputs - targets).pow(2).flatten(1).mean(1)
    t, n = targets.shape[:2]
    losses = F.cross_entropy(outputs.flatten(0, 1), targets.flatten(0, 1), reduction="none")
    return losses.view(t, n, *losses.shape[1:]).flatten(1).mean(1)


def stacked_inner_loop(
    chain: LinearChain,
    theta: Params,
    x: Tensor,
    y: Tensor,
    *,
    num_steps: int,
    step_size: Callable[[int], StepSize],
    inner_names: Sequence[str],
    first_order: bool,
    loss_fn: LossFn,
) -> list[Params]:
    """:func:`~meta_learning.maml.functional.inner_loop` for every task at once: ``[p_0, ..., p_S]`` with each
    parameter stacked to ``[T, ...]`` (``p_0`` = ``theta`` expanded, no copy).

    ``x``, ``y``: the support sets stacked on a leading task dimension, ``x`` already as :meth:`LinearChain.inputs`
    returns it. The other arguments are :func:`~meta_learning.maml.functional.inner_loop`'s.
    """
    n_tasks = x.shape[0]
    current = {k: v.expand(n_tasks, *v.shape) for k, v in theta.items()}
    wanted = set(inner_names)
    names = [k for k in current if k in wanted]
    trajectory = [current]
    for s in range(num_steps):
        # First order: the inner gradient is a constant, taken at detached parameters (no graph back to theta).
        point = {k: v.detach().requires_grad_(k in wanted) for k, v in current.items()} if first_order else current
        support = per_task_losses(loss_fn, chain.forward(point, x), y).sum()
        grads = torch.autograd.grad(support, [point[k] for k in names], create_graph=not first_order)
        current = gradient_step(current, dict(zip(names, grads, strict=True)), step_size(s))
        trajectory.append(current)
    return trajectory
