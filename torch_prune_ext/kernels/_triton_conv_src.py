"""Triton source of the block-sparse implicit-GEMM convolution kernels (imported lazily by :mod:`.triton_conv`).

The convolution is the GEMM ``Y (P, O) = X_col (P, K) · (W * M)ᵀ`` over the tap-major view of
:mod:`.conv_layout` (``K = kh·kw·C``, column ``k = (r·kw + s)·C + c``), where ``P = N·H_out·W_out``
output positions are the ``tl.dot`` M dimension. ``X_col`` is never built: each tile of it is gathered
from the channels-last input (:func:`_im2col_tile`), so a block whose ``b_k`` divides ``C`` reads
``b_k`` contiguous channels per position. Importing this module imports triton (see
:mod:`._triton_src` for ``TRITON_INTERPRET``).
"""

from __future__ import annotations

from ._triton_src import INTERPRETED, KERNELS_DEFINED, _configs

if KERNELS_DEFINED:
    from ._triton_src import stored_block_offsets
    import triton
    import triton.language as tl

    @triton.jit
    def _im2col_tile(
        x_ptr, offs_p, offs_k, P, K, C, H, W, HW_OUT, W_OUT,
        KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
        DH: tl.constexpr, DW: tl.constexpr,
    ):
        """The ``(len(offs_p), len(offs_k))`` tile of ``X_col`` read from the NHWC input (zeros outside)."""
        n = offs_p // HW_OUT
        rem = offs_p % HW_OUT
        h0 = (rem // W_OUT) * SH - PH
        w0 = (rem % W_OUT) * SW - PW
        tap = offs_k // C
        c = offs_k % C
        h = h0[:, None] + (tap // KW)[None, :] * DH
        w = w0[:, None] + (tap % KW)[None, :] * DW
        ok = (offs_p < P)[:, None] & (offs_k < K)[None, :] & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        row = (n.to(tl.int64)[:, None] * H + h) * W + w
        return tl.load(x_ptr + row * C + c[None, :], mask=ok, other=0.0)

    @triton.autotune(configs=_configs(), key=["P", "O", "K", "BN", "BK"])
    @triton.jit
    def conv_forward_kernel(
        x_ptr, values_ptr, row_ptr_ptr, col_idx_ptr, bias_ptr, y_ptr,
        P, O, K, C, H, W, HW_OUT, W_OUT,
        KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
        DH: tl.constexpr, DW: tl.constexpr,
        HAS_BIAS: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr,
    ):
        """y[p_tile, o_block] = sum over the stored blocks of the row: X_col[p_tile, k_block] @ values[q]ᵀ (+ b)."""
        pid_p = tl.program_id(0)
        rb = tl.program_id(1)
        offs_p = pid_p * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_o = rb * BN + tl.arange(0, BN)
        offs_bk = tl.arange(0, BK)
        acc = tl.zeros((BLOCK_M, BN), dtype=tl.float32)
        start = tl.load(row_ptr_ptr + rb)
        end = tl.load(row_ptr_ptr + rb + 1)
        for q in range(start, end):
            cb = tl.load(col_idx_ptr + q)
            xt = _im2col_tile(x_ptr, offs_p, cb * BK + offs_bk, P, K, C, H, W, HW_OUT, W_OUT,
                              KW, SH, SW, PH, PW, DH, DW)
            w = tl.load(values_ptr + q * BN * BK + tl.arange(0, BN)[:, None] * BK + offs_bk[None, :])
            acc += tl.dot(xt, tl.trans(w), input_precision=PRECISION)
        if HAS_BIAS:
            b = tl.load(bias_ptr + offs_o, mask=offs_o < O, other=0.0)
            acc += b.to(tl.float32)[None, :]
        tl.store(y_ptr + offs_p.to(tl.int64)[:, None] * O + offs_o[None, :], acc.to(y_ptr.dtype.element_ty),
                 mask=(offs_p < P)[:, None] & (offs_o[None, :] < O))

    @triton.autotune(configs=_configs(), key=["P", "O", "K", "BN", "BK"])
    @triton.jit
    def conv_grad_weight_kernel(
        g_ptr, x_ptr, row_idx_ptr, col_idx_ptr, partial_ptr,
        P, O, K, C, H, W, HW_OUT, W_OUT, ROWS_PER_SPLIT,
        KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
        DH: tl.constexpr, DW: tl.constexpr,
        BN: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
    ):
        """partial[split, q] = G[rows of split, o_block]ᵀ @ X_col[rows of split, k_block] (fp32), stored blocks only."""
        q = tl.program_id(0)
        split = tl.program_id(1)
        offs_o, offs_k = stored_block_offsets(row_idx_ptr, col_idx_ptr, q, BN, BK)
        acc = tl.zeros((BN, BK), dtype=tl.float32)
        first = split * ROWS_PER_SPLIT
        for p0 in range(first, tl.minimum(first + ROWS_PER_SPLIT, P), BLOCK_M):
            offs_p = p0 + tl.arange(0, BLOCK_M)
            g = tl.load(g_ptr + offs_p.to(tl.int64)[:, None] * O + offs_o[None, :],
                        mask=(offs_p < P)[:, None] & (offs_o[None, :] < O), other=0.0)
            xt = _im2col_tile(x_ptr, offs_p, offs_k, P, K, C, H, W, HW_OUT, W_OUT, KW, SH, SW, PH, PW, DH, DW)
            acc += tl.dot(tl.trans(g), xt, input_precision=PRECISION)
        nnzb = tl.num_programs(0)
        blk = (split * nnzb + q).to(tl.int64) * BN * BK + tl.arange(0, BN)[:, None] * BK + tl.arange(0, BK)[None, :]
        tl.store(partial_ptr + blk, acc)


__all__ = ["INTERPRETED", "KERNELS_DEFINED"]
