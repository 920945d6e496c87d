"""The one pruning engine: options -> prepare -> count schedule -> rounds -> collapse check -> masks.

:func:`torch_prune_ext.global_prune`, :func:`torch_prune_ext.compute_scores` and the
``torch.nn.utils.prune`` adapter (:class:`~torch_prune_ext.methods.base.PruningMethod`'s
``compute_mask`` and ``apply``) all run through here, so counting, scheduling and the
collapse check exist once. A *method* is a small record (``name``, ``Config``,
``default_rounds``, the ``needs_*`` flags, ``default_targets``, ``check_problem`` and a pure
``score(problem, config)``); the engine never writes into the model: :func:`plan` returns the
final masks, and the caller applies them (:func:`prune` with
:func:`~torch_prune_ext.core.checkpoint.apply_masks`, or torch through the adapter).

Examples:
    >>> import torch_prune_ext as tpe
    >>> net = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> options, config = parse_options(tpe.Magnitude, {"progress": False})
    >>> outcome = plan(tpe.Magnitude, net, None, None, options, config, SparsityGoal(0.5))
    >>> outcome.pruned, torch.nn.utils.prune.is_pruned(net)  # nothing applied yet
    (16, False)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InvalidAmountError, InvalidOptionError, MissingDataError, UnknownOptionError
from .batches import PruningData
from .checkpoint import apply_masks
from .distributed import failures_reported
from .report import check_collapse
from .schedules import pruned_counts
from .scoring import PruningOptions, RoundCallback, RoundState, ScoringProblem, check_same_on_ranks, run_schedule, \
    score_once
from .targets import Target, resolve_targets

#: Keyword names that belong to ``torch.nn.utils.prune`` and can never be method options.
_TORCH_NAMES = frozenset({"parameters", "pruning_method", "importance_scores"})
_COMMON_OPTIONS = tuple(f.name for f in dataclasses.fields(PruningOptions))


# ----------------------------------------------------------------------- options
def is_config(value: Any) -> bool:
    """Whether ``value`` is a method's config instance (``tpe.NTKSAP.Config(repeats=2)``)."""
    return dataclasses.is_dataclass(value) and not isinstance(value, type) \
        and getattr(type(value), "method", None) is not None


def option_names(method: Any) -> list[str]:
    """Every keyword option ``method`` accepts: the common ones, then its ``Config`` fields."""
    return [*_COMMON_OPTIONS, *(f.name for f in dataclasses.fields(method.Config))]


def _check_config(method: Any, config: Any) -> None:
    """Raise unless ``config`` is an instance of ``method.Config``."""
    if not isinstance(config, method.Config):
        owner = getattr(type(config), "method", None)
        whose = f"{owner.__name__}'s config" if owner is not None else "not a method config"
        raise InvalidOptionError(
            f"{method.__name__} got config={type(config).__name__}(...) ({whose}). Pass "
            f"{method.__name__}.Config(...), or name the method the config belongs to."
        )


def parse_options(method: Any, options: dict[str, Any], config: Any = None) -> tuple[PruningOptions, Any]:
    """Split keyword options into the common :class:`PruningOptions` and the method's ``Config``.

    Args:
        method: the method class.
        options: the keyword options (common ones and, without ``config``, the method's own).
        config: the method's config object, if the caller gave one (then the method's own
            options may not be given as keywords too).

    Returns:
        ``(common options, config)``.

    Raises:
        UnknownOptionError: a keyword that neither the common options nor the config know.
        InvalidOptionError: a bad value, a config of another method, or a config together
            with some of its fields as keywords.
    """
    own = {f.name for f in dataclasses.fields(method.Config)}
    unknown = sorted(set(options) - own - set(_COMMON_OPTIONS))
    if unknown:
        reserved = [name for name in unknown if name in _TORCH_NAMES]
        hint = (f" {', '.join(reserved)} belong(s) to torch.nn.utils.prune and cannot be method options."
                if reserved else "")
        raise UnknownOptionError(
            f"{method.__name__} got unknown option(s) {', '.join(unknown)}.{hint} "
            f"Its options are: {', '.join(option_names(method))}."
        )
    common = PruningOptions(**{k: v for k, v in options.items() if k in _COMMON_OPTIONS})
    given = {k: v for k, v in options.items() if k in own}
    if config is not None:
        _check_config(method, config)
        if given:
            raise InvalidOptionError(
                f"{method.__name__} got a config and its field(s) {', '.join(sorted(given))} as keywords; set them in "
                f"the config: dataclasses.replace(config, {', '.join(f'{k}=...' for k in sorted(given))})."
            )
        return common, config
    try:
        return common, method.Config(**given)
    except (TypeError, ValueError) as error:
        raise InvalidOptionError(f"{method.__name__}: {error}") from error


