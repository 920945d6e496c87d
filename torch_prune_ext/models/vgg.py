"""VGG-16-BN and VGG-19-BN for 32x32 (CIFAR) inputs.

Every 3x3 convolution has a bias and is followed by batch norm and ReLU; ``"M"`` in a
plan is a 2x2 max-pool. There is no pool after the last stage: an ``AvgPool2d(2)``
takes the 2x2 map left by four pools on a 32x32 input to 1x1, and a single linear layer
maps the 512 channels to the classes. This is the CIFAR VGG of the pruning-at-
initialisation literature (SNIP, GraSP, SynFlow).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ModelConfigError
from .resnet_cifar import init_weights_

__all__ = ["VGG", "VGG16_PLAN", "VGG19_PLAN", "make_vgg_features", "vgg16_bn", "vgg19_bn"]

#: Channel plan of VGG-16 ("M" is a 2x2 max-pool).
VGG16_PLAN: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
)
#: Channel plan of VGG-19 ("M" is a 2x2 max-pool).
VGG19_PLAN: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512,
)


def make_vgg_features(plan: Sequence[int | str], in_channels: int = 3) -> nn.Sequential:
    """The convolutional trunk of a VGG: conv3x3 (with bias) + BN + ReLU per number, max-pool per "M".

    Args:
        plan: channel counts and ``"M"`` markers, e.g. :data:`VGG16_PLAN`.
        in_channels: channels of the input image.

    Returns:
        An ``nn.Sequential`` of the layers in order.

    Raises:
        ModelConfigError: (a ``ValueError``) if an entry is neither a positive int nor ``"M"``.

    Examples:
        >>> make_vgg_features([8, "M", 16])(torch.zeros(1, 3, 8, 8)).shape
        torch.Size([1, 16, 4, 4])
    """
    layers: list[nn.Module] = []
    channels = in_channels
    for entry in plan:
        if entry == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif isinstance(entry, int) and not isinstance(entry, bool) and entry > 0:
            layers += [
                nn.Conv2d(channels, entry, kernel_size=3, padding=1, bias=True),
                nn.BatchNorm2d(entry),
                nn.ReLU(),
            ]
            channels = entry
        else:
            raise ModelConfigError(f"VGG plan entries must be positive ints or 'M', got {entry!r}; fix the plan.")
    return nn.Sequential(*layers)


def _last_channels(plan: Sequence[int | str]) -> int:
    numbers = [entry for entry in plan if entry != "M"]
    if not numbers:
        raise ModelConfigError("A VGG plan needs at least one convolution; add a channel count to the plan.")
    return int(numbers[-1])


class VGG(nn.Module):
    """A VGG with batch norm for 32x32 inputs: features, ``AvgPool2d(2)``, one linear layer.

    Args:
        plan: channel plan (see :func:`make_vgg_features`); it must reduce a 32x32 input
            to 2x2 (four ``"M"``), so that the average pool leaves 1x1.
        num_classes: outputs of the classifier.

    Examples:
        >>> model = VGG(VGG16_PLAN, num_classes=10)
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, plan: Sequence[int | str], num_classes: int = 10) -> None:
        super().__init__()
        if num_classes < 1:
            raise ModelConfigError(f"num_classes must be positive, got {num_classes}.")
        self.plan = tuple(plan)
        self.features = make_vgg_features(self.plan)
        self.avgpool = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(_last_channels(self.plan), num_classes)
        init_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


def vgg16_bn(num_classes: int = 10) -> VGG:
    """VGG-16 with batch norm for CIFAR (14,761,664 conv/linear weights at 100 classes).

    Args:
        num_classes: number of outputs.

    Returns:
        A freshly initialised :class:`VGG`.

    Examples:
        >>> vgg16_bn(100)(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 100])
    """
    return VGG(VGG16_PLAN, num_classes=num_classes)


def vgg19_bn(num_classes: int = 10) -> VGG:
    """VGG-19 with batch norm for CIFAR.

    Args:
        num_classes: number of outputs.

    Returns:
        A freshly initialised :class:`VGG`.

    Examples:
        >>> vgg19_bn()(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """
    return VGG(VGG19_PLAN, num_classes=num_classes)
