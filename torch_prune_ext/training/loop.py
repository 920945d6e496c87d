"""The training loop shared by evaluation, IUNET and distillation.

:func:`optimizer_step` is one step (clear gradients, backpropagate, step the optimizer and
the scheduler, set pruned entries back to zero); :func:`run_epoch` runs a step function over
the batches of an epoch and sums what the steps report; :func:`train_epochs` trains a
model on tensors ``(x, y)`` with any loss, shuffled by a seeded generator.

Examples:
    >>> torch.manual_seed(0) and None
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> _ = torch.nn.utils.prune.random_unstructured(net[0], "weight", amount=0.5)
    >>> x = torch.randn(40, 4); y = (x[:, 0] > 0).long()
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    >>> losses = train_epochs(net, opt, x, y, lambda xb, yb: torch.nn.functional.cross_entropy(net(xb), yb), epochs=2,
    ...                       batch_size=16, generator=torch.Generator().manual_seed(0))
    >>> len(losses), int((net[0].weight_orig[net[0].weight_mask == 0] != 0).sum())
    (2, 0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import torch
from torch import nn
from tqdm.auto import tqdm

from .batches import minibatches
from .masks import enforce_masks

__all__ = ["optimizer_step", "run_epoch", "train_epochs"]

Batch = TypeVar("Batch")
#: What a step reports: its values (e.g. ``{"loss": ...}``) and their weight in the epoch's sums.
StepOutcome = tuple[Mapping[str, float], int]


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    *,
    scheduler: Any = None,
    model: nn.Module | None = None,
    masks: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Clear the gradients, backpropagate ``loss``, step the optimizer (and ``scheduler``).

    With ``model``, the pruned entries of ``model`` (and those of ``masks``) are then set back
    to exactly zero (:func:`~torch_prune_ext.training.enforce_masks`), so weight decay and
    momentum never revive them.

    Args:
        optimizer: the optimizer.
        loss: a scalar with a graph to the parameters.
        scheduler: optional learning-rate scheduler, stepped after the optimizer.
        model: the network whose masks to keep (``None``: no mask is re-applied).
        masks: extra 0/1 masks by parameter name (with ``model``).

    Examples:
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = torch.optim.SGD([w], lr=0.5)
        >>> optimizer_step(opt, (2 * w).sum())
        >>> w.item()
        0.0
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    if model is not None:
        enforce_masks(model, masks)


def run_epoch(
    batches: Iterable[Batch],
    step: Callable[[Batch], StepOutcome | None],
    *,
    desc: str = "epoch",
    progress: bool = False,
    total: int | None = None,
) -> tuple[dict[str, float], int]:
    """Run ``step`` on every batch and sum what the steps report, weighted.

    Args:
        batches: the epoch's batches.
        step: trains on one batch and returns ``(values, weight)``, or ``None`` for a skipped batch.
        desc: label of the progress bar.
        progress: show a tqdm bar (``leave=False``) with the last ``"loss"``.
        total: number of batches, for the bar.

    Returns:
        ``(sums, count)``: ``sums[key]`` is the sum of ``value * weight`` over the steps,
        ``count`` the sum of the weights; divide for the epoch's means.

    Examples:
        >>> run_epoch([1.0, 2.0, 5.0], lambda b: ({"loss": b}, 2))
        ({'loss': 16.0}, 6)
    """
    sums: dict[str, float] = {}
    count = 0
    bar = tqdm(batches, total=total, desc=desc, leave=False, disable=not progress)
    for batch in bar:
        outcome = step(batch)
        if outcome is None:
            continue
        values, weight = outcome
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value * weight
        count += weight
        if "loss" in values:
            bar.set_postfix(loss=f"{values['loss']:.4f}")
    return sums, count


def train_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator | None,
    scheduler: Any = None,
    keep_masks: bool = True,
    min_batch: int = 1,
    desc: str = "train",
    progress: bool = False,
) -> list[float]:
    """Train ``model`` in place on minibatches of ``(x, y)``; the mean loss of every epoch.

    Every epoch shuffles the rows with ``generator`` (:func:`minibatches`), skips batches of
    fewer than ``min_batch`` rows, and takes one :func:`optimizer_step` per batch on
    ``loss_fn(x_batch, y_batch)`` (which moves the batch to the device, augments it, ...).

    Args:
        model: the network (put in train mode).
        optimizer: over the model's (and any extra) parameters.
        x: inputs, first dimension the examples.
        y: labels.
        loss_fn: ``(x_batch, y_batch) -> scalar loss``.
        epochs: passes over the data.
        batch_size: rows per batch.
        generator: shuffles the rows; ``None`` = in order.
        scheduler: stepped after every optimizer step.
        keep_masks: set pruned entries back to zero before training and after every step.
        min_batch: smaller batches are skipped (e.g. 2 for BatchNorm or a contrastive loss).
        desc: label of the progress bar (the epoch is appended).
        progress: show a tqdm bar per epoch.

    Returns:
        One mean loss (weighted by batch size) per epoch, 0.0 for an epoch without a step.
    """
    if keep_masks:
        enforce_masks(model)
    model.train()

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutcome | None:
        xb, yb = batch
        if xb.shape[0] < min_batch:
            return None
        loss = loss_fn(xb, yb)
        optimizer_step(optimizer, loss, scheduler=scheduler, model=model if keep_masks else None)
        return {"loss": float(loss.detach())}, xb.shape[0]

    losses: list[float] = []
    for epoch in range(epochs):
        sums, count = run_epoch(minibatches(x, y, batch_size, generator), step, desc=f"{desc} {epoch + 1}/{epochs}",
                                progress=progress, total=math.ceil(len(x) / batch_size))
        losses.append(sums.get("loss", 0.0) / max(count, 1))
    return losses
