"""What a comparison produced: :class:`ComparisonResult`, and the notes a row carries about its run.

:func:`~torch_prune_ext.evaluation.compare.run_comparison` returns the result; the notes say why a
row's accuracy is NaN (the pruning error) or what the mask did to the network (a layer collapse).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.report import PruneReport
from .results import RunResult

if TYPE_CHECKING:  # the config module imports this one
    from .compare import CompareConfig

__all__ = ["ComparisonResult", "collapse_note", "first_line"]


@dataclass(frozen=True)
class ComparisonResult:
    """What :func:`~torch_prune_ext.evaluation.compare.run_comparison` produced.

    Attributes:
        config: the configuration.
        data: a one-line description of the data.
        recipe_hash: the hash every row of this comparison carries, except variant rows
            (:meth:`CompareConfig.recipe_hash` of their label).
        rows: the rows of the configuration's runs (read from the CSV or just computed),
            in run order: per seed the dense row, then every sparsity × method.
        skipped_methods: requested names that are not in :data:`torch_prune_ext.METHODS`.
        ignored_rows: rows in the CSV with another recipe hash (other settings), left out.
        new_rows: rows computed by this call (the others came from the CSV).
        pending_runs: runs of the configuration not done yet (left for a later call by
            ``time_limit_s``); 0 when the comparison is complete.
        seconds: wall time of this call.
    """

    config: CompareConfig
    data: str
    recipe_hash: str
    rows: tuple[RunResult, ...]
    skipped_methods: tuple[str, ...]
    ignored_rows: int
    new_rows: int
    pending_runs: int
    seconds: float


def first_line(error: BaseException, limit: int = 300) -> str:
    """``"ErrorClass: message"`` on one line, the message cut to ``limit`` characters (a row's note)."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:limit]}"


def collapse_note(report: PruneReport) -> str:
    """``"layer collapse: ..."`` for a disconnected network, ``"emptied: ..."`` for density-0 targets behind a
    live (or unchecked) path, ``""`` otherwise."""
    if report.has_collapse:
        return "layer collapse: " + (", ".join(report.collapsed) or "no input-output path survives")
    if report.emptied:
        checked = "" if report.paths_connected else " (paths not checked)"
        return f"emptied{checked}: " + ", ".join(report.emptied)
    return ""
