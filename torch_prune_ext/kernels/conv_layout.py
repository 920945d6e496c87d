"""The geometry of a 2-D convolution (:class:`ConvGeometry`), and the tap-major GEMM view of its weight
(:func:`gemm_view`, defined in :mod:`torch_prune_ext.core.layout` and re-exported here).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..core.layout import from_gemm_view, gemm_view
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
