"""The accelerated pruned convolution: :class:`AcceleratedConv2d` and its ``torch.autograd.Function``.

Backends (chosen per layer by :func:`~torch_prune_ext.kernels.dispatch.make_conv_plan`):

* ``"tap"`` (CPU): :class:`~torch_prune_ext.kernels.cpu_conv.TapConvPlan`, one GEMM per kept
  tap-major tile; fp32 and fp64, fp16/bf16 are upcast to fp32 and the result cast back.
* ``"triton"`` (CUDA): the tap-major block-sparse Triton kernels of ``kernels/triton_conv.py``
  (triton itself is imported when the layer first runs).
* ``"dense"``: ``F.conv2d(x, W * M, b, ...)``.

Every backend gives the outputs and gradients of ``F.conv2d(x, W * M, b, ...)``; the weight
gradient is zero at masked entries, so they stay zero under training.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import InvalidOptionError
from . import triton_conv
from .conv_layout import ConvGeometry, from_gemm_view, gemm_view
from .conv_plan import ConvPlan
from .dispatch import make_conv_plan
from .layer import AcceleratedLayer

__all__ = ["AcceleratedConv2d", "ConvPlan", "MaskedConv2dFunction", "masked_conv2d"]


class MaskedConv2dFunction(torch.autograd.Function):
    """``conv2d(x, W * M, b)`` on the plan's sparse backend, with its own backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, plan):  # noqa: D102
        if plan.backend == "triton":
            values = plan.gemm.values(weight, x.dtype, view=gemm_view)
            b = bias.detach().to(x.dtype) if bias is not None else None
            y = triton_conv.conv2d_forward(x, plan.gemm.bsw, values, b, plan.geometry)
            ctx.save_for_backward(x, values)
        else:
            y = plan.tap.forward(x, weight, bias)
            ctx.save_for_backward(x, weight)
        ctx.plan, ctx.has_bias, ctx.weight_shape = plan, bias is not None, weight.shape
        return y

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        x, saved = ctx.saved_tensors
        plan = ctx.plan
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dx = dw = db = None
        if plan.backend == "triton":
            kernels, g = triton_conv, grad_out.to(x.dtype)
            if need_x:
                dx = kernels.conv2d_grad_input(g, plan.gemm.bsw, saved, plan.geometry, tuple(x.shape))
            if need_w:
                blocks = kernels.conv2d_grad_weight(g, x, plan.gemm.bsw, plan.geometry)
                dw = from_gemm_view(plan.gemm.bsw.scatter(blocks), ctx.weight_shape)
        else:
            dx, dw = plan.tap.backward(grad_out, x, saved, need_x, need_w)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = grad_out.sum((0, 2, 3))
        return dx, dw, db, None


def masked_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, plan: ConvPlan) -> torch.Tensor:
    """Apply the pruned conv with the plan's backend.

    Args:
        x: ``(B, C, H, W)`` input.
        weight: ``(O, C, kh, kw)`` weight.
        bias: ``(O,)`` or None.
        plan: the layer's :class:`ConvPlan`.

    Returns:
        ``(B, O, Ho, Wo)``; the ``"tap"`` backend returns it in channels-last memory format.
    """
    g = plan.geometry
    if plan.backend == "dense":
        return F.conv2d(x, weight * plan.mask.to(weight.dtype), bias, g.stride, g.padding, g.dilation)
    if plan.backend == "tap" and x.dtype in (torch.float16, torch.bfloat16):
        b = bias.float() if bias is not None else None
        return MaskedConv2dFunction.apply(x.float(), weight.float(), b, plan).to(x.dtype)
    return MaskedConv2dFunction.apply(x, weight, bias, plan)


def _masked_conv2d_eager(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         plan: ConvPlan) -> torch.Tensor:
    # Python loops over tiles and Triton launches inside a custom Function: run eagerly (graph break under torch.compile).
    return masked_conv2d(x, weight, bias, plan)


# torch._disable_dynamo, not the @torch.compiler.disable decorator: the latter imports torch._dynamo
# (~1 s) when this module loads, i.e. on `import torch_prune_ext`; this one imports it on the first call
# (same guard as kernels/accelerate.py's _run).
_run = torch._disable_dynamo(_masked_conv2d_eager)


class AcceleratedConv2d(AcceleratedLayer):
    """A pruned ``nn.Conv2d`` (``groups=1``, zero padding) computed by the dispatcher's backend.

    Outputs and gradients equal those of ``F.conv2d(x, weight * weight_mask, bias, stride, padding,
    dilation)``; ``weight`` holds zeros where pruned and its gradient is zero there.

    Args:
        weight: ``(O, C, kh, kw)`` weight values (copied, masked).
        mask: mask of the same shape.
        bias: bias parameter (kept as is) or None.
        geometry: the layer's :class:`ConvGeometry` (``ConvGeometry.of(conv)``).
        backend: ``"auto"`` (crossover table) or a forced one of ``dispatch.CONV_BACKENDS``.
        block_size: tile side (default: the table's pick, else 32).
        table: crossover table.

    Raises:
        InvalidOptionError: the mask's shape differs from the weight's, or a forced backend cannot
            run this layer (e.g. ``"tap"`` with float64 weights).

    Examples:
        >>> conv = torch.nn.Conv2d(8, 16, 3, padding=1)
        >>> m = torch.zeros_like(conv.weight); m[:8, :, 1] = 1
        >>> acc = AcceleratedConv2d(conv.weight, m, conv.bias, ConvGeometry.of(conv), backend="tap", block_size=8)
        >>> x = torch.randn(2, 8, 6, 6)
        >>> ref = torch.nn.functional.conv2d(x, conv.weight * m, conv.bias, padding=1)
        >>> acc.backend, torch.allclose(acc(x), ref, atol=1e-5)
        ('tap', True)
    """

    def __init__(
        self,
        weight: torch.Tensor,
        mask: torch.Tensor,
        bias: torch.Tensor | None,
        geometry: ConvGeometry,
        backend: str = "auto",
        block_size: int | None = None,
        table: Mapping[str, Any] | None = None,
    ) -> None:
        if mask.shape != weight.shape:
            raise InvalidOptionError(
                f"mask shape {tuple(mask.shape)} differs from conv weight shape {tuple(weight.shape)}; pass the layer's weight_mask."
            )
        super().__init__()
        self.geometry = geometry
        self._init_weights(weight, mask, bias, backend, block_size, table)
        self.plan = self._make_plan()

    def _make_plan(self) -> ConvPlan:
        return make_conv_plan(self.weight_mask, self.geometry, self.weight.device, self.weight.dtype,
                              self._backend_request, self._block_size, self._table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return _run(x, self.weight, self.bias, self.plan)

    def extra_repr(self) -> str:  # noqa: D102
        g = self.geometry
        density = float(self.weight_mask.mean())
        return (f"{g.in_channels}, {g.out_channels}, kernel_size={g.kernel_size}, stride={g.stride}, padding={g.padding}, "
                f"dilation={g.dilation}, backend={self.backend}, density={density:.3f}")
