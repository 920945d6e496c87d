"""Masks in and out of models: applying, loading pruned checkpoints, making pruning permanent."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from ..errors import CheckpointError
from .deepcopy import make_deepcopyable
from .targets import Target


def apply_masks(targets: Sequence[Target], masks: Sequence[torch.Tensor]) -> None:
    """Apply final masks through ``torch.nn.utils.prune.custom_from_mask``.

    A target already pruned gets its new mask combined with the old one by torch's
    ``PruningContainer`` (the new mask is a subset of the old, so the result is the new one).
    A tied target's mask is applied under each of its names (:attr:`Target.aliases`).
    """
    sites = []
    for target, mask in zip(targets, masks, strict=True):
        for module, name in [(target.module, target.tensor_name), *((m, n) for _, m, n in target.aliases)]:
            prune.custom_from_mask(module, name, mask.to(target.raw.dtype))
            sites.append((module, name))
    _refresh(sites)  # no graph on the cached weight: deepcopy works
    make_deepcopyable(module for module, _ in sites)  # deepcopy works after forward/backward too


def pruned_tensors(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Every ``(module, name)`` reparametrised by ``torch.nn.utils.prune`` in ``model``."""
    pairs = []
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                pairs.append((module, hook._tensor_name))
    return pairs


def refresh_pruned_weights(model: nn.Module) -> None:
    """Recompute every pruned ``weight = weight_orig * weight_mask`` attribute now, without a graph.

    torch's forward pre-hook does this at the next forward; call it after writing into
    ``weight_orig`` directly (rewinding, loading) so that ``module.weight`` is current.
    """
    _refresh(pruned_tensors(model))


def _refresh(pairs: Sequence[tuple[nn.Module, str]]) -> None:
    with torch.no_grad():
        for module, name in pairs:
            setattr(module, name, getattr(module, name + "_orig") * getattr(module, name + "_mask"))


