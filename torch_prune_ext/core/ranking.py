"""Global ranking: scores and current masks in, new masks out.

The lowest-scoring still-unpruned entries are pruned until exactly the requested
number is pruned. Entries already pruned stay pruned whatever their score. Ties are
broken deterministically by position in the model's canonical order (earlier first),
so the result does not depend on the order in which targets were listed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .targets import Target, canonical_order


def rank_and_mask(
    targets: Sequence[Target],
    scores: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    n_pruned: int,
) -> list[torch.Tensor]:
    """New masks with exactly ``n_pruned`` zeros over all targets.

    Args:
        targets: the resolved targets (for the canonical order).
        scores: one score tensor per target, higher = keep.
        masks: the current 0/1 masks; zeros stay zeros.
        n_pruned: the total number of zeros wanted, at least the current number.

    Returns:
        One mask per target, in the order of ``targets``, with the dtype of ``masks``.

    Examples:
        >>> from torch_prune_ext.core.targets import resolve_targets
        >>> net = torch.nn.Linear(4, 1, bias=False)
        >>> [t] = resolve_targets(net, [(net, "weight")])
        >>> rank_and_mask([t], [torch.tensor([[3.0, 1.0, 1.0, 2.0]])], [torch.ones(1, 4)], 2)
        [tensor([[1., 0., 0., 1.]])]
    """
    order = canonical_order(targets)
    flat_scores = torch.cat([scores[i].detach().reshape(-1).to(torch.float64) for i in order])
    flat_alive = torch.cat([masks[i].detach().reshape(-1) != 0 for i in order])
    n_dead = int((~flat_alive).sum())
    if not n_dead <= n_pruned <= flat_alive.numel():
        raise ValueError(f"cannot prune {n_pruned} of {flat_alive.numel()} entries when {n_dead} are already pruned")
    ranked = torch.where(flat_alive, flat_scores, torch.full_like(flat_scores, -torch.inf))
    lowest = torch.sort(ranked, stable=True).indices[:n_pruned]
    keep = torch.ones_like(flat_alive)
    keep[lowest] = False
    new_masks: list[torch.Tensor] = [torch.empty(0)] * len(targets)
    offset = 0
    for i in order:
        size = masks[i].numel()
        new_masks[i] = keep[offset:offset + size].reshape(masks[i].shape).to(masks[i].dtype)
        offset += size
    return new_masks
