"""Per-layer choice between our kernel, dense, and 2:4, from a measured crossover table.

A crossover table is a dict (or a JSON file) like the shipped ``crossover_cpu.json``::

    {"cpu":  {"csr_max_density": 0.07, "bsr_max_block_density": {"16": 0.2, "32": 0.3, "64": 0.3}},
     "cuda": {"triton_max_block_density": {"16": 0.1, "32": 0.4, "64": 0.6},
              "semi_structured": true}}

``*_max_density`` is the density below which the sparse path beat dense in the microbenchmark
(``benchmarks/masked_matmul.py`` writes it). Rules, per layer:

* CUDA: a 2:4 mask in fp16/bf16 -> ``"semi_structured"``; otherwise the block size with the lowest
  block density that is below its threshold -> ``"triton"``; otherwise ``"dense"``.
* CPU: a block size (square; 64x32 is also 32x32) under its BSR threshold -> ``"bsr"``; else element
  density under the CSR threshold -> ``"csr"``; else ``"dense"``.
* Conv2d (:func:`make_conv_plan`): the density of tap-major tiles (``conv_layout.gemm_view``) against
  ``conv_max_block_density`` (CPU, ``"tap"``, measured by ``benchmarks/conv_crossover.py``) or
  ``triton_conv_max_block_density`` (CUDA, ``"triton"``); otherwise ``"dense"``. The reason is kept. (Triton on CPU is the interpreter:
  only when asked for with ``backend="triton"``.)

Without triton, or without CUDA, ``"triton"`` is never chosen automatically.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import InvalidOptionError
from .conv_plan import ConvPlan
from .conv_layout import ConvGeometry, gemm_view
from .cpu import CpuSparsePlan
from .cpu_conv import TapConvPlan, tap_occupancy
from .format import BlockSparseWeight, block_occupancy
from .function import LayerPlan
from .triton_kernels import triton_available

__all__ = ["BACKENDS", "CONV_BACKENDS", "DEFAULT_TABLE_PATH", "choose_backend", "choose_conv_backend", "is_2_4",
           "load_table", "make_conv_plan", "make_plan"]

logger = logging.getLogger("torch_prune_ext")

#: Backends accepted by :func:`make_plan` (``"auto"`` asks the table).
BACKENDS = ("auto", "dense", "triton", "csr", "bsr", "semi_structured")

#: Backends accepted by :func:`make_conv_plan` for ``nn.Conv2d`` layers.
CONV_BACKENDS = ("auto", "dense", "tap", "triton")

#: Compute dtypes of the sparse conv backends (CPU ``"tap"`` upcasts fp16/bf16 to fp32).
CONV_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: The CPU crossover table shipped with the package (measured by ``benchmarks/masked_matmul.py``).
DEFAULT_TABLE_PATH = Path(__file__).with_name("crossover_cpu.json")

#: The CUDA crossover table measured by ``benchmarks/gpu_suite.py`` (used when the file exists).
CUDA_TABLE_PATH = Path(__file__).with_name("crossover_cuda.json")

_FALLBACK_CUDA = {
    # Used only when crossover_cuda.json is absent: conservative guesses from the anchors in the
    # spec (torch's Triton BSR beats dense above ~90% sparsity at 32, ~60% at 64).
    "triton_max_block_density": {"16": 0.1, "32": 0.3, "64": 0.5},
    "triton_conv_max_block_density": {"32": 0.3, "64": 0.5},
    "semi_structured": True,
}


@functools.lru_cache(maxsize=1)
def _default_table() -> dict[str, Any]:
    table: dict[str, Any] = {"cpu": {"csr_max_density": 0.05, "bsr_max_block_density": {"16": 0.1, "32": 0.2, "64": 0.2},
                                     "conv_max_block_density": {"32": 0.15}}}
    if DEFAULT_TABLE_PATH.exists():
        table = json.loads(DEFAULT_TABLE_PATH.read_text())
    if CUDA_TABLE_PATH.exists():
        try:
            table["cuda"] = dict(json.loads(CUDA_TABLE_PATH.read_text())["cuda"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring %s (%s); using the guessed CUDA thresholds", CUDA_TABLE_PATH, exc)
    table.setdefault("cuda", _FALLBACK_CUDA)
    return table


def load_table(table: Mapping[str, Any] | str | os.PathLike | None = None) -> dict[str, Any]:
    """The crossover table to use: the shipped default, a dict, or a JSON file (merged over the default).

    Args:
        table: None (shipped default), a mapping, or a path to a JSON file.

    Returns:
        A dict with ``"cpu"`` and ``"cuda"`` sections.

    Raises:
        InvalidOptionError: the file is missing or is not a JSON object.

    Examples:
        >>> sorted(load_table({"cpu": {"csr_max_density": 0.5}})["cpu"])
        ['bsr_max_block_density', 'conv_max_block_density', 'csr_max_density']
    """
    base = copy.deepcopy(_default_table())
    if table is None:
        return base
    if not isinstance(table, Mapping):
        path = Path(table)
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidOptionError(f"cannot read crossover table {str(path)!r} ({exc}); pass a JSON object file.") from exc
        if not isinstance(table, Mapping):
            raise InvalidOptionError(f"crossover table {str(path)!r} must hold a JSON object with 'cpu'/'cuda' keys.")
    for dev, section in table.items():
        if not isinstance(section, Mapping):
            continue
        base.setdefault(dev, {}).update(copy.deepcopy(dict(section)))
    return base


def is_2_4(mask: torch.Tensor) -> bool:
    """Whether every group of 4 consecutive inputs of every row keeps at most 2 entries.

    Args:
        mask: ``(N, K)`` mask.

    Returns:
        True for a 2:4 (semi-structured) mask.

    Examples:
        >>> is_2_4(torch.tensor([[1., 0, 1, 0, 0, 1, 1, 0]])), is_2_4(torch.ones(1, 8))
        (True, False)
    """
    if mask.dim() != 2 or mask.shape[1] % 4:
        return False
    return bool(((mask != 0).view(mask.shape[0], -1, 4).sum(-1) <= 2).all())


def _block_densities(mask: torch.Tensor, sizes: tuple[int, ...]) -> dict[int, float]:
    return {b: float(block_occupancy(mask, b).float().mean()) for b in sizes}


def _thresholds(section: Mapping[str, Any], key: str) -> dict[int, float]:
    return {int(b): float(t) for b, t in section.get(key, {}).items()}


def _best_block(densities: Mapping[int, float], thresholds: Mapping[int, float]) -> int | None:
    """The block size whose density is furthest below its crossover threshold (None: none is below)."""
    below = {b: d / thresholds[b] for b, d in densities.items() if d <= thresholds[b]}
    return min(below, key=lambda b: (below[b], b)) if below else None


def choose_backend(
    mask: torch.Tensor,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    table: Mapping[str, Any] | None = None,
) -> tuple[str, int | None]:
    """Pick the backend and block size for one layer from the crossover table.

    Args:
        mask: ``(N, K)`` element mask.
        device: where the layer runs.
        dtype: compute dtype.
        table: crossover table (see :func:`load_table`); None = default.

    Returns:
        ``(backend, block_size)``; ``block_size`` is None for ``"dense"``, ``"csr"``, ``"semi_structured"``.

    Examples:
        >>> m = torch.zeros(64, 64); m[:16, :16] = 1
        >>> choose_backend(m, "cpu", table={"cpu": {"bsr_max_block_density": {"16": 0.1}}})
        ('bsr', 16)
        >>> choose_backend(torch.ones(64, 64), "cpu")
        ('dense', None)
    """
    tab = load_table(table)
    device = torch.device(device)
    density = float((mask != 0).float().mean())
    n, k = mask.shape
    if device.type == "cuda":
        cuda = tab.get("cuda", {})
        if cuda.get("semi_structured", False) and dtype in (torch.float16, torch.bfloat16) and is_2_4(mask) and n % 64 == 0 and k % 64 == 0:
            return "semi_structured", None
        if not triton_available(device):
            return "dense", None
        thresholds = _thresholds(cuda, "triton_max_block_density")
        best = _best_block(_block_densities(mask, tuple(sorted(thresholds))), thresholds)
        return ("triton", best) if best else ("dense", None)
    cpu = tab.get("cpu", {})
    thresholds = {b: t for b, t in _thresholds(cpu, "bsr_max_block_density").items() if not (n % b or k % b)}
    best = _best_block(_block_densities(mask, tuple(sorted(thresholds))), thresholds)
    if best:
        return "bsr", best
    if density <= float(cpu.get("csr_max_density", 0.0)):
        return "csr", None
    return "dense", None


def _square_side(block: int | tuple[int, int] | None) -> int:
    """The side of the square block (tile) a plan uses: ``block``, the smaller side of a pair, or 32 when unset."""
    side = block or 32
    return side if isinstance(side, int) else min(side)


def make_plan(
    mask: torch.Tensor,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    backend: str = "auto",
    block_size: int | tuple[int, int] | None = None,
    table: Mapping[str, Any] | None = None,
    geometry: ConvGeometry | None = None,
) -> LayerPlan | ConvPlan:
    """Build the :class:`~torch_prune_ext.kernels.function.LayerPlan` of one layer (the
    :class:`~torch_prune_ext.kernels.conv.ConvPlan` of a conv layer when ``geometry`` is given).

    Args:
        mask: ``(N, K)`` element mask, or ``(O, C, kh, kw)`` for a conv (moved to ``device``).
        device: where the layer runs.
        dtype: compute dtype (the conv backends refuse other dtypes than float32/float16/bfloat16 when forced).
        backend: one of :data:`BACKENDS` (:data:`CONV_BACKENDS` for a conv); ``"auto"`` uses the table.
        block_size: block (conv: tile side) when forced (default: the table's pick or 32).
        table: crossover table.
        geometry: the conv layer's :class:`ConvGeometry`; None for a linear layer.

    Returns:
        The plan. A forced backend that cannot run here falls back (logged): ``"triton"`` without triton
        or CUDA/interpreter -> CPU sparse or dense (conv: ``"tap"`` on CPU); ``"csr"``/``"bsr"``/``"tap"``
        on CUDA -> dense; ``"semi_structured"`` off CUDA or on a non-2:4 mask -> dense. A conv plan's
        ``reason`` says why its backend was chosen.

    Raises:
        InvalidOptionError: unknown backend, or a forced sparse conv backend with an unsupported dtype.

    Examples:
        >>> make_plan(torch.ones(8, 8), "cpu").backend
        'dense'
        >>> make_plan(torch.ones(8, 8, 3, 3), "cpu", backend="tap", geometry=ConvGeometry.of(torch.nn.Conv2d(8, 8, 3))).reason
        'forced'
    """
    allowed, label = (BACKENDS, "backend") if geometry is None else (CONV_BACKENDS, "conv backend")
    if backend not in allowed:
        raise InvalidOptionError(f"{label}={backend!r} is unknown; use one of {', '.join(allowed)}.")
    device = torch.device(device)
    mask = (mask != 0).to(device=device, dtype=torch.float32)
    if geometry is not None:
        return _conv_plan(mask, geometry, device, dtype, backend, block_size, table)
    return _linear_plan(mask, device, dtype, backend, block_size, table)


def _linear_plan(mask: torch.Tensor, device: torch.device, dtype: torch.dtype, backend: str,
                 block_size: int | tuple[int, int] | None, table: Mapping[str, Any] | None) -> LayerPlan:
    """The linear plan of a checked request (``mask`` already a 0/1 float tensor on ``device``)."""
    chosen_block = block_size
    if backend == "auto":
        backend, chosen_block = choose_backend(mask, device, dtype, table)
        chosen_block = block_size or chosen_block
    if backend == "triton" and not triton_available(device):
        logger.info("triton kernels unavailable on %s (no triton, or no CUDA and TRITON_INTERPRET unset); falling back", device)
        backend = "bsr" if device.type == "cpu" else "dense"
    if backend in ("csr", "bsr") and device.type != "cpu":
        logger.info("CPU sparse backend %r requested on %s; using dense", backend, device)
        backend = "dense"
    if backend == "semi_structured" and (device.type != "cuda" or not is_2_4(mask)):
        logger.info("2:4 backend needs CUDA and a 2:4 mask; using dense")
        backend = "dense"
    if backend == "bsr":
        b = _square_side(chosen_block)
        if mask.shape[0] % b or mask.shape[1] % b:
            logger.info("BSR needs shapes divisible by the block (%s, %s); using CSR", tuple(mask.shape), b)
            backend = "csr"
        else:
            return LayerPlan("bsr", mask, (b, b), cpu=CpuSparsePlan.build(mask.cpu(), "bsr", b))
    if backend == "csr":
        return LayerPlan("csr", mask, cpu=CpuSparsePlan.build(mask.cpu(), "csr"))
    if backend == "triton":
        b = chosen_block or 32
        bsw = BlockSparseWeight.from_dense(torch.zeros_like(mask), mask, b)
        return LayerPlan("triton", mask, bsw.block_size, bsw=bsw)
    return LayerPlan(backend, mask)


def choose_conv_backend(
    mask: torch.Tensor,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    table: Mapping[str, Any] | None = None,
) -> tuple[str, int | None, str]:
    """Pick the backend and tile size of one conv layer from the crossover table, and say why.

    Args:
        mask: ``(O, C, kh, kw)`` element mask.
        device: where the layer runs.
        dtype: compute dtype.
        table: crossover table (see :func:`load_table`); None = default.

    Returns:
        ``(backend, block_size, reason)``: ``"tap"`` (CPU) or ``"triton"`` (CUDA) when the tile density is
        below the table's crossover at some tile size, else ``"dense"``.

    Examples:
        >>> m = torch.zeros(64, 64, 3, 3); m[:32, :32, 1, 1] = 1     # 1 tile of 36
        >>> choose_conv_backend(m, "cpu", table={"cpu": {"conv_max_block_density": {"32": 0.1}}})
        ('tap', 32, 'tile density 0.028 <= 0.1 at 32x32 (crossover table)')
        >>> choose_conv_backend(torch.ones(64, 64, 3, 3), "cpu", table={"cpu": {"conv_max_block_density": {"32": 0.15}}})[::2]
        ('dense', 'tile density 1.000 > 0.15 at 32x32: dense is faster')
    """
    tab = load_table(table)
    device = torch.device(device)
    if dtype not in CONV_DTYPES:
        return "dense", None, f"dtype {dtype} has no sparse conv path (float32; float16/bfloat16)"
    if device.type == "cuda":
        if not triton_available(device):
            return "dense", None, "triton is not available on this CUDA device"
        backend, thresholds = "triton", _thresholds(tab.get("cuda", {}), "triton_conv_max_block_density")
        densities = _block_densities(gemm_view(mask), tuple(sorted(thresholds)))
    else:
        backend, thresholds = "tap", _thresholds(tab.get("cpu", {}), "conv_max_block_density")
        densities = {b: float(tap_occupancy(mask, b).float().mean()) for b in sorted(thresholds)}
    if not thresholds:
        return "dense", None, f"the crossover table has no conv section for {device.type}"
    best = _best_block(densities, thresholds)
    if best is None:
        text = ", ".join(f"{d:.3f} > {thresholds[b]:g} at {b}x{b}" for b, d in densities.items())
        return "dense", None, f"tile density {text}: dense is faster"
    return backend, best, f"tile density {densities[best]:.3f} <= {thresholds[best]:g} at {best}x{best} (crossover table)"


def _forced_conv_backend(backend: str, device: torch.device, dtype: torch.dtype) -> tuple[str, str]:
    """A forced conv backend that can run here (logged fallbacks), or an error for an unsupported dtype."""
    if backend != "dense" and dtype not in CONV_DTYPES:
        raise InvalidOptionError(
            f"conv backend {backend!r} does not support dtype {dtype}; use float32 (or float16/bfloat16), or backend='dense'."
        )
    if backend == "triton" and not triton_available(device):
        logger.info("triton conv kernels unavailable on %s; falling back", device)
        backend = "tap" if device.type == "cpu" else "dense"
        return backend, f"forced 'triton' is unavailable on {device.type}: {backend}"
    if backend == "tap" and device.type != "cpu":
        logger.info("CPU conv backend 'tap' requested on %s; using dense", device)
        return "dense", f"forced 'tap' runs on CPU only: dense on {device.type}"
    return backend, "forced"


def make_conv_plan(mask: torch.Tensor, geometry: ConvGeometry, device: torch.device | str, *options: Any,
                   **named: Any) -> ConvPlan:
    """Build the :class:`~torch_prune_ext.kernels.conv.ConvPlan` of one conv layer: :func:`make_plan` with ``geometry``.

    Args:
        mask: ``(O, C, kh, kw)`` element mask (moved to ``device``).
        geometry: the layer's :class:`ConvGeometry`.
        device: where the layer runs.
        *options: ``dtype``, ``backend`` (one of :data:`CONV_BACKENDS`), ``block_size`` (tile side) and
            ``table``, in this order, as for :func:`make_plan`.
        **named: the same options by name.

    Returns:
        The plan (``plan.reason`` says why its backend was chosen).

    Raises:
        InvalidOptionError: unknown backend, or a forced sparse backend with an unsupported dtype.

    Examples:
        >>> g = ConvGeometry.of(torch.nn.Conv2d(8, 8, 3))
        >>> plan = make_conv_plan(torch.ones(8, 8, 3, 3), g, "cpu")
        >>> plan.backend, make_conv_plan(torch.ones(8, 8, 3, 3), g, "cpu", torch.float32, "tap").backend
        ('dense', 'tap')
    """
    return make_plan(mask, device, *options, geometry=geometry, **named)


def _conv_plan(mask: torch.Tensor, geometry: ConvGeometry, device: torch.device, dtype: torch.dtype, backend: str,
               block_size: int | tuple[int, int] | None, table: Mapping[str, Any] | None) -> ConvPlan:
    """The conv plan of a checked request (``mask`` already a 0/1 float tensor on ``device``)."""
    if backend == "auto":
        backend, chosen, reason = choose_conv_backend(mask, device, dtype, table)
        block = block_size or chosen
    else:
        (backend, reason), block = _forced_conv_backend(backend, device, dtype), block_size
    b = _square_side(block)
    if backend == "tap":
        return ConvPlan("tap", mask, geometry, reason, tap=TapConvPlan.build(mask.cpu(), geometry, b))
    if backend == "triton":
        matrix = gemm_view(mask)
        bsw = BlockSparseWeight.from_dense(torch.zeros_like(matrix), matrix, b)
        return ConvPlan("triton", mask, geometry, reason, gemm=LayerPlan("triton", matrix, bsw.block_size, bsw=bsw))
    return ConvPlan("dense", mask, geometry, reason)
