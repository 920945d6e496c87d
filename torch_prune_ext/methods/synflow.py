"""SynFlow (Tanaka et al., 2020): iterative synaptic flow, data-free."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..core.inputs import AllOnesEmbedding
from ..core.config import MethodConfig, floating_dtype_or_none, option
from ..core.scoring import ScoringProblem
from .base import PruningMethod

logger = logging.getLogger("torch_prune_ext")


@dataclass(frozen=True)
class SynFlowConfig(MethodConfig):
    """Hyperparameters of :class:`SynFlow`.

    Attributes:
        dtype: compute dtype of the linearised network. ``None`` (default) computes in the
            model's dtype and falls back to float64 when that overflows or underflows (the
            linearised network's output grows or shrinks geometrically with depth: the
            fallback triggers on non-finite values or when R < tiny / eps of the dtype, where
            precision is lost); scores are then float64.
    """

    dtype: torch.dtype | None = option(None, help="compute dtype (default: the model's, float64 where it overflows)",
                                       check=floating_dtype_or_none)


def _linearised_scores(problem: ScoringProblem, shape: tuple[int, ...],
                       dtype: torch.dtype) -> tuple[list[torch.Tensor], torch.Tensor]:
    """|θ̃ ⊙ ∂R/∂θ̃| with every parameter and buffer replaced by its absolute value, and R."""

    def linearise(name: str, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.abs().to(dtype) if tensor.is_floating_point() else tensor

    fm = problem.functional(linearise)
    theta = [w.abs().to(dtype).requires_grad_(True) for w in problem.weights()]
    masks = [m.to(dtype) for m in problem.masks]
    problem.model.eval()
    if problem.input_vocabulary() is None:
        output = fm(torch.ones((1, *shape), dtype=dtype, device=problem.device), theta, masks)
    else:  # a token model: the all-ones input in embedding space (core/inputs.py)
        with AllOnesEmbedding():
            output = fm(torch.zeros((1, *shape), dtype=torch.long, device=problem.device), theta, masks)
    flow = output.sum()
    grads = torch.autograd.grad(flow, theta)
    return [(t.detach() * g).abs() for t, g in zip(theta, grads)], flow.detach()


def _out_of_range(flow: torch.Tensor, scores: list[torch.Tensor]) -> bool:
    """Whether R over- or underflowed: non-finite values, or R so small that precision is lost."""
    finfo = torch.finfo(flow.dtype)
    if not bool(torch.isfinite(flow)) or not all(bool(torch.isfinite(s).all()) for s in scores):
        return True
    return bool(flow < finfo.tiny / finfo.eps)


class SynFlow(PruningMethod):
    """SynFlow: score = | θ̃ ⊙ ∂R/∂θ̃ |, R = Σ outputs of the linearised network on all-ones.

    "Linearised": every parameter and buffer (weights, biases, BN affine and running
    statistics) replaced by its absolute value, eval mode, a single all-ones example of shape
    ``(1, *input_shape)``; for a token model (one that starts with ``nn.Embedding``) the all-ones
    input is taken in embedding space: every embedding lookup returns the sum of its rows
    (:class:`~torch_prune_ext.core.inputs.AllOnesEmbedding`). Pruned entries score 0. 100 rounds with the exponential schedule by
    default. Data-free: pass ``input_shape=`` or a batch to read it from. Computed in float64
    where float32 overflows (see :class:`SynFlowConfig`).

    Examples:
        >>> import torch_prune_ext as tpe
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
        >>> report = tpe.global_prune(net, SynFlow, 0.9, input_shape=(8,), progress=False)
        >>> report.rounds, report.layers.numel - report.layers.kept, report.collapsed
        (100, 173, [])
    """

    name = "synflow"
    Config = SynFlowConfig
    default_rounds = 100
    needs_input_shape = True
    summary = "data-free path flow (linearised network)"

    @classmethod
    def score(cls, problem: ScoringProblem, config: SynFlowConfig) -> list[torch.Tensor]:
        shape = problem.require_input_shape(cls.name)
        if config.dtype is not None:
            return _linearised_scores(problem, shape, config.dtype)[0]
        scores, flow = _linearised_scores(problem, shape, problem.dtype)
        if problem.dtype != torch.float64 and _out_of_range(flow, scores):
            logger.info("synflow: the linearised network left the %s range; recomputing in float64", problem.dtype)
            scores, _ = _linearised_scores(problem, shape, torch.float64)
        return scores
