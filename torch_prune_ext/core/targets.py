"""Which tensors are pruned: the (module, name) pairs and their resolution.

A *target* is one tensor that a pruning method may mask, named as in
``torch.nn.utils.prune``: a module and the name of one of its parameters
(``"weight"``). A target may already be pruned by ``torch.nn.utils.prune``; then the
trainable tensor is ``<name>_orig`` and the mask is the buffer ``<name>_mask``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import TargetError

#: Module types whose ``weight`` is pruned by default.
DEFAULT_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _has_tensor(module: nn.Module, name: str) -> bool:
    """True if ``module`` holds a tensor ``name``, pruned or not (and not ``None``)."""
    if name + "_orig" in module._parameters:
        return True
    return getattr(module, name, None) is not None and name in module._parameters


def prunable_parameters(
    model: nn.Module,
    *,
    include_bias: bool = False,
    types: Sequence[type[nn.Module]] | None = None,
) -> list[tuple[nn.Module, str]]:
    """The ``(module, "weight")`` pairs that pruning-at-initialisation methods prune.

    Args:
        model: the network.
        include_bias: also return ``(module, "bias")`` for modules that have a bias,
            right after the module's weight.
        types: the module types to collect; replaces the default
            ``(Conv1d, Conv2d, Conv3d, Linear)``.

    Returns:
        The pairs in ``model.named_modules()`` order: exactly the ``parameters``
        argument of :func:`torch.nn.utils.prune.global_unstructured`. Modules
        already pruned by ``torch.nn.utils.prune`` are included.

    Examples:
        >>> import torch_prune_ext as tpe
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> [(type(m).__name__, n) for m, n in tpe.prunable_parameters(model)]
        [('Linear', 'weight'), ('Linear', 'weight')]
        >>> len(tpe.prunable_parameters(model, include_bias=True))
        4
    """
    wanted = tuple(types) if types is not None else DEFAULT_TYPES
    pairs: list[tuple[nn.Module, str]] = []
    for module in model.modules():
        if not isinstance(module, wanted):
            continue
        for name in ("weight", "bias") if include_bias else ("weight",):
            if _has_tensor(module, name):
                pairs.append((module, name))
    return pairs


@dataclass(frozen=True, eq=False)
class Target:
    """One resolved target: where its tensor lives and how to substitute it.

    Attributes:
        module: the module holding the tensor.
        tensor_name: the tensor's name in the module (``"weight"``).
        module_name: the module's qualified name in the model (``"layer1.0.conv1"``).
        position: the module's index in ``model.named_modules()``; targets sorted by
            ``(position, tensor_name)`` are in the model's canonical order.
        is_pruned: whether ``torch.nn.utils.prune`` already reparametrised it.
    """

    module: nn.Module
    tensor_name: str
    module_name: str
    position: int
    is_pruned: bool

    @property
    def name(self) -> str:
        """The qualified parameter name as the user knows it: ``"layer1.0.conv1.weight"``."""
        return f"{self.module_name}.{self.tensor_name}" if self.module_name else self.tensor_name

    def _key(self, suffix: str = "") -> str:
        return self.name + suffix

    @property
    def raw_key(self) -> str:
        """The ``functional_call`` key of the trainable tensor (``weight`` or ``weight_orig``)."""
        return self._key("_orig" if self.is_pruned else "")

    @property
    def mask_key(self) -> str:
        """The ``functional_call`` key of the mask buffer (only for pruned targets)."""
        return self._key("_mask")

    @property
    def raw(self) -> torch.Tensor:
        """The trainable tensor θ (``weight_orig`` when pruned)."""
        return getattr(self.module, self.tensor_name + ("_orig" if self.is_pruned else ""))

    def current_mask(self) -> torch.Tensor:
        """The current 0/1 mask (ones when not pruned), a fresh tensor of θ's dtype."""
        raw = self.raw
        if self.is_pruned:
            return getattr(self.module, self.tensor_name + "_mask").detach().to(raw.dtype).clone()
        return torch.ones_like(raw, memory_format=torch.contiguous_format).detach()

    @property
    def sort_key(self) -> tuple[int, str]:
        return (self.position, self.tensor_name)


