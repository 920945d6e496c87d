"""Training utilities: label-free distillation of a pruned student (LNPT stage B) and its diagnostics."""

from __future__ import annotations

from .distill import (
    DISTANCES,
    DistillationTrainer,
    MissingDependencyError,
    capture_features,
    distill,
    enforce_masks,
    kd_loss,
    learning_gap,
    plot_history,
    resolve_distance,
    weight_distance,
)

__all__ = [
    "DISTANCES",
    "DistillationTrainer",
    "MissingDependencyError",
    "capture_features",
    "distill",
    "enforce_masks",
    "kd_loss",
    "learning_gap",
    "plot_history",
    "resolve_distance",
    "weight_distance",
]
