"""Command-line flags generated from dataclass fields, and the dataclass built back from them.

Every field becomes one flag ``--field-name`` (underscores as dashes) with the help text and
choices of its ``metadata`` (``field(metadata={"help": ..., "choices": ...})``). The field's
type picks the parsing: ``bool`` a ``--x/--no-x`` switch, ``int``/``float``/``str`` that type,
``tuple[int, ...]`` several values, ``torch.dtype`` a dtype name, a mapping a JSON object, and a
function or ``nn.Module`` an importable ``module:function`` (the function itself, or what it
returns for a module). A flag not given leaves the field at its default.

Examples:
    >>> import argparse, dataclasses
    >>> @dataclasses.dataclass
    ... class Demo:
    ...     size: int = 3
    ...     scale: tuple[float, ...] = (1.0,)
    ...     fast: bool = False
    ...     mode: str = dataclasses.field(default="a", metadata={"help": "how", "choices": ("a", "b")})
    >>> flags = dataclass_flags(Demo)
    >>> parser = argparse.ArgumentParser()
    >>> add_flags(parser, flags)
    >>> args = parser.parse_args(["--size", "4", "--fast", "--scale", "2", "3"])
    >>> Demo(**dataclass_kwargs(Demo, given_values(flags, args)))
    Demo(size=4, scale=(2.0, 3.0), fast=True, mode='a')
    >>> flag_arguments(flags, Demo(size=5, mode="b"))
    ['--size', '5', '--scale', '1.0', '--no-fast', '--mode', 'b']
"""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import json
import operator
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InvalidOptionError, InvalidTypeError
from ..models.spec import build_model, is_model_path, resolve_builder

__all__ = [
    "DTYPE_NAMES",
    "Flag",
    "add_flags",
    "dataclass_kwargs",
    "dataclass_flags",
    "field_flag",
    "flag_arguments",
    "given_values",
    "parse_dtype",
    "parse_json_object",
]

#: Floating dtypes a ``torch.dtype`` field takes by name.
DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64")


def parse_dtype(text: str) -> torch.dtype:
    """The floating ``torch.dtype`` named ``text`` (``"float64"`` or ``"torch.float64"``).

    Examples:
        >>> parse_dtype("torch.bfloat16")
        torch.bfloat16
    """
    name = text.removeprefix("torch.")
    if name not in DTYPE_NAMES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a floating dtype; use one of {', '.join(DTYPE_NAMES)}")
    return getattr(torch, name)


def parse_json_object(text: str) -> dict[str, Any]:
    """A JSON object given on the command line, e.g. ``'{"hidden": [64]}'``.

    Examples:
        >>> parse_json_object('{"hidden": [64]}')
        {'hidden': [64]}
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON ({error.msg})") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object such as '{{\"key\": 1}}'")
    return value


def _text_of_callable(text: str) -> Any:
    """A ``module:function`` as the function it names, any other text as itself (e.g. ``"mse"``)."""
    return resolve_builder(text) if is_model_path(text) else text


def _module_of(text: str) -> nn.Module:
    """The ``nn.Module`` that ``module:function`` (called with no arguments) or a built-in model name gives."""
    return build_model(text)


@dataclass(frozen=True)
class Flag:
    """One command-line flag of one dataclass field.

    Attributes:
        name: the field's name.
        option: the flag, e.g. ``"--batch-size"``.
        dest: the attribute of the parsed arguments.
        kwargs: the other arguments of ``ArgumentParser.add_argument`` (type, nargs, action, choices, help).
        default: the field's default (``dataclasses.MISSING`` when it has none).
        convert: maps the parsed value to the field's value (``tuple`` for several values, an
            import for ``module:function``).
    """

    name: str
    option: str
    dest: str
    kwargs: Mapping[str, Any]
    default: Any
    convert: Callable[[Any], Any] = lambda value: value

    @property
    def is_switch(self) -> bool:
        """Whether the flag is a ``--x/--no-x`` switch."""
        return self.kwargs.get("action") is argparse.BooleanOptionalAction


def _unwrap_optional(hint: Any) -> tuple[Any, ...]:
    """The members of a union type (``None`` left out), or ``(hint,)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(arg for arg in typing.get_args(hint) if arg is not type(None))
    return (hint,)