def resolve_targets(
    model: nn.Module, targets: Iterable[tuple[nn.Module, str]] | None = None
) -> list[Target]:
    """Check and resolve a target list against ``model``.

    Args:
        model: the network the targets belong to.
        targets: ``(module, name)`` pairs; ``None`` means :func:`prunable_parameters`.

    Returns:
        The resolved targets, in the order given.

    Raises:
        TargetError: the list is empty, an entry is malformed or not in the model, a
            tensor appears twice, is not floating point, or the tensors live on several
            devices.
    """
    if not isinstance(model, nn.Module):
        raise TargetError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if targets is None:
        pairs = prunable_parameters(model)
        if not pairs:
            raise TargetError(
                f"{type(model).__name__} has no Conv1d/2d/3d or Linear weight to prune. "
                "Pass targets=[(module, 'weight'), ...] naming the tensors to prune."
            )
    else:
        pairs = list(targets)
        if not pairs:
            raise TargetError(
                "The target list is empty. Pass (module, name) pairs, e.g. "
                "torch_prune_ext.prunable_parameters(model)."
            )
    positions = {id(m): (i, name) for i, (name, m) in enumerate(model.named_modules())}
    resolved: list[Target] = []
    seen: set[tuple[int, str]] = set()
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], nn.Module)
                and isinstance(pair[1], str)):
            raise TargetError(f"Each target must be a (module, 'name') pair, got {pair!r}.")
        module, tensor_name = pair
        if id(module) not in positions:
            raise TargetError(
                f"The target ({type(module).__name__}, {tensor_name!r}) is not a submodule of the "
                "model. Pass the model the targets belong to."
            )
        if not _has_tensor(module, tensor_name):
            raise TargetError(
                f"{type(module).__name__} has no parameter {tensor_name!r} to prune "
                f"(it has: {', '.join(n for n, _ in module.named_parameters(recurse=False)) or 'none'})."
            )
        if (id(module), tensor_name) in seen:
            raise TargetError(f"The target {positions[id(module)][1]}.{tensor_name} appears twice.")
        seen.add((id(module), tensor_name))
        position, module_name = positions[id(module)]
        is_pruned = tensor_name + "_orig" in module._parameters and hasattr(module, tensor_name + "_mask")
        target = Target(module, tensor_name, module_name, position, is_pruned)
        if not target.raw.is_floating_point():
            raise TargetError(f"{target.name} is {target.raw.dtype}; only floating-point tensors can be pruned.")
        resolved.append(target)
    devices = {t.raw.device for t in resolved}
    if len(devices) > 1:
        raise TargetError(
            f"The targets live on several devices ({', '.join(sorted(map(str, devices)))}). "
            "Move the model to one device (model.to(device)) before pruning."
        )
    if any(device.type == "meta" for device in devices):
        raise TargetError(
            "The targets live on the 'meta' device, which holds no values to score. Materialise the model "
            "(model.to_empty(device=...) and load its weights) before pruning."
        )
    return resolved


def final_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The last ``nn.Linear`` of ``model`` in ``named_modules()`` order: the classifier.

    Raises:
        TargetError: the model has no ``Linear`` module (pass ``feature_layer=``).

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> final_linear(net)[0]
        '2'
    """
    found: tuple[str, nn.Linear] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = (name, module)
    if found is None:
        raise TargetError(
            f"{type(model).__name__} has no nn.Linear classifier. Name the layer explicitly "
            "(feature_layer= for LNPT, head= for IUNET)."
        )
    return found


def canonical_order(targets: Sequence[Target]) -> list[int]:
    """Indices that sort ``targets`` into the model's own order (ties break the same way for any list order)."""
    return sorted(range(len(targets)), key=lambda i: targets[i].sort_key)
