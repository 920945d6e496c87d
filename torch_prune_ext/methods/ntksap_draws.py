"""NTK-SAP's draws: the fresh weights, random inputs and perturbations of every scoring round.

Order of the random draws (the documented contract that :func:`draw_samples` implements; the
score itself: :mod:`torch_prune_ext.methods.ntksap`):
for ``r`` in ``range(repeats)``, for each pruning batch shape ``s`` in data order:
(1) ``theta``: ``config.init(t, generator)`` for every Conv/Linear weight in
``model.named_modules()`` order, ``t`` a fresh uninitialised tensor of the weight's shape,
the model's dtype and the generator's device; (2) ``z = randn(s)`` (token models:
``z = randint(vocabulary, s)``); (3) ``Delta_i =
randn(shape of target i)`` for every target in target order. All from the method's
generator, in the MODEL's dtype (so ``dtype=torch.float64`` on a float32 model computes the
same draws exactly), then moved to the model's device and cast to the compute dtype.

Under distributed scoring (``distributed=True``) the pruning batch shapes are those of every
rank's data in rank order, every rank makes every draw (so the generators stay in step) and
evaluates draw ``i`` when ``i % world_size`` is its rank; the per-rank sums are all-reduced
before the absolute value, so the scores are those of one process on all the data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from ..core.functional import parameter_keys
from ..core.scoring import ScoringProblem
from ..core.targets import is_default_kind, is_hf_conv1d, trainable_tensor, weight_names
from ..errors import BatchShapeError, InvalidOptionError, MissingDataError

if TYPE_CHECKING:
    from .ntksap import NTKSAPConfig


def redrawn_weight_keys(model: nn.Module) -> list[str]:
    """``functional_call`` keys of the weights redrawn for every draw, in module order.

    Every default-kind matrix weight (:func:`~torch_prune_ext.core.targets.is_default_kind`:
    Conv1d/2d/3d and Linear ``weight``, ``MultiheadAttention.in_proj_weight``, Hugging Face
    ``Conv1D.weight``; ``weight_orig`` when pruned by ``torch.nn.utils.prune``), whether it is a
    target or not; a tied weight once, under its first name.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))
        >>> redrawn_weight_keys(net)
        ['0.weight', '2.weight']
    """
    names = parameter_keys(model)
    keys: list[str] = []
    for module in model.modules():
        if not is_default_kind(module):
            continue
        for local in weight_names(module):
            tensor = trainable_tensor(module, local)
            if tensor is not None and names[id(tensor)] not in keys:
                keys.append(names[id(tensor)])
    return keys


def transposed_weight_keys(model: nn.Module) -> set[str]:
    """The :func:`redrawn_weight_keys` stored as ``(in, out)``: Hugging Face ``Conv1D`` weights.

    They are drawn in PyTorch's ``(out, in)`` layout and transposed, so that ``init`` computes the
    fan_in from the input axis (``weight.shape[0]`` of the stored tensor).

    Examples:
        >>> transposed_weight_keys(torch.nn.Sequential(torch.nn.Linear(4, 3)))
        set()
    """
    names = parameter_keys(model)
    return {names[id(trainable_tensor(module, "weight"))] for module in model.modules()
            if is_hf_conv1d(module) and trainable_tensor(module, "weight") is not None}


class Draw(NamedTuple):
    """One independent sample ``(theta, z, Delta)`` of the NTK-SAP objective.

    Attributes:
        theta: the new Conv/Linear weights, in :func:`redrawn_weight_keys` order.
        z: the random input batch.
        delta: the perturbation directions, one per target (target order).
    """

    theta: list[torch.Tensor]
    z: torch.Tensor
    delta: list[torch.Tensor]


def compute_dtype(problem: ScoringProblem, config: NTKSAPConfig) -> torch.dtype:
    """The dtype the scores are computed (and the draws made) in."""
    return config.dtype or problem.dtype


def pruning_batch_shapes(problem: ScoringProblem, config: NTKSAPConfig) -> list[tuple[int, ...]]:
    """The shape of every pruning batch: the data's batches, else ``(batch_size, *input_shape)``.

    The data is iterated once per pruning call (the shapes are remembered for its later rounds);
    its values are never used. Under distributed scoring: every rank's batches, in rank order.

    Raises:
        BatchShapeError: ``input_shape=`` and the data disagree.
        MissingDataError: the data holds no batch.
    """
    if problem.data.given:
        shapes = problem.memo.get("batch_shapes")
        if shapes is None:  # read once per pruning call, not once per round
            shapes = problem.all_batch_shapes()
            if not shapes:
                raise MissingDataError("ntksap: the pruning data is empty: it yielded no batch.")
            problem.memo["batch_shapes"] = shapes
        if problem.input_shape is not None:
            bad = [s for s in shapes if tuple(s[1:]) != tuple(problem.input_shape)]
            if bad:
                raise BatchShapeError(
                    f"input_shape={tuple(problem.input_shape)} does not match the data, whose batches have shape "
                    f"{bad[0]}. Drop input_shape= (the data's shape is used) or fix it."
                )
        elif shapes:
            problem.input_shape = tuple(shapes[0][1:])  # as require_input_shape would (collapse check)
        return shapes
    shape = problem.require_input_shape("ntksap")
    return [(config.batch_size, *shape)]


def iter_draws(
    problem: ScoringProblem, config: NTKSAPConfig, batch_shapes: Sequence[Sequence[int]] | None = None
) -> Iterator[Draw]:
    """Yield the ``repeats * len(batch_shapes)`` draws in the documented order (see the module doc).

    Each draw is made when it is asked for, so that the draws need not all be in memory.

    Args:
        problem: the scoring problem (its generator is advanced).
        config: the method's config (``repeats``, ``init``, ``dtype``).
        batch_shapes: the pruning batch shapes; default :func:`pruning_batch_shapes`.
    """
    shapes = [tuple(s) for s in (batch_shapes if batch_shapes is not None else pruning_batch_shapes(problem, config))]
    dtype, draw_dtype = compute_dtype(problem, config), problem.dtype
    generator, device = problem.generator, problem.device
    params = dict(problem.model.named_parameters())
    keys = redrawn_weight_keys(problem.model)
    transposed = transposed_weight_keys(problem.model)
    vocabulary = problem.input_vocabulary()
    for _ in range(config.repeats):
        for shape in shapes:
            theta = []
            for key in keys:
                flip = key in transposed  # HF Conv1D: (in, out) stored, drawn as (out, in)
                init_shape = tuple(params[key].shape)[::-1] if flip else tuple(params[key].shape)
                fresh = torch.empty(init_shape, dtype=draw_dtype, device=generator.device)
                new = config.init(fresh, generator)
                if not isinstance(new, torch.Tensor) or tuple(new.shape) != init_shape:
                    raise InvalidOptionError(
                        f"init must return a tensor of shape {init_shape} for {key}, got "
                        f"{getattr(new, 'shape', type(new).__name__)}."
                    )
                if flip:
                    new = new.t().contiguous()
                theta.append(new.to(device=device, dtype=dtype))
            if vocabulary is None:
                z = problem.randn(shape, draw_dtype).to(dtype)
            else:
                z = problem.randint(vocabulary, shape)
            delta = [problem.randn(t.raw.shape, draw_dtype).to(dtype) for t in problem.targets]
            yield Draw(theta, z, delta)


def draw_samples(
    problem: ScoringProblem, config: NTKSAPConfig, batch_shapes: Sequence[Sequence[int]] | None = None
) -> list[Draw]:
    """All draws of one scoring round, in order (what :func:`ntksap_scores` uses from a fresh generator).

    Examples:
        >>> from torch_prune_ext.core.scoring import PruningOptions
        >>> from torch_prune_ext.methods.ntksap import NTKSAP, NTKSAPConfig
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> problem = NTKSAP.prepare(net, None, None, PruningOptions(seed=0, input_shape=(4,)))
        >>> draws = draw_samples(problem, NTKSAPConfig(repeats=2, batch_size=8))
        >>> len(draws), tuple(draws[0].z.shape), [tuple(t.shape) for t in draws[0].theta]
        (2, (8, 4), [(3, 4), (2, 3)])
    """
    return list(iter_draws(problem, config, batch_shapes))
