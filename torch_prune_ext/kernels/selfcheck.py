"""Correctness check of the Triton convolution kernels against the masked dense convolution.

:func:`check_conv_kernels` runs forward, input gradient and weight gradient of the block-sparse
kernels (:mod:`.triton_conv`) on a few realistic layers (ResNet-20 and VGG-16 on CIFAR-10, batch 32)
and reports their errors against ``F.conv2d(x, W * M, b)`` and its autograd gradients computed in
float64 from the same (cast) inputs. The GPU suite records its result per device; the tests use its
building blocks (:func:`random_block_mask`, :func:`masked_conv_reference`, :func:`kernel_conv_outputs`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from .conv_layout import ConvGeometry, from_gemm_view, gemm_view
from .format import BlockSparseWeight, normalise_block_size
from .triton_conv import conv2d_forward, conv2d_grad_input, conv2d_grad_weight
from .triton_kernels import FP32_TOLERANCE, TF32_TOLERANCE

__all__ = [
    "ConvCase",
    "REALISTIC_CONV_CASES",
    "TOLERANCES",
    "check_conv_kernels",
    "kernel_conv_outputs",
    "masked_conv_reference",
    "random_block_mask",
]

#: Bound on the normalised error (max absolute error / max absolute reference value) per compute dtype.
TOLERANCES: dict[torch.dtype, float] = {torch.float32: FP32_TOLERANCE, torch.float16: 5e-3, torch.bfloat16: 3e-2}


@dataclasses.dataclass(frozen=True)
class ConvCase:
    """One convolution layer and its input size (square images, ``groups=1``).

    Examples:
        >>> ConvCase("c", 2, 3, 8, 9, stride=2).geometry().output_size(9, 9)
        (5, 5)
    """

    name: str
    batch: int
    in_channels: int
    out_channels: int
    size: int
    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    dilation: int = 1
    bias: bool = False

    def geometry(self) -> ConvGeometry:
        """The layer's :class:`ConvGeometry`.

        Returns:
            Its geometry.
        """
        pair = lambda v: (v, v)  # noqa: E731
        return ConvGeometry(self.in_channels, self.out_channels, pair(self.kernel_size), pair(self.stride),
                            pair(self.padding), pair(self.dilation))


#: ResNet-20 and VGG-16 layers on CIFAR-10 inputs, batch 32.
REALISTIC_CONV_CASES: tuple[ConvCase, ...] = (
    ConvCase("resnet20.stage1.conv", 32, 16, 16, 32),
    ConvCase("resnet20.stage2.down", 32, 16, 32, 32, stride=2),
    ConvCase("resnet20.stage3.conv", 32, 64, 64, 8),
    ConvCase("resnet20.stage3.shortcut1x1", 32, 32, 64, 16, kernel_size=1, stride=2, padding=0),
    ConvCase("vgg16.block2.conv", 32, 128, 128, 16, bias=True),
    ConvCase("vgg16.block4.conv", 32, 512, 512, 4, bias=True),
)


def random_block_mask(
    shape: Sequence[int], block_size: int | tuple[int, int], density: float, generator: torch.Generator,
    inner_zeros: float = 0.2,
) -> torch.Tensor:
    """A conv mask whose tap-major view keeps a random ``density`` of its blocks (CPU, float).

    Args:
        shape: ``(O, C, kh, kw)``.
        block_size: block of the tap-major view.
        density: probability that a block is kept.
        generator: random source.
        inner_zeros: fraction of zeros inside kept blocks.

    Returns:
        ``(O, C, kh, kw)`` float mask of zeros and ones.

    Examples:
        >>> m = random_block_mask((4, 3, 3, 3), 16, 1.0, torch.Generator().manual_seed(0), inner_zeros=0.0)
        >>> bool(m.all())
        True
    """
    bn, bk = normalise_block_size(block_size)
    o, c, kh, kw = shape
    k = c * kh * kw
    kept = torch.rand(-(-o // bn), -(-k // bk), generator=generator) < density
    view = kept.repeat_interleave(bn, 0).repeat_interleave(bk, 1)[:o, :k].float()
    view = view * (torch.rand(o, k, generator=generator) >= inner_zeros).float()
    return from_gemm_view(view, tuple(shape))


def masked_conv_reference(
    x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None,
    geometry: ConvGeometry, grad_out: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``F.conv2d(x, W * M, b)`` and its gradients w.r.t. ``x`` and ``W``, in float64.

    Args:
        x: ``(N, C, H, W)`` input.
        weight: ``(O, C, kh, kw)``.
        mask: same shape as ``weight``.
        bias: ``(O,)`` or None.
        geometry: the convolution's geometry.
        grad_out: gradient of the output.

    Returns:
        ``(y, dx, dweight)`` in float64.
    """
    xr = x.detach().double().requires_grad_()
    wr = weight.detach().double().requires_grad_()
    b = bias.detach().double() if bias is not None else None
    y = F.conv2d(xr, wr * mask.double(), b, geometry.stride, geometry.padding, geometry.dilation)
    y.backward(grad_out.double())
    return y.detach(), xr.grad, wr.grad


