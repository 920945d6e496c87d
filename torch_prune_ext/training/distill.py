"""Label-free training of a pruned student by a frozen teacher (LNPT, stage B).

The loss on a batch ``x`` (labels, if the loader carries any, are never read) is::

    L = kd_weight * T² * KL(softmax(z_T / T) ‖ softmax(z_S / T)) + feat_weight * D(φ_S(x), φ_T(x))

with ``kd_weight = 1 - alpha`` and ``feat_weight = alpha`` by default (``T = 4``,
``alpha = 0.5``). ``φ`` are the penultimate features (the input of the final ``Linear``,
captured by a forward hook) or the output of a chosen ``feature_layer``; ``D`` is one of
:data:`DISTANCES`. The teacher runs in eval mode under ``no_grad`` on the same
(augmented) batch every step. The masks of a model pruned with ``torch.nn.utils.prune``
stay fixed: after every optimizer step the pruned entries of ``weight_orig`` are set
back to exactly zero, so weight decay, momentum or Adam never revive them, and
``prune.remove`` leaves exact zeros.

Diagnostics from the LNPT paper: :func:`learning_gap` (the feature distance between
student and teacher) and :func:`weight_distance` (the distance of the weights from their
initial values), recorded per epoch by :meth:`DistillationTrainer.fit`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..core.checkpoint import zero_pruned_entries_
from ..core.functional import eval_mode
from ..core.targets import final_linear
from ..errors import (
    InvalidOptionError,
    MissingDataError,
    MissingDependencyError,
    TargetError,
)

logger = logging.getLogger("torch_prune_ext")

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: A feature layer: ``None`` (the input of the final Linear), a submodule name, or a
#: callable ``fn(model) -> nn.Module`` choosing the module whose output is used.
FeatureLayer = str | Callable[[nn.Module], nn.Module] | None


# --------------------------------------------------------------------------- distances
def _flat(a: torch.Tensor) -> torch.Tensor:
    return a.reshape(a.shape[0], -1)


def mse_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all entries."""
    return F.mse_loss(_flat(a), _flat(b))


def l2_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the Euclidean norm of the per-example difference."""
    return torch.linalg.vector_norm(_flat(a) - _flat(b), dim=1).mean()


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``1 - cos(a_i, b_i)``."""
    return (1.0 - F.cosine_similarity(_flat(a), _flat(b), dim=1, eps=1e-8)).mean()


