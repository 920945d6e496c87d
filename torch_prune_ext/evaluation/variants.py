"""Which method runs under a comparison's method label: plain names and named variants.

A comparison lists *labels*. A plain method name (``"px"``) runs the method with the
harness's fixed options (:data:`METHOD_OPTIONS`); a variant label (``"px-running"``) runs
its base method with extra options (:data:`VARIANTS`) and is a row of its own in every
table. A variant's options enter the recipe hash of its rows only, so adding variants
leaves the hash (and the recorded rows) of every plain method unchanged.

Examples:
    >>> method_of("px-reference"), options_of("px-reference"), options_of("lnpt")
    ('px', {'mode': 'reference'}, {'classifier': 'kd'})
    >>> split_methods(("SNIP", "px-reference", "iunet"))
    (('snip', 'px-reference'), ('iunet',))
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..errors import PruningError
from ..methods import METHODS

logger = logging.getLogger("torch_prune_ext")

__all__ = ["METHOD_OPTIONS", "VARIANTS", "MethodVariant", "method_of", "options_of", "split_methods",
           "variant_identity"]

#: Options given to a method besides the pruning batch and the seed. LNPT scores the
#: classifier with the distillation loss (``classifier="kd"``) so that it prunes the same
#: targets as every other method (every Conv/Linear weight) and the sparsities compare.
#: Methods with a ``teacher`` option also get the seed's trained dense model as ``teacher=``.
METHOD_OPTIONS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "lnpt": MappingProxyType({"classifier": "kd"}),
})


@dataclass(frozen=True)
class MethodVariant:
    """A method run with extra options, under a label of its own.

    Attributes:
        method: the base method's name in :data:`torch_prune_ext.METHODS`.
        options: options added to the base method's :data:`METHOD_OPTIONS`.
    """

    method: str
    options: Mapping[str, Any]

    def describe(self) -> str:
        """``"px with norm='running'"``."""
        return f"{self.method} with " + ", ".join(f"{k}={v!r}" for k, v in self.options.items())


#: Named variants (label -> base method and options). Options a method does not accept
#: yet leave the label skipped with a note; it runs once the method accepts them.
VARIANTS: Mapping[str, MethodVariant] = MappingProxyType({
    "px-running": MethodVariant("px", MappingProxyType({"norm": "running"})),
    "px-release-2024": MethodVariant("px", MappingProxyType({"mode": "release-2024"})),
    "px-reference": MethodVariant("px", MappingProxyType({"mode": "reference"})),
    "ntksap-1": MethodVariant("ntksap", MappingProxyType({"repeats": 1})),
})


def method_of(label: str) -> str:
    """The method a label runs (its base method for a variant), lower case."""
    label = label.lower()
    return VARIANTS[label].method if label in VARIANTS else label


def options_of(label: str) -> dict[str, Any]:
    """The options a label runs with: the method's :data:`METHOD_OPTIONS`, then the variant's."""
    label = label.lower()
    options = dict(METHOD_OPTIONS.get(method_of(label), {}))
    if label in VARIANTS:
        options.update(VARIANTS[label].options)
    return options


def variant_identity(label: str) -> dict[str, Any] | None:
    """What a variant adds to its rows' recipe hash (``None`` for a plain method name)."""
    variant = VARIANTS.get(label.lower())
    return None if variant is None else {"method": variant.method, "options": dict(variant.options)}


def _unavailable(label: str) -> str | None:
    """Why a label cannot run today (``None``: it can)."""
    method = method_of(label)
    if method not in METHODS:
        return f"{method!r} is not in torch_prune_ext.METHODS (yet)"
    if label.lower() in VARIANTS:
        try:
            METHODS[method].parse_options(options_of(label))
        except PruningError as error:
            return f"{method} does not accept {VARIANTS[label.lower()].describe()} (yet): {error}"
    return None


def split_methods(names: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split method labels into those that can run today and the rest (logged with the reason).

    Args:
        names: method names of :data:`torch_prune_ext.METHODS` or labels of :data:`VARIANTS`
            (case-insensitive).

    Returns:
        ``(available, skipped)``: the runnable labels in lower case and the others as given,
        both in the given order. A variant whose options its method does not accept yet is
        skipped, not recorded as a failed run, so it runs once they exist.

    Examples:
        >>> split_methods(("SNIP", "iunet", "synflow"))
        (('snip', 'synflow'), ('iunet',))
    """
    available, skipped = [], []
    for name in names:
        reason = _unavailable(name)
        if reason is None:
            available.append(name.lower())
        else:
            skipped.append(name)
            logger.info("method %r cannot run today: %s", name, reason)
    return tuple(available), tuple(skipped)
