"""Batches for training and evaluation: the one minibatch splitter, the inputs of a batch, the model's device."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from ..errors import MissingDataError

__all__ = ["batch_inputs", "input_batches", "minibatches", "model_device"]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters).

    Examples:
        >>> model_device(torch.nn.Linear(2, 2)), model_device(torch.nn.ReLU())
        (device(type='cpu'), device(type='cpu'))
    """
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def minibatches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Split ``(x, y)`` into minibatches of ``batch_size`` rows (the last one may be smaller).

    With a ``generator`` the rows are shuffled: one ``torch.randperm(len(x), generator=generator)``
    is drawn when the iteration starts (so an epoch's permutation comes before anything the
    batches draw from the same generator). Without one the rows keep their order.

    Args:
        x: inputs, first dimension the examples.
        y: labels (or any tensor with the same first dimension).
        batch_size: rows per batch.
        generator: shuffles the rows; ``None`` = in order.

    Returns:
        An iterator of ``(x_batch, y_batch)`` pairs.

    Examples:
        >>> x, y = torch.arange(5.0), torch.arange(5)
        >>> [b.tolist() for b, _ in minibatches(x, y, 2)]
        [[0.0, 1.0], [2.0, 3.0], [4.0]]
        >>> sorted(v for b, _ in minibatches(x, y, 2, torch.Generator().manual_seed(0)) for v in b.tolist())
        [0.0, 1.0, 2.0, 3.0, 4.0]
    """
    n = len(x)
    order = torch.randperm(n, generator=generator) if generator is not None else None
    for start in range(0, n, batch_size):
        if order is None:
            yield x[start:start + batch_size], y[start:start + batch_size]
        else:
            index = order[start:start + batch_size]
            yield x[index], y[index]


def batch_inputs(batch: Any) -> torch.Tensor:
    """The input ``x`` of a batch that is a tensor or a tuple/list ``(x, ...)``; labels are ignored.

    Examples:
        >>> batch_inputs((torch.zeros(2, 3), torch.tensor([0, 1]))).shape
        torch.Size([2, 3])
    """
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise MissingDataError(
        f"A batch is a {type(batch).__name__}; each batch must be a tensor x or a tuple/list (x, ...)."
    )


def _is_labelled_pair(data: Any) -> bool:
    """Whether ``data`` is one ``(x, y)`` pair of tensors (``y`` 1-D labels) rather than a list of batches."""
    return (isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)
            and data[0].shape[0] == data[1].shape[0] and data[1].ndim == 1 and data[0].ndim > 1)


def input_batches(data: Any) -> Iterable[torch.Tensor]:
    """Input batches from one tensor, one ``(x, y)`` pair of tensors, or an iterable of batches.

    Each batch of an iterable is a tensor ``x`` or a tuple/list ``(x, ...)``; labels are ignored.

    Examples:
        >>> x, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)
        >>> [tuple(b.shape) for b in input_batches((x, y))], len(list(input_batches([x, (x, y)])))
        ([(4, 3)], 2)
    """
    if isinstance(data, torch.Tensor):
        yield data
        return
    if _is_labelled_pair(data):
        yield data[0]
        return
    for batch in data:
        yield batch_inputs(batch)
