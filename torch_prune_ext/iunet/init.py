"""Proactive initialisation (IUNET step 2): scale the initial weights by κ, keep θ†.

Exactly which tensors are scaled: the ``weight`` of every target, by default every
``Conv1d/2d/3d`` and ``Linear`` module (:func:`torch_prune_ext.prunable_parameters`).
Biases, BatchNorm affine parameters and all buffers are left untouched. On a model that
is already pruned the trainable tensor ``weight_orig`` is scaled (the mask is unchanged).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import torch
from torch import nn

from ..core.targets import resolve_targets
from ..errors import InvalidOptionError

__all__ = ["proactive_init_"]


def proactive_init_(
    model: nn.Module,
    kappa: float = 0.125,
    *,
    targets: Iterable[tuple[nn.Module, str]] | None = None,
) -> dict[str, torch.Tensor]:
    """Multiply the initial weights by ``kappa`` in place and return θ†, the unscaled weights.

    IUNET's proactive initialisation scheme: θ(0) = κ · θ†, with κ < 1 so that only the
    weights that matter grow during training (κ = 1 turns it off, κ = 0.125 is the paper's).

    Args:
        model: a freshly initialised network.
        kappa: the multiplier κ, a finite number > 0.
        targets: ``(module, "weight")`` pairs to scale; default
            :func:`torch_prune_ext.prunable_parameters` (Conv/Linear weights only; biases,
            BatchNorm parameters and buffers are never scaled unless listed here).

    Returns:
        θ†: ``{qualified name: detached clone of the unscaled tensor}``, keyed like
        ``"1.weight"`` (also when the tensor is ``weight_orig`` of a pruned module).

    Raises:
        ValueError: ``kappa`` is not a finite positive number.
        TargetError: the model has no prunable weight or ``targets`` is malformed.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
        >>> before = net[0].weight.detach().clone()
        >>> theta = proactive_init_(net, 0.5)
        >>> sorted(theta), torch.equal(theta["0.weight"], before), torch.equal(net[0].weight, 0.5 * before)
        (['0.weight', '2.weight'], True, True)
    """
    if isinstance(kappa, bool) or not isinstance(kappa, numbers.Real) or not math.isfinite(kappa) or kappa <= 0:
        raise InvalidOptionError(
            f"kappa must be a finite number > 0 (0.125 in the paper, 1 turns proactive init off), got {kappa!r}."
        )
    resolved = resolve_targets(model, targets)
    snapshot: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for target in resolved:
            snapshot[target.name] = target.raw.detach().clone()
        for target in resolved:
            target.raw.mul_(float(kappa))
    return snapshot
