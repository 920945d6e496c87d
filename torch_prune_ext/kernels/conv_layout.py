"""The tap-major GEMM view of a convolution weight, shared by block masks and conv kernels.

A ``Conv2d`` weight ``(O, C, kh, kw)`` is read as the matrix ``(O, kh·kw·C)`` whose column
``k = (r·kw + s)·C + c`` holds input channel ``c`` at kernel tap ``(r, s)``. A ``b_n × b_k`` tile of
that view is ``b_n`` output channels by ``b_k`` input channels at one tap (when ``b_k`` divides
``C``), which is what an implicit-GEMM kernel over a channels-last input reads contiguously.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..errors import InvalidOptionError

__all__ = ["ConvGeometry", "from_gemm_view", "gemm_view"]


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
    """Shape parameters of a 2-D convolution with ``groups=1`` and zero padding.

    Args:
        in_channels: ``C``.
        out_channels: ``O``.
        kernel_size: ``(kh, kw)``.
        stride: ``(sh, sw)``.
        padding: ``(ph, pw)`` zeros on each side.
        dilation: ``(dh, dw)``.

    Examples:
        >>> g = ConvGeometry.of(nn.Conv2d(3, 8, 3, stride=2, padding=1))
        >>> g.kernel_size, g.stride, g.output_size(32, 31)
        ((3, 3), (2, 2), (16, 16))
    """

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)

    @classmethod
    def of(cls, conv: nn.Conv2d) -> ConvGeometry:
        """The geometry of ``conv``.

        Args:
            conv: an ``nn.Conv2d``.

        Returns:
            Its :class:`ConvGeometry`.

        Raises:
            InvalidOptionError: grouped convolutions, string padding or a padding mode other than
                ``"zeros"`` (their layers stay dense).
        """
        if conv.groups != 1:
            raise InvalidOptionError(f"grouped convolution (groups={conv.groups}) is not supported; it stays dense.")
        if isinstance(conv.padding, str):
            raise InvalidOptionError(f"padding={conv.padding!r} is not supported; give explicit padding integers.")
        if conv.padding_mode != "zeros":
            raise InvalidOptionError(f"padding_mode={conv.padding_mode!r} is not supported; only 'zeros' is.")
        return cls(conv.in_channels, conv.out_channels, _pair(conv.kernel_size), _pair(conv.stride),
                   _pair(conv.padding), _pair(conv.dilation))

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Output ``(H_out, W_out)`` for an input of ``height × width``.

        Args:
            height: input height.
            width: input width.

        Returns:
            The output spatial size, as ``F.conv2d`` computes it.
        """
        sizes = []
        for size, k, s, p, d in zip((height, width), self.kernel_size, self.stride, self.padding, self.dilation):
            sizes.append((size + 2 * p - d * (k - 1) - 1) // s + 1)
        return sizes[0], sizes[1]


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
