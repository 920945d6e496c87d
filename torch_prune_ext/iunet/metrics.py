"""IUNET's measurements: test accuracy and prediction consistency under a transform."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.functional import eval_mode
from ..data.augment import Transform
from ..errors import BatchShapeError, MissingDataError
from ..training.batches import input_batches, model_device
from ..training.metrics import tensor_accuracy

__all__ = ["accuracy", "consistency"]


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy in eval mode (the model's train/eval flags are restored).

    :func:`torch_prune_ext.training.tensor_accuracy` on ``(x, y)``.

    Args:
        model: the classifier.
        x: inputs.
        y: integer labels.
        batch_size: evaluation batch size.

    Returns:
        The fraction of correct predictions, in [0, 1].

    Examples:
        >>> net = torch.nn.Linear(2, 2, bias=False)
        >>> _ = torch.nn.init.eye_(net.weight)
        >>> accuracy(net, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
        0.5
    """
    return tensor_accuracy(model, x, y, batch_size)


def consistency(model: nn.Module, loader: Any, transform: Transform) -> float:
    """The share of inputs whose predicted class is unchanged under ``transform``.

    Both the inputs and their transformed copies are classified in eval mode, without
    gradients; the model's train/eval flags are restored afterwards.

    Args:
        model: the classifier.
        loader: the inputs: a tensor, an ``(x, y)`` pair of tensors, or an iterable of
            batches (each ``x`` or a tuple/list whose first item is ``x``); labels are ignored.
        transform: maps an input batch to a transformed batch of the same size.

    Returns:
        The fraction in [0, 1].

    Raises:
        ValueError: no inputs, or ``transform`` changed the batch size.

    Examples:
        >>> net = torch.nn.Linear(2, 2, bias=False)
        >>> _ = torch.nn.init.eye_(net.weight)
        >>> x = torch.tensor([[2.0, 1.0], [1.0, 3.0], [0.0, 1.0], [5.0, 4.0]])
        >>> consistency(net, x, lambda b: b.flip(1))  # swapping the features swaps the class of all 4
        0.0
        >>> consistency(net, x, lambda b: 2 * b)
        1.0
    """
    same = total = 0
    device = model_device(model)
    with eval_mode(model), torch.no_grad():
        for x in input_batches(loader):
            x = x.to(device)
            xt = transform(x)
            if xt.shape[0] != x.shape[0]:
                raise BatchShapeError(f"transform changed the batch size from {x.shape[0]} to {xt.shape[0]}.")
            same += int((model(x).argmax(1) == model(xt).argmax(1)).sum())
            total += x.shape[0]
    if total == 0:
        raise MissingDataError("consistency got no inputs; pass a non-empty tensor or loader.")
    return same / total
