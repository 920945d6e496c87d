"""Contrastive views for IUNET in plain, batched PyTorch (no torchvision, any device).

Vision: :func:`random_resized_crop`, :func:`color_jitter`, :func:`random_grayscale`
(plus :func:`torch_prune_ext.data.random_horizontal_flip`), composed by
:class:`VisionViews`; the supervised branch uses :class:`StandardAugment` (the library's
:class:`~torch_prune_ext.data.CifarTrainAugment`: random crop + flip). Tabular: :class:`Scarf`.

Randomness comes from ``generator`` when given (reproducible), else from PyTorch's global
generator; random numbers are drawn on the generator's device and moved to the input's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import BatchShapeError, DataError, InvalidOptionError
from ..data.augment import CifarTrainAugment, normalize, random_horizontal_flip

__all__ = [
    "Scarf",
    "StandardAugment",
    "VisionViews",
    "color_jitter",
    "random_grayscale",
    "random_resized_crop",
]

_LUMA = (0.299, 0.587, 0.114)


def _check_images(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise BatchShapeError(f"{name} expects a floating batch (N, C, H, W), got {shape}; convert with x.float() / 255.")


def _uniform(n: int, low: float, high: float, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else x.device
    u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    return (low + (high - low) * u).to(device=x.device, dtype=x.dtype)


def random_resized_crop(
    x: torch.Tensor,
    size: int | tuple[int, int] | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Crop a random box of each sample and resize it (bilinear) to ``size``.

    Per sample the box covers a fraction ``s ~ U(scale)`` of the area with aspect ratio
    ``r`` (log-uniform in ``ratio``); a box wider or taller than the image is clamped to it
    (torchvision retries instead), and its position is uniform inside the image. Output
    values are convex combinations of input pixels, so the value range is kept.

    Args:
        x: floating batch ``(N, C, H, W)``.
        size: output ``(height, width)``; default the input's.
        scale: range of the area fraction, ``0 < low <= high <= 1``.
        ratio: range of the aspect ratio width/height, ``0 < low <= high``.
        generator: source of randomness.

    Returns:
        A new tensor ``(N, C, height, width)``.

    Raises:
        ValueError: bad input or ranges.

    Examples:
        >>> x = torch.rand(4, 3, 8, 8)
        >>> random_resized_crop(x, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([4, 3, 8, 8])
    """
    _check_images(x, "random_resized_crop")
    if not (0 < scale[0] <= scale[1] <= 1):
        raise InvalidOptionError(f"scale must satisfy 0 < low <= high <= 1, got {scale}.")
    if not (0 < ratio[0] <= ratio[1]):
        raise InvalidOptionError(f"ratio must satisfy 0 < low <= high, got {ratio}.")
    n, c, h, w = x.shape
    out_h, out_w = (h, w) if size is None else ((size, size) if isinstance(size, int) else (int(size[0]), int(size[1])))
    area = _uniform(n, scale[0], scale[1], x, generator)
    log_r = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), x, generator)
    r = torch.exp(log_r)
    box_w = torch.sqrt(area * r).clamp(max=1.0)  # fractions of the width / height
    box_h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (_uniform(n, -1.0, 1.0, x, generator)) * (1 - box_w)  # box centre in [-1, 1] coordinates
    cy = (_uniform(n, -1.0, 1.0, x, generator)) * (1 - box_h)
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2] = box_w, cx
    theta[:, 1, 1], theta[:, 1, 2] = box_h, cy
    grid = F.affine_grid(theta, [n, c, out_h, out_w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 3:
        weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device)[None, :, None, None]
        return (x * weights).sum(1, keepdim=True)
    return x.mean(1, keepdim=True)


def color_jitter(
    x: torch.Tensor,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    p: float = 0.8,
    value_range: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random brightness, contrast and saturation per sample, applied with probability ``p``.

    Factors are drawn from ``U[max(0, 1 - a), 1 + a]`` and applied in the fixed order
    brightness (``x·b``), contrast (blend with the image's mean gray), saturation (blend
    with the pixel's gray; no effect on 1-channel images); the result is clamped to
    ``value_range``. Hue is not jittered. All draws happen for every sample, so the random
    stream does not depend on the data.

    Args:
        x: floating batch ``(N, C, H, W)`` with values in ``value_range``.
        brightness: strength a ≥ 0 of the brightness jitter.
        contrast: strength ≥ 0 of the contrast jitter.
        saturation: strength ≥ 0 of the saturation jitter.
        p: probability of jittering a sample.
        value_range: ``(low, high)`` of valid pixel values.
        generator: source of randomness.

    Returns:
        A new tensor of the same shape, values in ``value_range``.

    Examples:
        >>> x = torch.rand(4, 3, 8, 8)
        >>> y = color_jitter(x, generator=torch.Generator().manual_seed(0))
        >>> y.shape == x.shape, bool(y.min() >= 0), bool(y.max() <= 1)
        (True, True, True)
    """
    _check_images(x, "color_jitter")
    if min(brightness, contrast, saturation) < 0 or not 0 <= p <= 1:
        raise InvalidOptionError(
            f"jitter strengths must be >= 0 and p in [0, 1], got {brightness}, {contrast}, {saturation}, p={p}."
        )
    n = x.shape[0]
    shape = (n, 1, 1, 1)
    b = _uniform(n, max(0.0, 1 - brightness), 1 + brightness, x, generator).view(shape)
    c = _uniform(n, max(0.0, 1 - contrast), 1 + contrast, x, generator).view(shape)
    s = _uniform(n, max(0.0, 1 - saturation), 1 + saturation, x, generator).view(shape)
    apply = (_uniform(n, 0.0, 1.0, x, generator) < p).view(shape)
    low, high = value_range
    out = (x * b).clamp(low, high)
    mean = _gray(out).mean(dim=(1, 2, 3), keepdim=True)
    out = ((out - mean) * c + mean).clamp(low, high)
    if x.shape[1] > 1:
        gray = _gray(out)
        out = ((out - gray) * s + gray).clamp(low, high)
    return torch.where(apply, out, x)


def random_grayscale(x: torch.Tensor, p: float = 0.2, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each sample by its gray image (ITU-R 601 luma for RGB, channel mean otherwise) with probability ``p``.

    Args:
        x: floating batch ``(N, C, H, W)``.
        p: probability per sample.
        generator: source of randomness.

    Returns:
        A new tensor of the same shape (the gray channel repeated ``C`` times).

    Examples:
        >>> x = torch.rand(2, 3, 4, 4)
        >>> y = random_grayscale(x, p=1.0)
        >>> bool((y[:, 0] == y[:, 1]).all())
        True
    """
    _check_images(x, "random_grayscale")
    if not 0 <= p <= 1:
        raise InvalidOptionError(f"p must be in [0, 1], got {p}.")
    apply = (_uniform(x.shape[0], 0.0, 1.0, x, generator) < p).view(-1, 1, 1, 1)
    return torch.where(apply, _gray(x).expand_as(x), x)


class VisionViews:
    """The contrastive view of an image batch: resized crop, flip, colour jitter, grayscale.

    Args:
        scale: area range of :func:`random_resized_crop` (the SimCLR default is (0.08, 1);
            small images do better with a larger lower end).
        flip_p: probability of a horizontal flip.
        jitter: strength of brightness, contrast and saturation jitter.
        jitter_p: probability of jittering a sample.
        grayscale_p: probability of converting a sample to gray.
        value_range: valid pixel range, used for clamping in the jitter.
        mean: per-channel mean to normalise with at the end (``None``: no normalisation).
        std: per-channel std, with ``mean``.
        generator: source of randomness.

    Examples:
        >>> views = VisionViews(generator=torch.Generator().manual_seed(0))
        >>> views(torch.rand(4, 3, 8, 8)).shape
        torch.Size([4, 3, 8, 8])
    """

    def __init__(
        self,
        scale: tuple[float, float] = (0.08, 1.0),
        flip_p: float = 0.5,
        jitter: float = 0.4,
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        value_range: tuple[float, float] = (0.0, 1.0),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if (mean is None) != (std is None):
            raise InvalidOptionError("Give both mean and std to normalise, or neither.")
        self.scale = tuple(scale)
        self.flip_p = flip_p
        self.jitter = jitter
        self.jitter_p = jitter_p
        self.grayscale_p = grayscale_p
        self.value_range = tuple(value_range)
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(s) for s in std)
        self.generator = generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Return one random view ``(N, C, H, W)`` of the batch."""
        g = self.generator
        x = random_resized_crop(x, scale=self.scale, generator=g)  # type: ignore[arg-type]
        x = random_horizontal_flip(x, self.flip_p, generator=g)
        x = color_jitter(x, self.jitter, self.jitter, self.jitter, p=self.jitter_p,
                         value_range=self.value_range, generator=g)  # type: ignore[arg-type]
        x = random_grayscale(x, self.grayscale_p, generator=g)
        if self.mean is not None and self.std is not None:
            x = normalize(x, self.mean, self.std)
        return x

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(scale={self.scale}, flip_p={self.flip_p}, jitter={self.jitter}, "
                f"jitter_p={self.jitter_p}, grayscale_p={self.grayscale_p})")


class StandardAugment(CifarTrainAugment):
    """IUNET's supervised-branch augmentation for images: zero-padded random crop, then flip.

    The library's :class:`~torch_prune_ext.data.CifarTrainAugment` with the crop size of
    the input and no normalisation.

    Args:
        padding: zero padding on each side before cropping.
        flip_p: probability of a horizontal flip (0 for digits, where mirroring changes meaning).
        generator: source of randomness.

    Examples:
        >>> StandardAugment(padding=2)(torch.rand(3, 1, 28, 28)).shape
        torch.Size([3, 1, 28, 28])
    """

    def __init__(self, padding: int = 4, flip_p: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__(size=None, padding=padding, flip_p=flip_p, generator=generator)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(padding={self.padding}, flip_p={self.flip_p})"


class Scarf:
    """SCARF corruption for tabular rows, fitted on the training rows.

    For each row, exactly ``round(corruption · F)`` of its ``F`` features, chosen uniformly
    without replacement, are replaced; each replaced value is that feature's value in a
    training row drawn uniformly at random (independently per entry), i.e. a draw from the
    feature's empirical marginal. (The drawn row can be the row itself; on a training set
    of any size this happens with probability 1/N per entry.)

    Args:
        train_rows: the training features ``(N, F)`` that the marginals come from.
        corruption: the fraction of features replaced per row, in [0, 1] (0.6 in SCARF).
        generator: source of randomness.

    Raises:
        ValueError: ``train_rows`` is not a non-empty 2-D floating tensor, or a bad fraction.

    Examples:
        >>> rows = torch.arange(12.0).reshape(4, 3)
        >>> scarf = Scarf(rows, corruption=2 / 3, generator=torch.Generator().manual_seed(0))
        >>> view = scarf(rows)
        >>> (view != rows).sum(1).le(2).all().item(), view.shape
        (True, torch.Size([4, 3]))
    """

    def __init__(self, train_rows: torch.Tensor, corruption: float = 0.6, generator: torch.Generator | None = None) -> None:
        if not isinstance(train_rows, torch.Tensor) or train_rows.ndim != 2 or train_rows.shape[0] < 1:
            shape = tuple(train_rows.shape) if isinstance(train_rows, torch.Tensor) else type(train_rows).__name__
            raise DataError(f"Scarf needs the training rows as a non-empty (N, F) tensor, got {shape}.")
        if not 0.0 <= corruption <= 1.0:
            raise InvalidOptionError(f"corruption must be a fraction in [0, 1], got {corruption}.")
        self.train_rows = train_rows.detach()
        self.corruption = float(corruption)
        self.generator = generator

    @property
    def n_replaced(self) -> int:
        """How many features of each row are replaced: ``round(corruption · F)``."""
        return round(self.corruption * self.train_rows.shape[1])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Return a corrupted copy of the rows ``x`` ``(B, F)``."""
        if x.ndim != 2 or x.shape[1] != self.train_rows.shape[1]:
            raise BatchShapeError(
                f"Scarf was fitted on rows with {self.train_rows.shape[1]} features, got a batch {tuple(x.shape)}."
            )
        b, f = x.shape
        g = self.generator
        device = g.device if g is not None else x.device
        order = torch.rand(b, f, generator=g, device=device).argsort(dim=1)
        replace = torch.zeros(b, f, dtype=torch.bool, device=device)
        replace.scatter_(1, order[:, : self.n_replaced], True)
        donors = torch.randint(0, self.train_rows.shape[0], (b, f), generator=g, device=device)
        rows = self.train_rows.to(x.device)
        values = rows[donors.to(x.device), torch.arange(f, device=x.device)[None, :]]
        return torch.where(replace.to(x.device), values.to(x.dtype), x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rows={self.train_rows.shape[0]}, corruption={self.corruption})"
