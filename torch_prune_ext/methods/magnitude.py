"""Data-free, weight-only baselines: Random and Magnitude."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.config import MethodConfig, option
from ..core.scoring import ScoringProblem
from ..core.targets import canonical_order
from .base import NoConfig, PruningMethod


@dataclass(frozen=True)
class RandomConfig(MethodConfig):
    """Hyperparameters of :class:`Random`.

    Attributes:
        distribution: ``"normal"`` (i.i.d. N(0, 1) scores) or ``"uniform"`` (U[0, 1)).
    """

    distribution: str = option("normal", help="distribution of the i.i.d. scores: N(0, 1) or U[0, 1)",
                               choices=("normal", "uniform"))


@dataclass(frozen=True)
class MagnitudeConfig(NoConfig):
    """:class:`Magnitude` has no hyperparameters."""


class Random(PruningMethod):
    """Random pruning: i.i.d. scores from the method's own generator (``seed=``).

    Examples:
        >>> import torch_prune_ext as tpe
        >>> net = torch.nn.Sequential(torch.nn.Linear(10, 10))
        >>> report = tpe.global_prune(net, "random", 0.5, seed=1)
        >>> report.sparsity
        0.5
    """

    name = "random"
    Config = RandomConfig
    summary = "uniform random scores"

    @classmethod
    def score(cls, problem: ScoringProblem, config: RandomConfig) -> list[torch.Tensor]:
        draw = torch.randn if config.distribution == "normal" else torch.rand
        generator = problem.generator
        scores: list[torch.Tensor] = [torch.empty(0)] * len(problem.targets)
        for i in canonical_order(problem.targets):  # draws do not depend on the order targets are listed in
            raw = problem.targets[i].raw
            scores[i] = draw(tuple(raw.shape), generator=generator, device=generator.device, dtype=raw.dtype).to(raw.device)
        return scores


class Magnitude(PruningMethod):
    """Magnitude pruning: score = |θ ⊙ m| (pruned entries score 0).

    Examples:
        >>> import torch_prune_ext as tpe
        >>> net = torch.nn.Linear(4, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = net.weight.copy_(torch.tensor([[0.1, -3.0, 0.2, 2.0]]))
        >>> tpe.compute_scores(net, "magnitude")["weight"]
        tensor([[0.1000, 3.0000, 0.2000, 2.0000]])
    """

    name = "magnitude"
    Config = MagnitudeConfig
    summary = "abs(weight)"

    @classmethod
    def score(cls, problem: ScoringProblem, config: MagnitudeConfig) -> list[torch.Tensor]:
        return [(w * m).abs() for w, m in zip(problem.weights(), problem.masks)]
