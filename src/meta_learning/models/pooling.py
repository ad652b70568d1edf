"""2x2 max-pooling with stride 2 (``nn.MaxPool2d(2)``): the values, gradients and second derivatives of
``torch.nn.functional.max_pool2d(x, 2)``, bit for bit, faster than it on large CPU maps.

Why: PyTorch's CPU kernel for ``max_pool2d`` on contiguous ``[N, C, H, W]`` tensors walks every window with
scalar code; on a ``75 x 64 x 28 x 28`` map (Conv4's first block on a 5-way 15-query Omniglot batch) it took
20.6 ms on one core of an AMD EPYC (Zen 4), where a ReLU over the same tensor took 0.74 ms, and in a second-order
MAML meta-step on Conv4 on one thread it was about a quarter of the time. Forward and backward of that map: 22.6 ms
there, 11.1 ms here on one thread; 13.5 / 9.7 ms on two (benchmarks/RESULTS.md, MAML throughput, where the gain on
whole meta-steps is measured: within noise on two threads). Maps under ``2^17`` elements per thread go to
``max_pool2d`` itself, where its single call is cheaper than the dozen here.

Notation: ``x [..., H, W]``, ``h = ⌊H/2⌋``, ``w = ⌊W/2⌋``; the window of output ``(i, j)`` holds
``x[2i, 2j], x[2i, 2j+1], x[2i+1, 2j], x[2i+1, 2j+1]`` (the last row / column of an odd-sized map is dropped, as
``max_pool2d``'s ``ceil_mode=False``).

- Indices: ``max_pool2d``'s CPU kernel keeps the first maximum of a window in row-major order. Two pairwise stages
  over strided views find it: columns first, ``k_c = x[.., 2j+1] > x[.., 2j]`` and the column maxima, then rows,
  ``k_r`` on those maxima; strict ``>`` keeps the first of equal values, and columns-then-rows is row-major order
  (rows-then-columns is not: on ``[[1, 2], [2, 0]]`` it would pick the second 2). The index is
  ``(2i + r) W + 2j + c`` within the plane, as ``max_pool2d_with_indices`` returns it.
- Values: ``y = x`` gathered at the indices (not ``torch.maximum``, whose vectorised CPU path returns its second
  operand when ``+0.0`` meets ``-0.0``), so signed zeros match too. Where the result holds a NaN (or
  ``+inf`` and ``-inf`` meet in the check), the whole call goes to ``max_pool2d_with_indices`` itself, whose NaN
  rule (the last NaN of a window wins) is left to it.
- Backward: ``torch.ops.aten.max_pool2d_with_indices_backward`` with those indices, PyTorch's own formula, which is
  differentiable in the output gradient (its derivative gathers at the indices); so every order of
  differentiation MAML needs is the reference's.

The autograd function follows the ``setup_context`` style, so ``torch.func.grad`` works through it; it has no
``vmap`` rule (``torch.func.vmap`` raises), and ``meta_learning.maml``'s batched path does not accept the layer.
Channels-last and non-CPU inputs go to ``max_pool2d`` directly: its kernels for them are fast already.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_CHUNK_ELEMENTS = 1 << 20  # input elements per chunk: its temporaries stay in cache and in malloc's reused blocks
# Below _MIN_ELEMENTS x torch's thread count, max_pool2d's one call costs less than the dozen calls here (measured on
# 1 and 2 threads: the crossover was near 2^17 elements on one thread and 2^18 on two, where max_pool2d's kernel,
# parallel over planes, gains more from the second thread than these bandwidth-bound calls do).
_MIN_ELEMENTS = 1 << 17


def _indices_into(x: Tensor, corner: Tensor, out: Tensor) -> None:
    """Write ``max_pool2d``'s int64 indices (``row · W + column`` within each plane) of a NaN-free ``x [P, H, W]``
    into ``out [P, h, w]``, from two pairwise stages: columns first (``k_c = x[.., 2j+1] > x[.., 2j]``), then rows
    (``k_r`` on the column maxima). Strict ``>`` keeps the first of equal values, and columns-then-rows is
    row-major order: the first maximum. ``corner [h, w]``: each window's top-left index, ``2i · W + 2j``."""
    height, width = x.shape[-2], x.shape[-1]
    h, w = height // 2, width // 2
    even = x[..., : 2 * h, : 2 * w]
    left, right = even[..., 0::2], even[..., 1::2]
    cols = torch.maximum(left, right)
    k_c = (right > left).view(torch.uint8)  # [.., 2h, w]
    k_r = (cols[..., 1::2, :] > cols[..., 0::2, :]).view(torch.uint8)  # [.., h, w]
    k_c0, k_c1 = k_c[..., 0::2, :], k_c[..., 1::2, :]
    # offset within the window: k_c0 on the top row, width + k_c1 on the bottom one (uint8 wraps harmlessly:
    # k_c1 - k_c0 + 2 is 1, 2 or 3 modulo 256)
    k = k_c0 + k_r * (k_c1 - k_c0 + 2)  # 0, 1 (top row) or 2, 3 (bottom row)
    k16 = k.to(torch.int16 if width < 2**15 - 1 else torch.int64)  # the offset reaches width + 1
    offset = (k16 & 1) + (k16 >> 1) * width
    torch.add(corner, offset, out=out)


