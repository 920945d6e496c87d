"""Loaders for the project's local copies of MNIST and CIFAR-10 (nothing is ever downloaded).

The files are the compact ``.npz`` archives described in the shared data folder's
``PROVENANCE.txt``:

* ``mnist.npz``: ``x_train`` (60000, 28, 28), ``y_train``, ``x_test`` (10000, 28, 28),
  ``y_test``, all uint8, original MNIST order.
* ``cifar10_jpeg_q75.npz``: ``jpeg_train`` / ``jpeg_test`` (one uint8 byte buffer per
  split), ``offsets_train`` / ``offsets_test`` (int64, N + 1 entries) and ``y_train`` /
  ``y_test``; image ``i`` is the JPEG ``buf[off[i]:off[i + 1]]`` (quality 75, so slightly
  lossy). Decoding a whole split takes seconds, so the decoded array is cached.

Where the files are looked for, in order (the first source that applies is the only one
searched):

1. the ``root`` argument;
2. the folder in the environment variable ``TORCH_PRUNE_EXT_DATA``;
3. the shared data folders of a checkout: ``<cwd>/../shared/data`` and the ``shared/data``
   folder next to the repository that holds this package.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, DataNotFoundError
from .archives import (
    CACHE_ENV,
    as_index_array,
    cache_path,
    check_split,
    decode_jpeg,
    default_cache_dir,
    load_cache,
    read_arrays,
    write_cache,
)
from .augment import normalize as _normalize

logger = logging.getLogger(__name__)

__all__ = [
    "cifar10_labels",
    "CACHE_ENV",
    "CIFAR10_CLASSES",
    "CIFAR10_FILE",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DATA_ENV",
    "MNIST_FILE",
    "MNIST_MEAN",
    "MNIST_STD",
    "cifar10_float",
    "cifar10_tensors",
    "decode_jpeg",
    "default_cache_dir",
    "default_data_roots",
    "find_data_file",
    "load_cifar10",
    "load_mnist",
    "mnist_float",
    "mnist_tensors",
    "resolve_data_root",
]

#: Environment variable naming the folder that holds the data files.
DATA_ENV = "TORCH_PRUNE_EXT_DATA"
#: File name of the MNIST archive.
MNIST_FILE = "mnist.npz"
#: File name of the CIFAR-10 JPEG archive.
CIFAR10_FILE = "cifar10_jpeg_q75.npz"

#: Mean and standard deviation of the MNIST training pixels (scaled to [0, 1]).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
#: Per-channel (RGB) mean and standard deviation of the CIFAR-10 training pixels (scaled to [0, 1]).
CIFAR10_MEAN: tuple[float, float, float] = (0.491, 0.482, 0.447)
CIFAR10_STD: tuple[float, float, float] = (0.247, 0.243, 0.262)
#: CIFAR-10 class names, by label.
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

_CIFAR_IMAGE_SHAPE = (32, 32, 3)


# --------------------------------------------------------------------------- locating files


def default_data_roots() -> list[Path]:
    """The shared data folders searched when neither ``root`` nor ``TORCH_PRUNE_EXT_DATA`` is given.

    Returns:
        ``<cwd>/../shared/data`` and, for a checkout such as ``/work/main``, the
        ``shared/data`` folder beside the repository (``/work/shared/data``), resolved and
        without duplicates. They need not exist.

    Examples:
        >>> all(p.name == "data" for p in default_data_roots())
        True
    """
    candidates = [Path.cwd() / ".." / "shared" / "data"]
    parents = Path(__file__).resolve().parents  # data/, torch_prune_ext/, <repo>/, <repo's parent>/
    if len(parents) > 3:
        candidates.append(parents[3] / "shared" / "data")
    unique: list[Path] = []
    for candidate in candidates:
        resolved = candidate.resolve()
        if resolved not in unique:
            unique.append(resolved)
    return unique


def _search_roots(root: str | os.PathLike[str] | None) -> tuple[list[Path], str]:
    """The folders to search and a description of where they came from."""
    if root is not None:
        return [Path(root).expanduser()], "the root= argument"
    env = os.environ.get(DATA_ENV)
    if env:
        return [Path(env).expanduser()], f"the {DATA_ENV} environment variable"
    return default_data_roots(), "the default shared data folders"


def _how_to_fix(what: str) -> str:
    return (
        f"Pass root='<folder containing {what}>' or set the environment variable {DATA_ENV} to that "
        "folder (the project's shared/data folder has the files). Nothing is downloaded."
    )


def resolve_data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder the datasets are read from.

    Args:
        root: an explicit folder; when ``None``, the ``TORCH_PRUNE_EXT_DATA`` environment
            variable, else the first existing folder of :func:`default_data_roots`.

    Returns:
        The folder, as a :class:`~pathlib.Path`.

    Raises:
        DataNotFoundError: (a ``FileNotFoundError``) if the chosen folder (or every default folder) does not exist;
            the message lists the folders searched and how to fix it.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     resolve_data_root(folder) == Path(folder)
        True
    """
    candidates, source = _search_roots(root)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    searched = ", ".join(str(c) for c in candidates)
    raise DataNotFoundError(
        f"No data folder found; searched {searched} (from {source}). {_how_to_fix('the .npz files')}"
    )


