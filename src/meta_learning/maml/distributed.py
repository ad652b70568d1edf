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
    """Sum ``.grad`` across ranks in one flat all-reduce (a no-op in a single process).

    A rank whose share did not reach a parameter joins the reduction with zeros. A parameter that no rank has a
    gradient for keeps ``grad=None`` on every rank, as in a single process, so the optimizer skips it (a zero
    gradient would still move it under Adam's momentum or weight decay): a presence count per parameter travels at
    the end of the same flat buffer.
    """
    _, size = world()
    params = [p for p in parameters if p.requires_grad]
    if size == 1 or not params:
        return
    present = [p.grad is not None for p in params]
    pieces = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
              for p in params]  # fmt: skip
    flat = torch.cat(pieces)
    flags = torch.tensor(present, dtype=flat.dtype, device=flat.device)
    flat = torch.cat([flat, flags])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    counts = flat[-len(params) :].tolist()
    offset = 0
    for p, count in zip(params, counts, strict=True):
        n = p.numel()
        if count > 0:
            reduced = flat[offset : offset + n].view_as(p)
            if p.grad is None:
                p.grad = reduced.to(p.dtype).clone()
            else:
                p.grad.copy_(reduced)
        offset += n


def collective_device() -> torch.device:
    """Where a buffer for a collective has to live: the current CUDA device under NCCL (which reduces CUDA tensors
    only), the CPU otherwise (gloo, and ``cpu:gloo,cuda:nccl`` for CPU tensors)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum of ``values`` across ranks (for logging metrics)."""
    _, size = world()
    if size == 1:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()
