"""The tap-major GEMM view of a convolution weight, shared by block masks (``core/blocks.py``) and the
conv kernels (``kernels/``).

A ``Conv2d`` weight ``(O, C, kh, kw)`` is read as the matrix ``(O, kh·kw·C)`` whose column
``k = (r·kw + s)·C + c`` holds input channel ``c`` at kernel tap ``(r, s)``. A ``b_n × b_k`` tile of
that view is ``b_n`` output channels by ``b_k`` input channels at one tap (when ``b_k`` divides
``C``), which is what an implicit-GEMM kernel over a channels-last input reads contiguously.
"""

from __future__ import annotations

import torch

__all__ = ["from_gemm_view", "gemm_view"]


def gemm_view(weight: torch.Tensor) -> torch.Tensor:
    """The tap-major matrix ``(O, kh·kw·C)`` of a conv weight ``(O, C, kh, kw)``.

    Args:
        weight: a 4-D conv weight (or mask).

    Returns:
        A contiguous ``(O, kh·kw·C)`` tensor; column ``(r·kw + s)·C + c`` is channel ``c`` at tap ``(r, s)``.

    Examples:
        >>> w = torch.arange(2 * 3 * 2 * 2.).reshape(2, 3, 2, 2)
        >>> gemm_view(w)[0, :4].tolist()   # tap (0, 0) of channels 0, 1, 2, then tap (0, 1) of channel 0
        [0.0, 4.0, 8.0, 1.0]
        >>> torch.equal(from_gemm_view(gemm_view(w), w.shape), w)
        True
    """
    o = weight.shape[0]
    return weight.permute(0, 2, 3, 1).reshape(o, -1).contiguous()


def from_gemm_view(matrix: torch.Tensor, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Inverse of :func:`gemm_view`: the ``(O, C, kh, kw)`` tensor of a tap-major matrix.

    Args:
        matrix: ``(O, kh·kw·C)``.
        shape: the conv weight's shape ``(O, C, kh, kw)``.

    Returns:
        A contiguous tensor of ``shape``.
    """
    o, c, kh, kw = shape
    return matrix.reshape(o, kh, kw, c).permute(0, 3, 1, 2).contiguous()
