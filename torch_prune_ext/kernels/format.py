"""Block-compressed weights: only the kept ``b_n x b_k`` blocks of ``W * M`` are stored.

The format (:class:`BlockSparseWeight`) is built on the weight's device from a dense weight and a mask
and holds:

* ``values`` ``(nnzb, b_n, b_k)``: the kept blocks of ``W * M`` in row-major block order (zeros inside
  kept blocks are allowed: they are simply stored);
* a row-ordered index for the forward pass: ``row_ptr`` ``(N_b + 1,)`` and ``col_idx`` ``(nnzb,)``
  (CSR over blocks), plus ``row_idx`` (the block row of every stored block, used by dW);
* a column-ordered index for the input gradient, pointing into the SAME ``values``: ``col_ptr``
  ``(K_b + 1,)``, ``col_row_idx`` (block row of the q-th block in column order) and ``col_perm``
  (position in ``values`` of the q-th block in column order);
* ``mask_values`` ``(nnzb, b_n, b_k)``: the element mask inside kept blocks (dW is masked with it).

Shapes that are not multiples of the block are padded with zeros up to one (``padded_shape``).
"""

from __future__ import annotations

import dataclasses

import torch

from ..errors import InvalidOptionError

__all__ = ["BLOCK_SIZES", "BlockSparseWeight", "block_occupancy", "normalise_block_size"]

#: Block shapes ``(b_n, b_k)`` supported by the kernels.
BLOCK_SIZES: tuple[tuple[int, int], ...] = ((16, 16), (32, 32), (64, 64), (64, 32))


def normalise_block_size(block_size: int | tuple[int, int]) -> tuple[int, int]:
    """Turn ``32`` or ``(64, 32)`` into a supported ``(b_n, b_k)`` pair.

    Args:
        block_size: an int (square block) or a ``(b_n, b_k)`` pair.

    Returns:
        The ``(b_n, b_k)`` pair.

    Raises:
        InvalidOptionError: the block shape is not one of :data:`BLOCK_SIZES`.

    Examples:
        >>> normalise_block_size(32), normalise_block_size((64, 32))
        ((32, 32), (64, 32))
    """
    pair = (block_size, block_size) if isinstance(block_size, int) else tuple(int(b) for b in block_size)
    if pair not in BLOCK_SIZES:
        raise InvalidOptionError(
            f"block_size={block_size!r} is not supported; use one of 16, 32, 64 or (64, 32)."
        )
    return pair  # type: ignore[return-value]


