"""The pruning data: what ``data=`` may be, and how methods read it.

``data`` is an iterable of batches (a ``DataLoader``), each a tensor ``x`` or a
tuple/list whose first item is ``x`` and second item, if any, the labels ``y``; or a
single such batch. A tuple/list counts as *one batch* when its first item is a tensor
and its second item is absent or is not shaped like another batch of inputs (same
shape but for the batch size; labels never are); anything else is read as a sequence of
batches. A one-shot iterator
(a generator) is read once and its batches kept, so that every round sees them; a
``DataLoader`` is iterated afresh each round (with ``shuffle=True`` the rounds see
different orders; the global RNG is restored afterwards).

Under distributed scoring with ``shard_data=True`` (:mod:`torch_prune_ext.core.distributed`)
every rank passes the same batches and reads every ``W``-th one, from its rank on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from ..errors import MissingDataError

Batch = tuple[torch.Tensor, "torch.Tensor | None"]


def _is_single_batch(data: Any) -> bool:
    if isinstance(data, torch.Tensor):
        return True
    if isinstance(data, (tuple, list)) and data and isinstance(data[0], torch.Tensor):
        second = data[1] if len(data) > 1 else None
        return not (isinstance(second, torch.Tensor) and second.shape[1:] == data[0].shape[1:])
    return False


def _split(batch: Any, index: int) -> Batch:
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        y = batch[1] if len(batch) > 1 else None
        if y is not None and not isinstance(y, torch.Tensor):
            y = torch.as_tensor(y)
        return batch[0], y
    raise MissingDataError(
        f"Batch {index} of the pruning data is a {type(batch).__name__}; each batch must be a tensor x "
        "or a tuple/list (x, y). Wrap other formats in a DataLoader with a collate_fn that returns (x, y)."
    )


class PruningData:
    """The pruning data, re-iterable, with batches moved to the model's device and dtype.

    Args:
        data: ``None``, one batch, or an iterable of batches (see the module docstring).
        device: where the model's targets live.
        dtype: the floating dtype of the model; floating inputs are cast to it.
        shard: ``(rank, world_size)``: iterate only batches ``rank, rank + world_size, ...``
            (``None``: every batch).

    Examples:
        >>> data = PruningData((torch.zeros(4, 3), torch.tensor([0, 1, 0, 1])), torch.device("cpu"), torch.float32)
        >>> [(tuple(x.shape), y.tolist()) for x, y in data]
        [((4, 3), [0, 1, 0, 1])]
    """

    def __init__(self, data: Any, device: torch.device, dtype: torch.dtype,
                 shard: tuple[int, int] | None = None) -> None:
        if data is not None and not _is_single_batch(data) and not isinstance(data, Iterable):
            raise MissingDataError(
                f"data must be a tensor, an (x, y) batch or an iterable of batches (a DataLoader), "
                f"got {type(data).__name__}."
            )
        if _is_single_batch(data):
            data = [data]
        elif isinstance(data, Iterator):
            data = list(data)  # a one-shot iterator: keep its batches for every round
        self._data = data
        self.device = device
        self.dtype = dtype
        self.shard = shard

    @property
    def given(self) -> bool:
        """Whether any data was passed at all."""
        return self._data is not None

    def _prepare(self, batch: Any, index: int) -> Batch:
        x, y = _split(batch, index)
        x = x.to(self.device, self.dtype if x.is_floating_point() else None)
        if y is not None:
            y = y.to(self.device)
        return x, y

    def __iter__(self) -> Iterator[Batch]:
        if self._data is None:
            raise MissingDataError("This method needs pruning data: pass data=<batch or DataLoader>.")
        count = 0
        for index, batch in self._raw_batches(local=True):
            count += 1
            yield self._prepare(batch, index)
        if count == 0:
            where = f" for rank {self.shard[0]} of {self.shard[1]}" if self.shard is not None else ""
            raise MissingDataError(f"The pruning data is empty{where}: it yielded no batch.")

    def _raw_batches(self, local: bool) -> Iterator[tuple[int, Any]]:
        for index, batch in enumerate(self._data):
            if not local or self.shard is None or index % self.shard[1] == self.shard[0]:
                yield index, batch

    def batch_shapes(self, local: bool = True) -> list[tuple[int, ...]]:
        """The shape of every input batch ``x`` (this rank's, or with ``local=False`` all of them).

        Reads the batches without moving them to the model's device.
        """
        if self._data is None:
            return []
        return [tuple(_split(batch, index)[0].shape) for index, batch in self._raw_batches(local)]

    def labelled(self, method: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate ``(x, y)`` batches, raising a clear error for a batch without labels."""
        for x, y in self:
            if y is None:
                raise MissingDataError(
                    f"{method} uses labels, but a pruning batch has none. Pass batches as (x, y), "
                    "or pick a label-free method (synflow, ntksap, random, magnitude)."
                )
            yield x, y

    def first_input_dtype(self) -> torch.dtype | None:
        """The dtype of this rank's first input batch as given (``None`` without a batch)."""
        for index, batch in self._raw_batches(local=True):
            return _split(batch, index)[0].dtype
        return None

    def first_input_shape(self) -> tuple[int, ...]:
        """The shape of one example, read from the first batch."""
        x, _ = next(iter(self))
        return tuple(x.shape[1:])
