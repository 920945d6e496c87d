"""The plan of one pruned conv layer: which backend runs it and the sparsity structure it uses.

Built by :func:`~torch_prune_ext.kernels.dispatch.make_conv_plan` and run by
:func:`~torch_prune_ext.kernels.conv.masked_conv2d`; it lives in a module of its own so that the
dispatcher and the layer both import it and neither imports the other back.
"""

from __future__ import annotations

import dataclasses

import torch

from .conv_layout import ConvGeometry
from .cpu_conv import TapConvPlan
from .function import LayerPlan

__all__ = ["ConvPlan"]


@dataclasses.dataclass
class ConvPlan:
    """Backend and fixed sparsity structure of one conv layer.

    Attributes:
        backend: ``"dense"``, ``"tap"`` or ``"triton"``.
        mask: ``(O, C, kh, kw)`` element mask.
        geometry: the layer's :class:`ConvGeometry`.
        reason: why the dispatcher chose ``backend`` (shown by ``accelerate``'s report).
        tap: the CPU tile plan (``"tap"``).
        gemm: the tap-major block plan holding the ``BlockSparseWeight`` (``"triton"``).
    """

    backend: str
    mask: torch.Tensor
    geometry: ConvGeometry
    reason: str = ""
    tap: TapConvPlan | None = None
    gemm: LayerPlan | None = None
