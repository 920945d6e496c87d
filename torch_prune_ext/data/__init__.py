"""Datasets, class-balanced splits and batched augmentation (no torchvision, no downloads).

Examples:
    >>> from torch_prune_ext.data import cifar10_tensors, pruning_batch  # doctest: +SKIP
    >>> x, y = cifar10_tensors("train", indices=range(1000))  # doctest: +SKIP
    >>> xb, yb = pruning_batch(x, y, per_class=10, seed=0)  # doctest: +SKIP
    >>> xb.shape  # doctest: +SKIP
    torch.Size([100, 3, 32, 32])
"""

from __future__ import annotations

from .augment import CifarTrainAugment, normalize, random_crop, random_horizontal_flip
from .datasets import (
    CACHE_ENV,
    CIFAR10_CLASSES,
    CIFAR10_FILE,
    CIFAR10_MEAN,
    CIFAR10_STD,
    DATA_ENV,
    MNIST_FILE,
    MNIST_MEAN,
    MNIST_STD,
    cifar10_labels,
    cifar10_tensors,
    decode_jpeg,
    default_cache_dir,
    default_data_roots,
    find_data_file,
    load_cifar10,
    load_mnist,
    mnist_tensors,
    resolve_data_root,
)
from .splits import DATASETS, class_balanced_indices, pruning_batch, pruning_set

__all__ = [
    "DATASETS",
    "cifar10_labels",
    "pruning_set",
    "CACHE_ENV",
    "CIFAR10_CLASSES",
    "CIFAR10_FILE",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DATA_ENV",
    "MNIST_FILE",
    "MNIST_MEAN",
    "MNIST_STD",
    "CifarTrainAugment",
    "cifar10_tensors",
    "class_balanced_indices",
    "decode_jpeg",
    "default_cache_dir",
    "default_data_roots",
    "find_data_file",
    "load_cifar10",
    "load_mnist",
    "mnist_tensors",
    "normalize",
    "pruning_batch",
    "random_crop",
    "random_horizontal_flip",
    "resolve_data_root",
]
