"""PX conformance modes: the authors' public code (iurada/px-ntk-pruning), for comparison.

Two releases are reproduced (spec ``shared/specs/px.md``, "Conformance modes"); neither is the
method as the paper derives it (``mode="theory"``, :mod:`torch_prune_ext.methods.px`):

* ``mode="reference"``: HEAD ed6c40e. Gates A from the real network in *eval* mode (running
  statistics); J and P with normalisation layers on batch statistics; a name rule on the
  model's state (:data:`HEAD_SKIPPED`): every floating entry whose name contains ``"bn"`` or
  ``"fc"`` is left as it is, every other one (weights, biases, the affine parameters of a
  BatchNorm registered as e.g. ``shortcut.1``) is set to 1 in J and squared in P; J is fed
  ``x**2`` and gated by A's ReLU pattern, P an all-ones batch with ReLUs the identity;
  per batch ``R_b = sum(z1 * z2)``, gradients ``g`` with respect to the tensors P uses summed
  over the batches; ``score = |g| * theta**2``.
* ``mode="release-2024"``: the first release 82ce2bf (April 2024). A, J and P on batch
  statistics; J keeps the real weights (its fill with ones is a no-op in that code), so
  ``z1`` is the real network's output on ``x``; P squares every floating entry whose name
  lacks ``"bn"`` (:data:`RELEASE_SKIPPED`; the classifier and all biases are squared), ReLUs
  the identity, fed the real ``x``; per batch ``R_b = sum(z1 * z2)``, gradients summed;
  ``score = |g * theta**2 * theta * theta**2|``.

In both, max-pools run as they are in every view (the authors' code leaves them alone);
dropout is off (the authors run J and P in train mode, where it is random); everything is in
``PXConfig.dtype``. As elsewhere, nothing is written into the model: every view is a
:func:`torch.func.functional_call`. Checked against scores of the official code on two small
nets, stored in ``tests/fixtures/`` (``tests/fixtures/PX_FIXTURES.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ..core.functional import preserved_state
from ..core.scoring import ScoringProblem
from .px_norm import NormReduction
from .px_views import _MAX_POOL, ActivationGates, _batches, _checked_output, _finite

if TYPE_CHECKING:  # px imports this module
    from .px import PXConfig

__all__ = ["HEAD_SKIPPED", "RELEASE_SKIPPED", "conformance_scores", "reference_scores", "release_2024_scores"]

#: HEAD ed6c40e: state entries whose name contains one of these are left untouched in J and P.
HEAD_SKIPPED = ("bn", "fc")
#: Release 82ce2bf: state entries whose name contains one of these are not squared in P.
RELEASE_SKIPPED = ("bn",)


class _AuthorsGates(ActivationGates):
    """:class:`ActivationGates` for ReLUs only: max-pools run as they are, as in the authors' code."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _MAX_POOL:
            return func(*args, **(kwargs or {}))
        return super().__torch_function__(func, types, args, kwargs)


def skipped(name: str, words: tuple[str, ...]) -> bool:
    """Whether the authors' name rule leaves the state entry ``name`` untouched.

    Masks (``*_mask``) are always left alone, as in the authors' code.

    Args:
        name: a parameter or buffer name of the model (``"shortcut.1.weight"``).
        words: the rule's words (:data:`HEAD_SKIPPED` or :data:`RELEASE_SKIPPED`).

    Returns:
        True when ``name`` contains one of ``words`` or is a mask.

    Examples:
        >>> skipped("layer1.0.bn1.weight", HEAD_SKIPPED), skipped("layer1.0.shortcut.1.weight", HEAD_SKIPPED)
        (True, False)
        >>> skipped("fc.weight", HEAD_SKIPPED), skipped("fc.weight", RELEASE_SKIPPED)
        (True, False)
    """
    return name.endswith("_mask") or any(word in name for word in words)


