"""The two entry points: :func:`compute_scores` (one round, nothing changed) and
:func:`global_prune` (score, rank, mask; the convenient way). Both run the engine
(:mod:`torch_prune_ext.core.engine`), as the ``torch.nn.utils.prune`` adapter does."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .core import engine
from .core.report import PruneReport
from .core.scoring import RoundCallback, RoundState
from .methods import PruningMethod, method_and_config

logger = logging.getLogger("torch_prune_ext")

#: What names a method: a name from ``METHODS``, a method class, or a method's config object.
MethodSpec = str | type[PruningMethod] | Any


def compute_scores(
    model: nn.Module,
    method: MethodSpec,
    data: Any = None,
    *,
    targets: Iterable[tuple[nn.Module, str]] | None = None,
    config: Any = None,
    **options: Any,
) -> dict[str, torch.Tensor]:
    """Score every target once with ``method``; the model is left exactly as it was.

    Args:
        model: the network (may already be pruned with ``torch.nn.utils.prune``).
        method: a name from :data:`torch_prune_ext.METHODS`, a method class, or a method's
            config object (``tpe.PX.Config(mode="reference")``).
        data: the pruning data: a batch (``x`` or ``(x, y)``) or an iterable of batches.
        targets: ``(module, name)`` pairs; default :func:`prunable_parameters`.
        config: the method's config object, with ``method`` a name or class (one of the
            method's: another raises :class:`~torch_prune_ext.errors.InvalidOptionError`).
        **options: the common options (``seed``, ``input_shape``, ...) and, without a config,
            the method's own; ``rounds``/``schedule`` are accepted and ignored (one round is scored).

    Returns:
        One score tensor per target keyed by its qualified name (``"layer1.0.conv1.weight"``,
        also when the tensor is ``weight_orig``), same shape and device as the weight.
        Higher = more important.

    Examples:
        >>> import torch_prune_ext as tpe
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
        >>> scores = tpe.compute_scores(net, "snip", (x, y))
        >>> {name: tuple(s.shape) for name, s in scores.items()}
        {'0.weight': (3, 4), '2.weight': (2, 3)}
        >>> eval_mode = tpe.compute_scores(net, tpe.SNIP.Config(mode="eval"), (x, y))  # a config object
    """
    cls, config = method_and_config(method, config)
    common, config = engine.parse_options(cls, options, config)
    scored, scores = engine.score(cls, model, data, targets, common, config)
    return {t.name: s for t, s in zip(scored, scores)}


def global_prune(
    model: nn.Module,
    method: MethodSpec,
    sparsity: float,
    data: Any = None,
    *,
    targets: Iterable[tuple[nn.Module, str]] | None = None,
    rounds: int | None = None,
    schedule: str = "exponential",
    on_round: RoundCallback | None = None,
    resume: RoundState | None = None,
    config: Any = None,
    **options: Any,
) -> PruneReport:
    """Prune ``model`` globally to ``sparsity`` with ``method``, through ``torch.nn.utils.prune``.

    Args:
        model: the network (may already be pruned; pruned entries stay pruned).
        method: a name from :data:`torch_prune_ext.METHODS`, a method class, or a method's
            config object (``tpe.NTKSAP.Config(repeats=2, epsilon=0.01)``).
        sparsity: the final fraction of all target entries that are zero; exactly
            ``round(sparsity * N_total)`` entries are pruned (already-pruned ones count).
        data: the pruning data (a batch or an iterable of batches).
        targets: ``(module, name)`` pairs; default :func:`prunable_parameters`.
        rounds: scoring rounds (default: the method's); round r of R has density
            ``d ** (r / R)`` (exponential) or ``1 - (1 - d) * r / R`` (linear).
        schedule: ``"exponential"`` or ``"linear"``.
        on_round: called with a :class:`~torch_prune_ext.core.scoring.RoundState` after every
            round (masks so far and the generator state), e.g. to checkpoint a long run.
        resume: a ``RoundState`` saved by ``on_round`` from an interrupted call with the same
            arguments: the remaining rounds run and the result equals the uninterrupted run's.
        config: the method's config object, with ``method`` a name or class (one of the
            method's: another raises :class:`~torch_prune_ext.errors.InvalidOptionError`).
        **options: common options (``seed``, ``generator``, ``input_shape``,
            ``on_collapse="warn"|"raise"|"ignore"``, ``progress``) and, without a config, the
            method's own.

    Returns:
        A :class:`~torch_prune_ext.core.report.PruneReport`; ``print(report)`` shows the table.

    Raises:
        InvalidAmountError: ``sparsity`` outside [0, 1], or below the current sparsity (entries
            are never revived). Every error is raised before the model is changed.

    Examples:
        >>> import torch_prune_ext as tpe
        >>> net = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
        >>> report = tpe.global_prune(net, "synflow", 0.75, input_shape=(16,), rounds=10)
        >>> report.sparsity, torch.nn.utils.prune.is_pruned(net)
        (0.75, True)
    """
    goal = engine.SparsityGoal(sparsity)
    cls, config = method_and_config(method, config)
    common, config = engine.parse_options(cls, {**options, "rounds": rounds, "schedule": schedule}, config)
    outcome = engine.prune(cls, model, data, targets, common, config, goal, on_round=on_round, resume=resume)
    report = PruneReport(cls.name, goal.sparsity, outcome.rounds, common.schedule, outcome.layers, outcome.seconds,
                         outcome.connected)
    logger.info("%s pruned to sparsity %.4f in %.2f s", cls.name, report.sparsity, report.total_seconds)
    return report
