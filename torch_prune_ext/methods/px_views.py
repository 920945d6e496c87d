"""PX's execution machinery: the activation gates and the transforms of the three views.

:class:`ActivationGates` records, applies or removes the gates of ReLUs and max-pools (a
:class:`torch.overrides.TorchFunctionMode`, nothing in torch patched); the helpers below
give each parameter its role (Conv/Linear weight or bias, normalisation, other), check that
PX can place every parameter in its path decomposition, and build views J (all-ones weights)
and P (squared weights) of the model. Normalisation layers are treated in
:mod:`torch_prune_ext.methods.px_norm`. See :mod:`torch_prune_ext.methods.px` for the method.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..core.scoring import ScoringProblem
from ..errors import (
    BatchShapeError,
    InvalidOptionError,
    ModelForwardError,
    ModelOutputError,
    NonFiniteScoreError,
    UnsupportedLayerError,
)

__all__ = ["ActivationGates"]

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
            raise ModelForwardError(
                f"px: activation call {index} ({kind}) has no matching recorded gate; the model's forward "
                "must run the same activations in the same order on every call."
            )
        value = self.gates[index][1]
        recorded = value[0].shape if kind == "gate" else value.shape
        if kind == "gate" and recorded != shape:
            raise ModelForwardError(f"px: activation call {index} sees shape {tuple(shape)}, recorded {tuple(recorded)}.")
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


def _checked_output(out: Any, view: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise ModelOutputError(f"px needs a model whose forward returns one tensor; view {view} returned {type(out).__name__}.")
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
