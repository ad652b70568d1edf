"""Conv4: the standard few-shot backbone (Vinyals et al. 2016; Snell et al. 2017; Finn et al. 2017).

Each block is conv3x3 (padding 1 unless set) -> BatchNorm -> ReLU -> maxpool 2x2. On ``1 x 28 x 28`` Omniglot inputs
four blocks give a ``64 x 1 x 1`` map (64-d embedding); on ``3 x 84 x 84`` miniImageNet a ``64 x 5 x 5`` map (1600-d).

The modules run the pooling before the ReLU: ``maxpool(relu(x)) = relu(maxpool(x))`` exactly (ReLU is monotone,
so both pick the same maximum; where a window's maximum is <= 0 both give 0 and a zero gradient), forward and
every order of backward, and the ReLU and its backward then touch a quarter of the elements: a MAML meta-step on
Conv4 (1 or 5 inner steps, first or second order) runs 1.06-1.12x faster (benchmarks/RESULTS.md, MAML
throughput). The state-dict keys are those of the conventional order (the reordered modules hold no parameters).
The pooling is :class:`~meta_learning.models.pooling.MaxPool2x2`, ``nn.MaxPool2d(2)``'s values and gradients
computed without PyTorch's slow CPU kernel on large maps (1.2-2x faster there; small maps use that kernel).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from meta_learning._checks import check_non_negative_int, check_positive_int
from meta_learning.models.pooling import MaxPool2x2


def conv_block(in_channels: int, out_channels: int, pool: bool = True, padding: int = 1) -> nn.Sequential:
    """conv3x3 -> BatchNorm2d -> ReLU [-> MaxPool2d(2)], computed as conv -> BatchNorm [-> MaxPool2x2] -> ReLU
    (the same function and gradients, a quarter of the ReLU work; module notes). ``padding`` of the convolution:
    1 keeps the map's size, 0 shrinks it by 2."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=padding),
        nn.BatchNorm2d(out_channels),
    ]
    if pool:
        layers.append(MaxPool2x2())
    layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


class Conv4(nn.Module):
    """Four convolutional blocks, optionally followed by a linear classifier head.

    Args:
        in_channels: input channels (1 for Omniglot, 3 for miniImageNet).
        hidden_channels: filters per block (64 in the papers; 32 in MAML's miniImageNet model).
        num_blocks: number of blocks (4 for "Conv4").
        pool_blocks: how many leading blocks end with max-pooling (default all; Relation Networks pool
            only in the first two).
        num_classes: if given, a linear head maps the flattened features to ``num_classes`` logits
            (the MAML setup); otherwise the module returns the flattened embedding.
        flatten: return ``[B, D]`` (default) or the ``[B, C, H, W]`` feature map.
        padding: the convolutions' zero padding, 0 or 1, one value for every block or one per block (default 1;
            Relation Networks leave the first two blocks unpadded: ``(0, 0, 1, 1)``).

    Shapes: ``x [B, in_channels, H, W] -> [B, D]`` (or ``[B, num_classes]`` / ``[B, C, H', W']``).

    Example:
        >>> Conv4(in_channels=1)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 64])
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden_channels: int = 64,
        num_blocks: int = 4,
        pool_blocks: int | None = None,
        num_classes: int | None = None,
        flatten: bool = True,
        feature_size: int | None = None,
        padding: int | Sequence[int] = 1,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("hidden_channels", hidden_channels)
        check_positive_int("num_blocks", num_blocks)
        pool_blocks = num_blocks if pool_blocks is None else check_non_negative_int("pool_blocks", pool_blocks)
        if pool_blocks > num_blocks:
            raise ValueError(f"pool_blocks={pool_blocks} but num_blocks={num_blocks}; it must be <= num_blocks")
        pads: list[int] | None = None  # anything but 0/1 or a sequence of them is refused below
        if isinstance(padding, int):
            pads = [padding] * num_blocks
        elif isinstance(padding, Sequence) and not isinstance(padding, str):
            pads = list(padding)
        if pads is None or len(pads) != num_blocks or any(type(q) is not int or q not in (0, 1) for q in pads):
            raise ValueError(
                f"padding={padding!r}: it must be 0 or 1, or a sequence of {num_blocks} such values (one per block)"
            )
        channels: Sequence[int] = [in_channels] + [hidden_channels] * num_blocks
        self.features = nn.Sequential(
            *[
                conv_block(channels[i], channels[i + 1], pool=i < pool_blocks, padding=pads[i])
                for i in range(num_blocks)
            ]
        )
        self.min_input_size = _min_input_size(pads, pool_blocks)
        self.flatten = flatten
        self.pool_blocks = pool_blocks
        self.head: nn.Linear | None = None
        if num_classes is not None:
            check_positive_int("num_classes", num_classes)
            if not flatten:
                raise ValueError("num_classes needs flatten=True: the head acts on the flattened features")
            # feature_size defaults to the 1x1 map that 28x28 inputs reach after four pools.
            self.head = nn.Linear(feature_size or hidden_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"Conv4 input x must be a torch.Tensor, got {type(x).__name__}")
        first = cast(nn.Conv2d, cast(nn.Sequential, self.features[0])[0])
        if x.dim() != 4 or x.shape[1] != first.in_channels or min(x.shape[2:]) < self.min_input_size:
            raise ValueError(
                f"Conv4 expects [B, C, H, W] input x with C = in_channels = {first.in_channels} and H, W >= "
                f"{self.min_input_size} ({self.pool_blocks} pooling blocks), got shape {tuple(x.shape)}"
            )
        if x.dtype != first.weight.dtype:
            raise TypeError(f"Conv4 input x has dtype {x.dtype} but the weights are {first.weight.dtype}; convert x")
        h = self.features(x)
        if not self.flatten:
            return h
        h = torch.flatten(h, 1)
        return self.head(h) if self.head is not None else h


def _min_input_size(paddings: Sequence[int], pool_blocks: int) -> int:
    """The smallest ``H`` (= ``W``) the blocks accept: every convolution's output at least 1 pixel, and at least 2
    before each pooling."""

    def fits(size: int) -> bool:
        for i, pad in enumerate(paddings):
            size += 2 * pad - 2
            if size < (2 if i < pool_blocks else 1):
                return False
            size = size // 2 if i < pool_blocks else size
        return True

    size = 1
    while not fits(size):
        size += 1
    return size