def _is_callable_hint(hint: Any) -> bool:
    return typing.get_origin(hint) is collections.abc.Callable or hint is collections.abc.Callable


def _parsing_of(hint: Any) -> tuple[dict[str, Any], Callable[[Any], Any]]:
    """``add_argument`` keywords and the converter of a field type."""
    members = _unwrap_optional(hint)
    if members == (bool,):
        return {"action": argparse.BooleanOptionalAction}, lambda value: value
    if len(members) == 1 and members[0] in (int, float, str):
        return {"type": members[0]}, lambda value: value
    if len(members) == 1 and typing.get_origin(members[0]) is tuple:
        items = typing.get_args(members[0])
        nargs = "+" if len(items) == 2 and items[1] is Ellipsis else len(items)
        return {"type": items[0], "nargs": nargs}, tuple
    if members == (torch.dtype,):
        return {"type": parse_dtype, "metavar": "|".join(DTYPE_NAMES)}, lambda value: value
    if len(members) == 1 and typing.get_origin(members[0]) in (dict, collections.abc.Mapping):
        return {"type": parse_json_object, "metavar": "JSON"}, lambda value: value
    if any(isinstance(m, type) and issubclass(m, nn.Module) for m in members):
        return {"type": str, "metavar": "module:function"}, _module_of
    if any(_is_callable_hint(m) for m in members):
        metavar = "NAME|module:function" if str in members else "module:function"
        return {"type": str, "metavar": metavar}, _text_of_callable
    raise InvalidTypeError(f"no command-line form for a field of type {hint!r}")


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def field_flag(f: dataclasses.Field[Any], hint: Any, *, option: str | None = None, dest: str | None = None) -> Flag:
    """The flag of one dataclass field.

    Args:
        f: the field (``dataclasses.fields(cls)``); its ``metadata`` may give ``"help"`` and ``"choices"``.
        hint: its resolved type (``typing.get_type_hints(cls)[f.name]``).
        option: the flag (default ``--`` and the name with dashes).
        dest: the attribute of the parsed arguments (default the field's name).

    Returns:
        The :class:`Flag`.

    Raises:
        TypeError: a field type with no command-line form.

    Examples:
        >>> import dataclasses
        >>> @dataclasses.dataclass
        ... class Demo:
        ...     chunk_size: int | None = None
        >>> field_flag(dataclasses.fields(Demo)[0], int | None).option
        '--chunk-size'
    """
    kwargs, convert = _parsing_of(hint)
    choices = f.metadata.get("choices")
    if choices is not None and convert is _text_of_callable:  # a name, or a module:function of the user's
        kwargs["metavar"] = "{" + ",".join(choices) + "}|module:function"
    elif choices is not None:
        kwargs["choices"] = tuple(choices)
    elif "action" not in kwargs:
        kwargs.setdefault("metavar", f.name.upper())
    kwargs["help"] = f.metadata.get("help", "")
    return Flag(f.name, option or "--" + f.name.replace("_", "-"), dest or f.name, kwargs, _default_of(f), convert)


def dataclass_flags(cls: type, *, options: Mapping[str, str] | None = None, skip: Iterable[str] = (),
                    dest_prefix: str = "") -> list[Flag]:
    """A flag for every field of the dataclass ``cls``, in field order; a dataclass field gives its own fields'.

    Args:
        cls: the dataclass.
        options: flags to use instead of ``--field-name``, by field name.
        skip: fields to leave out.
        dest_prefix: put before every ``dest`` (to keep two dataclasses' same-named fields apart).

    Returns:
        The flags; those of a nested dataclass field ``recipe`` are named ``recipe.epochs``, ...
    """
    hints = typing.get_type_hints(cls)
    options = options or {}
    flags = []
    for f in dataclasses.fields(cls):
        if f.name in set(skip):
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            nested = dataclass_flags(hints[f.name], options=options, skip=skip, dest_prefix=f"{dest_prefix}{f.name}_")
            flags += [dataclasses.replace(flag, name=f"{f.name}.{flag.name}") for flag in nested]
        else:
            flags.append(field_flag(f, hints[f.name], option=options.get(f.name), dest=dest_prefix + f.name))
    return flags


