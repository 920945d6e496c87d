"""The invariance learning objective (IUNET step 3): CE + λ · NT-Xent on the encoder output.

The *encoder* is everything but the final linear layer (the *head*); its output is the
head's input, captured with a forward pre-hook, so any architecture whose classifier is
one ``nn.Linear`` works (for an :class:`~torch_prune_ext.models.MLP` the head is its last
layer).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..core.targets import final_linear
from ..errors import BatchShapeError, InvalidOptionError, TargetError

__all__ = ["ProjectionHead", "encode", "find_head", "invariance_loss", "nt_xent"]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's normalised temperature-scaled cross-entropy over the 2N views.

    With u = the L2-normalised rows of ``cat(z1, z2)`` and s_ij = u_i·u_j / τ, the loss is
    the mean over all 2N views i of ``-log(exp(s_{i,p(i)}) / Σ_{k≠i} exp(s_ik))``, where
    p(i) is the other view of the same sample (positives) and the other 2N − 2 views are
    the negatives.

    Args:
        z1: embeddings of the first views, ``(N, D)``.
        z2: embeddings of the second views, ``(N, D)``; row i pairs with ``z1[i]``.
        temperature: τ > 0.

    Returns:
        A scalar tensor (differentiable).

    Raises:
        ValueError: shapes differ, fewer than 2 samples, or τ ≤ 0.

    Examples:
        >>> z = torch.eye(2)
        >>> round(float(nt_xent(z, z, 0.5)), 4)  # positives identical, negatives orthogonal
        0.2395
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise BatchShapeError(
            f"nt_xent needs two (N, D) embeddings of the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}; "
            "flatten the representations first."
        )
    if z1.shape[0] < 2:
        raise BatchShapeError("nt_xent needs at least 2 samples per batch (the negatives are the other samples).")
    if not temperature > 0:
        raise InvalidOptionError(f"temperature must be > 0, got {temperature!r}.")
    n = z1.shape[0]
    u = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    sim = (u @ u.T) / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=sim.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(sim.device)
    return F.cross_entropy(sim, positives)


def find_head(model: nn.Module, head: str | nn.Module | None = None) -> tuple[str, nn.Linear]:
    """The final linear layer (the decoder that IUNET keeps dense) and its qualified name.

    Args:
        model: the network.
        head: the head's qualified name or the module itself; ``None`` = the last
            ``nn.Linear`` in ``model.named_modules()`` order.

    Returns:
        ``(name, module)``.

    Raises:
        TargetError: no ``nn.Linear`` in the model, or ``head`` is not one of its linears.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> find_head(net)[0]
        '2'
    """
    if head is None:
        return final_linear(model)
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name, m in linears:
        if (isinstance(head, str) and name == head) or m is head:
            return name, m
    raise TargetError(
        f"head={head!r} is not an nn.Linear of the model; use one of {[n for n, _ in linears]}."
    )


def encode(model: nn.Module, x: torch.Tensor, head: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` on ``x`` and return ``(encoder output, logits)``.

    The encoder output is the input of ``head``, flattened to ``(N, D)``.

    Args:
        model: the network.
        x: an input batch.
        head: the final linear module of ``model`` (see :func:`find_head`).

    Returns:
        ``(features, logits)``.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> feats, logits = encode(net, torch.randn(5, 4), net[2])
        >>> tuple(feats.shape), tuple(logits.shape)
        ((5, 3), (5, 2))
    """
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        captured.append(args[0])

    handle = head.register_forward_pre_hook(hook)
    try:
        logits = model(x)
    finally:
        handle.remove()
    if not captured:
        raise TargetError("The head was not called in the forward pass; pass the model's final linear as head.")
    return captured[-1].flatten(1), logits


class ProjectionHead(nn.Sequential):
    """An optional SimCLR projection head ``Linear → ReLU → Linear`` applied before NT-Xent.

    It is trained with the ILO stage only and is never part of the pruned network.

    Args:
        in_features: the encoder's output width.
        hidden: the hidden width.
        out_features: the projection width.

    Examples:
        >>> ProjectionHead(8, 16, 4)(torch.zeros(2, 8)).shape
        torch.Size([2, 4])
    """

    def __init__(self, in_features: int, hidden: int = 128, out_features: int = 64) -> None:
        if min(in_features, hidden, out_features) < 1:
            raise InvalidOptionError(
                f"ProjectionHead sizes must be positive, got {in_features}, {hidden}, {out_features}."
            )
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features))


def invariance_loss(
    model: nn.Module,
    head: nn.Module,
    x_std: torch.Tensor,
    y: torch.Tensor,
    view1: torch.Tensor,
    view2: torch.Tensor,
    *,
    weight: float = 1.0,
    temperature: float = 0.5,
    projection: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """IUNET's ILO: ``CE(f(x_std), y) + λ · NT-Xent(enc(view1), enc(view2); τ)``.

    The two views go through the model as one batch of 2N (so BatchNorm sees both).
    With ``weight == 0`` the contrastive branch is not computed at all.

    Args:
        model: the network.
        head: its final linear layer (see :func:`find_head`).
        x_std: the standard-augmented batch for the supervised branch.
        y: its labels.
        view1: first contrastive view of the batch.
        view2: second contrastive view (same samples, same order).
        weight: λ ≥ 0.
        temperature: τ of NT-Xent.
        projection: optional module applied to the encoder output before NT-Xent.

    Returns:
        ``(loss, {"ce": ..., "nt_xent": ...})`` with the parts as floats.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> x, y = torch.randn(6, 4), torch.randint(0, 2, (6,))
        >>> loss, parts = invariance_loss(net, net[2], x, y, x + 0.1, x - 0.1)
        >>> sorted(parts)
        ['ce', 'nt_xent']
    """
    if weight < 0:
        raise InvalidOptionError(f"The NT-Xent weight λ must be >= 0, got {weight}.")
    ce = F.cross_entropy(model(x_std), y)
    if weight == 0:
        return ce, {"ce": float(ce.detach()), "nt_xent": 0.0}
    if view1.shape != view2.shape:
        raise BatchShapeError(f"The two views must have the same shape, got {tuple(view1.shape)} and {tuple(view2.shape)}.")
    feats, _ = encode(model, torch.cat([view1, view2], dim=0), head)
    if projection is not None:
        feats = projection(feats)
    n = view1.shape[0]
    contrastive = nt_xent(feats[:n], feats[n:], temperature)
    loss = ce + weight * contrastive
    return loss, {"ce": float(ce.detach()), "nt_xent": float(contrastive.detach())}
