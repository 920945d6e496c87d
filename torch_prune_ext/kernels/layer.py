"""What every accelerated layer shares: a masked dense weight, a mask buffer, a bias, and a plan to rebuild."""

from __future__ import annotations

import abc

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["AcceleratedLayer"]


class AcceleratedLayer(nn.Module, metaclass=abc.ABCMeta):
    """Base of :class:`~torch_prune_ext.kernels.accelerate.AcceleratedLinear` and ``AcceleratedConv2d``.

    ``weight`` is a dense parameter holding zeros where pruned (its gradient is zero there, so it stays
    pruned under training); ``weight_mask`` is a buffer; ``plan`` is rebuilt by :meth:`replan` (after
    moving the module, loading a ``state_dict`` with a mask, or with a new table). Subclasses implement
    :meth:`_make_plan`.
    """

    def _init_weights(
        self, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None, backend: str,
        block_size: int | tuple[int, int] | None, table: Mapping[str, Any] | None,
    ) -> torch.Tensor:
        """Store the masked weight, the mask and the bias; return the float mask."""
        mask = (mask != 0).to(weight.dtype)
        self.weight = nn.Parameter((weight.detach() * mask).clone())
        self.register_buffer("weight_mask", mask.clone())
        if bias is not None and not isinstance(bias, nn.Parameter):
            bias = nn.Parameter(bias.detach().clone())
        self.bias = bias
        self._backend_request = backend
        self._block_size = block_size
        self._table = table
        return mask

    @abc.abstractmethod
    def _make_plan(self) -> Any:
        """The layer's dispatch plan (each subclass asks its own dispatcher)."""

    @property
    def backend(self) -> str:
        """The backend in use (see the subclass)."""
        return self.plan.backend

    def replan(self, table: Mapping[str, Any] | None = None) -> None:
        """Re-run the dispatcher (after moving the module, changing the mask, or with a new table).

        Args:
            table: crossover table; None keeps the one given at construction.
        """
        if table is not None:
            self._table = table
        self.plan = self._make_plan()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # type: ignore[override]
        # A loaded mask replaces the buffer in place; the plan (tiles, sparse structure) must follow it.
        errors_before = len(error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if prefix + "weight_mask" in state_dict and len(error_msgs) == errors_before:
            self.replan()

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        out = super()._apply(fn, recurse)
        if self.plan.mask.device != self.weight.device:
            self.replan()
        return out
