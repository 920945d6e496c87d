"""CPU path of a pruned ``Conv2d``: one small GEMM per kept tap-major tile over a zero-padded NHWC input.

In the tap-major GEMM view (:func:`~torch_prune_ext.kernels.conv_layout.gemm_view`) a tile is ``b``
output channels by ``b`` input channels at one kernel tap ``(r, s)``. The layer is the sum over kept
tiles of ``X_tap[:, in-tile] @ W_tile^T`` into the tile's output channels, where ``X_tap`` is the
input window the tap reads. Consecutive kept tiles of one tap are merged into one GEMM (a full mask
is one GEMM per tap).

* Stride 1 ("shift" mode): the padded input ``(B·Hp·Wp, C)`` is flattened once; the window of tap
  ``(r, s)`` is the same matrix shifted by ``r·dh·Wp + s·dw`` rows, so every GEMM reads a strided view
  (no copy) and writes rows of an output laid out on the padded grid (the rows outside the valid
  output are computed and dropped: ``Hp·Wp / (Ho·Wo)`` extra work, 1.27x at 16x16 with padding 1).
* Other strides ("copy" mode): the window of each tap used is copied once per call.

Backward: ``dX`` by the transposed scheme (the same tiles, ``dY_tile @ W_tile`` into the shifted
input rows), ``dW`` only for kept tiles, multiplied by the mask. fp32 / fp64 (callers upcast half types).
Measured against mkldnn's dense conv (256->256 at 16x16, batch 32, 2 threads, 32x32 tiles): 8.4x at 5%
tile density, 2.4x at 10%, 1.05x at 25% (see ``benchmarks/conv_crossover.py`` for the table).
"""

from __future__ import annotations

import dataclasses

import torch

from .conv_layout import ConvGeometry, from_gemm_view, gemm_view

__all__ = ["TapConvPlan", "tap_occupancy", "tile_runs"]


