"""Feature capture: the features φ of a model (a forward hook), and the teacher's logits and features.

Examples:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> with capture_features(net, "1") as seen:
    ...     _ = net(torch.randn(2, 4))
    >>> tuple(seen["features"].shape)
    (2, 3)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ..core.functional import eval_mode
from ..core.targets import final_linear
from ..errors import InvalidOptionError

__all__ = ["FeatureLayer", "capture_features", "check_feature_shapes", "teacher_outputs"]

#: A feature layer: ``None`` (the input of the final Linear), a submodule name, or a
#: callable ``fn(model) -> nn.Module`` choosing the module whose output is used.
FeatureLayer = str | Callable[[nn.Module], nn.Module] | None


def _feature_module(model: nn.Module, layer: FeatureLayer) -> tuple[nn.Module, bool]:
    """The module to hook and whether its input (True) or its output (False) is φ."""
    if layer is None:
        return final_linear(model)[1], True
    if isinstance(layer, str):
        modules = dict(model.named_modules())
        if layer not in modules:
            raise InvalidOptionError(
                f"feature_layer={layer!r} is not a submodule of {type(model).__name__}. "
                f"Pass one of its module names, e.g. {', '.join(list(modules)[1:6]) or '(none)'}."
            )
        return modules[layer], False
    if callable(layer):
        module = layer(model)
        if not isinstance(module, nn.Module):
            raise InvalidOptionError(
                f"feature_layer callable must return a submodule of the model, got {type(module).__name__}."
            )
        return module, False
    raise InvalidOptionError(
        f"feature_layer must be None, a submodule name or a callable fn(model) -> module, got {layer!r}."
    )


@contextlib.contextmanager
def capture_features(model: nn.Module, layer: FeatureLayer = None) -> Iterator[dict[str, torch.Tensor]]:
    """Record φ of every forward of ``model`` into the yielded dict (key ``"features"``).

    A forward hook is registered on the feature module and removed on exit, also on
    error. The hook also runs inside :func:`torch.func.functional_call`, so the captured
    tensor is then a function of the substituted weights.

    Args:
        model: the network.
        layer: ``None`` = the input of the final ``Linear``; a submodule name or a callable
            ``fn(model) -> module`` = that module's output. The features are flattened to
            ``(N, -1)``.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> with capture_features(net) as seen:
        ...     _ = net(torch.randn(5, 4))
        >>> tuple(seen["features"].shape), len(net[2]._forward_hooks)
        ((5, 3), 0)
    """
    module, use_input = _feature_module(model, layer)
    store: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        value = inputs[0] if use_input else output
        if not isinstance(value, torch.Tensor):
            raise InvalidOptionError(
                f"The feature layer {type(_module).__name__} produced a {type(value).__name__}, not a tensor. "
                "Pick a feature_layer whose output is a tensor."
            )
        store["features"] = value.reshape(value.shape[0], -1)

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def teacher_outputs(teacher: nn.Module, x: torch.Tensor, layer: FeatureLayer = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's logits and features on ``x``: eval mode, ``no_grad``, modes restored.

    Examples:
        >>> t = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).train()
        >>> z, phi = teacher_outputs(t, torch.randn(5, 4))
        >>> tuple(z.shape), tuple(phi.shape), t.training
        ((5, 2), (5, 3), True)
    """
    with eval_mode(teacher), torch.no_grad(), capture_features(teacher, layer) as seen:
        logits = teacher(x)
    if "features" not in seen:
        raise InvalidOptionError("The teacher's feature layer did not run during its forward; check feature_layer.")
    return logits, seen["features"]


def check_feature_shapes(student: torch.Tensor, teacher: torch.Tensor, has_adapter: bool) -> None:
    """Raise a clear error when student and teacher features cannot be compared."""
    if student.shape != teacher.shape:
        hint = ("The adapter's output must have the teacher's feature size." if has_adapter else
                f"Pass adapter=torch.nn.Linear({student.shape[1]}, {teacher.shape[1]}) to map the student's "
                "features into the teacher's space, or pick matching feature layers.")
        raise InvalidOptionError(
            f"Student features {tuple(student.shape)} and teacher features {tuple(teacher.shape)} differ. {hint}"
        )
