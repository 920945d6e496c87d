"""One training recipe for every pruned network: plain minibatch SGD, seeded data order.

:func:`train_model` trains a model (pruned with ``torch.nn.utils.prune`` or dense) with
cross-entropy and :class:`torch.optim.SGD`; the learning rate follows the recipe's
schedule per step. The data order (and the augmentation, when on) comes from a private
generator seeded with ``seed``, so the same model, data, recipe and seed give the same
weights (on the same device and thread count). Pruned entries stay exactly zero: the prune
forward hook multiplies by the mask, and after every step the pruned entries of
``weight_orig`` are set back to zero (so weight decay and momentum never revive them and
``prune.remove`` leaves exact zeros).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..data.augment import CifarTrainAugment, Transform, normalize
from ..errors import InvalidOptionError
from ..training.batches import model_device
from ..training.loop import train_epochs
from ..training.metrics import tensor_accuracy

logger = logging.getLogger("torch_prune_ext")

__all__ = ["PRECISIONS", "SCHEDULES", "TrainRecipe", "TrainResult", "evaluate_accuracy", "make_scheduler", "train_model"]

#: Learning-rate schedules a :class:`TrainRecipe` accepts.
SCHEDULES = ("cosine", "onecycle", "constant")

#: Compute precisions of the training forward pass: float32, or bfloat16 autocast.
PRECISIONS = ("fp32", "bf16")


def is_plain_int(value: object) -> bool:
    """Whether ``value`` is an int and not a bool (the validation rule of the evaluation configs)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


