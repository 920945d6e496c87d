"""The IUNET pipeline (spec steps 1-6): κ-init, ILO training, encoder pruning, rewind, finetune.

:func:`run_iunet` runs the whole thing and returns an :class:`IUNETReport`; the steps are
also public (:func:`prune_encoder`, :func:`rewind_`, :func:`reset_batchnorm_`,
:func:`finetune`, :func:`consistency`) so they can be used on their own.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from tqdm.auto import tqdm

from ..api import global_prune
from ..core.checkpoint import refresh_pruned_weights, zero_pruned_entries_
from ..core.functional import eval_mode
from ..core.report import PruneReport
from ..core.targets import prunable_parameters, resolve_targets
from ..errors import BatchShapeError, DataError, InvalidOptionError, InvalidTypeError, MissingDataError, TargetError, UnknownNameError
from .augment import Scarf, StandardAugment, VisionViews
from .init import proactive_init_
from .objective import ProjectionHead, find_head, invariance_loss

logger = logging.getLogger("torch_prune_ext")

__all__ = [
    "IUNETConfig",
    "IUNETReport",
    "StageResult",
    "accuracy",
    "consistency",
    "encoder_targets",
    "finetune",
    "prune_encoder",
    "reset_batchnorm_",
    "rewind_",
    "run_iunet",
]

Transform = Callable[[torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------ data helpers
def _as_tensors(data: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
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


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None):
    n = x.shape[0]
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]


def _iter_inputs(data: Any) -> Iterable[torch.Tensor]:
    """Input batches from a tensor, an ``(x, y)`` pair of tensors, or an iterable of batches."""
    if isinstance(data, torch.Tensor):
        yield data
        return
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data) \
            and data[0].shape[0] == data[1].shape[0] and data[1].ndim == 1 and data[0].ndim > 1:
        yield data[0]
        return
    for batch in data:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    device = _device_of(model)
    return torch.cat([model(x[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, x.shape[0], batch_size)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy in eval mode (the model's train/eval flags are restored).

    Args:
        model: the classifier.
        x: inputs.
        y: integer labels.
        batch_size: evaluation batch size.

    Returns:
        The fraction of correct predictions, in [0, 1].

    Examples:
        >>> net = torch.nn.Linear(2, 2, bias=False)
        >>> _ = torch.nn.init.eye_(net.weight)
        >>> accuracy(net, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
        0.5
    """
    with eval_mode(model):
        pred = _predict(model, x, batch_size)
    return float((pred == y.cpu()).float().mean())


def consistency(model: nn.Module, loader: Any, transform: Transform) -> float:
    """The share of inputs whose predicted class is unchanged under ``transform``.

    Both the inputs and their transformed copies are classified in eval mode, without
    gradients; the model's train/eval flags are restored afterwards.

    Args:
        model: the classifier.
        loader: the inputs: a tensor, an ``(x, y)`` pair of tensors, or an iterable of
            batches (each ``x`` or a tuple/list whose first item is ``x``); labels are ignored.
        transform: maps an input batch to a transformed batch of the same size.

    Returns:
        The fraction in [0, 1].

    Raises:
        ValueError: no inputs, or ``transform`` changed the batch size.

    Examples:
        >>> net = torch.nn.Linear(2, 2, bias=False)
        >>> _ = torch.nn.init.eye_(net.weight)
        >>> x = torch.tensor([[2.0, 1.0], [1.0, 3.0], [0.0, 1.0], [5.0, 4.0]])
        >>> consistency(net, x, lambda b: b.flip(1))  # swapping the features swaps the class of all 4
        0.0
        >>> consistency(net, x, lambda b: 2 * b)
        1.0
    """
    same = total = 0
    device = _device_of(model)
    with eval_mode(model), torch.no_grad():
        for x in _iter_inputs(loader):
            x = x.to(device)
            xt = transform(x)
            if xt.shape[0] != x.shape[0]:
                raise BatchShapeError(f"transform changed the batch size from {x.shape[0]} to {xt.shape[0]}.")
            same += int((model(x).argmax(1) == model(xt).argmax(1)).sum())
            total += x.shape[0]
    if total == 0:
        raise MissingDataError("consistency got no inputs; pass a non-empty tensor or loader.")
    return same / total


# ------------------------------------------------------------------ pruning, rewind, finetune
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


