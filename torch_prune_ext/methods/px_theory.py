"""PX's theory mode, executed: views A (gates), J (path activation) and P (path kernel) over the
pruning batches, and the one vector-Jacobian product of P that gives every score (the math:
:mod:`torch_prune_ext.methods.px`; the views' gates: :mod:`~torch_prune_ext.methods.px_views`;
the normalisation statistics: :mod:`~torch_prune_ext.methods.px_norm`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from ..core.functional import preserved_state
from ..core.scoring import ScoringProblem
from ..errors import BatchShapeError, MissingDataError, ModelForwardError
from .px_norm import NormReduction, NormStatistics, batch_statistics
from .px_views import (
    ActivationGates,
    _batches,
    _check_theory_model,
    _checked_output,
    _finite,
    _parameter_roles,
    _theory_transform,
)

if TYPE_CHECKING:
    from .px import PXConfig


def _norms_of_a(problem: ScoringProblem, config: PXConfig, view_a: Callable[..., torch.Tensor],
                xs: list[torch.Tensor]) -> list[NormStatistics] | None:
    """View A's statistics known before its passes: ``None`` (running), ``[]`` (measured in the one pass), or all."""
    if config.norm == "running":
        return None
    if len(xs) == 1 and problem.group is None:
        return []
    return batch_statistics(lambda x: view_a(x, problem.weights(), problem.masks), xs, problem.all_reduce_)


def _path_activations(problem: ScoringProblem, config: PXConfig, xs: list[torch.Tensor], roles: dict[str, str],
                      masks: list[torch.Tensor]) -> tuple[torch.Tensor, list[NormStatistics] | None]:
    """``c = sum_n z1[n]`` over the pruning batches ``xs`` (views A and J), and the normalisation statistics used."""
    dtype, approximate = config.dtype, config.approximate_activations
    view_a = problem.functional()
    view_j = problem.functional(_theory_transform(roles, "ones", dtype))
    ones = [torch.zeros_like(m) if t.tensor_name == "bias" else torch.ones_like(m)
            for m, t in zip(masks, problem.targets)]
    total: torch.Tensor | None = None
    with preserved_state(problem.model), torch.no_grad():
        problem.model.eval()
        statistics = _norms_of_a(problem, config, view_a, xs)
        for x in xs:
            a_norms = (contextlib.nullcontext() if statistics is None else
                       NormReduction("fixed" if statistics else "measure", statistics))
            with a_norms as norms, ActivationGates("record", approximate=approximate) as record:
                view_a(x, problem.weights(), problem.masks)
            if statistics is not None:
                statistics = norms.statistics
            with NormReduction("unit", statistics) as j_norms, \
                    ActivationGates("apply", record.gates, approximate=approximate) as gates:
                z1 = _checked_output(view_j(x.to(dtype).square(), ones, masks), "J")
            j_norms.check_all_used()
            if gates.calls != len(record.gates):
                raise ModelForwardError("px: the model ran different activations in its gate and path-activation passes; "
                                   "its forward must be deterministic in which layers it runs.")
            part = z1.sum(0)
            total = part if total is None else total + part
    if total is None:
        raise MissingDataError("px: the pruning data yielded no batch; pass at least one batch of inputs.")
    problem.all_reduce_([total])
    _finite(total, "the path activation sum c (view J)", dtype)
    return total, statistics


def theory_scores(problem: ScoringProblem, config: PXConfig) -> list[torch.Tensor]:
    """PX's scores in ``mode="theory"`` (:func:`~torch_prune_ext.methods.px.px_scores` checks the data first)."""
    dtype = config.dtype
    roles = _parameter_roles(problem.model)
    _check_theory_model(problem, roles)
    is_bias = [t.tensor_name == "bias" for t in problem.targets]
    masks = [m.detach().to(dtype) for m in problem.masks]
    xs = _batches(problem)
    total, statistics = _path_activations(problem, config, xs, roles, masks)
    view_p = problem.functional(_theory_transform(roles, "squares", dtype))
    leaves = [torch.zeros_like(m) if b else w.detach().to(dtype).square().requires_grad_(True)
              for w, m, b in zip(problem.weights(), masks, is_bias)]
    with preserved_state(problem.model), torch.enable_grad():
        problem.model.eval()
        ones_input = torch.ones((1, *xs[0].shape[1:]), dtype=dtype, device=problem.device)
        with NormReduction("scale_squared", statistics) as p_norms, \
                ActivationGates("identity", approximate=config.approximate_activations):
            z2 = _checked_output(view_p(ones_input, leaves, masks), "P")
        p_norms.check_all_used()
    _finite(z2, "the path kernel (view P)", dtype)
    if z2.shape[1:] != total.shape:
        raise BatchShapeError(f"px: the path kernel's output {tuple(z2.shape)} does not match J's {tuple(total.shape)}.")
    wanted = [i for i, leaf in enumerate(leaves) if leaf.requires_grad]
    grads = torch.autograd.grad(z2, [leaves[i] for i in wanted], grad_outputs=total.unsqueeze(0), allow_unused=True)
    scores = [torch.zeros_like(m) for m in masks]
    for i, g in zip(wanted, grads):
        if g is not None:
            scores[i] = (leaves[i].detach() * g * masks[i]).contiguous()
    return scores
