"""ResNet-12, the few-shot backbone of TADAM (Oreshkin et al. 2018) and MetaOptNet (Lee et al. 2019).

Four residual blocks; each is three conv3x3 -> BatchNorm -> LeakyReLU(0.1) layers (no activation after the third
before the sum), a 1x1-conv + BatchNorm shortcut, LeakyReLU after the sum, then max-pool 2x2. Channel widths
``(64, 160, 320, 640)``; ``3 x 84 x 84`` inputs give a ``640 x 5 x 5`` map, average-pooled to 640-d.
DropBlock is left out (a regulariser for long miniImageNet schedules); ``dropout`` applies plain dropout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from meta_learning._checks import check_positive_int
from meta_learning.models.pooling import MaxPool2x2


class ResidualBlock(nn.Module):
    """Three conv3x3 layers with a projected shortcut, then max-pooling."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv3 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.act = nn.LeakyReLU(0.1)
        self.pool = MaxPool2x2()  # nn.MaxPool2d(2), exactly, without its slow CPU kernel
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self.act(out + self.shortcut(x))
        return self.dropout(self.pool(out))


class ResNet12(nn.Module):
    """ResNet-12 embedding network.

    Args:
        in_channels: input channels.
        channels: widths of the four blocks.
        dropout: dropout after each block.
        avg_pool: average the final map to a vector (default) or return it flattened.
        num_classes: optional linear head on the pooled features.

    Shapes: ``x [B, C, H, W] -> [B, channels[-1]]`` with ``avg_pool``.

    Example:
        >>> ResNet12(in_channels=3, channels=(8, 8, 8, 8))(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 8])
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: Sequence[int] = (64, 160, 320, 640),
        dropout: float = 0.0,
        avg_pool: bool = True,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        if len(channels) != 4:
            raise ValueError(f"channels={tuple(channels)} must give exactly 4 block widths")
        for i, c in enumerate(channels):
            check_positive_int(f"channels[{i}]", c)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        widths = [in_channels, *channels]
        self.blocks = nn.Sequential(*[ResidualBlock(widths[i], widths[i + 1], dropout) for i in range(4)])
        self.avg_pool = avg_pool
        self.head = nn.Linear(channels[-1], num_classes) if num_classes is not None else None
        if num_classes is not None and not avg_pool:
            raise ValueError("num_classes needs avg_pool=True: the head acts on the pooled features")

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"ResNet12 expects [B, C, H, W] input, got shape {tuple(x.shape)}")
        h = self.blocks(x)
        h = h.mean(dim=(2, 3)) if self.avg_pool else torch.flatten(h, 1)
        return self.head(h) if self.head is not None else h
