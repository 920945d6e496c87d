"""Batched data augmentation in plain PyTorch (no torchvision), on any device.

All functions take a batch ``(N, C, H, W)`` and treat every sample independently, with
no Python loop over samples. Randomness comes from ``generator`` when one is given
(then results are reproducible), else from PyTorch's global generator of the input's
device. Random numbers are drawn on the generator's device and moved to the input's.

For the usual CIFAR pipeline, crop and flip the [0, 1] images and normalise last, so
that the crop's zero padding is black as in torchvision; padding normalised images
pads with the mean colour instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import BatchShapeError, InvalidOptionError

__all__ = ["CifarTrainAugment", "Transform", "normalize", "random_crop", "random_horizontal_flip"]

#: A batch transform ``x -> x'`` (augmentation, normalisation, a contrastive view, ...).
Transform = Callable[[torch.Tensor], torch.Tensor]


def _check_batch(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise BatchShapeError(f"{name} expects a batch (N, C, H, W), got {shape}; add a batch dimension with x[None].")


def _draw_device(x: torch.Tensor, generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else x.device


def random_crop(
    x: torch.Tensor,
    size: int | tuple[int, int] = 32,
    padding: int = 4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Zero-pad every side by ``padding``, then crop a random ``size`` window per sample.

    The top offsets are drawn first, then the left offsets, each as
    ``torch.randint(0, H + 2 * padding - height + 1, (N,), generator=generator)``.

    Args:
        x: batch ``(N, C, H, W)``.
        size: output ``height`` and ``width`` (an int for a square).
        padding: zeros added on each side before cropping (0 or more).
        generator: source of randomness; results are reproducible when given.

    Returns:
        A new tensor ``(N, C, height, width)``; each sample is a window of its padded input.

    Raises:
        BatchShapeError: (a ``ValueError``) if ``x`` is not 4-D.
        InvalidOptionError: (a ``ValueError``) if ``padding`` is negative, or the window does not fit.

    Examples:
        >>> x = torch.rand(8, 3, 32, 32)
        >>> random_crop(x, 32, 4, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([8, 3, 32, 32])
    """
    _check_batch(x, "random_crop")
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if padding < 0:
        raise InvalidOptionError(f"padding must be >= 0, got {padding}.")
    n, _, h, w = x.shape
    padded_h, padded_w = h + 2 * padding, w + 2 * padding
    if not (0 < height <= padded_h and 0 < width <= padded_w):
        raise InvalidOptionError(
            f"crop size {(height, width)} does not fit the padded image {(padded_h, padded_w)}; "
            "use a smaller size or more padding."
        )
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    device = _draw_device(x, generator)
    top = torch.randint(0, padded_h - height + 1, (n,), generator=generator, device=device).to(x.device)
    left = torch.randint(0, padded_w - width + 1, (n,), generator=generator, device=device).to(x.device)
    rows = top[:, None] + torch.arange(height, device=x.device)  # (N, height)
    cols = left[:, None] + torch.arange(width, device=x.device)  # (N, width)
    samples = torch.arange(n, device=x.device)[:, None, None, None]
    channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[samples, channels, rows[:, None, :, None], cols[:, None, None, :]]