def zero_pruned_entries_(model: nn.Module) -> None:
    """Write exact zeros into ``weight_orig`` wherever the mask is zero, in place.

    Training only ever sees ``weight_orig * mask``, but optimizers (weight decay, momentum) move
    ``weight_orig`` at pruned entries; zeroing them keeps ``prune.remove`` and ``make_permanent``
    exact.

    Examples:
        >>> net = torch.nn.Linear(4, 2)
        >>> _ = prune.l1_unstructured(net, "weight", amount=0.5)
        >>> zero_pruned_entries_(net)
        >>> int((net.weight_orig == 0).sum())
        4
    """
    with torch.no_grad():
        for module, name in pruned_tensors(model):
            orig = getattr(module, name + "_orig")
            orig.mul_(getattr(module, name + "_mask").to(orig.dtype))
    refresh_pruned_weights(model)


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every mask into its weight (``prune.remove`` on every pruned tensor).

    Args:
        model: a model pruned with ``torch.nn.utils.prune``.

    Returns:
        The same model, now with plain parameters holding zeros where pruned.

    Examples:
        >>> import torch_prune_ext as tpe
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4))
        >>> _ = torch.nn.utils.prune.l1_unstructured(net[0], "weight", amount=0.5)
        >>> _ = tpe.make_permanent(net)
        >>> torch.nn.utils.prune.is_pruned(net), int((net[0].weight == 0).sum())
        (False, 8)
    """
    for module, name in pruned_tensors(model):
        prune.remove(module, name)
    return model


def _undo_reparametrisation(module: nn.Module, name: str, parameters: dict[str, nn.Parameter]) -> None:
    """Take back ``prune.identity(module, name)`` exactly: same Parameter objects, same order."""
    for key, hook in list(module._forward_pre_hooks.items()):
        if isinstance(hook, prune.BasePruningMethod) and hook._tensor_name == name:
            del module._forward_pre_hooks[key]
    module._buffers.pop(name + "_mask", None)
    module.__dict__.pop(name, None)
    module._parameters.clear()
    module._parameters.update(parameters)


def load_pruned_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> nn.Module:
    """Load a checkpoint of a pruned model into a model that is not (or differently) pruned.

    Every ``<name>_orig``/``<name>_mask`` pair in ``state_dict`` re-creates torch's
    pruning reparametrisation (mask buffer and forward pre-hook) on the matching
    module before loading. On any error the model is left exactly as it was.

    Args:
        model: a fresh model of the checkpoint's architecture.
        state_dict: the pruned model's ``state_dict()``.
        strict: passed to ``load_state_dict``.

    Returns:
        ``model``, pruned like the checkpoint.

    Raises:
        CheckpointError: a mask without its ``_orig`` tensor, a module or tensor the
            model lacks, a shape mismatch, or keys ``load_state_dict`` rejects.

    Examples:
        >>> import torch_prune_ext as tpe
        >>> src = torch.nn.Sequential(torch.nn.Linear(4, 4))
        >>> _ = torch.nn.utils.prune.random_unstructured(src[0], "weight", amount=0.5)
        >>> dst = tpe.load_pruned_state_dict(torch.nn.Sequential(torch.nn.Linear(4, 4)), src.state_dict())
        >>> torch.equal(dst[0].weight, src[0].weight)
        True
    """
    modules = dict(model.named_modules())
    to_reparametrise: list[tuple[nn.Module, str]] = []
    for key, mask in state_dict.items():
        if not key.endswith("_mask"):
            continue
        path, _, tensor_key = key[:-5].rpartition(".")
        orig_key = key[:-5] + "_orig"
        if orig_key not in state_dict:
            raise CheckpointError(f"The checkpoint has {key} but no {orig_key}; it is not a torch-pruned state dict.")
        module = modules.get(path)
        if module is None:
            raise CheckpointError(f"The checkpoint prunes {key[:-5]} but the model has no module {path!r}.")
        if tensor_key + "_orig" in module._parameters:
            current = module._parameters[tensor_key + "_orig"]
        else:
            current = module._parameters.get(tensor_key)
            if current is None:
                raise CheckpointError(f"The checkpoint prunes {key[:-5]} but the model has no such parameter.")
            to_reparametrise.append((module, tensor_key))
        if tuple(current.shape) != tuple(mask.shape) or tuple(state_dict[orig_key].shape) != tuple(mask.shape):
            raise CheckpointError(
                f"{key[:-5]}: checkpoint shape {tuple(mask.shape)} does not match the model's {tuple(current.shape)}."
            )
    backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
    saved_parameters = [(module, name, module._parameters.copy()) for module, name in to_reparametrise]
    for module, name in to_reparametrise:
        prune.identity(module, name)
    try:
        model.load_state_dict(state_dict, strict=strict)
    except RuntimeError as error:
        for module, name, parameters in saved_parameters:
            _undo_reparametrisation(module, name, parameters)
        model.load_state_dict(backup)
        raise CheckpointError(f"The checkpoint does not fit the model: {error}") from error
    refresh_pruned_weights(model)  # no graph on the cached weight
    make_deepcopyable(module for module, _ in pruned_tensors(model))
    return model


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Read a file written by ``torch.save`` (tensors, dicts and plain values only: ``weights_only``).

    Args:
        path: the file.

    Returns:
        What the file holds, on the CPU.

    Raises:
        CheckpointError: no such file, or a file ``torch.load`` cannot read; the message says which
            file to pass.

    Examples:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile(suffix=".pt") as handle:
        ...     _ = handle.write(b"not a checkpoint"); handle.flush()
        ...     try:
        ...         read_checkpoint(handle.name)
        ...     except CheckpointError as error:
        ...         print("is not a checkpoint" in str(error))
        True
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}; pass a file written by torch.save or 'torch-prune-ext prune'.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for a foreign file
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(
            f"{path} is not a checkpoint torch can read ({type(error).__name__}: {reason}); pass a file written by "
            "torch.save (a state dict) or by 'torch-prune-ext prune'."
        ) from error


def state_dict_in(checkpoint: Any, path: str | os.PathLike[str] = "the checkpoint") -> Mapping[str, torch.Tensor]:
    """The state dict inside what :func:`read_checkpoint` returned: a ``{"state_dict": ...}`` wrapper or a bare one.

    Args:
        checkpoint: the file's content.
        path: its name, for the message.

    Returns:
        The mapping of names to tensors.

    Raises:
        CheckpointError: the content holds no state dict.

    Examples:
        >>> list(state_dict_in({"state_dict": {"w": torch.zeros(1)}, "epoch": 3}))
        ['w']
    """
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state dict (a mapping of names to tensors); pass the file of "
                              "torch.save(model.state_dict(), PATH) or one written by 'torch-prune-ext prune'.")
    return state
