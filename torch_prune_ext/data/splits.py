"""Class-balanced subsets, e.g. the small labelled batch a pruning-at-initialisation method scores on.

Selection is seeded with a private :class:`torch.Generator`, so it is reproducible and
never changes PyTorch's global random state.
"""

from __future__ import annotations

from collections.abc import Sequence

import os

import numpy as np
import torch

from .datasets import cifar10_labels, cifar10_tensors, mnist_tensors

#: Datasets :func:`pruning_set` can draw from.
DATASETS = ("cifar10", "mnist")

__all__ = ["DATASETS", "class_balanced_indices", "pruning_batch", "pruning_set"]


def _as_label_tensor(labels: torch.Tensor | np.ndarray | Sequence[int]) -> torch.Tensor:
    """Labels as a 1-D int64 CPU tensor."""
    if isinstance(labels, torch.Tensor):
        tensor = labels.detach().cpu()
    else:
        tensor = torch.as_tensor(np.asarray(labels))
    if tensor.ndim != 1:
        raise ValueError(f"labels must be 1-D (one class index per example), got shape {tuple(tensor.shape)}.")
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {tensor.dtype}; cast with .long().")
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
        ValueError: if ``per_class < 1``, a label is outside ``[0, num_classes)``, or a class
            has fewer than ``per_class`` examples (the message names the class and count).

    Examples:
        >>> labels = torch.tensor([0, 1, 0, 1, 2, 2, 0])
        >>> idx = class_balanced_indices(labels, per_class=2, seed=0)
        >>> torch.bincount(labels[idx]).tolist()
        [2, 2, 2]
    """
    y = _as_label_tensor(labels)
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be a positive int, got {per_class!r}.")
    if y.numel() == 0:
        raise ValueError("labels is empty; pass the labels of the dataset to sample from.")
    if num_classes is None:
        num_classes = int(y.max()) + 1
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got values from {int(y.min())} to {int(y.max())}; "
            "fix num_classes or the labels."
        )
    counts = torch.bincount(y, minlength=num_classes)
    short = [(c, int(counts[c])) for c in range(num_classes) if counts[c] < per_class]
    if short:
        listed = ", ".join(f"class {c}: {n}" for c, n in short[:10])
        raise ValueError(
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
        ValueError: if ``x`` and ``y`` differ in length, or as :func:`class_balanced_indices`.

    Examples:
        >>> x, y = torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 0, 1])
        >>> xs, ys = pruning_batch(x, y, per_class=1, seed=0)
        >>> sorted(ys.tolist())
        [0, 1]
    """
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}; pass matching inputs and labels.")
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
    from .bundled import bundled_pruning_set, falls_back_to_bundled  # bundled imports this module

    if falls_back_to_bundled(dataset, root, split):
        return bundled_pruning_set(dataset, per_class, seed)
    if dataset == "cifar10":
        index = class_balanced_indices(cifar10_labels(split, root), per_class, seed)
        return cifar10_tensors(split, root, indices=index)
    if dataset == "mnist":
        x, y = mnist_tensors(split, root)
        index = class_balanced_indices(y, per_class, seed)
        return x[index], y[index]
    raise ValueError(f"Unknown dataset {dataset!r}; use one of {', '.join(DATASETS)}.")