def _optimizer(params: Iterable[torch.nn.Parameter], name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
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
    x, y = _as_tensors(train_data, "train_data")
    device = _device_of(model)
    opt = _optimizer([p for p in model.parameters() if p.requires_grad], optimizer, lr, weight_decay)
    zero_pruned_entries_(model)
    model.train()
    losses: list[float] = []
    for epoch in range(epochs):
        total, count = 0.0, 0
        n_batches = math.ceil(x.shape[0] / batch_size)
        bar = tqdm(_batches(x, y, batch_size, generator), total=n_batches, desc=f"finetune {epoch + 1}/{epochs}",
                   leave=False, disable=not progress)
        for xb, yb in bar:
            if xb.shape[0] < 2:
                continue  # a last batch of one sample is skipped (BatchNorm cannot train on it)
            xb, yb = xb.to(device), yb.to(device)
            if augment is not None:
                xb = augment(xb)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            zero_pruned_entries_(model)
            total += float(loss.detach()) * xb.shape[0]
            count += xb.shape[0]
        losses.append(total / max(count, 1))
    return losses


# ------------------------------------------------------------------ config and report
@dataclass(frozen=True)
class IUNETConfig:
    """Every knob of :func:`run_iunet`; the defaults are the paper's (κ, one-shot OMP) or ours (marked).

    Attributes:
        kappa: proactive-init multiplier κ: θ(0) = κ·θ† (paper 0.125; 1 = off).
        sparsity: fraction of the ENCODER weights pruned in one shot (0 = no pruning: the
            report's final model is the ILO-trained supernetwork). Ours: 0.9.
        ilo_weight: λ, the weight of NT-Xent in the ILO (ours 1.0; 0 = plain CE).
        temperature: τ of NT-Xent (ours 0.5).
        projection_dim: output width of an optional projection head before NT-Xent (``None`` = off).
        projection_hidden: hidden width of that projection head.
        epochs: epochs of ILO training of the supernetwork (step 3).
        finetune_epochs: epochs of CE finetuning after pruning and rewind (step 6).
        batch_size: minibatch size in both stages.
        lr: learning rate of the ILO stage.
        finetune_lr: learning rate of the finetune stage (``None`` = ``lr``).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9).
        weight_decay: weight decay in both stages.
        rewind_others: also reset biases and BatchNorm affine parameters to their initial
            values at rewind (the weights always go back to the unscaled θ†).
        views: the contrastive view transform; ``None`` = :class:`VisionViews` for 4-D inputs
            (jitter clamped to the training pixels' min/max), :class:`Scarf` (fitted on the
            training rows) for 2-D inputs.
        standard_augment: the supervised-branch transform; ``None`` =
            :class:`StandardAugment` for images, none for tabular rows.
        consistency_transform: transform for the consistency metric; ``None`` = the standard
            augmentation for images, SCARF for tabular rows (drawn with a fixed seed).
        scarf_corruption: fraction of features SCARF replaces per row (SCARF: 0.6).
        head: name of the final linear layer (``None`` = the last ``nn.Linear``).
        seed: seeds model construction (with ``model_fn``), shuffling and augmentation;
            the global RNG state is left unchanged.
        eval_batch_size: batch size for evaluation.
        progress: show tqdm bars.
    """

    kappa: float = 0.125
    sparsity: float = 0.9
    ilo_weight: float = 1.0
    temperature: float = 0.5
    projection_dim: int | None = None
    projection_hidden: int = 128
    epochs: int = 10
    finetune_epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    finetune_lr: float | None = None
    optimizer: str = "adam"
    weight_decay: float = 0.0
    rewind_others: bool = True
    views: Transform | None = None
    standard_augment: Transform | None = None
    consistency_transform: Transform | None = None
    scarf_corruption: float = 0.6
    head: str | None = None
    seed: int = 0
    eval_batch_size: int = 1024
    progress: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.kappa, (int, float)) and math.isfinite(self.kappa) and self.kappa > 0):
            problems.append(f"kappa must be a finite number > 0, got {self.kappa!r}")
        if not 0.0 <= self.sparsity <= 1.0:
            problems.append(f"sparsity must be in [0, 1], got {self.sparsity!r}")
        if self.ilo_weight < 0:
            problems.append(f"ilo_weight must be >= 0, got {self.ilo_weight!r}")
        if not self.temperature > 0:
            problems.append(f"temperature must be > 0, got {self.temperature!r}")
        if self.epochs < 0 or self.finetune_epochs < 0:
            problems.append(f"epochs and finetune_epochs must be >= 0, got {self.epochs}, {self.finetune_epochs}")
        if self.batch_size < 2:
            problems.append(f"batch_size must be >= 2 (NT-Xent needs negatives), got {self.batch_size}")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            problems.append(f"optimizer must be 'adam', 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.projection_dim is not None and self.projection_dim < 1:
            problems.append(f"projection_dim must be a positive int or None, got {self.projection_dim!r}")
        if not 0.0 <= self.scarf_corruption <= 1.0:
            problems.append(f"scarf_corruption must be in [0, 1], got {self.scarf_corruption!r}")
        if problems:
            raise InvalidOptionError("Bad IUNETConfig: " + "; ".join(problems) + ".")

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-friendly values (transforms by their ``repr``)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)
        return out


