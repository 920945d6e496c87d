"""Exceptions raised for bad input, and the two warnings about empty layers.

Every exception here derives from :class:`PruningError` and from the built-in
exception a Python user would expect (``ValueError`` for a bad value, ``TypeError``
for a bad type, ...), so that ``except ValueError`` keeps working. Messages name
the problem and the fix. None of them is raised after the model was modified.
"""

from __future__ import annotations


class PruningError(Exception):
    """Base class of every error raised by ``torch_prune_ext``."""


class InvalidAmountError(PruningError, ValueError):
    """``amount`` or ``sparsity`` is outside its range or of the wrong type."""


class InvalidOptionError(PruningError, ValueError):
    """A method option has a bad value, or two options contradict each other."""


class UnknownOptionError(PruningError, TypeError):
    """A keyword argument that the method does not know."""


class UnknownMethodError(PruningError, ValueError):
    """A method name that is not in the method table."""


class TargetError(PruningError, ValueError):
    """The target list is empty, malformed, on several devices, or does not match."""


class MissingDataError(PruningError, ValueError):
    """A method that needs data (or labels, or an input shape) got none."""


class BatchShapeError(PruningError, ValueError):
    """A data batch that the model cannot run on."""


class NonFiniteScoreError(PruningError, FloatingPointError):
    """The scores contain NaN or infinity."""


class NonFiniteLossError(PruningError, FloatingPointError):
    """A training loss became NaN or infinity."""


class LayerCollapseError(PruningError, RuntimeError):
    """The mask would disconnect the network (``on_collapse="raise"``)."""


class CheckpointError(PruningError, ValueError):
    """A state dict that does not fit the model."""


class UnsupportedLayerError(PruningError, TypeError):
    """A layer or activation that the method cannot treat (e.g. PX's path decomposition)."""


class ModelOutputError(PruningError, TypeError):
    """The model's forward returns something the method cannot score (it needs one tensor)."""


class ModelForwardError(PruningError, RuntimeError):
    """The model's forward is not the same from one pass to the next (other layers, other order,
    other shapes), so a method that replays a recorded pass cannot score it."""


class MissingDependencyError(PruningError, ImportError):
    """An optional dependency (matplotlib, scikit-learn, ...) is not installed; the message names the extra."""


class DistributedMismatchError(PruningError, RuntimeError):
    """Under distributed scoring, the ranks disagree (weights, seeds, data or the final masks).

    Raised on every rank at once, before the model is changed.
    """


class ModelSpecError(PruningError, ValueError):
    """A model named as ``module:function`` that cannot be imported or does not build an ``nn.Module``."""


class DataError(PruningError, ValueError):
    """A data set, split or batch that cannot be used: an unknown name or split, a malformed file,
    out-of-range indices, labels of the wrong shape or too few examples of a class."""


class DataNotFoundError(PruningError, FileNotFoundError):
    """A data folder or file that is not where it was looked for; the message lists the folders searched."""


class ModelConfigError(PruningError, ValueError):
    """A model builder (``torch_prune_ext.models``) got a bad argument: a width, depth, plan or class count."""


class InvalidTypeError(PruningError, TypeError):
    """An argument of the wrong type, e.g. a model that is not an ``nn.Module``."""


class UnknownNameError(PruningError, KeyError):
    """A lookup by name (e.g. a pipeline stage) that names nothing; the message lists the names there are."""

    def __str__(self) -> str:
        # KeyError.__str__ quotes its argument (repr); show the sentence as written.
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class RankFailedError(PruningError, RuntimeError):
    """Under distributed scoring, another rank raised: the healthy ranks stop with this error, naming
    the failing rank and its error, instead of waiting for it (the failing rank raises its own error)."""


# --------------------------------------------------------------------------- warnings
class LayerCollapseWarning(UserWarning):
    """The mask cuts every input-to-output path (``on_collapse="warn"``); the mask is applied."""


class LayerEmptiedWarning(UserWarning):
    """A target is pruned to density 0 but the network is not disconnected (a live skip path,
    or the path check could not run); warned under ``on_collapse="warn"`` and ``"raise"``."""