def _pool(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(y, indices)`` of a NaN-free ``x [..., H, W]``, in chunks of planes (a few MB each): on a whole
    ``360 x 64 x 28 x 28`` map every temporary was a fresh allocation, and first-touch page faults made the call
    slower than ``max_pool2d``."""
    height, width = x.shape[-2], x.shape[-1]
    planes = x.reshape(-1, height, width)
    indices = torch.empty(planes.shape[0], height // 2, width // 2, dtype=torch.int64, device=x.device)
    y = torch.empty(indices.shape, dtype=x.dtype, device=x.device)
    rows = torch.arange(0, height - 1, 2, device=x.device).view(-1, 1) * width
    corner = rows + torch.arange(0, width - 1, 2, device=x.device)  # the same for every chunk: built once
    step = max(1, _CHUNK_ELEMENTS // (height * width))
    for start in range(0, planes.shape[0], step):
        part, idx = planes[start : start + step], indices[start : start + step]
        _indices_into(part, corner, idx)
        torch.gather(part.flatten(-2), -1, idx.flatten(-2), out=y[start : start + step].flatten(-2))
    shape = (*x.shape[:-2], height // 2, width // 2)
    return y.view(shape), indices.view(shape)


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(x: Tensor) -> tuple[Tensor, Tensor]:
        y, indices = _pool(x)
        if bool(torch.isnan(y.sum())):  # a NaN somewhere (or +inf and -inf): the reference kernel's NaN rules
            return torch.ops.aten.max_pool2d_with_indices(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
        return y, indices

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor], output: tuple[Tensor, Tensor]) -> None:
        (x,) = inputs
        indices = output[1]
        ctx.mark_non_differentiable(indices)
        ctx.save_for_backward(x, indices)

    @staticmethod
    def backward(ctx: Any, grad: Tensor, _grad_indices: Tensor | None) -> Tensor:
        x, indices = ctx.saved_tensors
        # PyTorch's own backward, given the same indices: differentiable in ``grad`` (its derivative gathers at the
        # indices), so second-order MAML differentiates through it exactly as through ``max_pool2d``.
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False,
                                                               indices)  # fmt: skip


def max_pool2x2(x: Tensor) -> Tensor:
    """``torch.nn.functional.max_pool2d(x, 2)`` for a ``[C, H, W]`` or ``[N, C, H, W]`` floating-point tensor with
    ``H, W >= 2``: the same values and derivatives of every order, bit for bit (module notes). Channels-last and
    non-CPU tensors go to ``max_pool2d`` itself, whose kernels for them are fast already."""
    if not isinstance(x, Tensor):
        raise TypeError(f"max_pool2x2 input x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (3, 4) or x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ValueError(f"max_pool2x2 expects x of shape [C, H, W] or [N, C, H, W] with H, W >= 2, got "
                         f"{tuple(x.shape)}")  # fmt: skip
    if not x.is_floating_point():
        raise TypeError(f"max_pool2x2 input x must be floating point, got dtype {x.dtype}")
    if (
        x.device.type != "cpu"
        or x.numel() < _MIN_ELEMENTS * torch.get_num_threads()
        or (x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last))
    ):  # GPU kernels, the channels-last CPU kernel and small maps are fast there already
        return F.max_pool2d(x, 2)
    return _MaxPool2x2.apply(x)[0]


class MaxPool2x2(nn.Module):
    """``nn.MaxPool2d(2)`` computed by :func:`max_pool2x2` (exact, faster on CPU; module notes)."""

    kernel_size = stride = 2

    def forward(self, x: Tensor) -> Tensor:
        return max_pool2x2(x)
