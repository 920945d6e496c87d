"""Launchers of the Triton implicit-GEMM convolution kernels over block-compressed weights.

A pruned ``Conv2d`` (``groups=1``, zero padding) is the GEMM of its input's im2col matrix
``X_col (N·H_out·W_out, kh·kw·C)`` with the tap-major weight view ``(W * M) (O, kh·kw·C)`` of
:mod:`.conv_layout`, compressed into a :class:`~torch_prune_ext.kernels.format.BlockSparseWeight`.

* forward: ``Y = X_col (W * M)ᵀ + b``, ``X_col`` gathered tile by tile from the channels-last input
  (never stored), only the kept blocks of each block row visited, fp32 accumulation, bias fused;
* input gradient: ``dX_col = dY (W * M)`` by the column-ordered block index (the Linear kernel's
  :func:`~torch_prune_ext.kernels.triton_kernels.grad_input`), folded back onto the input with
  ``F.fold`` (summed in fp32); it needs one im2col-sized buffer;
* weight gradient: ``dY_blockᵀ X_col`` for the kept blocks only, split over output positions for
  parallelism (partial sums in fp32), masked by the element mask.

fp32, fp16 and bf16; fp32 dots are IEEE unless ``allow_tf32=True``
(see :func:`~torch_prune_ext.kernels.triton_kernels.dot_precision`).
"""

from __future__ import annotations

import functools
import logging
from types import ModuleType

import torch
import torch.nn.functional as F

from ..errors import InvalidOptionError
from .conv_layout import ConvGeometry
from .format import BlockSparseWeight
from .triton_kernels import _src, check_kernel_input, dot_precision, grad_input, triton_cdiv

__all__ = ["conv2d_forward", "conv2d_grad_input", "conv2d_grad_weight"]

logger = logging.getLogger("torch_prune_ext")

#: Output positions per weight-gradient split: a multiple of every autotuned ``BLOCK_M``.
_SPLIT_ROWS = 128


@functools.lru_cache(maxsize=1)
def _conv_src() -> ModuleType:
    _src()  # raises MissingDependencyError without triton
    from . import _triton_conv_src

    return _triton_conv_src


def _check_conv(x: torch.Tensor, bsw: BlockSparseWeight, geometry: ConvGeometry, name: str = "x") -> None:
    check_kernel_input(x, name)
    if x.dim() != 4:
        raise InvalidOptionError(f"{name} must be 4-D (N, C, H, W), got shape {tuple(x.shape)}; add a batch dimension.")
    kh, kw = geometry.kernel_size
    expected = (geometry.out_channels, kh * kw * geometry.in_channels)
    if tuple(bsw.shape) != expected:
        raise InvalidOptionError(
            f"the block-sparse weight has shape {tuple(bsw.shape)}, the geometry needs {expected} "
            "(O, kh·kw·C); build it from gemm_view(weight) and gemm_view(mask)."
        )


def _nhwc(x: torch.Tensor, channels: int, name: str) -> torch.Tensor:
    if x.shape[1] != channels:
        raise InvalidOptionError(
            f"{name} has {x.shape[1]} channels, the convolution expects {channels}; pass the layer's own input."
        )
    return x.permute(0, 2, 3, 1).contiguous()


def _output_size(geometry: ConvGeometry, height: int, width: int) -> tuple[int, int]:
    h_out, w_out = geometry.output_size(height, width)
    if h_out <= 0 or w_out <= 0:
        raise InvalidOptionError(
            f"input {height}×{width} is smaller than the (dilated) kernel {geometry.kernel_size} with padding "
            f"{geometry.padding}; give a larger input."
        )
    return h_out, w_out


def _geometry_args(geometry: ConvGeometry) -> dict:
    (_, kw), (sh, sw), (ph, pw), (dh, dw) = (geometry.kernel_size, geometry.stride, geometry.padding, geometry.dilation)
    return dict(KW=kw, SH=sh, SW=sw, PH=ph, PW=pw, DH=dh, DW=dw)


