"""Backbones that work with ``torch.func.functional_call``: Conv4, ResNet-12 and an MLP."""

from meta_learning.models.conv4 import Conv4, conv_block
from meta_learning.models.mlp import MLP
from meta_learning.models.pooling import MaxPool2x2, max_pool2x2
from meta_learning.models.resnet12 import ResNet12

__all__ = ["MLP", "Conv4", "MaxPool2x2", "ResNet12", "conv_block", "max_pool2x2"]
