"""PX, Path eXclusion (Iurada, Ciccone, Tommasi, CVPR 2024): keep what bounds the NTK trace.

The score of one round, at the current mask (spec: ``shared/specs/px.md``)::

    R = sum_{n,k} z1[n, k] * z2[k]          score(theta_j) = theta_j^2 * dR/d(theta_j^2)
                                                            = sum_{n,k} z1[n,k] * sum_{p ∋ j, p -> k} v_p^2

over three views of the current masked network (no copy of the model, nothing written into
it: every view is a :func:`torch.func.functional_call` with substituted tensors, run under
two :class:`torch.overrides.TorchFunctionMode` s, :class:`ActivationGates` and
:class:`NormReduction`):

* **A (gates)**: the real network, eval-mode normalisation, real masked weights, the real
  inputs ``x``. Every ReLU-like call records which pre-activations are ``> 0`` (a boolean
  tensor), every max-pool call records its argmax indices.
* **J (path activation)**: every Conv/Linear weight 1 (masked entries stay 0 through the
  mask), biases 0, each BatchNorm reduced to scale 1 and no shift (the identity), each ReLU
  replaced by multiplication with A's gate of the same call (matched by call order; a
  LeakyReLU by ``1`` or its slope), each max-pool routed through A's argmax, input ``x**2``;
  no gradient. ``z1[n, k] = sum_{p -> k} a_p(x_n) x_n[s(p)]^2``.
* **P (path kernel)**: every Conv/Linear weight squared, biases 0, each BatchNorm reduced
  to its per-channel scale ``s = gamma / sqrt(running_var + eps)`` squared, no shift, ReLUs
  the identity, each max-pool a *sum* over its window (every entry of the window starts a
  path; which one is taken is A's gate, applied in J), input all ones, batch size 1.
  ``z2[k] = sum_{p -> k} v_p^2``.

Data enter only through ``c = sum_n z1[n]`` (the shape of one output), accumulated over the
pruning batches in one no-grad pass of A and J each; then ONE forward and ONE
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
these modules), ``nn.BatchNorm1d/2d/3d``/``SyncBatchNorm`` with running statistics, ReLU in
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

``mode="reference"`` reproduces the authors' public code instead (see :class:`PXConfig`);
it is degenerate for BatchNorm networks with global average pooling and is not the default.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..core.functional import preserved_state
from ..core.scoring import ScoringProblem
from ..errors import (
    BatchShapeError,
    InvalidOptionError,
    MissingDataError,
    NonFiniteScoreError,
    UnsupportedLayerError,
)
from .base import PruningMethod

logger = logging.getLogger("torch_prune_ext")

__all__ = [
    "PX",
    "ActivationGates",
    "NormReduction",
    "PXConfig",
    "UnsupportedLayerError",
    "px_scores",
]

MODES = ("theory", "reference")


@dataclass(frozen=True)
class PXConfig:
    """Hyperparameters of :class:`PX`.

    Attributes:
        mode: ``"theory"`` (default): the method as the paper derives it (module docstring).
            ``"reference"``: the authors' public code, for comparison: normalisation layers
            in train mode with batch statistics in all three views; J and P fed batches (P an
            all-ones batch of the data batch's size); every model state entry whose name
            contains ``"bn"`` or ``"fc"`` left untouched, every other floating entry squared
            in P and set to 1 in J; per batch ``R_b = sum(z1 * z2)``, gradients accumulated
            over the batches; score ``|g| * theta**2`` (``g`` the gradient with respect to
            the tensor P uses). Degenerate for BatchNorm networks with global average
            pooling: on identical all-ones inputs each train-mode BatchNorm outputs its shift
            as its per-channel mean, so P's pooled output does not depend on the conv weights
            and their scores are ``theta**2`` times rounding noise.
        dtype: floating dtype of J and P (and of the scores). float64 by default: J and P
            grow geometrically with depth and overflow float32 on ResNet-20.
        approximate_activations: gate GELU, SiLU, ELU, CELU, SELU, Mish, Softplus and
            Hardswish like a ReLU (on ``pre-activation > 0``) instead of raising
            :class:`UnsupportedLayerError`. An approximation outside the paper's theory.
    """

    mode: str = "theory"
    dtype: torch.dtype = torch.float64
    approximate_activations: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidOptionError(f"mode must be one of {', '.join(map(repr, MODES))}, got {self.mode!r}.")
        if not (isinstance(self.dtype, torch.dtype) and self.dtype.is_floating_point):
            raise InvalidOptionError(f"dtype must be a floating torch.dtype (e.g. torch.float64), got {self.dtype!r}.")
        if not isinstance(self.approximate_activations, bool):
            raise InvalidOptionError(
                f"approximate_activations must be True or False, got {self.approximate_activations!r}."
            )


# ------------------------------------------------------------------ activation table
#: ReLU in all its spellings: function -> whether it is always in place.
_RELU: dict[Any, bool] = {F.relu: False, torch.relu: False, torch.Tensor.relu: False,
                          torch.relu_: True, torch.Tensor.relu_: True}
#: LeakyReLU: function -> whether it is always in place.
_LEAKY: dict[Any, bool] = {F.leaky_relu: False, torch._C._nn.leaky_relu: False, torch._C._nn.leaky_relu_: True}
#: Max-pool functions -> (spatial dims, adaptive, function returning (values, indices)).
_MAX_POOL: dict[Any, tuple[int, bool, Callable[..., Any]]] = {}
for _d, _plain, _with in ((1, F.max_pool1d, F.max_pool1d_with_indices), (2, F.max_pool2d, F.max_pool2d_with_indices),
                          (3, F.max_pool3d, F.max_pool3d_with_indices)):
    _MAX_POOL[_plain] = _MAX_POOL[_with] = (_d, False, _with)
for _d, _plain, _with in ((1, F.adaptive_max_pool1d, F.adaptive_max_pool1d_with_indices),
                          (2, F.adaptive_max_pool2d, F.adaptive_max_pool2d_with_indices),
                          (3, F.adaptive_max_pool3d, F.adaptive_max_pool3d_with_indices)):
    _MAX_POOL[_plain] = _MAX_POOL[_with] = (_d, True, _with)
_SIGNATURES = {func: inspect.signature(spec[2]) for func, spec in _MAX_POOL.items()}
#: ReLU-like activations gated on (pre-activation > 0) with ``approximate_activations=True``.
_RELU_LIKE: dict[Any, str] = {F.gelu: "GELU", F.silu: "SiLU", F.elu: "ELU", F.celu: "CELU", F.selu: "SELU",
                              F.mish: "Mish", F.softplus: "Softplus", F.hardswish: "Hardswish"}
#: Activations PX cannot treat.
_UNTREATABLE: dict[Any, str] = {
    torch.tanh: "tanh", F.tanh: "tanh", torch.Tensor.tanh: "tanh", torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid", torch.Tensor.sigmoid: "sigmoid", F.hardtanh: "Hardtanh/ReLU6", F.relu6: "ReLU6",
    F.hardsigmoid: "Hardsigmoid", F.prelu: "PReLU", F.rrelu: "RReLU", F.softmax: "softmax",
    torch.softmax: "softmax", torch.Tensor.softmax: "softmax", F.log_softmax: "log_softmax",
    torch.Tensor.log_softmax: "log_softmax", F.logsigmoid: "LogSigmoid", F.softsign: "Softsign",
    F.tanhshrink: "Tanhshrink", F.glu: "GLU",
}


def _unsupported_activation(name: str) -> UnsupportedLayerError:
    approximable = name in _RELU_LIKE.values()
    hint = ("pass approximate_activations=True to gate it like a ReLU on (pre-activation > 0) (an approximation), "
            "or replace it with ReLU/LeakyReLU" if approximable else
            "replace it with ReLU or LeakyReLU, or use a method without this restriction (synflow, ntksap, snip)")
    return UnsupportedLayerError(
        f"px cannot treat the {name} activation: its path decomposition needs piecewise-linear gates "
        f"(ReLU, LeakyReLU, max-pool); {hint}."
    )


class ActivationGates(TorchFunctionMode):
    """Record, apply or remove the gates of a network's ReLUs and max-pools, in call order.

    * ``ActivationGates("record")``: runs every activation as it is and records, per call,
      ``pre-activation > 0`` (ReLU; LeakyReLU with its slope) or the argmax indices
      (max-pool) in :attr:`gates`.
    * ``ActivationGates("apply", gates)``: call ``i`` multiplies its input by recorded gate
      ``i`` (``1`` where open, ``0`` or the LeakyReLU slope where closed), a max-pool picks the
      recorded argmax entries instead of its own maximum. In-place forms stay in place.
    * ``ActivationGates("identity")``: ReLU and LeakyReLU pass their input through, a max-pool
      sums its window.

    Catches ``F.relu``, ``torch.relu``, ``Tensor.relu``, ``torch.relu_``/``Tensor.relu_``,
    ``F.relu(inplace=True)``, ``nn.ReLU`` (in place or not), ``F.leaky_relu``/``nn.LeakyReLU``,
    ``F.max_pool1d/2d/3d``, ``F.adaptive_max_pool1d/2d/3d`` and ``nn.MaxPool*``. Activations
    it cannot treat raise :class:`UnsupportedLayerError`. Nothing in torch is patched; leaving
    the ``with`` block (also by an exception) removes the mode.

    Args:
        behaviour: ``"record"``, ``"apply"`` or ``"identity"``.
        gates: the :attr:`gates` of a recording run (for ``"apply"``).
        approximate: gate GELU/SiLU/... like a ReLU instead of raising.

    Examples:
        >>> x = torch.tensor([[-1.0, 2.0, 3.0, -4.0]])
        >>> with ActivationGates("record") as record:
        ...     _ = torch.relu(x)
        >>> with ActivationGates("apply", record.gates):
        ...     torch.nn.ReLU(inplace=True)(torch.tensor([[5.0, -6.0, 7.0, 8.0]]))
        tensor([[ 0., -6.,  7.,  0.]])
    """

    def __init__(self, behaviour: str = "record", gates: Sequence[tuple[str, Any]] | None = None,
                 approximate: bool = False) -> None:
        super().__init__()
        if behaviour not in ("record", "apply", "identity"):
            raise InvalidOptionError(f"behaviour must be 'record', 'apply' or 'identity', got {behaviour!r}.")
        if behaviour == "apply" and gates is None:
            raise InvalidOptionError("ActivationGates('apply') needs the gates of a recording run.")
        self.behaviour = behaviour
        self.approximate = approximate
        #: per call: ("gate", (bool tensor, slope)) or ("pool", indices)
        self.gates: list[tuple[str, Any]] = [] if gates is None else list(gates)
        #: how many gated calls were seen
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELU:
            inplace = _RELU[func] or bool(args[1] if len(args) > 1 else kwargs.get("inplace", False))
            return self._gate(func, args, kwargs, args[0], 0.0, inplace)
        if func in _LEAKY:
            slope = args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01)
            inplace = _LEAKY[func] or bool(args[2] if len(args) > 2 else kwargs.get("inplace", False))
            return self._gate(func, args, kwargs, args[0], float(slope), inplace)
        if func in _MAX_POOL:
            return self._max_pool(func, args, kwargs)
        if func in _RELU_LIKE:
            if not self.approximate:
                raise _unsupported_activation(_RELU_LIKE[func])
            return self._gate(func, args, kwargs, args[0], 0.0, bool(kwargs.get("inplace", False)))
        if func in _UNTREATABLE:
            raise _unsupported_activation(_UNTREATABLE[func])
        return func(*args, **kwargs)

    def _next(self, kind: str, shape: torch.Size) -> Any:
        index = self.calls
        self.calls += 1
        if index >= len(self.gates) or self.gates[index][0] != kind:
            raise RuntimeError(
                f"px: activation call {index} ({kind}) has no matching recorded gate; the model's forward "
                "must run the same activations in the same order on every call."
            )
        value = self.gates[index][1]
        recorded = value[0].shape if kind == "gate" else value.shape
        if kind == "gate" and recorded != shape:
            raise RuntimeError(f"px: activation call {index} sees shape {tuple(shape)}, recorded {tuple(recorded)}.")
        return value

    def _gate(self, func: Any, args: tuple, kwargs: dict, x: torch.Tensor, slope: float, inplace: bool) -> Any:
        if self.behaviour == "record":
            self.calls += 1
            self.gates.append(("gate", ((x > 0).detach(), slope)))
            return func(*args, **kwargs)
        if self.behaviour == "identity":
            self.calls += 1
            return x if inplace else x.clone()
        gate, slope = self._next("gate", x.shape)
        factor = gate.to(x.dtype) if slope == 0.0 else torch.where(gate, 1.0, slope).to(x.dtype)
        return x.mul_(factor) if inplace else x * factor

    def _max_pool(self, func: Any, args: tuple, kwargs: dict) -> Any:
        dims, adaptive, with_indices = _MAX_POOL[func]
        bound = _SIGNATURES[func].bind(*args, **kwargs)
        bound.apply_defaults()
        options = dict(bound.arguments)
        wants_indices = bool(options.pop("return_indices", False))
        x = options.pop("input")
        if self.behaviour == "record":
            self.calls += 1
            values, indices = with_indices(x, **options, return_indices=True)
            self.gates.append(("pool", indices.detach()))
            return (values, indices) if wants_indices else values
        if self.behaviour == "identity":
            self.calls += 1
            values = _sum_pool(x, dims, adaptive, options)
            return (values, None) if wants_indices else values
        indices = self._next("pool", x.shape)
        flat = x.flatten(-dims)
        values = flat.gather(-1, indices.flatten(-dims)).reshape(indices.shape)
        return (values, indices) if wants_indices else values


def _sum_pool(x: torch.Tensor, dims: int, adaptive: bool, options: dict[str, Any]) -> torch.Tensor:
    """The sum over every max-pool window (P: every window entry starts a path)."""
    def expand(value: Any) -> tuple[int, ...]:
        return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims

    if adaptive:
        size_in = x.shape[-dims:]
        size_out = tuple(s if o is None else o for s, o in zip(size_in, expand(options["output_size"])))
        if any(s % o for s, o in zip(size_in, size_out)):
            raise UnsupportedLayerError(
                f"px: an adaptive max-pool from {tuple(size_in)} to {size_out} has overlapping, uneven windows; "
                "use inputs whose size the output size divides, or nn.MaxPool with a fixed kernel."
            )
        kernel = tuple(s // o for s, o in zip(size_in, size_out))
        stride, padding, ceil_mode = kernel, 0, False
    else:
        if any(d != 1 for d in expand(options["dilation"])):
            raise UnsupportedLayerError("px does not support dilated max-pooling; use dilation=1.")
        kernel = expand(options["kernel_size"])
        stride = kernel if options["stride"] in (None, [], ()) else options["stride"]
        padding, ceil_mode = options["padding"], options["ceil_mode"]
    if dims == 1:
        out = F.avg_pool2d(x.unsqueeze(-2), (1, *kernel), (1, *expand(stride)), (0, *expand(padding)),
                           ceil_mode, True, 1)
        return out.squeeze(-2)
    pool = F.avg_pool2d if dims == 2 else F.avg_pool3d
    return pool(x, kernel, stride, padding, ceil_mode, True, 1)


# ---------------------------------------------------------------- normalisation
_OTHER_NORMS = {F.group_norm: "GroupNorm", F.layer_norm: "LayerNorm", F.instance_norm: "InstanceNorm",
                F.local_response_norm: "LocalResponseNorm", F.rms_norm: "RMSNorm"}


class NormReduction(TorchFunctionMode):
    """BatchNorm reduced to a per-channel scale, through ``F.batch_norm``, without touching modules.

    * ``NormReduction("unit")`` (J): scale 1, no shift: the identity.
    * ``NormReduction("scale_squared")`` (P): ``x * s**2``, ``s = gamma / sqrt(running_var + eps)``
      (``gamma = 1`` without affine parameters), no shift.
    * ``NormReduction("batch")`` (reference mode): train-mode normalisation with the batch's
      statistics and the layer's own affine parameters; the running buffers are not used
      nor updated.

    In ``"unit"`` and ``"scale_squared"``, GroupNorm, LayerNorm, InstanceNorm and BatchNorm
    without running statistics raise :class:`UnsupportedLayerError` (their scale depends on
    the data, so it is not a path weight).

    Args:
        behaviour: ``"unit"``, ``"scale_squared"`` or ``"batch"``.

    Examples:
        >>> bn = torch.nn.BatchNorm1d(2).eval()
        >>> bn.running_var.fill_(3.0)  # doctest: +ELLIPSIS
        tensor(...)
        >>> with NormReduction("scale_squared"):
        ...     bn(torch.ones(1, 2))
        tensor([[0.3333, 0.3333]], grad_fn=<MulBackward0>)
    """

    def __init__(self, behaviour: str) -> None:
        super().__init__()
        if behaviour not in ("unit", "scale_squared", "batch"):
            raise InvalidOptionError(f"behaviour must be 'unit', 'scale_squared' or 'batch', got {behaviour!r}.")
        self.behaviour = behaviour

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            return self._batch_norm(*args, **kwargs)
        if func in _OTHER_NORMS and self.behaviour != "batch":
            raise UnsupportedLayerError(
                f"px (theory mode) supports BatchNorm with running statistics only, not {_OTHER_NORMS[func]}: "
                "its per-channel scale depends on each input, so it is not a path weight. Use a BatchNorm "
                "network, or mode='reference'."
            )
        return func(*args, **kwargs)

    def _batch_norm(self, input: torch.Tensor, running_mean: torch.Tensor | None,
                    running_var: torch.Tensor | None, weight: torch.Tensor | None = None,
                    bias: torch.Tensor | None = None, training: bool = False, momentum: float | None = 0.1,
                    eps: float = 1e-5) -> torch.Tensor:
        if self.behaviour == "batch":
            return F.batch_norm(input, None, None, weight, bias, True, 0.0, eps)
        if running_var is None:
            raise UnsupportedLayerError(
                "px (theory mode) needs BatchNorm layers with running statistics (track_running_stats=True): "
                "their eval-mode scale gamma / sqrt(running_var + eps) is the path weight. Use mode='reference' "
                "for batch statistics."
            )
        if self.behaviour == "unit":
            return input.clone()
        scale = (running_var.to(input.dtype) + eps).reciprocal()
        if weight is not None:
            scale = weight.to(input.dtype).square() * scale
        shape = [1, -1] + [1] * (input.dim() - 2)
        return input * scale.reshape(shape)


# ----------------------------------------------------------------------- views
_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def _parameter_roles(model: nn.Module) -> dict[str, str]:
    """``"weight"``, ``"bias"``, ``"norm"`` or ``"other:<Module>"`` per parameter name (as ``functional_call`` keys)."""
    roles: dict[str, str] = {}
    for prefix, module in model.named_modules():
        for local, value in module._parameters.items():
            if value is None:
                continue
            name = f"{prefix}.{local}" if prefix else local
            base = local.removesuffix("_orig")
            if isinstance(module, _WEIGHTED) and base in ("weight", "bias"):
                roles.setdefault(name, base)
            elif isinstance(module, _NORMS):
                roles.setdefault(name, "norm")
            else:
                roles.setdefault(name, f"other:{type(module).__name__}")
    return roles


#: The methods that run on any differentiable model (token models, attention), for PX's error messages.
_OTHER_METHODS = "snip, iter_snip, grasp, synflow, ntksap, lnpt, magnitude, random"


def _check_theory_model(problem: ScoringProblem, roles: dict[str, str]) -> None:
    for name, role in roles.items():
        if role.startswith("other:"):
            raise UnsupportedLayerError(
                f"px cannot place the parameter {name} of a {role[6:]} module in its path decomposition (it knows "
                "Conv/Linear weights and biases and BatchNorm). Replace the module, use mode='reference', or "
                f"prune this model with a method that supports it: {_OTHER_METHODS}."
            )
    for target in problem.targets:
        if not isinstance(target.module, _WEIGHTED):
            raise UnsupportedLayerError(
                f"px scores Conv/Linear weights and biases; the target {target.name} belongs to a "
                f"{type(target.module).__name__}. Drop it from targets=."
            )


def _theory_transform(roles: dict[str, str], view: str, dtype: torch.dtype) -> Callable[[str, torch.Tensor],
                                                                                        torch.Tensor]:
    """Non-target tensors of view J (``"ones"``) or P (``"squares"``)."""
    def transform(name: str, tensor: torch.Tensor) -> torch.Tensor:
        if not tensor.is_floating_point():
            return tensor
        role = roles.get(name, "buffer")
        if role == "weight":
            return torch.ones_like(tensor, dtype=dtype) if view == "ones" else tensor.to(dtype).square()
        if role == "bias":
            return torch.zeros_like(tensor, dtype=dtype)
        return tensor.to(dtype)
    return transform


def _reference_transform(view: str, dtype: torch.dtype) -> Callable[[str, torch.Tensor], torch.Tensor]:
    def transform(name: str, tensor: torch.Tensor) -> torch.Tensor:
        if not tensor.is_floating_point():
            return tensor
        if _untouched(name):
            return tensor.to(dtype)
        return torch.ones_like(tensor, dtype=dtype) if view == "ones" else tensor.to(dtype).square()
    return transform


def _untouched(name: str) -> bool:
    """Reference mode: state entries left as they are (the authors' name filter)."""
    return "bn" in name or "fc" in name


def _checked_output(out: Any, view: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"px needs a model whose forward returns one tensor; view {view} returned {type(out).__name__}.")
    return out


def _finite(tensor: torch.Tensor, what: str, dtype: torch.dtype) -> None:
    if not bool(torch.isfinite(tensor).all()):
        raise NonFiniteScoreError(
            f"px: {what} holds NaN/inf in {dtype}. Check the weights and the data for NaN/inf; a very deep or wide "
            "network can overflow the all-ones/squared networks: keep dtype=torch.float64 (the default)."
        )


def _batches(problem: ScoringProblem) -> list[torch.Tensor]:
    xs = [x for x, _ in problem.data]
    shape = xs[0].shape[1:]
    for i, x in enumerate(xs):
        if not x.is_floating_point():
            raise BatchShapeError(f"px needs floating-point inputs; pruning batch {i} is {x.dtype}.")
        if x.dim() < 2 or x.shape[1:] != shape:
            raise BatchShapeError(
                f"px: pruning batch {i} has shape {tuple(x.shape)}; every batch must be (N, *{tuple(shape)}) "
                "(the path activations of all examples are summed per output)."
            )
    return xs


def _theory_scores(problem: ScoringProblem, config: PXConfig) -> list[torch.Tensor]:
    dtype = config.dtype
    model = problem.model
    roles = _parameter_roles(model)
    _check_theory_model(problem, roles)
    is_bias = [t.tensor_name == "bias" for t in problem.targets]
    masks = [m.detach().to(dtype) for m in problem.masks]
    view_a = problem.functional()
    view_j = problem.functional(_theory_transform(roles, "ones", dtype))
    view_p = problem.functional(_theory_transform(roles, "squares", dtype))
    ones = [torch.zeros_like(m) if b else torch.ones_like(m) for m, b in zip(masks, is_bias)]
    xs = _batches(problem)
    total: torch.Tensor | None = None
    with preserved_state(model), torch.no_grad():
        model.eval()
        for x in xs:
            with ActivationGates("record", approximate=config.approximate_activations) as record:
                view_a(x, problem.weights(), problem.masks)
            with NormReduction("unit"), ActivationGates("apply", record.gates,
                                                        approximate=config.approximate_activations) as gates:
                z1 = _checked_output(view_j(x.to(dtype).square(), ones, masks), "J")
            if gates.calls != len(record.gates):
                raise RuntimeError("px: the model ran different activations in its gate and path-activation passes; "
                                   "its forward must be deterministic in which layers it runs.")
            part = z1.sum(0)
            total = part if total is None else total + part
    if total is None:
        raise MissingDataError("px: the pruning data yielded no batch; pass at least one batch of inputs.")
    problem.all_reduce_([total])
    _finite(total, "the path activation sum c (view J)", dtype)
    leaves = [torch.zeros_like(m) if b else w.detach().to(dtype).square().requires_grad_(True)
              for w, m, b in zip(problem.weights(), masks, is_bias)]
    with preserved_state(model), torch.enable_grad():
        model.eval()
        ones_input = torch.ones((1, *xs[0].shape[1:]), dtype=dtype, device=problem.device)
        with NormReduction("scale_squared"), ActivationGates("identity", approximate=config.approximate_activations):
            z2 = _checked_output(view_p(ones_input, leaves, masks), "P")
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


def _reference_scores(problem: ScoringProblem, config: PXConfig) -> list[torch.Tensor]:
    dtype = config.dtype
    model = problem.model
    masks = [m.detach().to(dtype) for m in problem.masks]
    weights = [w.detach().to(dtype) for w in problem.weights()]
    keep = [_untouched(t.name) for t in problem.targets]
    view_a = problem.functional()
    view_j = problem.functional(_reference_transform("ones", dtype))
    view_p = problem.functional(_reference_transform("squares", dtype))
    j_weights = [w if k else torch.ones_like(w) for w, k in zip(weights, keep)]
    leaves = [(w if k else w.square()).clone().requires_grad_(True) for w, k in zip(weights, keep)]
    total = [torch.zeros_like(w) for w in weights]
    approximate = config.approximate_activations
    with preserved_state(model):
        model.eval()
        for x in _batches(problem):
            with torch.no_grad():
                with NormReduction("batch"), ActivationGates("record", approximate=approximate) as record:
                    view_a(x, problem.weights(), problem.masks)
                with NormReduction("batch"), ActivationGates("apply", record.gates, approximate=approximate):
                    z1 = _checked_output(view_j(x.to(dtype).square(), j_weights, masks), "J")
            with torch.enable_grad(), NormReduction("batch"), ActivationGates("identity", approximate=approximate):
                z2 = _checked_output(view_p(torch.ones_like(x, dtype=dtype), leaves, masks), "P")
            _finite(z1, "the path activation (view J)", dtype)
            _finite(z2, "the path kernel (view P)", dtype)
            grads = torch.autograd.grad(z2, leaves, grad_outputs=z1, allow_unused=True)
            for acc, g in zip(total, grads):
                if g is not None:
                    acc.add_(g)
    problem.all_reduce_(total)
    return [(g.abs() * w.square() * m).contiguous() for g, w, m in zip(total, weights, masks)]


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
    if config.mode == "reference":
        return _reference_scores(problem, config)
    return _theory_scores(problem, config)


class PX(PruningMethod):
    """PX (Path eXclusion): keep the weights that most influence a path bound on the NTK trace.

    score(θ_j) = θ_j² · ∂R/∂(θ_j²), ``R = Σ_{n,k} z1[n,k] · z2[k]``: ``z1`` the path activations
    of the pruning data (all-ones weights gated like the real network, input ``x²``), ``z2`` the
    path kernel (squared weights, squared BatchNorm scales, all-ones input); see
    :mod:`torch_prune_ext.methods.px`. Scores are ``>= 0``, so iterating avoids layer collapse.
    Needs data (labels unused): 10 examples per class in the paper
    (:func:`torch_prune_ext.data.pruning_set`). 100 rounds with the exponential schedule by
    default; options in :class:`PXConfig` (``mode="reference"`` for the authors' code).
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
