"""``accelerate(model)``: swap every pruned ``nn.Linear`` for an :class:`AcceleratedLinear`.

Conv2d layers are left as they are (not converted yet).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..core.checkpoint import pruned_tensors
from .dispatch import make_plan
from .function import LayerPlan, masked_linear

__all__ = ["AcceleratedLinear", "accelerate"]

logger = logging.getLogger("torch_prune_ext")


# Sparse tensors and Triton launches inside a custom Function: run eagerly (a graph break under
# torch.compile). torch._disable_dynamo is torch.compiler.disable that imports torch._dynamo (~1 s) at
# the first call instead of at import (torch uses it for the same reason in its optimizers).
_run = torch._disable_dynamo(masked_linear)


class AcceleratedLinear(nn.Module):
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
        mask = (mask != 0).to(weight.dtype)
        self.in_features = weight.shape[1]
        self.out_features = weight.shape[0]
        self.weight = nn.Parameter((weight.detach() * mask).clone(), requires_grad=weight.requires_grad or True)
        self.register_buffer("weight_mask", mask.clone())
        if bias is not None and not isinstance(bias, nn.Parameter):
            bias = nn.Parameter(bias.detach().clone())
        self.bias = bias
        self._backend_request = backend
        self._block_size = block_size
        self._table = table
        self.plan = make_plan(mask, weight.device, weight.dtype, backend, block_size, table)

    @property
    def backend(self) -> str:
        """The backend in use (``"dense"``, ``"triton"``, ``"csr"``, ``"bsr"``, ``"semi_structured"``)."""
        return self.plan.backend

    def replan(self, table: Mapping[str, Any] | None = None) -> None:
        """Re-run the dispatcher (after moving the module, changing the mask, or with a new table).

        Args:
            table: crossover table; None keeps the one given at construction.
        """
        if table is not None:
            self._table = table
        self.plan = make_plan(self.weight_mask, self.weight.device, self.weight.dtype,
                              self._backend_request, self._block_size, self._table)

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        out = super()._apply(fn, recurse)
        if self.plan.mask.device != self.weight.device:
            self.replan()
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return _run(x, self.weight, self.bias, self.plan)

    def extra_repr(self) -> str:  # noqa: D102
        density = float(self.weight_mask.mean())
        return f"in_features={self.in_features}, out_features={self.out_features}, backend={self.backend}, density={density:.3f}"


def accelerate(
    model: nn.Module,
    device: torch.device | str | None = None,
    backend: str = "auto",
    block_size: int | tuple[int, int] | None = None,
    table: Mapping[str, Any] | str | None = None,
) -> nn.Module:
    """Convert every pruned ``nn.Linear`` of ``model`` into an :class:`AcceleratedLinear`, in place.

    A layer counts as pruned when ``torch.nn.utils.prune`` reparametrised its ``weight`` (it has
    ``weight_orig`` and ``weight_mask``). A pruned bias is folded (``bias_orig * bias_mask``).
    Unpruned layers and Conv2d layers are left unchanged.

    Args:
        model: the pruned model.
        device: move the model there first (None: leave it where it is).
        backend: ``"auto"`` (crossover table) or a backend to force for every layer.
        block_size: block for ``"triton"``/``"bsr"``.
        table: crossover table (dict or JSON path); None = shipped default.

    Returns:
        The same model object, converted.

    Examples:
        >>> import torch_prune_ext as tpe
        >>> net = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> _ = nn.utils.prune.l1_unstructured(net[0], "weight", amount=0.9)
        >>> x = torch.randn(3, 16); before = net(x)
        >>> net = tpe.accelerate(net, device="cpu")
        >>> type(net[0]).__name__, torch.allclose(net(x), before, atol=1e-6)
        ('AcceleratedLinear', True)
    """
    from .dispatch import load_table

    tab = load_table(table)
    if device is not None:
        model = model.to(device)
    names = {id(m): n for n, m in model.named_modules()}
    for module, name in pruned_tensors(model):
        if name != "weight" or type(module) is not nn.Linear:
            if not isinstance(module, nn.Linear):
                logger.info("accelerate: %s is not an nn.Linear; left unchanged", type(module).__name__)
            continue
        with torch.no_grad():
            mask = module.weight_mask
            weight = module.weight_orig * mask
            bias = module.bias
            if hasattr(module, "bias_mask"):
                bias = nn.Parameter((module.bias_orig * module.bias_mask).detach().clone())
        new = AcceleratedLinear(weight, mask, bias, backend=backend, block_size=block_size, table=tab)
        _replace(model, names[id(module)], new)
        logger.info("accelerate: %s -> %s", names[id(module)] or "<root>", new.backend)
    return model


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    if not name:
        raise TypeError("accelerate() cannot replace the root module itself; wrap the Linear in nn.Sequential.")
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
