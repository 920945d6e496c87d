"""Shared pieces of ``benchmarks/gpu_suite.py``: the time budget, the run context, resumable tables, provenance.

Every step of the suite appends its rows case by case to its own CSV (:class:`Table`); a case already
in the CSV is not run again, so a second call continues where the first stopped.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


class Budget:
    """Wall-clock seconds granted to one call of the suite.

    Args:
        seconds: the budget.
        clock: a monotonic clock in seconds (for tests).

    Examples:
        >>> budget = Budget(10.0, clock=lambda: 100.0)
        >>> budget.left(), budget.allows(5.0), budget.allows(11.0)
        (10.0, True, False)
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = float(seconds)
        self._clock = clock
        self._start = clock()

    def elapsed(self) -> float:
        """Seconds since the budget started."""
        return self._clock() - self._start

    def left(self) -> float:
        """Seconds left (negative when overrun)."""
        return self.seconds - self.elapsed()

    def allows(self, seconds: float) -> bool:
        """Whether ``seconds`` more still fit."""
        return self.left() >= seconds


@dataclasses.dataclass
class Context:
    """What every step needs to know about this call.

    Attributes:
        results: the results folder (``benchmarks/results/gpu`` or the dry run's).
        device: where the steps run.
        tiny: dry run: tiny shapes, one timed repetition.
        budget: the call's :class:`Budget`.
        command: the command line, for the provenance.
        data_root: folder of the CIFAR-10 ``.npz`` (None: not given).
        table_path: where the crossover table for the dispatcher is written.
        workers: concurrent accuracy worker processes.
    """

    results: Path
    device: torch.device
    tiny: bool
    budget: Budget
    command: str
    data_root: str | None
    table_path: Path
    workers: int

    def log(self, message: str) -> None:
        """Progress line on stdout, flushed (the lead sees how far a killed run got)."""
        print(f"[{self.budget.elapsed():7.1f}s] {message}", flush=True)

    def synchronize(self) -> None:
        """Wait for the device's queued work (a no-op on the CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


@dataclasses.dataclass
class Outcome:
    """What a step reports to the summary.

    Attributes:
        status: ``"complete"``, ``"partial"`` (cut by the budget; the next call continues)
            or ``"skipped"`` (e.g. no data).
        headlines: the numbers worth a line in the summary.
        note: why it is not complete, or anything else the lead must know.
    """

    status: str
    headlines: list[str] = dataclasses.field(default_factory=list)
    note: str = ""

    @classmethod
    def after(cls, cut: bool, headlines: list[str]) -> Outcome:
        """``"partial"`` (noted) when the budget cut the step, else ``"complete"``."""
        return cls("partial" if cut else "complete", headlines, "cut by the budget" if cut else "")


def versions(device: torch.device) -> dict[str, str]:
    """Device name and the versions of torch, triton, CUDA and Python.

    Args:
        device: the device the suite runs on.

    Returns:
        A flat dict of strings.
    """
    try:
        triton_version = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        triton_version = "not installed"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})"
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") == "1":
        name += ", Triton interpreter"
    return {"device": name, "torch": torch.__version__, "triton": triton_version,
            "cuda": str(torch.version.cuda), "python": platform.python_version()}


def provenance(ctx: Context, seconds: float) -> dict[str, Any]:
    """Device, versions, command, date, budget and wall time of a step, for its files."""
    return {**versions(ctx.device), "command": ctx.command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "budget_s": ctx.budget.seconds, "step_wall_s": round(seconds, 1), "dry_run": ctx.tiny,
            "loadavg": [round(v, 2) for v in os.getloadavg()]}


def _parse(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


class Table:
    """A step's CSV, appended case by case; a case already in it is not run again.

    Args:
        path: the CSV file (read when it exists).
        fields: the columns, the first being ``case``.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     Table(Path(folder) / "t.csv", ["case", "ms"]).add([{"case": "a", "ms": 1.5}])
        ...     table = Table(Path(folder) / "t.csv", ["case", "ms"])
        ...     table.has("a"), table.has("b"), table.rows[0]["ms"]
        (True, False, 1.5)
    """

    def __init__(self, path: Path, fields: Sequence[str]) -> None:
        self.path = Path(path)
        self.fields = list(fields)
        self.rows: list[dict[str, Any]] = []
        if self.path.is_file():
            with open(self.path, newline="") as handle:
                self.rows = [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(handle)]

    def has(self, case: str) -> bool:
        """Whether ``case`` already has rows."""
        return any(row["case"] == case for row in self.rows)

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append the rows of one finished case (the header first for a new file), flushed."""
        rows = list(rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerows(rows)
            handle.flush()
        self.rows += [{k: row.get(k, "") for k in self.fields} for row in rows]


class Pending:
    """The cases not yet in ``table``, in order, while the budget still fits ``need_s`` more seconds.

    After the loop, ``cut`` says whether the budget stopped it (the rest is owed to the next call).

    Args:
        ctx: the run context (budget, progress log).
        table: the step's :class:`Table`.
        cases: ``(name, case)`` pairs in priority order.
        need_s: seconds that must be left to start a case.
        label: progress label.
    """

    def __init__(self, ctx: Context, table: Table, cases: Iterable[tuple[str, Any]], need_s: float, label: str) -> None:
        self.ctx, self.table, self.cases, self.need_s, self.label = ctx, table, cases, need_s, label
        self.cut = False

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        for name, case in self.cases:
            if self.table.has(name):
                continue
            if not self.ctx.budget.allows(self.need_s):
                self.cut = True
                return
            self.ctx.log(f"{self.label} {name}")
            yield name, case

    def outcome(self, headlines: list[str]) -> Outcome:
        """The step's :class:`Outcome` after the loop."""
        return Outcome.after(self.cut, headlines)


def fmt(value: Any) -> str:
    """A table cell: floats to 4 significant digits.

    Examples:
        >>> fmt(3.14159), fmt(2.5e-05), fmt("x")
        ('3.142', '2.5e-05', 'x')
    """
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_markdown(path: Path, title: str, ctx: Context, seconds: float, columns: Sequence[str],
                   rows: Sequence[dict[str, Any]], notes: Sequence[str] = ()) -> None:
    """A step's markdown: provenance, notes, then its rows as a table.

    Args:
        path: the ``.md`` file.
        title: the heading.
        ctx: the run context (provenance).
        seconds: wall time of the step in this call.
        columns: the columns shown.
        rows: the rows.
        notes: lines printed above the table.
    """
    meta = provenance(ctx, seconds)
    lines = [f"# {title}", "", *(f"- {k}: `{v}`" if k == "command" else f"- {k}: {v}" for k, v in meta.items()), ""]
    lines += [*notes, ""] if notes else []
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    path.write_text("\n".join(lines) + "\n")


def time_ms(ctx: Context, fn: Callable[[], Any]) -> float:
    """Median milliseconds of ``fn``: ``triton.testing.do_bench`` on CUDA (warm-up, L2 flush), else perf_counter.

    Args:
        ctx: the run context (device; dry runs time one call after one warm-up).
        fn: the work.

    Returns:
        The median time in ms.
    """
    if ctx.device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median"))
    fn()
    times = []
    for _ in range(1 if ctx.tiny else 3):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def save_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON (atomically: a killed run leaves the old file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, default=str) + "\n")
    os.replace(tmp, path)
