"""The drop-in base class: a global pruning method that ``torch.nn.utils.prune`` can call.

A method is a small record: a subclass of :class:`PruningMethod` that sets ``name``, its
``Config`` (a frozen dataclass of its hyperparameters, :class:`~torch_prune_ext.core.config.MethodConfig`),
``default_rounds`` and what it needs, and implements one pure function,
:meth:`PruningMethod.score`: (problem, config) -> scores. Options, counting, schedules,
rounds, ranking and the collapse check live in the engine (:mod:`torch_prune_ext.core.engine`);
this class adds the thin adapter torch calls (``compute_mask`` and ``apply``).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.utils import prune

from ..core import engine
from ..core.config import MethodConfig
from ..core.deepcopy import make_deepcopyable
from ..core.scoring import PruningOptions, ScoringProblem
from ..core.targets import Target, prunable_parameters, torch_view
from ..errors import InvalidOptionError, MissingDataError, TargetError


@dataclasses.dataclass(frozen=True)
class NoConfig(MethodConfig):
    """A method without hyperparameters of its own."""


def _own_config(method: type, config: type, declared: bool) -> type:
    """``config`` if ``method`` declares it and no other method has adopted it, else a subclass of it
    named after ``method`` (so that every method has a config class of its own)."""
    owner = config.__dict__.get("method")
    if declared and config not in (NoConfig, MethodConfig) and owner in (None, method):
        return config
    params = getattr(config, "__dataclass_params__", None)
    derived = dataclasses.make_dataclass(f"{method.__name__}Config", [], bases=(config,),
                                         frozen=bool(params and params.frozen))
    derived.__module__ = method.__module__
    derived.__doc__ = f"Hyperparameters of {method.__name__}: those of {config.__name__}."
    return derived


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
        config: the method's config object (``Cls.Config(...)``) instead of its options as
            keywords; a config of another method raises :class:`InvalidOptionError`.
        **options: the common options (:class:`~torch_prune_ext.core.scoring.PruningOptions`:
            ``rounds``, ``schedule``, ``seed``, ``generator``, ``input_shape``,
            ``on_collapse``, ``progress``) and, without ``config``, the method's own.

    Subclasses set ``name``, ``Config``, ``default_rounds``, the needs flags, and
    implement :meth:`score`. Each method class owns its ``Config`` (``type(config).method``
    is the method; a subclass that does not declare one gets a derived ``<Name>Config``).

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
        config: Any = None,
        **options: Any,
    ) -> None:
        self.goal = engine.AmountGoal(amount)
        if model is None:
            raise MissingDataError(
                f"{type(self).__name__} needs the model: pass model=<the network the targets belong to>."
            )
        self.amount = amount
        self.model = model
        self.data = data
        self.targets = None if targets is None else list(targets)
        self.options, self.config = engine.parse_options(type(self), options, config)
        #: the masks before and after, in the order of torch's parameter list, once :meth:`plan` ran
        self._planned: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            cls.name = cls.__name__.lower()  # user-defined methods get a name for messages and reports
        cls.Config = _own_config(cls, cls.Config, declared="Config" in cls.__dict__)
        cls.Config.method = cls  # a config instance names its method: type(config).method

    # ------------------------------------------------------------- the record
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
    def check_problem(cls, problem: ScoringProblem, config: Any) -> None:
        """Raise if the prepared problem does not suit the method (nothing to check by default)."""

    @classmethod
    def option_names(cls) -> list[str]:
        """Every keyword option the method accepts (common options first)."""
        return engine.option_names(cls)

    @classmethod
    def parse_options(cls, options: dict[str, Any], config: Any = None) -> tuple[PruningOptions, Any]:
        """:func:`torch_prune_ext.core.engine.parse_options` for this method."""
        return engine.parse_options(cls, options, config)

    @classmethod
    def prepare(cls, model: nn.Module, data: Any, targets: Iterable[tuple[nn.Module, str]] | None,
                options: PruningOptions, config: Any = None) -> ScoringProblem:
        """:func:`torch_prune_ext.core.engine.prepare` for this method (nothing is modified)."""
        return engine.prepare(cls, model, data, targets, options, config)

    # ------------------------------------------------------- torch's interface
    def plan(self, n_alive_given: int | None = None) -> engine.Outcome:
        """Run the engine for torch's call (nothing is applied) and keep the outcome for :meth:`compute_mask`.

        Args:
            n_alive_given: the number of unpruned entries torch handed over, checked
                against the targets before any scoring.
        """
        views: list[list[int]] = []  # torch's parameter list as target indices, found once by check

        def check(problem: ScoringProblem) -> None:
            views.append(self._torch_view(problem.targets))
            n_alive_view = sum(int((problem.masks[i] != 0).sum()) for i in views[0])
            if n_alive_given is not None and n_alive_given != n_alive_view:
                raise TargetError(
                    f"torch handed {type(self).__name__} {n_alive_given} unpruned entries, but its targets have "
                    f"{n_alive_view}. When the parameter list given to global_unstructured is not "
                    "prunable_parameters(model), pass the same list as targets=."
                )

        outcome = engine.plan(type(self), self.model, self.data, self.targets, self.options, self.config,
                              self.goal, check=check)
        view = views[0]
        self._planned = [outcome.before[i] for i in view], [outcome.masks[i] for i in view]
        make_deepcopyable(t.module for t in outcome.problem.targets)  # torch prunes them next
        return outcome

    def _torch_view(self, targets: list[Target]) -> list[int]:
        """The target index of each entry of torch's parameter list (a tied tensor listed twice appears twice)."""
        pairs = self.targets if self.targets is not None else self.default_targets(self.model, self.config)
        return torch_view(targets, pairs if pairs is not None else prunable_parameters(self.model))

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        """The mask torch asks for: over the still-unpruned entries of the targets, in order.

        Called by ``global_unstructured`` with the flat vector of every target's unpruned
        entries, or by :meth:`apply` with one tensor (then the outcome :meth:`plan` computed
        before torch changed anything is used).
        """
        if self._planned is None:
            self.plan(n_alive_given=t.numel())
        (old, new), self._planned = self._planned, None
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
        config: Any = None,
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
            config: the method's config object (instead of its options as keywords).
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
        method = cls(amount, module if model is None else model, data, targets=[(module, name)], config=config,
                     **options)
        method.plan()  # every error is raised here, before torch touches the module

        def planned_method() -> PruningMethod:  # torch's apply builds its hook by calling this
            return method

        return prune.BasePruningMethod.apply.__func__(planned_method, module, name)
