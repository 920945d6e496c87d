"""ResNet-18 for 64x64 inputs (Tiny-ImageNet style).

The ImageNet ResNet-18 with its 7x7 stride-2 stem and max-pool replaced by a 3x3
stride-1 stem and no pool, so a 64x64 input reaches the last stage at 8x8: four stages
of two basic blocks at widths 64/128/256/512 (stride 2 at the start of stages 2-4),
adaptive average pooling and a linear classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ModelConfigError
from .resnet_cifar import init_weights_, make_stage

__all__ = ["TinyImageNetResNet", "resnet18"]


class TinyImageNetResNet(nn.Module):
    """ResNet with a 3x3 stride-1 stem, no max-pool and four stages of basic blocks.

    Args:
        blocks: blocks per stage, four entries (``(2, 2, 2, 2)`` is ResNet-18).
        num_classes: outputs of the final linear layer.
        width: channels of the first stage; stage ``i`` has ``width * 2**i``.

    Raises:
        ModelConfigError: (a ``ValueError``) if ``blocks`` does not have four positive entries.

    Examples:
        >>> model = TinyImageNetResNet((1, 1, 1, 1), num_classes=5, width=8)
        >>> model(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 5])
    """

    def __init__(self, blocks: Sequence[int] = (2, 2, 2, 2), num_classes: int = 200, width: int = 64) -> None:
        super().__init__()
        blocks = tuple(blocks)
        if len(blocks) != 4 or any(b < 1 for b in blocks):
            raise ModelConfigError(f"blocks must have four positive entries, e.g. (2, 2, 2, 2); got {blocks}.")
        if width < 1 or num_classes < 1:
            raise ModelConfigError(f"width and num_classes must be positive, got width={width}, num_classes={num_classes}.")
        widths = [width * 2**i for i in range(4)]
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.layer1 = make_stage(width, widths[0], blocks[0], stride=1)
        self.layer2 = make_stage(widths[0], widths[1], blocks[1], stride=2)
        self.layer3 = make_stage(widths[1], widths[2], blocks[2], stride=2)
        self.layer4 = make_stage(widths[2], widths[3], blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[3], num_classes)
        init_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


def resnet18(num_classes: int = 200) -> TinyImageNetResNet:
    """ResNet-18 for 64x64 inputs (Tiny-ImageNet: 200 classes by default).

    Args:
        num_classes: number of outputs.

    Returns:
        A freshly initialised :class:`TinyImageNetResNet`.

    Examples:
        >>> resnet18()(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 200])
    """
    return TinyImageNetResNet((2, 2, 2, 2), num_classes=num_classes)
