"""Scoring helpers every method builds on, and the round-by-round pruning loop.

A method's scoring function is pure: it gets a :class:`ScoringProblem` (the model, the
targets, their current masks, the pruning data and a random generator) and its config,
and returns one score tensor per target. :func:`run_schedule` calls it once per round,
ranks globally and intersects masks; it never writes into the model (applying the final
masks is the caller's job), so an exception at any round leaves the model unchanged.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import InvalidOptionError, MissingDataError, NonFiniteScoreError
from .batches import PruningData
from .blocks import GRANULARITIES, check_block_size
from .config import boolean, boolean_or_none, integer_or_none, option, positive_int_or_none, validate_options
from .distributed import ScoringGroup, failures_reported, raise_unless_equal, resolve_group, tensor_digest
from .functional import FunctionalModel, preserved_state
from .inputs import input_embedding
from .ranking import rank_and_mask
from .schedules import SCHEDULES
from .targets import Target

logger = logging.getLogger("torch_prune_ext")

COLLAPSE_POLICIES = ("warn", "raise", "ignore")

#: What the ranks must agree on before distributed scoring, and how to fix a difference.
_RANK_FACTS = (
    ("the target weights", "Initialise the model with the same seed on every rank, or broadcast rank 0's state "
                           "(e.g. with DistributedDataParallel) before pruning."),
    ("the current masks", "Prune the same model on every rank."),
    ("the random generator", "Pass the same seed= (or an equally seeded generator=) on every rank."),
)


def _generator_or_none(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, torch.Generator):
        raise InvalidOptionError(f"{name} must be a torch.Generator, got {type(value).__name__}.")


def _shape_or_none(name: str, value: Any) -> None:
    if value is None:
        return
    try:
        shape = tuple(value)
    except TypeError:  # not iterable
        shape = ()
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise InvalidOptionError(
            f"{name} must be the shape of one example as positive ints, e.g. (3, 32, 32); got {value!r}."
        )


def _block_density(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0):
        raise InvalidOptionError(f"{name} must be in (0, 1], got {value!r}.")


@dataclass(frozen=True)
class PruningOptions:
    """Options that every method takes, besides its own config.

    Attributes:
        rounds: scoring rounds; ``None`` means the method's default.
        schedule: ``"exponential"`` or ``"linear"`` density schedule over the rounds.
        seed: seed of the method's own random generator (default 0, so runs repeat);
            the global RNG is never used nor advanced.
        generator: a ``torch.Generator`` to use instead of ``seed``.
        input_shape: shape of one example, for methods that need no data.
        on_collapse: what to do when the final mask disconnects the network (layer
            collapse): ``"warn"``, ``"raise"`` (nothing is pruned) or ``"ignore"``. A target
            emptied behind a live skip path is warned about under ``"warn"`` and ``"raise"``.
        progress: show a tqdm progress bar over the rounds.
        granularity: ``"element"`` (default), ``"block"`` or ``"hybrid"``: rank whole
            ``block_size`` tiles of each weight's GEMM view (``core/blocks.py``), so that the
            masks leave empty tiles a sparse kernel can skip.
        block_size: ``(b_n, b_k)`` tile for the block granularities (default 32 x 32).
        block_density: for ``"hybrid"``, the density of kept blocks before element pruning
            inside them (default: the square root of each round's density).
        distributed: score across the processes of the initialised ``torch.distributed``
            job (every rank calls with the same model and seed; each scores its share of the
            data and draws; every rank gets the same masks); see
            :mod:`torch_prune_ext.core.distributed`. ``None`` (not given) scores per process,
            with a warning once per process when a multi-rank process group is initialised;
            ``False`` scores per process silently.
        process_group: the process group for ``distributed=True`` (default: the world).
        shard_data: with ``distributed=True``: every rank passes the same batches and reads
            every ``world_size``-th one (default ``False``: each rank passes its own shard,
            e.g. a ``DataLoader`` with a ``DistributedSampler``).

    Examples:
        >>> PruningOptions(rounds=10, seed=3).make_generator().initial_seed()
        3
    """

    rounds: int | None = option(None, help="scoring rounds (default: the method's own)", check=positive_int_or_none)
    schedule: str = option("exponential", help="density schedule over the rounds", choices=SCHEDULES)
    seed: int | None = option(None, help="seed of the method's own random generator (default 0)",
                              check=integer_or_none)
    generator: torch.Generator | None = option(None, help="a torch.Generator to use instead of seed",
                                               check=_generator_or_none)
    input_shape: tuple[int, ...] | None = option(None, help="shape of one example, e.g. (3, 32, 32), for data-free "
                                                 "methods", check=_shape_or_none)
    on_collapse: str = option("warn", help="what to do when the final mask disconnects the network",
                              choices=COLLAPSE_POLICIES)
    progress: bool = option(True, help="show a progress bar over the rounds", check=boolean)
    granularity: str = option("element", help="rank single entries, whole tiles, or tiles then entries",
                              choices=GRANULARITIES)
    block_size: tuple[int, int] = option((32, 32), help="(b_n, b_k) tile of the block granularities")
    block_density: float | None = option(None, help="hybrid: density of kept tiles (default: sqrt of the density)",
                                         check=_block_density)
    distributed: bool | None = option(None, help="score across the ranks of the torch.distributed job",
                                      check=boolean_or_none)
    process_group: Any = option(None, help="process group of distributed=True (default: the world)")
    shard_data: bool = option(False, help="distributed=True: every rank passes the same batches and reads its share",
                              check=boolean)

    def __post_init__(self) -> None:
        validate_options(self)
        object.__setattr__(self, "block_size", check_block_size(self.block_size))
        if self.seed is not None and self.generator is not None:
            raise InvalidOptionError("Pass either seed= or generator=, not both.")
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", tuple(self.input_shape))

    def ranker(self) -> Callable[..., list[torch.Tensor]]:
        """:func:`~torch_prune_ext.core.ranking.rank_and_mask` with these granularity options."""
        return functools.partial(rank_and_mask, granularity=self.granularity, block_size=self.block_size,
                                 block_density=self.block_density)

    def make_generator(self) -> torch.Generator:
        """The method's generator: ``generator`` as given, else a CPU one seeded with ``seed`` (0 by default)."""
        if self.generator is not None:
            return self.generator
        return torch.Generator().manual_seed(0 if self.seed is None else self.seed)

    def scoring_group(self) -> ScoringGroup | None:
        """The processes scoring together (``None`` unless ``distributed=True``)."""
        return resolve_group(self.distributed, self.process_group, self.shard_data)


@dataclass
class ScoringProblem:
    """What one scoring round sees: a pure function of this and the method's config.

    Attributes:
        model: the network; scoring functions must not modify it (use :meth:`functional`).
        targets: the resolved targets.
        masks: the current 0/1 mask of every target (zeros are pruned).
        data: the pruning data (may hold no data for data-free methods).
        generator: the method's random generator.
        input_shape: shape of one example when known (from ``input_shape=`` or the data).
        group: the processes scoring together under ``distributed=True``, else ``None``.
            A method that sums over batches or draws calls :meth:`all_reduce_` on its sums
            before anything nonlinear, and evaluates only the draws it :meth:`owns`.
    """

    model: nn.Module
    targets: list[Target]
    masks: list[torch.Tensor]
    data: PruningData
    generator: torch.Generator
    input_shape: tuple[int, ...] | None = None
    group: ScoringGroup | None = None
    #: Facts a method derives once per pruning call and reuses every round (e.g. batch shapes).
    memo: dict[str, Any] = field(default_factory=dict, repr=False)
    _weights: list[torch.Tensor] = field(default_factory=list, repr=False)

    @property
    def device(self) -> torch.device:
        return self.targets[0].raw.device

    @property
    def dtype(self) -> torch.dtype:
        return self.targets[0].raw.dtype

    def weights(self) -> list[torch.Tensor]:
        """The raw target tensors θ, detached (not copies: never write into them)."""
        if not self._weights:
            self._weights = [t.raw.detach() for t in self.targets]
        return self._weights

    def functional(self, transform: Callable[[str, torch.Tensor], torch.Tensor] | None = None) -> FunctionalModel:
        """A :class:`FunctionalModel` over this model and these targets."""
        return FunctionalModel(self.model, self.targets, transform)

    def require_input_shape(self, method: str) -> tuple[int, ...]:
        """``input_shape=`` if given, else the shape of one example of the data."""
        if self.input_shape is not None:
            return self.input_shape
        if not self.data.given:
            raise MissingDataError(
                f"{method} needs the shape of one input: pass input_shape=(C, H, W) or data=<a batch>."
            )
        self.input_shape = self.data.first_input_shape()
        return self.input_shape

    def known_input_shape(self) -> tuple[int, ...] | None:
        """``input_shape=`` if given, else the shape read from the data, else ``None``."""
        if self.input_shape is None and self.data.given:
            self.input_shape = self.data.first_input_shape()
        return self.input_shape

    def all_reduce_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Sum per-rank partial sums over the ranks, in place (nothing to do in one process)."""
        if self.group is not None:
            self.group.all_reduce_(tensors)

    def owns(self, index: int) -> bool:
        """Whether this process evaluates draw ``index`` of a round (always, in one process)."""
        return self.group is None or self.group.owns(index)

    def all_batch_shapes(self) -> list[tuple[int, ...]]:
        """The input shape of every pruning batch of every rank, in rank order (what one process would see)."""
        if self.group is None or self.group.shard_data:
            return self.data.batch_shapes(local=False)
        return [shape for shapes in self.group.all_gather(self.data.batch_shapes()) for shape in shapes]

    def check_ranks_agree(self, method: str, needs_batches: bool) -> None:
        """Under distributed scoring: every rank holds the same weights, masks and generator state,
        and (``needs_batches``) at least one pruning batch; else raise on every rank.

        Raises:
            DistributedMismatchError: the ranks differ.
            MissingDataError: some rank has no pruning batch.
        """
        if self.group is None:
            return
        digests = (tensor_digest(self.weights()), tensor_digest(self.masks), tensor_digest([self.generator.get_state()]))
        n_batches = len(self.data.batch_shapes()) if needs_batches else 0
        per_rank = self.group.all_gather((digests, n_batches))  # one collective for every check
        for i, (what, fix) in enumerate(_RANK_FACTS):
            raise_unless_equal([rank_digests[i] for rank_digests, _ in per_rank], what, fix)
        if needs_batches:
            counts = [count for _, count in per_rank]
            empty = [rank for rank, count in enumerate(counts) if count == 0]
            if empty:
                raise MissingDataError(
                    f"{method}: rank(s) {', '.join(map(str, empty))} of {self.group.world_size} have no pruning "
                    f"batch (batches per rank: {counts}). Give every rank at least one batch (fewer ranks, or "
                    "smaller batches)."
                )

    def input_vocabulary(self) -> int | None:
        """The vocabulary size when the model reads token ids (it starts with an embedding and the
        data, if any, are integers: :mod:`torch_prune_ext.core.inputs`), else ``None``."""
        if "vocabulary" not in self.memo:
            embedding = input_embedding(self.model)
            dtype = self.data.first_input_dtype() if embedding is not None and self.data.given else None
            floating = dtype is not None and dtype.is_floating_point
            self.memo["vocabulary"] = None if embedding is None or floating else embedding.num_embeddings
        return self.memo["vocabulary"]

    def randint(self, high: int, shape: Sequence[int]) -> torch.Tensor:
        """Integers uniform in ``[0, high)`` from the method's generator, on the model's device."""
        sample = torch.randint(high, tuple(shape), generator=self.generator, device=self.generator.device)
        return sample.to(self.device)

    def randn(self, shape: Sequence[int], dtype: torch.dtype | None = None) -> torch.Tensor:
        """Standard normal samples from the method's generator, on the model's device."""
        sample = torch.randn(tuple(shape), generator=self.generator, device=self.generator.device,
                             dtype=dtype or self.dtype)
        return sample.to(self.device)


ScoreFunction = Callable[[ScoringProblem], list[torch.Tensor]]


def check_finite(targets: Sequence[Target], scores: Sequence[torch.Tensor], method: str) -> None:
    """Raise :class:`NonFiniteScoreError` naming every target whose scores hold NaN or inf."""
    bad = [t.name for t, s in zip(targets, scores) if not bool(torch.isfinite(s).all())]
    if bad:
        raise NonFiniteScoreError(
            f"{method} produced NaN/inf scores for {', '.join(bad)}. Check the weights and the data for "
            "NaN/inf values; for deep networks try dtype=torch.float64 where the method offers it."
        )


def _peek_seed(generator: torch.Generator) -> int:
    """A seed derived from ``generator`` without advancing it."""
    state = generator.get_state()
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    generator.set_state(state)
    return seed


def score_once(problem: ScoringProblem, score_fn: ScoreFunction, method: str) -> list[torch.Tensor]:
    """One scoring round with the model's state preserved, scores checked and detached.

    Inside the round the global RNG is seeded from the method's generator, so that
    modules drawing from it (dropout in train mode) depend on ``seed=`` alone; the
    caller's RNG state is restored afterwards. Under distributed scoring an error of this rank
    reaches the other ranks (:func:`~torch_prune_ext.core.distributed.failures_reported`).
    """
    with failures_reported(problem.group):
        with preserved_state(problem.model):
            torch.manual_seed(_peek_seed(problem.generator))
            scores = score_fn(problem)
        scores = [s.detach() for s in scores]
        check_finite(problem.targets, scores, method)
    return scores


@dataclass
class RoundState:
    """Where a multi-round schedule stands after a round: enough to resume it exactly.

    Attributes:
        completed: rounds done so far.
        masks: the masks after that round, by target name (``"layer1.0.conv1.weight"``).
        generator_state: the method's generator state after that round (draws continue as if
            never interrupted).
        round_seconds: wall time of the rounds done.

    ``to_dict()`` holds only tensors, ints, floats, strings and lists, so it saves with
    ``torch.save`` and loads with ``torch.load(weights_only=True)``.

    Examples:
        >>> import torch_prune_ext as tpe
        >>> states = []
        >>> net = torch.nn.Sequential(torch.nn.Linear(10, 10))
        >>> _ = tpe.global_prune(net, "random", 0.9, rounds=3, on_round=states.append, progress=False)
        >>> [s.completed for s in states], int((states[0].masks["0.weight"] == 0).sum())
        ([1, 2, 3], 54)
    """

    completed: int
    masks: dict[str, torch.Tensor]
    generator_state: torch.Tensor
    round_seconds: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"completed": self.completed, "masks": dict(self.masks), "generator_state": self.generator_state,
                "round_seconds": list(self.round_seconds)}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> RoundState:
        return cls(int(state["completed"]), dict(state["masks"]), state["generator_state"],
                   list(state["round_seconds"]))


RoundCallback = Callable[[RoundState], None]


def check_same_on_ranks(problem: ScoringProblem, tensors: Sequence[torch.Tensor], what: str) -> None:
    """Under distributed scoring: raise on every rank unless ``tensors`` (scores, masks) agree bitwise."""
    if problem.group is not None:
        problem.group.check_agree(
            tensor_digest(tensors), what,
            "A method that reads data or random draws must sum its per-rank parts with "
            "ScoringProblem.all_reduce_ before anything nonlinear (see torch_prune_ext.core.distributed).",
        )


def resume_problem(problem: ScoringProblem, state: RoundState, rounds: int) -> None:
    """Put ``problem`` where ``state`` left it: masks and generator (checked against the targets).

    Raises:
        InvalidOptionError: the state does not belong to these targets or this schedule.
    """
    names = [t.name for t in problem.targets]
    if sorted(state.masks) != sorted(names) or not 0 <= state.completed <= rounds:
        raise InvalidOptionError(
            f"The resume state ({state.completed} rounds done, tensors {sorted(state.masks)[:3]}...) does not fit "
            f"this run ({rounds} rounds, tensors {sorted(names)[:3]}...). Resume with the model, targets and "
            "rounds of the interrupted run."
        )
    for target, old in zip(problem.targets, problem.masks):
        mask = state.masks[target.name]
        if tuple(mask.shape) != tuple(old.shape) or bool(((old == 0) & (mask != 0)).any()):
            raise InvalidOptionError(
                f"The resume mask of {target.name} does not fit the model (other shape, or it revives pruned "
                "entries). Resume with the model of the interrupted run, unmodified."
            )
    problem.masks = [state.masks[t.name].to(device=m.device, dtype=m.dtype) for t, m in
                     zip(problem.targets, problem.masks)]
    problem.generator.set_state(state.generator_state)


def run_schedule(
    problem: ScoringProblem,
    score_fn: ScoreFunction,
    counts: Sequence[int],
    *,
    method: str = "method",
    progress: bool = True,
    rank: Callable[..., list[torch.Tensor]] = rank_and_mask,
    on_round: RoundCallback | None = None,
    resume: RoundState | None = None,
) -> tuple[list[torch.Tensor], list[float]]:
    """Score and prune round after round, without touching the model.

    Args:
        problem: the scoring problem; its ``masks`` are the starting masks (not modified).
        score_fn: the method's scoring function.
        counts: total number of pruned entries after each round (see
            :func:`~torch_prune_ext.core.schedules.pruned_counts`).
        method: the method's name, for messages.
        progress: show a tqdm bar.
        rank: ``rank(targets, scores, masks, n_pruned) -> masks`` (:meth:`PruningOptions.ranker`).
        on_round: called with a :class:`RoundState` after every round (e.g. to checkpoint it).
        resume: a state saved by ``on_round``: its rounds are skipped, its masks and generator
            state used, so the result equals the uninterrupted run's.

    Returns:
        The final masks and the wall time of every round in seconds.
    """
    if resume is not None:
        resume_problem(problem, resume, len(counts))
    masks = [m.clone() for m in problem.masks]
    already = sum(int((m == 0).sum()) for m in masks)
    seconds: list[float] = list(resume.round_seconds) if resume is not None else []
    first = resume.completed if resume is not None else 0
    quiet = problem.group is not None and problem.group.rank != 0
    bar = tqdm(counts, desc=f"{method} rounds", unit="round", disable=not progress or len(counts) < 2 or quiet,
               leave=False, initial=first)
    for round_index, n_pruned in enumerate(counts[first:], start=first + 1):
        start = time.perf_counter()
        if n_pruned > already:
            problem.masks = masks
            scores = score_once(problem, score_fn, method)
            masks = rank(problem.targets, scores, masks, n_pruned)
            already = n_pruned
        seconds.append(time.perf_counter() - start)
        bar.update(1)
        logger.debug("%s round %d/%d: %d pruned, %.3f s", method, round_index, len(counts), n_pruned, seconds[-1])
        if on_round is not None:
            on_round(RoundState(round_index, {t.name: m.clone() for t, m in zip(problem.targets, masks)},
                                problem.generator.get_state(), list(seconds)))
    bar.close()
    check_same_on_ranks(problem, masks, "the final masks")
    return masks, seconds