def l1_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference over all entries."""
    return F.l1_loss(_flat(a), _flat(b))


#: The feature distances D by name.
DISTANCES: dict[str, Distance] = {
    "mse": mse_distance,
    "l2": l2_distance,
    "cosine": cosine_distance,
    "l1": l1_distance,
}


def resolve_distance(distance: str | Distance) -> Distance:
    """The distance function for a name of :data:`DISTANCES` or a callable ``D(a, b) -> scalar``.

    Examples:
        >>> d = resolve_distance("l1")
        >>> float(d(torch.zeros(2, 3), torch.ones(2, 3)))
        1.0
    """
    if callable(distance):
        return distance
    if isinstance(distance, str) and distance.lower() in DISTANCES:
        return DISTANCES[distance.lower()]
    raise InvalidOptionError(
        f"Unknown distance {distance!r}; use one of {', '.join(DISTANCES)} or a callable D(a, b) -> scalar."
    )


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0,
            pseudo_labels: str = "soft") -> torch.Tensor:
    """The logit-distillation term, already scaled.

    Args:
        student_logits: ``z_S``, shape ``(N, C)``.
        teacher_logits: ``z_T`` (no gradient is taken through it).
        temperature: ``T`` for ``"soft"``.
        pseudo_labels: ``"soft"``: ``T² · KL(softmax(z_T/T) ‖ softmax(z_S/T))`` (batch mean);
            ``"hard"``: cross-entropy of ``z_S`` on ``argmax z_T``.

    Returns:
        A scalar.

    Examples:
        >>> z = torch.tensor([[1.0, 2.0, 0.5]])
        >>> float(kd_loss(z, z))
        0.0
    """
    teacher_logits = teacher_logits.detach()
    if pseudo_labels == "hard":
        return F.cross_entropy(student_logits, teacher_logits.argmax(dim=1))
    if pseudo_labels != "soft":
        raise InvalidOptionError(f"pseudo_labels must be 'soft' or 'hard', got {pseudo_labels!r}.")
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return temperature ** 2 * F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


# --------------------------------------------------------------------------- features
def _feature_module(model: nn.Module, layer: FeatureLayer) -> tuple[nn.Module, bool]:
    """The module to hook and whether its input (True) or its output (False) is φ."""
    if layer is None:
        return final_linear(model)[1], True
    if isinstance(layer, str):
        modules = dict(model.named_modules())
        if layer not in modules:
            raise InvalidOptionError(
                f"feature_layer={layer!r} is not a submodule of {type(model).__name__}. "
                f"Pass one of its module names, e.g. {', '.join(list(modules)[1:6]) or '(none)'}."
            )
        return modules[layer], False
    if callable(layer):
        module = layer(model)
        if not isinstance(module, nn.Module):
            raise InvalidOptionError(
                f"feature_layer callable must return a submodule of the model, got {type(module).__name__}."
            )
        return module, False
    raise InvalidOptionError(
        f"feature_layer must be None, a submodule name or a callable fn(model) -> module, got {layer!r}."
    )


@contextlib.contextmanager
def capture_features(model: nn.Module, layer: FeatureLayer = None) -> Iterator[dict[str, torch.Tensor]]:
    """Record φ of every forward of ``model`` into the yielded dict (key ``"features"``).

    A forward hook is registered on the feature module and removed on exit, also on
    error. The hook also runs inside :func:`torch.func.functional_call`, so the captured
    tensor is then a function of the substituted weights.

    Args:
        model: the network.
        layer: ``None`` = the input of the final ``Linear``; a submodule name or a callable
            ``fn(model) -> module`` = that module's output. The features are flattened to
            ``(N, -1)``.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> with capture_features(net) as seen:
        ...     _ = net(torch.randn(5, 4))
        >>> tuple(seen["features"].shape), len(net[2]._forward_hooks)
        ((5, 3), 0)
    """
    module, use_input = _feature_module(model, layer)
    store: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        value = inputs[0] if use_input else output
        if not isinstance(value, torch.Tensor):
            raise InvalidOptionError(
                f"The feature layer {type(_module).__name__} produced a {type(value).__name__}, not a tensor. "
                "Pick a feature_layer whose output is a tensor."
            )
        store["features"] = value.reshape(value.shape[0], -1)

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def batch_inputs(batch: Any) -> torch.Tensor:
    """The input ``x`` of a batch that is a tensor or a tuple/list ``(x, ...)``; labels are ignored."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise MissingDataError(
        f"A batch is a {type(batch).__name__}; each batch must be a tensor x or a tuple/list (x, ...)."
    )


