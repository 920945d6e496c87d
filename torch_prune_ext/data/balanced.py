"""Seeded class-balanced selection of example indices (the draw behind every pruning set).

The selection uses a private :class:`torch.Generator`, so it is reproducible and never changes
PyTorch's global random state.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import DataError, InvalidOptionError

__all__ = ["class_balanced_indices"]


def _as_label_tensor(labels: torch.Tensor | np.ndarray | Sequence[int]) -> torch.Tensor:
    """Labels as a 1-D int64 CPU tensor."""
    if isinstance(labels, torch.Tensor):
        tensor = labels.detach().cpu()
    else:
        tensor = torch.as_tensor(np.asarray(labels))
    if tensor.ndim != 1:
        raise DataError(f"labels must be 1-D (one class index per example), got shape {tuple(tensor.shape)}.")
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise DataError(f"labels must be integer class indices, got dtype {tensor.dtype}; cast with .long().")
    return tensor.to(torch.int64)


def class_balanced_indices(
    labels: torch.Tensor | np.ndarray | Sequence[int],
    per_class: int,
    seed: int,
    num_classes: int | None = None,
) -> torch.Tensor:
    """Pick exactly ``per_class`` random examples of every class.

    Draws a permutation of all examples with ``torch.randperm`` and a private generator
    seeded with ``seed``, and keeps the first ``per_class`` examples of each class in that
    permutation. The global random state is not touched.

    Args:
        labels: class index of every example, 1-D (tensor, array or sequence).
        per_class: examples to pick per class (at least 1).
        seed: seed of the selection; the same seed and labels give the same indices.
        num_classes: classes ``0 .. num_classes - 1`` to pick from; default ``max(labels) + 1``.

    Returns:
        An int64 CPU tensor of ``per_class * num_classes`` distinct indices into ``labels``,
        sorted in ascending order (dataset order).

    Raises:
        InvalidOptionError: (a ``ValueError``) if ``per_class < 1``.
        DataError: (a ``ValueError``) if a label is outside ``[0, num_classes)``, or a class has fewer
            than ``per_class`` examples (the message names the class and count).

    Examples:
        >>> labels = torch.tensor([0, 1, 0, 1, 2, 2, 0])
        >>> idx = class_balanced_indices(labels, per_class=2, seed=0)
        >>> torch.bincount(labels[idx]).tolist()
        [2, 2, 2]
    """
    y = _as_label_tensor(labels)
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise InvalidOptionError(f"per_class must be a positive int, got {per_class!r}.")
    if y.numel() == 0:
        raise DataError("labels is empty; pass the labels of the dataset to sample from.")
    if num_classes is None:
        num_classes = int(y.max()) + 1
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(
            f"labels must lie in [0, {num_classes}), got values from {int(y.min())} to {int(y.max())}; "
            "fix num_classes or the labels."
        )
    counts = torch.bincount(y, minlength=num_classes)
    short = [(c, int(counts[c])) for c in range(num_classes) if counts[c] < per_class]
    if short:
        listed = ", ".join(f"class {c}: {n}" for c, n in short[:10])
        raise DataError(
            f"per_class={per_class} but some classes have fewer examples ({listed}"
            f"{', ...' if len(short) > 10 else ''}); lower per_class or use more data."
        )

    generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(y.numel(), generator=generator)
    shuffled = y[order]
    # Stable sort by class keeps the random order within each class.
    by_class = torch.sort(shuffled, stable=True)
    starts = torch.cumsum(counts, 0) - counts  # first position of each class in by_class
    take = (starts.unsqueeze(1) + torch.arange(per_class)).reshape(-1)
    chosen = order[by_class.indices[take]]
    return torch.sort(chosen).values