def _pad_to(t: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    if t.shape == (rows, cols):
        return t
    return torch.nn.functional.pad(t, (0, cols - t.shape[1], 0, rows - t.shape[0]))


def block_occupancy(mask: torch.Tensor, block_size: int | tuple[int, int]) -> torch.Tensor:
    """Which ``b_n x b_k`` blocks of a 2-D mask contain at least one kept entry.

    Args:
        mask: ``(N, K)`` mask (nonzero = kept); padded with zeros up to a multiple of the block.
        block_size: block shape (see :func:`normalise_block_size`).

    Returns:
        A bool tensor ``(ceil(N / b_n), ceil(K / b_k))``.

    Examples:
        >>> m = torch.zeros(32, 32); m[0, 20] = 1
        >>> block_occupancy(m, 16).tolist()
        [[False, True], [False, False]]
    """
    bn, bk = normalise_block_size(block_size)
    n, k = mask.shape
    nb, kb = -(-n // bn), -(-k // bk)
    padded = _pad_to(mask != 0, nb * bn, kb * bk)
    return padded.view(nb, bn, kb, bk).any(dim=3).any(dim=1)


@dataclasses.dataclass
class BlockSparseWeight:
    """Kept blocks of ``weight * mask`` with a row-ordered and a column-ordered block index.

    Build it with :meth:`from_dense`; see the module docstring for the fields.

    Examples:
        >>> w = torch.arange(64.0).view(8, 8).repeat(4, 4)  # 32 x 32
        >>> m = torch.zeros(32, 32); m[:16, 16:] = 1; m[0, 16] = 0
        >>> bsw = BlockSparseWeight.from_dense(w, m, 16)
        >>> bsw.nnzb, bsw.values.shape, bsw.row_ptr.tolist(), bsw.col_idx.tolist()
        (1, torch.Size([1, 16, 16]), [0, 1, 1], [1])
        >>> torch.equal(bsw.to_dense(), w * m)
        True
    """

    values: torch.Tensor
    mask_values: torch.Tensor
    row_ptr: torch.Tensor
    col_idx: torch.Tensor
    row_idx: torch.Tensor
    col_ptr: torch.Tensor
    col_row_idx: torch.Tensor
    col_perm: torch.Tensor
    shape: tuple[int, int]
    block_size: tuple[int, int]

    @property
    def nnzb(self) -> int:
        """Number of stored blocks."""
        return int(self.values.shape[0])

    @property
    def grid(self) -> tuple[int, int]:
        """Number of block rows and block columns ``(N_b, K_b)``."""
        return self.row_ptr.numel() - 1, self.col_ptr.numel() - 1

    @property
    def padded_shape(self) -> tuple[int, int]:
        """``(N_b * b_n, K_b * b_k)``."""
        nb, kb = self.grid
        return nb * self.block_size[0], kb * self.block_size[1]

    @property
    def block_density(self) -> float:
        """Fraction of blocks stored."""
        nb, kb = self.grid
        return self.nnzb / max(nb * kb, 1)

    @classmethod
    def from_dense(
        cls, weight: torch.Tensor, mask: torch.Tensor | None = None, block_size: int | tuple[int, int] = 32
    ) -> BlockSparseWeight:
        """Compress ``weight * mask`` on the weight's device.

        Args:
            weight: ``(N, K)`` dense weight.
            mask: ``(N, K)`` mask (nonzero = kept); ``None`` keeps the nonzero entries of ``weight``.
            block_size: 16, 32, 64 or ``(64, 32)``.

        Returns:
            The compressed weight (a block is stored when its mask has any kept entry).

        Raises:
            InvalidOptionError: ``weight`` is not 2-D or ``mask`` has another shape.
        """
        bn, bk = normalise_block_size(block_size)
        if weight.dim() != 2:
            raise InvalidOptionError(f"weight must be 2-D (N, K), got shape {tuple(weight.shape)}; flatten it first.")
        if mask is None:
            mask = weight != 0
        if mask.shape != weight.shape:
            raise InvalidOptionError(
                f"mask shape {tuple(mask.shape)} differs from weight shape {tuple(weight.shape)}; pass the layer's weight_mask."
            )
        n, k = weight.shape
        occ = block_occupancy(mask, (bn, bk))
        nb, kb = occ.shape
        rb, cb = occ.nonzero(as_tuple=True)  # row-major order
        wb = _pad_to(weight.detach(), nb * bn, kb * bk).view(nb, bn, kb, bk).permute(0, 2, 1, 3)
        mb = _pad_to((mask != 0).to(weight.dtype), nb * bn, kb * bk).view(nb, bn, kb, bk).permute(0, 2, 1, 3)
        mask_values = mb[rb, cb].contiguous()
        values = (wb[rb, cb] * mask_values).contiguous()
        idx = torch.int32
        row_ptr = torch.zeros(nb + 1, dtype=torch.int64, device=weight.device)
        row_ptr[1:] = torch.cumsum(occ.sum(dim=1), 0)
        col_ptr = torch.zeros(kb + 1, dtype=torch.int64, device=weight.device)
        col_ptr[1:] = torch.cumsum(occ.sum(dim=0), 0)
        col_perm = torch.argsort(cb * nb + rb, stable=True)
        return cls(
            values=values,
            mask_values=mask_values,
            row_ptr=row_ptr.to(idx),
            col_idx=cb.to(idx),
            row_idx=rb.to(idx),
            col_ptr=col_ptr.to(idx),
            col_row_idx=rb[col_perm].to(idx),
            col_perm=col_perm.to(idx),
            shape=(n, k),
            block_size=(bn, bk),
        )

    def gather(self, weight: torch.Tensor) -> torch.Tensor:
        """Kept blocks of ``weight * mask`` for a weight with the same pattern (differentiable).

        Args:
            weight: ``(N, K)`` dense weight (e.g. the trained parameter).

        Returns:
            ``(nnzb, b_n, b_k)`` values in the order of :attr:`values`.
        """
        nb, kb = self.grid
        bn, bk = self.block_size
        wb = _pad_to(weight, nb * bn, kb * bk).view(nb, bn, kb, bk).permute(0, 2, 1, 3)
        rb, cb = self.row_idx.long(), self.col_idx.long()
        return wb[rb, cb] * self.mask_values.to(weight.dtype)

    def scatter(self, blocks: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`gather`: a dense ``(N, K)`` tensor holding ``blocks`` and zeros elsewhere.

        Args:
            blocks: ``(nnzb, b_n, b_k)`` tensor in the order of :attr:`values`.

        Returns:
            Dense ``(N, K)`` tensor.
        """
        nb, kb = self.grid
        bn, bk = self.block_size
        out = torch.zeros(nb, kb, bn, bk, dtype=blocks.dtype, device=blocks.device)
        out[self.row_idx.long(), self.col_idx.long()] = blocks
        n, k = self.shape
        return out.permute(0, 2, 1, 3).reshape(nb * bn, kb * bk)[:n, :k]

    def to_dense(self) -> torch.Tensor:
        """The dense ``(N, K)`` matrix ``W * M`` (round trip of :meth:`from_dense`).

        Returns:
            Dense tensor on the values' device.
        """
        return self.scatter(self.values)

    def to(self, device: torch.device | str) -> BlockSparseWeight:
        """Copy to another device.

        Args:
            device: target device.

        Returns:
            A new :class:`BlockSparseWeight`.
        """
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return BlockSparseWeight(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in fields.items()})
