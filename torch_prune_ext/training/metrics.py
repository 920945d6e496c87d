"""Top-1 accuracy, the one implementation behind evaluation, IUNET and distillation."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from ..core.functional import eval_mode
from ..data.augment import Transform
from ..errors import MissingDataError
from .batches import minibatches, model_device

__all__ = ["accuracy", "tensor_accuracy"]


def accuracy(model: nn.Module, loader: Iterable[Any]) -> float:
    """Top-1 accuracy on labelled ``(x, y)`` batches (evaluation only), eval mode, modes restored.

    Args:
        model: the classifier.
        loader: labelled batches ``(x, y, ...)``; ``x`` on the model's device.

    Returns:
        ``correct / total`` in [0, 1] (0.0 for no examples).

    Raises:
        MissingDataError: a batch without labels.

    Examples:
        >>> net = torch.nn.Linear(2, 2, bias=False)
        >>> _ = torch.nn.init.eye_(net.weight)
        >>> accuracy(net, [(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))])
        0.5
    """
    correct, total = 0, 0
    with eval_mode(model), torch.no_grad():
        for batch in loader:
            if not (isinstance(batch, (tuple, list)) and len(batch) > 1):
                raise MissingDataError("accuracy needs labelled (x, y) batches; pass a labelled eval_loader.")
            x, y = batch[0], batch[1]
            correct += int((model(x).argmax(dim=1) == y.to(x.device)).sum())
            total += int(y.numel())
    return correct / max(total, 1)


def tensor_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 1024,
    transform: Transform | None = None,
) -> float:
    """Top-1 accuracy on tensors ``(x, y)``, evaluated in order in batches of ``batch_size``.

    Each batch is transformed (on its original device) and then moved to the model's device.

    Args:
        model: the classifier (eval mode, modes restored).
        x: inputs.
        y: integer labels.
        batch_size: evaluation batch size.
        transform: optional map of an input batch (e.g. normalisation).

    Returns:
        ``correct / total`` in [0, 1].

    Examples:
        >>> net = torch.nn.Linear(2, 2, bias=False)
        >>> _ = torch.nn.init.eye_(net.weight)
        >>> tensor_accuracy(net, torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]]), torch.tensor([0, 1, 1]), 2)
        0.6666666666666666
    """
    device = model_device(model)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for xb, yb in minibatches(x, y, batch_size):
            if transform is not None:
                xb = transform(xb)
            yield xb.to(device), yb.to(device)

    return accuracy(model, batches())
