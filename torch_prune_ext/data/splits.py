"""Class-balanced subsets, e.g. the small labelled batch a pruning-at-initialisation method scores on.

The indices come from :func:`~torch_prune_ext.data.balanced.class_balanced_indices` (re-exported here).
Selection is seeded with a private :class:`torch.Generator`, so it is reproducible and
never changes PyTorch's global random state.
"""

from __future__ import annotations

import os

import torch

from ..errors import DataError
from .balanced import class_balanced_indices
from .bundled import bundled_pruning_set, falls_back_to_bundled
from .datasets import cifar10_labels, cifar10_tensors, mnist_tensors

#: Datasets :func:`pruning_set` can draw from.
DATASETS = ("cifar10", "mnist")

__all__ = ["DATASETS", "class_balanced_indices", "pruning_batch", "pruning_set"]


def pruning_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    per_class: int,
    seed: int,
    num_classes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A class-balanced batch ``(x_sel, y_sel)`` drawn from ``(x, y)``.

    Args:
        x: inputs, first dimension the examples.
        y: labels, 1-D, same length as ``x``.
        per_class: examples per class.
        seed: seed of the selection (see :func:`class_balanced_indices`).
        num_classes: number of classes; default ``max(y) + 1``.

    Returns:
        ``(x[idx], y[idx])`` with ``idx`` from :func:`class_balanced_indices`, on the
        devices of ``x`` and ``y``.

    Raises:
        DataError: (a ``ValueError``) if ``x`` and ``y`` differ in length, or as :func:`class_balanced_indices`.

    Examples:
        >>> x, y = torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 0, 1])
        >>> xs, ys = pruning_batch(x, y, per_class=1, seed=0)
        >>> sorted(ys.tolist())
        [0, 1]
    """
    if len(x) != len(y):
        raise DataError(f"x has {len(x)} examples but y has {len(y)}; pass matching inputs and labels.")
    idx = class_balanced_indices(y, per_class, seed, num_classes)
    return x[idx.to(x.device)], y[idx.to(y.device)]


def pruning_set(
    dataset: str,
    per_class: int = 10,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
) -> tuple[torch.Tensor, torch.Tensor]:
    """A class-balanced pruning set of a real dataset, normalised, decoding only what it needs.

    Args:
        dataset: ``"cifar10"`` or ``"mnist"``.
        per_class: examples per class (10 by default: a 100-image set, as in the PX and
            NTK-SAP papers' CIFAR-10 settings).
        seed: seed of the selection (:func:`class_balanced_indices`).
        root: folder holding the ``.npz`` files.
        split: ``"train"`` (default) or ``"test"``.

    Returns:
        ``(x, y)`` float inputs (CIFAR-10 ``(N, 3, 32, 32)``, MNIST ``(N, 1, 28, 28)``) and labels.

    Without ``root``, ``TORCH_PRUNE_EXT_DATA`` or a data folder holding the file (a fresh clone,
    an installed package), the training split comes from the set bundled with the package
    (:mod:`torch_prune_ext.data.bundled`: the same images for ``per_class=10, seed=0``), with a
    one-line notice.

    Examples:
        >>> x, y = pruning_set("cifar10", per_class=10, seed=0)  # doctest: +SKIP
        >>> x.shape, torch.bincount(y).tolist()  # doctest: +SKIP
        (torch.Size([100, 3, 32, 32]), [10, 10, 10, 10, 10, 10, 10, 10, 10, 10])
    """
    if falls_back_to_bundled(dataset, root, split):
        return bundled_pruning_set(dataset, per_class, seed)
    if dataset == "cifar10":
        index = class_balanced_indices(cifar10_labels(split, root), per_class, seed)
        return cifar10_tensors(split, root, indices=index)
    if dataset == "mnist":
        x, y = mnist_tensors(split, root)
        index = class_balanced_indices(y, per_class, seed)
        return x[index], y[index]
    raise DataError(f"Unknown dataset {dataset!r}; use one of {', '.join(DATASETS)}.")