def tap_occupancy(mask: torch.Tensor, block: int) -> torch.Tensor:
    """Which tap-major tiles of a conv mask hold a kept entry.

    Args:
        mask: ``(O, C, kh, kw)`` mask (nonzero = kept).
        block: tile side ``b`` (output and input channels; the last tile of each is partial).

    Returns:
        Bool ``(ceil(O / b), kh·kw, ceil(C / b))``: tile (output block, tap, input block).

    Examples:
        >>> m = torch.zeros(64, 32, 3, 3); m[40, 5, 1, 2] = 1
        >>> occ = tap_occupancy(m, 32)
        >>> occ.shape, occ.nonzero().tolist()
        (torch.Size([2, 9, 1]), [[1, 5, 0]])
    """
    o, c, kh, kw = mask.shape
    keep = (mask != 0).permute(0, 2, 3, 1).reshape(o, kh * kw, c)
    keep = torch.nn.functional.pad(keep, (0, -c % block, 0, 0, 0, -o % block))
    return keep.reshape(-(-o // block), block, kh * kw, -(-c // block), block).any(dim=4).any(dim=1)


def tile_runs(occupancy: torch.Tensor, block: int, out_channels: int, in_channels: int) -> list[tuple[int, ...]]:
    """Kept tiles merged into rectangles, one GEMM each: ``(tap, o0, o1, c0, c1)``.

    Per tap and input block, consecutive kept output blocks form a run; runs with the same output
    range in consecutive input blocks are merged.

    Args:
        occupancy: from :func:`tap_occupancy`.
        block: tile side.
        out_channels: ``O`` (clips the last output block).
        in_channels: ``C`` (clips the last input block).

    Returns:
        Rectangles in tap order; ``o0:o1`` output channels, ``c0:c1`` input channels.

    Examples:
        >>> occ = torch.zeros(2, 1, 2, dtype=torch.bool); occ[:, 0, :] = True   # one tap, all tiles
        >>> tile_runs(occ, 32, 64, 40)
        [(0, 0, 64, 0, 40)]
    """
    runs = []
    occ = occupancy.cpu()
    for tap in range(occ.shape[1]):
        open_runs: dict[tuple[int, int], list[int]] = {}
        for j in range(occ.shape[2]):
            column = occ[:, tap, j].tolist()
            current: dict[tuple[int, int], list[int]] = {}
            i = 0
            while i < len(column):
                if not column[i]:
                    i += 1
                    continue
                start = i
                while i < len(column) and column[i]:
                    i += 1
                key = (start * block, min(i * block, out_channels))
                run = open_runs.pop(key, None)
                if run is None:
                    run = [tap, key[0], key[1], j * block, 0]
                    runs.append(run)
                run[4] = min((j + 1) * block, in_channels)
                current[key] = run
            open_runs = current
    return [tuple(r) for r in runs]


class _Taps:
    """Where each tap's input window lies for one input shape (shift mode for stride 1, else copy mode)."""

    def __init__(self, geometry: ConvGeometry, input_shape: torch.Size) -> None:
        b, self.c, h, w = input_shape
        (ph, pw), (dh, dw) = geometry.padding, geometry.dilation
        self.kw = geometry.kernel_size[1]
        self.batch, self.size, self.pad = b, (h, w), (ph, pw)
        self.padded = (h + 2 * ph, w + 2 * pw)
        self.out = geometry.output_size(h, w)
        self.stride, self.dilation = geometry.stride, (dh, dw)
        self.shift = geometry.stride == (1, 1)
        hp, wp = self.padded
        if self.shift:
            self.grid = self.padded
            offsets = [r * dh * wp + s * dw for r in range(geometry.kernel_size[0]) for s in range(self.kw)]
            self.offsets = offsets
            self.rows = b * hp * wp - max(offsets)
        else:
            self.grid = self.out
            self.rows = b * self.out[0] * self.out[1]

    def pad_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as a zero-padded NHWC tensor (only the border is zeroed: the interior is overwritten)."""
        hp, wp = self.padded
        (h, w), (ph, pw) = self.size, self.pad
        xp = x.new_empty(self.batch, hp, wp, self.c)
        xp[:, :ph].zero_()
        xp[:, ph + h:].zero_()
        xp[:, ph:ph + h, :pw].zero_()
        xp[:, ph:ph + h, pw + w:].zero_()
        xp[:, ph:ph + h, pw:pw + w] = x.permute(0, 2, 3, 1)
        return xp

    def window(self, padded: torch.Tensor, tap: int) -> torch.Tensor:
        """The strided ``(B, Ho, Wo, C)`` view of a padded NHWC tensor read by ``tap`` (copy mode)."""
        r, s = divmod(tap, self.kw)
        (ho, wo), (sh, sw), (dh, dw) = self.out, self.stride, self.dilation
        return padded[:, r * dh: r * dh + (ho - 1) * sh + 1: sh, s * dw: s * dw + (wo - 1) * sw + 1: sw]

    def source(self, padded: torch.Tensor, tap: int) -> torch.Tensor:
        """The ``(rows, C)`` input matrix of ``tap``."""
        if self.shift:
            off = self.offsets[tap]
            return padded.view(-1, self.c)[off:off + self.rows]
        return self.window(padded, tap).reshape(self.rows, self.c)

    def new_output(self, channels: int, like: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        grid_rows = self.batch * self.grid[0] * self.grid[1]
        if bias is None:
            return like.new_zeros(grid_rows, channels)
        return bias.detach().to(like.dtype).expand(grid_rows, channels).contiguous()

    def to_nchw(self, out: torch.Tensor) -> torch.Tensor:
        """Valid outputs of a grid matrix as an NCHW tensor in channels-last memory format."""
        ho, wo = self.out
        grid = out.view(self.batch, self.grid[0], self.grid[1], out.shape[1])[:, :ho, :wo]
        return grid.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)

    def grad_grid(self, g: torch.Tensor) -> torch.Tensor:
        """``dY`` as a grid matrix, zero at the grid rows that are not outputs."""
        ho, wo = self.out
        out = g.new_zeros(self.batch, self.grid[0], self.grid[1], g.shape[1])
        out[:, :ho, :wo] = g.permute(0, 2, 3, 1)
        return out.view(-1, g.shape[1])

    def input_grad(self, padded_grad: torch.Tensor) -> torch.Tensor:
        (h, w), (ph, pw) = self.size, self.pad
        return padded_grad[:, ph:ph + h, pw:pw + w].permute(0, 3, 1, 2)


@dataclasses.dataclass
class TapConvPlan:
    """Kept tap-major tiles of one conv layer and the GEMMs that compute it on CPU.

    Examples:
        >>> conv = torch.nn.Conv2d(8, 8, 3, padding=1)
        >>> m = torch.zeros(8, 8, 3, 3); m[:, :, 1, 1] = 1       # only the centre tap kept
        >>> plan = TapConvPlan.build(m, ConvGeometry.of(conv), 4)
        >>> x = torch.randn(2, 8, 5, 5)
        >>> ref = torch.nn.functional.conv2d(x, conv.weight * m, conv.bias, padding=1)
        >>> len(plan.runs), torch.allclose(plan.forward(x, conv.weight, conv.bias), ref, atol=1e-5)
        (1, True)
    """

    geometry: ConvGeometry
    block: int
    shape: tuple[int, int, int, int]
    mask_gemm: torch.Tensor
    runs: list[tuple[int, ...]]
    tile_density: float
    _cache_key: tuple | None = None
    _cache: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def build(cls, mask: torch.Tensor, geometry: ConvGeometry, block: int = 32) -> TapConvPlan:
        """Tiles and GEMM runs of a ``(O, C, kh, kw)`` mask.

        Args:
            mask: the element mask.
            geometry: the layer's :class:`ConvGeometry`.
            block: tile side.

        Returns:
            The plan.
        """
        occ = tap_occupancy(mask, block)
        o, c = mask.shape[:2]
        runs = tile_runs(occ, block, o, c)
        density = float(occ.float().mean()) if occ.numel() else 0.0
        return cls(geometry, block, tuple(mask.shape), gemm_view((mask != 0).float()), runs, density)

    def matrices(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked tap-major ``W`` ``(O, T·C)`` and its transpose (contiguous), cached while the weight is unchanged.

        Args:
            weight: ``(O, C, kh, kw)`` weight.

        Returns:
            ``(Wg, WgT)``.
        """
        key = (weight.data_ptr(), weight._version, weight.dtype)
        if self._cache_key != key or self._cache is None:
            wg = gemm_view(weight.detach()) * self.mask_gemm.to(weight.dtype)
            self._cache, self._cache_key = (wg, wg.t().contiguous()), key
        return self._cache

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``conv2d(x, W * M, b)`` (NCHW output in channels-last memory format).

        Args:
            x: ``(B, C, H, W)`` input, any memory format.
            weight: ``(O, C, kh, kw)``.
            bias: ``(O,)`` or None.

        Returns:
            ``(B, O, Ho, Wo)``.
        """
        taps = _Taps(self.geometry, x.shape)
        xp = taps.pad_input(x.detach())
        _, wgt = self.matrices(weight)
        out = taps.new_output(self.shape[0], xp, bias)
        rows, c = taps.rows, self.shape[1]
        sources: dict[int, torch.Tensor] = {}
        for tap, o0, o1, c0, c1 in self.runs:
            if tap not in sources:
                sources = {tap: taps.source(xp, tap)}
            k0 = tap * c
            out[:rows, o0:o1].addmm_(sources[tap][:, c0:c1], wgt[k0 + c0:k0 + c1, o0:o1])
        return taps.to_nchw(out)

    def backward(
        self, g: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, need_input: bool, need_weight: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``dX`` (transposed tiles) and the masked ``dW`` (kept tiles only).

        Args:
            g: ``(B, O, Ho, Wo)`` output gradient.
            x: the forward input.
            weight: the forward weight.
            need_input: compute ``dX``.
            need_weight: compute ``dW``.

        Returns:
            ``(dX or None, dW or None)``; ``dW`` is zero where the mask is.
        """
        taps = _Taps(self.geometry, x.shape)
        gy = taps.grad_grid(g.to(x.dtype))
        wg, _ = self.matrices(weight)
        rows, c = taps.rows, self.shape[1]
        xp = taps.pad_input(x.detach()) if need_weight else None
        dxp = x.new_zeros(taps.batch, *taps.padded, c) if need_input else None
        dwg = torch.zeros_like(wg) if need_weight else None
        tap_grad, sources, current = None, {}, -1
        for tap, o0, o1, c0, c1 in self.runs:
            if tap != current:
                tap_grad = self._flush(taps, dxp, tap_grad, current)
                current = tap
                sources = {tap: taps.source(xp, tap)} if xp is not None else {}
            k0 = tap * c
            if need_input:
                if tap_grad is None:
                    tap_grad = dxp.view(-1, c)[taps.offsets[tap]:][:rows] if taps.shift else x.new_zeros(rows, c)
                tap_grad[:, c0:c1].addmm_(gy[:rows, o0:o1], wg[o0:o1, k0 + c0:k0 + c1])
            if need_weight:
                dwg[o0:o1, k0 + c0:k0 + c1].addmm_(gy[:rows, o0:o1].t(), sources[tap][:, c0:c1])
        self._flush(taps, dxp, tap_grad, current)
        dx = taps.input_grad(dxp) if need_input else None
        dw = from_gemm_view(dwg * self.mask_gemm.to(dwg.dtype), self.shape) if need_weight else None
        return dx, dw

    @staticmethod
    def _flush(taps: _Taps, dxp: torch.Tensor | None, tap_grad: torch.Tensor | None, tap: int) -> None:
        """Add a copy-mode tap's input gradient into its window of the padded ``dX`` (shift mode wrote in place)."""
        if tap_grad is not None and not taps.shift:
            taps.window(dxp, tap).add_(tap_grad.view(taps.batch, taps.out[0], taps.out[1], -1))
        return None
