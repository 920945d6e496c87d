"""One training stack: the loop, accuracy, losses, feature capture, masks, and LNPT distillation.

- :mod:`.loop`: :func:`optimizer_step`, :func:`run_epoch`, :func:`train_epochs` (used by
  :func:`torch_prune_ext.evaluation.train_model`, IUNET and :class:`DistillationTrainer`);
- :mod:`.batches`: :func:`minibatches` (the one seeded batch splitter), :func:`batch_inputs`,
  :func:`input_batches`, :func:`model_device`;
- :mod:`.metrics`: :func:`accuracy` (labelled batches) and :func:`tensor_accuracy` (tensors);
- :mod:`.losses`: the feature distances :data:`DISTANCES` and :func:`kd_loss`;
- :mod:`.capture`: :func:`capture_features` and :func:`teacher_outputs`;
- :mod:`.masks`: :func:`enforce_masks` (pruned entries stay exactly zero);
- :mod:`.distill`: label-free distillation of a pruned student (LNPT stage B);
- :mod:`.diagnostics`: :func:`learning_gap`, :func:`weight_distance`, :func:`plot_history`.
"""

from __future__ import annotations

from ..errors import MissingDependencyError
from .batches import batch_inputs, input_batches, minibatches, model_device
from .capture import capture_features, teacher_outputs
from .diagnostics import learning_gap, plot_history, weight_distance
from .distill import DistillationTrainer, distill
from .loop import optimizer_step, run_epoch, train_epochs
from .losses import DISTANCES, kd_loss, resolve_distance
from .masks import enforce_masks
from .metrics import accuracy, tensor_accuracy

__all__ = [
    "DISTANCES",
    "DistillationTrainer",
    "MissingDependencyError",
    "accuracy",
    "batch_inputs",
    "capture_features",
    "distill",
    "enforce_masks",
    "input_batches",
    "kd_loss",
    "learning_gap",
    "minibatches",
    "model_device",
    "optimizer_step",
    "plot_history",
    "resolve_distance",
    "run_epoch",
    "tensor_accuracy",
    "teacher_outputs",
    "train_epochs",
    "weight_distance",
]
