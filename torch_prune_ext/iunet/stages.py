"""IUNET steps 4-6 on their own: encoder pruning, rewind to θ†, BatchNorm reset, finetuning."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..api import global_prune
from ..data.augment import Transform
from ..core.checkpoint import refresh_pruned_weights
from ..core.report import PruneReport
from ..core.targets import prunable_parameters
from ..errors import DataError, InvalidOptionError, TargetError
from ..training.batches import model_device
from ..training.loop import train_epochs
from .objective import find_head

__all__ = ["as_tensors", "encoder_targets", "finetune", "make_optimizer", "prune_encoder", "reset_batchnorm_",
           "rewind_"]


def as_tensors(data: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` from a pair of tensors or a ``TensorDataset``."""
    if isinstance(data, torch.utils.data.TensorDataset):
        data = data.tensors
    if not (isinstance(data, (tuple, list)) and len(data) >= 2 and all(isinstance(t, torch.Tensor) for t in data[:2])):
        raise DataError(
            f"{name} must be a pair of tensors (x, y) or a TensorDataset, got {type(data).__name__}; "
            "e.g. torch_prune_ext.data.mnist_tensors('train')."
        )
    x, y = data[0], data[1]
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise DataError(f"{name}: x and y need the same non-zero number of rows, got {x.shape[0]} and {y.shape[0]}.")
    return x, y.long()


def encoder_targets(model: nn.Module, head: str | nn.Module | None = None) -> list[tuple[nn.Module, str]]:
    """The ``(module, "weight")`` pairs of the encoder: every Conv/Linear weight except the head's.

    Args:
        model: the network.
        head: the final linear layer (name or module); default the last ``nn.Linear``.

    Returns:
        The pairs, in model order.

    Raises:
        TargetError: the encoder has no prunable weight.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> [m is net[0] for m, _ in encoder_targets(net)]
        [True]
    """
    _, head_module = find_head(model, head)
    pairs = [(m, n) for m, n in prunable_parameters(model) if m is not head_module]
    if not pairs:
        raise TargetError(
            "The encoder (everything but the final linear layer) has no Conv/Linear weight to prune; "
            "IUNET needs a supernetwork with at least one hidden layer."
        )
    return pairs


def prune_encoder(model: nn.Module, sparsity: float, head: str | nn.Module | None = None,
                  **options: Any) -> PruneReport:
    """One-shot global magnitude pruning of the encoder only; the head stays dense.

    Goes through :func:`torch_prune_ext.global_prune` with ``targets=encoder_targets(model)``,
    so exactly ``round(sparsity · N_encoder)`` encoder weights are pruned.

    Args:
        model: the trained supernetwork.
        sparsity: fraction of the encoder's weights to prune, in [0, 1].
        head: the final linear layer; default the last ``nn.Linear``.
        **options: passed to :func:`~torch_prune_ext.global_prune` (e.g. ``on_collapse``).

    Returns:
        The :class:`~torch_prune_ext.PruneReport`.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.ReLU(), torch.nn.Linear(10, 2))
        >>> report = prune_encoder(net, 0.5)
        >>> int((net[0].weight == 0).sum()), hasattr(net[2], "weight_mask")
        (50, False)
    """
    return global_prune(model, "magnitude", sparsity, targets=encoder_targets(model, head), **options)


