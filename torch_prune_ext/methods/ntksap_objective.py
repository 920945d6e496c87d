"""NTK-SAP's execution: the objective of one draw, BatchNorm statistics, and the loop or ``vmap``
over the draws that sums ``dJ/dm`` (the score itself: :mod:`torch_prune_ext.methods.ntksap`).

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
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.func import grad, vmap
from torch.overrides import TorchFunctionMode

from ..core.functional import FunctionalModel, preserved_state
from ..core.scoring import ScoringProblem
from ..errors import BatchShapeError, InvalidOptionError, ModelForwardError, ModelOutputError
from .ntksap_draws import Draw, compute_dtype, iter_draws, redrawn_weight_keys

if TYPE_CHECKING:
    from .ntksap import NTKSAPConfig


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
            raise ModelForwardError(
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
            raise ModelOutputError(f"ntksap needs a model whose forward returns one tensor, got {type(out).__name__}.")
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
            raise ModelForwardError("ntksap: the model's BatchNorm calls differ between passes; its forward must be "
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
