"""Gradient-saliency baselines that use labelled data: SNIP, Iterative SNIP and GraSP.

Notation: W = m ⊙ θ is the effective weight, L_b the loss of batch b (cross-entropy,
mean over the batch, by default), Σ_b a sum over the pruning batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..core.config import MethodConfig, callable_value, option, positive_float
from ..core.scoring import ScoringProblem
from .base import PruningMethod

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def set_mode(model: nn.Module, mode: str) -> None:
    """Put the model in ``"train"`` (batch statistics) or ``"eval"`` mode for scoring.

    The caller's modes are restored by :func:`~torch_prune_ext.core.functional.preserved_state`.
    """
    model.train(mode == "train")


#: The module modes a method may score in.
MODULE_MODES = ("train", "eval")


@dataclass(frozen=True)
class SaliencyConfig(MethodConfig):
    """Hyperparameters of :class:`SNIP` and :class:`IterSNIP`.

    Attributes:
        mode: module mode while scoring: ``"train"`` (BatchNorm uses batch statistics,
            as the references do) or ``"eval"``.
        loss_fn: ``loss_fn(logits, y)``, reduced to a scalar per batch; cross-entropy
            (mean over the batch) by default.
    """

    mode: str = option("train", help="module mode while scoring (train: BatchNorm batch statistics)",
                       choices=MODULE_MODES)
    loss_fn: LossFn = option(F.cross_entropy, help="loss_fn(logits, y) -> scalar per batch (default cross-entropy)",
                             check=callable_value)


@dataclass(frozen=True)
class SNIPConfig(SaliencyConfig):
    """Hyperparameters of :class:`SNIP`: those of :class:`SaliencyConfig`."""


@dataclass(frozen=True)
class IterSNIPConfig(SaliencyConfig):
    """Hyperparameters of :class:`IterSNIP`: those of :class:`SaliencyConfig`."""


def _summed_gradients(problem: ScoringProblem, config: SaliencyConfig, method: str,
                      wrt: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Σ_b ∂L_b/∂(masks or weights) over every rank's batches, and the leaves it was taken at."""
    fm = problem.functional()
    set_mode(problem.model, config.mode)
    weights = [w.clone().requires_grad_(wrt == "weights") for w in problem.weights()]
    masks = [m.clone().requires_grad_(wrt == "masks") for m in problem.masks]
    leaves = masks if wrt == "masks" else weights
    total = [torch.zeros_like(leaf) for leaf in leaves]
    for x, y in problem.data.labelled(method):
        loss = config.loss_fn(fm(x, weights, masks), y)
        for acc, grad in zip(total, torch.autograd.grad(loss, leaves)):
            acc.add_(grad)
    problem.all_reduce_(total)
    return total, [leaf.detach() for leaf in leaves]


class SNIP(PruningMethod):
    """SNIP (Lee et al., 2019): connection sensitivity at the current mask.

    score = | Σ_b ∂L_b/∂m | = | θ ⊙ Σ_b ∂L_b/∂W |, summed over batches before the
    absolute value. The references also divide by the global sum of scores, which does not
    change the ranking; these scores are not normalised. One round by default.

    Examples:
        >>> import torch_prune_ext as tpe
        >>> from torch.nn.utils import prune
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
        >>> prune.global_unstructured(tpe.prunable_parameters(net), pruning_method=SNIP, amount=0.5,
        ...                           model=net, data=(x, y))
        >>> int((net[0].weight == 0).sum() + (net[2].weight == 0).sum())
        44
    """

    name = "snip"
    Config = SNIPConfig
    needs_data = True
    needs_labels = True
    summary = "abs(sum_b dL/dm) at the current mask"

    @classmethod
    def score(cls, problem: ScoringProblem, config: SaliencyConfig) -> list[torch.Tensor]:
        grads, _ = _summed_gradients(problem, config, cls.name, wrt="masks")
        return [g.abs() for g in grads]