def name_rule(view: str, words: tuple[str, ...], dtype: torch.dtype) -> Callable[[str, torch.Tensor], torch.Tensor]:
    """The authors' transform of the model's state: ``"ones"`` (their J) or ``"squares"`` (their P).

    Args:
        view: ``"ones"`` or ``"squares"``.
        words: entries whose name contains one of these are only cast to ``dtype``.
        dtype: the floating dtype of the view.

    Returns:
        A ``(name, tensor) -> tensor`` map for :meth:`ScoringProblem.functional`.

    Examples:
        >>> rule = name_rule("ones", HEAD_SKIPPED, torch.float64)
        >>> rule("shortcut.1.bias", torch.tensor([0.5, -2.0])), rule("bn1.bias", torch.tensor([0.5]))
        (tensor([1., 1.], dtype=torch.float64), tensor([0.5000], dtype=torch.float64))
    """
    def transform(name: str, tensor: torch.Tensor) -> torch.Tensor:
        if not tensor.is_floating_point():
            return tensor
        if skipped(name, words):
            return tensor.to(dtype)
        return torch.ones_like(tensor, dtype=dtype) if view == "ones" else tensor.to(dtype).square()
    return transform


def _accumulated_gradients(problem: ScoringProblem, leaves: list[torch.Tensor],
                           path_activation: Callable[[torch.Tensor], torch.Tensor],
                           path_kernel: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype,
                           approximate: bool) -> list[torch.Tensor]:
    """``g = sum_b dR_b/d(leaves)``, ``R_b = sum(z1_b * z2_b)``, over the pruning batches (all ranks).

    ``path_activation(x)`` gives ``z1`` (called without gradient), ``path_kernel(x)`` gives ``z2``
    (a function of ``leaves``; run on batch statistics with ReLUs the identity).
    """
    total = [torch.zeros_like(leaf) for leaf in leaves]
    with preserved_state(problem.model):
        problem.model.eval()
        for x in _batches(problem):
            with torch.no_grad():
                z1 = _checked_output(path_activation(x), "J")
            with torch.enable_grad(), NormReduction("batch"), _AuthorsGates("identity", approximate=approximate):
                z2 = _checked_output(path_kernel(x), "P")
            _finite(z1, "the path activation (view J)", dtype)
            _finite(z2, "the path kernel (view P)", dtype)
            grads = torch.autograd.grad(z2, leaves, grad_outputs=z1, allow_unused=True)
            for acc, g in zip(total, grads):
                if g is not None:
                    acc.add_(g)
    problem.all_reduce_(total)
    return total


def reference_scores(problem: ScoringProblem, config: PXConfig) -> list[torch.Tensor]:
    """PX scores as HEAD ed6c40e of the authors' code computes them (``mode="reference"``).

    Args:
        problem: the scoring problem (data = the pruning batches; labels unused).
        config: the method's config (``dtype``, ``approximate_activations``).

    Returns:
        One score tensor per target, ``|g| * theta**2``, 0 where the mask is 0.

    Examples:
        >>> from collections import OrderedDict
        >>> from torch_prune_ext.core.scoring import PruningOptions
        >>> from torch_prune_ext.methods.px import PX, PXConfig
        >>> def one_layer(name):  # weights [2, -1], one input [1, 3]
        ...     net = torch.nn.Sequential(OrderedDict({name: torch.nn.Linear(2, 1, bias=False)}))
        ...     with torch.no_grad():
        ...         net[0].weight.copy_(torch.tensor([[2.0, -1.0]]))
        ...     return PX.prepare(net, torch.tensor([[1.0, 3.0]]), None, PruningOptions())
        >>> # "out": J has weights 1 on x**2 (z1 = 10), P squares them (z2 = 4 + 1): |g| = 10
        >>> reference_scores(one_layer("out"), PXConfig(mode="reference"))[0].tolist()
        [[40.0, 10.0]]
        >>> # "fc" is left as it is by the name rule: z1 = 2 - 9 = -7, z2 = 2 - 1: |g| = 7
        >>> reference_scores(one_layer("fc"), PXConfig(mode="reference"))[0].tolist()
        [[28.0, 7.0]]
    """
    dtype, approximate = config.dtype, config.approximate_activations
    masks = [m.detach().to(dtype) for m in problem.masks]
    weights = [w.detach().to(dtype) for w in problem.weights()]
    keep = [skipped(t.name, HEAD_SKIPPED) for t in problem.targets]
    view_a = problem.functional()
    view_j = problem.functional(name_rule("ones", HEAD_SKIPPED, dtype))
    view_p = problem.functional(name_rule("squares", HEAD_SKIPPED, dtype))
    j_weights = [w if k else torch.ones_like(w) for w, k in zip(weights, keep)]
    leaves = [(w if k else w.square()).clone().requires_grad_(True) for w, k in zip(weights, keep)]

    def path_activation(x: torch.Tensor) -> torch.Tensor:
        with _AuthorsGates("record", approximate=approximate) as record:  # eval mode: running statistics
            view_a(x, problem.weights(), problem.masks)
        with NormReduction("batch"), _AuthorsGates("apply", record.gates, approximate=approximate):
            return view_j(x.to(dtype).square(), j_weights, masks)

    def path_kernel(x: torch.Tensor) -> torch.Tensor:
        return view_p(torch.ones_like(x, dtype=dtype), leaves, masks)

    total = _accumulated_gradients(problem, leaves, path_activation, path_kernel, dtype, approximate)
    return [(g.abs() * w.square() * m).contiguous() for g, w, m in zip(total, weights, masks)]


