"""``accelerate(model)``: swap every pruned ``nn.Linear`` for an :class:`AcceleratedLinear` and every
pruned ``nn.Conv2d`` for an :class:`~torch_prune_ext.kernels.conv.AcceleratedConv2d`, with a per-layer report.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..core.checkpoint import pruned_tensors
from ..core.report import format_table
from ..errors import InvalidOptionError, PruningError, UnsupportedLayerError
from .conv import AcceleratedConv2d
from .conv_layout import ConvGeometry
from .dispatch import CONV_BACKENDS, load_table, make_plan
from .function import LayerPlan, masked_linear
from .layer import AcceleratedLayer

__all__ = ["AccelerateReport", "AcceleratedConv2d", "AcceleratedLinear", "LayerChoice", "accelerate"]

logger = logging.getLogger("torch_prune_ext")


# Sparse tensors and Triton launches inside a custom Function: run eagerly (a graph break under
# torch.compile). torch._disable_dynamo is torch.compiler.disable that imports torch._dynamo (~1 s) at
# the first call instead of at import (torch uses it for the same reason in its optimizers).
_run = torch._disable_dynamo(masked_linear)


class AcceleratedLinear(AcceleratedLayer):
    """A pruned ``nn.Linear`` computed by the dispatcher's backend.

    ``weight`` is a dense parameter holding zeros where pruned (its gradient is zero there, so it
    stays pruned under training); ``weight_mask`` is a buffer. Outputs and gradients equal those of
    ``F.linear(x, weight * weight_mask, bias)``.

    Args:
        weight: ``(out, in)`` weight values (copied, masked).
        mask: ``(out, in)`` mask.
        bias: bias parameter (kept as is) or None.
        backend: ``"auto"`` (crossover table) or a forced backend (see ``dispatch.BACKENDS``).
        block_size: block for ``"triton"``/``"bsr"``.
        table: crossover table.

    Examples:
        >>> lin = nn.Linear(8, 4)
        >>> m = (torch.rand(4, 8) > 0.5).float()
        >>> acc = AcceleratedLinear(lin.weight.detach(), m, lin.bias, backend="csr")
        >>> x = torch.randn(2, 8)
        >>> torch.allclose(acc(x), nn.functional.linear(x, lin.weight * m, lin.bias), atol=1e-6)
        True
    """

    def __init__(
        self,
        weight: torch.Tensor,
        mask: torch.Tensor,
        bias: torch.Tensor | None = None,
        backend: str = "auto",
        block_size: int | tuple[int, int] | None = None,
        table: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self._init_weights(weight, mask, bias, backend, block_size, table)
        self.in_features = weight.shape[1]
        self.out_features = weight.shape[0]
        self.plan = self._make_plan()

    def _make_plan(self) -> LayerPlan:
        return make_plan(self.weight_mask, self.weight.device, self.weight.dtype,
                         self._backend_request, self._block_size, self._table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return _run(x, self.weight, self.bias, self.plan)

    def extra_repr(self) -> str:  # noqa: D102
        density = float(self.weight_mask.mean())
        return f"in_features={self.in_features}, out_features={self.out_features}, backend={self.backend}, density={density:.3f}"


@dataclasses.dataclass(frozen=True)
class LayerChoice:
    """What :func:`accelerate` did with one pruned layer."""

    name: str
    kind: str
    backend: str
    reason: str
    density: float


@dataclasses.dataclass
class AccelerateReport:
    """Per-layer backends chosen by :func:`accelerate` (``model.accelerate_report``); ``str()`` is a table.

    ``backend`` is ``"unchanged"`` for a layer left as it was (its reason says why).
    """

    layers: list[LayerChoice]

    def backends(self) -> dict[str, str]:
        """``{layer name: backend}``."""
        return {row.name: row.backend for row in self.layers}

    def __str__(self) -> str:
        rows = [(r.name, r.kind, r.backend, f"{r.density:.3f}", r.reason) for r in self.layers]
        return format_table(("layer", "type", "backend", "density", "reason"), rows, "lllrl")


def accelerate(
    model: nn.Module,
    device: torch.device | str | None = None,
    backend: str = "auto",
    block_size: int | tuple[int, int] | None = None,
    table: Mapping[str, Any] | str | None = None,
    conv_backend: str = "auto",
) -> nn.Module:
    """Convert every pruned ``nn.Linear`` and ``nn.Conv2d`` of ``model`` into an accelerated layer, in place.

    A layer counts as pruned when ``torch.nn.utils.prune`` reparametrised its ``weight`` (it has
    ``weight_orig`` and ``weight_mask``). A pruned bias is folded (``bias_orig * bias_mask``).
    Linear layers become :class:`AcceleratedLinear`; ``Conv2d`` layers become
    :class:`~torch_prune_ext.kernels.conv.AcceleratedConv2d` (backend ``"tap"`` on CPU, ``"triton"`` on
    CUDA, or ``"dense"`` where the table says dense is faster). A conv the kernels cannot run (grouped,
    string padding, a non-zero padding mode, a mask of the wrong shape, an unsupported dtype) is left
    unchanged with a logged reason, or raises when ``conv_backend`` is forced. The per-layer choices and
    their reasons are in ``model.accelerate_report`` (an :class:`AccelerateReport`) and in the log.

    Args:
        model: the pruned model.
        device: move the model there first (None: leave it where it is).
        backend: ``"auto"`` (crossover table) or a backend to force for every Linear.
        block_size: block for ``"triton"``/``"bsr"`` (and the conv tile side).
        table: crossover table (dict or JSON path); None = shipped default.
        conv_backend: ``"auto"`` or one of ``dispatch.CONV_BACKENDS`` to force for every Conv2d.

    Returns:
        The same model object, converted.

    Raises:
        PruningError: a forced ``conv_backend`` cannot run a conv layer (the model is left unchanged up to that layer).

    Examples:
        >>> import torch_prune_ext as tpe
        >>> net = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> _ = nn.utils.prune.l1_unstructured(net[0], "weight", amount=0.9)
        >>> x = torch.randn(3, 16); before = net(x)
        >>> net = tpe.accelerate(net, device="cpu")
        >>> type(net[0]).__name__, torch.allclose(net(x), before, atol=1e-6)
        ('AcceleratedLinear', True)
        >>> net.accelerate_report.backends()
        {'0': 'dense'}
    """
    if conv_backend not in CONV_BACKENDS:
        raise InvalidOptionError(f"conv_backend={conv_backend!r} is unknown; use one of {', '.join(CONV_BACKENDS)}.")
    tab = load_table(table)
    if device is not None:
        model = model.to(device)
    names = {id(m): n for n, m in model.named_modules()}
    choices = []
    for module, name in pruned_tensors(model):
        label = names[id(module)] or "<root>"
        if name != "weight" or type(module) not in (nn.Linear, nn.Conv2d):
            if name == "weight":
                choices.append(LayerChoice(label, type(module).__name__, "unchanged", "not an nn.Linear or nn.Conv2d",
                                           float(module.weight_mask.float().mean())))
            continue
        weight, mask, bias = _folded(module)
        if type(module) is nn.Linear:
            new = AcceleratedLinear(weight, mask, bias, backend=backend, block_size=block_size, table=tab)
            reason = "forced" if backend != "auto" else "crossover table"
        else:
            new, reason = _convert_conv(module, weight, mask, bias, conv_backend, block_size, tab)
        if new is not None:
            _replace(model, names[id(module)], new)
        choices.append(LayerChoice(label, type(module).__name__, new.backend if new is not None else "unchanged",
                                   reason, float((mask != 0).float().mean())))
    report = AccelerateReport(choices)
    model.accelerate_report = report
    logger.info("accelerate:\n%s", report)
    return model


def _folded(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(weight_orig * mask, mask, bias)`` of a pruned layer (a pruned bias folded with its mask)."""
    with torch.no_grad():
        mask = module.weight_mask
        weight = module.weight_orig * mask
        bias = module.bias
        if hasattr(module, "bias_mask"):
            bias = nn.Parameter((module.bias_orig * module.bias_mask).detach().clone())
    return weight, mask, bias


def _convert_conv(
    module: nn.Conv2d, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None, backend: str,
    block_size: int | tuple[int, int] | None, table: Mapping[str, Any],
) -> tuple[AcceleratedConv2d | None, str]:
    """The accelerated conv and the reason of its backend, or ``(None, reason)`` when it stays as it is."""
    try:
        geometry = ConvGeometry.of(module)
        new = AcceleratedConv2d(weight, mask, bias, geometry, backend=backend, block_size=block_size, table=table)
    except PruningError as exc:
        if backend != "auto":
            raise
        logger.info("accelerate: conv left unchanged: %s", exc)
        return None, f"left dense: {exc}"
    return new, new.plan.reason


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    if not name:
        raise UnsupportedLayerError("accelerate() cannot replace the root module itself; wrap the layer in nn.Sequential.")
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