def rounds_for(method: Any, options: PruningOptions) -> int:
    """The scoring rounds: ``options.rounds``, else the method's ``default_rounds``."""
    return options.rounds if options.rounds is not None else method.default_rounds


# ----------------------------------------------------------------------- prepare
def prepare(method: Any, model: nn.Module, data: Any, targets: Iterable[tuple[nn.Module, str]] | None,
            options: PruningOptions, config: Any = None) -> ScoringProblem:
    """Check the inputs and build the scoring problem (nothing is modified).

    Args:
        method: the method class.
        model, data: as given by the caller.
        targets: ``(module, name)`` pairs; ``None``: ``method.default_targets`` (by default
            :func:`~torch_prune_ext.core.targets.prunable_parameters`).
        options: the common options.
        config: the method's config (default: ``method.Config()``).

    Raises:
        MissingDataError: the method needs data, labels or an input shape that are missing.
        TargetError: bad targets; and whatever ``method.check_problem`` raises.
    """
    config = method.Config() if config is None else config
    if targets is None:
        targets = method.default_targets(model, config)
    resolved: list[Target] = resolve_targets(model, targets)
    group = options.scoring_group()
    with failures_reported(group):
        shard = (group.rank, group.world_size) if group is not None and group.shard_data else None
        pruning_data = PruningData(data, resolved[0].raw.device, resolved[0].raw.dtype, shard)
        _check_needs(method, pruning_data, options)
        problem = ScoringProblem(model=model, targets=resolved, masks=[t.current_mask() for t in resolved],
                                 data=pruning_data, generator=options.make_generator(),
                                 input_shape=options.input_shape, group=group)
        problem.check_ranks_agree(method.name, needs_batches=method.needs_data or method.needs_labels)
        method.check_problem(problem, config)
    return problem


def _check_needs(method: Any, data: PruningData, options: PruningOptions) -> None:
    """Raise :class:`MissingDataError` when the method's data, labels or input shape are missing."""
    if (method.needs_data or method.needs_labels) and not data.given:
        what = "labelled data (batches of (x, y))" if method.needs_labels else "data"
        raise MissingDataError(f"{method.name} needs {what}: pass data=<batch or DataLoader>.")
    if method.needs_input_shape and options.input_shape is None and not data.given:
        raise MissingDataError(f"{method.name} needs the shape of one input: pass input_shape=(C, H, W) or data=.")


# ------------------------------------------------------------------------- goals
def _counts(masks: Sequence[torch.Tensor]) -> tuple[int, int]:
    """``(entries, pruned entries)`` of the masks."""
    return sum(m.numel() for m in masks), sum(int((m == 0).sum()) for m in masks)


@dataclass(frozen=True)
class SparsityGoal:
    """``global_prune``'s goal: ``round(sparsity * N)`` zeros among all ``N`` target entries.

    The density schedule refers to all entries, pruned ones included.
    """

    sparsity: float

    def __post_init__(self) -> None:
        value = self.sparsity
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(float(value)) \
                or not 0.0 <= float(value) <= 1.0:
            raise InvalidAmountError(
                f"sparsity must be a number in [0, 1] (the final fraction of target entries that are zero), "
                f"got {value!r}."
            )
        object.__setattr__(self, "sparsity", float(value))

    def counts(self, masks: Sequence[torch.Tensor], rounds: int, schedule: str) -> list[int]:
        """Total pruned entries after each round.

        Raises:
            InvalidAmountError: the targets are already sparser than asked (nothing is revived).
        """
        n_total, n_dead = _counts(masks)
        n_final = round(self.sparsity * n_total)
        if n_final < n_dead:
            raise InvalidAmountError(
                f"The targets are already {n_dead / n_total:.4%} sparse, more than the requested "
                f"{self.sparsity:.4%}; pruned entries are never revived. Ask for a sparsity of at least the current one."
            )
        return pruned_counts(n_total, n_final, n_dead, rounds, schedule, 1.0 - self.sparsity)


