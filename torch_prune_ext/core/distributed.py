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

No rank waits for a rank that failed: before every collective the ranks agree on an error flag
(one tiny all-reduce). A rank whose own work raised (bad data, a model that cannot run its batch)
reports it with the same collectives (:func:`failures_reported`) and raises its own error; the
others raise :class:`~torch_prune_ext.errors.RankFailedError` naming it, at their next collective.

Without ``distributed=`` in a job of several ranks, each rank prunes on its own and a warning
(once per process) says that the masks will differ unless the data and seeds are identical on
every rank; ``distributed=False`` silences it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import DistributedMismatchError, InvalidOptionError, RankFailedError

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
        """Sum ``tensors`` over the ranks, in place, with one collective per dtype and device.

        Raises:
            RankFailedError: another rank reported a failure (see :meth:`raise_if_a_rank_failed`).
        """
        import torch.distributed as dist

        self.raise_if_a_rank_failed()
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
        """Every rank's ``value`` (a picklable object), in rank order.

        Raises:
            RankFailedError: another rank reported a failure (see :meth:`raise_if_a_rank_failed`).
        """
        self.raise_if_a_rank_failed()
        return self._gather(value)

    def _gather(self, value: Any) -> list[Any]:
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value, group=self.group)
        return gathered

    def _failures(self, failed: bool) -> int:
        """All-reduce this rank's failure flag: the number of ranks that failed."""
        import torch.distributed as dist

        backend = str(dist.get_backend(self.group))
        on_gpu = "nccl" in backend and "gloo" not in backend
        flag = torch.tensor([int(failed)], device=torch.device("cuda", torch.cuda.current_device()) if on_gpu
                            else torch.device("cpu"))
        dist.all_reduce(flag, op=dist.ReduceOp.SUM, group=self.group)
        return int(flag.item())

    def raise_if_a_rank_failed(self) -> None:
        """The error flag agreed on before every collective: raise on every healthy rank if a rank failed.

        A rank whose local work raised calls :meth:`report_failure` instead (the same two
        collectives), so that no rank waits for it in a collective it never reaches.

        Raises:
            RankFailedError: naming the failing rank(s) and their errors.
        """
        if self._failures(False):
            reports = self._gather(None)
            failed = "; ".join(f"rank {rank}: {report}" for rank, report in enumerate(reports) if report is not None)
            raise RankFailedError(
                f"Distributed scoring stopped: another rank failed ({failed}); this rank ({self.rank} of "
                f"{self.world_size}) stopped too, and nothing was changed. Fix the failing rank's input (its data, "
                "model or options) and run again."
            )

    def report_failure(self, error: BaseException) -> None:
        """Tell the other ranks that this rank's local work raised ``error`` (they raise :class:`RankFailedError`)."""
        self._failures(True)
        self._gather(f"{type(error).__name__}: {error}")

    def check_agree(self, value: str, what: str, fix: str) -> None:
        """Raise :class:`DistributedMismatchError` on every rank unless all ranks hold the same ``value``."""
        raise_unless_equal(self.all_gather(value), what, fix)


@contextlib.contextmanager
def failures_reported(group: ScoringGroup | None) -> Iterator[None]:
    """Rank-local work: an exception inside is reported to the other ranks before it propagates.

    The other ranks then raise :class:`RankFailedError` at their next collective instead of
    waiting for this rank (nothing to do in one process).
    """
    if group is None:
        yield
        return
    try:
        yield
    except RankFailedError:
        raise  # raised by the agreement itself: the failing rank has reported already
    except Exception as error:
        group.report_failure(error)
        raise


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


def resolve_group(distributed: bool | None, process_group: Any, shard_data: bool) -> ScoringGroup | None:
    """The :class:`ScoringGroup` of these options, or ``None`` for single-process scoring.

    ``distributed=None`` (not given) scores per process and warns once per process when a
    process group of more than one rank is initialised: see :func:`warn_if_running_distributed`.

    Raises:
        InvalidOptionError: ``distributed=True`` without an initialised process group, or
            ``process_group=``/``shard_data=`` without ``distributed=True``.
    """
    if not distributed:
        if process_group is not None or shard_data:
            raise InvalidOptionError(
                "process_group= and shard_data= apply to distributed scoring: pass distributed=True as well."
            )
        if distributed is None:
            warn_if_running_distributed()
        return None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise InvalidOptionError(
            "distributed=True needs an initialised process group: call torch.distributed.init_process_group() "
            "first (torchrun sets its environment), or drop distributed=True."
        )
    return ScoringGroup(process_group, dist.get_rank(process_group), dist.get_world_size(process_group),
                        bool(shard_data))


_warned_not_distributed = False


def warn_if_running_distributed() -> None:
    """Warn once per process that a multi-rank job scores per process unless ``distributed=`` says otherwise.

    Each rank then prunes on its own data and seed: the masks differ between ranks unless
    both are identical everywhere. ``distributed=False`` given explicitly silences this.
    """
    global _warned_not_distributed
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch without distributed support
        return
    if _warned_not_distributed or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    _warned_not_distributed = True
    warnings.warn(
        f"torch.distributed runs {dist.get_world_size()} processes, but pruning scores each process on its own: "
        "the masks will differ between ranks unless the data and seeds are identical on every rank. Pass "
        "distributed=True to score together (every rank gets the same masks), or distributed=False if "
        "per-process pruning is what you want.",
        UserWarning,
        stacklevel=2,
    )
