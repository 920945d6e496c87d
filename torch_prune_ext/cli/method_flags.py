"""``prune``'s method flags, generated from every method's ``Config`` (and ``methods``' listing of them).

Every field of every method's ``Config`` is a flag ``--field-name``. Methods whose configs share
a field name share its flag (``--mode`` of snip, grasp, px, lnpt; each method checks the value
with its own ``Config``); a field whose name is one of ``prune``'s own flags is renamed
``--METHOD-field-name`` (NTK-SAP's ``batch_size`` is ``--ntksap-batch-size``: ``--batch-size`` is
the pruning-data batch size). A method flag given with another ``--method`` is an error naming
the method(s) it belongs to. LNPT's ``teacher`` is a checkpoint ``PATH`` (:mod:`.teacher`).

Examples:
    >>> flags = {flag.option: flag for flag in method_flags({"--batch-size"})}
    >>> flags["--repeats"].owners, flags["--ntksap-batch-size"].owners, "px" in flags["--mode"].owners
    (('ntksap',), ('ntksap',), True)
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.report import format_table
from ..core.scoring import PruningOptions
from ..errors import InvalidOptionError, InvalidTypeError
from ..methods import METHODS, PruningMethod
from .fields import Flag, add_flags, dataclass_flags

__all__ = ["MethodFlag", "common_flags", "method_flags", "method_options", "methods_listing", "methods_table"]

#: ``add_argument`` keywords of fields given differently on the command line than their type says.
FIELD_OVERRIDES: dict[str, dict[str, Any]] = {
    "teacher": {"type": str, "metavar": "PATH",
                "help": "checkpoint of the trained teacher, of --model's architecture: a file written by "
                        "'torch-prune-ext prune' or torch.save(model.state_dict(), PATH)"},
}

#: Fields of :class:`~torch_prune_ext.core.scoring.PruningOptions` the command line sets itself or cannot give.
COMMON_FIELDS_NOT_FLAGS = ("generator", "process_group", "shard_data")


@dataclass(frozen=True)
class MethodFlag:
    """One method flag of ``prune`` and the methods whose ``Config`` field it sets.

    ``name``, ``option`` (e.g. ``"--repeats"``) and ``dest`` are those of :class:`~.fields.Flag`;
    ``by_method`` holds each owning method's own ``Flag`` (its help, choices, default, converter).
    """

    name: str
    option: str
    dest: str
    by_method: Mapping[str, Flag]

    @property
    def owners(self) -> tuple[str, ...]:
        """The names of the methods whose ``Config`` has the field."""
        return tuple(self.by_method)

    def merged(self) -> Flag:
        """One flag for the parser: the first owner's parsing, every owner's help and choices."""
        flags = list(self.by_method.values())
        parsing = [{k: v for k, v in f.kwargs.items() if k not in ("help", "choices")} for f in flags]
        if any(p != parsing[0] for p in parsing):
            raise InvalidTypeError(f"{self.option}: the fields of {', '.join(self.owners)} are parsed differently")
        kwargs = dict(parsing[0])
        if all("choices" in f.kwargs for f in flags):
            kwargs["choices"] = tuple(dict.fromkeys(c for f in flags for c in f.kwargs["choices"]))
        kwargs["help"] = "; ".join(f"{method}: {f.kwargs['help'] or self.name} (default {_default_text(f)})"
                                   for method, f in self.by_method.items())
        return Flag(self.name, self.option, self.dest, kwargs, dataclasses.MISSING)


def _default_text(flag: Flag) -> str:
    return getattr(flag.default, "__name__", str(flag.default)).removeprefix("torch.")


def _config_flags(method: type[PruningMethod]) -> list[Flag]:
    flags = dataclass_flags(method.Config)
    return [dataclasses.replace(f, kwargs={**f.kwargs, **FIELD_OVERRIDES[f.name]}, convert=str)
            if f.name in FIELD_OVERRIDES else f for f in flags]


def method_flags(taken: Collection[str], methods: Mapping[str, type[PruningMethod]] = METHODS) -> list[MethodFlag]:
    """The method flags of ``prune``, one per field name (per method for names in ``taken``).

    Args:
        taken: the flags ``prune`` already has (``"--batch-size"``, ...).
        methods: the methods, by name.

    Returns:
        The flags, in the order the methods and their fields come.
    """
    grouped: dict[str, dict[str, Flag]] = {}
    for method_name, method in methods.items():
        for flag in _config_flags(method):
            option = flag.option
            if option in taken:
                option = f"--{method_name.replace('_', '-')}-{option[2:]}"
            grouped.setdefault(option, {})[method_name] = flag
    return [MethodFlag(next(iter(by_method.values())).name, option, "method_" + option[2:].replace("-", "_"),
                       by_method) for option, by_method in grouped.items()]


def common_flags(taken: Collection[str]) -> list[Flag]:
    """Flags of the :class:`~torch_prune_ext.core.scoring.PruningOptions` fields ``prune`` has no flag for yet.

    Examples:
        >>> [flag.option for flag in common_flags({"--rounds", "--schedule", "--seed", "--input-shape",
        ...     "--on-collapse", "--progress", "--granularity", "--block-size", "--distributed"})]
        ['--block-density']
    """
    return [flag for flag in dataclass_flags(PruningOptions, skip=COMMON_FIELDS_NOT_FLAGS)
            if flag.option not in taken]


def add_method_flags(parser: argparse.ArgumentParser, flags: Sequence[MethodFlag]) -> None:
    """Add the method flags to ``prune``'s parser, in a group of their own."""
    group = parser.add_argument_group(
        "method options", "the fields of each method's Config (torch-prune-ext methods lists them); each belongs "
                          "to the methods named in its help")
    add_flags(group, [flag.merged() for flag in flags])


