"""Self-documenting option dataclasses: :func:`option` declares a field once (default, help,
choices, check) and :func:`validate_options` enforces every declaration.

Every method's ``Config`` and :class:`~torch_prune_ext.core.scoring.PruningOptions` declare
their fields with :func:`option`, so that ``dataclasses.fields(Cls)`` tells a tool (the CLI,
the docs) each field's help text (``f.metadata["help"]``) and, for a field that takes one of
fixed strings, the allowed values (``f.metadata.get("choices")``).

Examples:
    >>> import dataclasses
    >>> @dataclasses.dataclass(frozen=True)
    ... class Demo:
    ...     mode: str = option("train", help="module mode while scoring", choices=("train", "eval"))
    ...     def __post_init__(self):
    ...         validate_options(self)
    >>> [(f.name, f.metadata["help"], f.metadata["choices"]) for f in dataclasses.fields(Demo)]
    [('mode', 'module mode while scoring', ('train', 'eval'))]
    >>> Demo(mode="test")
    Traceback (most recent call last):
    ...
    torch_prune_ext.errors.InvalidOptionError: mode must be one of 'train', 'eval', got 'test'.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from ..errors import InvalidOptionError

#: ``check(name, value)`` raises :class:`InvalidOptionError` naming the field and the fix.
Check = Callable[[str, Any], None]


def option(default: Any = dataclasses.MISSING, *, help: str,  # noqa: A002 (the metadata key tools read)
           choices: tuple[str, ...] | None = None, check: Check | None = None) -> Any:
    """A dataclass field with its documentation and validation declared once.

    Args:
        default: the default value.
        help: one line for ``--help`` and the docs (``field.metadata["help"]``).
        choices: the fixed strings the field takes (``field.metadata["choices"]``); checked by
            :func:`validate_options` unless ``check`` is given (then ``check`` decides, e.g. a
            field that also takes a callable).
        check: ``check(name, value)`` raising :class:`InvalidOptionError` for a bad value.

    Returns:
        A ``dataclasses.field``.
    """
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if check is not None:
        metadata["check"] = check
    return dataclasses.field(default=default, metadata=metadata)


def validate_options(instance: Any) -> None:
    """Check every field of a dataclass instance against its :func:`option` declaration.

    Raises:
        InvalidOptionError: the first field whose value is not allowed.
    """
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        check = f.metadata.get("check")
        if check is not None:
            check(f.name, value)
        elif "choices" in f.metadata:
            one_of(*f.metadata["choices"])(f.name, value)


# ----------------------------------------------------------------------- checks
def one_of(*allowed: Any) -> Check:
    """A check: the value is one of ``allowed``."""

    def check(name: str, value: Any) -> None:
        if not any(value is a or (type(value) is type(a) and value == a) for a in allowed):
            raise InvalidOptionError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}.")

    return check


def boolean(name: str, value: Any) -> None:
    """A check: ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise InvalidOptionError(f"{name} must be True or False, got {value!r}.")


def boolean_or_none(name: str, value: Any) -> None:
    """A check: ``True``, ``False`` or ``None``."""
    if value is not None:
        if not isinstance(value, bool):
            raise InvalidOptionError(f"{name} must be True, False or None, got {value!r}.")


def integer_or_none(name: str, value: Any) -> None:
    """A check: an int or ``None``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise InvalidOptionError(f"{name} must be an int, got {value!r}.")


def positive_int(name: str, value: Any) -> None:
    """A check: an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidOptionError(f"{name} must be a positive int, got {value!r}.")


def positive_int_or_none(name: str, value: Any) -> None:
    """A check: an int >= 1 or ``None``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
        raise InvalidOptionError(f"{name} must be a positive int or None, got {value!r}.")


def positive_float(name: str, value: Any) -> None:
    """A check: a finite real number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) \
            or not value > 0:
        raise InvalidOptionError(f"{name} must be a finite number > 0, got {value!r}.")


def unit_interval(name: str, value: Any) -> None:
    """A check: a real number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise InvalidOptionError(f"{name} must be in [0, 1], got {value!r}.")


def floating_dtype(name: str, value: Any) -> None:
    """A check: a floating ``torch.dtype``."""
    if not (isinstance(value, torch.dtype) and value.is_floating_point):
        raise InvalidOptionError(f"{name} must be a floating torch.dtype (e.g. torch.float64), got {value!r}.")


def floating_dtype_or_none(name: str, value: Any) -> None:
    """A check: a floating ``torch.dtype`` or ``None``."""
    if value is not None and not (isinstance(value, torch.dtype) and value.is_floating_point):
        raise InvalidOptionError(f"{name} must be a floating torch.dtype or None, got {value!r}.")


def module_or_none(name: str, value: Any) -> None:
    """A check: an ``nn.Module`` or ``None``."""
    if value is not None and not isinstance(value, torch.nn.Module):
        raise InvalidOptionError(f"{name} must be an nn.Module, got {type(value).__name__}.")


def callable_value(name: str, value: Any) -> None:
    """A check: a callable."""
    if not callable(value):
        raise InvalidOptionError(f"{name} must be a callable, got {value!r}.")


def anything(name: str, value: Any) -> None:
    """A check that accepts every value (validated where it is used)."""


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """Base of every method's ``Config``: fields declared with :func:`option`, checked on creation.

    ``type(config).method`` is the method class the config belongs to (set when the method
    class is defined), so that a config instance names its method:
    ``tpe.global_prune(model, tpe.NTKSAP.Config(repeats=2), 0.9)``.

    Examples:
        >>> import torch_prune_ext as tpe
        >>> config = tpe.SNIP.Config(mode="eval")
        >>> type(config).method is tpe.SNIP, config.mode
        (True, 'eval')
    """

    #: The method class this config belongs to (``None`` until a method adopts it).
    method: ClassVar[Any] = None

    def __post_init__(self) -> None:
        validate_options(self)