def release_2024_scores(problem: ScoringProblem, config: PXConfig) -> list[torch.Tensor]:
    """PX scores as release 82ce2bf (April 2024) of the authors' code computes them (``mode="release-2024"``).

    Args:
        problem: the scoring problem (data = the pruning batches; labels unused).
        config: the method's config (``dtype``, ``approximate_activations``).

    Returns:
        One score tensor per target, ``|g * theta**2 * theta * theta**2|``, 0 where the mask is 0.

    Examples:
        >>> from torch_prune_ext.core.scoring import PruningOptions
        >>> from torch_prune_ext.methods.px import PX, PXConfig
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False))
        >>> with torch.no_grad():
        ...     net[0].weight.copy_(torch.tensor([[2.0, -1.0]]))  # doctest: +ELLIPSIS
        Parameter...
        >>> problem = PX.prepare(net, torch.tensor([[1.0, 3.0]]), None, PruningOptions())
        >>> # z1 = 2 - 3 = -1, z2 = 4 + 3 = 7: g = z1 * x = [-1, -3]; score = |g| * |theta|**5
        >>> [s.tolist() for s in release_2024_scores(problem, PXConfig(mode="release-2024"))]
        [[[32.0, 3.0]]]
    """
    dtype, approximate = config.dtype, config.approximate_activations
    masks = [m.detach().to(dtype) for m in problem.masks]
    weights = [w.detach().to(dtype) * m for w, m in zip(problem.weights(), masks)]
    view_real = problem.functional(lambda name, t: t.to(dtype) if t.is_floating_point() else t)
    view_p = problem.functional(name_rule("squares", RELEASE_SKIPPED, dtype))
    leaves = [w.square().requires_grad_(True) for w in weights]

    def path_activation(x: torch.Tensor) -> torch.Tensor:
        # J gated by A's own ReLU pattern on the same weights and batch statistics: the real output
        with NormReduction("batch"):
            return view_real(x.to(dtype), weights, masks)

    def path_kernel(x: torch.Tensor) -> torch.Tensor:
        return view_p(x.to(dtype), leaves, masks)

    total = _accumulated_gradients(problem, leaves, path_activation, path_kernel, dtype, approximate)
    return [(g * u.detach() * w * w.square()).abs() * m for g, u, w, m in zip(total, leaves, weights, masks)]


_SCORERS: dict[str, Callable[[ScoringProblem, PXConfig], list[torch.Tensor]]] = {
    "reference": reference_scores,
    "release-2024": release_2024_scores,
}


def conformance_scores(problem: ScoringProblem, config: PXConfig) -> list[torch.Tensor]:
    """Scores of the conformance mode ``config.mode`` (``"reference"`` or ``"release-2024"``).

    Args:
        problem: the scoring problem.
        config: the method's config.

    Returns:
        One score tensor per target.
    """
    scorer: Any = _SCORERS[config.mode]
    return scorer(problem, config)
