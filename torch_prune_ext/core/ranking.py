"""Global ranking: scores and current masks in, new masks out.

The lowest-scoring still-unpruned entries are pruned until exactly the requested
number is pruned. Entries already pruned stay pruned whatever their score. Ties are
broken deterministically by position in the model's canonical order (earlier first),
so the result does not depend on the order in which targets were listed. Block-aware
granularities (``core/blocks.py``) prune whole tiles of each weight's GEMM view first.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InvalidOptionError
from .blocks import GRANULARITIES, block_ranked_alive
from .targets import Target, canonical_order


def rank_and_mask(
    targets: Sequence[Target],
    scores: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    n_pruned: int,
    *,
    granularity: str = "element",
    block_size: tuple[int, int] = (32, 32),
    block_density: float | None = None,
) -> list[torch.Tensor]:
    """New masks with exactly ``n_pruned`` zeros over all targets.

    Args:
        targets: the resolved targets (for the canonical order).
        scores: one score tensor per target, higher = keep.
        masks: the current 0/1 masks; zeros stay zeros.
        n_pruned: the total number of zeros wanted, at least the current number.
        granularity: ``"element"``; ``"block"`` (whole ``block_size`` blocks of each weight's
            GEMM view, ranked globally by mean score, one block pruned partially at most so the
            count is exact); ``"hybrid"`` (blocks down to ``block_density``, then elements).
        block_size: ``(b_n, b_k)`` for the block granularities.
        block_density: hybrid's kept-block density (default: square root of the target density).

    Returns:
        One mask per target, in the order of ``targets``, with the dtype of ``masks``.

    Examples:
        >>> from torch_prune_ext.core.targets import resolve_targets
        >>> net = torch.nn.Linear(4, 1, bias=False)
        >>> [t] = resolve_targets(net, [(net, "weight")])
        >>> rank_and_mask([t], [torch.tensor([[3.0, 1.0, 1.0, 2.0]])], [torch.ones(1, 4)], 2)
        [tensor([[1., 0., 0., 1.]])]
        >>> rank_and_mask([t], [torch.tensor([[3.0, 1.0, 1.0, 2.0]])], [torch.ones(1, 4)], 2,
        ...               granularity="block", block_size=(1, 2))
        [tensor([[1., 1., 0., 0.]])]
    """
    order = canonical_order(targets)
    alive = [masks[i].detach() != 0 for i in order]
    n_dead = sum(int((~a).sum()) for a in alive)
    n_total = sum(a.numel() for a in alive)
    if not n_dead <= n_pruned <= n_total:
        raise ValueError(f"cannot prune {n_pruned} of {n_total} entries when {n_dead} are already pruned")
    ordered_scores = [scores[i].detach().to(torch.float64) for i in order]
    if granularity not in GRANULARITIES:
        raise InvalidOptionError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}.")
    blocked = block_ranked_alive(ordered_scores, alive, n_pruned, block_size, granularity, block_density)
    if blocked is not None:
        alive = blocked
    flat_alive = torch.cat([a.reshape(-1) for a in alive])
    n_still = n_pruned - int((~flat_alive).sum())
    if n_still > 0:
        flat_scores = torch.cat([s.reshape(-1) for s in ordered_scores])
        ranked = torch.where(flat_alive, flat_scores, torch.full_like(flat_scores, -torch.inf))
        lowest = torch.sort(ranked, stable=True).indices[: n_pruned]
        flat_alive = flat_alive.clone()
        flat_alive[lowest] = False
    new_masks: list[torch.Tensor] = [torch.empty(0)] * len(targets)
    offset = 0
    for i in order:
        size = masks[i].numel()
        new_masks[i] = flat_alive[offset:offset + size].reshape(masks[i].shape).to(masks[i].dtype)
        offset += size
    return new_masks