def conv2d_forward(
    x: torch.Tensor,
    bsw: BlockSparseWeight,
    values: torch.Tensor,
    bias: torch.Tensor | None,
    geometry: ConvGeometry,
    *,
    allow_tf32: bool = False,
) -> torch.Tensor:
    """``y = conv2d(x, W * M, bias)`` skipping every empty block of the tap-major weight view.

    Args:
        x: ``(N, C, H, W)`` input, any memory format (read as channels-last).
        bsw: block index built from ``gemm_view(weight)`` and ``gemm_view(mask)``.
        values: ``(nnzb, b_n, b_k)`` kept blocks in ``x``'s dtype (``bsw.values`` cast).
        bias: ``(O,)`` or None.
        geometry: the convolution's :class:`ConvGeometry`.
        allow_tf32: fp32 dots in TF32 (see :func:`~torch_prune_ext.kernels.triton_kernels.dot_precision`).

    Returns:
        ``(N, O, H_out, W_out)`` in ``x``'s dtype, channels-last memory format.

    Raises:
        InvalidOptionError: unsupported dtype or device, wrong channel count, a ``bsw`` of another
            shape, ``values`` of another dtype, or an input smaller than the kernel.
    """
    _check_conv(x, bsw, geometry)
    if values.dtype != x.dtype:
        raise InvalidOptionError(f"values are {values.dtype} but x is {x.dtype}; pass bsw.values.to(x.dtype).")
    src = _conv_src()
    n, c, h, w = x.shape
    xh = _nhwc(x, geometry.in_channels, "x")
    h_out, w_out = _output_size(geometry, h, w)
    o, k = bsw.shape
    p = n * h_out * w_out
    y = torch.empty(p, o, dtype=x.dtype, device=x.device)
    if p > 0:
        bn, bk = bsw.block_size
        grid = lambda meta: (triton_cdiv(p, meta["BLOCK_M"]), bsw.grid[0])  # noqa: E731
        src.conv_forward_kernel[grid](
            xh, values.contiguous(), bsw.row_ptr, bsw.col_idx, bias if bias is not None else xh, y,
            p, o, k, c, h, w, h_out * w_out, w_out, **_geometry_args(geometry),
            HAS_BIAS=bias is not None, BN=bn, BK=bk, PRECISION=dot_precision(x.dtype, allow_tf32),
        )
    return y.view(n, h_out, w_out, o).permute(0, 3, 1, 2)


def _grad_rows(g: torch.Tensor, geometry: ConvGeometry, input_shape: tuple[int, ...]) -> torch.Tensor:
    """``g`` ``(N, O, H_out, W_out)`` as the contiguous ``(N·H_out·W_out, O)`` matrix, after checking its shape."""
    n, _, h, w = input_shape
    expected = (n, geometry.out_channels, *_output_size(geometry, h, w))
    if tuple(g.shape) != expected:
        raise InvalidOptionError(
            f"output gradient has shape {tuple(g.shape)}, expected {expected} for input shape {tuple(input_shape)}."
        )
    return g.permute(0, 2, 3, 1).reshape(-1, geometry.out_channels).contiguous()


