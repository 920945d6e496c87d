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

#: Module types whose ``weight`` is pruned by default (with ``MultiheadAttention``'s input
#: projection and Hugging Face's ``Conv1D``, see :func:`is_default_kind`).
DEFAULT_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

#: Module types added by ``prunable_parameters(include_embeddings=True)``.
EMBEDDING_TYPES: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)


def is_hf_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is a ``transformers.pytorch_utils.Conv1D`` (weight ``(in, out)``), without importing transformers.

    Examples:
        >>> is_hf_conv1d(torch.nn.Conv1d(2, 2, 1))
        False
    """
    return any(cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers.")
               for cls in type(module).__mro__)


def is_default_kind(module: nn.Module) -> bool:
    """Whether the matrix weights of ``module`` are default targets: Conv1d/2d/3d, Linear,
    ``MultiheadAttention`` (its input projection) and Hugging Face ``Conv1D``."""
    return isinstance(module, (*DEFAULT_TYPES, nn.MultiheadAttention)) or is_hf_conv1d(module)


def weight_names(module: nn.Module, include_bias: bool = False) -> tuple[str, ...]:
    """The names of the weight (and bias) tensors of ``module`` that pruning considers.

    ``"weight"`` (and ``"bias"``) for most modules; for ``nn.MultiheadAttention`` its input
    projection, ``"in_proj_weight"`` (``"q_proj_weight"``, ``"k_proj_weight"``, ``"v_proj_weight"``
    when the key/value sizes differ) and ``"in_proj_bias"``; its ``out_proj`` is a ``Linear`` of its own.

    Examples:
        >>> weight_names(torch.nn.MultiheadAttention(4, 2), include_bias=True)
        ('in_proj_weight', 'in_proj_bias')
    """
    if isinstance(module, nn.MultiheadAttention):
        names = ("in_proj_weight",) if module._qkv_same_embed_dim else ("q_proj_weight", "k_proj_weight",
                                                                         "v_proj_weight")
        return names + (("in_proj_bias",) if include_bias else ())
    return ("weight", "bias") if include_bias else ("weight",)


def _has_tensor(module: nn.Module, name: str) -> bool:
    """True if ``module`` holds a tensor ``name``, pruned or not (and not ``None``)."""
    if name + "_orig" in module._parameters:
        return True
    return getattr(module, name, None) is not None and name in module._parameters


def is_pruned_site(module: nn.Module, name: str) -> bool:
    """Whether ``torch.nn.utils.prune`` reparametrised ``module.<name>`` (``<name>_orig`` and ``<name>_mask``)."""
    return name + "_orig" in module._parameters and hasattr(module, name + "_mask")


def trainable_tensor(module: nn.Module, name: str) -> torch.Tensor | None:
    """The parameter behind ``module.<name>``: ``<name>_orig`` when pruned by torch, else ``<name>``."""
    return module._parameters.get(name + "_orig", module._parameters.get(name))


def tensor_sites(model: nn.Module) -> dict[int, list[tuple[str, nn.Module, str]]]:
    """Every place a parameter lives, by tensor identity: ``id -> [(module_name, module, tensor_name)]``.

    A tied parameter (one tensor under two names, e.g. a language model's input embedding and
    output head) has several sites, in ``named_modules()`` order; a pruned tensor is listed under
    its plain name (``"weight"``, not ``"weight_orig"``).

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False))
        >>> net[1].weight = net[0].weight
        >>> [[(n, t) for n, _, t in sites] for sites in tensor_sites(net).values()]
        [[('0', 'weight'), ('1', 'weight')]]
    """
    sites: dict[int, list[tuple[str, nn.Module, str]]] = {}
    for module_name, module in model.named_modules():
        for local, value in module._parameters.items():
            if value is not None:
                sites.setdefault(id(value), []).append((module_name, module, local.removesuffix("_orig")))
    return sites


def prunable_parameters(
    model: nn.Module,
    *,
    include_bias: bool = False,
    types: Sequence[type[nn.Module]] | None = None,
    include_embeddings: bool = False,
) -> list[tuple[nn.Module, str]]:
    """The ``(module, "weight")`` pairs that pruning-at-initialisation methods prune.

    Args:
        model: the network.
        include_bias: also return ``(module, "bias")`` for modules that have a bias,
            right after the module's weight.
        types: the module types to collect; replaces the default kinds: Conv1d/2d/3d,
            Linear, ``MultiheadAttention`` (its ``in_proj_weight``) and Hugging Face's
            ``Conv1D`` (recognised by name, without importing transformers).
        include_embeddings: also collect ``nn.Embedding``/``nn.EmbeddingBag`` weights
            (embedding matrices are targets only when asked for).

    Returns:
        The pairs in ``model.named_modules()`` order: exactly the ``parameters``
        argument of :func:`torch.nn.utils.prune.global_unstructured`. Modules
        already pruned by ``torch.nn.utils.prune`` are included. A tied tensor (one
        parameter under several names, e.g. an output head sharing the input embedding) is
        followed by its other names, so that torch masks it under all of them; methods score
        it once.

    Examples:
        >>> import torch_prune_ext as tpe
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> [(type(m).__name__, n) for m, n in tpe.prunable_parameters(model)]
        [('Linear', 'weight'), ('Linear', 'weight')]
        >>> len(tpe.prunable_parameters(model, include_bias=True))
        4
    """
    extra = EMBEDDING_TYPES if include_embeddings else ()
    sites = tensor_sites(model)
    pairs: list[tuple[nn.Module, str]] = []
    listed: set[tuple[int, str]] = set()
    for module in model.modules():
        wanted = isinstance(module, (*types, *extra)) if types is not None else (
            is_default_kind(module) or isinstance(module, extra))
        if not wanted:
            continue
        for name in weight_names(module, include_bias):
            if not _has_tensor(module, name) or (id(module), name) in listed:
                continue
            tied = [(site, site_name) for _, site, site_name in sites[id(trainable_tensor(module, name))]]
            for site, site_name in [(module, name), *tied]:  # the tensor's own name first, then its tied names
                if (id(site), site_name) not in listed:
                    listed.add((id(site), site_name))
                    pairs.append((site, site_name))
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
        aliases: the tensor's other places when it is tied (one parameter under several names),
            as ``(module_name, module, tensor_name)``: it is scored once as this target, and its
            mask applies under every name.
    """

    module: nn.Module
    tensor_name: str
    module_name: str
    position: int
    is_pruned: bool
    aliases: tuple[tuple[str, nn.Module, str], ...] = ()

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
    def mask_keys(self) -> list[str]:
        """The ``functional_call`` keys of every mask buffer of this tensor: its own and those of pruned aliases."""
        own = [self.mask_key] if self.is_pruned else []
        return own + [f"{name}.{tensor}_mask" if name else f"{tensor}_mask"
                      for name, module, tensor in self.aliases if is_pruned_site(module, tensor)]

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
        The resolved targets, in the order given; a tied tensor listed under several names is
        one target (the first name) with the others in :attr:`Target.aliases`.

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
    sites = tensor_sites(model)
    resolved: list[Target] = []
    seen: set[tuple[int, str]] = set()
    tensors_seen: set[int] = set()
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
        tensor = trainable_tensor(module, tensor_name)
        if id(tensor) in tensors_seen:
            continue  # a tied name of a tensor listed before: scored once, masked under every name
        tensors_seen.add(id(tensor))
        position, module_name = positions[id(module)]
        aliases = tuple(site for site in sites.get(id(tensor), [])
                        if not (site[1] is module and site[2] == tensor_name))
        target = Target(module, tensor_name, module_name, position, is_pruned_site(module, tensor_name), aliases)
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


def torch_view(targets: Sequence[Target], pairs: Iterable[tuple[nn.Module, str]]) -> list[int]:
    """For each ``(module, name)`` of the list torch was given, the index of its target (tied names
    map to the same target): the order of torch's flat vector in ``global_unstructured``."""
    index = {id(t.raw): i for i, t in enumerate(targets)}
    return [index[id(trainable_tensor(module, name))] for module, name in pairs]
