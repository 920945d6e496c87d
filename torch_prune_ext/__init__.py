"""torch_prune_ext: pruning-at-initialisation methods for ``torch.nn.utils.prune``.

Every method is a drop-in ``torch.nn.utils.prune.BasePruningMethod``::

    from torch.nn.utils import prune
    import torch_prune_ext as tpe

    prune.global_unstructured(tpe.prunable_parameters(model), pruning_method=tpe.SynFlow,
                              amount=0.9, model=model, input_shape=(3, 32, 32))

or, conveniently, ``report = tpe.global_prune(model, "snip", 0.9, data=loader)``.
"""

from __future__ import annotations

from .api import compute_scores, global_prune
from .core.checkpoint import load_pruned_state_dict, make_permanent
from .core.report import PruneReport, SparsityReport, sparsity_report
from .core.scoring import PruningOptions
from .core.targets import prunable_parameters
from .errors import (
    BatchShapeError,
    CheckpointError,
    InvalidAmountError,
    InvalidOptionError,
    LayerCollapseError,
    MissingDataError,
    NonFiniteScoreError,
    PruningError,
    TargetError,
    UnknownMethodError,
    UnknownOptionError,
)
from .methods import METHODS, SNIP, GraSP, IterSNIP, Magnitude, PruningMethod, Random, SynFlow
from .methods import NTKSAP

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "SNIP",
    "BatchShapeError",
    "CheckpointError",
    "GraSP",
    "InvalidAmountError",
    "InvalidOptionError",
    "IterSNIP",
    "LayerCollapseError",
    "Magnitude",
    "MissingDataError",
    "NTKSAP",
    "NonFiniteScoreError",
    "PruneReport",
    "PruningError",
    "PruningMethod",
    "PruningOptions",
    "Random",
    "SparsityReport",
    "SynFlow",
    "TargetError",
    "UnknownMethodError",
    "UnknownOptionError",
    "compute_scores",
    "global_prune",
    "load_pruned_state_dict",
    "make_permanent",
    "prunable_parameters",
    "sparsity_report",
]
