"""LNPT's ``--teacher PATH``: the trained teacher, rebuilt from a checkpoint of the student's architecture."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
import torch
from torch import nn

from ..core.checkpoint import load_pruned_state_dict, read_checkpoint, state_dict_in
from ..errors import CheckpointError
from ..models.spec import build_model
from .common import checkpoint_is_ours

__all__ = ["load_teacher"]


def load_teacher(path: str, model: str, model_kwargs: Mapping[str, Any], device: str | torch.device) -> nn.Module:
    """The teacher network saved at ``path``: ``model`` built with ``model_kwargs`` and loaded, in eval mode.

    Args:
        path: a checkpoint written by ``torch-prune-ext prune`` (pruned or not) or
            ``torch.save(model.state_dict(), path)``.
        model: the ``--model`` of the run (the teacher has the student's architecture).
        model_kwargs: the builder's arguments (``num_classes``).
        device: where the teacher runs.

    Returns:
        The teacher, on ``device``, in eval mode.

    Raises:
        CheckpointError: no readable checkpoint, one of another model, or tensors whose names or
            shapes do not fit ``model`` (the message names the mismatch).

    Examples:
        >>> import tempfile, os
        >>> trained = build_model("torch.nn:Linear", in_features=3, out_features=2)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     torch.save(trained.state_dict(), os.path.join(folder, "t.pt"))
        ...     teacher = load_teacher(os.path.join(folder, "t.pt"), "torch.nn:Linear",
        ...                            {"in_features": 3, "out_features": 2}, "cpu")
        >>> torch.equal(teacher.weight, trained.weight), teacher.training
        (True, False)
    """
    checkpoint = read_checkpoint(path)
    if checkpoint_is_ours(checkpoint) and checkpoint.get("model") != model:
        raise CheckpointError(f"--teacher {path} is a checkpoint of {checkpoint.get('model')}, but --model is {model}; "
                              f"pass a trained {model} (the teacher has the student's architecture).")
    teacher = build_model(model, **model_kwargs)
    try:
        load_pruned_state_dict(teacher, state_dict_in(checkpoint, path))
    except CheckpointError as error:
        raise CheckpointError(f"--teacher {path} does not fit --model {model}: {error} Pass a checkpoint of a "
                              f"trained {model} with the same number of classes.") from error
    return teacher.to(device).eval()

