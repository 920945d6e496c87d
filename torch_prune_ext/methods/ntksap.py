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

How it is computed (and why)
----------------------------
* No copy of the model is made and nothing is written into it: every forward is a
  :func:`torch.func.functional_call` whose dictionary holds the drawn weights, the masks
  (inputs of the differentiated function) and clones of the buffers.
* BatchNorm is handled by :class:`BatchNormStatistics`, a
  :class:`torch.overrides.TorchFunctionMode` that intercepts ``F.batch_norm`` (which every
  ``nn.BatchNorm1d/2d/3d`` and ``nn.SyncBatchNorm`` calls). In the *capture* pass
  (no grad) it records each call's batch mean and unbiased variance (two-pass: mean, then
  the centred sum of squares) and normalises with them (train-mode BN: batch mean, biased
  variance); in the two branch passes it normalises every call with the statistics recorded
  for it (eval-mode ``F.batch_norm``, the layer's own ``eps``). Running buffers are never
  updated (the model runs in eval mode, restored afterwards), so there is no momentum update
  to undo, nothing is written into the model, and the same code works under
  :func:`torch.func.vmap`. Forward hooks would have to be registered on the model, and a
  deep copy is what the spec forbids. A BN layer called several times in one forward gets
  the statistics of its *last* call, like the reference's momentum-1 running buffers. A BN
  layer without running statistics (``track_running_stats=False``) normalises with its own
  batch statistics in both branches, as it does in the reference's eval mode.
  GroupNorm/LayerNorm/InstanceNorm are not touched (no running statistics, no special case;
  their affine parameters keep their values). ``torch.batch_norm`` called directly (not
  through ``F.batch_norm``) is not seen.
* Dropout and every other train/eval-dependent module run in eval mode in all passes (the
  reference runs its statistics pass in train mode; identical for models without dropout).
* ``vectorize=True`` stacks a chunk of draws (``chunk_size``) and evaluates them with
  ``vmap(grad(J))``; ``vectorize=False`` runs one draw at a time with
  ``torch.autograd.grad``. Both compute the same numbers up to rounding. On the CPU the loop
  is the default: convolutions with per-draw weights become grouped convolutions under
  ``vmap``, which oneDNN ran 3-4.5x slower, with 9x the memory, than the per-draw loop on
  ResNet-20 (batch 100, R = 5); for tiny models both take the same time.
* On the CPU, 4-D/5-D float32/bfloat16/float16 inputs of the loop path run in the
  channels-last memory format (``channels_last=None``): on the machine we measured oneDNN
  runs ResNet-20's 16-channel convolutions 1.7-4.5x faster that way (the wider ones about
  the same), ~1.2x on the whole score; the math is the same
  (``benchmarks/results/ntksap_speed.md``).
