"""IUNET: invariance-unveiling pruning (Xu, Sun, Wang, 2023), as a pipeline.

Proactive initialisation (θ(0) = κ·θ†), training with the invariance learning objective
(CE + λ·NT-Xent over two augmented views of the encoder output), one-shot global magnitude
pruning of the encoder (final linear dense), rewind of the survivors to the unscaled θ†,
and cross-entropy finetuning with fixed masks.

Examples:
    >>> import torch
    >>> from torch_prune_ext.iunet import IUNETConfig, run_iunet
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(64, 5, generator=g); y = (x[:, 1] > 0).long()
    >>> build = lambda: torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> report = run_iunet(build, (x, y), (x, y), IUNETConfig(epochs=1, finetune_epochs=1, progress=False))
    >>> round(report.encoder_sparsity, 3)
    0.9
"""

from __future__ import annotations

from .augment import (
    Scarf,
    StandardAugment,
    VisionViews,
    color_jitter,
    random_grayscale,
    random_resized_crop,
)
from .init import proactive_init_
from .objective import ProjectionHead, encode, find_head, invariance_loss, nt_xent
from .metrics import accuracy, consistency
from .pipeline import run_iunet
from .report import IUNETConfig, IUNETReport, StageResult
from .stages import encoder_targets, finetune, prune_encoder, reset_batchnorm_, rewind_
from .tabular import TABULAR_DATASETS, load_tabular

__all__ = [
    "TABULAR_DATASETS",
    "IUNETConfig",
    "IUNETReport",
    "ProjectionHead",
    "Scarf",
    "StageResult",
    "StandardAugment",
    "VisionViews",
    "accuracy",
    "color_jitter",
    "consistency",
    "encode",
    "encoder_targets",
    "find_head",
    "finetune",
    "invariance_loss",
    "load_tabular",
    "nt_xent",
    "proactive_init_",
    "prune_encoder",
    "random_grayscale",
    "random_resized_crop",
    "reset_batchnorm_",
    "rewind_",
    "run_iunet",
]
