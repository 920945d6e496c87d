"""Scoring across the processes of a ``torch.distributed`` job (gloo, NCCL, ...; ``torchrun``).

With ``distributed=True`` every rank calls the same pruning function on the same model
(identical weights and seed) and its own share of the work:

* **data**: each rank reads its own pruning batches (a ``DataLoader`` with a
  ``DistributedSampler``), or, with ``shard_data=True``, every rank passes the same batches
  and rank ``r`` reads batches ``r, r + W, r + 2W, ...``;
* **random draws** (NTK-SAP): draw ``i`` of a round is evaluated by rank ``i % W``; every
  rank makes every draw, so that the generators stay in step.

A method sums its per-batch (per-draw) statistics locally and calls
:meth:`ScoringGroup.all_reduce_` before anything nonlinear (SNIP's absolute value, PX's path
kernel product), so the scores equal those of one process on all the data up to rounding,
and every rank ranks the same scores into the same mask. Data-free deterministic methods
(SynFlow, Magnitude, Random) simply compute the same on every rank. Before scoring, the ranks
compare digests of the target weights, masks and generator state; after it, of the masks;
any difference raises :class:`~torch_prune_ext.errors.DistributedMismatchError` on every rank.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import DistributedMismatchError, InvalidOptionError

logger = logging.getLogger("torch_prune_ext")


def tensor_digest(tensors: Iterable[torch.Tensor]) -> str:
    """A SHA-256 digest of the values, shapes and dtypes of ``tensors`` (in order).

    Examples:
        >>> a = [torch.ones(2, 3)]
        >>> tensor_digest(a) == tensor_digest([torch.ones(2, 3)]), tensor_digest(a) == tensor_digest([torch.ones(3, 2)])
        (True, False)
    """
    sha = hashlib.sha256()
    for tensor in tensors:
        tensor = tensor.detach()
        sha.update(f"{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        flat = tensor.contiguous().reshape(-1).cpu()
        sha.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return sha.hexdigest()


@dataclass(frozen=True)
class ScoringGroup:
    """The processes that score together: their group, this process's rank and the world size.

    Attributes:
        group: the ``torch.distributed`` process group (``None``: the default group).
        rank: this process's rank in ``group``.
        world_size: the number of processes in ``group``.
        shard_data: every rank passed the same batches; rank ``r`` reads every ``W``-th from ``r``.

    Examples:
        >>> group = ScoringGroup(None, rank=1, world_size=2, shard_data=False)
        >>> [i for i in range(5) if group.owns(i)]
        [1, 3]
    """

    group: Any
    rank: int
    world_size: int
    shard_data: bool = False

    def owns(self, index: int) -> bool:
        """Whether item ``index`` of a round-robin split (a draw, a batch) is this rank's."""
        return index % self.world_size == self.rank

    def all_reduce_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Sum ``tensors`` over the ranks, in place, with one collective per dtype and device."""
        import torch.distributed as dist

        buckets: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
        for tensor in tensors:
            buckets.setdefault((tensor.dtype, tensor.device), []).append(tensor)
        for same in buckets.values():
            flat = torch.cat([t.detach().reshape(-1) for t in same])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
            for tensor, part in zip(same, flat.split([t.numel() for t in same])):
                with torch.no_grad():
                    tensor.copy_(part.view(tensor.shape))

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (a picklable object), in rank order."""
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value, group=self.group)
        return gathered

    def check_agree(self, value: str, what: str, fix: str) -> None:
        """Raise :class:`DistributedMismatchError` on every rank unless all ranks hold the same ``value``."""
        raise_unless_equal(self.all_gather(value), what, fix)


def raise_unless_equal(values: Sequence[Any], what: str, fix: str) -> None:
    """Raise :class:`DistributedMismatchError` naming the ranks unless every rank's value (in rank order) is equal.

    Examples:
        >>> raise_unless_equal(["a", "a", "b"], "the seed", "Pass the same seed.")
        Traceback (most recent call last):
        ...
        torch_prune_ext.errors.DistributedMismatchError: The ranks disagree on the seed (ranks 0, 1 vs rank 2). Pass the same seed.
    """
    if len(set(values)) > 1:
        groups: dict[str, list[int]] = {}
        for rank, v in enumerate(values):
            groups.setdefault(v, []).append(rank)
        split = " vs ".join(("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))
                            for ranks in groups.values())
        raise DistributedMismatchError(f"The ranks disagree on {what} ({split}). {fix}")


def resolve_group(distributed: bool, process_group: Any, shard_data: bool) -> ScoringGroup | None:
    """The :class:`ScoringGroup` of these options, or ``None`` for single-process scoring.

    Raises:
        InvalidOptionError: ``distributed=True`` without an initialised process group, or
            ``process_group=``/``shard_data=`` without ``distributed=True``.
    """
    if not distributed:
        if process_group is not None or shard_data:
            raise InvalidOptionError(
                "process_group= and shard_data= apply to distributed scoring: pass distributed=True as well."
            )
        _hint_if_running_distributed()
        return None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise InvalidOptionError(
            "distributed=True needs an initialised process group: call torch.distributed.init_process_group() "
            "first (torchrun sets its environment), or drop distributed=True."
        )
    return ScoringGroup(process_group, dist.get_rank(process_group), dist.get_world_size(process_group),
                        bool(shard_data))


def _hint_if_running_distributed() -> None:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch without distributed support
        return
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        logger.info("torch.distributed runs %d processes, but scoring is per process; pass distributed=True to "
                    "share the pruning work across them.", dist.get_world_size())
