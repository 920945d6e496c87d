"""Label-free training of a pruned student by a frozen teacher (LNPT, stage B).

The loss on a batch ``x`` (labels, if the loader carries any, are never read) is::

    L = kd_weight * T² * KL(softmax(z_T / T) ‖ softmax(z_S / T)) + feat_weight * D(φ_S(x), φ_T(x))

with ``kd_weight = 1 - alpha`` and ``feat_weight = alpha`` by default (``T = 4``,
``alpha = 0.5``). ``φ`` are the penultimate features (the input of the final ``Linear``,
captured by a forward hook) or the output of a chosen ``feature_layer``; ``D`` is one of
:data:`DISTANCES`. The teacher runs in eval mode under ``no_grad`` on the same
(augmented) batch every step. The masks of a model pruned with ``torch.nn.utils.prune``
stay fixed: after every optimizer step the pruned entries of ``weight_orig`` are set
back to exactly zero, so weight decay, momentum or Adam never revive them, and
``prune.remove`` leaves exact zeros.

Diagnostics from the LNPT paper: :func:`learning_gap` (the feature distance between
student and teacher) and :func:`weight_distance` (the distance of the weights from their
initial values), recorded per epoch by :meth:`DistillationTrainer.fit`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..data.augment import Transform
from ..errors import InvalidOptionError, MissingDataError, MissingDependencyError, NonFiniteLossError
from .batches import batch_inputs
from .capture import FeatureLayer, capture_features, check_feature_shapes, teacher_outputs
from .diagnostics import learning_gap, plot_history, weight_distance
from .loop import optimizer_step, run_epoch
from .losses import DISTANCES, Distance, kd_loss, resolve_distance
from .masks import enforce_masks
from .metrics import accuracy

logger = logging.getLogger("torch_prune_ext")

# The names below were defined here before the training stack was split by job; they stay
# importable from this module.
__all__ = [
    "DISTANCES",
    "Distance",
    "DistillationTrainer",
    "FeatureLayer",
    "MissingDependencyError",
    "accuracy",
    "batch_inputs",
    "capture_features",
    "check_feature_shapes",
    "distill",
    "enforce_masks",
    "kd_loss",
    "learning_gap",
    "plot_history",
    "resolve_distance",
    "teacher_outputs",
    "weight_distance",
]

# --------------------------------------------------------------------------- trainer
class DistillationTrainer:
    """Stage B of LNPT: train a (pruned) student from a frozen teacher, without labels.

    Args:
        student: the student, possibly pruned with ``torch.nn.utils.prune``.
        teacher: the trained teacher (never updated; its modes are restored).
        optimizer: any ``torch.optim`` optimizer over the student's (and adapter's) parameters.
        scheduler: optional LR scheduler, stepped once per epoch (``scheduler.step()``).
        temperature: ``T`` of the soft pseudo-labels (default 4).
        alpha: feature weight; the loss is ``(1 - alpha)·KD + alpha·D`` (default 0.5).
        kd_weight: overrides ``1 - alpha``.
        feat_weight: overrides ``alpha``.
        distance: feature distance D, a name of :data:`DISTANCES` or a callable.
        pseudo_labels: ``"soft"`` (temperature KL) or ``"hard"`` (cross-entropy on the teacher's argmax).
        feature_layer: the student's φ (default: the input of its final Linear).
        teacher_feature_layer: the teacher's φ (default: same rule as ``feature_layer``).
        adapter: optional learnable map of φ_S into the teacher's feature space; put its
            parameters in ``optimizer``.
        transform: optional augmentation ``x -> x'`` applied once per batch; the teacher
            and the student both see ``x'``.
        masks: explicit 0/1 masks by parameter name for weights not pruned by torch.
        progress: show tqdm bars.

    Examples:
        >>> torch.manual_seed(0) and None
        >>> teacher = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> student = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> _ = torch.nn.utils.prune.random_unstructured(student[0], "weight", amount=0.5)
        >>> trainer = DistillationTrainer(student, teacher, torch.optim.SGD(student.parameters(), lr=0.1,
        ...                               momentum=0.9, weight_decay=5e-4), progress=False)
        >>> history = trainer.fit([torch.randn(16, 4) for _ in range(3)], epochs=2)
        >>> len(history), int((student[0].weight_orig[student[0].weight_mask == 0] != 0).sum())
        (2, 0)
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        scheduler: Any = None,
        temperature: float = 4.0,
        alpha: float = 0.5,
        kd_weight: float | None = None,
        feat_weight: float | None = None,
        distance: str | Distance = "mse",
        pseudo_labels: str = "soft",
        feature_layer: FeatureLayer = None,
        teacher_feature_layer: FeatureLayer = None,
        adapter: nn.Module | None = None,
        transform: Transform | None = None,
        masks: Mapping[str, torch.Tensor] | None = None,
        progress: bool = True,
    ) -> None:
        if not isinstance(teacher, nn.Module):
            raise MissingDataError("DistillationTrainer needs the teacher: pass teacher=<trained nn.Module>.")
        if not temperature > 0:
            raise InvalidOptionError(f"temperature must be > 0, got {temperature!r}.")
        if not 0.0 <= alpha <= 1.0:
            raise InvalidOptionError(f"alpha must be in [0, 1], got {alpha!r}.")
        if pseudo_labels not in ("soft", "hard"):
            raise InvalidOptionError(f"pseudo_labels must be 'soft' or 'hard', got {pseudo_labels!r}.")
        self.student = student
        self.teacher = teacher
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.temperature = float(temperature)
        self.kd_weight = 1.0 - alpha if kd_weight is None else float(kd_weight)
        self.feat_weight = alpha if feat_weight is None else float(feat_weight)
        self.distance = resolve_distance(distance)
        self.pseudo_labels = pseudo_labels
        self.feature_layer = feature_layer
        self.teacher_feature_layer = feature_layer if teacher_feature_layer is None else teacher_feature_layer
        self.adapter = adapter
        self.transform = transform
        self.masks = dict(masks) if masks else None
        self.progress = progress
        if adapter is not None:
            in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
            if any(id(p) not in in_optimizer for p in adapter.parameters()):
                logger.warning("The adapter's parameters are not in the optimizer; the adapter will not be trained.")

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The distillation loss on one (already augmented) batch, with its parts.

        Returns:
            The scalar loss (with a graph to the student) and ``{"kd": ..., "feat": ...}``.
        """
        z_t, phi_t = teacher_outputs(self.teacher, x, self.teacher_feature_layer)
        with capture_features(self.student, self.feature_layer) as seen:
            z_s = self.student(x)
        kd = kd_loss(z_s, z_t, self.temperature, self.pseudo_labels)
        total = self.kd_weight * kd
        feat = torch.zeros((), device=x.device)
        if self.feat_weight != 0.0:
            phi_s = seen["features"] if self.adapter is None else self.adapter(seen["features"])
            check_feature_shapes(phi_s, phi_t, self.adapter is not None)
            feat = self.distance(phi_s, phi_t)
            total = total + self.feat_weight * feat
        return total, {"kd": float(kd.detach()), "feat": float(feat.detach())}

    def step(self, batch: Any) -> dict[str, float]:
        """One optimizer step on a batch (labels ignored); the masks are re-applied after it."""
        x = batch_inputs(batch)
        if self.transform is not None:
            x = self.transform(x)
        self.student.train()
        if self.adapter is not None:
            self.adapter.train()
        total, parts = self.loss(x)
        if not torch.isfinite(total):
            raise NonFiniteLossError(
                f"The distillation loss is {float(total)}; lower the learning rate or check the inputs."
            )
        optimizer_step(self.optimizer, total, model=self.student, masks=self.masks)
        return {"loss": float(total.detach()), **parts}

    def fit(
        self,
        loader: Iterable[Any],
        epochs: int = 1,
        *,
        eval_loader: Iterable[Any] | None = None,
        gap_loader: Iterable[Any] | None = None,
        init_state: Mapping[str, torch.Tensor] | None = None,
        diagnostics: bool = True,
    ) -> list[dict[str, float]]:
        """Train for ``epochs`` over ``loader`` (labels never read).

        Args:
            loader: batches ``x`` or ``(x, y)``; a ``DataLoader`` or a list.
            epochs: passes over ``loader``.
            eval_loader: labelled ``(x, y)`` batches for the per-epoch test accuracy
                (evaluation only; training never reads labels).
            gap_loader: batches for the per-epoch learning gap (default: ``eval_loader``,
                else ``loader``).
            init_state: the weights the distance is measured from (default: the student's
                state at the start of ``fit``).
            diagnostics: record ``learning_gap`` and ``weight_distance`` every epoch.

        Returns:
            The history: one dict per epoch with ``epoch``, ``loss``, ``kd``, ``feat``,
            ``lr``, ``seconds`` and, with diagnostics, ``learning_gap``,
            ``weight_distance`` and (with ``eval_loader``) ``accuracy``.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise InvalidOptionError(f"epochs must be an int >= 0, got {epochs!r}.")
        if init_state is None:
            init_state = {k: v.detach().clone() for k, v in self.student.state_dict().items()}
        enforce_masks(self.student, self.masks)
        teacher_modes = [(m, m.training) for m in self.teacher.modules()]
        history: list[dict[str, float]] = []
        try:
            for epoch in range(1, epochs + 1):
                start = time.perf_counter()
                sums, count = run_epoch(loader, lambda batch: (self.step(batch), 1),
                                        desc=f"distill epoch {epoch}/{epochs}", progress=self.progress)
                if count == 0:
                    raise MissingDataError("The training loader yielded no batch.")
                record: dict[str, float] = {"epoch": epoch, **{k: v / count for k, v in sums.items()},
                                            "lr": float(self.optimizer.param_groups[0]["lr"])}
                if self.scheduler is not None:
                    self.scheduler.step()
                if diagnostics:
                    record["learning_gap"] = learning_gap(
                        self.student, self.teacher, gap_loader or eval_loader or loader, distance=self.distance,
                        feature_layer=self.feature_layer, teacher_feature_layer=self.teacher_feature_layer,
                        adapter=self.adapter)
                    record["weight_distance"] = weight_distance(self.student, init_state)
                    if eval_loader is not None:
                        record["accuracy"] = accuracy(self.student, eval_loader)
                record["seconds"] = time.perf_counter() - start
                logger.info("distill epoch %d: %s", epoch,
                            ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"))
                history.append(record)
        finally:
            for module, training in teacher_modes:
                module.training = training
        return history


def distill(
    student: nn.Module,
    teacher: nn.Module,
    loader: Iterable[Any],
    epochs: int = 1,
    *,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    cosine: bool = True,
    eval_loader: Iterable[Any] | None = None,
    gap_loader: Iterable[Any] | None = None,
    **trainer_options: Any,
) -> list[dict[str, float]]:
    """Train ``student`` from ``teacher`` with the LNPT reference recipe (SGD, momentum, cosine LR).

    Args:
        student: the (pruned) student.
        teacher: the frozen teacher.
        loader: unlabelled (or labelled; labels ignored) training batches.
        epochs: number of epochs.
        lr: initial learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        cosine: anneal the learning rate to 0 over ``epochs`` (per epoch).
        eval_loader: labelled batches for the per-epoch accuracy (evaluation only).
        gap_loader: batches for the per-epoch learning gap (see :meth:`DistillationTrainer.fit`).
        **trainer_options: further :class:`DistillationTrainer` options (``alpha``, ``temperature``,
            ``adapter``, ``transform``, ``progress``, ...).

    Returns:
        The history of :meth:`DistillationTrainer.fit`.

    Examples:
        >>> teacher = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> student = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> h = distill(student, teacher, [torch.randn(8, 4)], epochs=1, progress=False)
        >>> sorted(h[0])[:3]
        ['epoch', 'feat', 'kd']
    """
    adapter = trainer_options.get("adapter")
    params = list(student.parameters()) + (list(adapter.parameters()) if adapter is not None else [])
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(epochs, 1)) if cosine else None
    trainer = DistillationTrainer(student, teacher, optimizer, scheduler=scheduler, **trainer_options)
    return trainer.fit(loader, epochs, eval_loader=eval_loader, gap_loader=gap_loader)
