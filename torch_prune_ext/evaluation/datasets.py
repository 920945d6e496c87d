"""The data of a comparison, as one in-memory bundle: real (MNIST, CIFAR-10) or synthetic.

:func:`run_comparison <torch_prune_ext.evaluation.compare.run_comparison>` takes a
:class:`ClassificationData`; :func:`load_classification_data` builds one from the
project's local ``.npz`` files (never downloading) or synthesises a small learnable
problem (``"synthetic"``) for tests and smoke runs.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    MNIST_MEAN,
    MNIST_STD,
    cifar10_labels,
    cifar10_tensors,
    mnist_tensors,
    normalize,
)
from ..errors import InvalidOptionError

__all__ = [
    "DATASET_NAMES",
    "ClassificationData",
    "load_classification_data",
    "subset_indices",
    "synthetic_classification_data",
]

#: The datasets :func:`load_classification_data` knows.
DATASET_NAMES = ("mnist", "cifar10", "synthetic")

#: Shape of one synthetic example when none is asked for.
SYNTHETIC_INPUT_SHAPE = (1, 8, 8)
#: Seed of the fixed train/test subsets (independent of the comparison's seeds).
SUBSET_SEED = 0


@dataclass(frozen=True)
class ClassificationData:
    """A labelled classification problem held in memory.

    Inputs are float tensors. When ``mean`` and ``std`` are given the inputs are
    unnormalised (pixels in [0, 1]) and every batch is standardised per channel on the way
    into the model, after any augmentation (so a random crop pads with black, as
    torchvision does); when they are ``None`` the inputs are used as they are.

    Attributes:
        name: the dataset's name, recorded in every result row (``"mnist"``, ...).
        train_x: training inputs ``(N, *input_shape)``.
        train_y: training labels, int64 ``(N,)`` in ``[0, num_classes)``.
        test_x: test inputs ``(M, *input_shape)``.
        test_y: test labels ``(M,)``.
        num_classes: the number of classes.
        mean: per-channel mean for normalisation, or ``None``.
        std: per-channel standard deviation, with ``mean``.

    Raises:
        InvalidOptionError: for mismatched lengths or shapes, non-integer or out-of-range
            labels, or only one of ``mean``/``std``.

    Examples:
        >>> data = ClassificationData("toy", torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]),
        ...                           torch.zeros(2, 3), torch.tensor([1, 0]), num_classes=2)
        >>> data.input_shape, data.describe()
        ((3,), 'toy: 4 train / 2 test examples of shape (3,), 2 classes')
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.name, str) or not self.name:
            problems.append(f"name must be a non-empty string, got {self.name!r}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 2:
            problems.append(f"num_classes must be an int >= 2, got {self.num_classes!r}")
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            problems.extend(self._split_problems(split, x, y))
        if not problems and self.train_x.shape[1:] != self.test_x.shape[1:]:
            problems.append(f"train inputs have shape {tuple(self.train_x.shape[1:])} per example but test inputs "
                            f"{tuple(self.test_x.shape[1:])}")
        if (self.mean is None) != (self.std is None):
            problems.append("give both mean and std, or neither")
        if problems:
            raise InvalidOptionError(f"Bad ClassificationData {self.name!r}: " + "; ".join(problems) + ".")
        if self.mean is not None and self.std is not None:
            object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
            object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def _split_problems(self, split: str, x: object, y: object) -> list[str]:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
            return [f"{split}_x must be a float tensor (N, ...), got {getattr(x, 'dtype', type(x).__name__)}"]
        if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.is_floating_point() or y.dtype == torch.bool:
            return [f"{split}_y must be a 1-D integer tensor of labels"]
        if len(x) != len(y) or len(x) == 0:
            return [f"{split}_x has {len(x)} examples and {split}_y {len(y)}; they must match and be non-empty"]
        if isinstance(self.num_classes, int) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            return [f"{split}_y must lie in [0, {self.num_classes}), got {int(y.min())}..{int(y.max())}"]
        return []

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example (no batch dimension)."""
        return tuple(self.train_x.shape[1:])

    def normalized(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` standardised with :attr:`mean` and :attr:`std` (``x`` itself when they are ``None``)."""
        if self.mean is None or self.std is None:
            return x
        return normalize(x, self.mean, self.std)

    def fingerprint(self) -> dict[str, object]:
        """What identifies the data in a recipe hash: name, sizes, shape and classes."""
        return {"name": self.name, "train": len(self.train_x), "test": len(self.test_x),
                "input_shape": list(self.input_shape), "num_classes": self.num_classes}

    def to(self, device: str | torch.device) -> ClassificationData:
        """The same data with its four tensors on ``device`` (e.g. preloaded on the GPU).

        Examples:
            >>> data = ClassificationData("toy", torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]),
            ...                           torch.zeros(2, 3), torch.tensor([1, 0]), num_classes=2)
            >>> data.to("cpu").train_x.device.type
            'cpu'
        """
        return dataclasses.replace(self, train_x=self.train_x.to(device), train_y=self.train_y.to(device),
                                   test_x=self.test_x.to(device), test_y=self.test_y.to(device))

    def describe(self) -> str:
        """One line for reports."""
        return (f"{self.name}: {len(self.train_x)} train / {len(self.test_x)} test examples of shape "
                f"{self.input_shape}, {self.num_classes} classes")


def subset_indices(total: int, size: int | None, seed: int = SUBSET_SEED) -> torch.Tensor | None:
    """A fixed random subset of ``range(total)``, sorted; ``None`` when ``size`` is ``None`` or ``>= total``.

    Args:
        total: the number of examples.
        size: the subset's size, or ``None`` for all.
        seed: seed of the draw (a private generator; the global RNG is not touched).

    Returns:
        ``size`` distinct sorted int64 indices, or ``None`` for "everything".

    Raises:
        InvalidOptionError: ``size`` is not a positive int.

    Examples:
        >>> subset_indices(10, 3).tolist()
        [1, 4, 7]
        >>> subset_indices(10, None) is None, subset_indices(10, 20) is None
        (True, True)
    """
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidOptionError(f"A subset size must be a positive int or None, got {size!r}.")
    if size >= total:
        return None
    order = torch.randperm(total, generator=torch.Generator().manual_seed(int(seed)))
    return torch.sort(order[:size]).values


def synthetic_classification_data(
    input_shape: Sequence[int] = SYNTHETIC_INPUT_SHAPE,
    num_classes: int = 10,
    train_size: int = 512,
    test_size: int = 256,
    seed: int = 0,
    noise: float = 1.0,
) -> ClassificationData:
    """A small learnable problem: Gaussian clusters, one random centre per class.

    Args:
        input_shape: shape of one example, e.g. ``(1, 8, 8)``.
        num_classes: the number of classes.
        train_size: training examples.
        test_size: test examples.
        seed: seed of the centres, labels and noise (a private generator).
        noise: standard deviation of the noise around the centres (the centres are N(0, 1)).

    Returns:
        A :class:`ClassificationData` named ``"synthetic"`` (already normalised: no ``mean``/``std``).

    Examples:
        >>> data = synthetic_classification_data((1, 4, 4), num_classes=3, train_size=30, test_size=9)
        >>> data.input_shape, len(data.test_y), data.name
        ((1, 4, 4), 9, 'synthetic')
    """
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise InvalidOptionError(f"input_shape must be positive sizes, got {tuple(input_shape)!r}.")
    for label, value in (("train_size", train_size), ("test_size", test_size), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidOptionError(f"{label} must be a positive int, got {value!r}.")
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise InvalidOptionError(f"noise must be a finite number >= 0, got {noise!r}.")
    generator = torch.Generator().manual_seed(int(seed))
    centres = torch.randn((num_classes, *shape), generator=generator)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % num_classes
        labels = labels[torch.randperm(n, generator=generator)]
        return centres[labels] + noise * torch.randn((n, *shape), generator=generator), labels

    train_x, train_y = draw(train_size)
    test_x, test_y = draw(test_size)
    return ClassificationData("synthetic", train_x, train_y, test_x, test_y, num_classes)


def load_classification_data(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    input_shape: Sequence[int] | None = None,
) -> ClassificationData:
    """Load a dataset by name for a comparison.

    Args:
        name: ``"mnist"`` (60,000 / 10,000 images ``(1, 28, 28)``), ``"cifar10"`` (50,000 /
            10,000 images ``(3, 32, 32)``, JPEG quality 75; only the chosen images are
            decoded) or ``"synthetic"`` (:func:`synthetic_classification_data`).
        root: folder holding the ``.npz`` files (default: ``$TORCH_PRUNE_EXT_DATA``, else
            ``../shared/data``); nothing is downloaded.
        train_subset: use a fixed random subset of this many training examples
            (:func:`subset_indices`, seed 0, the same for every comparison); ``None``: all.
        test_subset: the same for the test set.
        input_shape: the example shape of ``"synthetic"`` data (default ``(1, 8, 8)``;
            ignored for the real datasets). ``"synthetic"`` has ``train_subset`` (512) training
            and ``test_subset`` (256) test examples.

    Returns:
        A :class:`ClassificationData`; for the real datasets the pixels are in [0, 1] and
        ``mean``/``std`` are the dataset's, so batches are normalised on the fly.

    Raises:
        InvalidOptionError: an unknown name or a bad subset size.
        FileNotFoundError: the data file is not found (the message says where it looked).

    Examples:
        >>> load_classification_data("synthetic", train_subset=100).describe()
        'synthetic: 100 train / 256 test examples of shape (1, 8, 8), 10 classes'
        >>> data = load_classification_data("mnist", test_subset=2000)  # doctest: +SKIP
    """
    if name == "synthetic":
        shape = SYNTHETIC_INPUT_SHAPE if input_shape is None else tuple(input_shape)
        return synthetic_classification_data(shape, train_size=train_subset or 512, test_size=test_subset or 256)
    if name == "mnist":
        return _subset(_load_mnist(root), train_subset, test_subset)
    if name == "cifar10":
        return _load_cifar10(root, train_subset, test_subset)
    raise InvalidOptionError(f"Unknown dataset {name!r}; use one of {', '.join(DATASET_NAMES)} or pass "
                             "a ClassificationData.")


def _load_mnist(root: str | os.PathLike[str] | None) -> ClassificationData:
    train_x, train_y = mnist_tensors("train", root, normalize=False)
    test_x, test_y = mnist_tensors("test", root, normalize=False)
    return ClassificationData("mnist", train_x, train_y, test_x, test_y, 10, (MNIST_MEAN,), (MNIST_STD,))


def _subset(data: ClassificationData, train_subset: int | None, test_subset: int | None) -> ClassificationData:
    train = subset_indices(len(data.train_x), train_subset)
    test = subset_indices(len(data.test_x), test_subset)
    return ClassificationData(
        data.name,
        data.train_x if train is None else data.train_x[train],
        data.train_y if train is None else data.train_y[train],
        data.test_x if test is None else data.test_x[test],
        data.test_y if test is None else data.test_y[test],
        data.num_classes, data.mean, data.std,
    )


def _load_cifar10(
    root: str | os.PathLike[str] | None, train_subset: int | None, test_subset: int | None
) -> ClassificationData:
    """CIFAR-10, decoding (or reading from the cache) only the chosen images."""
    splits = {}
    for split, size in (("train", train_subset), ("test", test_subset)):
        index = subset_indices(len(cifar10_labels(split, root)), size)
        splits[split] = cifar10_tensors(split, root, indices=index, normalize=False)
    (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
    return ClassificationData("cifar10", train_x, train_y, test_x, test_y, 10, CIFAR10_MEAN, CIFAR10_STD)
