"""The drop-in base class: a global pruning method that ``torch.nn.utils.prune`` can call.

Every method is a subclass of :class:`PruningMethod`, itself a
``torch.nn.utils.prune.BasePruningMethod`` with ``PRUNING_TYPE = "unstructured"``. A
subclass declares what it needs and its hyperparameters (a dataclass, ``Config``) and
implements one pure function, :meth:`PruningMethod.score`: (problem, config) -> scores.
Everything else (targets, data, schedules, ranking, collapse checks, the two ways torch
calls ``compute_mask``) lives here and in :mod:`torch_prune_ext.core`.
"""

from __future__ import annotations

import abc
import dataclasses
import numbers
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.utils import prune

from ..core.batches import PruningData
from ..core.config import MethodConfig
from ..core.deepcopy import make_deepcopyable
from ..core.distributed import ScoringGroup, failures_reported
from ..core.report import check_collapse
from ..core.schedules import pruned_counts
from ..core.scoring import PruningOptions, RoundCallback, RoundState, ScoringProblem, run_schedule
from ..core.targets import Target, prunable_parameters, resolve_targets, torch_view
from ..errors import InvalidAmountError, InvalidOptionError, MissingDataError, TargetError, UnknownOptionError


@dataclasses.dataclass(frozen=True)
class NoConfig(MethodConfig):
    """A method without hyperparameters of its own."""


def _own_config(method: type, config: type) -> type:
    """``config`` if no other method has adopted it, else a subclass of it named after ``method``."""
    owner = config.__dict__.get("method")
    if owner is None or owner is method:
        return config
    params = getattr(config, "__dataclass_params__", None)
    derived = dataclasses.make_dataclass(f"{method.__name__}Config", [], bases=(config,),
                                         frozen=bool(params and params.frozen))
    derived.__module__ = method.__module__
    derived.__doc__ = f"Hyperparameters of {method.__name__}: those of {config.__name__}."
    return derived


_COMMON_OPTIONS = frozenset(f.name for f in dataclasses.fields(PruningOptions))
_TORCH_NAMES = frozenset({"parameters", "pruning_method", "importance_scores"})


def validate_amount(amount: Any) -> None:
    """Check ``amount`` as torch does, with clearer messages: a float in [0, 1] or an int >= 0."""
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


def count_to_prune(amount: float | int, n_alive: int) -> int:
    """The number of entries torch prunes for ``amount`` out of ``n_alive`` (``round`` for a float)."""
    if isinstance(amount, numbers.Integral):
        if amount > n_alive:
            raise InvalidAmountError(
                f"amount={amount} is more than the {n_alive} entries still unpruned; pass at most {n_alive}."
            )
        return int(amount)
    return round(float(amount) * n_alive)


def _alive_entries(new_masks: list[torch.Tensor], old_masks: list[torch.Tensor]) -> torch.Tensor:
    """The new mask at the positions that were unpruned, flattened in target order (torch's layout)."""
    return torch.cat([new[old != 0].reshape(-1) for new, old in zip(new_masks, old_masks)])