@dataclass(frozen=True)
class TrainRecipe:
    """How every network of a comparison is trained (the same recipe for every method).

    Attributes:
        epochs: passes over the training set (0 trains nothing: accuracy at initialisation).
        batch_size: examples per SGD step (the last, smaller batch of an epoch is kept).
        lr: peak learning rate of SGD.
        momentum: SGD momentum (0 for none).
        weight_decay: L2 weight decay of SGD (applied to every parameter).
        schedule: per-step learning-rate schedule: ``"cosine"`` (from ``lr`` down to 0 over
            all steps), ``"onecycle"`` (:class:`torch.optim.lr_scheduler.OneCycleLR`: warm-up
            over the first 30% of the steps to ``lr``, then cosine annealing) or ``"constant"``.
        augment: random crop (zero padding 4, on the unnormalised images) and horizontal flip
            of every training batch, the standard CIFAR augmentation
            (:class:`~torch_prune_ext.data.CifarTrainAugment`); needs image batches ``(N, C, H, W)``.
        channels_last: train image models in the channels-last memory format (faster
            convolutions on GPUs with tensor cores; same math).
        precision: ``"fp32"``, or ``"bf16"`` for the forward pass and loss under
            ``torch.autocast(dtype=torch.bfloat16)`` on the model's device (weights and the
            optimizer stay float32; evaluation is float32).

    The fields added after the first version (``channels_last``, ``precision``) enter the
    recipe hash of a comparison only when set, so results recorded before they existed
    remain valid.

    Raises:
        InvalidOptionError: for a value of the wrong type or outside its range.

    Examples:
        >>> recipe = TrainRecipe(epochs=3, lr=0.05, schedule="onecycle")
        >>> recipe.batch_size, recipe.to_dict()["schedule"]
        (128, 'onecycle')
        >>> TrainRecipe(schedule="step")
        Traceback (most recent call last):
        ...
        torch_prune_ext.errors.InvalidOptionError: Bad TrainRecipe: schedule must be one of cosine, onecycle, constant, got 'step'.
    """

    epochs: int = field(default=5, metadata={"help": "training epochs (0: accuracy at initialisation)"})
    batch_size: int = field(default=128, metadata={"help": "training batch size"})
    lr: float = field(default=0.05, metadata={"help": "peak SGD learning rate"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum (0 for none)"})
    weight_decay: float = field(default=5e-4, metadata={"help": "SGD weight decay"})
    schedule: str = field(default="cosine", metadata={"help": "per-step learning-rate schedule",
                                                      "choices": SCHEDULES})
    augment: bool = field(default=False, metadata={"help": "random crop + flip of the training images (CIFAR)"})
    channels_last: bool = field(default=False, metadata={
        "help": "train in the channels-last memory format (GPU tensor cores)"})
    precision: str = field(default="fp32", metadata={
        "help": "fp32, or bf16 autocast for the training forward pass", "choices": PRECISIONS})

    #: Fields that enter :meth:`identity` only when they differ from their default.
    HASHED_WHEN_SET: ClassVar[tuple[str, ...]] = ("channels_last", "precision")

    def __post_init__(self) -> None:
        problems = []
        if not is_plain_int(self.epochs) or self.epochs < 0:
            problems.append(f"epochs must be an int >= 0, got {self.epochs!r}")
        if not is_plain_int(self.batch_size) or self.batch_size < 1:
            problems.append(f"batch_size must be a positive int, got {self.batch_size!r}")
        if not _is_real(self.lr) or self.lr <= 0:
            problems.append(f"lr must be a finite number > 0, got {self.lr!r}")
        if not _is_real(self.momentum) or not 0.0 <= self.momentum < 1.0:
            problems.append(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not _is_real(self.weight_decay) or self.weight_decay < 0:
            problems.append(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for flag in ("augment", "channels_last"):
            if not isinstance(getattr(self, flag), bool):
                problems.append(f"{flag} must be True or False, got {getattr(self, flag)!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if problems:
            raise InvalidOptionError("Bad TrainRecipe: " + "; ".join(problems) + ".")

    def to_dict(self) -> dict[str, object]:
        """The fields as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, object]:
        """What identifies the recipe in a recipe hash: :meth:`to_dict` without the
        :attr:`HASHED_WHEN_SET` fields that are at their default.

        Examples:
            >>> "precision" in TrainRecipe().identity(), TrainRecipe(precision="bf16").identity()["precision"]
            (False, 'bf16')
        """
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return {name: value for name, value in self.to_dict().items()
                if name not in self.HASHED_WHEN_SET or value != defaults[name]}

    def describe(self) -> str:
        """One line for reports, e.g. ``"5 epochs, batch 128, SGD lr 0.05 momentum 0.9 wd 0.0005, cosine"``.

        Examples:
            >>> TrainRecipe(epochs=2, augment=True).describe()
            '2 epochs, batch 128, SGD lr 0.05 momentum 0.9 wd 0.0005, cosine schedule, crop+flip augmentation'
        """
        text = (f"{self.epochs} epochs, batch {self.batch_size}, SGD lr {self.lr:g} momentum {self.momentum:g} "
                f"wd {self.weight_decay:g}, {self.schedule} schedule")
        text += ", crop+flip augmentation" if self.augment else ", no augmentation"
        text += ", channels_last" if self.channels_last else ""
        return text + (", bf16 autocast" if self.precision == "bf16" else "")


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_model` did.

    Attributes:
        epoch_losses: mean training loss of every epoch.
        steps: optimizer steps taken.
    """

    epoch_losses: tuple[float, ...]
    steps: int

    @property
    def final_loss(self) -> float:
        """The last epoch's mean loss (NaN when nothing was trained)."""
        return self.epoch_losses[-1] if self.epoch_losses else math.nan


def make_scheduler(
    optimizer: torch.optim.Optimizer, recipe: TrainRecipe, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The recipe's per-step learning-rate schedule over ``total_steps`` steps.

    Examples:
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> sched = make_scheduler(opt, TrainRecipe(lr=0.1), total_steps=10)
        >>> for _ in range(5):
        ...     opt.step(); sched.step()
        >>> round(opt.param_groups[0]["lr"], 4)
        0.05
    """
    steps = max(int(total_steps), 1)
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=steps, pct_start=0.3)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)


def _batch_transform(
    recipe: TrainRecipe,
    x: torch.Tensor,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    generator: torch.Generator,
) -> Transform | None:
    """Augmentation and/or normalisation of a training batch, or ``None`` for neither."""
    if recipe.augment:
        if x.ndim != 4:
            raise InvalidOptionError(
                f"augment=True needs image batches (N, C, H, W), got training inputs of shape {tuple(x.shape)}; "
                "use augment=False for flat inputs."
            )
        return CifarTrainAugment(size=None, padding=4, mean=mean, std=std, generator=generator)
    return _normalizer(mean, std)


def _normalizer(mean: Sequence[float] | None, std: Sequence[float] | None) -> Transform | None:
    """Per-channel normalisation of a batch with ``mean`` and ``std``, or ``None`` without them."""
    if mean is not None and std is not None:
        return lambda batch: normalize(batch, mean, std)
    return None


def train_model(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: TrainRecipe,
    *,
    seed: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train ``model`` in place with cross-entropy and SGD, following ``recipe``.

    Every epoch draws a permutation of the examples from a private generator seeded with
    ``seed`` (the same generator drives the augmentation), so the result depends only on
    the arguments. Batches are moved to the model's device. Pruned entries
    (``torch.nn.utils.prune``) stay exactly zero, also in ``weight_orig``.

    Args:
        model: the network (put in train mode; left in eval mode at the end).
        x: training inputs, first dimension the examples (CPU tensors are fine).
        y: integer labels ``(N,)``.
        recipe: the :class:`TrainRecipe`.
        seed: seed of the data order and augmentation.
        mean: per-channel mean to normalise every batch with (after augmentation);
            ``None`` when ``x`` is normalised already.
        std: per-channel standard deviation, with ``mean``.
        progress: show a tqdm bar per epoch (``leave=False``).

    Returns:
        A :class:`TrainResult` with the mean loss of every epoch.

    Raises:
        InvalidOptionError: ``x`` and ``y`` differ in length, or augmentation on flat inputs.

    Examples:
        >>> torch.manual_seed(0) and None
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> _ = torch.nn.utils.prune.random_unstructured(net[0], "weight", amount=0.5)
        >>> x = torch.randn(64, 4); y = (x[:, 0] > 0).long()
        >>> result = train_model(net, x, y, TrainRecipe(epochs=3, batch_size=16, lr=0.1), seed=0)
        >>> len(result.epoch_losses), result.steps, bool((net[0].weight_orig[net[0].weight_mask == 0] == 0).all())
        (3, 12, True)
    """
    if len(x) != len(y):
        raise InvalidOptionError(f"x has {len(x)} examples but y has {len(y)}; pass matching inputs and labels.")
    if (mean is None) != (std is None):
        raise InvalidOptionError("Give both mean and std to normalise the batches, or neither.")
    device = model_device(model)
    generator = torch.Generator().manual_seed(int(seed))
    transform = _batch_transform(recipe, x, mean, std, generator)
    channels_last = recipe.channels_last and x.ndim == 4
    if channels_last:
        model.to(memory_format=torch.channels_last)
    steps_per_epoch = math.ceil(len(x) / recipe.batch_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    scheduler = make_scheduler(optimizer, recipe, recipe.epochs * steps_per_epoch)

    def loss_fn(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if transform is not None:
            xb = transform(xb)
        xb, yb = xb.to(device), yb.to(device)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=recipe.precision == "bf16"):
            return F.cross_entropy(model(xb), yb)

    losses = train_epochs(model, optimizer, x, y, loss_fn, epochs=recipe.epochs, batch_size=recipe.batch_size,
                          generator=generator, scheduler=scheduler, desc="epoch", progress=progress)
    steps = recipe.epochs * steps_per_epoch
    model.eval()
    return TrainResult(tuple(losses), steps)


def evaluate_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 1000,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` in eval mode (modes restored), in [0, 1].

    Args:
        model: the network.
        x: inputs (moved to the model's device batch by batch).
        y: integer labels.
        batch_size: evaluation batch size.
        mean: per-channel mean to normalise with (``None``: ``x`` is normalised already).
        std: per-channel standard deviation, with ``mean``.

    Returns:
        The fraction of examples whose highest logit is the label.

    Examples:
        >>> net = torch.nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = net.weight.copy_(torch.eye(2)); _ = net.bias.zero_()
        >>> evaluate_accuracy(net, torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1, 1]))
        0.6666666666666666
    """
    if len(x) != len(y):
        raise InvalidOptionError(f"x has {len(x)} examples but y has {len(y)}; pass matching inputs and labels.")
    return tensor_accuracy(model, x, y, batch_size, _normalizer(mean, std))
