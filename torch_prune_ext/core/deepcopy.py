"""``copy.deepcopy`` of pruned modules at any point of training.

``torch.nn.utils.prune``'s forward pre-hook stores ``module.weight = weight_orig * weight_mask``
as a plain attribute. After a forward with gradients on, that tensor belongs to the autograd
graph, and ``copy.deepcopy`` refuses it ("Only Tensors created explicitly by the user (graph
leaves) support the deepcopy protocol"), which breaks ``best = copy.deepcopy(model)``.

:func:`make_deepcopyable` gives each pruned module an instance-level ``__deepcopy__`` (which
``copy.deepcopy`` looks up on the instance): the copy is the module's usual deep copy without
that cached product, which the copy then recomputes from its own ``weight_orig`` and mask
without a graph (the pruning hook's own ``apply_mask``). Training is untouched: forward,
backward and the hooks run exactly as before; only copying changes. ``global_prune``, the
drop-in methods (``prune.global_unstructured(..., pruning_method=tpe.SNIP)``, ``Method.apply``)
and ``load_pruned_state_dict`` call it; call it yourself after torch's own pruning functions.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

__all__ = ["PrunedModuleCopier", "make_deepcopyable"]

_COPIER = "__deepcopy__"


class PrunedModuleCopier:
    """A module's ``__deepcopy__``: copies it without the graph-carrying cached pruned tensors.

    Args:
        module: the module it belongs to.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, memo: dict[int, Any]) -> nn.Module:
        module = self.module
        cls = type(module)
        new = cls.__new__(cls)
        memo[id(module)] = new
        names = _pruned_names(module)
        state = {key: value for key, value in module.__getstate__().items() if key != _COPIER and key not in names}
        new.__setstate__(copy.deepcopy(state, memo))
        with torch.no_grad():
            for hook in new._forward_pre_hooks.values():
                if isinstance(hook, prune.BasePruningMethod) and hasattr(new, hook._tensor_name + "_orig"):
                    setattr(new, hook._tensor_name, hook.apply_mask(new))
        new.__dict__[_COPIER] = PrunedModuleCopier(new)
        return new


def _pruned_names(module: nn.Module) -> set[str]:
    return {hook._tensor_name for hook in module._forward_pre_hooks.values()
            if isinstance(hook, prune.BasePruningMethod)}


def make_deepcopyable(modules: nn.Module | Iterable[nn.Module]) -> None:
    """Let ``copy.deepcopy`` copy these modules (a model: all of its modules) at any time, pruned or not.

    Args:
        modules: a model (every submodule is treated) or an iterable of modules.

    Examples:
        >>> import copy
        >>> net = nn.Sequential(nn.Linear(4, 2))
        >>> _ = prune.l1_unstructured(net[0], "weight", amount=0.5)
        >>> net(torch.randn(3, 4)).sum().backward()        # the cached weight now carries a graph
        >>> make_deepcopyable(net)
        >>> twin = copy.deepcopy(net)
        >>> torch.equal(twin[0].weight, net[0].weight), twin[0].weight.grad_fn is None
        (True, True)
    """
    for module in (modules.modules() if isinstance(modules, nn.Module) else modules):
        if not isinstance(module.__dict__.get(_COPIER), PrunedModuleCopier):
            module.__dict__[_COPIER] = PrunedModuleCopier(module)