def method_options(flags: Sequence[MethodFlag], args: argparse.Namespace, method: str) -> dict[str, Any]:
    """The method options given on the command line, as ``global_prune`` keywords.

    Args:
        flags: from :func:`method_flags`.
        args: the parsed arguments.
        method: ``--method``.

    Returns:
        ``{field name: value}`` of the given flags (``module:function`` values imported).

    Raises:
        InvalidOptionError: a flag of other methods; the message names them.
    """
    given = [flag for flag in flags if hasattr(args, flag.dest)]
    foreign = [flag for flag in given if method not in flag.by_method]
    if foreign:
        raise InvalidOptionError("; ".join(
            f"{flag.option} is an option of {', '.join(flag.owners)}, not of {method}" for flag in foreign
        ) + f": drop it, or pass --method {foreign[0].owners[0]}.")
    return {flag.name: flag.by_method[method].convert(getattr(args, flag.dest)) for flag in given}


def _needs(method: type[PruningMethod]) -> str:
    """What a method needs, in words, for the method table."""
    if method.needs_labels:
        return "data with labels"
    if method.needs_data:
        return "data"
    if method.needs_input_shape:
        return "input_shape or data"
    return "nothing"


def methods_table() -> str:
    """The method table: name, class, needs, default rounds, own options with their defaults."""
    rows = []
    for name, method in METHODS.items():
        options = ", ".join(f"{f.name}={_default_text(f)}" for f in dataclass_flags(method.Config))
        rows.append((name, method.__name__, _needs(method), str(method.default_rounds), options or "-",
                     method.summary))
    return format_table(("name", "class", "needs", "rounds", "options", "score"), rows, "llllll")


def methods_listing(flags: Sequence[MethodFlag]) -> str:
    """Every method's flags for ``prune``, with their defaults and help, under the method table.

    Examples:
        >>> "  --temperature=200.0" in methods_listing(method_flags({"--batch-size"})).split("grasp:")[1]
        True
    """
    lines = [methods_table(), "", "Method options (torch-prune-ext prune --method NAME --option VALUE):"]
    for name in METHODS:
        options = {flag.name: flag.option for flag in flags if name in flag.by_method}
        own = [(options[f.name], f) for f in _config_flags(METHODS[name])]
        lines.append(f"{name}:" + ("" if own else " none"))
        for option, flag in own:
            choices = f" {{{','.join(flag.kwargs['choices'])}}}" if "choices" in flag.kwargs else ""
            lines.append(f"  {option}={_default_text(flag)}{choices}  {flag.kwargs['help'] or '...'}")
    return "\n".join(lines)
