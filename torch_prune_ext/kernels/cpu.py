"""CPU sparse path: MKL CSR (unstructured masks) and BSR (block masks), fp32.

Computed as ``torch.addmm(bias, W_sparse, x^T)`` then transposed: ``F.linear(x, W_sparse)`` is 3-10x
slower. Backward: ``dX = (W^T_sparse @ dY^T)^T`` with a cached sparse ``W^T`` built explicitly (a
transposed BSR is a BSC tensor, which CPU ``addmm`` does not take), and ``dW`` with
``torch.sparse.sampled_addmm`` on the CSR of the element mask (CPU supports it for CSR only, not BSR).

What torch 2.13 CPU supports (checked): CSR and square-block BSR ``addmm`` in fp32/fp64 only (no
fp16/bf16: callers upcast); no non-square BSR blocks (``(64, 32)`` masks use 32x32 BSR, a 64x32 block
mask is also a 32x32 block mask); no BSC ``addmm``.
"""

from __future__ import annotations

import dataclasses
import warnings

import torch

from .format import BlockSparseWeight

__all__ = ["CpuSparsePlan"]


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, message=r"(?s).*[Ss]parse")
        return fn(*args, **kwargs)


@dataclasses.dataclass
class CpuSparsePlan:
    """Fixed sparsity structure of one layer for the CPU path, with cached sparse ``W`` and ``W^T``.

    Build with :meth:`build`; :meth:`matrices` returns the sparse ``W`` and ``W^T`` for the current
    weight (recomputed only when the weight changed).

    Examples:
        >>> w = torch.randn(32, 32); m = (torch.rand(32, 32) > 0.8).float()
        >>> plan = CpuSparsePlan.build(m, "csr")
        >>> ws, _ = plan.matrices(w)
        >>> torch.allclose(ws.to_dense(), w * m)
        True
    """

    layout: str
    shape: tuple[int, int]
    mask_csr: torch.Tensor
    mask_flat: torch.Tensor
    w_crow: torch.Tensor | None = None
    w_col: torch.Tensor | None = None
    w_flat: torch.Tensor | None = None
    t_crow: torch.Tensor | None = None
    t_col: torch.Tensor | None = None
    t_flat: torch.Tensor | None = None
    bsw: BlockSparseWeight | None = None
    _cache_key: tuple | None = None
    _cache: tuple | None = None

    @classmethod
    def build(cls, mask: torch.Tensor, layout: str, block_size: int | tuple[int, int] = 32) -> CpuSparsePlan:
        """Index structures for ``layout`` ``"csr"`` or ``"bsr"`` (square blocks).

        Args:
            mask: ``(N, K)`` mask.
            layout: ``"csr"`` or ``"bsr"``.
            block_size: BSR block (``(64, 32)`` is treated as 32).

        Returns:
            The plan.
        """
        keep = mask != 0
        n, k = keep.shape
        mask_csr = _quiet(keep.float().to_sparse_csr)
        rows = torch.repeat_interleave(torch.arange(n), mask_csr.crow_indices().diff())
        mask_flat = rows * k + mask_csr.col_indices()
        plan = cls(layout=layout, shape=(n, k), mask_csr=mask_csr, mask_flat=mask_flat)
        if layout == "csr":
            plan.w_crow, plan.w_col, plan.w_flat = mask_csr.crow_indices(), mask_csr.col_indices(), mask_flat
            t = _quiet(keep.t().float().to_sparse_csr)
            trows = torch.repeat_interleave(torch.arange(k), t.crow_indices().diff())
            plan.t_crow, plan.t_col, plan.t_flat = t.crow_indices(), t.col_indices(), t.col_indices() * k + trows
        else:
            b = block_size if isinstance(block_size, int) else min(block_size)
            plan.bsw = BlockSparseWeight.from_dense(torch.zeros(n, k), keep, b)
        return plan

    def matrices(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse ``W * M`` and ``(W * M)^T`` for ``weight`` (cached while the weight is unchanged).

        Args:
            weight: ``(N, K)`` fp32 dense weight.

        Returns:
            ``(W_sparse, WT_sparse)``.
        """
        key = (weight.data_ptr(), weight._version, weight.dtype)
        if self._cache_key == key and self._cache is not None:
            return self._cache
        w = weight.detach()
        if self.layout == "csr":
            flat = w.reshape(-1)
            ws = _quiet(torch.sparse_csr_tensor, self.w_crow, self.w_col, flat[self.w_flat], self.shape)
            wt = _quiet(torch.sparse_csr_tensor, self.t_crow, self.t_col, flat[self.t_flat], self.shape[::-1])
        else:
            bsw = self.bsw
            vals = bsw.gather(w)
            ws = _quiet(torch.sparse_bsr_tensor, bsw.row_ptr, bsw.col_idx, vals, self.shape)
            tvals = vals[bsw.col_perm.long()].transpose(1, 2).contiguous()
            wt = _quiet(torch.sparse_bsr_tensor, bsw.col_ptr, bsw.col_row_idx, tvals, self.shape[::-1])
        self._cache_key, self._cache = key, (ws, wt)
        return ws, wt

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``x (W * M)^T + b`` for 2-D fp32 ``x``.

        Args:
            x: ``(M, K)`` input.
            weight: ``(N, K)`` weight.
            bias: ``(N,)`` or None.

        Returns:
            ``(M, N)`` output (a transposed view).
        """
        ws, _ = self.matrices(weight)
        xt = x.t()
        if bias is None:
            return _quiet(torch.mm, ws, xt).t()
        return _quiet(torch.addmm, bias.detach().unsqueeze(1), ws, xt).t()

    def grad_input(self, g: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``dY (W * M)`` through the cached sparse transpose.

        Args:
            g: ``(M, N)`` output gradient.
            weight: ``(N, K)`` weight.

        Returns:
            ``(M, K)``.
        """
        _, wt = self.matrices(weight)
        return _quiet(torch.mm, wt, g.t()).t()

    def grad_weight(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``(dY^T X) * M`` via ``torch.sparse.sampled_addmm`` on the mask's CSR.

        Args:
            g: ``(M, N)`` output gradient.
            x: ``(M, K)`` input.

        Returns:
            Dense ``(N, K)`` gradient, zero where masked.
        """
        n, k = self.shape
        if self.mask_flat.numel() == 0:
            return torch.zeros(n, k, dtype=x.dtype)
        s = _quiet(torch.sparse.sampled_addmm, self.mask_csr, g.t().contiguous(), x.contiguous(), beta=0.0)
        out = torch.zeros(n * k, dtype=x.dtype)
        out[self.mask_flat] = s.values()
        return out.view(n, k)
