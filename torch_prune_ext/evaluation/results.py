"""One result row per (method, sparsity, seed), and the append-only CSV that makes a comparison resumable.

Every finished run is appended to the CSV and flushed at once; a later call reads the
file and skips the runs whose key (model, dataset, method, sparsity, seed, recipe hash)
is already there. A line cut off by a killed process is dropped (with a warning) the
next time the file is opened for appending.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import InvalidOptionError

logger = logging.getLogger("torch_prune_ext")

__all__ = ["CSV_COLUMNS", "DENSE", "ResultsFile", "RunKey", "RunResult", "merge_results", "read_results"]

#: The method name of the unpruned baseline row (sparsity 0).
DENSE = "dense"

#: (model, dataset, method, sparsity, seed, recipe hash): what identifies a run.
RunKey = tuple[str, str, str, float, int, str]


@dataclass(frozen=True)
class RunResult:
    """The outcome of one run: prune a fresh copy of the seed's initialisation, train, test.

    Attributes:
        model: the model's name.
        dataset: the dataset's name.
        method: the pruning method's name, or ``"dense"`` for the unpruned baseline.
        sparsity: the requested sparsity (0 for ``"dense"``).
        seed: the seed of the initialisation, the pruning split, the method and the data order.
        test_accuracy: top-1 test accuracy in [0, 1]; NaN when the run failed.
        prune_seconds: wall time of ``global_prune`` (0 for ``"dense"``).
        train_seconds: wall time of training.
        density: the actual fraction of kept weights over every prunable weight (NaN on failure).
        layer_densities: the actual density of every prunable tensor, by qualified name.
        train_loss: the mean training loss of the last epoch.
        recipe: the short hash of everything besides the key that affects the numbers
            (:meth:`CompareConfig.recipe_hash <torch_prune_ext.evaluation.compare.CompareConfig.recipe_hash>`).
        note: what went wrong or is worth knowing (an error, a layer collapse), else ``""``.

    Examples:
        >>> row = RunResult("mlp", "synthetic", "snip", 0.9, 0, 0.75, 0.01, 1.5, 0.1, {"1.weight": 0.1}, 0.3, "ab12")
        >>> RunResult.from_csv_row(row.to_csv_row()) == row
        True
    """

    model: str
    dataset: str
    method: str
    sparsity: float
    seed: int
    test_accuracy: float
    prune_seconds: float
    train_seconds: float
    density: float
    layer_densities: dict[str, float]
    train_loss: float
    recipe: str
    note: str = ""

    @property
    def key(self) -> RunKey:
        """What identifies the run in a CSV."""
        return (self.model, self.dataset, self.method, self.sparsity, self.seed, self.recipe)

    @property
    def failed(self) -> bool:
        """Whether the run has no accuracy (pruning failed)."""
        return math.isnan(self.test_accuracy)

    def to_csv_row(self) -> dict[str, str]:
        """The row as CSV strings (floats in their shortest exact form, densities as JSON): parsing gives it back."""
        row = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "layer_densities":
                row[f.name] = json.dumps(value, separators=(",", ":"))
            else:
                row[f.name] = repr(value) if isinstance(value, float) else str(value)
        return row

    @classmethod
    def from_csv_row(cls, row: dict[str, str]) -> RunResult:
        """Parse a row written by :meth:`to_csv_row`.

        Raises:
            ValueError: for a missing column or an unparsable value.
        """
        return cls(
            model=row["model"], dataset=row["dataset"], method=row["method"], sparsity=float(row["sparsity"]),
            seed=int(row["seed"]), test_accuracy=float(row["test_accuracy"]),
            prune_seconds=float(row["prune_seconds"]), train_seconds=float(row["train_seconds"]),
            density=float(row["density"]),
            layer_densities={str(k): float(v) for k, v in json.loads(row["layer_densities"]).items()},
            train_loss=float(row["train_loss"]), recipe=row["recipe"], note=row["note"] or "",
        )


#: The CSV's columns, in order.
CSV_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RunResult))


def _parse_lines(text: str, path: Path) -> tuple[list[RunResult], int]:
    """The rows of a CSV text and the number of malformed lines dropped."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        return [], 0
    if tuple(reader.fieldnames) != CSV_COLUMNS:
        raise InvalidOptionError(
            f"{path} has the columns {reader.fieldnames}, not those of a comparison ({', '.join(CSV_COLUMNS)}); "
            "write to another file or move this one away."
        )
    rows, bad = [], 0
    for record in reader:
        try:
            if None in record or any(value is None for value in record.values()):
                raise ValueError("wrong number of fields")
            rows.append(RunResult.from_csv_row(record))
        except (ValueError, KeyError, TypeError, json.JSONDecodeError):
            bad += 1
    return rows, bad


