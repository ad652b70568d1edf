"""Candidate operations of the NAS-Bench-201 and DARTS cell spaces.

Every op maps ``x [B, C_in, H, W]`` to ``[B, C_out, H', W']`` with ``H' = ceil(H / stride)`` (``stride`` 1 or 2),
so that the outputs of all candidates on one edge can be summed (the cells) or mixed (the supernets).

- NAS-Bench-201 (Dong & Yang 2020, ``cell_operations.py`` of their code): ``none``, ``skip_connect``,
  ``nor_conv_1x1``, ``nor_conv_3x3`` (ReLU-Conv-BN), ``avg_pool_3x3`` (``count_include_pad=False``).
- DARTS (Liu et al. 2019, ``operations.py``): ``none``, ``max_pool_3x3``, ``avg_pool_3x3``, ``skip_connect``,
  ``sep_conv_3x3/5x5`` (two stacked ReLU-depthwise-pointwise-BN blocks), ``dil_conv_3x3/5x5`` (dilation 2).

``skip_connect`` with stride 2 (or a change of width) is a :class:`FactorizedReduce`; odd spatial sizes are padded
by one row and column first so that its two shifted halves line up.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
DARTS_OPS: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)


class ReLUConvBN(nn.Sequential):
    """``ReLU -> Conv(k, stride, padding, dilation, bias=False) -> BatchNorm``."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int = 1, affine: bool = True
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """``ReLU -> depthwise Conv(k, dilation) -> pointwise Conv 1x1 -> BatchNorm``."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int, affine: bool = True
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two :class:`DilConv` blocks with dilation 1, the first carrying the stride."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True) -> None:
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
            DilConv(c_in, c_out, kernel, 1, padding, 1, affine),
        )


class Zero(nn.Module):
    """The ``none`` op: zeros of the output shape (it removes the edge)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.c_out, self.stride = c_out, stride

    def forward(self, x: Tensor) -> Tensor:
        h, w = -(-x.shape[2] // self.stride), -(-x.shape[3] // self.stride)
        return x.new_zeros(x.shape[0], self.c_out, h, w)


class FactorizedReduce(nn.Module):
    """Halve the resolution without losing half the pixels: two 1x1 stride-2 convolutions on ``x`` and on ``x``
    shifted by one pixel, concatenated, then BatchNorm (DARTS). With ``stride=1`` it is a 1x1 ReLU-Conv-BN."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2, affine: bool = True) -> None:
        super().__init__()
        self.stride = stride
        self.relu = nn.ReLU(inplace=False)
        if stride == 2:
            self.convs = nn.ModuleList(
                [nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False), nn.Conv2d(c_in, c_out - c_out // 2, 1, 2, bias=False)]
            )
        else:
            self.convs = nn.ModuleList([nn.Conv2d(c_in, c_out, 1, 1, bias=False)])
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        if self.stride == 1:
            return self.bn(self.convs[0](x))
        x = F.pad(x, (0, x.shape[3] % 2, 0, x.shape[2] % 2))  # odd sizes: both halves then give ceil(H / 2)
        return self.bn(torch.cat([self.convs[0](x), self.convs[1](x[:, :, 1:, 1:])], dim=1))


class Pool(nn.Module):
    """3x3 average or max pooling; a 1x1 ReLU-Conv-BN first when the width changes (NAS-Bench-201)."""

    def __init__(self, kind: str, c_in: int, c_out: int, stride: int, affine: bool = True) -> None:
        super().__init__()
        self.pre = ReLUConvBN(c_in, c_out, 1, 1, 0, affine=affine) if c_in != c_out else nn.Identity()
        if kind == "avg":
            self.pool: nn.Module = nn.AvgPool2d(3, stride, padding=1, count_include_pad=False)
        else:
            self.pool = nn.MaxPool2d(3, stride, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.pre(x))


def skip(c_in: int, c_out: int, stride: int, affine: bool = True) -> nn.Module:
    """Identity when shapes agree, else a :class:`FactorizedReduce`."""
    return nn.Identity() if stride == 1 and c_in == c_out else FactorizedReduce(c_in, c_out, stride, affine)


OpFactory = Callable[[int, int, int, bool], nn.Module]  # (c_in, c_out, stride, affine) -> module

OPS: dict[str, OpFactory] = {
    "none": lambda ci, co, s, a: Zero(ci, co, s),
    "skip_connect": skip,
    "nor_conv_1x1": lambda ci, co, s, a: ReLUConvBN(ci, co, 1, s, 0, affine=a),
    "nor_conv_3x3": lambda ci, co, s, a: ReLUConvBN(ci, co, 3, s, 1, affine=a),
    "avg_pool_3x3": lambda ci, co, s, a: Pool("avg", ci, co, s, a),
    "max_pool_3x3": lambda ci, co, s, a: Pool("max", ci, co, s, a),
    "sep_conv_3x3": lambda ci, co, s, a: SepConv(ci, co, 3, s, 1, a),
    "sep_conv_5x5": lambda ci, co, s, a: SepConv(ci, co, 5, s, 2, a),
    "dil_conv_3x3": lambda ci, co, s, a: DilConv(ci, co, 3, s, 2, 2, a),
    "dil_conv_5x5": lambda ci, co, s, a: DilConv(ci, co, 5, s, 4, 2, a),
}


def make_op(name: str, c_in: int, c_out: int, stride: int, affine: bool = True) -> nn.Module:
    """Build candidate op ``name``; an unknown name lists the known ones."""
    if name not in OPS:
        raise ValueError(f"operation {name!r} is unknown; known operations: {', '.join(sorted(OPS))}")
    return OPS[name](c_in, c_out, stride, affine)


def check_operations(name: str, operations: object, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """Validate a list of op names against ``allowed`` (no duplicates, at least two)."""
    if isinstance(operations, str) or not isinstance(operations, (list, tuple)):
        raise TypeError(f"{name} must be a list of operation names, got {operations!r}")
    ops = tuple(operations)
    bad = [o for o in ops if o not in allowed]
    if bad:
        raise ValueError(f"{name} has unknown operations {bad}; allowed: {', '.join(allowed)}")
    if len(set(ops)) != len(ops) or len(ops) < 2:
        raise ValueError(f"{name}={list(ops)} must hold at least two distinct operations")
    return ops