class IterSNIP(PruningMethod):
    """Iterative SNIP: score = | θ ⊙ ∂(Σ_b L_b)/∂θ |, re-scored over rounds.

    The derivative is taken with respect to the raw weight θ, so the mask is in the chain
    rule and pruned entries score exactly 0. Default: 100 rounds, exponential schedule
    (the same schedule length as SynFlow, which this iterative variant is usually compared with).

    Examples:
        >>> import torch_prune_ext as tpe
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
        >>> report = tpe.global_prune(net, IterSNIP, 0.9, (x, y), rounds=5, progress=False)
        >>> report.layers.numel - report.layers.kept == round(0.9 * 88)
        True
    """

    name = "iter_snip"
    Config = IterSNIPConfig
    default_rounds = 100
    needs_data = True
    needs_labels = True
    summary = "abs(theta * dL/dtheta), iterated"

    @classmethod
    def score(cls, problem: ScoringProblem, config: SaliencyConfig) -> list[torch.Tensor]:
        grads, weights = _summed_gradients(problem, config, cls.name, wrt="weights")
        return [(w * g).abs() for w, g in zip(weights, grads)]


@dataclass(frozen=True)
class GraSPConfig(SaliencyConfig):
    """Hyperparameters of :class:`GraSP`: those of :class:`SaliencyConfig`, and

    Attributes:
        temperature: the logits are divided by it before ``loss_fn`` (200 in the references).
    """

    temperature: float = option(200.0, help="the logits are divided by it before loss_fn", check=positive_float)


class GraSP(PruningMethod):
    """GraSP (Wang et al., 2020): gradient signal preservation, SIGNED scores.

    g = Σ_b ∇_θ L_b (detached), Hg = Σ_b ∇_θ ⟨g, ∇_θ L_b⟩ over the target weights,
    score = Hg ⊙ θ, with L computed on logits / temperature and the same batches for g and
    Hg. The lowest scores are pruned (the paper's S = -θ ⊙ Hg with the highest removed).
    Never pass these scores through anything that takes absolute values. Attention runs on
    the math SDPA backend while scoring (the fused kernels have no double backward).

    Examples:
        >>> import torch_prune_ext as tpe
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
        >>> scores = tpe.compute_scores(net, GraSP, (x, y))
        >>> bool((scores["0.weight"] < 0).any())  # signed: the lowest (most negative) go first
        True
    """

    name = "grasp"
    Config = GraSPConfig
    needs_data = True
    needs_labels = True
    summary = "signed (H g) * theta, lowest pruned first"

    @classmethod
    def score(cls, problem: ScoringProblem, config: GraSPConfig) -> list[torch.Tensor]:
        # Hg needs a double backward, which the fused (flash/memory-efficient) attention kernels lack.
        with sdpa_kernel(SDPBackend.MATH):
            return cls._hessian_gradient_scores(problem, config)

    @classmethod
    def _hessian_gradient_scores(cls, problem: ScoringProblem, config: GraSPConfig) -> list[torch.Tensor]:
        fm = problem.functional()
        set_mode(problem.model, config.mode)
        batches = list(problem.data.labelled(cls.name))
        masks = problem.masks
        weights = [w.clone().requires_grad_(True) for w in problem.weights()]

        def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return config.loss_fn(fm(x, weights, masks) / config.temperature, y)

        g = [torch.zeros_like(w) for w in weights]
        for x, y in batches:
            for acc, grad in zip(g, torch.autograd.grad(loss(x, y), weights)):
                acc.add_(grad)
        problem.all_reduce_(g)
        hg = [torch.zeros_like(w) for w in weights]
        for x, y in batches:
            grads = torch.autograd.grad(loss(x, y), weights, create_graph=True)
            inner = sum((gi * di).sum() for gi, di in zip(g, grads))
            for acc, grad in zip(hg, torch.autograd.grad(inner, weights)):
                acc.add_(grad)
        problem.all_reduce_(hg)
        return [h * w.detach() for h, w in zip(hg, weights)]