def find_data_file(filename: str, root: str | os.PathLike[str] | None = None) -> Path:
    """The path of a data file, searched as :func:`resolve_data_root` does.

    Args:
        filename: the file name, e.g. ``"mnist.npz"``.
        root: an explicit folder (the only one searched when given).

    Returns:
        The path of the first folder that holds ``filename``.

    Raises:
        DataNotFoundError: (a ``FileNotFoundError``) naming the file, the folders searched and how to fix it.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     try:
        ...         find_data_file("mnist.npz", folder)
        ...     except FileNotFoundError as error:
        ...         print("TORCH_PRUNE_EXT_DATA" in str(error))
        True
    """
    candidates, source = _search_roots(root)
    for candidate in candidates:
        path = candidate / filename
        if path.is_file():
            return path
    searched = ", ".join(str(c) for c in candidates)
    raise DataNotFoundError(
        f"Data file {filename!r} not found; searched {searched} (from {source}). {_how_to_fix(filename)}"
    )


# --------------------------------------------------------------------------- MNIST


def load_mnist(
    split: str = "train", root: str | os.PathLike[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load MNIST from ``mnist.npz``.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        root: folder holding ``mnist.npz`` (see :func:`find_data_file` for the defaults).

    Returns:
        ``(x, y)``: ``x`` a uint8 tensor ``(N, 28, 28)``, ``y`` an int64 tensor ``(N,)``.

    Raises:
        DataNotFoundError: (a ``FileNotFoundError``) if ``mnist.npz`` is not found.
        DataError: (a ``ValueError``) for a bad ``split`` or a malformed file.

    Examples:
        >>> x, y = load_mnist("test")  # doctest: +SKIP
        >>> x.shape, y.dtype  # doctest: +SKIP
        (torch.Size([10000, 28, 28]), torch.int64)
    """
    check_split(split)
    path = find_data_file(MNIST_FILE, root)
    arrays = read_arrays(path, (f"x_{split}", f"y_{split}"))
    x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
    if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) != len(y):
        raise DataError(
            f"{path} has x_{split} of shape {x.shape} and y_{split} of shape {y.shape}; expected "
            "(N, 28, 28) and (N,). Replace it with the original file."
        )
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.uint8)), torch.from_numpy(y.astype(np.int64))


def mnist_tensors(
    split: str = "train", root: str | os.PathLike[str] | None = None, normalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST as float tensors ready for a model.

    Pixels are scaled to [0, 1]; with ``normalize`` they are then standardised with
    mean :data:`MNIST_MEAN` (0.1307) and std :data:`MNIST_STD` (0.3081).

    Args:
        split: ``"train"`` or ``"test"``.
        root: folder holding ``mnist.npz``.
        normalize: standardise with the MNIST mean and std.

    Returns:
        ``(x, y)``: ``x`` float32 ``(N, 1, 28, 28)``, ``y`` int64 ``(N,)``.

    Examples:
        >>> x, y = mnist_tensors("test")  # doctest: +SKIP
        >>> x.shape  # doctest: +SKIP
        torch.Size([10000, 1, 28, 28])
    """
    x, y = load_mnist(split, root)
    return mnist_float(x, normalize), y


def mnist_float(x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """uint8 MNIST images ``(N, 28, 28)`` as float32 ``(N, 1, 28, 28)`` in [0, 1], standardised if ``normalize``.

    Examples:
        >>> mnist_float(torch.zeros(2, 28, 28, dtype=torch.uint8), normalize=False).shape
        torch.Size([2, 1, 28, 28])
    """
    x = x.unsqueeze(1).to(torch.float32).div_(255.0)
    return _normalize(x, (MNIST_MEAN,), (MNIST_STD,)) if normalize else x


# --------------------------------------------------------------------------- CIFAR-10


def _decode_jpegs(buffer: np.ndarray, offsets: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Decode images ``indices`` of a JPEG byte buffer into ``(len(indices), 32, 32, 3)`` uint8."""
    out = np.empty((len(indices), *_CIFAR_IMAGE_SHAPE), dtype=np.uint8)
    for k, i in enumerate(indices):
        image = decode_jpeg(buffer[offsets[i] : offsets[i + 1]].tobytes())
        if image.shape != _CIFAR_IMAGE_SHAPE:
            raise DataError(
                f"CIFAR-10 image {i} decodes to shape {image.shape}, expected {_CIFAR_IMAGE_SHAPE}; "
                "replace the data file with the original."
            )
        out[k] = image
    return out


def load_cifar10(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    indices: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load CIFAR-10 from ``cifar10_jpeg_q75.npz``, decoding the JPEGs with Pillow.

    A whole split is decoded once and cached as ``.npy`` in ``cache_dir``; the cache
    name holds a hash of the source file's path, size and modification time, so a changed
    file is decoded again. With ``indices``, only those images are decoded (or read from
    an existing cache), which is fast for small pruning sets.

    Args:
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000).
        root: folder holding the archive (see :func:`find_data_file` for the defaults).
        indices: images to load, in this order; ``None`` loads the whole split.
        cache_dir: folder for the decoded cache; default :func:`default_cache_dir`.
        use_cache: read and write the cache (``False`` always decodes).

    Returns:
        ``(x, y)``: ``x`` a uint8 tensor ``(N, 32, 32, 3)`` (HWC, RGB), ``y`` int64 ``(N,)``.

    Raises:
        DataNotFoundError: (a ``FileNotFoundError``) if the archive is not found.
        DataError: (a ``ValueError``) for a bad ``split``, out-of-range ``indices`` or a malformed file.

    Examples:
        >>> x, y = load_cifar10("train", indices=[0, 1])  # doctest: +SKIP
        >>> x.shape, y.tolist()  # doctest: +SKIP
        (torch.Size([2, 32, 32, 3]), [6, 9])
    """
    check_split(split)
    path = find_data_file(CIFAR10_FILE, root)
    labels = read_arrays(path, (f"y_{split}",))[f"y_{split}"]
    n = len(labels)
    cache = None
    if use_cache:
        cache = cache_path(path, split, Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir())

    if indices is not None:
        index = as_index_array(indices, n)
        cached = load_cache(cache, (n, *_CIFAR_IMAGE_SHAPE), mmap=True) if cache is not None else None
        if cached is not None:
            x = np.ascontiguousarray(cached[index])
            del cached
        else:
            x = _decode_split(path, split, n, index)
        y = labels[index]
    else:
        x = load_cache(cache, (n, *_CIFAR_IMAGE_SHAPE), mmap=False) if cache is not None else None
        if x is None:
            x = _decode_split(path, split, n, np.arange(n))
            if cache is not None:
                write_cache(cache, x)
        y = labels
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64))


def _decode_split(path: Path, split: str, n: int, index: np.ndarray) -> np.ndarray:
    """Read a split's JPEG buffer and decode the images ``index``."""
    arrays = read_arrays(path, (f"jpeg_{split}", f"offsets_{split}"))
    buffer, offsets = arrays[f"jpeg_{split}"], arrays[f"offsets_{split}"]
    if offsets.shape != (n + 1,) or offsets[-1] > len(buffer):
        raise DataError(
            f"{path} has offsets_{split} of shape {offsets.shape} for {n} labels (expected ({n + 1},) "
            "within the buffer); replace it with the original file."
        )
    logger.info("Decoding %d CIFAR-10 %s images from %s", len(index), split, path)
    return _decode_jpegs(buffer, offsets, index)


def cifar10_tensors(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    indices: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    normalize: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 as float tensors ready for a model.

    Pixels are scaled to [0, 1]; with ``normalize`` they are then standardised per
    channel with :data:`CIFAR10_MEAN` (0.491, 0.482, 0.447) and :data:`CIFAR10_STD`
    (0.247, 0.243, 0.262).

    Args:
        split: ``"train"`` or ``"test"``.
        root: folder holding the archive.
        indices: images to load (``None``: the whole split).
        normalize: standardise with the CIFAR-10 mean and std.
        cache_dir: folder for the decoded cache (see :func:`load_cifar10`).

    Returns:
        ``(x, y)``: ``x`` float32 ``(N, 3, 32, 32)``, ``y`` int64 ``(N,)``.

    Examples:
        >>> x, y = cifar10_tensors("test", indices=range(8))  # doctest: +SKIP
        >>> x.shape  # doctest: +SKIP
        torch.Size([8, 3, 32, 32])
    """
    x, y = load_cifar10(split, root, indices=indices, cache_dir=cache_dir)
    return cifar10_float(x, normalize), y


def cifar10_float(x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """uint8 CIFAR-10 images ``(N, 32, 32, 3)`` as float32 ``(N, 3, 32, 32)`` in [0, 1], standardised if ``normalize``.

    Examples:
        >>> cifar10_float(torch.full((1, 32, 32, 3), 255, dtype=torch.uint8), normalize=False).shape
        torch.Size([1, 3, 32, 32])
    """
    x = x.permute(0, 3, 1, 2).to(torch.float32).div_(255.0).contiguous()
    return _normalize(x, CIFAR10_MEAN, CIFAR10_STD) if normalize else x


def cifar10_labels(split: str = "train", root: str | os.PathLike[str] | None = None) -> torch.Tensor:
    """The CIFAR-10 labels of a split, without decoding any image.

    Args:
        split: ``"train"`` or ``"test"``.
        root: folder holding the archive.

    Returns:
        An int64 tensor ``(N,)``.

    Examples:
        >>> cifar10_labels("test")[:3].tolist()  # doctest: +SKIP
        [3, 8, 8]
    """
    check_split(split)
    labels = read_arrays(find_data_file(CIFAR10_FILE, root), (f"y_{split}",))[f"y_{split}"]
    return torch.from_numpy(labels.astype(np.int64))
