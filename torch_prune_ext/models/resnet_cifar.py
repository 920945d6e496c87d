"""ResNet-20/32 for CIFAR in the "lottery ticket" layout, plus the shared building blocks.

The layout follows He et al. (2016, Sec. 4.2) as used by the lottery-ticket and
pruning-at-initialisation papers: a 3x3 stem convolution, three stages of
``n = (depth - 2) / 6`` basic blocks at widths 16/32/64, global average pooling and a
linear classifier. Shortcuts that change shape are a 1x1 stride-2 convolution with
batch norm (option B); the others are the identity.

:class:`BasicBlock` and :func:`init_weights_` are shared with the other model files.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelConfigError

__all__ = ["BasicBlock", "CifarResNet", "init_weights_", "make_stage", "resnet20", "resnet32"]


def init_weights_(model: nn.Module) -> nn.Module:
    """Initialise a model in place the way the pruning papers do.

    Conv and linear weights get ``kaiming_normal_`` (``mode="fan_in"``,
    ``nonlinearity="relu"``), so their standard deviation is ``sqrt(2 / fan_in)``;
    conv and linear biases are set to zero; batch-norm scales to one and shifts to zero.

    Args:
        model: the module to initialise; every submodule is visited.

    Returns:
        The same ``model``, for chaining.

    Examples:
        >>> layer = init_weights_(nn.Linear(100, 10))
        >>> float(layer.bias.detach().abs().sum())
        0.0
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            if module.weight is not None:
                nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """The identity when the shape is kept, else a 1x1 conv (no bias) + batch norm."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection, then ReLU.

    ``out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``. The shortcut is
    the identity when ``stride == 1`` and the channel count is kept, otherwise a 1x1
    convolution (stride ``stride``, no bias) followed by batch norm.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        stride: stride of the first convolution and of the shortcut.

    Examples:
        >>> block = BasicBlock(16, 32, stride=2)
        >>> block(torch.zeros(2, 16, 8, 8)).shape
        torch.Size([2, 32, 4, 4])
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


def make_stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    """A stage of ``blocks`` basic blocks; only the first one has stride ``stride``.

    Args:
        in_channels: channels entering the stage.
        out_channels: channels of every block in the stage.
        blocks: number of blocks (at least 1).
        stride: stride of the first block.

    Returns:
        An ``nn.Sequential`` of :class:`BasicBlock`.

    Examples:
        >>> len(make_stage(16, 32, 3, 2))
        3
    """
    layers = [BasicBlock(in_channels, out_channels, stride)]
    layers += [BasicBlock(out_channels, out_channels, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs with three stages (the "lottery" CIFAR layout).

    Args:
        depth: ``6 n + 2`` for ``n >= 1`` blocks per stage (20, 32, 44, 56, 110, ...).
        num_classes: outputs of the final linear layer.
        width: channels of the first stage; the others have ``2 width`` and ``4 width``.

    Raises:
        ModelConfigError: (a ``ValueError``) if ``depth`` is not of the form ``6 n + 2`` or ``width`` or
            ``num_classes`` is not positive.

    Examples:
        >>> model = CifarResNet(20, num_classes=10)
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, depth: int, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ModelConfigError(
                f"CifarResNet depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110, ...), got {depth}; "
                "pick one of those depths."
            )
        if width < 1 or num_classes < 1:
            raise ModelConfigError(
                f"CifarResNet needs positive width and num_classes, got width={width}, "
                f"num_classes={num_classes}."
            )
        blocks = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.layer1 = make_stage(width, width, blocks, stride=1)
        self.layer2 = make_stage(width, 2 * width, blocks, stride=2)
        self.layer3 = make_stage(2 * width, 4 * width, blocks, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * width, num_classes)
        init_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


def resnet20(num_classes: int = 10) -> CifarResNet:
    """ResNet-20 for CIFAR (3 blocks per stage; 270,896 conv/linear weights at 10 classes).

    Args:
        num_classes: number of outputs.

    Returns:
        A freshly initialised :class:`CifarResNet`.

    Examples:
        >>> resnet20()(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """
    return CifarResNet(20, num_classes=num_classes)


def resnet32(num_classes: int = 10) -> CifarResNet:
    """ResNet-32 for CIFAR (5 blocks per stage).

    Args:
        num_classes: number of outputs.

    Returns:
        A freshly initialised :class:`CifarResNet`.

    Examples:
        >>> resnet32(100)(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 100])
    """
    return CifarResNet(32, num_classes=num_classes)
