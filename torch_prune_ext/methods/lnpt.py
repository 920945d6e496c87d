"""LNPT (Xiao et al., 2024): label-free pruning by the teacher-student learning gap (stage A).

A trained, frozen teacher guides the pruning of a student on *unlabelled* data. With
φ the penultimate features (the input of the final ``Linear``, captured by a forward
hook; or ``feature_layer=``), W = m ⊙ θ the student's effective weights and D a feature
distance (:data:`~torch_prune_ext.training.distill.DISTANCES`)::

    ℓ = mean_b D(φ_S(x_b; m ⊙ θ), φ_T(x_b))        score = | θ ⊙ ∂ℓ/∂θ |

ranked globally, like Iterative SNIP on the learning gap. The teacher runs in eval mode
under ``no_grad``; batches may be bare tensors, and labels, if present, are ignored.

ℓ gives the final classifier no gradient (it sits after φ), so by default
(``classifier="dense"``) the classifier is *not a target*: when no targets are given,
LNPT prunes :func:`lnpt_targets` = ``prunable_parameters(model)`` without the final
Linear. With ``classifier="kd"`` the classifier is a target and is scored with the
stage-B distillation loss of :mod:`torch_prune_ext.training.distill` instead.

With ``torch.nn.utils.prune.global_unstructured`` pass ``lnpt_targets(model)`` as the
parameter list (it is the default, so ``targets=`` is not needed); a list that contains
the classifier needs ``classifier="kd"`` and the same list as ``targets=``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.config import MethodConfig, module_or_none, one_of, option, positive_float, unit_interval
from ..core.functional import eval_mode, preserved_state
from ..core.scoring import ScoringProblem
from ..core.targets import final_linear, prunable_parameters
from ..errors import InvalidOptionError, MissingDataError, TargetError
from ..training.distill import (
    DISTANCES,
    Distance,
    FeatureLayer,
    capture_features,
    check_feature_shapes,
    kd_loss,
    resolve_distance,
    teacher_outputs,
)
from .base import PruningMethod
from .saliency import MODULE_MODES, set_mode

CLASSIFIER_MODES = ("dense", "kd")


def _distance(name: str, value: object) -> None:
    """A check: a name of :data:`DISTANCES` or a callable (:func:`resolve_distance` raises otherwise)."""
    resolve_distance(value)


@dataclass(frozen=True)
class LNPTConfig(MethodConfig):
    """Hyperparameters of :class:`LNPT`.

    Attributes:
        teacher: the trained teacher network (required; never modified: eval mode,
            ``no_grad``, its modes restored).
        distance: feature distance D: ``"mse"`` (default), ``"l2"`` (mean per-example
            Euclidean norm), ``"cosine"`` (mean ``1 - cos``), ``"l1"``, or a callable
            ``D(phi_s, phi_t) -> scalar``.
        feature_layer: the student's φ: ``None`` = the input of its final ``Linear``;
            a submodule name or a callable ``fn(model) -> module`` = that module's output
            (flattened). Targets after a custom feature layer get no gradient from ℓ:
            leave them out of the targets.
        teacher_feature_layer: the teacher's φ (default: the same rule as ``feature_layer``).
        classifier: ``"dense"`` (default): the final Linear is not a target (ℓ gives it
            no gradient); ``"kd"``: it is a target, scored ``|θ ⊙ ∂L_B/∂θ|`` with the
            stage-B loss ``L_B = (1 - alpha)·T²·KL + alpha·D``.
        adapter: optional module mapping the student's features into the teacher's
            feature space (a student of another width); used as given, in eval mode.
        mode: the student's module mode while scoring: ``"train"`` (BatchNorm batch
            statistics; running statistics are never written) or ``"eval"``.
        temperature: ``T`` of the stage-B loss (``classifier="kd"`` only).
        alpha: feature weight of the stage-B loss (``classifier="kd"`` only).
        pseudo_labels: ``"soft"`` or ``"hard"`` pseudo-labels of the stage-B loss.
    """

    teacher: nn.Module | None = option(None, help="the trained teacher network (required)", check=module_or_none)
    distance: str | Distance = option("mse", help="feature distance D (a name, or a callable D(a, b) -> scalar)",
                                      choices=tuple(DISTANCES), check=_distance)
    feature_layer: FeatureLayer = option(None, help="the student's features: a submodule name (default: the input "
                                         "of the final Linear)")
    teacher_feature_layer: FeatureLayer = option(None, help="the teacher's features (default: as feature_layer)")
    classifier: str = option("dense", help="dense: the final Linear is not a target; kd: scored by the KD loss",
                             choices=CLASSIFIER_MODES)
    adapter: nn.Module | None = option(None, help="module mapping student features into the teacher's space",
                                       check=module_or_none)
    mode: str = option("train", help="the student's module mode while scoring", choices=MODULE_MODES)
    temperature: float = option(4.0, help="T of the stage-B loss (classifier='kd')", check=positive_float)
    alpha: float = option(0.5, help="feature weight of the stage-B loss (classifier='kd')", check=unit_interval)
    pseudo_labels: str = option("soft", help="pseudo-labels of the stage-B loss (classifier='kd')",
                                choices=("soft", "hard"))


def lnpt_targets(model: nn.Module, classifier: str = "dense") -> list[tuple[nn.Module, str]]:
    """LNPT's default targets: ``prunable_parameters(model)`` without the final Linear (``"dense"``).

    Args:
        model: the student.
        classifier: ``"dense"`` leaves the final ``Linear`` out; ``"kd"`` keeps every target.

    Returns:
        ``(module, "weight")`` pairs, the parameter list to give ``global_unstructured``.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> [m is net[0] for m, _ in lnpt_targets(net)]
        [True]
        >>> len(lnpt_targets(net, classifier="kd"))
        2
    """
    one_of(*CLASSIFIER_MODES)("classifier", classifier)
    pairs = prunable_parameters(model)
    head = _head(model)
    if classifier == "kd" or head is None:
        return pairs
    kept = [(m, n) for m, n in pairs if m is not head]
    if not kept:
        raise TargetError(
            f"{type(model).__name__} has nothing to prune besides its classifier. Pass classifier='kd' to prune "
            "the classifier with the distillation loss, or targets=[...]."
        )
    return kept


def _head(model: nn.Module) -> nn.Module | None:
    """The final ``Linear`` (the classifier), or ``None`` when the model has none."""
    try:
        return final_linear(model)[1]
    except TargetError:
        return None


class LNPT(PruningMethod):
    """LNPT stage A: ``score = |θ ⊙ ∂ℓ/∂θ|``, ℓ the teacher-student feature gap, no labels.

    Options are those of :class:`LNPTConfig` (``teacher=`` is required). One round by
    default (``rounds > 1`` re-scores with the current masks). The default targets are
    :func:`lnpt_targets` (the classifier stays dense); see the module docstring for
    ``torch.nn.utils.prune.global_unstructured``.

    Examples:
        >>> import torch_prune_ext as tpe
        >>> torch.manual_seed(0) and None
        >>> teacher = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
        >>> student = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
        >>> report = tpe.global_prune(student, LNPT, 0.5, torch.randn(16, 8), teacher=teacher)
        >>> int((student[0].weight == 0).sum()), hasattr(student[2], "weight_mask")
        (24, False)
    """

    name = "lnpt"
    Config = LNPTConfig
    needs_data = True
    needs_labels = False
    summary = "abs(theta * d gap/d theta), teacher-student feature gap, no labels"

    @classmethod
    def default_targets(cls, model: nn.Module, config: LNPTConfig) -> list[tuple[nn.Module, str]]:
        """:func:`lnpt_targets`: every Conv/Linear weight but the classifier's (``classifier="dense"``)."""
        return lnpt_targets(model, config.classifier)

    @classmethod
    def check_problem(cls, problem: ScoringProblem, config: LNPTConfig) -> None:
        """A teacher is required, and the classifier is no target under ``classifier="dense"``.

        Raises:
            MissingDataError: no ``teacher=``.
            TargetError: the targets contain the classifier with ``classifier="dense"``
                (its score would be 0 and it would be pruned first).
        """
        if config.teacher is None:
            raise MissingDataError(
                "lnpt needs a trained teacher network: pass teacher=<nn.Module> (LNPT prunes the student by "
                "the gap between its features and the teacher's)."
            )
        head = _head(problem.model)
        if config.classifier == "dense" and head is not None and any(t.module is head for t in problem.targets):
            head_name = next(t.module_name for t in problem.targets if t.module is head)
            raise TargetError(
                f"The classifier {head_name or type(head).__name__} is among LNPT's targets, but the feature "
                "gap gives it no gradient (it would score 0 and be pruned first). Leave it out: use "
                "tpe.lnpt_targets(model) as the parameter list (global_unstructured) or as targets=, "
                "or pass classifier='kd' to score it with the distillation loss."
            )

    @classmethod
    def score(cls, problem: ScoringProblem, config: LNPTConfig) -> list[torch.Tensor]:
        distance = resolve_distance(config.distance)
        t_layer = config.feature_layer if config.teacher_feature_layer is None else config.teacher_feature_layer
        fm = problem.functional()
        set_mode(problem.model, config.mode)
        weights = [w.clone().requires_grad_(True) for w in problem.weights()]
        masks = problem.masks
        head = _head(problem.model) if config.classifier == "kd" else None
        kd_index = [i for i, t in enumerate(problem.targets) if t.module is head]
        gap_index = [i for i in range(len(weights)) if i not in kd_index]
        totals = [torch.zeros_like(w) for w in weights]
        n_batches = 0
        adapter = config.adapter
        with preserved_state(config.teacher), eval_mode(adapter):
            for x, _labels_ignored in problem.data:
                z_t, phi_t = teacher_outputs(config.teacher, x, t_layer)
                with capture_features(problem.model, config.feature_layer) as seen:
                    z_s = fm(x, weights, masks)
                if "features" not in seen:
                    raise InvalidOptionError("The student's feature layer did not run; check feature_layer.")
                phi_s = seen["features"] if adapter is None else adapter(seen["features"])
                check_feature_shapes(phi_s, phi_t, adapter is not None)
                gap = distance(phi_s, phi_t)
                leaves = [weights[i] for i in gap_index]
                grads = torch.autograd.grad(gap, leaves, retain_graph=bool(kd_index), allow_unused=True)
                for i, g in zip(gap_index, grads):
                    if g is not None:
                        totals[i].add_(g)
                if kd_index:
                    stage_b = (1.0 - config.alpha) * kd_loss(z_s, z_t, config.temperature, config.pseudo_labels) \
                        + config.alpha * gap
                    kd_grads = torch.autograd.grad(stage_b, [weights[i] for i in kd_index], allow_unused=True)
                    for i, g in zip(kd_index, kd_grads):
                        if g is not None:
                            totals[i].add_(g)
                n_batches += 1
        count = torch.tensor([float(n_batches)], dtype=totals[0].dtype, device=totals[0].device)
        problem.all_reduce_([*totals, count])
        return [(w.detach() * g / count).abs() for w, g in zip(weights, totals)]


__all__ = ["LNPT", "LNPTConfig", "lnpt_targets"]
