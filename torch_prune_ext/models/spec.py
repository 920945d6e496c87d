"""Models named as text (the command line's ``--model``): a built-in name or ``module:function``.

``module:function`` is any importable function (or class) that returns an ``nn.Module``, e.g.
``my_pkg.nets:build``, imported from ``sys.path`` (the command line adds the current folder,
as ``python -m`` does).

Examples:
    >>> build_model("torch.nn:Identity")
    Identity()
    >>> build_model("resnet20", num_classes=10).fc.out_features
    10
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..core.functional import eval_mode
from ..errors import BatchShapeError, ModelSpecError
from . import MODELS, get_model

__all__ = ["build_model", "check_input_shape", "is_model_path", "resolve_builder"]


def is_model_path(spec: str) -> bool:
    """Whether ``spec`` names a user function (``module:function``) rather than a built-in model.

    Examples:
        >>> is_model_path("my_pkg.nets:build"), is_model_path("resnet20")
        (True, False)
    """
    return ":" in spec


def resolve_builder(spec: str) -> Callable[..., object]:
    """The function ``module:function`` names, imported.

    Args:
        spec: ``"package.module:function"`` (``function`` may be dotted: ``module:Class.build``).

    Returns:
        The callable.

    Raises:
        ModelSpecError: a malformed spec, a module that cannot be imported, a missing attribute or
            one that is not callable; the message says how to fix it.

    Examples:
        >>> resolve_builder("torch.nn:Linear") is nn.Linear
        True
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ModelSpecError(f"model {spec!r}: write a user model as module:function, e.g. my_pkg.nets:build.")
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelSpecError(
            f"model {spec!r}: cannot import module {module_name!r} ({error}); install it, run from the folder "
            "that holds it, or add that folder to PYTHONPATH."
        ) from error
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ModelSpecError(f"model {spec!r}: module {module_name!r} has no {attribute!r}; name a function "
                                 "that builds the model.")
        target = getattr(target, part)
    if not callable(target):
        raise ModelSpecError(f"model {spec!r}: {attribute!r} is a {type(target).__name__}, not a function; name a "
                             "function that returns the nn.Module.")
    return target


def build_model(spec: str, **kwargs: object) -> nn.Module:
    """Build a model from a built-in name or ``module:function``.

    Args:
        spec: a key of :data:`~torch_prune_ext.models.MODELS` or ``module:function``.
        **kwargs: passed to the builder (e.g. ``num_classes=100``).

    Returns:
        The model the builder returns.

    Raises:
        ModelSpecError: as :func:`resolve_builder`, or a builder that fails or does not return an
            ``nn.Module``.
        ValueError: an unknown built-in name.

    Examples:
        >>> type(build_model("torch.nn:Linear", in_features=2, out_features=3)).__name__
        'Linear'
    """
    if not is_model_path(spec):
        if spec.lower() not in MODELS:
            raise ModelSpecError(f"Unknown model {spec!r}: use one of {sorted(MODELS)} or your own as "
                                 "module:function (e.g. my_pkg.nets:build).")
        return get_model(spec, **kwargs)
    builder = resolve_builder(spec)
    try:
        model = builder(**kwargs)
    except TypeError as error:
        raise ModelSpecError(f"model {spec!r}: calling it with {kwargs or 'no arguments'} failed ({error}); give "
                             "it defaults for every argument (or drop --num-classes).") from error
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"model {spec!r} returned a {type(model).__name__}, not a torch.nn.Module; make the "
                             "function return the model.")
    return model


def check_input_shape(model: nn.Module, input_shape: Sequence[int], device: str | torch.device = "cpu") -> None:
    """Check that ``model`` runs on a batch of inputs of ``input_shape``, leaving it unchanged.

    Runs one forward of two zero examples under ``torch.no_grad`` in eval mode (no BatchNorm
    statistic moves) and restores every module's mode.

    Args:
        model: the network.
        input_shape: one example's shape, without the batch dimension.
        device: where the probe batch is made.

    Raises:
        BatchShapeError: the model cannot run on that shape (the message gives torch's reason and the fix).

    Examples:
        >>> check_input_shape(nn.Linear(4, 2), (4,))
        >>> try:
        ...     check_input_shape(nn.Linear(4, 2), (3,))
        ... except BatchShapeError as error:
        ...     print(str(error)[:44])
        the model does not run on inputs of shape (3
    """
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.zeros(2, *input_shape, device=device))
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BatchShapeError(
            f"the model does not run on inputs of shape {tuple(input_shape)} ({reason}); pass the shape it takes "
            f"as --input-shape (one example, no batch dimension: {math.prod(input_shape)} values now)."
        ) from error
