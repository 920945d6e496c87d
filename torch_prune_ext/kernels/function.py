"""One ``torch.autograd.Function`` for the masked linear layer ``y = x (W * M)^T + b``.

The layer's plan (:class:`LayerPlan`) says which backend runs: ``"triton"`` (block-sparse Triton
kernels: forward, dX, dW), ``"csr"`` / ``"bsr"`` (CPU MKL sparse), ``"semi_structured"`` (2:4 on CUDA,
:func:`semi_structured_linear`). The gradient w.r.t. the weight
is dense-shaped and exactly zero at masked entries, so masked weights stay zero under training
(SGD, momentum, weight decay, Adam all map a zero gradient on a zero weight to zero).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from ..errors import MissingDependencyError
from . import triton_kernels
from .cpu import CpuSparsePlan
from .format import BlockSparseWeight

__all__ = ["LayerPlan", "MaskedLinearFunction", "masked_linear", "semi_structured_linear"]


@dataclasses.dataclass
class LayerPlan:
    """Backend and fixed sparsity structure of one layer.

    Attributes:
        backend: ``"dense"``, ``"triton"``, ``"csr"``, ``"bsr"`` or ``"semi_structured"``.
        mask: ``(N, K)`` element mask.
        block_size: block shape used by ``"triton"``/``"bsr"`` (None otherwise).
        bsw: block index for ``"triton"``.
        cpu: CPU sparse structure for ``"csr"``/``"bsr"``.
    """

    backend: str
    mask: torch.Tensor
    block_size: tuple[int, int] | None = None
    bsw: BlockSparseWeight | None = None
    cpu: CpuSparsePlan | None = None
    _values_key: tuple | None = None
    _values: torch.Tensor | None = None

    def values(self, weight: torch.Tensor, dtype: torch.dtype, view: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Kept blocks of ``weight`` in ``dtype``, cached while the weight is unchanged (triton backend).

        Args:
            weight: ``(N, K)`` weight (or a tensor whose ``view`` is).
            dtype: compute dtype.
            view: maps ``weight`` to the ``(N, K)`` matrix (e.g. ``conv_layout.gemm_view``); None = as is.

        Returns:
            ``(nnzb, b_n, b_k)`` values.
        """
        key = (weight.data_ptr(), weight._version, dtype)
        if self._values_key != key or self._values is None:
            matrix = weight.detach() if view is None else view(weight.detach())
            self._values = self.bsw.gather(matrix).to(dtype).contiguous()
            self._values_key = key
        return self._values


class MaskedLinearFunction(torch.autograd.Function):
    """``y = x (W * M)^T + b`` for 2-D ``x`` on the plan's sparse backend, with its own backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, plan):  # noqa: D102
        if plan.backend == "triton":
            values = plan.values(weight, x.dtype)
            b = bias.detach().to(x.dtype) if bias is not None else None
            y = triton_kernels.forward(x, plan.bsw, values, b)
            ctx.save_for_backward(x, values)
        else:
            y = plan.cpu.forward(x, weight, bias)
            ctx.save_for_backward(x, weight)
        ctx.plan = plan
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        x, saved = ctx.saved_tensors
        plan = ctx.plan
        dx = dw = db = None
        if plan.backend == "triton":
            g = grad_out.to(x.dtype).contiguous()
            if ctx.needs_input_grad[0]:
                dx = triton_kernels.grad_input(g, plan.bsw, saved)
            if ctx.needs_input_grad[1]:
                dw = plan.bsw.scatter(triton_kernels.grad_weight(g, x, plan.bsw))
        else:
            g = grad_out.contiguous()
            if ctx.needs_input_grad[0]:
                dx = plan.cpu.grad_input(g, saved)
            if ctx.needs_input_grad[1]:
                dw = plan.cpu.grad_weight(g, x)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = grad_out.sum(0)
        return dx, dw, db, None


def masked_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, plan: LayerPlan) -> torch.Tensor:
    """Apply the layer on any leading shape of ``x`` with the plan's backend.

    ``"dense"`` is ``F.linear(x, W * M, b)``; CPU sparse backends upcast fp16/bf16 to fp32 and cast back
    (MKL sparse has no half types).

    Args:
        x: ``(..., K)`` input.
        weight: ``(N, K)`` weight.
        bias: ``(N,)`` or None.
        plan: the layer's plan.

    Returns:
        ``(..., N)`` output.

    Examples:
        >>> w = torch.randn(4, 8); m = (torch.rand(4, 8) > 0.5).float()
        >>> plan = LayerPlan("csr", m, cpu=CpuSparsePlan.build(m, "csr"))
        >>> x = torch.randn(3, 8)
        >>> torch.allclose(masked_linear(x, w, None, plan), x @ (w * m).t(), atol=1e-6)
        True
    """
    if plan.backend == "dense":
        return torch.nn.functional.linear(x, weight * plan.mask.to(weight.dtype), bias)
    if plan.backend == "semi_structured":
        return semi_structured_linear(x, weight, bias, plan)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    if plan.backend in ("csr", "bsr") and x.dtype != torch.float32:
        y = MaskedLinearFunction.apply(
            x2.float(), weight.float(), bias.float() if bias is not None else None, plan
        ).to(x.dtype)
    else:
        y = MaskedLinearFunction.apply(x2, weight, bias, plan)
    return y.reshape(*lead, y.shape[-1])


def semi_structured_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, plan: LayerPlan) -> torch.Tensor:
    """2:4 path (CUDA, fp16/bf16): ``F.linear`` on ``to_sparse_semi_structured(W * M)`` for inference.

    When a gradient is needed the dense masked weight is used (same numbers; torch's 2:4 backward
    support is partial). The compressed weight is cached while the weight is unchanged.

    Args:
        x: ``(..., K)`` input.
        weight: ``(N, K)`` weight.
        bias: ``(N,)`` or None.
        plan: plan with ``backend == "semi_structured"``.

    Returns:
        ``(..., N)`` output.

    Raises:
        MissingDependencyError: this torch build has no ``to_sparse_semi_structured``.
    """
    if torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad):
        return torch.nn.functional.linear(x, weight * plan.mask.to(weight.dtype), bias)
    try:
        from torch.sparse import to_sparse_semi_structured
    except ImportError as exc:  # pragma: no cover - old torch
        raise MissingDependencyError("2:4 needs torch.sparse.to_sparse_semi_structured (torch>=2.1 with CUDA); upgrade torch.") from exc
    key = (weight.data_ptr(), weight._version, x.dtype)
    if plan._values_key != key:
        plan._values = to_sparse_semi_structured((weight.detach() * plan.mask.to(weight.dtype)).to(x.dtype))
        plan._values_key = key
    lead = x.shape[:-1]
    y = torch.nn.functional.linear(x.reshape(-1, x.shape[-1]), plan._values, bias.to(x.dtype) if bias is not None else None)
    return y.reshape(*lead, y.shape[-1])