def kernel_conv_outputs(
    x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None,
    geometry: ConvGeometry, grad_out: torch.Tensor, block_size: int | tuple[int, int], allow_tf32: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Triton kernels' ``(y, dx, dweight)`` for the same problem as :func:`masked_conv_reference`.

    Args:
        x: ``(N, C, H, W)`` input in the compute dtype.
        weight: ``(O, C, kh, kw)`` in the compute dtype.
        mask: same shape as ``weight``.
        bias: ``(O,)`` or None.
        geometry: the convolution's geometry.
        grad_out: gradient of the output, in the compute dtype.
        block_size: block of the tap-major view.
        allow_tf32: fp32 dots in TF32.

    Returns:
        ``(y, dx, dweight)``, ``dweight`` dense ``(O, C, kh, kw)`` (zero outside kept entries).
    """
    bsw = BlockSparseWeight.from_dense(gemm_view(weight), gemm_view(mask.to(weight.dtype)), block_size)
    values = bsw.values.to(x.dtype)
    y = conv2d_forward(x, bsw, values, bias, geometry, allow_tf32=allow_tf32)
    dx = conv2d_grad_input(grad_out, bsw, values, geometry, x.shape, allow_tf32=allow_tf32)
    dvalues = conv2d_grad_weight(grad_out, x, bsw, geometry, allow_tf32=allow_tf32)
    return y, dx, from_gemm_view(bsw.scatter(dvalues), weight.shape)


def _errors(got: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    err = (got.double() - ref).abs().max().item() if ref.numel() else 0.0
    scale = ref.abs().max().item() if ref.numel() else 0.0
    return err, err / scale if scale > 0 else err


def _check_case(case: ConvCase, device: str, dtype: torch.dtype, block: int, density: float, seed: int,
                allow_tf32: bool) -> dict:
    gen = torch.Generator().manual_seed(seed)
    geometry = case.geometry()
    kh, kw = geometry.kernel_size
    x = torch.randn(case.batch, case.in_channels, case.size, case.size, generator=gen).to(device, dtype)
    weight = torch.randn(case.out_channels, case.in_channels, kh, kw, generator=gen).to(device, dtype)
    mask = random_block_mask(weight.shape, block, density, gen).to(device)
    bias = torch.randn(case.out_channels, generator=gen).to(device, dtype) if case.bias else None
    h_out, w_out = geometry.output_size(case.size, case.size)
    grad_out = torch.randn(case.batch, case.out_channels, h_out, w_out, generator=gen).to(device, dtype)
    ref = masked_conv_reference(x, weight, mask, bias, geometry, grad_out)
    got = kernel_conv_outputs(x, weight, mask, bias, geometry, grad_out, block, allow_tf32)
    tolerance = TF32_TOLERANCE if dtype == torch.float32 and allow_tf32 else TOLERANCES[dtype]
    row = {"case": case.name, "device": str(device), "dtype": str(dtype).replace("torch.", ""), "block": block,
           "density": density, "block_density": gemm_view(mask).ne(0).float().mean().item(),
           "allow_tf32": allow_tf32, "tolerance": tolerance}
    for name, g, r in zip(("forward", "grad_input", "grad_weight"), got, ref):
        row[f"{name}_max_abs"], row[f"{name}_max_rel"] = _errors(g, r)
    row["masked_grad_zero"] = bool((got[2][mask == 0] == 0).all().item())
    row["ok"] = row["masked_grad_zero"] and all(
        row[f"{n}_max_rel"] <= tolerance for n in ("forward", "grad_input", "grad_weight"))
    return row


def check_conv_kernels(
    device: str | torch.device = "cuda",
    dtypes: Iterable[torch.dtype] = (torch.float32, torch.float16, torch.bfloat16),
    shapes: Iterable[ConvCase] = REALISTIC_CONV_CASES,
    *,
    densities: Iterable[float] = (0.05, 0.1, 0.5),
    block_size: int = 32,
    allow_tf32: bool = False,
    seed: int = 0,
) -> list[dict]:
    """Max errors of the Triton conv kernels against the masked dense convolution (float64 reference).

    Args:
        device: where the kernels run (``"cuda"``, or ``"cpu"`` with ``TRITON_INTERPRET=1``).
        dtypes: compute dtypes to check.
        shapes: the layers (:class:`ConvCase`), default :data:`REALISTIC_CONV_CASES`.
        densities: block densities of the random block masks.
        block_size: block of the tap-major weight view.
        allow_tf32: check the TF32 fp32 path (tolerance ``TF32_TOLERANCE``) instead of IEEE fp32.
        seed: random seed of inputs and masks.

    Returns:
        One dict per (case, dtype, density): ``case``, ``device``, ``dtype``, ``block``, ``density``,
        ``block_density`` (kept fraction of the view's entries), ``allow_tf32``, ``tolerance``,
        ``{forward,grad_input,grad_weight}_max_abs`` and ``..._max_rel`` (max abs error / max abs
        reference), ``masked_grad_zero`` (the weight gradient is exactly 0 at pruned entries) and
        ``ok`` (every ``..._max_rel`` within ``tolerance`` and ``masked_grad_zero``).

    Examples:
        >>> import os
        >>> if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        ...     rows = check_conv_kernels("cuda" if torch.cuda.is_available() else "cpu", [torch.float32],
        ...                               [ConvCase("tiny", 1, 3, 5, 6)], densities=[0.5], block_size=16)
        ...     assert rows[0]["ok"], rows
    """
    rows = []
    for case in shapes:
        for dtype in dtypes:
            for i, density in enumerate(densities):
                rows.append(_check_case(case, device, dtype, block_size, density, seed + i, allow_tf32))
    return rows