def teacher_outputs(teacher: nn.Module, x: torch.Tensor, layer: FeatureLayer = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's logits and features on ``x``: eval mode, ``no_grad``, modes restored.

    Examples:
        >>> t = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).train()
        >>> z, phi = teacher_outputs(t, torch.randn(5, 4))
        >>> tuple(z.shape), tuple(phi.shape), t.training
        ((5, 2), (5, 3), True)
    """
    with eval_mode(teacher), torch.no_grad(), capture_features(teacher, layer) as seen:
        logits = teacher(x)
    if "features" not in seen:
        raise InvalidOptionError("The teacher's feature layer did not run during its forward; check feature_layer.")
    return logits, seen["features"]


def check_feature_shapes(student: torch.Tensor, teacher: torch.Tensor, has_adapter: bool) -> None:
    """Raise a clear error when student and teacher features cannot be compared."""
    if student.shape != teacher.shape:
        hint = ("The adapter's output must have the teacher's feature size." if has_adapter else
                f"Pass adapter=torch.nn.Linear({student.shape[1]}, {teacher.shape[1]}) to map the student's "
                "features into the teacher's space, or pick matching feature layers.")
        raise InvalidOptionError(
            f"Student features {tuple(student.shape)} and teacher features {tuple(teacher.shape)} differ. {hint}"
        )


# --------------------------------------------------------------------------- masks
@torch.no_grad()
def enforce_masks(model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None) -> None:
    """Set the pruned entries to exactly zero, in place.

    For every tensor pruned with ``torch.nn.utils.prune``, ``name_orig`` is multiplied by
    ``name_mask`` (and the plain attribute refreshed), so that ``prune.remove`` keeps the
    zeros. ``masks`` adds explicit masks for parameters that are not pruned by torch,
    keyed by parameter name.

    Examples:
        >>> net = torch.nn.Linear(4, 2)
        >>> _ = torch.nn.utils.prune.l1_unstructured(net, "weight", amount=0.5)
        >>> enforce_masks(net)
        >>> int((net.weight_orig == 0).sum())
        4
    """
    zero_pruned_entries_(model)
    if masks:
        params = dict(model.named_parameters())
        for name, mask in masks.items():
            if name not in params:
                raise TargetError(f"masks names {name!r}, which is not a parameter of the model.")
            params[name].mul_(mask.to(params[name]))


# --------------------------------------------------------------------------- diagnostics
def learning_gap(
    student: nn.Module,
    teacher: nn.Module,
    loader: Iterable[Any],
    *,
    distance: str | Distance = "mse",
    feature_layer: FeatureLayer = None,
    teacher_feature_layer: FeatureLayer = None,
    adapter: nn.Module | None = None,
    max_batches: int | None = None,
) -> float:
    """The LNPT learning gap: mean over batches of D(φ_S(x), φ_T(x)), both in eval mode.

    Args:
        student: the student (modes restored afterwards, nothing else changed).
        teacher: the teacher.
        loader: batches ``x`` or ``(x, y, ...)`` (labels are ignored), or one tensor batch.
        distance: a name of :data:`DISTANCES` or a callable.
        feature_layer: the student's φ (default: input of its final Linear).
        teacher_feature_layer: the teacher's φ (default: same rule as ``feature_layer``).
        adapter: maps student features into the teacher's space.
        max_batches: stop after this many batches.

    Returns:
        The gap as a float.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> learning_gap(net, net, torch.randn(6, 4))
        0.0
    """
    dist = resolve_distance(distance)
    t_layer = feature_layer if teacher_feature_layer is None else teacher_feature_layer
    batches = [loader] if isinstance(loader, torch.Tensor) else loader
    total, count = 0.0, 0
    with eval_mode(student, adapter), torch.no_grad():
        for batch in batches:
            if max_batches is not None and count >= max_batches:
                break
            x = batch_inputs(batch)
            _, phi_t = teacher_outputs(teacher, x, t_layer)
            with capture_features(student, feature_layer) as seen:
                student(x)
            phi_s = seen["features"] if adapter is None else adapter(seen["features"])
            check_feature_shapes(phi_s, phi_t, adapter is not None)
            total += float(dist(phi_s, phi_t))
            count += 1
    if count == 0:
        raise MissingDataError("learning_gap got no batch; pass a non-empty loader.")
    return total / count


def weight_distance(model: nn.Module, init_state: Mapping[str, torch.Tensor], *, relative: bool = False) -> float:
    """‖θ − θ₀‖₂ over every parameter that ``init_state`` holds (effective weights for pruned ones).

    Args:
        model: the network now.
        init_state: a ``state_dict()`` snapshot (cloned) taken at initialisation.
        relative: divide by ‖θ₀‖₂.

    Returns:
        The distance as a float.

    Examples:
        >>> net = torch.nn.Linear(2, 1, bias=False)
        >>> init = {k: v.clone() for k, v in net.state_dict().items()}
        >>> with torch.no_grad():
        ...     _ = net.weight.add_(torch.tensor([[3.0, 4.0]]))
        >>> round(weight_distance(net, init), 4)
        5.0
    """
    buffers = dict(model.named_buffers())
    squared, base = 0.0, 0.0
    for name, param in model.named_parameters():
        if name not in init_state:
            continue
        now, then = param.detach(), init_state[name].to(param.device, param.dtype)
        if name.endswith("_orig") and name[:-5] + "_mask" in buffers:
            mask = buffers[name[:-5] + "_mask"].to(param.dtype)
            now, then = now * mask, then * mask
        squared += float((now - then).pow(2).sum())
        base += float(then.pow(2).sum())
    distance = math.sqrt(squared)
    return distance / math.sqrt(base) if relative and base > 0 else distance


def accuracy(model: nn.Module, loader: Iterable[Any]) -> float:
    """Top-1 accuracy on labelled ``(x, y)`` batches (evaluation only), eval mode, modes restored."""
    correct, total = 0, 0
    with eval_mode(model), torch.no_grad():
        for batch in loader:
            if not (isinstance(batch, (tuple, list)) and len(batch) > 1):
                raise MissingDataError("accuracy needs labelled (x, y) batches; pass a labelled eval_loader.")
            x, y = batch[0], batch[1]
            correct += int((model(x).argmax(dim=1) == y.to(x.device)).sum())
            total += int(y.numel())
    return correct / max(total, 1)


# --------------------------------------------------------------------------- trainer
class DistillationTrainer:
    """Stage B of LNPT: train a (pruned) student from a frozen teacher, without labels.

    Args:
        student: the student, possibly pruned with ``torch.nn.utils.prune``.
        teacher: the trained teacher (never updated; its modes are restored).
        optimizer: any ``torch.optim`` optimizer over the student's (and adapter's) parameters.
        scheduler: optional LR scheduler, stepped once per epoch (``scheduler.step()``).
        temperature: ``T`` of the soft pseudo-labels (default 4).
        alpha: feature weight; the loss is ``(1 - alpha)·KD + alpha·D`` (default 0.5).
        kd_weight: overrides ``1 - alpha``.
        feat_weight: overrides ``alpha``.
        distance: feature distance D, a name of :data:`DISTANCES` or a callable.
        pseudo_labels: ``"soft"`` (temperature KL) or ``"hard"`` (cross-entropy on the teacher's argmax).
        feature_layer: the student's φ (default: the input of its final Linear).
        teacher_feature_layer: the teacher's φ (default: same rule as ``feature_layer``).
        adapter: optional learnable map of φ_S into the teacher's feature space; put its
            parameters in ``optimizer``.
        transform: optional augmentation ``x -> x'`` applied once per batch; the teacher
            and the student both see ``x'``.
        masks: explicit 0/1 masks by parameter name for weights not pruned by torch.
        progress: show tqdm bars.

    Examples:
        >>> torch.manual_seed(0) and None
        >>> teacher = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> student = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> _ = torch.nn.utils.prune.random_unstructured(student[0], "weight", amount=0.5)
        >>> trainer = DistillationTrainer(student, teacher, torch.optim.SGD(student.parameters(), lr=0.1,
        ...                               momentum=0.9, weight_decay=5e-4), progress=False)
        >>> history = trainer.fit([torch.randn(16, 4) for _ in range(3)], epochs=2)
        >>> len(history), int((student[0].weight_orig[student[0].weight_mask == 0] != 0).sum())
        (2, 0)
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        scheduler: Any = None,
        temperature: float = 4.0,
        alpha: float = 0.5,
        kd_weight: float | None = None,
        feat_weight: float | None = None,
        distance: str | Distance = "mse",
        pseudo_labels: str = "soft",
        feature_layer: FeatureLayer = None,
        teacher_feature_layer: FeatureLayer = None,
        adapter: nn.Module | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        masks: Mapping[str, torch.Tensor] | None = None,
        progress: bool = True,
    ) -> None:
        if not isinstance(teacher, nn.Module):
            raise MissingDataError("DistillationTrainer needs the teacher: pass teacher=<trained nn.Module>.")
        if not temperature > 0:
            raise InvalidOptionError(f"temperature must be > 0, got {temperature!r}.")
        if not 0.0 <= alpha <= 1.0:
            raise InvalidOptionError(f"alpha must be in [0, 1], got {alpha!r}.")
        if pseudo_labels not in ("soft", "hard"):
            raise InvalidOptionError(f"pseudo_labels must be 'soft' or 'hard', got {pseudo_labels!r}.")
        self.student = student
        self.teacher = teacher
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.temperature = float(temperature)
        self.kd_weight = 1.0 - alpha if kd_weight is None else float(kd_weight)
        self.feat_weight = alpha if feat_weight is None else float(feat_weight)
        self.distance = resolve_distance(distance)
        self.pseudo_labels = pseudo_labels
        self.feature_layer = feature_layer
        self.teacher_feature_layer = feature_layer if teacher_feature_layer is None else teacher_feature_layer
        self.adapter = adapter
        self.transform = transform
        self.masks = dict(masks) if masks else None
        self.progress = progress
        if adapter is not None:
            in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
            if any(id(p) not in in_optimizer for p in adapter.parameters()):
                logger.warning("The adapter's parameters are not in the optimizer; the adapter will not be trained.")

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The distillation loss on one (already augmented) batch, with its parts.

        Returns:
            The scalar loss (with a graph to the student) and ``{"kd": ..., "feat": ...}``.
        """
        z_t, phi_t = teacher_outputs(self.teacher, x, self.teacher_feature_layer)
        with capture_features(self.student, self.feature_layer) as seen:
            z_s = self.student(x)
        kd = kd_loss(z_s, z_t, self.temperature, self.pseudo_labels)
        total = self.kd_weight * kd
        feat = torch.zeros((), device=x.device)
        if self.feat_weight != 0.0:
            phi_s = seen["features"] if self.adapter is None else self.adapter(seen["features"])
            check_feature_shapes(phi_s, phi_t, self.adapter is not None)
            feat = self.distance(phi_s, phi_t)
            total = total + self.feat_weight * feat
        return total, {"kd": float(kd.detach()), "feat": float(feat.detach())}

    def step(self, batch: Any) -> dict[str, float]:
        """One optimizer step on a batch (labels ignored); the masks are re-applied after it."""
        x = batch_inputs(batch)
        if self.transform is not None:
            x = self.transform(x)
        self.student.train()
        if self.adapter is not None:
            self.adapter.train()
        self.optimizer.zero_grad(set_to_none=True)
        total, parts = self.loss(x)
        if not torch.isfinite(total):
            raise FloatingPointError(
                f"The distillation loss is {float(total)}; lower the learning rate or check the inputs."
            )
        total.backward()
        self.optimizer.step()
        enforce_masks(self.student, self.masks)
        return {"loss": float(total.detach()), **parts}

    def fit(
        self,
        loader: Iterable[Any],
        epochs: int = 1,
        *,
        eval_loader: Iterable[Any] | None = None,
        gap_loader: Iterable[Any] | None = None,
        init_state: Mapping[str, torch.Tensor] | None = None,
        diagnostics: bool = True,
    ) -> list[dict[str, float]]:
        """Train for ``epochs`` over ``loader`` (labels never read).

        Args:
            loader: batches ``x`` or ``(x, y)``; a ``DataLoader`` or a list.
            epochs: passes over ``loader``.
            eval_loader: labelled ``(x, y)`` batches for the per-epoch test accuracy
                (evaluation only; training never reads labels).
            gap_loader: batches for the per-epoch learning gap (default: ``eval_loader``,
                else ``loader``).
            init_state: the weights the distance is measured from (default: the student's
                state at the start of ``fit``).
            diagnostics: record ``learning_gap`` and ``weight_distance`` every epoch.

        Returns:
            The history: one dict per epoch with ``epoch``, ``loss``, ``kd``, ``feat``,
            ``lr``, ``seconds`` and, with diagnostics, ``learning_gap``,
            ``weight_distance`` and (with ``eval_loader``) ``accuracy``.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise InvalidOptionError(f"epochs must be an int >= 0, got {epochs!r}.")
        if init_state is None:
            init_state = {k: v.detach().clone() for k, v in self.student.state_dict().items()}
        enforce_masks(self.student, self.masks)
        teacher_modes = [(m, m.training) for m in self.teacher.modules()]
        history: list[dict[str, float]] = []
        try:
            for epoch in range(1, epochs + 1):
                start = time.perf_counter()
                sums: dict[str, float] = {"loss": 0.0, "kd": 0.0, "feat": 0.0}
                count = 0
                bar = tqdm(loader, desc=f"distill epoch {epoch}/{epochs}", leave=False, disable=not self.progress)
                for batch in bar:
                    parts = self.step(batch)
                    for key in sums:
                        sums[key] += parts[key]
                    count += 1
                    bar.set_postfix(loss=f"{parts['loss']:.4f}")
                if count == 0:
                    raise MissingDataError("The training loader yielded no batch.")
                record: dict[str, float] = {"epoch": epoch, **{k: v / count for k, v in sums.items()},
                                            "lr": float(self.optimizer.param_groups[0]["lr"])}
                if self.scheduler is not None:
                    self.scheduler.step()
                if diagnostics:
                    record["learning_gap"] = learning_gap(
                        self.student, self.teacher, gap_loader or eval_loader or loader, distance=self.distance,
                        feature_layer=self.feature_layer, teacher_feature_layer=self.teacher_feature_layer,
                        adapter=self.adapter)
                    record["weight_distance"] = weight_distance(self.student, init_state)
                    if eval_loader is not None:
                        record["accuracy"] = accuracy(self.student, eval_loader)
                record["seconds"] = time.perf_counter() - start
                logger.info("distill epoch %d: %s", epoch,
                            ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"))
                history.append(record)
        finally:
            for module, training in teacher_modes:
                module.training = training
        return history


def distill(
    student: nn.Module,
    teacher: nn.Module,
    loader: Iterable[Any],
    epochs: int = 1,
    *,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    cosine: bool = True,
    eval_loader: Iterable[Any] | None = None,
    gap_loader: Iterable[Any] | None = None,
    **trainer_options: Any,
) -> list[dict[str, float]]:
    """Train ``student`` from ``teacher`` with the LNPT reference recipe (SGD, momentum, cosine LR).

    Args:
        student: the (pruned) student.
        teacher: the frozen teacher.
        loader: unlabelled (or labelled; labels ignored) training batches.
        epochs: number of epochs.
        lr: initial learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        cosine: anneal the learning rate to 0 over ``epochs`` (per epoch).
        eval_loader: labelled batches for the per-epoch accuracy (evaluation only).
        gap_loader: batches for the per-epoch learning gap (see :meth:`DistillationTrainer.fit`).
        **trainer_options: further :class:`DistillationTrainer` options (``alpha``, ``temperature``,
            ``adapter``, ``transform``, ``progress``, ...).

    Returns:
        The history of :meth:`DistillationTrainer.fit`.

    Examples:
        >>> teacher = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> student = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> h = distill(student, teacher, [torch.randn(8, 4)], epochs=1, progress=False)
        >>> sorted(h[0])[:3]
        ['epoch', 'feat', 'kd']
    """
    adapter = trainer_options.get("adapter")
    params = list(student.parameters()) + (list(adapter.parameters()) if adapter is not None else [])
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(epochs, 1)) if cosine else None
    trainer = DistillationTrainer(student, teacher, optimizer, scheduler=scheduler, **trainer_options)
    return trainer.fit(loader, epochs, eval_loader=eval_loader, gap_loader=gap_loader)


def plot_history(histories: Mapping[str, Sequence[Mapping[str, float]]] | Sequence[Mapping[str, float]],
                 path: str) -> None:
    """Plot learning gap, weight distance and accuracy per epoch (one line per run) into ``path``.

    Args:
        histories: one history, or ``{label: history}``.
        path: the image file to write (``.png``).

    Raises:
        MissingDependencyError: matplotlib is not installed (``pip install matplotlib``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise MissingDependencyError(
            "plot_history needs matplotlib, which is not installed. Install it with `pip install matplotlib`, "
            "or write the history to CSV instead."
        ) from error
    runs = dict(histories) if isinstance(histories, Mapping) else {"run": histories}
    keys = [k for k in ("learning_gap", "weight_distance", "accuracy")
            if any(k in rec for hist in runs.values() for rec in hist)]
    if not keys:
        raise InvalidOptionError("The histories hold no learning_gap, weight_distance or accuracy to plot.")
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for label, hist in runs.items():
            points = [(rec["epoch"], rec[key]) for rec in hist if key in rec]
            if points:
                ax.plot(*zip(*points), marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_title(key.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
