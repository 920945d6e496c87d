"""The IUNET pipeline (spec steps 1-6): κ-init, ILO training, encoder pruning, rewind, finetune.

:func:`run_iunet` runs the whole thing and returns an :class:`IUNETReport`; the steps are
also public (:func:`prune_encoder`, :func:`rewind_`, :func:`reset_batchnorm_`,
:func:`finetune`, :func:`consistency`) so they can be used on their own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..core.report import PruneReport
from ..data.augment import Transform
from ..core.targets import prunable_parameters, resolve_targets
from ..errors import DataError, InvalidOptionError, InvalidTypeError
from ..training.batches import model_device
from ..training.loop import train_epochs
from .augment import Scarf, StandardAugment, VisionViews
from .init import proactive_init_
from .metrics import accuracy, consistency
from .objective import ProjectionHead, find_head, invariance_loss
from .report import IUNETConfig, IUNETReport, StageResult
from .stages import as_tensors, encoder_targets, finetune, make_optimizer, prune_encoder, reset_batchnorm_, rewind_

logger = logging.getLogger("torch_prune_ext")

# The steps, the config and the report live in .stages, .metrics and .report; they stay
# importable from this module.
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
    device = model_device(model)
    projection: nn.Module | None = None
    params = list(model.parameters())
    if config.projection_dim is not None and config.ilo_weight > 0:
        projection = ProjectionHead(head.in_features, config.projection_hidden, config.projection_dim).to(device)
        params += list(projection.parameters())
    opt = make_optimizer(params, config.optimizer, config.lr, config.weight_decay)
    weight = config.ilo_weight if views is not None else 0.0

    def loss_fn(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        xb, yb = xb.to(device), yb.to(device)
        x_std = standard(xb) if standard is not None else xb
        if config.ilo_weight > 0 and views is not None:
            v1, v2 = views(xb), views(xb)
        else:
            v1 = v2 = xb
        loss, _ = invariance_loss(model, head, x_std, yb, v1, v2, weight=weight, temperature=config.temperature,
                                  projection=projection)
        return loss

    # NT-Xent needs a negative: a last batch of one is skipped (min_batch=2)
    losses = train_epochs(model, opt, x, y, loss_fn, epochs=config.epochs, batch_size=config.batch_size,
                          generator=generator, keep_masks=False, min_batch=2, desc="ILO", progress=config.progress)
    return losses[-1] if losses else None


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
    x_train, y_train = as_tensors(train_data, "train_data")
    x_test, y_test = as_tensors(test_data, "test_data")
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