def random_horizontal_flip(
    x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mirror each sample left-right with probability ``p``.

    Sample ``i`` is flipped where ``torch.rand(N, generator=generator)[i] < p``.

    Args:
        x: batch ``(N, C, H, W)``.
        p: probability of flipping a sample, in [0, 1].
        generator: source of randomness; results are reproducible when given.

    Returns:
        A new tensor of the same shape.

    Raises:
        BatchShapeError: (a ``ValueError``) if ``x`` is not 4-D.
        InvalidOptionError: (a ``ValueError``) if ``p`` is outside [0, 1].

    Examples:
        >>> x = torch.arange(4.0).reshape(1, 1, 1, 4)
        >>> random_horizontal_flip(x, p=1.0).flatten().tolist()
        [3.0, 2.0, 1.0, 0.0]
    """
    _check_batch(x, "random_horizontal_flip")
    if not 0.0 <= p <= 1.0:
        raise InvalidOptionError(f"p must be in [0, 1], got {p}.")
    draw = torch.rand(x.shape[0], generator=generator, device=_draw_device(x, generator))
    flip = (draw < p).to(x.device)[:, None, None, None]
    return torch.where(flip, x.flip(-1), x)


def normalize(x: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Standardise per channel: ``(x - mean[c]) / std[c]``.

    Args:
        x: floating batch ``(N, C, H, W)`` (or any tensor whose dimension -3 is the channel).
        mean: one value per channel.
        std: one positive value per channel.

    Returns:
        A new tensor of the same shape and dtype.

    Raises:
        BatchShapeError: (a ``ValueError``) if ``x`` is not a floating ``(..., C, H, W)`` tensor.
        InvalidOptionError: (a ``ValueError``) if ``mean``/``std`` do not have ``C`` entries, or a std is not positive.

    Examples:
        >>> normalize(torch.ones(1, 2, 1, 1), (0.5, 0.0), (0.5, 2.0)).flatten().tolist()
        [1.0, 0.5]
    """
    if not x.is_floating_point():
        raise BatchShapeError(f"normalize needs a floating tensor, got {x.dtype}; convert with x.float() / 255.")
    if x.ndim < 3:
        raise BatchShapeError(f"normalize expects (..., C, H, W), got shape {tuple(x.shape)}.")
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(-1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(-1)
    channels = x.shape[-3]
    if mean_t.numel() != channels or std_t.numel() != channels:
        raise InvalidOptionError(
            f"mean and std need one value per channel ({channels}), got {mean_t.numel()} and {std_t.numel()}."
        )
    if bool((std_t <= 0).any()):
        raise InvalidOptionError(f"std must be positive, got {std_t.tolist()}.")
    return (x - mean_t[:, None, None]) / std_t[:, None, None]


class CifarTrainAugment:
    """The standard CIFAR training augmentation: random crop (padding 4) then horizontal flip.

    Optionally normalises afterwards (give ``mean`` and ``std``), so the crop pads with
    black on [0, 1] images as torchvision's ``RandomCrop(32, padding=4)`` does.

    Args:
        size: crop size (an int for a square); ``None`` = the size of each input batch.
        padding: zero padding on each side before cropping.
        flip_p: probability of a horizontal flip.
        mean: per-channel mean to normalise with after augmenting (``None``: no normalisation).
        std: per-channel std, required together with ``mean``.
        generator: source of randomness shared by crop and flip; reproducible when given.

    Examples:
        >>> augment = CifarTrainAugment(generator=torch.Generator().manual_seed(0))
        >>> augment(torch.rand(4, 3, 32, 32)).shape
        torch.Size([4, 3, 32, 32])
    """

    def __init__(
        self,
        size: int | tuple[int, int] | None = 32,
        padding: int = 4,
        flip_p: float = 0.5,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if (mean is None) != (std is None):
            raise InvalidOptionError("Give both mean and std to normalise, or neither.")
        self.size = size
        self.padding = padding
        self.flip_p = flip_p
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(s) for s in std)
        self.generator = generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Augment a batch ``(N, C, H, W)``; returns a new tensor ``(N, C, size, size)`` (same size for ``size=None``)."""
        size = (x.shape[-2], x.shape[-1]) if self.size is None else self.size
        x = random_crop(x, size, self.padding, generator=self.generator)
        x = random_horizontal_flip(x, self.flip_p, generator=self.generator)
        if self.mean is not None and self.std is not None:
            x = normalize(x, self.mean, self.std)
        return x

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, padding={self.padding}, flip_p={self.flip_p}, "
            f"mean={self.mean}, std={self.std})"
        )
