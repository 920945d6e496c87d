"""Reference models of the pruning papers, in plain PyTorch (no torchvision).

Use :func:`get_model` to build one by name and :func:`input_shape_of` for the input
shape (without the batch dimension) it is meant for.

Examples:
    >>> import torch
    >>> model = get_model("resnet20", num_classes=10)
    >>> x = torch.zeros(2, *input_shape_of("resnet20"))
    >>> model(x).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .mlp import ACTIVATIONS, MLP, lenet_300_100, mlp
from .resnet_cifar import BasicBlock, CifarResNet, init_weights_, make_stage, resnet20, resnet32
from .resnet_tiny import TinyImageNetResNet, resnet18
from .vgg import VGG, VGG16_PLAN, VGG19_PLAN, make_vgg_features, vgg16_bn, vgg19_bn

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "MODELS",
    "MODEL_INPUT_SHAPES",
    "VGG",
    "VGG16_PLAN",
    "VGG19_PLAN",
    "BasicBlock",
    "CifarResNet",
    "TinyImageNetResNet",
    "get_model",
    "init_weights_",
    "input_shape_of",
    "lenet_300_100",
    "make_stage",
    "make_vgg_features",
    "mlp",
    "resnet18",
    "resnet20",
    "resnet32",
    "vgg16_bn",
    "vgg19_bn",
]

#: Model builders by name.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet20": resnet20,
    "resnet32": resnet32,
    "vgg16_bn": vgg16_bn,
    "vgg19_bn": vgg19_bn,
    "resnet18": resnet18,
    "lenet_300_100": lenet_300_100,
    "mlp": mlp,
}

#: Natural input shape of each model, ``(C, H, W)`` without the batch dimension.
#: For ``"mlp"`` this is the shape of its default ``in_features=784``.
MODEL_INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "resnet20": (3, 32, 32),
    "resnet32": (3, 32, 32),
    "vgg16_bn": (3, 32, 32),
    "vgg19_bn": (3, 32, 32),
    "resnet18": (3, 64, 64),
    "lenet_300_100": (1, 28, 28),
    "mlp": (1, 28, 28),
}


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name.lower() not in MODELS:
        raise ValueError(f"Unknown model {name!r}; known models are {sorted(MODELS)}.")
    return name.lower()


def get_model(name: str, **kwargs: object) -> nn.Module:
    """Build a freshly initialised model by name.

    Args:
        name: a key of :data:`MODELS` (case-insensitive).
        **kwargs: passed to the builder, e.g. ``num_classes=100``.

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        ValueError: if ``name`` is not a known model (the message lists the known ones).

    Examples:
        >>> get_model("vgg16_bn", num_classes=100).classifier.out_features
        100
    """
    return MODELS[_check_name(name)](**kwargs)


def input_shape_of(name: str) -> tuple[int, ...]:
    """The natural input shape ``(C, H, W)`` (no batch dimension) of a named model.

    Args:
        name: a key of :data:`MODELS` (case-insensitive).

    Returns:
        The shape, e.g. ``(3, 32, 32)`` for the CIFAR models.

    Raises:
        ValueError: if ``name`` is not a known model.

    Examples:
        >>> input_shape_of("resnet18")
        (3, 64, 64)
    """
    return MODEL_INPUT_SHAPES[_check_name(name)]
