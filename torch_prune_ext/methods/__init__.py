"""The pruning methods, keyed by type; the name table is written out here, not filled by imports."""

from __future__ import annotations

from .base import NoConfig, PruningMethod
from .magnitude import Magnitude, Random
from .saliency import SNIP, GraSP, IterSNIP
from .synflow import SynFlow
from .ntksap import NTKSAP
from .px import PX
from .lnpt import LNPT
from ..errors import UnknownMethodError

#: Every method by name, in the order of the method table.
METHODS: dict[str, type[PruningMethod]] = {
    cls.name: cls for cls in (Random, Magnitude, SNIP, IterSNIP, GraSP, SynFlow, NTKSAP, PX, LNPT)
}


def resolve_method(method: str | type[PruningMethod]) -> type[PruningMethod]:
    """The method class for a name from :data:`METHODS` or a :class:`PruningMethod` subclass."""
    if isinstance(method, type) and issubclass(method, PruningMethod):
        return method
    if isinstance(method, str) and method.lower() in METHODS:
        return METHODS[method.lower()]
    raise UnknownMethodError(
        f"Unknown pruning method {method!r}. Known: {', '.join(METHODS)}; or pass a PruningMethod subclass."
    )


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
    "resolve_method",
]
