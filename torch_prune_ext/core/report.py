"""Reports: real per-layer sparsity, pruning runs, layer collapse and emptied layers.

Sparsity is read from the ``*_mask`` buffers, never from ``parameters()`` (which
hold ``weight_orig``, dense).

Two outcomes of a mask are told apart:

* **layer collapse**: every input-to-output path is cut (the network computes a
  constant); ``on_collapse="raise"`` refuses such a mask.
* **emptied**: a target at density 0 while a path survives (e.g. a residual branch
  behind its skip connection, a Transformer feed-forward layer behind the residual
  stream), or while the path check could not run (see :func:`paths_connected`): it is
  reported and warned about, never refused.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import LayerCollapseError, LayerCollapseWarning, LayerEmptiedWarning
from .functional import FunctionalModel, preserved_state
from .targets import Target, prunable_parameters, resolve_targets

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
        >>> report = SparsityReport([LayerSparsity("fc.weight", (2, 5), 10, 3), LayerSparsity("out.weight", (1, 2), 2, 0)])
        >>> round(report.sparsity, 4), report.empty
        (0.75, ['out.weight'])
    """

    layers: list[LayerSparsity]

    @property
    def numel(self) -> int:  # type: ignore[override]
        return sum(layer.numel for layer in self.layers)

    @property
    def kept(self) -> int:  # type: ignore[override]
        return sum(layer.kept for layer in self.layers)

    @property
    def empty(self) -> list[str]:
        """Names of tensors with every entry pruned (density 0).

        A fact about the masks alone: whether it disconnects the network (layer collapse)
        or leaves a live path (emptied) is told by :class:`PruneReport`.
        """
        return [layer.name for layer in self.layers if layer.numel and layer.kept == 0]

    @property
    def collapsed(self) -> list[str]:
        """Deprecated name of :attr:`empty` (density-0 tensors, connected or not); use :attr:`empty`,
        or :attr:`PruneReport.collapsed` / :attr:`PruneReport.emptied` which tell the two apart."""
        warnings.warn("SparsityReport.collapsed is deprecated: it lists density-0 tensors (SparsityReport.empty); "
                      "PruneReport.collapsed and PruneReport.emptied tell a disconnection from an emptied layer.",
                      DeprecationWarning, stacklevel=2)
        return self.empty

    def table(self, marks: Mapping[str, str] | None = None) -> str:
        """The per-tensor table with a total row.

        Args:
            marks: a word per tensor name for a last ``note`` column (``PruneReport`` passes
                ``"COLLAPSED"``/``"emptied"``); default ``"density 0"`` for every empty tensor.
                The column is left out when no tensor is marked.
        """
        marks = {name: "density 0" for name in self.empty} if marks is None else marks
        rows = [[l.name, "x".join(map(str, l.shape)), f"{l.numel:,}", f"{l.kept:,}", f"{l.density:.4f}"]
                for l in self.layers]
        rows.append(["total", "", f"{self.numel:,}", f"{self.kept:,}", f"{self.density:.4f}"])
        headers, align = ["tensor", "shape", "numel", "kept", "density"], "llrrr"
        if marks:
            rows = [[*row, marks.get(row[0], "") if i < len(self.layers) else ""] for i, row in enumerate(rows)]
            headers, align = [*headers, "note"], align + "l"
        return format_table(headers, rows, align)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": [{**asdict(l), "shape": list(l.shape), "density": l.density} for l in self.layers],
            "numel": self.numel,
            "kept": self.kept,
            "density": self.density,
            "sparsity": self.sparsity,
            "empty": self.empty,
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


#: Normalisations that map a constant input to zero: the all-ones probe proves nothing through them.
_MEAN_REMOVING_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LocalResponseNorm)