* Cost per draw: one no-grad forward (statistics), two forwards with grad and one backward
  through both (the same ~7 forward-equivalents as the reference's way). The score is
  convolution-bound; in float32 it carries rounding noise of ~1e-3 of its scale
  (``f0 - f1`` is ``eps`` times smaller than ``f0``), the same for every implementation;
  ``dtype=torch.float64`` removes it.

Order of the random draws (the documented contract that :func:`draw_samples` implements):
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

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap
from torch.overrides import TorchFunctionMode

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
from ..core.functional import FunctionalModel, parameter_keys, preserved_state
from ..core.scoring import ScoringProblem
from ..core.targets import is_default_kind, is_hf_conv1d, trainable_tensor, weight_names
from ..errors import BatchShapeError, InvalidOptionError, MissingDataError
from .base import PruningMethod

__all__ = [
    "NTKSAP",
    "BatchNormStatistics",
    "Draw",
    "NTKSAPConfig",
    "NTKSAPObjective",
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


# ------------------------------------------------------------------------ draws
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
    shape = problem.require_input_shape(NTKSAP.name)
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
        >>> import torch_prune_ext as tpe
        >>> from torch_prune_ext.methods.base import PruningOptions
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> problem = NTKSAP.prepare(net, None, None, PruningOptions(seed=0, input_shape=(4,)))
        >>> draws = draw_samples(problem, NTKSAPConfig(repeats=2, batch_size=8))
        >>> len(draws), tuple(draws[0].z.shape), [tuple(t.shape) for t in draws[0].theta]
        (2, (8, 4), [(3, 4), (2, 3)])
    """
    return list(iter_draws(problem, config, batch_shapes))


# -------------------------------------------------------------------- batch norm
class BatchNormStatistics(TorchFunctionMode):
    """Fixed BatchNorm statistics through ``F.batch_norm``, without touching any module.

    ``BatchNormStatistics()`` (capture): every ``F.batch_norm`` call that has running
    buffers records the batch mean and the *unbiased* batch variance of its input
    (detached) and returns the train-mode normalisation (batch statistics, biased variance,
    gamma = 1, beta = 0). :meth:`statistics` then lists them per call; a layer called
    several times keeps the statistics of its last call.

    ``BatchNormStatistics(stats)`` (apply): call ``i`` returns
    ``(x - mean_i) / sqrt(var_i + eps)`` (``F.batch_norm`` in eval mode, gamma = 1, beta = 0).

    Calls without running buffers (``track_running_stats=False``) normalise with their own
    batch statistics in both cases. The running buffers passed in are never written.

    Examples:
        >>> bn = torch.nn.BatchNorm1d(2).eval()
        >>> x = torch.tensor([[0.0, 1.0], [2.0, 5.0]])
        >>> with torch.no_grad(), BatchNormStatistics() as capture:
        ...     _ = bn(x)
        >>> [(m.tolist(), v.tolist()) for m, v in capture.statistics()]
        [([1.0, 3.0], [2.0, 8.0])]
    """

    def __init__(self, stats: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        super().__init__()
        self.capturing = stats is None
        self._stats: list[tuple[torch.Tensor, torch.Tensor]] = [] if stats is None else list(stats)
        self._keys: list[int] = []
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if func is F.batch_norm:
            return self._batch_norm(*args, **kwargs)
        return func(*args, **kwargs)

    def _batch_norm(self, input: torch.Tensor, running_mean: torch.Tensor | None,  # noqa: A002
                    running_var: torch.Tensor | None, weight: torch.Tensor | None = None,
                    bias: torch.Tensor | None = None, training: bool = False, momentum: float | None = 0.1,
                    eps: float = 1e-5) -> torch.Tensor:
        if running_mean is None or running_var is None:
            return F.batch_norm(input, None, None, None, None, True, 0.0, eps)
        index = self.calls
        self.calls += 1
        if self.capturing:
            # Two-pass statistics: mean, then the centred sum of squares. As accurate as
            # torch.var (1e-7 relative in float32) and ~5-10x faster on the CPU; the output is
            # the train-mode normalisation written with these statistics (biased variance),
            # which also avoids the CPU train-mode kernel's precision loss on channels-last inputs.
            dims = [0, *range(2, input.dim())]
            with torch.no_grad():
                mean = input.mean(dims, keepdim=True)
                squares = (input - mean).square().sum(dims)
                count = input.numel() // squares.numel()
                mean = mean.reshape(squares.shape)
                if count < 2:
                    raise BatchShapeError(
                        f"ntksap: a BatchNorm layer sees {count} value per channel in the statistics pass; "
                        "use a batch of at least 2 examples (batch_size= or larger data batches)."
                    )
            self._stats.append((mean.detach(), (squares / (count - 1)).detach()))
            self._keys.append(id(running_mean))
            return F.batch_norm(input, mean, squares / count, None, None, False, 0.0, eps)
        if index >= len(self._stats):
            raise RuntimeError(
                "ntksap: the model made more BatchNorm calls than in its statistics pass; its forward must "
                "call the same BatchNorm layers in the same order on every call."
            )
        mean, var = self._stats[index]
        return F.batch_norm(input, mean, var, None, None, False, 0.0, eps)

    def statistics(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The captured (mean, unbiased var) per BatchNorm call; a layer's last call wins."""
        last = dict(zip(self._keys, self._stats))
        return [last[key] for key in self._keys]


# --------------------------------------------------------------------- objective
def _use_channels_last(config: NTKSAPConfig, device: torch.device, dtype: torch.dtype, ndim: int) -> bool:
    if ndim not in (4, 5):
        return False
    if config.channels_last is not None:
        return config.channels_last
    return device.type == "cpu" and dtype in (torch.float32, torch.bfloat16, torch.float16)


def _to_format(tensor: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if not channels_last or tensor.dim() not in (4, 5):
        return tensor
    fmt = torch.channels_last if tensor.dim() == 4 else torch.channels_last_3d
    return tensor.contiguous(memory_format=fmt)


class NTKSAPObjective:
    """``J(masks; theta, z, Delta)`` of one draw, as a function of the masks.

    ``objective(masks, theta, z, delta)`` runs the statistics pass and both branches through
    ``functional_call`` and returns ``sum (f0 - f1)^2``. It is written for one draw; it is
    used as is (``vectorize=False``) and under ``vmap(grad(...))``.

    Args:
        problem: the scoring problem (the model is never modified).
        config: the method's config (``epsilon``, ``dtype``).
    """

    def __init__(self, problem: ScoringProblem, config: NTKSAPConfig) -> None:
        self.model = problem.model
        self.targets = problem.targets
        self.epsilon = float(config.epsilon)
        dtype = compute_dtype(problem, config)
        self.dtype = dtype

        def cast(name: str, tensor: torch.Tensor) -> torch.Tensor:
            return tensor.to(dtype) if tensor.is_floating_point() and tensor.dtype != dtype else tensor

        self.fm = FunctionalModel(problem.model, problem.targets, cast)
        keys = redrawn_weight_keys(problem.model)
        self.keys = keys
        position = {key: i for i, key in enumerate(keys)}
        #: per target: index into theta, or None (the target keeps its value, e.g. a bias)
        self.theta_index = [position.get(key) for key in self.fm.target_keys]
        self.kept = [t.raw.detach().to(dtype) if i is None else None
                     for t, i in zip(problem.targets, self.theta_index)]
        target_keys = set(self.fm.target_keys)
        self.other = [(i, key) for i, key in enumerate(keys) if key not in target_keys]

    def base_weights(self, theta: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The unperturbed weight of every target for these redrawn weights."""
        return [self.kept[k] if i is None else theta[i] for k, i in enumerate(self.theta_index)]

    def forward(self, z: torch.Tensor, weights: Sequence[torch.Tensor], masks: Sequence[torch.Tensor],
                theta: Sequence[torch.Tensor]) -> torch.Tensor:
        """The model's output with the targets at ``weights * masks`` and the other Conv/Linear at ``theta``."""
        out = self.fm(z, weights, masks, overrides={key: theta[i] for i, key in self.other})
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"ntksap needs a model whose forward returns one tensor, got {type(out).__name__}.")
        return out

    def statistics(self, masks: Sequence[torch.Tensor], theta: Sequence[torch.Tensor],
                   z: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per BatchNorm call: batch mean and unbiased variance of the unperturbed masked net (train mode)."""
        capture = BatchNormStatistics()
        with torch.no_grad(), capture:
            self.forward(z, self.base_weights(theta), masks, theta)
        return capture.statistics()

    def __call__(self, masks: Sequence[torch.Tensor], theta: Sequence[torch.Tensor], z: torch.Tensor,
                 delta: Sequence[torch.Tensor]) -> torch.Tensor:
        stats = self.statistics(masks, theta, z)
        base = self.base_weights(theta)
        perturbed = [w + self.epsilon * d for w, d in zip(base, delta)]
        with BatchNormStatistics(stats) as mode:
            f0 = self.forward(z, base, masks, theta)
        calls = mode.calls
        with BatchNormStatistics(stats) as mode:
            f1 = self.forward(z, perturbed, masks, theta)
        if calls != len(stats) or mode.calls != len(stats):
            raise RuntimeError("ntksap: the model's BatchNorm calls differ between passes; its forward must be "
                               "deterministic in which layers it runs.")
        return (f0 - f1).square().sum()


def _chunks(draws: Iterator[Draw], size: int | None) -> Iterator[list[Draw]]:
    """Consecutive draws with equal input shape, at most ``size`` at a time."""
    chunk: list[Draw] = []
    for draw in draws:
        if chunk and (chunk[0].z.shape != draw.z.shape or (size is not None and len(chunk) == size)):
            yield chunk
            chunk = []
        chunk.append(draw)
    if chunk:
        yield chunk


def ntksap_scores(problem: ScoringProblem, config: NTKSAPConfig,
                  draws: Sequence[Draw] | None = None) -> list[torch.Tensor]:
    """One round of NTK-SAP scores at ``problem.masks`` (the model is left as it was).

    Args:
        problem: the scoring problem; its generator is used for the draws.
        config: the method's config.
        draws: the draws to use instead of drawing them (e.g. those of :func:`draw_samples`);
            under distributed scoring, all of them (each rank evaluates its share).

    Returns:
        One score tensor per target (compute dtype, contiguous), zero where the mask is zero.
    """
    objective = NTKSAPObjective(problem, config)
    dtype = objective.dtype
    masks = [m.detach().to(dtype) for m in problem.masks]
    total = [torch.zeros(m.shape, dtype=dtype, device=m.device) for m in masks]
    every_draw = iter(draws) if draws is not None else iter_draws(problem, config)
    source = (draw for index, draw in enumerate(every_draw) if problem.owns(index))
    with preserved_state(problem.model):
        problem.model.eval()
        first = next(source, None)
        if first is None and problem.group is None:
            raise InvalidOptionError("ntksap: there is no draw to score (no pruning batch).")
        if first is not None:
            _accumulate(objective, problem, config, masks, total, first, source)
    problem.all_reduce_(total)
    return [(acc.abs() * (m != 0)).contiguous() for acc, m in zip(total, masks)]


def _accumulate(objective: NTKSAPObjective, problem: ScoringProblem, config: NTKSAPConfig,
                masks: list[torch.Tensor], total: list[torch.Tensor], first: Draw, rest: Iterator[Draw]) -> None:
    """Add ``dJ/dm`` of ``first`` and every draw of ``rest`` to ``total``: by ``vmap`` over chunks of
    draws, or one at a time (``first`` decides the memory format)."""
    vectorize = config.vectorize if config.vectorize is not None else problem.device.type != "cpu"
    fmt = not vectorize and _use_channels_last(config, problem.device, objective.dtype, first.z.dim())
    masks = [_to_format(m, fmt) for m in masks]

    def prepared(stream: Iterator[Draw]) -> Iterator[Draw]:
        for draw in stream:
            yield Draw([_to_format(t, fmt) for t in draw.theta], _to_format(draw.z, fmt),
                       [_to_format(d, fmt) for d in draw.delta])

    stream = prepared(_prepend(first, rest))
    if vectorize:
        per_draw = vmap(grad(objective), in_dims=(None, 0, 0, 0))
        for chunk in _chunks(stream, config.chunk_size):
            theta = [torch.stack([d.theta[i] for d in chunk]) for i in range(len(chunk[0].theta))]
            z = torch.stack([d.z for d in chunk])
            delta = [torch.stack([d.delta[i] for d in chunk]) for i in range(len(chunk[0].delta))]
            grads = per_draw(masks, theta, z, delta)
            for acc, g in zip(total, grads):
                acc.add_(g.sum(0))
    else:
        leaves = [m.clone().requires_grad_(True) for m in masks]
        for draw in stream:
            value = objective(leaves, draw.theta, draw.z, draw.delta)
            for acc, g in zip(total, torch.autograd.grad(value, leaves)):
                acc.add_(g)


def _prepend(first: Draw, rest: Iterator[Draw]) -> Iterator[Draw]:
    yield first
    yield from rest


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
