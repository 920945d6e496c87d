"""Reports: real per-layer sparsity, pruning runs, and layer collapse.

Sparsity is read from the ``*_mask`` buffers, never from ``parameters()`` (which
hold ``weight_orig``, dense).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import LayerCollapseError
from .functional import FunctionalModel, preserved_state
from .targets import Target, resolve_targets

logger = logging.getLogger("torch_prune_ext")


class _Counts:
    """Density and sparsity from ``kept`` and ``numel``."""

    kept: int
    numel: int

    @property
    def density(self) -> float:
        return self.kept / self.numel if self.numel else 1.0

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density


@dataclass(frozen=True)
class LayerSparsity(_Counts):
    """One pruned (or prunable) tensor: its name, shape, size and kept count."""

    name: str
    shape: tuple[int, ...]
    numel: int
    kept: int


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]], align: str) -> str:
    rows = [list(map(str, r)) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(headers), rule, *(fmt(r) for r in rows)])


@dataclass
class SparsityReport(_Counts):
    """Per-layer and global sparsity of a set of tensors.

    ``str(report)`` is a table; :meth:`to_dict` is JSON-serialisable.

    Examples:
        >>> report = SparsityReport([LayerSparsity("fc.weight", (2, 5), 10, 3)])
        >>> report.sparsity, report.collapsed
        (0.7, [])
    """

    layers: list[LayerSparsity]

    @property
    def numel(self) -> int:  # type: ignore[override]
        return sum(layer.numel for layer in self.layers)

    @property
    def kept(self) -> int:  # type: ignore[override]
        return sum(layer.kept for layer in self.layers)

    @property
    def collapsed(self) -> list[str]:
        """Names of tensors with every entry pruned."""
        return [layer.name for layer in self.layers if layer.numel and layer.kept == 0]

    def table(self) -> str:
        rows = [(l.name, "x".join(map(str, l.shape)), f"{l.numel:,}", f"{l.kept:,}", f"{l.density:.4f}")
                for l in self.layers]
        rows.append(("total", "", f"{self.numel:,}", f"{self.kept:,}", f"{self.density:.4f}"))
        return format_table(("tensor", "shape", "numel", "kept", "density"), rows, "llrrr")

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": [{**asdict(l), "shape": list(l.shape), "density": l.density} for l in self.layers],
            "numel": self.numel,
            "kept": self.kept,
            "density": self.density,
            "sparsity": self.sparsity,
            "collapsed": self.collapsed,
        }


def layer_sparsity(targets: Sequence[Target], masks: Sequence[torch.Tensor]) -> SparsityReport:
    """A :class:`SparsityReport` of resolved targets under the given masks."""
    return SparsityReport([
        LayerSparsity(t.name, tuple(m.shape), m.numel(), int((m != 0).sum())) for t, m in zip(targets, masks)
    ])


def sparsity_report(model: nn.Module, targets: Iterable[tuple[nn.Module, str]] | None = None) -> SparsityReport:
    """The real sparsity of a model, read from its ``*_mask`` buffers.

    Args:
        model: the network, pruned with ``torch.nn.utils.prune`` or not.
        targets: the tensors to report; by default every prunable Conv/Linear weight
            plus every other tensor that carries a pruning mask.

    Returns:
        A :class:`SparsityReport` (``str()`` prints a table, ``.sparsity`` is global).

    Examples:
        >>> import torch_prune_ext as tpe
        >>> net = torch.nn.Sequential(torch.nn.Linear(10, 10))
        >>> _ = torch.nn.utils.prune.random_unstructured(net[0], "weight", amount=0.3)
        >>> round(tpe.sparsity_report(net).sparsity, 2)
        0.3
    """
    if targets is None:
        from .targets import prunable_parameters

        pairs = prunable_parameters(model)
        known = {(id(m), n) for m, n in pairs}
        for module in model.modules():
            for name, _ in module.named_buffers(recurse=False):
                if name.endswith("_mask") and (id(module), name[:-5]) not in known:
                    pairs.append((module, name[:-5]))
                    known.add((id(module), name[:-5]))
        if not pairs:
            return SparsityReport([])
        targets = pairs
    resolved = resolve_targets(model, targets)
    return layer_sparsity(resolved, [t.current_mask() for t in resolved])


_MEAN_REMOVING_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
                        nn.LocalResponseNorm)


def paths_connected(
    model: nn.Module, targets: Sequence[Target], masks: Sequence[torch.Tensor], input_shape: tuple[int, ...]
) -> bool | None:
    """Whether any input-to-output path survives the masks.

    Runs the network on an all-ones input with every target weight replaced by its
    0/1 mask, every other parameter and buffer by its absolute value, biases and
    BatchNorm shifts/means set to zero, in eval mode and float64: the output is zero
    exactly when every path through the masked layers is cut (for networks built from
    linear maps, ReLUs, pooling and normalisation). Returns ``None`` when the model
    cannot be run that way or uses mean-removing normalisation (LayerNorm, GroupNorm,
    InstanceNorm), for which an all-ones probe proves nothing.
    """
    def linearise(name: str, tensor: torch.Tensor) -> torch.Tensor:
        if not tensor.is_floating_point():
            return tensor
        if name.endswith("bias") or name.endswith("running_mean"):
            return torch.zeros_like(tensor, dtype=torch.float64)
        return tensor.abs().to(torch.float64)

    if any(isinstance(m, _MEAN_REMOVING_NORMS) for m in model.modules()):
        return None  # they map a constant input to zero: the check would report false cuts
    weights = [
        torch.zeros_like(m, dtype=torch.float64) if t.tensor_name == "bias" else m.to(torch.float64)
        for t, m in zip(targets, masks)
    ]
    ones = [torch.ones_like(w) for w in weights]
    fm = FunctionalModel(model, targets, linearise)
    device = targets[0].raw.device
    try:
        with preserved_state(model), torch.no_grad():
            model.eval()
            out = fm(torch.ones((1, *input_shape), dtype=torch.float64, device=device), weights, ones)
    except Exception as error:  # diagnostic only: never fail a pruning run because of it
        logger.warning("Could not check input-output paths (%s); skipping the check.", error)
        return None
    if not isinstance(out, torch.Tensor):
        return None
    total = out.abs().sum()
    return bool(total > 0) or not bool(torch.isfinite(total))


@dataclass
class PruneReport:
    """The outcome of a :func:`~torch_prune_ext.global_prune` call.

    Attributes:
        method: the method's name.
        sparsity_requested: the requested final sparsity.
        rounds: the number of rounds run; ``schedule``: the density schedule.
        layers: per-target sparsity after pruning (:class:`SparsityReport`).
        round_seconds: wall time of every round.
        paths_connected: whether an input-output path survives (``None``: not checked).

    Examples:
        >>> import torch_prune_ext as tpe
        >>> net = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
        >>> report = tpe.global_prune(net, "magnitude", 0.5, input_shape=(6,))
        >>> report.method, report.sparsity, report.paths_connected, "0.weight" in str(report)
        ('magnitude', 0.5, True, True)
    """

    method: str
    sparsity_requested: float
    rounds: int
    schedule: str
    layers: SparsityReport
    round_seconds: list[float] = field(default_factory=list)
    paths_connected: bool | None = None

    @property
    def sparsity(self) -> float:
        return self.layers.sparsity

    @property
    def density(self) -> float:
        return self.layers.density

    @property
    def collapsed(self) -> list[str]:
        return self.layers.collapsed

    @property
    def total_seconds(self) -> float:
        return sum(self.round_seconds)

    @property
    def has_collapse(self) -> bool:
        return bool(self.collapsed) or self.paths_connected is False

    def __str__(self) -> str:
        lines = [
            f"{self.method}: sparsity {self.sparsity:.4%} (requested {self.sparsity_requested:.4%}), "
            f"{self.rounds} round(s), {self.schedule} schedule, {self.total_seconds:.2f} s",
            str(self.layers),
        ]
        if self.collapsed:
            lines.append(f"COLLAPSED (density 0): {', '.join(self.collapsed)}")
        if self.paths_connected is False:
            lines.append("DISCONNECTED: no input-to-output path survives the mask")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "sparsity_requested": self.sparsity_requested,
            "sparsity": self.sparsity,
            "rounds": self.rounds,
            "schedule": self.schedule,
            "round_seconds": list(self.round_seconds),
            "total_seconds": self.total_seconds,
            "paths_connected": self.paths_connected,
            **{"layers": self.layers.to_dict()},
        }


def check_collapse(
    model: nn.Module,
    targets: Sequence[Target],
    masks: Sequence[torch.Tensor],
    input_shape: tuple[int, ...] | None,
    policy: str,
    method: str,
) -> tuple[SparsityReport, bool | None]:
    """Detect layer collapse under ``masks`` and act on it.

    Args:
        model, targets, masks: the network, its targets and the proposed masks.
        input_shape: shape of one example, for the path check (``None`` skips it).
        policy: ``"warn"`` (a ``UserWarning``), ``"raise"`` (:class:`LayerCollapseError`,
            raised before anything is applied) or ``"ignore"``.
        method: the method's name, for the message.

    Returns:
        The per-target sparsity and whether an input-output path survives (``None``: unknown).
    """
    layers = layer_sparsity(targets, masks)
    connected = paths_connected(model, targets, masks, input_shape) if input_shape is not None else None
    if policy != "ignore" and (layers.collapsed or connected is False):
        problems = []
        if layers.collapsed:
            problems.append(f"prunes every weight of {', '.join(layers.collapsed)} (layer collapse)")
        if connected is False:
            problems.append("cuts every input-to-output path")
        elif connected:
            problems.append("input-to-output paths survive")
        message = (
            f"{method} at sparsity {layers.sparsity:.4%} {'; '.join(problems)}. "
            "Lower the sparsity or use more rounds; on_collapse='ignore' silences this."
        )
        if policy == "raise":
            raise LayerCollapseError(message + " Nothing was pruned.")
        warnings.warn(message, UserWarning, stacklevel=3)
    return layers, connected
