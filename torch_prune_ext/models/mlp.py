"""Multi-layer perceptrons: LeNet-300-100 and a configurable deep MLP.

Both flatten their input first, so they take images ``(N, C, H, W)`` as well as
vectors ``(N, in_features)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from ..errors import ModelConfigError
from .resnet_cifar import init_weights_

__all__ = ["ACTIVATIONS", "MLP", "lenet_300_100", "mlp"]

#: Activation names accepted by :class:`MLP`, mapped to their module classes.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def _activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ModelConfigError(
            f"Unknown activation {name!r}; use one of {sorted(ACTIVATIONS)}."
        ) from None


class MLP(nn.Sequential):
    """``Flatten`` then, per hidden width, ``Linear`` [+ ``BatchNorm1d``] + activation [+ ``Dropout``], then a ``Linear`` head.

    Args:
        in_features: size of the flattened input (784 for 28x28 images).
        hidden: widths of the hidden layers, in order (may be empty: a linear model).
        num_classes: outputs of the last layer.
        activation: name of the activation, a key of :data:`ACTIVATIONS`.
        batch_norm: put a ``BatchNorm1d`` after every hidden linear layer.
        dropout: dropout probability after every hidden activation (0 adds no layer).

    Raises:
        ModelConfigError: (a ``ValueError``) for non-positive sizes, an unknown activation or ``dropout`` outside [0, 1).

    Examples:
        >>> import torch
        >>> model = MLP(784, (300, 100), 10)
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (),
        num_classes: int = 10,
        activation: str = "relu",
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        hidden = tuple(int(h) for h in hidden)
        if in_features < 1 or num_classes < 1 or any(h < 1 for h in hidden):
            raise ModelConfigError(
                f"MLP sizes must be positive, got in_features={in_features}, hidden={hidden}, "
                f"num_classes={num_classes}."
            )
        if not 0.0 <= dropout < 1.0:
            raise ModelConfigError(f"dropout must be in [0, 1), got {dropout}.")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(_activation(activation))
            if dropout > 0.0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
        self.in_features = in_features
        self.hidden = hidden
        self.num_classes = num_classes
        init_weights_(self)


def lenet_300_100(num_classes: int = 10) -> MLP:
    """LeNet-300-100: Flatten, Linear 784-300, ReLU, Linear 300-100, ReLU, Linear 100-classes.

    Args:
        num_classes: number of outputs.

    Returns:
        A freshly initialised :class:`MLP` (takes ``(N, 1, 28, 28)`` or ``(N, 784)``).

    Examples:
        >>> import torch
        >>> lenet_300_100()(torch.zeros(3, 784)).shape
        torch.Size([3, 10])
    """
    return MLP(784, (300, 100), num_classes)


def mlp(
    in_features: int = 784,
    hidden: Sequence[int] = (512, 512, 512),
    num_classes: int = 10,
    activation: str = "relu",
    batch_norm: bool = False,
    dropout: float = 0.0,
) -> MLP:
    """A configurable deep MLP (e.g. the supernetwork that IUNET-style methods prune).

    Args:
        in_features: size of the flattened input (784 for MNIST).
        hidden: widths of the hidden layers.
        num_classes: number of outputs.
        activation: a key of :data:`ACTIVATIONS`.
        batch_norm: add ``BatchNorm1d`` after every hidden linear layer.
        dropout: dropout probability after every hidden activation.

    Returns:
        A freshly initialised :class:`MLP`.

    Examples:
        >>> import torch
        >>> mlp(hidden=(64, 64), activation="tanh")(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    return MLP(in_features, hidden, num_classes, activation=activation, batch_norm=batch_norm, dropout=dropout)