def add_flags(parser: argparse.ArgumentParser | Any, flags: Sequence[Flag], defaults: Mapping[str, Any] | None = None,
              shown_defaults: Mapping[str, str] | None = None) -> None:
    """Add ``flags`` to ``parser`` (or an argument group); a flag not given leaves no attribute.

    Args:
        parser: the parser or group.
        flags: from :func:`dataclass_flags`.
        defaults: command-line defaults other than the field's, by field name (these are set
            when the flag is not given).
        shown_defaults: what the help says the default is, where that is not the value
            (a default computed later), by field name.
    """
    defaults = defaults or {}
    for flag in flags:
        default = defaults.get(flag.name, flag.default)
        shown = ("" if default in (dataclasses.MISSING, None) else f" (default {_shown(default)})")
        if shown_defaults and flag.name in shown_defaults:
            shown = f" (default {shown_defaults[flag.name]})"
        kwargs = {**flag.kwargs, "help": (flag.kwargs.get("help") or "").replace("%", "%%") + shown}
        parser.add_argument(flag.option, dest=flag.dest, default=defaults.get(flag.name, argparse.SUPPRESS),
                            **kwargs)


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value)) or "none"
    return getattr(value, "__name__", str(value)).removeprefix("torch.").replace("%", "%%")


def given_values(flags: Sequence[Flag], args: argparse.Namespace) -> dict[str, Any]:
    """The field values of the flags given on the command line (or with a command-line default).

    Raises:
        InvalidOptionError: a ``module:function`` that cannot be imported (the message says why).
    """
    return {flag.name: flag.convert(getattr(args, flag.dest)) for flag in flags if hasattr(args, flag.dest)}


def dataclass_kwargs(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``cls`` for ``values`` by flag name (nested dataclasses built from theirs).

    Examples:
        >>> from torch_prune_ext.evaluation import CompareConfig
        >>> kwargs = dataclass_kwargs(CompareConfig, {"recipe.epochs": 2, "seeds": (1,)})
        >>> kwargs["seeds"], kwargs["recipe"].epochs, kwargs["recipe"].lr
        ((1,), 2, 0.05)
    """
    kwargs: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        head, _, rest = name.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            kwargs[name] = value
    hints = typing.get_type_hints(cls) if nested else {}
    for head, inner in nested.items():
        kwargs[head] = hints[head](**dataclass_kwargs(hints[head], inner))
    return kwargs


def flag_arguments(flags: Sequence[Flag], instance: Any) -> list[str]:
    """The command-line arguments that give ``instance``'s values to ``flags`` (the inverse of parsing).

    Fields whose value is ``None`` or an empty mapping are left out (their default); a switch is
    ``--x`` or ``--no-x``, several values follow their flag.

    Raises:
        InvalidOptionError: a value that has no command-line form (a function given in Python).
    """
    arguments: list[str] = []
    for flag in flags:
        value = operator.attrgetter(flag.name)(instance)
        if value is None or (isinstance(value, Mapping) and not value):
            continue
        if flag.is_switch:
            arguments.append(flag.option if value else "--no-" + flag.option[2:])
        elif isinstance(value, Mapping):
            arguments += [flag.option, json.dumps(dict(value))]
        elif isinstance(value, (tuple, list)):
            arguments += [flag.option, *map(str, value)]
        elif isinstance(value, (str, int, float, torch.dtype)):
            arguments += [flag.option, str(value).removeprefix("torch.")]
        else:
            raise InvalidOptionError(f"{flag.name}={value!r} has no command-line form; give it as module:function.")
    return arguments

