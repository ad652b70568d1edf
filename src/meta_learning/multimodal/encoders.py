"""Small encoders for the demo modalities (audio: :class:`~meta_learning.multimodal.audio.AudioCNN`; text: the
MiniLM sentence encoder, :class:`~meta_learning.models.minilm.MiniLMEncoder`, or an MLP over its embeddings)."""

from __future__ import annotations

from torch import Tensor, nn

from meta_learning._checks import check_positive_int
from meta_learning.models.conv4 import Conv4


class ImageCNN(nn.Module):
    """Conv4 blocks (conv3x3-BN-ReLU-maxpool), global average pooling, and a linear map to ``out_features``.

    The pooling makes it work for any input size (a 28x28 digit reaches 1x1 after four blocks).

    Example:
        >>> ImageCNN(in_channels=1, out_features=64)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 64])
    """

    def __init__(self, in_channels: int = 1, out_features: int = 64, hidden_channels: int = 32, blocks: int = 4):
        super().__init__()
        self.out_features = check_positive_int("out_features", out_features)
        self.backbone = Conv4(in_channels, hidden_channels, num_blocks=blocks, flatten=False)
        self.head = nn.Linear(hidden_channels, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x).mean(dim=(2, 3)))
