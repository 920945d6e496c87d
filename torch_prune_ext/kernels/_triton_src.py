"""Triton source of the block-sparse masked-linear kernels (imported lazily by :mod:`.triton_kernels`).

Importing this module imports triton. ``TRITON_INTERPRET=1`` must be set before that to run the
kernels on CPU tensors (tests do it in ``tests/conftest.py``). Without triton the module defines
nothing (``KERNELS_DEFINED`` is False). Every ``tl.dot`` takes its ``input_precision`` from the
``PRECISION`` constexpr that the launcher picks (``triton_kernels.dot_precision``): ``"ieee"`` for fp32
unless TF32 was asked for.
"""

from __future__ import annotations

import os

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the environment
    triton = None
    tl = None

KERNELS_DEFINED = triton is not None
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _configs() -> list:
    # The interpreter runs every autotune config for real (slow, and its timings mean nothing): one config there.
    if INTERPRETED:
        return [triton.Config({"BLOCK_M": 32}, num_warps=4)]
    return [
        triton.Config({"BLOCK_M": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 128}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 128}, num_warps=8, num_stages=4),
        triton.Config({"BLOCK_M": 32}, num_warps=4, num_stages=2),
    ]


if KERNELS_DEFINED:

    @triton.jit
    def stored_block_offsets(row_idx_ptr, col_idx_ptr, q, BN: tl.constexpr, BK: tl.constexpr):
        """Row offsets ``(BN,)`` and column offsets ``(BK,)`` in the weight matrix of the q-th stored block."""
        rb = tl.load(row_idx_ptr + q)
        cb = tl.load(col_idx_ptr + q)
        return rb * BN + tl.arange(0, BN), cb * BK + tl.arange(0, BK)

    @triton.autotune(configs=_configs(), key=["M", "N", "K", "BN", "BK"])
    @triton.jit
    def bsr_forward_kernel(
        x_ptr, values_ptr, row_ptr_ptr, col_idx_ptr, bias_ptr, y_ptr,
        M, N, K, stride_xm, stride_ym,
        HAS_BIAS: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
    ):
        """y[m_tile, n_block] = sum over stored blocks of the row: x[m_tile, k_block] @ values[p]^T (+ b)."""
        pid_m = tl.program_id(0)
        rb = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = rb * BN + tl.arange(0, BN)
        offs_bk = tl.arange(0, BK)
        m_ok = offs_m < M
        acc = tl.zeros((BLOCK_M, BN), dtype=tl.float32)
        start = tl.load(row_ptr_ptr + rb)
        end = tl.load(row_ptr_ptr + rb + 1)
        for p in range(start, end):
            cb = tl.load(col_idx_ptr + p)
            offs_k = cb * BK + offs_bk
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :],
                        mask=m_ok[:, None] & (offs_k[None, :] < K), other=0.0)
            w = tl.load(values_ptr + p * BN * BK + tl.arange(0, BN)[:, None] * BK + offs_bk[None, :])
            acc += tl.dot(x, tl.trans(w), input_precision=PRECISION)
        if HAS_BIAS:
            b = tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0)
            acc += b.to(tl.float32)[None, :]
        tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :], acc.to(y_ptr.dtype.element_ty),
                 mask=m_ok[:, None] & (offs_n[None, :] < N))

    @triton.autotune(configs=_configs(), key=["M", "N", "K", "BN", "BK"])
    @triton.jit
    def bsr_grad_input_kernel(
        g_ptr, values_ptr, col_ptr_ptr, col_row_idx_ptr, col_perm_ptr, dx_ptr,
        M, N, K, stride_gm, stride_dxm,
        BN: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
    ):
        """dx[m_tile, k_block] = sum over stored blocks of the column: g[m_tile, n_block] @ values[p]."""
        pid_m = tl.program_id(0)
        cb = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_k = cb * BK + tl.arange(0, BK)
        offs_bn = tl.arange(0, BN)
        m_ok = offs_m < M
        acc = tl.zeros((BLOCK_M, BK), dtype=tl.float32)
        start = tl.load(col_ptr_ptr + cb)
        end = tl.load(col_ptr_ptr + cb + 1)
        for q in range(start, end):
            rb = tl.load(col_row_idx_ptr + q)
            p = tl.load(col_perm_ptr + q)
            offs_n = rb * BN + offs_bn
            g = tl.load(g_ptr + offs_m[:, None] * stride_gm + offs_n[None, :],
                        mask=m_ok[:, None] & (offs_n[None, :] < N), other=0.0)
            w = tl.load(values_ptr + p * BN * BK + offs_bn[:, None] * BK + tl.arange(0, BK)[None, :])
            acc += tl.dot(g, w, input_precision=PRECISION)
        tl.store(dx_ptr + offs_m[:, None] * stride_dxm + offs_k[None, :], acc.to(dx_ptr.dtype.element_ty),
                 mask=m_ok[:, None] & (offs_k[None, :] < K))

    @triton.autotune(configs=_configs(), key=["M", "N", "K", "BN", "BK"])
    @triton.jit
    def bsr_grad_weight_kernel(
        g_ptr, x_ptr, row_idx_ptr, col_idx_ptr, mask_values_ptr, dw_ptr,
        M, N, K, stride_gm, stride_xm,
        BN: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
    ):
        """dvalues[p] = (g[:, n_block]^T @ x[:, k_block]) * mask_block, only for stored blocks."""
        p = tl.program_id(0)
        offs_n, offs_k = stored_block_offsets(row_idx_ptr, col_idx_ptr, p, BN, BK)
        acc = tl.zeros((BN, BK), dtype=tl.float32)
        for m0 in range(0, M, BLOCK_M):
            offs_m = m0 + tl.arange(0, BLOCK_M)
            m_ok = offs_m < M
            g = tl.load(g_ptr + offs_m[:, None] * stride_gm + offs_n[None, :],
                        mask=m_ok[:, None] & (offs_n[None, :] < N), other=0.0)
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :],
                        mask=m_ok[:, None] & (offs_k[None, :] < K), other=0.0)
            acc += tl.dot(tl.trans(g), x, input_precision=PRECISION)
        blk = p * BN * BK + tl.arange(0, BN)[:, None] * BK + tl.arange(0, BK)[None, :]
        mvals = tl.load(mask_values_ptr + blk)
        acc = acc * mvals.to(tl.float32)
        tl.store(dw_ptr + blk, acc.to(dw_ptr.dtype.element_ty))