@dataclass
class StageResult:
    """What was measured after one stage.

    Attributes:
        name: ``"init"``, ``"ilo"``, ``"pruned"``, ``"rewound"`` or ``"finetuned"``.
        test_accuracy: top-1 test accuracy after the stage, in [0, 1].
        consistency: share of test inputs whose prediction survives the consistency
            transform (``None`` when not measured).
        train_loss: mean training loss of the stage's last epoch (``None`` without training).
        seconds: wall time of the stage (training or pruning, evaluation excluded).
    """

    name: str
    test_accuracy: float
    consistency: float | None = None
    train_loss: float | None = None
    seconds: float = 0.0


@dataclass
class IUNETReport:
    """The outcome of :func:`run_iunet`.

    Attributes:
        stages: one :class:`StageResult` per stage, in order.
        encoder_sparsity: fraction of encoder weights that are zero-masked.
        total_sparsity: fraction of all Conv/Linear weights (head included) masked.
        n_encoder: number of encoder weights N_encoder.
        n_pruned: number of encoder weights pruned (``round(sparsity · N_encoder)``).
        prune_report: the :class:`~torch_prune_ext.PruneReport` (``None`` without pruning).
        config: the configuration as a dict.
        total_seconds: wall time of the whole run, evaluation included.
        model: the final network (not part of :meth:`to_dict`).
    """

    stages: list[StageResult]
    encoder_sparsity: float
    total_sparsity: float
    n_encoder: int
    n_pruned: int
    prune_report: PruneReport | None
    config: dict[str, Any]
    total_seconds: float
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    def stage(self, name: str) -> StageResult:
        """The result of the stage ``name``."""
        for s in self.stages:
            if s.name == name:
                return s
        raise UnknownNameError(f"No stage {name!r}; the stages are {[s.name for s in self.stages]}.")

    @property
    def final_accuracy(self) -> float:
        """Test accuracy of the returned model (the last stage)."""
        return self.stages[-1].test_accuracy

    @property
    def final_consistency(self) -> float | None:
        """Consistency of the returned model (the last stage)."""
        return self.stages[-1].consistency

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the model is left out)."""
        return {
            "stages": [dataclasses.asdict(s) for s in self.stages],
            "final_accuracy": self.final_accuracy,
            "final_consistency": self.final_consistency,
            "encoder_sparsity": self.encoder_sparsity,
            "total_sparsity": self.total_sparsity,
            "n_encoder": self.n_encoder,
            "n_pruned": self.n_pruned,
            "prune_report": None if self.prune_report is None else self.prune_report.to_dict(),
            "config": dict(self.config),
            "total_seconds": self.total_seconds,
        }

    def __str__(self) -> str:
        def fmt(v: float | None, pct: bool = True) -> str:
            return "-" if v is None else (f"{100 * v:.2f}" if pct else f"{v:.4f}")

        lines = [
            f"IUNET  kappa={self.config.get('kappa')}  lambda={self.config.get('ilo_weight')}  "
            f"encoder sparsity={100 * self.encoder_sparsity:.2f}% ({self.n_pruned}/{self.n_encoder})  "
            f"total sparsity={100 * self.total_sparsity:.2f}%",
            f"{'stage':<10} {'test acc %':>10} {'consist. %':>10} {'train loss':>10} {'seconds':>8}",
        ]
        for s in self.stages:
            lines.append(f"{s.name:<10} {fmt(s.test_accuracy):>10} {fmt(s.consistency):>10} "
                         f"{fmt(s.train_loss, False):>10} {s.seconds:>8.2f}")
        lines.append(f"total {self.total_seconds:.2f} s")
        return "\n".join(lines)


# ------------------------------------------------------------------ runner
def _masked_fraction(pairs: list[tuple[nn.Module, str]]) -> tuple[int, int]:
    total = zeros = 0
    for module, name in pairs:
        mask = getattr(module, name + "_mask", None)
        numel = getattr(module, name + "_orig", getattr(module, name)).numel()
        total += numel
        zeros += 0 if mask is None else int((mask == 0).sum())
    return zeros, total


def _train_ilo(model: nn.Module, head: nn.Module, x: torch.Tensor, y: torch.Tensor, config: IUNETConfig,
               views: Transform | None, standard: Transform | None, generator: torch.Generator) -> float | None:
    device = _device_of(model)
    projection: nn.Module | None = None
    params = list(model.parameters())
    if config.projection_dim is not None and config.ilo_weight > 0:
        projection = ProjectionHead(head.in_features, config.projection_hidden, config.projection_dim).to(device)
        params += list(projection.parameters())
    opt = _optimizer(params, config.optimizer, config.lr, config.weight_decay)
    model.train()
    last: float | None = None
    n_batches = math.ceil(x.shape[0] / config.batch_size)
    for epoch in range(config.epochs):
        total, count = 0.0, 0
        bar = tqdm(_batches(x, y, config.batch_size, generator), total=n_batches,
                   desc=f"ILO {epoch + 1}/{config.epochs}", leave=False, disable=not config.progress)
        for xb, yb in bar:
            xb, yb = xb.to(device), yb.to(device)
            if xb.shape[0] < 2:
                continue  # NT-Xent needs a negative; a last batch of one is skipped
            x_std = standard(xb) if standard is not None else xb
            if config.ilo_weight > 0 and views is not None:
                v1, v2 = views(xb), views(xb)
            else:
                v1 = v2 = xb
            loss, _ = invariance_loss(model, head, x_std, yb, v1, v2, weight=config.ilo_weight if views is not None else 0.0,
                                      temperature=config.temperature, projection=projection)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * xb.shape[0]
            count += xb.shape[0]
        last = total / max(count, 1)
    return last


def run_iunet(
    model: nn.Module | Callable[[], nn.Module],
    train_data: Any,
    test_data: Any,
    config: IUNETConfig | None = None,
) -> IUNETReport:
    """Run IUNET end to end: κ-init → ILO training → encoder pruning → rewind to θ† → CE finetune.

    Steps (spec): (1) the model as built is θ†, (2) θ(0) = κ·θ† on Conv/Linear weights
    (:func:`proactive_init_`), (3) train with CE(f(x_std), y) + λ·NT-Xent over two views of
    the encoder output, (4) prune ``sparsity`` of the encoder by global magnitude (head
    dense), (5) rewind the surviving weights to the unscaled θ†, reset BatchNorm statistics,
    (6) finetune with CE, masks fixed. With ``sparsity == 0`` steps 4-6 are skipped and the
    ILO-trained supernetwork is the result (the paper's "κ + ILO, not pruned" ablation);
    ``kappa=1, ilo_weight=0`` gives the plain baselines.

    Args:
        model: a freshly initialised network, or a zero-argument callable building one
            (called under ``config.seed``, leaving the global RNG untouched). Trained in place.
        train_data: ``(x, y)`` tensors or a ``TensorDataset``; images ``(N, C, H, W)`` or rows ``(N, F)``.
        test_data: the same, for evaluation.
        config: an :class:`IUNETConfig` (default: all defaults).

    Returns:
        An :class:`IUNETReport`; ``report.model`` is the final network (still pruned with
        ``torch.nn.utils.prune``; see :func:`torch_prune_ext.make_permanent`).

    Raises:
        ValueError: bad data (the message says what and how to fix it).
        TypeError: ``model`` is neither a module nor a callable returning one.
        InvalidOptionError: a bad config. TargetError: a model without encoder or head.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(64, 6, generator=g); y = (x[:, 0] > 0).long()
        >>> build = lambda: torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        >>> cfg = IUNETConfig(epochs=1, finetune_epochs=1, batch_size=32, sparsity=0.5, progress=False)
        >>> report = run_iunet(build, (x, y), (x, y), cfg)
        >>> [s.name for s in report.stages], report.n_pruned
        (['init', 'ilo', 'pruned', 'rewound', 'finetuned'], 48)
    """
    config = IUNETConfig() if config is None else config
    if not isinstance(config, IUNETConfig):
        raise InvalidOptionError(f"config must be an IUNETConfig, got {type(config).__name__}.")
    start = time.perf_counter()
    x_train, y_train = _as_tensors(train_data, "train_data")
    x_test, y_test = _as_tensors(test_data, "test_data")
    if isinstance(model, nn.Module):
        net = model
    elif callable(model):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            net = model()
        if not isinstance(net, nn.Module):
            raise InvalidTypeError(f"model_fn must return an nn.Module, got {type(net).__name__}.")
    else:
        raise InvalidTypeError(f"model must be an nn.Module or a callable building one, got {type(model).__name__}.")
    head_name, head = find_head(net, config.head)
    enc_pairs = encoder_targets(net, head)
    all_pairs = prunable_parameters(net)
    resolve_targets(net, enc_pairs)  # clear errors (devices, dtypes) before anything changes

    generator = torch.Generator().manual_seed(config.seed)
    aug_gen = torch.Generator().manual_seed(config.seed + 1)
    cons_seed = config.seed + 2
    image = x_train.ndim == 4
    if not image and x_train.ndim != 2:
        raise DataError(f"train inputs must be images (N, C, H, W) or rows (N, F), got {tuple(x_train.shape)}.")
    views = config.views
    if views is None and config.ilo_weight > 0:
        if image:  # jitter clamps to the pixel range actually present (works for [0, 1] and standardised images)
            views = VisionViews(value_range=(float(x_train.min()), float(x_train.max())), generator=aug_gen)
        else:
            views = Scarf(x_train, config.scarf_corruption, aug_gen)
    standard = config.standard_augment
    if standard is None and image:
        standard = StandardAugment(generator=aug_gen)
    cons_transform = config.consistency_transform
    cons_gen = torch.Generator().manual_seed(cons_seed)
    if cons_transform is None:
        cons_transform = StandardAugment(generator=cons_gen) if image else Scarf(x_train, config.scarf_corruption,
                                                                                  cons_gen)

    def evaluate(name: str, loss: float | None, seconds: float) -> StageResult:
        cons_gen.manual_seed(cons_seed)  # the same transformed inputs at every stage
        acc = accuracy(net, x_test, y_test, config.eval_batch_size)
        batches = [x_test[i:i + config.eval_batch_size] for i in range(0, x_test.shape[0], config.eval_batch_size)]
        cons = consistency(net, batches, cons_transform)
        result = StageResult(name, acc, cons, loss, seconds)
        logger.info("IUNET %s: test accuracy %.4f, consistency %.4f (%.1f s)", name, acc, cons, seconds)
        return result

    stages: list[StageResult] = []
    t = time.perf_counter()
    initial_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    theta_dagger = proactive_init_(net, config.kappa, targets=all_pairs)
    stages.append(evaluate("init", None, time.perf_counter() - t))

    t = time.perf_counter()
    loss = _train_ilo(net, head, x_train, y_train, config, views, standard, generator)
    stages.append(evaluate("ilo", loss, time.perf_counter() - t))

    prune_report: PruneReport | None = None
    if config.sparsity > 0:
        t = time.perf_counter()
        prune_report = prune_encoder(net, config.sparsity, head)
        stages.append(evaluate("pruned", None, time.perf_counter() - t))
        t = time.perf_counter()
        rewind_(net, theta_dagger, initial_state if config.rewind_others else None)
        stages.append(evaluate("rewound", None, time.perf_counter() - t))
        t = time.perf_counter()
        losses = finetune(net, (x_train, y_train), epochs=config.finetune_epochs,
                          lr=config.finetune_lr if config.finetune_lr is not None else config.lr,
                          batch_size=config.batch_size, optimizer=config.optimizer,
                          weight_decay=config.weight_decay, augment=standard, generator=generator,
                          progress=config.progress)
        stages.append(evaluate("finetuned", losses[-1] if losses else None, time.perf_counter() - t))

    enc_zero, enc_total = _masked_fraction(enc_pairs)
    all_zero, all_total = _masked_fraction(all_pairs)
    return IUNETReport(
        stages=stages,
        encoder_sparsity=enc_zero / enc_total,
        total_sparsity=all_zero / all_total,
        n_encoder=enc_total,
        n_pruned=enc_zero,
        prune_report=prune_report,
        config={**config.to_dict(), "head": head_name},
        total_seconds=time.perf_counter() - start,
        model=net,
    )
