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

from ..errors import InvalidAmountError, InvalidOptionError
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
        raise InvalidAmountError(f"cannot prune {n_pruned} of {n_total} entries when {n_dead} are already pruned")
    ordered_scores = [scores[i].detach() for i in order]
    if granularity not in GRANULARITIES:
        raise InvalidOptionError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}.")
    blocked = block_ranked_alive(ordered_scores, alive, n_pruned, block_size, granularity, block_density)
    if blocked is not None:
        alive = blocked
    flat_alive = torch.cat([a.reshape(-1) for a in alive])
    if n_pruned > int((~flat_alive).sum()):
        flat_alive = _prune_lowest(ordered_scores, flat_alive, n_pruned)
    new_masks: list[torch.Tensor] = [torch.empty(0)] * len(targets)
    offset = 0
    for i in order:
        size = masks[i].numel()
        new_masks[i] = flat_alive[offset:offset + size].reshape(masks[i].shape).to(masks[i].dtype)
        offset += size
    return new_masks


def _prune_lowest(scores: Sequence[torch.Tensor], alive: torch.Tensor, n_pruned: int) -> torch.Tensor:
    """``alive`` with the lowest-scoring live entries dead until ``n_pruned`` are dead.

    The same result as a stable ascending sort of the scores (dead entries at -inf) cut after
    ``n_pruned``: every entry below the ``n_pruned``-th smallest value, then the entries equal to
    it in position order. Found with one selection instead of a full sort: one flat copy of the
    scores in their own dtype (no float64 copy), so the peak stays near twice the scores' size.
    """
    dtype = scores[0].dtype
    for score in scores[1:]:
        dtype = torch.promote_types(dtype, score.dtype)
    flat = torch.cat([s.reshape(-1).to(dtype) for s in scores])
    flat.masked_fill_(~alive, -torch.inf)
    threshold = torch.kthvalue(flat, n_pruned).values
    dead = flat < threshold
    ties = torch.nonzero(flat == threshold).squeeze(1)[: n_pruned - int(dead.sum())]
    dead[ties] = True
    return ~dead
