"""Checks the command-line subcommands share."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import InvalidOptionError

__all__ = ["CHECKPOINT_FORMAT", "check_device", "checkpoint_is_ours"]

#: The ``format`` entry of the checkpoints ``prune`` writes.
CHECKPOINT_FORMAT = "torch_prune_ext.checkpoint/1"


def check_device(name: str) -> torch.device:
    """The torch device ``--device`` names, refused up front when this machine lacks it.

    Args:
        name: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ...

    Returns:
        The device.

    Raises:
        InvalidOptionError: not a device name, or CUDA/MPS absent (the message says what to pass instead).

    Examples:
        >>> check_device("cpu")
        device(type='cpu')
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise InvalidOptionError(f"--device {name!r} is not a torch device; use cpu, cuda or cuda:N.") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidOptionError(f"--device {name} but CUDA is not available here (torch {torch.__version__}); "
                                 "drop --device to run on the CPU.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InvalidOptionError(f"--device {name} but this machine has {torch.cuda.device_count()} CUDA device(s); "
                                 "use cuda:0 .. cuda:N-1.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidOptionError(f"--device {name} but MPS is not available here; drop --device to run on the CPU.")
    return device


def checkpoint_is_ours(checkpoint: Any) -> bool:
    """Whether a file's content is a checkpoint written by ``torch-prune-ext prune``.

    Examples:
        >>> checkpoint_is_ours({"format": CHECKPOINT_FORMAT}), checkpoint_is_ours({"w": torch.zeros(1)})
        (True, False)
    """
    return isinstance(checkpoint, dict) and checkpoint.get("format") == CHECKPOINT_FORMAT
