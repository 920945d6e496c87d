"""Blocks of a weight: block scores, block-aware ranking, and empty-tile statistics.

A weight is seen as the matrix a GEMM multiplies: ``(out_features, in_features)`` for a
Linear, the tap-major ``(out_channels, kh·kw·in_channels)`` for a convolution
(:func:`~torch_prune_ext.core.layout.gemm_view`: a tile is ``b_n`` output channels by
``b_k`` input channels at one kernel tap, the tile the conv kernels skip).
A block is a ``b_n x b_k`` tile of that matrix; edge blocks may be smaller. Tensor cores work
on whole tiles, so only zeros that fill whole tiles make a pruned layer faster
(``specs/kernel.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidOptionError
from .checkpoint import pruned_tensors
from .layout import from_gemm_view, gemm_view
from .report import format_table

GRANULARITIES = ("element", "block", "hybrid")


def check_block_size(block_size: Sequence[int]) -> tuple[int, int]:
    """``block_size`` as a ``(b_n, b_k)`` pair of positive ints, or a clear error."""
    size = tuple(block_size) if isinstance(block_size, (tuple, list)) else (block_size, block_size)
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise InvalidOptionError(f"block_size must be a (b_n, b_k) pair of positive ints, got {block_size!r}.")
    return size  # type: ignore[return-value]


def as_matrix(tensor: torch.Tensor) -> torch.Tensor:
    """The GEMM view of a weight (a 1-D tensor is one row).

    A 4-D conv weight ``(O, C, kh, kw)`` gives the tap-major ``(O, kh·kw·C)`` (column
    ``(r·kw + s)·C + c``); any other tensor gives ``(shape[0], numel / shape[0])``.

    Examples:
        >>> as_matrix(torch.zeros(8, 3, 2, 2)).shape, as_matrix(torch.zeros(5)).shape
        (torch.Size([8, 12]), torch.Size([1, 5]))
        >>> w = torch.arange(8.).reshape(1, 2, 2, 2)
        >>> as_matrix(w).tolist()   # channels 0 and 1 at tap (0, 0), then at tap (0, 1), ...
        [[0.0, 4.0, 1.0, 5.0, 2.0, 6.0, 3.0, 7.0]]
    """
    if tensor.dim() == 4:
        return gemm_view(tensor)
    return tensor.reshape(1, -1) if tensor.dim() < 2 else tensor.reshape(tensor.shape[0], -1)


def from_matrix(matrix: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`as_matrix`: the tensor of ``shape`` whose GEMM view is ``matrix``.

    Examples:
        >>> w = torch.randn(4, 3, 3, 3)
        >>> torch.equal(from_matrix(as_matrix(w), w.shape), w)
        True
    """
    if len(shape) == 4:
        return from_gemm_view(matrix, shape)
    return matrix.reshape(shape)


def block_sums(matrix: torch.Tensor, block_size: tuple[int, int]) -> torch.Tensor:
    """Sum of every ``b_n x b_k`` block of a 2-D tensor (edge blocks are partial), shape (rows, cols) of blocks.

    Examples:
        >>> block_sums(torch.arange(12.).reshape(3, 4), (2, 2))
        tensor([[10., 18.],
                [17., 21.]])
    """
    b_n, b_k = block_size
    n, k = matrix.shape
    padded = F.pad(matrix, (0, -k % b_k, 0, -n % b_n))
    rows, cols = padded.shape[0] // b_n, padded.shape[1] // b_k
    return padded.reshape(rows, b_n, cols, b_k).sum(dim=(1, 3))


def expand_blocks(blocks: torch.Tensor, block_size: tuple[int, int], shape: tuple[int, int]) -> torch.Tensor:
    """Repeat every block value over its ``b_n x b_k`` entries, cropped to ``shape``."""
    b_n, b_k = block_size
    return blocks.repeat_interleave(b_n, 0).repeat_interleave(b_k, 1)[: shape[0], : shape[1]]