def conv2d_grad_input(
    g: torch.Tensor,
    bsw: BlockSparseWeight,
    values: torch.Tensor,
    geometry: ConvGeometry,
    input_shape: tuple[int, ...] | torch.Size,
    *,
    allow_tf32: bool = False,
) -> torch.Tensor:
    """``dX`` of the convolution: ``dY (W * M)`` over the kept blocks, folded back onto the input.

    Args:
        g: ``(N, O, H_out, W_out)`` output gradient, any memory format.
        bsw: block index (its column-ordered index is used).
        values: kept blocks in ``g``'s dtype.
        geometry: the convolution's :class:`ConvGeometry`.
        input_shape: ``(N, C, H, W)`` of the forward input.
        allow_tf32: fp32 dots in TF32.

    Returns:
        ``(N, C, H, W)`` input gradient in ``g``'s dtype.

    Raises:
        InvalidOptionError: unsupported dtype or device, or shapes that do not fit ``geometry``.
    """
    _check_conv(g, bsw, geometry, "g")
    n, c, h, w = (int(s) for s in input_shape)
    if c != geometry.in_channels:
        raise InvalidOptionError(f"input_shape has {c} channels, the convolution expects {geometry.in_channels}.")
    rows = _grad_rows(g, geometry, (n, c, h, w))
    kh, kw = geometry.kernel_size
    if rows.shape[0] == 0:
        return torch.zeros(n, c, h, w, dtype=g.dtype, device=g.device)
    cols = grad_input(rows, bsw, values.to(g.dtype), allow_tf32=allow_tf32)  # (P, kh·kw·C), tap-major
    positions = rows.shape[0] // n
    cols = cols.view(n, positions, kh, kw, c).permute(0, 4, 2, 3, 1).reshape(n, c * kh * kw, positions)
    dx = F.fold(cols.float(), (h, w), geometry.kernel_size, dilation=geometry.dilation,
                padding=geometry.padding, stride=geometry.stride)
    return dx.to(g.dtype)


def _weight_grad_splits(positions: int, nnzb: int, device: torch.device) -> tuple[int, int]:
    """``(splits, rows_per_split)``: enough programs to fill the device, each on a slice of the positions."""
    if device.type == "cuda":
        programs = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        programs = 4  # the interpreter: still exercise the split path
    wanted = max(1, min(-(-programs // max(nnzb, 1)), -(-positions // _SPLIT_ROWS)))
    rows = -(-positions // wanted)
    rows = -(-rows // _SPLIT_ROWS) * _SPLIT_ROWS
    return -(-positions // rows), rows


def conv2d_grad_weight(
    g: torch.Tensor,
    x: torch.Tensor,
    bsw: BlockSparseWeight,
    geometry: ConvGeometry,
    *,
    allow_tf32: bool = False,
) -> torch.Tensor:
    """Gradient of the kept blocks: ``(dYᵀ X_col)`` restricted to stored blocks, times the element mask.

    Args:
        g: ``(N, O, H_out, W_out)`` output gradient.
        x: ``(N, C, H, W)`` forward input (same dtype as ``g``).
        bsw: block index (its ``mask_values`` masks the result).
        geometry: the convolution's :class:`ConvGeometry`.
        allow_tf32: fp32 dots in TF32.

    Returns:
        ``(nnzb, b_n, b_k)`` in ``x``'s dtype, in the order of ``bsw.values``; ``bsw.scatter`` and
        ``from_gemm_view`` turn it into the dense weight gradient.

    Raises:
        InvalidOptionError: unsupported dtype or device, or shapes that do not fit ``geometry``.
    """
    _check_conv(x, bsw, geometry)
    n, c, h, w = x.shape
    xh = _nhwc(x, geometry.in_channels, "x")
    rows = _grad_rows(g.to(x.dtype), geometry, tuple(x.shape))
    bn, bk = bsw.block_size
    if bsw.nnzb == 0 or rows.shape[0] == 0:
        return torch.zeros(bsw.nnzb, bn, bk, dtype=x.dtype, device=x.device)
    p, o = rows.shape
    h_out, w_out = _output_size(geometry, h, w)
    splits, rows_per_split = _weight_grad_splits(p, bsw.nnzb, x.device)
    partial = torch.empty(splits, bsw.nnzb, bn, bk, dtype=torch.float32, device=x.device)
    _conv_src().conv_grad_weight_kernel[(bsw.nnzb, splits)](
        rows, xh, bsw.row_idx, bsw.col_idx, partial,
        p, o, bsw.shape[1], c, h, w, h_out * w_out, w_out, rows_per_split, **_geometry_args(geometry),
        BN=bn, BK=bk, PRECISION=dot_precision(x.dtype, allow_tf32),
    )
    return (partial.sum(0) * bsw.mask_values.float()).to(x.dtype)
