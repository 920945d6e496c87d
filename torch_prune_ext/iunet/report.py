"""IUNET's configuration and its report."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..core.report import PruneReport
from ..data.augment import Transform
from ..errors import InvalidOptionError, UnknownNameError

__all__ = ["IUNETConfig", "IUNETReport", "StageResult"]


@dataclass(frozen=True)
class IUNETConfig:
    """Every knob of :func:`run_iunet`; the defaults are the paper's (κ, one-shot OMP) or ours (marked).

    Attributes:
        kappa: proactive-init multiplier κ: θ(0) = κ·θ† (paper 0.125; 1 = off).
        sparsity: fraction of the ENCODER weights pruned in one shot (0 = no pruning: the
            report's final model is the ILO-trained supernetwork). Ours: 0.9.
        ilo_weight: λ, the weight of NT-Xent in the ILO (ours 1.0; 0 = plain CE).
        temperature: τ of NT-Xent (ours 0.5).
        projection_dim: output width of an optional projection head before NT-Xent (``None`` = off).
        projection_hidden: hidden width of that projection head.
        epochs: epochs of ILO training of the supernetwork (step 3).
        finetune_epochs: epochs of CE finetuning after pruning and rewind (step 6).
        batch_size: minibatch size in both stages.
        lr: learning rate of the ILO stage.
        finetune_lr: learning rate of the finetune stage (``None`` = ``lr``).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9).
        weight_decay: weight decay in both stages.
        rewind_others: also reset biases and BatchNorm affine parameters to their initial
            values at rewind (the weights always go back to the unscaled θ†).
        views: the contrastive view transform; ``None`` = :class:`VisionViews` for 4-D inputs
            (jitter clamped to the training pixels' min/max), :class:`Scarf` (fitted on the
            training rows) for 2-D inputs.
        standard_augment: the supervised-branch transform; ``None`` =
            :class:`StandardAugment` for images, none for tabular rows.
        consistency_transform: transform for the consistency metric; ``None`` = the standard
            augmentation for images, SCARF for tabular rows (drawn with a fixed seed).
        scarf_corruption: fraction of features SCARF replaces per row (SCARF: 0.6).
        head: name of the final linear layer (``None`` = the last ``nn.Linear``).
        seed: seeds model construction (with ``model_fn``), shuffling and augmentation;
            the global RNG state is left unchanged.
        eval_batch_size: batch size for evaluation.
        progress: show tqdm bars.
    """

    kappa: float = 0.125
    sparsity: float = 0.9
    ilo_weight: float = 1.0
    temperature: float = 0.5
    projection_dim: int | None = None
    projection_hidden: int = 128
    epochs: int = 10
    finetune_epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    finetune_lr: float | None = None
    optimizer: str = "adam"
    weight_decay: float = 0.0
    rewind_others: bool = True
    views: Transform | None = None
    standard_augment: Transform | None = None
    consistency_transform: Transform | None = None
    scarf_corruption: float = 0.6
    head: str | None = None
    seed: int = 0
    eval_batch_size: int = 1024
    progress: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.kappa, (int, float)) and math.isfinite(self.kappa) and self.kappa > 0):
            problems.append(f"kappa must be a finite number > 0, got {self.kappa!r}")
        if not 0.0 <= self.sparsity <= 1.0:
            problems.append(f"sparsity must be in [0, 1], got {self.sparsity!r}")
        if self.ilo_weight < 0:
            problems.append(f"ilo_weight must be >= 0, got {self.ilo_weight!r}")
        if not self.temperature > 0:
            problems.append(f"temperature must be > 0, got {self.temperature!r}")
        if self.epochs < 0 or self.finetune_epochs < 0:
            problems.append(f"epochs and finetune_epochs must be >= 0, got {self.epochs}, {self.finetune_epochs}")
        if self.batch_size < 2:
            problems.append(f"batch_size must be >= 2 (NT-Xent needs negatives), got {self.batch_size}")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            problems.append(f"optimizer must be 'adam', 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.projection_dim is not None and self.projection_dim < 1:
            problems.append(f"projection_dim must be a positive int or None, got {self.projection_dim!r}")
        if not 0.0 <= self.scarf_corruption <= 1.0:
            problems.append(f"scarf_corruption must be in [0, 1], got {self.scarf_corruption!r}")
        if problems:
            raise InvalidOptionError("Bad IUNETConfig: " + "; ".join(problems) + ".")

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-friendly values (transforms by their ``repr``)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)
        return out


@dataclass
class StageResult:
    """What was measured after one stage.

    Attributes:
        name: ``"init"``, ``"ilo"``, ``"pruned"``, ``"rewound"`` or ``"finetuned"``.
        test_accuracy: top-1 test accuracy after the stage, in [0, 1].
        consistency: share of test inputs whose prediction survives the consistency
            transform (``None`` when not measured).
        train_loss: mean training loss of the stage's last epoch (``None`` without training).
        seconds: wall time of the stage (training or pruning, evaluation excluded).
    """

    name: str
    test_accuracy: float
    consistency: float | None = None
    train_loss: float | None = None
    seconds: float = 0.0


@dataclass
class IUNETReport:
    """The outcome of :func:`run_iunet`.

    Attributes:
        stages: one :class:`StageResult` per stage, in order.
        encoder_sparsity: fraction of encoder weights that are zero-masked.
        total_sparsity: fraction of all Conv/Linear weights (head included) masked.
        n_encoder: number of encoder weights N_encoder.
        n_pruned: number of encoder weights pruned (``round(sparsity · N_encoder)``).
        prune_report: the :class:`~torch_prune_ext.PruneReport` (``None`` without pruning).
        config: the configuration as a dict.
        total_seconds: wall time of the whole run, evaluation included.
        model: the final network (not part of :meth:`to_dict`).
    """

    stages: list[StageResult]
    encoder_sparsity: float
    total_sparsity: float
    n_encoder: int
    n_pruned: int
    prune_report: PruneReport | None
    config: dict[str, Any]
    total_seconds: float
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    def stage(self, name: str) -> StageResult:
        """The result of the stage ``name``."""
        for s in self.stages:
            if s.name == name:
                return s
        raise UnknownNameError(f"No stage {name!r}; the stages are {[s.name for s in self.stages]}.")

    @property
    def final_accuracy(self) -> float:
        """Test accuracy of the returned model (the last stage)."""
        return self.stages[-1].test_accuracy

    @property
    def final_consistency(self) -> float | None:
        """Consistency of the returned model (the last stage)."""
        return self.stages[-1].consistency

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the model is left out)."""
        return {
            "stages": [dataclasses.asdict(s) for s in self.stages],
            "final_accuracy": self.final_accuracy,
            "final_consistency": self.final_consistency,
            "encoder_sparsity": self.encoder_sparsity,
            "total_sparsity": self.total_sparsity,
            "n_encoder": self.n_encoder,
            "n_pruned": self.n_pruned,
            "prune_report": None if self.prune_report is None else self.prune_report.to_dict(),
            "config": dict(self.config),
            "total_seconds": self.total_seconds,
        }

    def __str__(self) -> str:
        def fmt(v: float | None, pct: bool = True) -> str:
            return "-" if v is None else (f"{100 * v:.2f}" if pct else f"{v:.4f}")

        lines = [
            f"IUNET  kappa={self.config.get('kappa')}  lambda={self.config.get('ilo_weight')}  "
            f"encoder sparsity={100 * self.encoder_sparsity:.2f}% ({self.n_pruned}/{self.n_encoder})  "
            f"total sparsity={100 * self.total_sparsity:.2f}%",
            f"{'stage':<10} {'test acc %':>10} {'consist. %':>10} {'train loss':>10} {'seconds':>8}",
        ]
        for s in self.stages:
            lines.append(f"{s.name:<10} {fmt(s.test_accuracy):>10} {fmt(s.consistency):>10} "
                         f"{fmt(s.train_loss, False):>10} {s.seconds:>8.2f}")
        lines.append(f"total {self.total_seconds:.2f} s")
        return "\n".join(lines)