def _prune_blocks(
    scores: Sequence[torch.Tensor], alive: Sequence[torch.Tensor], n_new: int, block_size: tuple[int, int]
) -> list[torch.Tensor]:
    """Prune the ``n_new`` lowest-ranked alive entries, whole blocks first (targets in canonical order).

    Blocks are ranked globally by the mean score of their alive entries; whole blocks are pruned
    while the count allows, and the first block that would overshoot is pruned element-wise
    (lowest scores first) so that exactly ``n_new`` entries are pruned.
    """
    block_means, block_alive, per_target = [], [], []
    for score, live in zip(scores, alive):
        matrix_scores, matrix_alive = as_matrix(score).to(torch.float64), as_matrix(live).to(torch.float64)
        counts = block_sums(matrix_alive, block_size)
        sums = block_sums(matrix_scores * matrix_alive, block_size)
        means = torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, torch.inf))
        block_means.append(means.reshape(-1))
        block_alive.append(counts.reshape(-1).round().long())
        per_target.append(counts.shape)
    flat_means, flat_counts = torch.cat(block_means), torch.cat(block_alive)
    order = torch.sort(flat_means, stable=True).indices  # dead blocks (inf) last; ties by canonical position
    cumulative = torch.cumsum(flat_counts[order], 0)
    whole = int(torch.searchsorted(cumulative, torch.tensor(n_new, device=cumulative.device), right=True))
    prune_block = torch.zeros_like(flat_counts, dtype=torch.bool)
    prune_block[order[:whole]] = True
    remainder = n_new - (int(cumulative[whole - 1]) if whole else 0)
    partial = int(order[whole]) if remainder > 0 else -1

    new_alive, offset = [], 0
    for score, live, grid in zip(scores, alive, per_target):
        size = grid[0] * grid[1]
        dead_blocks = prune_block[offset:offset + size].reshape(grid)
        matrix_alive = as_matrix(live) & ~expand_blocks(dead_blocks, block_size, as_matrix(live).shape)
        if offset <= partial < offset + size:
            row, col = divmod(partial - offset, grid[1])
            b_n, b_k = block_size
            window = (slice(row * b_n, (row + 1) * b_n), slice(col * b_k, (col + 1) * b_k))
            tile_scores = as_matrix(score)[window].to(torch.float64)
            tile_alive = matrix_alive[window]
            ranked = torch.where(tile_alive, tile_scores, torch.full_like(tile_scores, torch.inf)).reshape(-1)
            lowest = torch.sort(ranked, stable=True).indices[:remainder]
            tile_alive = tile_alive.clone().reshape(-1)
            tile_alive[lowest] = False
            matrix_alive[window] = tile_alive.reshape(matrix_alive[window].shape)
        new_alive.append(from_matrix(matrix_alive, live.shape))
        offset += size
    return new_alive


def block_ranked_alive(
    scores: Sequence[torch.Tensor],
    alive: Sequence[torch.Tensor],
    n_pruned: int,
    block_size: tuple[int, int],
    granularity: str,
    block_density: float | None,
) -> list[torch.Tensor] | None:
    """Alive masks after block-aware pruning, or ``None`` for ``granularity="element"``.

    Args:
        scores: scores per target, canonical order (block means are computed in float64).
        alive: boolean alive masks per target, canonical order.
        n_pruned: total number of dead entries wanted.
        block_size: ``(b_n, b_k)``.
        granularity: ``"block"`` (whole blocks, one partial block at most) or ``"hybrid"`` (blocks down to
            ``block_density``, then elements inside the kept blocks down to the target; the element step
            is left to the caller, which gets the masks after the block step).
        block_density: hybrid's density of kept blocks (``None``: the square root of the target density).
    """
    if granularity == "element":
        return None
    n_total = sum(a.numel() for a in alive)
    n_dead = sum(int((~a).sum()) for a in alive)
    if granularity == "block":
        return _prune_blocks(scores, alive, n_pruned - n_dead, block_size)
    density = 1.0 - n_pruned / n_total if n_total else 1.0
    kept_blocks = density ** 0.5 if block_density is None else max(block_density, density)
    n_block_stage = max(n_dead, min(n_pruned, round((1.0 - kept_blocks) * n_total)))
    return _prune_blocks(scores, alive, n_block_stage - n_dead, block_size)


@dataclass(frozen=True)
class TileStatistics:
    """Empty tiles of one mask at one tile size, and the speedup they allow."""

    name: str
    tile: int
    tiles: int
    empty: int

    @property
    def empty_fraction(self) -> float:
        return self.empty / self.tiles if self.tiles else 0.0

    @property
    def predicted_speedup(self) -> float:
        """Ideal speedup of a tile-skipping kernel: all tiles / non-empty tiles (∞ capped at tiles)."""
        return self.tiles / max(self.tiles - self.empty, 1)


