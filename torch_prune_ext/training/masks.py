"""Keeping pruned entries at zero while a pruned network trains."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..core.checkpoint import zero_pruned_entries_
from ..errors import TargetError

__all__ = ["enforce_masks"]


@torch.no_grad()
def enforce_masks(model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None) -> None:
    """Set the pruned entries to exactly zero, in place.

    For every tensor pruned with ``torch.nn.utils.prune``, ``name_orig`` is multiplied by
    ``name_mask`` (and the plain attribute refreshed), so that ``prune.remove`` keeps the
    zeros. ``masks`` adds explicit masks for parameters that are not pruned by torch,
    keyed by parameter name.

    Examples:
        >>> net = torch.nn.Linear(4, 2)
        >>> _ = torch.nn.utils.prune.l1_unstructured(net, "weight", amount=0.5)
        >>> enforce_masks(net)
        >>> int((net.weight_orig == 0).sum())
        4
    """
    zero_pruned_entries_(model)
    if masks:
        params = dict(model.named_parameters())
        for name, mask in masks.items():
            if name not in params:
                raise TargetError(f"masks names {name!r}, which is not a parameter of the model.")
            params[name].mul_(mask.to(params[name]))