def read_results(path: str | os.PathLike[str]) -> list[RunResult]:
    """Every well-formed row of a comparison CSV (an empty list if the file does not exist).

    Args:
        path: the CSV written by :class:`ResultsFile`.

    Returns:
        The rows in file order; malformed lines (a line cut off by a killed run) are skipped
        with a warning.

    Raises:
        InvalidOptionError: the file has other columns than :data:`CSV_COLUMNS`.

    Examples:
        >>> read_results("/nonexistent/results.csv")
        []
    """
    path = Path(path)
    if not path.is_file():
        return []
    rows, bad = _parse_lines(path.read_text(encoding="utf-8"), path)
    if bad:
        logger.warning("%s: skipped %d malformed line(s) (a run killed while writing?)", path, bad)
    return rows


def _csv_text(rows: Iterable[RunResult], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow(row.to_csv_row())
    return buffer.getvalue()


def _write_atomically(path: Path, rows: Iterable[RunResult]) -> None:
    """Write a whole CSV (header and ``rows``) through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(_csv_text(rows, header=True))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def merge_results(parts: Sequence[str | os.PathLike[str]], destination: str | os.PathLike[str]) -> list[RunResult]:
    """Merge comparison CSVs (e.g. written by concurrent processes, one per subset of seeds or methods).

    Args:
        parts: the CSVs to merge; a missing one is an error.
        destination: the merged CSV, rewritten atomically; rows already in it are kept
            (it counts as the first part), so merging again is harmless.

    Returns:
        The merged rows: every distinct run key once, the first occurrence kept (a run
        recorded twice with another accuracy is logged).

    Raises:
        InvalidOptionError: a part does not exist or has other columns.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     for seed in (0, 1):
        ...         ResultsFile(f"{folder}/part{seed}.csv").append(
        ...             RunResult("m", "d", "dense", 0.0, seed, 0.5, 0.0, 1.0, 1.0, {}, 0.7, "h"))
        ...     merged = merge_results([f"{folder}/part0.csv", f"{folder}/part1.csv"], f"{folder}/all.csv")
        ...     [row.seed for row in merged], len(read_results(f"{folder}/all.csv"))
        ([0, 1], 2)
    """
    missing = [str(part) for part in parts if not Path(part).is_file()]
    if missing:
        raise InvalidOptionError(f"No CSV to merge at {', '.join(missing)}; pass the files the parts wrote.")
    merged: dict[RunKey, RunResult] = {}
    for part in [destination, *parts]:
        for row in read_results(part):
            kept = merged.setdefault(row.key, row)
            if kept is not row and kept.test_accuracy != row.test_accuracy:
                logger.warning("%s: run %s recorded twice (accuracy %s and %s); keeping the first", part, row.key,
                               kept.test_accuracy, row.test_accuracy)
    rows = list(merged.values())
    _write_atomically(Path(destination), rows)
    return rows


class ResultsFile:
    """An append-only comparison CSV: read the finished rows, append each new row at once.

    Opening repairs the file when its last line was cut off (it is rewritten atomically
    with the well-formed rows only), so appends always start on a fresh line.

    Args:
        path: the CSV file (created with its header on the first append; parent folders too).

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     results = ResultsFile(f"{folder}/r.csv")
        ...     results.append(RunResult("m", "d", "dense", 0.0, 0, 0.5, 0.0, 1.0, 1.0, {}, 0.7, "h"))
        ...     [row.method for row in ResultsFile(f"{folder}/r.csv").rows]
        ['dense']
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.rows: list[RunResult] = []
        if self.path.is_file():
            text = self.path.read_text(encoding="utf-8")
            self.rows, bad = _parse_lines(text, self.path)
            if bad or (text and not text.endswith("\n")):
                logger.warning("%s: dropping %d malformed line(s) (a run killed while writing?) and rewriting "
                               "the file with the %d complete rows", self.path, bad, len(self.rows))
                self._rewrite()

    def keys(self) -> set[RunKey]:
        """The keys of the rows already in the file."""
        return {row.key for row in self.rows}

    def _rewrite(self) -> None:
        _write_atomically(self.path, self.rows)

    def append(self, row: RunResult) -> None:
        """Append one row (writing the header first for a new file), flushed to disk."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file() or self.path.stat().st_size == 0
        with open(self.path, "a", encoding="utf-8", newline="") as handle:
            handle.write(_csv_text([row], header=new))
            handle.flush()
            os.fsync(handle.fileno())
        self.rows.append(row)
