"""PX, Path eXclusion (Iurada, Ciccone, Tommasi, CVPR 2024): keep what bounds the NTK trace.

The score of one round, at the current mask (spec: ``shared/specs/px.md``)::

    R = sum_{n,k} z1[n, k] * z2[k]          score(theta_j) = theta_j^2 * dR/d(theta_j^2)
                                                            = sum_{n,k} z1[n,k] * sum_{p ∋ j, p -> k} v_p^2

over three views of the current masked network (no copy of the model, nothing written into
it: every view is a :func:`torch.func.functional_call` with substituted tensors, run under
two :class:`torch.overrides.TorchFunctionMode` s, :class:`ActivationGates` and
:class:`NormReduction`):

* **A (gates)**: the real network, real masked weights, the real inputs ``x``; each
  BatchNorm normalises with the per-channel mean and biased variance of its input over the
  whole pruning set, measured this round on the masked network (``norm="batch"``, the
  default: what train mode sees when the set is one batch, independent of the batching;
  :mod:`~torch_prune_ext.methods.px_norm`), or with its running statistics
  (``norm="running"``). Every ReLU-like call records which pre-activations are ``> 0`` (a
  boolean tensor), every max-pool call records its argmax indices.
* **J (path activation)**: every Conv/Linear weight 1 (masked entries stay 0 through the
  mask), biases 0, each BatchNorm reduced to scale 1 and no shift (the identity), each ReLU
  replaced by multiplication with A's gate of the same call (matched by call order; a
  LeakyReLU by ``1`` or its slope), each max-pool routed through A's argmax, input ``x**2``;
  no gradient. ``z1[n, k] = sum_{p -> k} a_p(x_n) x_n[s(p)]^2``.
* **P (path kernel)**: every Conv/Linear weight squared, biases 0, each BatchNorm reduced
  to its per-channel scale ``s = gamma / sqrt(var + eps)`` squared (``var`` the variance A
  used), no shift, ReLUs
  the identity, each max-pool a *sum* over its window (every entry of the window starts a
  path; which one is taken is A's gate, applied in J), input all ones, batch size 1.
  ``z2[k] = sum_{p -> k} v_p^2``.

Data enter only through ``c = sum_n z1[n]`` (the shape of one output), accumulated over the
pruning batches in one no-grad pass of A and J each (with several batches, ``norm="batch"``
first measures the statistics with one partial pass per BatchNorm); then ONE forward and ONE
vector-Jacobian product of P with cotangent ``c`` give every score:
``score = u * dR/du`` with ``u = theta**2`` (P is multilinear in the ``u``), which is ``>= 0``
by construction, and exactly 0 where the mask is 0. J and P run in ``PXConfig.dtype``
(float64 by default: both grow by about fan_in x density per layer; ResNet-20 reaches
~1e49, beyond float32), and are checked to be finite.

Fixed linear maps (average pooling, residual additions, flatten, constant factors) are not
parameters: they act in J and in P as they are (an average pool's ``1/|window|`` enters both
once). For networks in which every path crosses the same such maps (ResNets' global average
pooling, VGG's final pool) this is one common factor and does not change the ranking.

What is supported: ``nn.Conv1d/2d/3d``, ``nn.Linear`` (and their functional forms through
these modules), ``nn.BatchNorm1d/2d/3d``/``SyncBatchNorm`` (with running statistics for
``norm="running"``), ReLU in
every form (``F.relu``, ``torch.relu``, ``Tensor.relu``, ``relu_``, ``F.relu(inplace=True)``,
``nn.ReLU(inplace=True)``), LeakyReLU (with its slope), max-pool 1d/2d/3d (not dilated) and
adaptive max-pool (when the output size divides the input size), average pooling, residual
additions, flatten, dropout (eval mode). Anything else that carries parameters, and GELU,
SiLU, tanh, sigmoid, softmax, ReLU6, GroupNorm, LayerNorm... raise
:class:`UnsupportedLayerError` naming the layer and what to do (``approximate_activations=
True`` gates GELU/SiLU/ELU/... on ``pre-activation > 0``, an approximation). Nonlinear ops
called as plain tensor arithmetic (``torch.clamp``, ``torch.maximum``) are not detected.

The pruning data: 10 random examples per class of the training set in the paper (CIFAR-10:
100 images); :func:`torch_prune_ext.data.pruning_set` and
:func:`torch_prune_ext.data.splits.pruning_batch` draw such class-balanced splits. Labels
are not used.

``mode="reference"`` and ``mode="release-2024"`` reproduce two releases of the authors' public
code instead (:mod:`torch_prune_ext.methods.px_conformance`); ``"reference"`` is degenerate for
BatchNorm networks with global average pooling. Neither is the default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.config import MethodConfig, boolean, floating_dtype, option
from ..core.scoring import ScoringProblem
from ..errors import MissingDataError, UnsupportedLayerError
from .base import PruningMethod
from .px_conformance import conformance_scores
from .px_norm import NormReduction, NormStatistics
from .px_theory import theory_scores
from .px_views import ActivationGates

__all__ = [
    "PX",
    "ActivationGates",
    "NormReduction",
    "NormStatistics",
    "PXConfig",
    "UnsupportedLayerError",
    "px_scores",
]

MODES = ("theory", "reference", "release-2024")
#: Where view A takes each normalisation layer's statistics (theory mode).
NORMS = ("batch", "running")


@dataclass(frozen=True)
class PXConfig(MethodConfig):
    """Hyperparameters of :class:`PX`.

    Attributes:
        mode: ``"theory"`` (default): the method as the paper derives it (module docstring).
            ``"reference"``: the authors' current public code (HEAD ed6c40e), for comparison:
            gates from the real network in eval mode; J and P on batch statistics, fed batches
            (P an all-ones batch of the data batch's size); every model state entry whose name
            contains ``"bn"`` or ``"fc"`` left untouched, every other floating entry (also a
            BatchNorm named e.g. ``shortcut.1``) squared in P and set to 1 in J; per batch
            ``R_b = sum(z1 * z2)``, gradients accumulated; score ``|g| * theta**2``. Degenerate
            for BatchNorm networks with global average pooling: on identical all-ones inputs
            each train-mode BatchNorm outputs its shift as its per-channel mean, so P's pooled
            output does not depend on the conv weights and their scores are ``theta**2`` times
            rounding noise.
            ``"release-2024"``: the first public release (82ce2bf, April 2024): batch statistics
            everywhere, J the real network, P squares every entry whose name lacks ``"bn"``, both
            fed ``x``; score ``|g * theta**5|``. Both conformance modes:
            :mod:`torch_prune_ext.methods.px_conformance`.
        dtype: floating dtype of J and P (and of the scores). float64 by default: J and P
            grow geometrically with depth and overflow float32 on ResNet-20.
        approximate_activations: gate GELU, SiLU, ELU, CELU, SELU, Mish, Softplus and
            Hardswish like a ReLU (on ``pre-activation > 0``) instead of raising
            :class:`UnsupportedLayerError`. An approximation outside the paper's theory.
        norm: the statistics of the normalisation layers in ``mode="theory"`` (the
            conformance modes follow their code and ignore it). ``"batch"`` (default): every
            round, each BatchNorm takes the per-channel mean and biased variance of its input
            over the whole pruning set on the current masked network (each layer with the
            layers before it normalised by theirs: what train mode sees when the set is one
            batch; independent of how the set is batched); view A normalises with them, P
            scales by ``(gamma / sqrt(var + eps))**2``. ``"running"``: the stored running
            statistics (for pretrained networks whose running statistics mean something). At
            initialisation they are mean 0 / variance 1, and iterative pruning then empties
            whole residual branches of ResNets (README, "Known limits"). Networks without
            normalisation layers score the same with both.
    """

    mode: str = option("theory", help="theory: the paper's method; reference/release-2024: the authors' code",
                       choices=MODES)
    dtype: torch.dtype = option(torch.float64, help="floating dtype of the views J and P and of the scores",
                                check=floating_dtype)
    approximate_activations: bool = option(False, help="gate GELU/SiLU/ELU/... like a ReLU instead of raising",
                                           check=boolean)
    norm: str = option("batch", help="theory mode: BatchNorm statistics of the pruning set, or the running ones",
                       choices=NORMS)


def px_scores(problem: ScoringProblem, config: PXConfig) -> list[torch.Tensor]:
    """One round of PX scores at ``problem.masks``; the model is left as it was.

    Args:
        problem: the scoring problem (its data are the pruning batches; labels unused).
        config: the method's config.

    Returns:
        One score tensor per target in ``config.dtype``, ``>= 0``, exactly 0 where the mask is 0.

    Raises:
        MissingDataError: no pruning data.
        UnsupportedLayerError: an activation, normalisation or parametrised module PX cannot treat.
        NonFiniteScoreError: J or P overflowed (or the weights/data hold NaN/inf).

    Examples:
        >>> from torch_prune_ext.core.scoring import PruningOptions
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.ReLU(),
        ...                           torch.nn.Linear(2, 1, bias=False))
        >>> with torch.no_grad():
        ...     net[0].weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 1.0]]))
        ...     net[2].weight.copy_(torch.tensor([[3.0, 1.0]]))  # doctest: +ELLIPSIS
        Parameter...
        >>> problem = PX.prepare(net, torch.tensor([[1.0, 1.0]]), None, PruningOptions())
        >>> [s.tolist() for s in px_scores(problem, PXConfig())]
        [[[18.0, 72.0], [2.0, 2.0]], [[90.0, 4.0]]]
    """
    if not problem.data.given:
        raise MissingDataError("px needs pruning data: pass data=<batch or DataLoader> (labels are not used).")
    if config.mode != "theory":
        return conformance_scores(problem, config)
    return theory_scores(problem, config)


class PX(PruningMethod):
    """PX (Path eXclusion): keep the weights that most influence a path bound on the NTK trace.

    score(θ_j) = θ_j² · ∂R/∂(θ_j²), ``R = Σ_{n,k} z1[n,k] · z2[k]``: ``z1`` the path activations
    of the pruning data (all-ones weights gated like the real network, input ``x²``), ``z2`` the
    path kernel (squared weights, squared BatchNorm scales, all-ones input); see
    :mod:`torch_prune_ext.methods.px`. Scores are ``>= 0``, so iterating avoids layer collapse.
    Needs data (labels unused): 10 examples per class in the paper
    (:func:`torch_prune_ext.data.pruning_set`). 100 rounds with the exponential schedule by
    default; options in :class:`PXConfig` (``mode="reference"``/``"release-2024"`` for the authors' code).
    Works from initialisation and from pretrained weights.

    Examples:
        >>> import torch_prune_ext as tpe
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
        >>> report = tpe.global_prune(net, PX, 0.75, data=torch.randn(8, 8), rounds=5, progress=False)
        >>> report.sparsity
        0.75
    """

    name = "px"
    Config = PXConfig
    default_rounds = 100
    needs_data = True
    summary = "path kernel x path activation (NTK-trace bound), data-driven"

    @classmethod
    def score(cls, problem: ScoringProblem, config: PXConfig) -> list[torch.Tensor]:
        return px_scores(problem, config)