class PruningMethod(prune.BasePruningMethod):
    """A global pruning-at-initialisation method usable everywhere torch expects a pruning method.

    Use it with :func:`torch.nn.utils.prune.global_unstructured` (its options as keyword
    arguments), with :meth:`apply` on one tensor, or through
    :func:`torch_prune_ext.global_prune` / :func:`torch_prune_ext.compute_scores`.

    Args:
        amount: float in [0, 1] = fraction of the still-unpruned entries to prune, or an
            int = their number (exactly as in ``torch.nn.utils.prune``).
        model: the network the targets belong to (required).
        data: the pruning data: a batch, or an iterable of batches (``x`` or ``(x, y)``).
        targets: the ``(module, name)`` list handed to ``global_unstructured`` when it is
            not ``prunable_parameters(model)``.
        **options: the common options (:class:`~torch_prune_ext.core.scoring.PruningOptions`:
            ``rounds``, ``schedule``, ``seed``, ``generator``, ``input_shape``,
            ``on_collapse``, ``progress``) and the method's own (its ``Config``).

    Subclasses set ``name``, ``Config``, ``default_rounds``, the needs flags, and
    implement :meth:`score`.

    Examples:
        A method of one's own: keep the weights with the largest squared value.

        >>> import torch_prune_ext as tpe
        >>> class Squared(PruningMethod):
        ...     @classmethod
        ...     def score(cls, problem, config):
        ...         return [(w * m) ** 2 for w, m in zip(problem.weights(), problem.masks)]
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> torch.nn.utils.prune.global_unstructured(tpe.prunable_parameters(net), pruning_method=Squared,
        ...                                          amount=12, model=net)
        >>> Squared.name, int((net[0].weight == 0).sum() + (net[2].weight == 0).sum())
        ('squared', 12)
    """

    PRUNING_TYPE = "unstructured"

    #: The method's name in the method table (``compute_scores(model, "snip")``).
    name: ClassVar[str] = ""
    #: The dataclass of the method's own hyperparameters.
    Config: ClassVar[type] = NoConfig
    #: Rounds when ``rounds=None``.
    default_rounds: ClassVar[int] = 1
    #: Whether scoring reads data batches, and labels.
    needs_data: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False
    #: Whether a data-free method needs ``input_shape`` (or a batch to read it from).
    needs_input_shape: ClassVar[bool] = False
    #: One line for the method table.
    summary: ClassVar[str] = ""

    def __init__(
        self,
        amount: float | int,
        model: nn.Module | None = None,
        data: Any = None,
        *,
        targets: Iterable[tuple[nn.Module, str]] | None = None,
        _precomputed: tuple[torch.Tensor, torch.Tensor] | None = None,
        **options: Any,
    ) -> None:
        validate_amount(amount)
        if model is None:
            raise MissingDataError(
                f"{type(self).__name__} needs the model: pass model=<the network the targets belong to>."
            )
        self.amount = amount
        self.model = model
        self.data = data
        self.targets = None if targets is None else list(targets)
        self.options, self.config = self.parse_options(options)
        self._precomputed = _precomputed

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            cls.name = cls.__name__.lower()  # user-defined methods get a name for messages and reports
        cls.Config = _own_config(cls, cls.Config)
        cls.Config.method = cls  # a config instance names its method: type(config).method

    # ----------------------------------------------------------------- options
    @classmethod
    def option_names(cls) -> list[str]:
        """Every keyword option the method accepts (common options first)."""
        return [f.name for f in dataclasses.fields(PruningOptions)] + [f.name for f in dataclasses.fields(cls.Config)]

    @classmethod
    def parse_options(cls, options: dict[str, Any]) -> tuple[PruningOptions, Any]:
        """Split keyword options into the common :class:`PruningOptions` and the method's ``Config``."""
        own = {f.name for f in dataclasses.fields(cls.Config)}
        unknown = sorted(set(options) - own - _COMMON_OPTIONS)
        if unknown:
            reserved = [name for name in unknown if name in _TORCH_NAMES]
            hint = (f" {', '.join(reserved)} belong(s) to torch.nn.utils.prune and cannot be method options."
                    if reserved else "")
            raise UnknownOptionError(
                f"{cls.__name__} got unknown option(s) {', '.join(unknown)}.{hint} "
                f"Its options are: {', '.join(cls.option_names())}."
            )
        common = PruningOptions(**{k: v for k, v in options.items() if k in _COMMON_OPTIONS})
        try:
            config = cls.Config(**{k: v for k, v in options.items() if k in own})
        except (TypeError, ValueError) as error:
            raise InvalidOptionError(f"{cls.__name__}: {error}") from error
        return common, config

    @classmethod
    def rounds_for(cls, options: PruningOptions) -> int:
        return options.rounds if options.rounds is not None else cls.default_rounds

    # ----------------------------------------------------------------- scoring
    @classmethod
    @abc.abstractmethod
    def score(cls, problem: ScoringProblem, config: Any) -> list[torch.Tensor]:
        """One scoring round: a score tensor per target (higher = keep), the model untouched.

        Args:
            problem: the model, targets, current masks, data and generator.
            config: the method's ``Config``.
        """

    @classmethod
    def default_targets(cls, model: nn.Module, config: Any) -> list[tuple[nn.Module, str]] | None:
        """The targets when the caller names none; ``None`` means :func:`prunable_parameters`.

        Methods that must leave some tensors dense (LNPT's classifier) override this.
        """
        return None

    @classmethod
    def prepare(
        cls,
        model: nn.Module,
        data: Any,
        targets: Iterable[tuple[nn.Module, str]] | None,
        options: PruningOptions,
        config: Any = None,
    ) -> ScoringProblem:
        """Check the inputs and build the scoring problem (nothing is modified).

        Args:
            model, data, targets: as given by the caller (``targets=None``: :meth:`default_targets`).
            options: the common options.
            config: the method's config (default: ``Config()``).
        """
        config = cls.Config() if config is None else config
        if targets is None:
            targets = cls.default_targets(model, config)
        resolved: list[Target] = resolve_targets(model, targets)
        group = options.scoring_group()
        with failures_reported(group):
            return cls._checked_problem(model, data, resolved, options, group)

    @classmethod
    def _checked_problem(cls, model: nn.Module, data: Any, resolved: list[Target], options: PruningOptions,
                         group: ScoringGroup | None) -> ScoringProblem:
        """:meth:`prepare` once the targets and the process group are known (rank-local errors reach every rank)."""
        shard = (group.rank, group.world_size) if group is not None and group.shard_data else None
        pruning_data = PruningData(data, resolved[0].raw.device, resolved[0].raw.dtype, shard)
        if (cls.needs_data or cls.needs_labels) and not pruning_data.given:
            what = "labelled data (batches of (x, y))" if cls.needs_labels else "data"
            raise MissingDataError(f"{cls.name} needs {what}: pass data=<batch or DataLoader>.")
        if cls.needs_input_shape and options.input_shape is None and not pruning_data.given:
            raise MissingDataError(
                f"{cls.name} needs the shape of one input: pass input_shape=(C, H, W) or data=."
            )
        problem = ScoringProblem(
            model=model,
            targets=resolved,
            masks=[t.current_mask() for t in resolved],
            data=pruning_data,
            generator=options.make_generator(),
            input_shape=options.input_shape,
            group=group,
        )
        problem.check_ranks_agree(cls.name, needs_batches=cls.needs_data or cls.needs_labels)
        return problem

    @classmethod
    def prune_problem(
        cls, problem: ScoringProblem, config: Any, options: PruningOptions, n_pruned_final: int,
        n_schedule: int | None = None, final_density: float | None = None,
        on_round: RoundCallback | None = None, resume: RoundState | None = None,
    ) -> tuple[list[torch.Tensor], list[float]]:
        """Run the method's schedule up to ``n_pruned_final`` zeros in total.

        Args:
            n_schedule: the number of entries the density schedule refers to: all entries
                (``global_prune``) or the still-unpruned ones (torch's ``amount``). Default: all.
            final_density: the requested final density the rounds interpolate to (default:
                the one ``n_pruned_final`` implies).
            on_round, resume: see :func:`~torch_prune_ext.core.scoring.run_schedule`.
        """
        n_total = sum(m.numel() for m in problem.masks)
        n_dead = sum(int((m == 0).sum()) for m in problem.masks)
        rounds = cls.rounds_for(options)
        if n_schedule is None:
            counts = pruned_counts(n_total, n_pruned_final, n_dead, rounds, options.schedule, final_density)
        else:
            counts = [n_dead + c for c in pruned_counts(n_schedule, n_pruned_final - n_dead, 0, rounds,
                                                        options.schedule, final_density)]
        return run_schedule(problem, lambda p: cls.score(p, config), counts, method=cls.name,
                            progress=options.progress, rank=options.ranker(), on_round=on_round, resume=resume)

    # ------------------------------------------------------- torch's interface
    def _final_masks(self, n_alive_given: int | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The masks before and after the whole schedule, one per entry of torch's parameter list (nothing is applied).

        Args:
            n_alive_given: the number of unpruned entries torch handed over, checked
                against the targets before any scoring.
        """
        problem = self.prepare(self.model, self.data, self.targets, self.options, self.config)
        old = [m.clone() for m in problem.masks]
        n_alive = sum(int((m != 0).sum()) for m in old)
        view = self._torch_view(problem.targets)
        n_alive_view = sum(int((old[i] != 0).sum()) for i in view)
        if n_alive_given is not None and n_alive_given != n_alive_view:
            raise TargetError(
                f"torch handed {type(self).__name__} {n_alive_given} unpruned entries, but its targets have "
                f"{n_alive_view}. When the parameter list given to global_unstructured is not "
                "prunable_parameters(model), pass the same list as targets=."
            )
        n_dead = sum(m.numel() for m in old) - n_alive
        n_prune = count_to_prune(self.amount, n_alive)
        density = None if isinstance(self.amount, numbers.Integral) else 1.0 - float(self.amount)
        new, _ = self.prune_problem(problem, self.config, self.options, n_dead + n_prune, n_schedule=n_alive,
                                    final_density=density)
        check_collapse(self.model, problem.targets, new, problem.known_input_shape(), self.options.on_collapse,
                       self.name)
        make_deepcopyable(t.module for t in problem.targets)  # torch prunes them next: deepcopy keeps working
        return [old[i] for i in view], [new[i] for i in view]

    def _torch_view(self, targets: list[Target]) -> list[int]:
        """The target index of each entry of torch's parameter list (a tied tensor listed twice appears twice)."""
        pairs = self.targets if self.targets is not None else self.default_targets(self.model, self.config)
        return torch_view(targets, pairs if pairs is not None else prunable_parameters(self.model))

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        """The mask torch asks for: over the still-unpruned entries of the targets, in order.

        Called by ``global_unstructured`` with the flat vector of every target's unpruned
        entries, or by :meth:`apply` with one tensor.
        """
        if self._precomputed is not None:
            new, old = self._precomputed
            return _alive_entries([new], [old]).reshape(t.shape).to(default_mask)
        old, new = self._final_masks(n_alive_given=t.numel())
        return _alive_entries(new, old).reshape(t.shape).to(default_mask)

    @classmethod
    def apply(  # type: ignore[override]
        cls,
        module: nn.Module,
        name: str,
        amount: float | int,
        *,
        model: nn.Module | None = None,
        data: Any = None,
        importance_scores: torch.Tensor | None = None,
        **options: Any,
    ) -> prune.BasePruningMethod:
        """Prune one tensor, ``module.<name>``, scoring it inside ``model``.

        Args:
            module: the module holding the tensor.
            name: the tensor's name (``"weight"``).
            amount: fraction (float) or count (int) of its unpruned entries to prune.
            model: the network that ``module`` belongs to (default: ``module`` itself).
            data: the pruning data.
            importance_scores: not supported (the method computes its own scores).
            **options: method options.

        Returns:
            The pruning hook torch registered on ``module``.

        Examples:
            >>> import torch_prune_ext as tpe
            >>> net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> _ = tpe.Magnitude.apply(net[0], "weight", amount=0.5, model=net)
            >>> int((net[0].weight == 0).sum())
            16
        """
        if importance_scores is not None:
            raise InvalidOptionError(
                f"{cls.__name__} computes its own scores; importance_scores= is not used. Drop it, or use "
                "torch.nn.utils.prune.l1_unstructured for given scores."
            )
        model = module if model is None else model
        method = cls(amount, model, data, targets=[(module, name)], **options)
        old, new = method._final_masks()
        return super().apply(module, name, amount, model=model, data=data, _precomputed=(new[0], old[0]), **options)
