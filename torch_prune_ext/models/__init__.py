"""Reference models of the pruning papers, in plain PyTorch (no torchvision).

Use :func:`get_model` to build one by name and :func:`input_shape_of` for the input
shape (without the batch dimension) it is meant for. :data:`MODEL_SPECS` is the one table
of the built-in models: builder, input shape and default dataset (:class:`ModelSpec`).

Examples:
    >>> import torch
    >>> model = get_model("resnet20", num_classes=10)
    >>> x = torch.zeros(2, *input_shape_of("resnet20"))
    >>> model(x).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..errors import ModelSpecError

from .mlp import ACTIVATIONS, MLP, lenet_300_100, mlp
from .resnet_cifar import BasicBlock, CifarResNet, init_weights_, make_stage, resnet20, resnet32
from .resnet_tiny import TinyImageNetResNet, resnet18
from .vgg import VGG, VGG16_PLAN, VGG19_PLAN, make_vgg_features, vgg16_bn, vgg19_bn

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "MODELS",
    "MODEL_INPUT_SHAPES",
    "MODEL_SPECS",
    "ModelSpec",
    "VGG",
    "VGG16_PLAN",
    "VGG19_PLAN",
    "BasicBlock",
    "CifarResNet",
    "TinyImageNetResNet",
    "default_dataset_of",
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


@dataclass(frozen=True)
class ModelSpec:
    """A built-in model: how to build it, what one example looks like, what it is trained on.

    Attributes:
        builder: returns the freshly initialised model (keyword arguments such as ``num_classes``).
        input_shape: one example's shape ``(C, H, W)``, without the batch dimension.
        default_dataset: the real dataset of that shape it is pruned and compared on
            (``"mnist"``, ``"cifar10"``), or ``None`` when no real dataset fits (the command
            line then uses random data for ``prune`` and synthetic data for ``compare``).

    Examples:
        >>> MODEL_SPECS["resnet18"].input_shape, MODEL_SPECS["resnet18"].default_dataset
        ((3, 64, 64), None)
    """

    builder: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    default_dataset: str | None


#: The built-in models by name. For ``"mlp"`` the input shape is that of its default ``in_features=784``.
MODEL_SPECS: dict[str, ModelSpec] = {
    "resnet20": ModelSpec(resnet20, (3, 32, 32), "cifar10"),
    "resnet32": ModelSpec(resnet32, (3, 32, 32), "cifar10"),
    "vgg16_bn": ModelSpec(vgg16_bn, (3, 32, 32), "cifar10"),
    "vgg19_bn": ModelSpec(vgg19_bn, (3, 32, 32), "cifar10"),
    "resnet18": ModelSpec(resnet18, (3, 64, 64), None),
    "lenet_300_100": ModelSpec(lenet_300_100, (1, 28, 28), "mnist"),
    "mlp": ModelSpec(mlp, (1, 28, 28), "mnist"),
}

#: Model builders by name (a view of :data:`MODEL_SPECS`).
MODELS: dict[str, Callable[..., nn.Module]] = {name: spec.builder for name, spec in MODEL_SPECS.items()}

#: Natural input shape of each model, ``(C, H, W)`` without the batch dimension (a view of :data:`MODEL_SPECS`).
MODEL_INPUT_SHAPES: dict[str, tuple[int, ...]] = {name: spec.input_shape for name, spec in MODEL_SPECS.items()}


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name.lower() not in MODELS:
        raise ModelSpecError(f"Unknown model {name!r}; known models are {sorted(MODELS)}.")
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


def default_dataset_of(name: str, *, no_fit: str, other: str = "cifar10") -> str:
    """The dataset a model is pruned or compared on when none is named.

    Args:
        name: a built-in model name, or ``module:function`` (a user's model).
        no_fit: the dataset to use when no real dataset fits the model (``"random"``, ``"synthetic"``).
        other: the dataset of a model that is not built in.

    Returns:
        The :attr:`ModelSpec.default_dataset`, ``no_fit`` when it is ``None``, or ``other``.

    Examples:
        >>> default_dataset_of("lenet_300_100", no_fit="random"), default_dataset_of("resnet18", no_fit="synthetic")
        ('mnist', 'synthetic')
        >>> default_dataset_of("my_pkg.nets:build", no_fit="random")
        'cifar10'
    """
    spec = MODEL_SPECS.get(name.lower())
    if spec is None:
        return other
    return spec.default_dataset or no_fit
