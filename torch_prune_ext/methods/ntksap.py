"""NTK-SAP (Wang et al., ICLR 2023): neural tangent kernel spectrum-aware pruning.

The score of one round, at the current mask ``m`` (spec: ``shared/specs/ntksap.md``)::

    S(m_j) = | d/dm_j  sum_r sum_b  || f(z_rb; theta_rb * m) - f(z_rb; (theta_rb + eps Delta_rb) * m) ||^2 |
             * 1[m_j != 0]

For every repeat ``r`` (``repeats`` of them) and every pruning batch ``b`` there is one
independent *draw* ``(theta, z, Delta)``:

* ``theta``: every Conv1d/2d/3d and Linear ``weight`` of the model redrawn with
  ``config.init`` (``kaiming_normal_``, fan_in, gain sqrt(2) by default; a Hugging Face
  ``Conv1D`` weight, stored ``(in, out)``, is drawn in PyTorch's ``(out, in)`` layout and
  transposed, so that its fan_in is its input size). Biases keep their
  values; BatchNorm is computed with gamma = 1, beta = 0. ("new input, new weight")
* ``z ~ N(0, I)`` with the shape of the pruning batch (only the *shape* of the data is used;
  without data the shape is ``(batch_size, *input_shape)``). ("random input") For a token
  model (one that starts with ``nn.Embedding``, fed integer ids): token ids drawn uniformly
  from the input embedding's vocabulary, in the same shape (:mod:`torch_prune_ext.core.inputs`).
* ``Delta ~ N(0, 1)`` on the target (prunable) tensors only; ``eps`` (``epsilon``) is a
  standard deviation.

The BatchNorm statistics of a draw are those of the *unperturbed* masked network run on
``z`` in train mode: each BN layer's batch mean and unbiased batch variance, detached. Both
branches (unperturbed and perturbed) are then normalised with these fixed statistics, as
in eval mode (``(x - mean) / sqrt(var + eps_bn)``). ``J = sum (f0 - f1)^2`` is a plain sum;
its gradient is taken with respect to ONE mask shared by both branches, summed over all
draws, then the absolute value is taken and pruned entries are zeroed. Not normalised.

The draws and their documented order: :mod:`torch_prune_ext.methods.ntksap_draws`; how the
score is computed (BatchNorm statistics, loop or ``vmap``, channels-last, cost):
:mod:`torch_prune_ext.methods.ntksap_objective`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..core.config import (
    MethodConfig,
    boolean_or_none,
    callable_value,
    floating_dtype_or_none,
    option,
    positive_float,
    positive_int,
    positive_int_or_none,
)
from ..core.scoring import ScoringProblem
from .base import PruningMethod
from .ntksap_draws import (
    Draw,
    compute_dtype,
    draw_samples,
    iter_draws,
    pruning_batch_shapes,
    redrawn_weight_keys,
    transposed_weight_keys,
)
from .ntksap_objective import BatchNormStatistics, NTKSAPObjective, ntksap_scores

__all__ = [
    "NTKSAP",
    "BatchNormStatistics",
    "Draw",
    "NTKSAPConfig",
    "NTKSAPObjective",
    "compute_dtype",
    "draw_samples",
    "iter_draws",
    "kaiming_normal_init",
    "ntksap_scores",
    "pruning_batch_shapes",
    "redrawn_weight_keys",
    "transposed_weight_keys",
]

#: ``init(t, generator) -> Tensor``: redraw one Conv/Linear weight (see :class:`NTKSAPConfig`).
InitFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def kaiming_normal_init(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The default redraw: ``kaiming_normal_`` (fan_in, gain sqrt(2)), std ``sqrt(2 / fan_in)``.

    Args:
        weight: a fresh tensor of the weight's shape, dtype and the generator's device;
            filled in place.
        generator: the method's generator.

    Returns:
        ``weight``, filled.

    Examples:
        >>> w = kaiming_normal_init(torch.empty(400, 1000), torch.Generator().manual_seed(0))
        >>> round(float(w.std()) * 1000 ** 0.5, 1)
        1.4
    """
    return nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu", generator=generator)


