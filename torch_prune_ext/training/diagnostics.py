"""Diagnostics of label-free distillation from the LNPT paper, and their plot.

:func:`learning_gap` is the feature distance between student and teacher;
:func:`weight_distance` the distance of the weights from their initial values;
:func:`plot_history` draws both (and the accuracy) per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..core.functional import eval_mode
from ..errors import InvalidOptionError, MissingDataError, MissingDependencyError
from .batches import input_batches
from .capture import FeatureLayer, capture_features, check_feature_shapes, teacher_outputs
from .losses import Distance, resolve_distance

__all__ = ["learning_gap", "plot_history", "weight_distance"]


def learning_gap(
    student: nn.Module,
    teacher: nn.Module,
    loader: Iterable[Any],
    *,
    distance: str | Distance = "mse",
    feature_layer: FeatureLayer = None,
    teacher_feature_layer: FeatureLayer = None,
    adapter: nn.Module | None = None,
    max_batches: int | None = None,
) -> float:
    """The LNPT learning gap: mean over batches of D(φ_S(x), φ_T(x)), both in eval mode.

    Args:
        student: the student (modes restored afterwards, nothing else changed).
        teacher: the teacher.
        loader: batches ``x`` or ``(x, y, ...)`` (labels are ignored), one tensor batch, or one
            ``(x, y)`` pair of tensors.
        distance: a name of :data:`DISTANCES` or a callable.
        feature_layer: the student's φ (default: input of its final Linear).
        teacher_feature_layer: the teacher's φ (default: same rule as ``feature_layer``).
        adapter: maps student features into the teacher's space.
        max_batches: stop after this many batches.

    Returns:
        The gap as a float.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> learning_gap(net, net, torch.randn(6, 4))
        0.0
    """
    dist = resolve_distance(distance)
    t_layer = feature_layer if teacher_feature_layer is None else teacher_feature_layer
    total, count = 0.0, 0
    with eval_mode(student, adapter), torch.no_grad():
        for x in input_batches(loader):
            if max_batches is not None and count >= max_batches:
                break
            _, phi_t = teacher_outputs(teacher, x, t_layer)
            with capture_features(student, feature_layer) as seen:
                student(x)
            phi_s = seen["features"] if adapter is None else adapter(seen["features"])
            check_feature_shapes(phi_s, phi_t, adapter is not None)
            total += float(dist(phi_s, phi_t))
            count += 1
    if count == 0:
        raise MissingDataError("learning_gap got no batch; pass a non-empty loader.")
    return total / count


def weight_distance(model: nn.Module, init_state: Mapping[str, torch.Tensor], *, relative: bool = False) -> float:
    """‖θ − θ₀‖₂ over every parameter that ``init_state`` holds (effective weights for pruned ones).

    Args:
        model: the network now.
        init_state: a ``state_dict()`` snapshot (cloned) taken at initialisation.
        relative: divide by ‖θ₀‖₂.

    Returns:
        The distance as a float.

    Examples:
        >>> net = torch.nn.Linear(2, 1, bias=False)
        >>> init = {k: v.clone() for k, v in net.state_dict().items()}
        >>> with torch.no_grad():
        ...     _ = net.weight.add_(torch.tensor([[3.0, 4.0]]))
        >>> round(weight_distance(net, init), 4)
        5.0
    """
    buffers = dict(model.named_buffers())
    squared, base = 0.0, 0.0
    for name, param in model.named_parameters():
        if name not in init_state:
            continue
        now, then = param.detach(), init_state[name].to(param.device, param.dtype)
        if name.endswith("_orig") and name[:-5] + "_mask" in buffers:
            mask = buffers[name[:-5] + "_mask"].to(param.dtype)
            now, then = now * mask, then * mask
        squared += float((now - then).pow(2).sum())
        base += float(then.pow(2).sum())
    distance = math.sqrt(squared)
    return distance / math.sqrt(base) if relative and base > 0 else distance


def plot_history(histories: Mapping[str, Sequence[Mapping[str, float]]] | Sequence[Mapping[str, float]],
                 path: str) -> None:
    """Plot learning gap, weight distance and accuracy per epoch (one line per run) into ``path``.

    Args:
        histories: one history, or ``{label: history}``.
        path: the image file to write (``.png``).

    Raises:
        MissingDependencyError: matplotlib is not installed (``pip install matplotlib``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise MissingDependencyError(
            "plot_history needs matplotlib, which is not installed. Install it with `pip install matplotlib`, "
            "or write the history to CSV instead."
        ) from error
    runs = dict(histories) if isinstance(histories, Mapping) else {"run": histories}
    keys = [k for k in ("learning_gap", "weight_distance", "accuracy")
            if any(k in rec for hist in runs.values() for rec in hist)]
    if not keys:
        raise InvalidOptionError("The histories hold no learning_gap, weight_distance or accuracy to plot.")
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for label, hist in runs.items():
            points = [(rec["epoch"], rec[key]) for rec in hist if key in rec]
            if points:
                ax.plot(*zip(*points), marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_title(key.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
