"""The pruning methods, keyed by type; the name table is written out here, not filled by imports."""

from __future__ import annotations

from typing import Any

from ..core.engine import is_config
from ..errors import InvalidOptionError, UnknownMethodError
from .base import NoConfig, PruningMethod
from .magnitude import Magnitude, Random
from .saliency import SNIP, GraSP, IterSNIP
from .synflow import SynFlow
from .ntksap import NTKSAP
from .px import PX
from .lnpt import LNPT

#: Every method by name, in the order of the method table.
METHODS: dict[str, type[PruningMethod]] = {
    cls.name: cls for cls in (Random, Magnitude, SNIP, IterSNIP, GraSP, SynFlow, NTKSAP, PX, LNPT)
}


def resolve_method(method: Any) -> type[PruningMethod]:
    """The method class for a name from :data:`METHODS`, a :class:`PruningMethod` subclass, or a
    method's config object (``tpe.NTKSAP.Config(repeats=2)`` names :class:`NTKSAP`).

    Examples:
        >>> resolve_method("snip") is resolve_method(SNIP.Config()) is SNIP
        True
    """
    if isinstance(method, type) and issubclass(method, PruningMethod):
        return method
    if isinstance(method, str) and method.lower() in METHODS:
        return METHODS[method.lower()]
    if is_config(method):
        return type(method).method
    hint = (f" {method.__name__} is a config class: pass an instance, {method.__name__}(...)."
            if isinstance(method, type) and getattr(method, "method", None) is not None else "")
    raise UnknownMethodError(
        f"Unknown pruning method {method!r}.{hint} Known: {', '.join(METHODS)}; or pass a PruningMethod subclass "
        "or a method's config object (e.g. tpe.NTKSAP.Config(repeats=2))."
    )


def method_and_config(method: Any, config: Any = None) -> tuple[type[PruningMethod], Any]:
    """The method class and the config object (or ``None``) for an entry point's ``method`` and ``config=``.

    Raises:
        UnknownMethodError: ``method`` names no method.
        InvalidOptionError: ``method`` is a config and ``config=`` is another one.
    """
    cls = resolve_method(method)
    if is_config(method):
        if config is not None and config is not method:
            raise InvalidOptionError(
                f"Got two configs: method={type(method).__name__}(...) and config={type(config).__name__}(...). "
                "Pass one of them."
            )
        config = method
    return cls, config


__all__ = [
    "LNPT",
    "METHODS",
    "NTKSAP",
    "PX",
    "SNIP",
    "GraSP",
    "IterSNIP",
    "Magnitude",
    "NoConfig",
    "PruningMethod",
    "Random",
    "SynFlow",
    "method_and_config",
    "resolve_method",
]
