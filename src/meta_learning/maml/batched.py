"""Batching a meta-batch's tasks with ``torch.func.vmap``, only where it is exact.

The per-task loop is the default for every model but plain MLPs (which take the exact stacked-parameter path of
:mod:`meta_learning.maml.stacked`) and is exact for every layer. ``MAML(..., batch_tasks=True)`` instead runs a
meta-batch's tasks as one ``vmap``-batched computation. Measured on this project's 2-core CPU it is SLOWER: 0.36x
the loop's tasks/s for the sinusoid MLP (functorch's batching overhead outweighs the saved dispatch) and 0.5x for a
Conv4 written as grouped convolutions (benchmarks/RESULTS.md), so it is off by default; it is there for devices
where batching pays (GPUs; not measured here). On torch 2.13 vmap gives WRONG second-order meta-gradients for
affine BatchNorm and LayerNorm (``../shared/peers/vmap_norm_second_order_bug.py``; a canary test in ``tests/maml``
watches the bug), so the batched path is refused (``ValueError`` naming the module) unless every leaf layer is
in :data:`EXACT_LAYERS`, for which tests prove the batched meta-gradient equal to the loop's, and the model has no
buffers; a meta-batch whose tasks differ in shape is refused too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from meta_learning.data.episode import Episode

# Leaf layers whose vmap-over-tasks meta-gradients are proven equal to the per-task loop (tests/maml/test_batched.py)
EXACT_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid,
    nn.Softplus, nn.Identity, nn.Flatten, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
)  # fmt: skip
# Layers refused even when batching is forced: wrong second-order gradients (norms) or per-call randomness.
REFUSED_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.modules.dropout._DropoutNd,
)  # fmt: skip


def vmap_refusal(model: nn.Module) -> str | None:
    """Why ``model`` may not take the batched path, or ``None`` when every leaf is proven exact."""
    for name, module in model.named_modules():
        if isinstance(module, REFUSED_LAYERS):
            return f"{name or 'model'} is {type(module).__name__}, whose meta-gradients are wrong under vmap"
    if any(True for _ in model.buffers()):
        name = next(n for n, _ in model.named_buffers())
        return f"the model has buffers ({name!r}); the batched path runs buffer-free models only"
    for name, module in model.named_modules():
        if not any(True for _ in module.children()) and not isinstance(module, EXACT_LAYERS):
            return f"{name or 'model'} ({type(module).__name__}) is not a layer proven exact under vmap"
    return None


_FIELDS = ("support_x", "support_y", "query_x", "query_y")


def same_shapes(episodes: Sequence[Episode]) -> bool:
    first = episodes[0]
    return all(all(getattr(ep, k).shape == getattr(first, k).shape for k in _FIELDS) for ep in episodes[1:])


def stack_episodes(episodes: Sequence[Episode]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(support_x, support_y, query_x, query_y)`` stacked on a leading task dimension."""
    sx, sy, qx, qy = (torch.stack([getattr(ep, k) for ep in episodes]) for k in _FIELDS)
    return sx, sy, qx, qy


def batched_task_losses(
    task_fn: Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]], episodes: Sequence[Episode]
) -> tuple[Tensor, Tensor, Tensor]:
    """Run ``task_fn(sx, sy, qx, qy) -> (loss, query_outputs)`` over all tasks with vmap.

    Returns the per-task losses ``[B]`` (differentiable w.r.t. whatever ``task_fn`` closes over), the query
    outputs ``[B, Q, ...]`` and the stacked query targets ``[B, Q, ...]``.
    """
    sx, sy, qx, qy = stack_episodes(episodes)
    losses, outs = torch.func.vmap(task_fn)(sx, sy, qx, qy)
    return losses, outs, qy
