"""PX's normalisation layers: BatchNorm reduced to a per-channel scale, and its batch statistics.

With ``norm="batch"`` (the default) every round measures, on the current masked network,
the per-channel mean and biased variance of every normalisation call's input over the
*whole* pruning set, each call's taken with the calls before it already normalised by
theirs: what a train-mode forward sees when the set is one batch. The result does not
depend on how the set is batched: with one batch the statistics are measured in the same
pass that records the gates; with several (or several processes), :func:`batch_statistics`
makes one pass over all batches per normalisation call, merging exact per-batch moments.

Calls are matched by their order in the forward (like the activation gates), so a module
called twice has two sets of statistics, as in train mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..errors import InvalidOptionError, ModelForwardError, UnsupportedLayerError

__all__ = ["NormReduction", "NormStatistics", "batch_statistics"]

_OTHER_NORMS = {F.group_norm: "GroupNorm", F.layer_norm: "LayerNorm", F.instance_norm: "InstanceNorm",
                F.local_response_norm: "LocalResponseNorm", F.rms_norm: "RMSNorm"}
_BEHAVIOURS = ("unit", "scale_squared", "batch", "measure", "fixed", "measure_next")


class NormStatistics(NamedTuple):
    """Per-channel statistics of one normalisation call's input (float64)."""

    mean: torch.Tensor
    var: torch.Tensor


class _Moments(NamedTuple):
    """One batch's share: element count per channel, per-channel mean and sum of squared deviations."""

    count: float
    mean: torch.Tensor
    m2: torch.Tensor


class _Measured(Exception):
    """Ends a forward once the statistics pass has what it came for (not an error)."""


