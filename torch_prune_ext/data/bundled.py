"""Small class-balanced pruning sets shipped inside the package, for machines without the data folder.

A clone or an installed package has no ``shared/data`` folder. :func:`pruning_set` then falls
back to these sets (with a one-line notice), so the methods that need data run anywhere:

* ``bundled_cifar10_pruning.npz``: the 100 CIFAR-10 training images (10 per class) that
  ``pruning_set("cifar10", per_class=10, seed=0)`` selects from ``cifar10_jpeg_q75.npz``,
  decoded to uint8 (``x`` ``(100, 32, 32, 3)``), with their labels ``y`` and their
  training-set ``index``.
* ``bundled_mnist_pruning.npz``: the same for MNIST (``x`` ``(100, 28, 28)``).

``BUNDLED_PROVENANCE.txt`` next to them says where they come from. Regenerate them from the
data folder with ``python -m torch_prune_ext.data.bundled [DATA_FOLDER]``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch

from ..errors import DataNotFoundError
from .balanced import class_balanced_indices
from .datasets import (
    CIFAR10_FILE,
    DATA_ENV,
    MNIST_FILE,
    cifar10_float,
    cifar10_labels,
    find_data_file,
    load_cifar10,
    load_mnist,
    mnist_float,
)

logger = logging.getLogger(__name__)

__all__ = ["BUNDLED_DIR", "BUNDLED_FILES", "BUNDLED_PER_CLASS", "BUNDLED_SEED", "bundled_pruning_set",
           "falls_back_to_bundled", "write_bundled_sets"]

#: The folder holding the bundled sets (inside the package).
BUNDLED_DIR = Path(__file__).resolve().parent
#: The bundled file of each dataset.
BUNDLED_FILES = {"cifar10": "bundled_cifar10_pruning.npz", "mnist": "bundled_mnist_pruning.npz"}
#: The selection the bundled sets hold: ``pruning_set(dataset, per_class=10, seed=0)``.
BUNDLED_PER_CLASS = 10
BUNDLED_SEED = 0
_SOURCE_FILES = {"cifar10": CIFAR10_FILE, "mnist": MNIST_FILE}


def falls_back_to_bundled(dataset: str, root: str | os.PathLike[str] | None = None, split: str = "train") -> bool:
    """Whether :func:`~torch_prune_ext.data.pruning_set` uses the bundled set.

    Only when nothing was asked for explicitly: no ``root``, no ``TORCH_PRUNE_EXT_DATA``, the
    training split, and no default data folder holds the dataset's file.

    Args:
        dataset: ``"cifar10"`` or ``"mnist"``.
        root: the ``root`` passed to ``pruning_set``.
        split: the split asked for.

    Returns:
        ``True`` if the bundled set is used.

    Examples:
        >>> falls_back_to_bundled("cifar10", root="/some/folder")
        False
    """
    if root is not None or split != "train" or os.environ.get(DATA_ENV) or dataset not in BUNDLED_FILES:
        return False
    try:
        find_data_file(_SOURCE_FILES[dataset])
    except FileNotFoundError:
        return True
    return False


def bundled_pruning_set(dataset: str, per_class: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A class-balanced pruning set from the bundled images, normalised as ``pruning_set``'s.

    ``per_class=10, seed=0`` gives exactly ``pruning_set(dataset, per_class=10, seed=0)`` of the
    data folder; other values select ``per_class`` of the bundled 10 per class with ``seed``
    (a set the data folder would not give). A one-line notice is logged.

    Args:
        dataset: ``"cifar10"`` or ``"mnist"``.
        per_class: examples per class, at most 10.
        seed: seed of the selection.

    Returns:
        ``(x, y)``: CIFAR-10 ``(N, 3, 32, 32)`` or MNIST ``(N, 1, 28, 28)`` float32, int64 labels.

    Raises:
        DataNotFoundError: (a ``FileNotFoundError``) ``per_class`` above 10 (the message says where to put the data file).

    Examples:
        >>> x, y = bundled_pruning_set("cifar10")
        >>> tuple(x.shape), torch.bincount(y).tolist()
        ((100, 3, 32, 32), [10, 10, 10, 10, 10, 10, 10, 10, 10, 10])
    """
    if per_class > BUNDLED_PER_CLASS:
        raise DataNotFoundError(
            f"{_SOURCE_FILES[dataset]} not found, and the {dataset} pruning set bundled with the package has only "
            f"{BUNDLED_PER_CLASS} images per class (asked: {per_class}); put the file in a folder and set "
            f"{DATA_ENV} to it (CLI: --data-root DIR), or use --per-class {BUNDLED_PER_CLASS}."
        )
    with np.load(BUNDLED_DIR / BUNDLED_FILES[dataset], allow_pickle=False) as archive:
        x, y = torch.from_numpy(archive["x"]), torch.from_numpy(archive["y"].astype(np.int64))
    exact = per_class == BUNDLED_PER_CLASS and seed == BUNDLED_SEED
    index = torch.arange(len(y)) if exact else class_balanced_indices(y, per_class, seed)
    logger.warning(
        "%s not found (no data folder, %s unset): using the %s pruning set bundled with the package (%d per class%s).",
        _SOURCE_FILES[dataset], DATA_ENV, dataset, per_class,
        ", the data folder's seed-0 selection" if exact else f", seed {seed} from its 10 per class: not the data "
        "folder's selection",
    )
    to_float = cifar10_float if dataset == "cifar10" else mnist_float
    return to_float(x[index]), y[index]


def write_bundled_sets(root: str | os.PathLike[str] | None = None, target: Path = BUNDLED_DIR) -> list[Path]:
    """(Re)write the bundled sets from the data folder: the seed-0, 10-per-class training selection.

    Args:
        root: folder holding ``cifar10_jpeg_q75.npz`` and ``mnist.npz`` (default: the usual search).
        target: folder to write to (default: the package's ``data`` folder).

    Returns:
        The paths written.
    """
    written = []
    for dataset, filename in BUNDLED_FILES.items():
        if dataset == "cifar10":
            index = class_balanced_indices(cifar10_labels("train", root), BUNDLED_PER_CLASS, BUNDLED_SEED)
            x, y = load_cifar10("train", root, indices=index, use_cache=False)
        else:
            images, labels = load_mnist("train", root)
            index = class_balanced_indices(labels, BUNDLED_PER_CLASS, BUNDLED_SEED)
            x, y = images[index], labels[index]
        path = Path(target) / filename
        np.savez_compressed(path, x=x.numpy().astype(np.uint8), y=y.numpy().astype(np.uint8),
                            index=index.numpy().astype(np.int64))
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover
    for written_path in write_bundled_sets(sys.argv[1] if len(sys.argv) > 1 else None):
        logger.warning("wrote %s (%d bytes)", written_path, written_path.stat().st_size)
