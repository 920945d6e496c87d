"""Real tabular data bundled with scikit-learn (optional extra ``tabular``), standardised on the training rows."""

from __future__ import annotations

import torch

from ..errors import DataError, InvalidOptionError, MissingDependencyError

__all__ = ["TABULAR_DATASETS", "load_tabular"]

#: The scikit-learn loaders :func:`load_tabular` knows, by name.
TABULAR_DATASETS: tuple[str, ...] = ("breast_cancer", "wine", "digits")


def load_tabular(
    name: str, test_fraction: float = 0.25, seed: int = 0
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Load a scikit-learn toy dataset, split it (stratified) and standardise its features.

    The per-feature mean and standard deviation are computed on the training rows only
    (constant features get std 1) and applied to both splits.

    Args:
        name: one of :data:`TABULAR_DATASETS` (``"breast_cancer"``, ``"wine"``, ``"digits"``).
        test_fraction: fraction of rows held out for testing, in (0, 1).
        seed: seed of the split.

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: float32 ``(N, F)`` and int64 ``(N,)``.

    Raises:
        ImportError: scikit-learn is missing (``pip install torch-prune-ext[tabular]``).
        ValueError: unknown name or bad fraction.

    Examples:
        >>> (xtr, ytr), (xte, yte) = load_tabular("wine")  # doctest: +SKIP
        >>> xtr.shape[1], round(float(xtr.mean()), 6)  # doctest: +SKIP
        (13, 0.0)
    """
    if name not in TABULAR_DATASETS:
        raise DataError(f"Unknown tabular dataset {name!r}; use one of {list(TABULAR_DATASETS)}.")
    if not 0.0 < test_fraction < 1.0:
        raise InvalidOptionError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    try:
        from sklearn import datasets
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise MissingDependencyError(
            "Tabular IUNET data needs scikit-learn, which is not installed. "
            "Install the optional extra: pip install torch-prune-ext[tabular]"
        ) from exc
    loader = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine,
              "digits": datasets.load_digits}[name]
    x, y = loader(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    x_tr = torch.as_tensor(x_tr, dtype=torch.float32)
    x_te = torch.as_tensor(x_te, dtype=torch.float32)
    mean = x_tr.mean(0)
    std = x_tr.std(0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return ((x_tr - mean) / std, torch.as_tensor(y_tr, dtype=torch.long)), \
        ((x_te - mean) / std, torch.as_tensor(y_te, dtype=torch.long))