@dataclass(frozen=True)
class NTKSAPConfig(MethodConfig):
    """Hyperparameters of :class:`NTKSAP`.

    Attributes:
        repeats: R, the number of independent weight draws per pruning batch and round
            (multi-sampling). Default 5, the reference's CIFAR-10/ResNet-20 setting (the
            reference uses R = 1 for CIFAR-100 and Tiny-ImageNet with 100 rounds).
        epsilon: standard deviation of the weight perturbation ``eps * Delta``,
            ``Delta ~ N(0, 1)`` (0.01; the paper's variance 1e-4). The method is
            insensitive to it.
        batch_size: examples per random-input batch when no data is given (then the batch
            shape is ``(batch_size, *input_shape)``; one pruning batch). Default 100, the
            reference's CIFAR-10 pruning set. Ignored when data is given: then each data
            batch gives the shape of one pruning batch (its values are never used).
        chunk_size: with ``vectorize=True``, how many draws are evaluated together
            (``vmap``); ``None`` evaluates all draws of equal batch shape together. Lower it
            to bound memory (activations grow linearly with it).
        dtype: compute dtype; ``None`` = the dtype of the target weights. The scores are
            returned in it. Draws are made in the model's dtype and cast, so float64 gives
            the exact value of the float32 computation (which carries ~1e-3 rounding noise).
        init: ``init(t, generator) -> Tensor`` draws a new Conv/Linear weight: ``t`` is a
            fresh uninitialised tensor of the weight's shape, the model's dtype and the
            generator's device; return the new weight (in-place initialisers such as
            ``lambda t, g: nn.init.xavier_normal_(t, generator=g)`` fill and return ``t``).
            Default :func:`kaiming_normal_init`. Draw only from ``generator``. A Hugging Face
            ``Conv1D`` weight, stored ``(in, out)``, is passed as ``(out, in)`` (PyTorch's layout,
            the one fan-based initialisers assume) and the result transposed.
        vectorize: ``True``: draws are stacked (``chunk_size`` at a time) and evaluated with
            ``vmap(grad(J))``; ``False``: one draw at a time with ``torch.autograd.grad``.
            Same numbers up to rounding (summation order, batched kernels). ``None``
            (default): ``False`` on the CPU, where the loop measured 3-4.5x faster than
            ``vmap`` (convolutions with per-draw weights become grouped convolutions;
            ``benchmarks/results/ntksap_speed.md``), ``True`` on other devices (not
            measured here: no GPU was available).
        channels_last: run 4-D/5-D inputs of the loop path in the channels-last memory
            format. ``None`` (default): on the CPU for float32/bfloat16/float16 (oneDNN is
            faster there), not on other devices nor in float64. Not used under ``vmap``.
    """

    repeats: int = option(5, help="R, independent weight draws per pruning batch and round", check=positive_int)
    epsilon: float = option(0.01, help="standard deviation of the weight perturbation", check=positive_float)
    batch_size: int = option(100, help="examples per random-input batch when no data is given", check=positive_int)
    chunk_size: int | None = option(None, help="vectorize=True: draws evaluated together (default: all)",
                                    check=positive_int_or_none)
    dtype: torch.dtype | None = option(None, help="compute dtype (default: the target weights' dtype)",
                                       check=floating_dtype_or_none)
    init: InitFn = option(kaiming_normal_init, help="init(t, generator) -> new Conv/Linear weight",
                          check=callable_value)
    vectorize: bool | None = option(None, help="vmap over draws (default: on GPUs, not on the CPU)",
                                    check=boolean_or_none)
    channels_last: bool | None = option(None, help="channels-last inputs in the loop path (default: CPU float32)",
                                        check=boolean_or_none)


class NTKSAP(PruningMethod):
    """NTK-SAP: prune the weights whose removal changes the NTK spectrum (trace) least.

    score = | d/dm sum_{r,b} || f(z_rb; theta_rb * m) - f(z_rb; (theta_rb + eps Delta_rb) * m) ||^2 |
    * 1[m != 0], with fresh Conv/Linear weights ``theta_rb`` (kaiming normal), random inputs
    ``z_rb ~ N(0, I)`` of the pruning batch's shape, ``Delta ~ N(0, 1)`` and BatchNorm
    statistics fixed from the unperturbed network (see :mod:`torch_prune_ext.methods.ntksap`).
    Data-free: pass ``input_shape=`` (with ``batch_size=``) or data (only its shape is
    used). 20 rounds with the exponential schedule by default; ``repeats=5``,
    ``epsilon=0.01`` (:class:`NTKSAPConfig`). Computed with ``torch.func`` (no model copy).

    Examples:
        >>> import torch_prune_ext as tpe
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
        >>> scores = tpe.compute_scores(net, NTKSAP, input_shape=(8,), batch_size=4, repeats=1, seed=0)
        >>> {name: tuple(s.shape) for name, s in scores.items()}
        {'0.weight': (16, 8), '2.weight': (4, 16)}
    """

    name = "ntksap"
    Config = NTKSAPConfig
    default_rounds = 20
    needs_input_shape = True
    summary = "NTK spectrum-aware, data-free (torch.func)"

    @classmethod
    def score(cls, problem: ScoringProblem, config: NTKSAPConfig) -> list[torch.Tensor]:
        return ntksap_scores(problem, config)
