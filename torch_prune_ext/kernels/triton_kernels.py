"""Launchers for the Triton block-sparse kernels; triton is imported lazily, on first use.

The kernels compute ``y = x (W * M)^T + b`` (forward), ``dX = dY (W * M)`` (through the
column-ordered index of :class:`~torch_prune_ext.kernels.format.BlockSparseWeight`) and
``dW = (dY^T X) * M`` for stored blocks only. Every empty tile is skipped; the token tile
(``BLOCK_M`` rows of ``x``) is the M dimension of ``tl.dot``; accumulation is fp32; the bias is fused
into the forward; ``triton.autotune`` picks ``BLOCK_M`` / warps per ``(M, N, K, block)`` and caches it
(per process and device). fp32, fp16 and bf16 inputs.

fp32 precision: ``tl.dot`` on fp32 inputs runs in TF32 on Ampere/Hopper GPUs unless told otherwise
(the interpreter never shows it). The kernels pass ``input_precision="ieee"`` for fp32 by default, so
their results match the masked dense fp32 result within :data:`FP32_TOLERANCE`; ``allow_tf32=True``
opts into TF32 tensor cores (faster, error bound :data:`TF32_TOLERANCE`). fp16/bf16 are unaffected.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from types import ModuleType

import torch

from ..errors import InvalidOptionError, MissingDependencyError
from .format import BlockSparseWeight

__all__ = [
    "FP32_TOLERANCE",
    "TF32_TOLERANCE",
    "check_kernel_input",
    "dot_precision",
    "grad_input",
    "grad_weight",
    "forward",
    "triton_available",
    "triton_interpreted",
]

logger = logging.getLogger("torch_prune_ext")

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: Bound (atol = rtol) on the error of the fp32 kernels (IEEE fp32 dots, fp32 accumulation) against
#: the masked dense fp32 result, for unit-scale inputs.
FP32_TOLERANCE = 1e-4

#: Bound on the error of the fp32 kernels with ``allow_tf32=True`` (inputs rounded to TF32's 10-bit
#: mantissa), as max absolute error divided by the reference's max absolute value.
TF32_TOLERANCE = 1e-2


def dot_precision(dtype: torch.dtype, allow_tf32: bool = False) -> str:
    """The ``input_precision`` the kernels give ``tl.dot`` for inputs of ``dtype``.

    Args:
        dtype: compute dtype of the kernel's inputs.
        allow_tf32: let fp32 dots use TF32 tensor cores (faster, less precise).

    Returns:
        ``"ieee"`` for fp32 (unless ``allow_tf32``), else ``"tf32"`` (Triton's default, which only
        applies to fp32 inputs: fp16/bf16 dots ignore it).

    Examples:
        >>> dot_precision(torch.float32), dot_precision(torch.float32, allow_tf32=True)
        ('ieee', 'tf32')
        >>> dot_precision(torch.bfloat16)
        'tf32'
    """
    return "ieee" if dtype == torch.float32 and not allow_tf32 else "tf32"


def check_kernel_input(t: torch.Tensor, name: str = "x") -> None:
    """Reject a tensor the Triton kernels cannot take (wrong dtype, or a device they cannot run on).

    Args:
        t: an input of a kernel launcher.
        name: its name in the message.

    Raises:
        InvalidOptionError: dtype other than float32/float16/bfloat16, or a CPU tensor while
            ``TRITON_INTERPRET=1`` is unset.

    Examples:
        >>> check_kernel_input(torch.zeros(2, dtype=torch.int64))
        Traceback (most recent call last):
        ...
        torch_prune_ext.errors.InvalidOptionError: triton kernels take float32/float16/bfloat16 inputs, got x of dtype torch.int64; cast it first.
    """
    if t.dtype not in _DTYPES:
        raise InvalidOptionError(
            f"triton kernels take float32/float16/bfloat16 inputs, got {name} of dtype {t.dtype}; cast it first."
        )
    if t.device.type != "cuda" and not (t.device.type == "cpu" and triton_interpreted()):
        raise InvalidOptionError(
            f"triton kernels run on CUDA tensors, got {name} on {t.device}; move it to a GPU "
            "(or set TRITON_INTERPRET=1 before importing triton to run them slowly on the CPU)."
        )


def triton_interpreted() -> bool:
    """Whether ``TRITON_INTERPRET=1`` is set (kernels then run on CPU tensors, slowly).

    Returns:
        True when the interpreter is requested.

    Examples:
        >>> isinstance(triton_interpreted(), bool)
        True
    """
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available(device: torch.device | str | None = None) -> bool:
    """Whether the Triton kernels can run on ``device``.

    True when triton is installed and either ``device`` is a CUDA device (CUDA available), or
    ``device`` is the CPU and ``TRITON_INTERPRET=1`` is set. Does not import triton.

    Args:
        device: the device of the tensors; ``None`` means CUDA if available, else CPU.

    Returns:
        True if the kernels can run there.

    Examples:
        >>> isinstance(triton_available("cpu"), bool)
        True
    """
    if importlib.util.find_spec("triton") is None:
        return False
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu" and triton_interpreted()


@functools.lru_cache(maxsize=1)
def _src() -> ModuleType:
    if importlib.util.find_spec("triton") is None:
        raise MissingDependencyError(
            "the Triton kernels need triton; install it with `pip install torch-prune-ext[kernels]` "
            "(or use the CPU/dense path: accelerate(model, backend='auto'))."
        )
    from . import _triton_src

    logger.debug("triton kernels loaded (interpreter=%s)", _triton_src.INTERPRETED)
    return _triton_src


def forward(
    x: torch.Tensor, bsw: BlockSparseWeight, values: torch.Tensor, bias: torch.Tensor | None, *, allow_tf32: bool = False
) -> torch.Tensor:
    """``y = x (W * M)^T + bias`` for a 2-D ``x`` ``(M, K)``.

    Args:
        x: ``(M, K)`` input.
        bsw: block index.
        values: ``(nnzb, b_n, b_k)`` kept blocks, same dtype as ``x``.
        bias: ``(N,)`` or None.
        allow_tf32: fp32 dots in TF32 (see :func:`dot_precision`).

    Returns:
        ``(M, N)`` output in ``x``'s dtype.
    """
    check_kernel_input(x)  # before importing triton: TRITON_INTERPRET is read at that import
    src = _src()
    x = x.contiguous()
    m, k = x.shape
    n = bsw.shape[0]
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m == 0:
        return y
    bn, bk = bsw.block_size
    grid = lambda meta: (triton_cdiv(m, meta["BLOCK_M"]), bsw.grid[0])  # noqa: E731
    src.bsr_forward_kernel[grid](
        x, values.contiguous(), bsw.row_ptr, bsw.col_idx, bias if bias is not None else x, y,
        m, n, k, x.stride(0), y.stride(0), HAS_BIAS=bias is not None, BN=bn, BK=bk,
        PRECISION=dot_precision(x.dtype, allow_tf32),
    )
    return y


def grad_input(
    g: torch.Tensor, bsw: BlockSparseWeight, values: torch.Tensor, *, allow_tf32: bool = False
) -> torch.Tensor:
    """``dX = dY (W * M)`` through the column-ordered block index.

    Args:
        g: ``(M, N)`` output gradient.
        bsw: block index.
        values: kept blocks, same dtype as ``g``.
        allow_tf32: fp32 dots in TF32 (see :func:`dot_precision`).

    Returns:
        ``(M, K)`` input gradient.
    """
    check_kernel_input(g, "g")
    src = _src()
    g = g.contiguous()
    m, n = g.shape
    k = bsw.shape[1]
    dx = torch.empty(m, k, dtype=g.dtype, device=g.device)
    if m == 0:
        return dx
    bn, bk = bsw.block_size
    grid = lambda meta: (triton_cdiv(m, meta["BLOCK_M"]), bsw.grid[1])  # noqa: E731
    src.bsr_grad_input_kernel[grid](
        g, values.contiguous(), bsw.col_ptr, bsw.col_row_idx, bsw.col_perm, dx,
        m, n, k, g.stride(0), dx.stride(0), BN=bn, BK=bk, PRECISION=dot_precision(g.dtype, allow_tf32),
    )
    return dx


def grad_weight(g: torch.Tensor, x: torch.Tensor, bsw: BlockSparseWeight, *, allow_tf32: bool = False) -> torch.Tensor:
    """``dW = (dY^T X) * M`` for the stored blocks only.

    Args:
        g: ``(M, N)`` output gradient.
        x: ``(M, K)`` input.
        bsw: block index (its ``mask_values`` masks the result).
        allow_tf32: fp32 dots in TF32 (see :func:`dot_precision`).

    Returns:
        ``(nnzb, b_n, b_k)`` gradient of the kept blocks, in ``x``'s dtype.
    """
    check_kernel_input(x)
    src = _src()
    g, x = g.contiguous(), x.contiguous()
    m, n = g.shape
    k = x.shape[1]
    bn, bk = bsw.block_size
    dw = torch.empty(bsw.nnzb, bn, bk, dtype=x.dtype, device=x.device)
    if bsw.nnzb == 0:
        return dw
    if m == 0:
        return dw.zero_()
    src.bsr_grad_weight_kernel[(bsw.nnzb,)](
        g, x, bsw.row_idx, bsw.col_idx, bsw.mask_values.contiguous(), dw,
        m, n, k, g.stride(0), x.stride(0), BN=bn, BK=bk, PRECISION=dot_precision(x.dtype, allow_tf32),
    )
    return dw


def triton_cdiv(a: int, b: int) -> int:
    """Ceiling division (``triton.cdiv`` without importing triton).

    Args:
        a: numerator.
        b: denominator.

    Returns:
        ``ceil(a / b)``.

    Examples:
        >>> triton_cdiv(65, 32)
        3
    """
    return -(-a // b)
