"""Pruned layers that are actually faster: block-sparse kernels, a CPU sparse path and a dispatcher.

``torch_prune_ext.accelerate(model)`` converts every pruned ``nn.Linear`` into an
:class:`AcceleratedLinear` (and every pruned ``nn.Conv2d`` into an :class:`AcceleratedConv2d`, computed by
tap-major tile GEMMs on CPU or Triton on CUDA) whose backend (Triton block-sparse kernels on CUDA, MKL CSR/BSR on CPU,
2:4 semi-structured, or dense ``F.linear(x, W * M)``) is picked per layer from a crossover table
measured by ``benchmarks/masked_matmul.py``. Triton is optional and imported lazily.

Examples:
    >>> import torch
    >>> from torch_prune_ext.kernels import BlockSparseWeight
    >>> w = torch.randn(32, 32); m = torch.zeros(32, 32); m[:16, :16] = 1
    >>> BlockSparseWeight.from_dense(w, m, 16).nnzb
    1
"""

from __future__ import annotations

from .accelerate import AcceleratedLinear, AccelerateReport, accelerate
from .conv import AcceleratedConv2d, masked_conv2d
from .conv_layout import ConvGeometry
from .dispatch import BACKENDS, CONV_BACKENDS, choose_backend, choose_conv_backend, is_2_4, load_table, make_conv_plan, make_plan
from .format import BLOCK_SIZES, BlockSparseWeight, block_occupancy
from .function import LayerPlan, MaskedLinearFunction, masked_linear
from .triton_kernels import triton_available, triton_interpreted

__all__ = [
    "AccelerateReport",
    "AcceleratedConv2d",
    "AcceleratedLinear",
    "BACKENDS",
    "CONV_BACKENDS",
    "ConvGeometry",
    "BLOCK_SIZES",
    "BlockSparseWeight",
    "LayerPlan",
    "MaskedLinearFunction",
    "accelerate",
    "block_occupancy",
    "choose_backend",
    "choose_conv_backend",
    "is_2_4",
    "load_table",
    "make_conv_plan",
    "make_plan",
    "masked_conv2d",
    "masked_linear",
    "triton_available",
    "triton_interpreted",
]
