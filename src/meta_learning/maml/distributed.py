"""Data-parallel meta-training: each rank takes a share of the meta-batch, gradients are summed across ranks.

With ``B`` tasks in the meta-batch and ``R`` ranks, rank ``r`` computes ``sum_{t in share_r} L_t / B`` and the
gradients are all-reduced with SUM, so the update equals the single-process update on all ``B`` tasks
(``mean_t L_t``) for any split, even when ``R`` does not divide ``B``. Every rank draws the same meta-batch from an
identically seeded sampler and keeps its contiguous share, so ``R`` ranks reproduce one process exactly (up to
floating-point summation order). Start with ``torchrun``; gloo on CPU, NCCL on GPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when ``torch.distributed`` is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Rank ``rank``'s contiguous share of ``items`` (sizes differ by at most one)."""
    n = len(items)
    start = rank * n // world_size
    stop = (rank + 1) * n // world_size
    return list(items[start:stop])


def all_reduce_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Sum ``.grad`` across ranks in one flat all-reduce (a no-op in a single process)."""
    _, size = world()
    if size == 1:
        return
    params = [p for p in parameters if p.requires_grad]
    for p in params:
        if p.grad is None:  # a rank whose share did not touch p still has to join the reduction
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])  # type: ignore[union-attr]
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p))  # type: ignore[union-attr]
        offset += n


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum of ``values`` across ranks (for logging metrics)."""
    _, size = world()
    if size == 1:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()