def _positive_layer_norm(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
    """LayerNorm/GroupNorm in the path probe: ``|gamma| * (x + mean(x))`` over each normalised group.

    Every output entry depends on every input entry of its group, as through the real
    normalisation, but nothing cancels: the output is zero exactly when the group's input is.
    """
    x = args[0]
    if isinstance(module, nn.LayerNorm):
        dims = tuple(range(-len(module.normalized_shape), 0))
        y = x + x.mean(dim=dims, keepdim=True)
        return y * module.weight if module.weight is not None else y
    groups = x.reshape(x.shape[0], module.num_groups, -1)
    y = (groups + groups.mean(dim=-1, keepdim=True)).reshape(x.shape)
    return y * module.weight.reshape(1, -1, *([1] * (x.dim() - 2))) if module.weight is not None else y


@contextlib.contextmanager
def _probing_norms(model: nn.Module) -> Iterator[None]:
    """LayerNorm/GroupNorm replaced by :func:`_positive_layer_norm` and torch's fused attention
    fast path (which bypasses the norm modules) off, inside the ``with`` block."""
    handles = [m.register_forward_hook(_positive_layer_norm) for m in model.modules()
               if isinstance(m, (nn.LayerNorm, nn.GroupNorm))]
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for handle in handles:
            handle.remove()


def paths_connected(
    model: nn.Module, targets: Sequence[Target], masks: Sequence[torch.Tensor], input_shape: tuple[int, ...]
) -> bool | None:
    """Whether any input-to-output path survives the masks.

    Runs the network on an all-ones input with every target weight replaced by its
    0/1 mask, every other parameter and buffer by its absolute value, biases and
    BatchNorm shifts/means set to zero, LayerNorm/GroupNorm by a positive mixing of each
    normalised group (:func:`_positive_layer_norm`), in eval mode and float64: the output
    is zero exactly when every path through the masked layers is cut (for networks built
    from linear maps, ReLUs, pooling, attention and normalisation). Returns ``None`` when
    the model cannot be run that way or uses InstanceNorm or LocalResponseNorm, for which
    an all-ones probe proves nothing. With ``None`` a density-0 target is reported as
    *emptied* (paths not checked), never as a layer collapse.
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
        with preserved_state(model), torch.no_grad(), _probing_norms(model):
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

    Collapse and emptied layers (``layers.empty`` are the density-0 targets):

    * :attr:`has_collapse`: ``paths_connected is False``, every input-output path is cut.
    * :attr:`collapsed`: the density-0 targets of a collapsed network (empty otherwise; a
      network can also collapse with no empty target, through scattered cuts).
    * :attr:`emptied`: the density-0 targets of a network that is not known to be cut: a
      path survives, or the path check did not run (``paths_connected is None``, e.g. with
      LayerNorm/GroupNorm): an emptied layer is never reported as a collapse unchecked.

    Examples:
        >>> import torch_prune_ext as tpe
        >>> net = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
        >>> report = tpe.global_prune(net, "magnitude", 0.5, input_shape=(6,))
        >>> report.method, report.sparsity, report.paths_connected, "0.weight" in str(report)
        ('magnitude', 0.5, True, True)
        >>> report.has_collapse, report.collapsed, report.emptied
        (False, [], [])
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
    def has_collapse(self) -> bool:
        """Whether every input-to-output path is cut (layer collapse)."""
        return self.paths_connected is False

    @property
    def collapsed(self) -> list[str]:
        """The density-0 targets when the network is disconnected, else ``[]``."""
        return self.layers.empty if self.has_collapse else []

    @property
    def emptied(self) -> list[str]:
        """The density-0 targets when the network is not known to be disconnected, else ``[]``."""
        return [] if self.has_collapse else self.layers.empty

    @property
    def total_seconds(self) -> float:
        return sum(self.round_seconds)

    def layer_marks(self) -> dict[str, str]:
        """``"COLLAPSED"`` or ``"emptied"`` for every density-0 target (the table's note column)."""
        return {**{name: "COLLAPSED" for name in self.collapsed}, **{name: "emptied" for name in self.emptied}}

    def table(self) -> str:
        """The per-target table, density-0 targets marked ``COLLAPSED`` or ``emptied``."""
        return self.layers.table(self.layer_marks())

    def __str__(self) -> str:
        lines = [
            f"{self.method}: sparsity {self.sparsity:.4%} (requested {self.sparsity_requested:.4%}), "
            f"{self.rounds} round(s), {self.schedule} schedule, {self.total_seconds:.2f} s",
            self.table(),
        ]
        if self.has_collapse:
            lines.append("LAYER COLLAPSE: no input-to-output path survives the mask"
                         + (f" (density 0: {', '.join(self.collapsed)})" if self.collapsed else ""))
        if self.emptied:
            lines.append(f"emptied (density 0, {_path_state(self.paths_connected)}): {', '.join(self.emptied)}")
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
            "has_collapse": self.has_collapse,
            "collapsed": self.collapsed,
            "emptied": self.emptied,
            **{"layers": self.layers.to_dict()},
        }


def _path_state(connected: bool | None) -> str:
    """How an emptied layer's surroundings were checked, in words."""
    return "input-output paths survive" if connected else "input-output paths not checked"


def flat_input_shape(model: nn.Module) -> tuple[int, ...] | None:
    """``(in_features,)`` when the model's first module with parameters is a ``Linear``, else ``None``.

    The path check's guess of one example's shape when none is given (a wrong guess makes
    the probe fail, which leaves the check unknown).

    Examples:
        >>> flat_input_shape(nn.Sequential(nn.Flatten(), nn.Linear(12, 3))), flat_input_shape(nn.Conv2d(3, 4, 3))
        ((12,), None)
    """
    first = next((m for m in model.modules() if next(m.parameters(recurse=False), None) is not None), None)
    return (first.in_features,) if isinstance(first, nn.Linear) else None


def caller_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning raised by the calling function point at the user's
    code: the first frame outside this package and ``torch.nn.utils.prune``."""
    package = __name__.split(".")[0]
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith((package + ".", "torch.nn.utils.prune")):
        level, frame = level + 1, frame.f_back
    return level


def check_collapse(
    model: nn.Module,
    targets: Sequence[Target],
    masks: Sequence[torch.Tensor],
    input_shape: tuple[int, ...] | None,
    policy: str,
    method: str,
) -> tuple[SparsityReport, bool | None]:
    """Detect layer collapse (every input-output path cut) and emptied targets under ``masks``; act on them.

    Args:
        model, targets, masks: the network, its targets and the proposed masks.
        input_shape: shape of one example, for the path check; ``None``: :func:`flat_input_shape`
            of the model, and without one the check is skipped.
        policy: ``"warn"`` (a :class:`~torch_prune_ext.errors.LayerCollapseWarning` for a
            collapse, a :class:`~torch_prune_ext.errors.LayerEmptiedWarning` for emptied
            targets), ``"raise"`` (:class:`LayerCollapseError` for a collapse, raised before
            anything is applied; emptied targets are still warned about) or ``"ignore"``.
        method: the method's name, for the messages.

    Returns:
        The per-target sparsity and whether an input-output path survives (``None``: unknown).
    """
    layers = layer_sparsity(targets, masks)
    input_shape = input_shape if input_shape is not None else flat_input_shape(model)
    connected = paths_connected(model, targets, masks, input_shape) if input_shape is not None else None
    if policy == "ignore":
        return layers, connected
    where = f"{method} at sparsity {layers.sparsity:.4%}"
    if connected is False:
        empty = f" (every weight of {', '.join(layers.empty)} is pruned)" if layers.empty else ""
        message = (f"{where} cuts every input-to-output path{empty}: layer collapse. Lower the sparsity or use "
                   "more rounds; on_collapse='ignore' silences this.")
        if policy == "raise":
            raise LayerCollapseError(message + " Nothing was pruned.")
        warnings.warn(message, LayerCollapseWarning, stacklevel=caller_stacklevel())
    elif layers.empty:
        warnings.warn(
            f"{where} prunes every weight of {', '.join(layers.empty)} ({_path_state(connected)}): emptied, not "
            "a layer collapse. on_collapse='ignore' silences this.", LayerEmptiedWarning, stacklevel=caller_stacklevel())
    return layers, connected
