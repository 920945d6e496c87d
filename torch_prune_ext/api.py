"""The two entry points: :func:`compute_scores` (one round, nothing changed) and
:func:`global_prune` (score, rank, mask; the convenient way)."""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .core.checkpoint import apply_masks
from .core.report import PruneReport, check_collapse
from .core.scoring import RoundCallback, RoundState, check_same_on_ranks, score_once
from .errors import InvalidAmountError
from .methods import PruningMethod, resolve_method

logger = logging.getLogger("torch_prune_ext")


def compute_scores(
    model: nn.Module,
    method: str | type[PruningMethod],
    data: Any = None,
    *,
    targets: Iterable[tuple[nn.Module, str]] | None = None,
    **options: Any,
) -> dict[str, torch.Tensor]:
    """Score every target once with ``method``; the model is left exactly as it was.

    Args:
        model: the network (may already be pruned with ``torch.nn.utils.prune``).
        method: a name from :data:`torch_prune_ext.METHODS` or a method class.
        data: the pruning data: a batch (``x`` or ``(x, y)``) or an iterable of batches.
        targets: ``(module, name)`` pairs; default :func:`prunable_parameters`.
        **options: the method's options (``seed``, ``input_shape``, its own config fields);
            ``rounds``/``schedule`` are accepted and ignored (one round is scored).

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
    """
    cls = resolve_method(method)
    common, config = cls.parse_options(options)
    problem = cls.prepare(model, data, targets, common, config)
    scores = score_once(problem, lambda p: cls.score(p, config), cls.name)
    check_same_on_ranks(problem, scores, "the scores")
    return {t.name: s for t, s in zip(problem.targets, scores)}


def _validate_sparsity(sparsity: Any) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real) or not 0.0 <= float(sparsity) <= 1.0 \
            or math.isnan(float(sparsity)):
        raise InvalidAmountError(
            f"sparsity must be a number in [0, 1] (the final fraction of target entries that are zero), "
            f"got {sparsity!r}."
        )
    return float(sparsity)


def global_prune(
    model: nn.Module,
    method: str | type[PruningMethod],
    sparsity: float,
    data: Any = None,
    *,
    targets: Iterable[tuple[nn.Module, str]] | None = None,
    rounds: int | None = None,
    schedule: str = "exponential",
    on_round: RoundCallback | None = None,
    resume: RoundState | None = None,
    **options: Any,
) -> PruneReport:
    """Prune ``model`` globally to ``sparsity`` with ``method``, through ``torch.nn.utils.prune``.

    Args:
        model: the network (may already be pruned; pruned entries stay pruned).
        method: a name from :data:`torch_prune_ext.METHODS` or a method class.
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
        **options: common options (``seed``, ``generator``, ``input_shape``,
            ``on_collapse="warn"|"raise"|"ignore"``, ``progress``) and the method's own.

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
    sparsity = _validate_sparsity(sparsity)
    cls = resolve_method(method)
    common, config = cls.parse_options({**options, "rounds": rounds, "schedule": schedule})
    problem = cls.prepare(model, data, targets, common, config)
    n_total = sum(m.numel() for m in problem.masks)
    n_dead = sum(int((m == 0).sum()) for m in problem.masks)
    n_final = round(sparsity * n_total)
    if n_final < n_dead:
        raise InvalidAmountError(
            f"The targets are already {n_dead / n_total:.4%} sparse, more than the requested {sparsity:.4%}; "
            "pruned entries are never revived. Ask for a sparsity of at least the current one."
        )
    masks, seconds = cls.prune_problem(problem, config, common, n_final, final_density=1.0 - sparsity,
                                       on_round=on_round, resume=resume)
    layers, connected = check_collapse(model, problem.targets, masks, problem.known_input_shape(), common.on_collapse,
                                        cls.name)
    apply_masks(problem.targets, masks)
    report = PruneReport(cls.name, sparsity, cls.rounds_for(common), common.schedule, layers, seconds, connected)
    logger.info("%s pruned to sparsity %.4f in %.2f s", cls.name, report.sparsity, report.total_seconds)
    return report
