"""Distillation losses: the feature distances D and the logit-distillation term (KD).

Examples:
    >>> import torch
    >>> float(DISTANCES["mse"](torch.zeros(2, 3), torch.ones(2, 3)))
    1.0
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import InvalidOptionError

__all__ = ["DISTANCES", "Distance", "cosine_distance", "kd_loss", "l1_distance", "l2_distance", "mse_distance",
           "resolve_distance"]

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