def _moments(x: torch.Tensor) -> _Moments:
    x = x.detach().to(torch.float64)
    dims = [0, *range(2, x.dim())]
    mean = x.mean(dims)
    m2 = (x - _per_channel(mean, x.dim())).square().sum(dims)
    return _Moments(float(x.numel() // x.shape[1]), mean, m2)


def _merge(parts: Sequence[_Moments], all_reduce: Callable[[list[torch.Tensor]], None]) -> NormStatistics:
    """Exact pooled mean and biased variance of batches (``all_reduce`` sums over processes)."""
    count = torch.tensor(sum(p.count for p in parts), dtype=torch.float64, device=parts[0].mean.device)
    total = sum(p.count * p.mean for p in parts)
    all_reduce([count, total])
    mean = total / count
    m2 = sum(p.m2 + p.count * (p.mean - mean).square() for p in parts)
    all_reduce([m2])
    return NormStatistics(mean, m2 / count)


def _no_reduce(tensors: list[torch.Tensor]) -> None:
    """One process: the sums are complete."""


def _per_channel(values: torch.Tensor, dim: int) -> torch.Tensor:
    return values.reshape([1, -1] + [1] * (dim - 2))


class NormReduction(TorchFunctionMode):
    """BatchNorm reduced to a per-channel scale, or normalised with given statistics, without touching modules.

    Works on ``F.batch_norm`` calls (every ``nn.BatchNorm*``), matched by call order:

    * ``"unit"`` (view J): scale 1, no shift: the identity.
    * ``"scale_squared"`` (view P): ``x * s**2``, ``s = gamma / sqrt(var + eps)`` (``gamma = 1``
      without affine parameters), no shift; ``var`` from ``statistics`` (call order) when
      given, else the layer's running variance.
    * ``"measure"`` (view A, the pruning set as one batch): each call measures its input's
      per-channel mean and biased variance, appends them to :attr:`statistics`, and
      normalises with them (train mode, without touching the running buffers).
    * ``"fixed"`` (view A, several batches): each call normalises with ``statistics``.
    * ``"measure_next"`` (one step of :func:`batch_statistics`): calls before
      ``len(statistics)`` normalise with them; the next one stores its input's moments in
      :attr:`moments` and ends the forward.
    * ``"batch"`` (reference mode): train-mode normalisation with the batch's own statistics.

    GroupNorm, LayerNorm, InstanceNorm, LocalResponseNorm and RMSNorm raise
    :class:`UnsupportedLayerError` except in ``"batch"`` (their scale depends on each input, so
    it is not a path weight), as does BatchNorm without running statistics in ``"unit"`` and
    ``"scale_squared"`` when no ``statistics`` are given.

    Args:
        behaviour: one of the above.
        statistics: per-call statistics (``"fixed"``, ``"measure_next"``; optional for
            ``"unit"`` and ``"scale_squared"``).

    Examples:
        >>> bn = torch.nn.BatchNorm1d(2).eval()
        >>> bn.running_var.fill_(3.0)  # doctest: +ELLIPSIS
        tensor(...)
        >>> with NormReduction("scale_squared"):
        ...     bn(torch.ones(1, 2))
        tensor([[0.3333, 0.3333]], grad_fn=<MulBackward0>)
        >>> with torch.no_grad(), NormReduction("measure") as measured:
        ...     _ = bn(torch.tensor([[1.0, 0.0], [3.0, 0.0]]))
        >>> measured.statistics[0].var.tolist()
        [1.0, 0.0]
    """

    def __init__(self, behaviour: str, statistics: Sequence[NormStatistics] | None = None) -> None:
        super().__init__()
        if behaviour not in _BEHAVIOURS:
            raise InvalidOptionError(f"behaviour must be one of {', '.join(map(repr, _BEHAVIOURS))}, got {behaviour!r}.")
        if behaviour in ("fixed", "measure_next") and statistics is None:
            raise InvalidOptionError(f"NormReduction({behaviour!r}) needs statistics=.")
        self.behaviour = behaviour
        self.given = statistics is not None
        #: the per-call statistics (grown by ``"measure"``)
        self.statistics: list[NormStatistics] = [] if statistics is None else list(statistics)
        #: ``"measure_next"``: the moments of call ``len(statistics)``, ``None`` if the forward had fewer calls
        self.moments: _Moments | None = None
        #: how many normalisation calls were seen
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            return self._batch_norm(*args, **kwargs)
        if func in _OTHER_NORMS and self.behaviour != "batch":
            raise UnsupportedLayerError(
                f"px (theory mode) supports BatchNorm only, not {_OTHER_NORMS[func]}: its per-channel scale "
                "depends on each input, so it is not a path weight. Use a BatchNorm network, or mode='reference'."
            )
        return func(*args, **kwargs)

    def check_all_used(self) -> None:
        """Raise unless the forward made exactly one call per given statistics entry."""
        if self.given and self.calls != len(self.statistics):
            raise ModelForwardError(
                f"px: the model made {self.calls} normalisation calls in one view and {len(self.statistics)} in "
                "another; its forward must run the same layers in the same order on every call."
            )

    def _batch_norm(self, input: torch.Tensor, running_mean: torch.Tensor | None,
                    running_var: torch.Tensor | None, weight: torch.Tensor | None = None,
                    bias: torch.Tensor | None = None, training: bool = False, momentum: float | None = 0.1,
                    eps: float = 1e-5) -> torch.Tensor:
        if self.behaviour == "batch":
            return F.batch_norm(input, None, None, weight, bias, True, 0.0, eps)
        index = self.calls
        self.calls += 1
        if self.behaviour == "measure":
            self.statistics.append(_merge([_moments(input)], _no_reduce))
        elif self.behaviour == "measure_next" and index == len(self.statistics):
            self.moments = _moments(input)
            raise _Measured
        if self.behaviour in ("measure", "fixed", "measure_next"):
            mean, var = self._statistics_of(index, input)
            return F.batch_norm(input, mean.to(input.dtype), var.to(input.dtype), weight, bias, False, 0.0, eps)
        if self.given:
            var = self._statistics_of(index, input).var
        elif running_var is None:
            raise UnsupportedLayerError(
                "px with norm='running' needs BatchNorm layers with running statistics (track_running_stats=True): "
                "their eval-mode scale gamma / sqrt(running_var + eps) is the path weight. Use norm='batch' "
                "(the default) for the statistics of the pruning set."
            )
        else:
            var = running_var
        if self.behaviour == "unit":
            return input.clone()
        scale = (var.to(input.dtype) + eps).reciprocal()
        if weight is not None:
            scale = weight.to(input.dtype).square() * scale
        return input * _per_channel(scale, input.dim())

    def _statistics_of(self, index: int, input: torch.Tensor) -> NormStatistics:
        if index >= len(self.statistics) or self.statistics[index].mean.shape[0] != input.shape[1]:
            raise ModelForwardError(
                f"px: normalisation call {index} (input {tuple(input.shape)}) has no matching measured statistics; "
                "the model's forward must run the same layers in the same order on every call."
            )
        return self.statistics[index]


def batch_statistics(run: Callable[[torch.Tensor], Any], inputs: Sequence[torch.Tensor],
                     all_reduce: Callable[[list[torch.Tensor]], None] = _no_reduce) -> list[NormStatistics]:
    """The statistics of every normalisation call over all ``inputs``, layer by layer.

    Pass ``k`` runs every batch with calls ``0..k-1`` normalised by the statistics found so
    far and stops each forward at call ``k``, whose per-batch moments merge exactly into the
    pooled mean and biased variance (independent of the batching). ``len(result) + 1``
    partial passes in all; with one batch, ``NormReduction("measure")`` needs only one.

    Args:
        run: runs the network (eval mode, no grad) on one batch.
        inputs: the batches.
        all_reduce: sums a list of tensors over processes, in place (distributed scoring).

    Returns:
        One :class:`NormStatistics` per normalisation call, in call order.

    Examples:
        >>> bn = torch.nn.BatchNorm1d(1).eval()
        >>> x = torch.tensor([[0.0], [1.0], [2.0], [5.0]])
        >>> with torch.no_grad():
        ...     [s.var.item() for s in batch_statistics(bn, [x[:1], x[1:]])]
        [3.5]
    """
    statistics: list[NormStatistics] = []
    while True:
        parts = []
        for x in inputs:
            with NormReduction("measure_next", statistics) as norms:
                try:
                    run(x)
                except _Measured:
                    pass
            parts.append(norms.moments)
        measured = [p for p in parts if p is not None]
        if not measured:
            return statistics
        if len(measured) != len(parts):
            raise ModelForwardError("px: the model ran different normalisation layers on different batches; its forward "
                               "must run the same layers in the same order on every call.")
        statistics.append(_merge(measured, all_reduce))