@dataclass(frozen=True)
class AmountGoal:
    """torch's goal: prune ``amount`` of the still-unpruned entries (a float fraction, or an int count).

    The density schedule refers to the unpruned entries, as torch's ``amount`` does.
    """

    amount: float | int

    def __post_init__(self) -> None:
        """Check ``amount`` as torch does, with clearer messages: a float in [0, 1] or an int >= 0."""
        amount = self.amount
        if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
            raise InvalidAmountError(
                f"amount must be a float in [0, 1] (fraction of the unpruned entries) or an int >= 0 (a count), "
                f"got {amount!r}."
            )
        if isinstance(amount, numbers.Integral):
            if amount < 0:
                raise InvalidAmountError(f"amount={amount} is a negative count; pass an int >= 0 or a float in [0, 1].")
        elif not 0.0 <= float(amount) <= 1.0:
            raise InvalidAmountError(f"amount={amount!r} is outside [0, 1]; pass the fraction of entries to prune.")

    def pruned_now(self, n_alive: int) -> int:
        """The number of entries torch prunes for ``amount`` out of ``n_alive`` (``round`` for a float)."""
        if isinstance(self.amount, numbers.Integral):
            if self.amount > n_alive:
                raise InvalidAmountError(
                    f"amount={self.amount} is more than the {n_alive} entries still unpruned; pass at most {n_alive}."
                )
            return int(self.amount)
        return round(float(self.amount) * n_alive)

    def counts(self, masks: Sequence[torch.Tensor], rounds: int, schedule: str) -> list[int]:
        """Total pruned entries after each round."""
        n_total, n_dead = _counts(masks)
        n_alive = n_total - n_dead
        density = None if isinstance(self.amount, numbers.Integral) else 1.0 - float(self.amount)
        return [n_dead + c for c in pruned_counts(n_alive, self.pruned_now(n_alive), 0, rounds, schedule, density)]


Goal = SparsityGoal | AmountGoal


# ---------------------------------------------------------------------- running
@dataclass
class Outcome:
    """What :func:`plan` found: the masks before and after, and how the rounds went (nothing applied).

    Attributes:
        method: the method class.
        problem: the scoring problem (its targets, in target order).
        before: the masks the run started from.
        masks: the final masks.
        rounds: the scheduled rounds.
        seconds: wall time of every round.
        layers, connected: the collapse check's per-layer summary and path verdict.
    """

    method: Any
    problem: ScoringProblem
    before: list[torch.Tensor]
    masks: list[torch.Tensor]
    rounds: int
    seconds: list[float]
    layers: Any
    connected: Any

    @property
    def pruned(self) -> int:
        """Entries pruned in all, already-pruned ones included."""
        return _counts(self.masks)[1]


def plan(method: Any, model: nn.Module, data: Any, targets: Iterable[tuple[nn.Module, str]] | None,
         options: PruningOptions, config: Any, goal: Goal, *,
         check: Callable[[ScoringProblem], None] | None = None,
         on_round: RoundCallback | None = None, resume: RoundState | None = None) -> Outcome:
    """Prepare, count the schedule, run the rounds and check for collapse; the model is not changed.

    Args:
        method, model, data, targets, options, config: as for :func:`prepare`.
        goal: :class:`SparsityGoal` or :class:`AmountGoal`.
        check: called with the prepared problem before any scoring (the adapter checks
            torch's parameter list with it).
        on_round, resume: see :func:`~torch_prune_ext.core.scoring.run_schedule`.

    Raises:
        LayerCollapseError: ``on_collapse="raise"`` and the masks disconnect the network.
    """
    problem = prepare(method, model, data, targets, options, config)
    if check is not None:
        check(problem)
    before = [m.clone() for m in problem.masks]
    rounds = rounds_for(method, options)
    counts = goal.counts(before, rounds, options.schedule)
    masks, seconds = run_schedule(problem, lambda p: method.score(p, config), counts, method=method.name,
                                  progress=options.progress, rank=options.ranker(), on_round=on_round, resume=resume)
    layers, connected = check_collapse(model, problem.targets, masks, problem.known_input_shape(),
                                       options.on_collapse, method.name)
    return Outcome(method, problem, before, masks, rounds, seconds, layers, connected)


def prune(method: Any, model: nn.Module, data: Any, targets: Iterable[tuple[nn.Module, str]] | None,
          options: PruningOptions, config: Any, goal: Goal, *,
          on_round: RoundCallback | None = None, resume: RoundState | None = None) -> Outcome:
    """:func:`plan`, then apply the final masks through ``torch.nn.utils.prune``."""
    outcome = plan(method, model, data, targets, options, config, goal, on_round=on_round, resume=resume)
    apply_masks(outcome.problem.targets, outcome.masks)
    return outcome


def score(method: Any, model: nn.Module, data: Any, targets: Iterable[tuple[nn.Module, str]] | None,
          options: PruningOptions, config: Any) -> tuple[list[Target], list[torch.Tensor]]:
    """One scoring round at the current masks, the model left as it was: ``(targets, scores)``."""
    problem = prepare(method, model, data, targets, options, config)
    scores = score_once(problem, lambda p: method.score(p, config), method.name)
    check_same_on_ranks(problem, scores, "the scores")
    return problem.targets, scores
