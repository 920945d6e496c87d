"""Reading the data archives: members of an ``.npz`` file, JPEG images, and the cache of decoded images.

The loaders of :mod:`torch_prune_ext.data.datasets` build on these; a malformed file raises a
:class:`~torch_prune_ext.errors.DataError` that says to replace it with the original.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["CACHE_ENV", "SPLITS", "as_index_array", "cache_path", "check_split", "decode_jpeg", "default_cache_dir",
           "load_cache", "read_arrays", "write_cache"]

#: Environment variable naming the folder for decoded caches.
CACHE_ENV = "TORCH_PRUNE_EXT_CACHE"
#: The splits of every archive.
SPLITS = ("train", "test")


def check_split(split: str) -> str:
    """``split`` if it is ``"train"`` or ``"test"``, else a :class:`~torch_prune_ext.errors.DataError`."""
    if split not in SPLITS:
        raise DataError(f"split must be 'train' or 'test', got {split!r}.")
    return split


def read_arrays(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Read ``keys`` from an ``.npz`` archive (other members are not decompressed)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in keys if key not in archive.files]
            if missing:
                raise DataError(
                    f"{path} lacks the arrays {missing} (it has {archive.files}); replace it with the "
                    "original file from the shared data folder."
                )
            return {key: archive[key] for key in keys}
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(
            f"{path} is not a readable .npz archive ({error}); replace it with the original file "
            "from the shared data folder."
        ) from error


def as_index_array(indices: Sequence[int] | np.ndarray | torch.Tensor, n: int) -> np.ndarray:
    """Validate ``indices`` as a 1-D array of ints in ``[0, n)``."""
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    array = np.asarray(indices)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise DataError(
            f"indices must be a 1-D sequence of ints, got shape {array.shape} and dtype {array.dtype}."
        )
    if array.min() < 0 or array.max() >= n:
        raise DataError(
            f"indices must lie in [0, {n}), got values from {array.min()} to {array.max()}."
        )
    return array.astype(np.int64)


def decode_jpeg(data: bytes) -> np.ndarray:
    """Decode one JPEG to an RGB uint8 array ``(H, W, 3)`` with Pillow.

    Args:
        data: the encoded bytes.

    Returns:
        The decoded image.

    Examples:
        >>> buffer = io.BytesIO()
        >>> Image.new("RGB", (4, 2), (255, 0, 0)).save(buffer, format="JPEG")
        >>> decode_jpeg(buffer.getvalue()).shape
        (2, 4, 3)
    """
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def default_cache_dir() -> Path:
    """The folder for decoded caches: ``$TORCH_PRUNE_EXT_CACHE``, else ``~/.cache/torch_prune_ext``.

    Returns:
        The folder (created on first write, not here).

    Examples:
        >>> isinstance(default_cache_dir(), Path)
        True
    """
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "torch_prune_ext"


def cache_path(source: Path, split: str, cache_dir: Path) -> Path:
    """Cache file for one split, keyed by the source's resolved path, size and mtime."""
    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir / f"{source.stem}_{split}_{key}.npy"


def load_cache(path: Path, shape: tuple[int, ...], mmap: bool) -> np.ndarray | None:
    """The cached uint8 array if it exists and has ``shape``, else ``None``."""
    if not path.is_file():
        return None
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as error:
        logger.warning("Ignoring unreadable cache %s (%s); decoding again.", path, error)
        return None
    if array.shape != shape or array.dtype != np.uint8:
        logger.warning("Ignoring cache %s with shape %s dtype %s; decoding again.", path, array.shape, array.dtype)
        return None
    logger.debug("Using decoded cache %s", path)
    return array


def write_cache(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` atomically (temp file + ``os.replace``); failures only log."""
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; the cache holds public data
        os.replace(tmp_name, path)
        tmp_name = None
        logger.info("Cached decoded images in %s", path)
    except OSError as error:
        logger.warning("Could not write the cache %s (%s); continuing without it.", path, error)
    finally:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)