def tile_statistics(name: str, mask: torch.Tensor, tile: int) -> TileStatistics:
    """Count the all-zero ``tile x tile`` tiles of a mask's GEMM view (tap-major for conv weights, see :func:`as_matrix`)."""
    counts = block_sums(as_matrix(mask != 0).to(torch.float32), (tile, tile))
    return TileStatistics(name, tile, counts.numel(), int((counts == 0).sum()))


@dataclass
class TileReport:
    """Empty-tile fractions of every pruned tensor at several tile sizes, with predicted speedups.

    The predicted speedup of a tile-skipping kernel is the ideal, compute-bound one: all tiles over
    non-empty tiles (activation traffic caps it further; see ``specs/kernel.md`` §5).
    ``str(report)`` is a table; :meth:`to_dict` is JSON-serialisable.
    """

    rows: list[TileStatistics]
    tile_sizes: tuple[int, ...]

    def overall(self, tile: int) -> TileStatistics:
        """All tensors together at one tile size."""
        chosen = [r for r in self.rows if r.tile == tile]
        return TileStatistics("total", tile, sum(r.tiles for r in chosen), sum(r.empty for r in chosen))

    def __str__(self) -> str:
        names = list(dict.fromkeys(r.name for r in self.rows))
        by_key = {(r.name, r.tile): r for r in self.rows}
        table_rows = []
        for name in [*names, "total"]:
            cells = [name]
            for tile in self.tile_sizes:
                stats = self.overall(tile) if name == "total" else by_key[(name, tile)]
                cells += [f"{stats.empty_fraction:.1%}", f"{stats.predicted_speedup:.2f}x"]
            table_rows.append(cells)
        headers = ["tensor"] + [h for t in self.tile_sizes for h in (f"empty {t}x{t}", f"speedup {t}")]
        return format_table(headers, table_rows, "l" + "r" * (2 * len(self.tile_sizes)))

    def to_dict(self) -> dict[str, object]:
        return {
            "tile_sizes": list(self.tile_sizes),
            "tensors": [{"name": r.name, "tile": r.tile, "tiles": r.tiles, "empty": r.empty,
                         "empty_fraction": r.empty_fraction, "predicted_speedup": r.predicted_speedup}
                        for r in self.rows],
            "total": {t: {"empty_fraction": self.overall(t).empty_fraction,
                          "predicted_speedup": self.overall(t).predicted_speedup} for t in self.tile_sizes},
        }


def tile_report(model: nn.Module, tile_sizes: Sequence[int] = (16, 32, 64)) -> TileReport:
    """Empty tiles of every mask in ``model`` (read from the ``*_mask`` buffers) at each tile size.

    Tiles are counted on each mask's GEMM view (:func:`as_matrix`): ``(out, in)`` for a Linear and
    the tap-major ``(out, kh·kw·in)`` for a conv, where a tile is ``b_n`` output by ``b_k`` input
    channels at one kernel tap: the tiles the conv kernels of ``accelerate`` skip.

    Args:
        model: a model pruned with ``torch.nn.utils.prune`` (unpruned tensors are skipped).
        tile_sizes: square tile sizes to count.

    Returns:
        A :class:`TileReport`.

    Examples:
        >>> import torch_prune_ext as tpe
        >>> net = torch.nn.Sequential(torch.nn.Linear(64, 64))
        >>> mask = torch.ones(64, 64); mask[:32, :32] = 0
        >>> _ = torch.nn.utils.prune.custom_from_mask(net[0], "weight", mask)
        >>> report = tpe.tile_report(net, tile_sizes=(32,))
        >>> report.overall(32).empty_fraction, report.overall(32).predicted_speedup
        (0.25, 1.3333333333333333)
    """
    names = {id(m): n for n, m in model.named_modules()}
    rows = []
    for module, name in pruned_tensors(model):
        label = f"{names[id(module)]}.{name}" if names[id(module)] else name
        mask = getattr(module, name + "_mask")
        rows.extend(tile_statistics(label, mask, tile) for tile in tile_sizes)
    return TileReport(rows, tuple(tile_sizes))
