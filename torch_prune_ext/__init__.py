"""torch_prune_ext: pruning-at-initialisation methods for ``torch.nn.utils.prune``.

Every method is a drop-in ``torch.nn.utils.prune.BasePruningMethod``::

    from torch.nn.utils import prune
    import torch_prune_ext as tpe

    prune.global_unstructured(tpe.prunable_parameters(model), pruning_method=tpe.SynFlow,
                              amount=0.9, model=model, input_shape=(3, 32, 32))

or, conveniently, ``report = tpe.global_prune(model, "snip", 0.9, data=loader)``. A method's
config object names it wherever a name is accepted:
``tpe.global_prune(model, tpe.NTKSAP.Config(repeats=2), 0.9, data=x)``.
"""

from __future__ import annotations

from .api import compute_scores, global_prune
from .core.blocks import TileReport, tile_report
from .core.checkpoint import load_pruned_state_dict, make_permanent
from .core.config import MethodConfig
from .core.deepcopy import make_deepcopyable
from .core.report import PruneReport, SparsityReport, sparsity_report
from .core.scoring import PruningOptions, RoundState
from .core.targets import prunable_parameters
from .errors import (
    BatchShapeError,
    CheckpointError,
    DistributedMismatchError,
    InvalidAmountError,
    InvalidOptionError,
    LayerCollapseError,
    LayerCollapseWarning,
    LayerEmptiedWarning,
    MissingDataError,
    MissingDependencyError,
    ModelForwardError,
    ModelOutputError,
    ModelSpecError,
    NonFiniteScoreError,
    PruningError,
    RankFailedError,
    TargetError,
    UnknownMethodError,
    UnknownOptionError,
    UnsupportedLayerError,
)
from .kernels import accelerate
from .methods import LNPT, METHODS, NTKSAP, PX, SNIP, GraSP, IterSNIP, Magnitude, PruningMethod, Random, SynFlow
from .methods.lnpt import LNPTConfig, lnpt_targets
from .training import DistillationTrainer, distill, learning_gap, plot_history, weight_distance

__version__ = "0.1.0"

__all__ = [
    "BatchShapeError",
    "CheckpointError",
    "DistillationTrainer",
    "DistributedMismatchError",
    "GraSP",
    "InvalidAmountError",
    "InvalidOptionError",
    "IterSNIP",
    "LNPT",
    "LNPTConfig",
    "LayerCollapseError",
    "LayerCollapseWarning",
    "LayerEmptiedWarning",
    "METHODS",
    "Magnitude",
    "MethodConfig",
    "MissingDataError",
    "MissingDependencyError",
    "ModelForwardError",
    "ModelOutputError",
    "ModelSpecError",
    "NTKSAP",
    "NonFiniteScoreError",
    "PX",
    "PruneReport",
    "PruningError",
    "PruningMethod",
    "PruningOptions",
    "Random",
    "RankFailedError",
    "RoundState",
    "SNIP",
    "SparsityReport",
    "SynFlow",
    "TileReport",
    "TargetError",
    "UnknownMethodError",
    "UnknownOptionError",
    "UnsupportedLayerError",
    "accelerate",
    "compute_scores",
    "distill",
    "global_prune",
    "learning_gap",
    "lnpt_targets",
    "load_pruned_state_dict",
    "make_deepcopyable",
    "make_permanent",
    "plot_history",
    "prunable_parameters",
    "sparsity_report",
    "tile_report",
    "weight_distance",
]