def rewind_(
    model: nn.Module,
    theta_dagger: Mapping[str, torch.Tensor],
    initial_state: Mapping[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Reset the surviving weights to θ† (in ``weight_orig`` for pruned tensors), keep the masks, reset BatchNorm statistics.

    For every tensor named in ``theta_dagger``: a pruned tensor gets ``weight_orig = θ† ⊙ mask``
    (so pruned entries are exactly zero in both ``weight_orig`` and ``weight``), a dense one
    gets ``θ†``. With ``initial_state`` (a ``state_dict`` taken at initialisation), every
    other parameter (biases, BatchNorm affine) is also reset to its initial value.

    Args:
        model: the pruned network.
        theta_dagger: ``{qualified weight name: unscaled initial tensor}`` from
            :func:`~torch_prune_ext.iunet.proactive_init_`.
        initial_state: optional initial ``state_dict`` for the remaining parameters.

    Returns:
        The same model.

    Raises:
        TargetError: a name in ``theta_dagger`` is not a tensor of the model, or shapes differ.

    Examples:
        >>> from torch_prune_ext.iunet import proactive_init_
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> theta = proactive_init_(net, 0.1)
        >>> _ = prune_encoder(net, 0.5)
        >>> _ = rewind_(net, theta)
        >>> torch.equal(net[0].weight, theta["0.weight"] * net[0].weight_mask)
        True
    """
    modules = dict(model.named_modules())
    writes: list[tuple[torch.Tensor, torch.Tensor]] = []
    handled: set[str] = set()
    for name, value in theta_dagger.items():
        module_name, _, tensor_name = name.rpartition(".")
        module = modules.get(module_name)
        if module is None or not (tensor_name in module._parameters or tensor_name + "_orig" in module._parameters):
            raise TargetError(f"theta_dagger names {name!r}, which is not a parameter of the model.")
        pruned = tensor_name + "_orig" in module._parameters
        param = module._parameters[tensor_name + "_orig" if pruned else tensor_name]
        if param.shape != value.shape:
            raise TargetError(f"theta_dagger[{name!r}] has shape {tuple(value.shape)}, the model's is {tuple(param.shape)}.")
        new = value.to(param.device, param.dtype)
        if pruned:
            new = new * getattr(module, tensor_name + "_mask").to(new.dtype)
            handled.add(f"{module_name}.{tensor_name}_orig" if module_name else tensor_name + "_orig")
        handled.add(name)
        writes.append((param, new))
    if initial_state is not None:
        for pname, param in model.named_parameters():
            key = pname.removesuffix("_orig")
            if pname in handled or key not in initial_state or key in theta_dagger:
                continue
            if initial_state[key].shape != param.shape:
                raise TargetError(f"initial_state[{key!r}] does not fit the model's {pname}.")
            writes.append((param, initial_state[key].to(param.device, param.dtype)))
    with torch.no_grad():
        for param, new in writes:
            param.copy_(new)
    refresh_pruned_weights(model)
    reset_batchnorm_(model)
    return model


def reset_batchnorm_(model: nn.Module) -> nn.Module:
    """Reset the running statistics (mean, var, ``num_batches_tracked``) of every BatchNorm layer.

    Args:
        model: the network.

    Returns:
        The same model.

    Examples:
        >>> bn = torch.nn.BatchNorm1d(3)
        >>> _ = bn(torch.randn(8, 3) + 5)
        >>> float(reset_batchnorm_(bn).running_mean.abs().sum())
        0.0
    """
    for module in model.modules():
        if isinstance(module, _BatchNorm) and module.track_running_stats:
            module.reset_running_stats()
    return model


def make_optimizer(params: Iterable[torch.nn.Parameter], name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise InvalidOptionError(f"optimizer must be 'adam', 'adamw' or 'sgd', got {name!r}.")


def finetune(
    model: nn.Module,
    train_data: Any,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    batch_size: int = 128,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    augment: Transform | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> list[float]:
    """Train with cross-entropy only, masks fixed (IUNET step 6).

    Pruned entries get zero gradient through ``torch.nn.utils.prune``'s reparametrisation;
    after every optimizer step ``weight_orig`` is also re-multiplied by its mask, so weight
    decay and momentum cannot move a pruned entry either: it stays exactly zero.

    Args:
        model: the (pruned) network; trained in place.
        train_data: ``(x, y)`` tensors or a ``TensorDataset``.
        epochs: passes over the data.
        lr: learning rate.
        batch_size: minibatch size.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9).
        weight_decay: L2 / decoupled weight decay.
        augment: optional transform of each input batch.
        generator: shuffles the data (and nothing else); ``None`` = no shuffling.
        progress: show a tqdm bar.

    Returns:
        The mean training loss of each epoch.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> _ = prune_encoder(net, 0.5)
        >>> x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
        >>> _ = finetune(net, (x, y), epochs=2, weight_decay=0.1)
        >>> int((net[0].weight_orig[net[0].weight_mask == 0] != 0).sum())
        0
    """
    x, y = as_tensors(train_data, "train_data")
    device = model_device(model)
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], optimizer, lr, weight_decay)

    def loss_fn(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        xb, yb = xb.to(device), yb.to(device)
        if augment is not None:
            xb = augment(xb)
        return F.cross_entropy(model(xb), yb)

    # a last batch of one sample is skipped (BatchNorm cannot train on it): min_batch=2
    return train_epochs(model, opt, x, y, loss_fn, epochs=epochs, batch_size=batch_size, generator=generator,
                        min_batch=2, desc="finetune", progress=progress)
