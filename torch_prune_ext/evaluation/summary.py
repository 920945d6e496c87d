"""Summaries of a comparison: mean ± std tables (markdown and plain text) and plots.

Accuracy cells are the mean over seeds and the *sample* standard deviation (``n - 1``);
a cell with one seed shows the mean alone. Failed runs (NaN accuracy) are counted, not
averaged. Plots need matplotlib (the ``plot`` extra).
"""

from __future__ import annotations

import logging
import math
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.report import format_table
from ..errors import MissingDependencyError
from .results import DENSE, RunResult
from .variants import METHOD_OPTIONS, VARIANTS

if TYPE_CHECKING:
    from .compare import ComparisonResult

logger = logging.getLogger("torch_prune_ext")

__all__ = [
    "CellSummary",
    "accuracy_markdown_table",
    "format_markdown",
    "format_text_summary",
    "per_seed_markdown_table",
    "percent_label",
    "plot_accuracy_vs_density",
    "plot_layer_densities",
    "summarize",
    "write_report",
]


@dataclass(frozen=True)
class CellSummary:
    """The runs of one (method, sparsity) over seeds.

    Attributes:
        method: the method (or ``"dense"``).
        sparsity: the requested sparsity.
        accuracies: the test accuracies of the successful runs, in [0, 1].
        failed: runs without an accuracy (pruning failed).
        prune_seconds: mean pruning time over every run of the cell.
        density: mean actual density over the successful runs (NaN if none).

    Examples:
        >>> cell = CellSummary("snip", 0.9, (0.97, 0.98), 0, 0.1, 0.1)
        >>> cell.n, round(cell.mean, 3), round(cell.std, 5), cell.accuracy_text()
        (2, 0.975, 0.00707, '97.50 ± 0.71')
    """

    method: str
    sparsity: float
    accuracies: tuple[float, ...]
    failed: int
    prune_seconds: float
    density: float

    @property
    def n(self) -> int:
        """The number of successful runs."""
        return len(self.accuracies)

    @property
    def mean(self) -> float:
        """Mean test accuracy (NaN without runs)."""
        return statistics.fmean(self.accuracies) if self.accuracies else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation of the test accuracy (NaN with fewer than two runs)."""
        return statistics.stdev(self.accuracies) if self.n > 1 else math.nan

    def accuracy_text(self, digits: int = 2, expected_n: int | None = None) -> str:
        """``"97.50 ± 0.71"`` in percent; the mean alone for one run; ``"—"`` for none.

        Args:
            digits: decimals of the percentages.
            expected_n: the usual number of runs per cell; a cell with another count says ``(n=k)``.
        """
        if not self.accuracies:
            text = "—"
        elif self.n == 1:
            text = f"{100 * self.mean:.{digits}f}"
        else:
            text = f"{100 * self.mean:.{digits}f} ± {100 * self.std:.{digits}f}"
        if self.accuracies and expected_n is not None and self.n != expected_n:
            text += f" (n={self.n})"
        if self.failed:
            text += f" ({self.failed} failed)"
        return text


def summarize(rows: Iterable[RunResult]) -> list[CellSummary]:
    """Group rows by (method, sparsity) over seeds.

    Args:
        rows: result rows (of one comparison: one model, dataset and recipe).

    Returns:
        One :class:`CellSummary` per (method, sparsity): the dense cell first, then the
        methods in order of first appearance, each by ascending sparsity.

    Examples:
        >>> rows = [RunResult("m", "d", "snip", 0.9, seed, acc, 0.1, 1.0, 0.1, {}, 0.2, "h")
        ...         for seed, acc in ((0, 0.96), (1, 0.98), (2, float("nan")))]
        >>> [(c.method, c.n, c.failed, round(c.mean, 2)) for c in summarize(rows)]
        [('snip', 2, 1, 0.97)]
    """
    groups: dict[tuple[str, float], list[RunResult]] = {}
    for row in rows:
        groups.setdefault((row.method, row.sparsity), []).append(row)
    order = {method: i for i, method in enumerate(dict.fromkeys(m for m, _ in groups))}
    cells = []
    for (method, sparsity), group in sorted(groups.items(),
                                            key=lambda item: (item[0][0] != DENSE, order[item[0][0]], item[0][1])):
        ok = [r for r in group if not r.failed]
        cells.append(CellSummary(
            method, sparsity, tuple(r.test_accuracy for r in ok), len(group) - len(ok),
            statistics.fmean(r.prune_seconds for r in group),
            statistics.fmean(r.density for r in ok) if ok else math.nan,
        ))
    return cells


def percent_label(sparsity: float) -> str:
    """A sparsity as a short percentage.

    Examples:
        >>> percent_label(0.995), percent_label(0.9), percent_label(0.893)
        ('99.5%', '90%', '89.3%')
    """
    return f"{round(100 * sparsity, 4):g}%"


def _pivot(cells: Sequence[CellSummary], text: Any) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of a method × sparsity table of ``text(cell)`` (the dense cell left out)."""
    pruned = [c for c in cells if c.method != DENSE]
    sparsities = sorted({c.sparsity for c in pruned})
    methods = list(dict.fromkeys(c.method for c in pruned))
    by_key = {(c.method, c.sparsity): c for c in pruned}
    headers = ["method", *(percent_label(s) for s in sparsities)]
    rows = [[m, *(text(by_key[(m, s)]) if (m, s) in by_key else "" for s in sparsities)] for m in methods]
    return headers, rows


def _expected_n(cells: Sequence[CellSummary]) -> int:
    return max((c.n + c.failed for c in cells), default=0)


def _markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def accuracy_markdown_table(cells: Sequence[CellSummary], digits: int = 2) -> str:
    """Test accuracy (%) as mean ± std, methods as rows and sparsities as columns, in markdown.

    Examples:
        >>> cells = [CellSummary("snip", 0.9, (0.97, 0.98), 0, 0.1, 0.1), CellSummary("snip", 0.98, (0.9,), 0, 0.1, 0.02)]
        >>> print(accuracy_markdown_table(cells))
        | method | 90% | 98% |
        |---|---|---|
        | snip | 97.50 ± 0.71 | 90.00 (n=1) |
    """
    expected = _expected_n(cells)
    return _markdown(*_pivot(cells, lambda c: c.accuracy_text(digits, expected)))


def per_seed_markdown_table(rows: Sequence[RunResult], digits: int = 2) -> str:
    """Every run's test accuracy (%): a line per (method, sparsity), a column per seed, then mean ± std.

    A failed run shows ``failed``, a run not done yet is blank; a run with a note (emptied or
    collapsed layers, an error) is marked ``*`` (the notes list them).

    Examples:
        >>> rows = [RunResult("m", "d", "snip", 0.9, seed, acc, 0.1, 1.0, 0.1, {}, 0.2, "h", note)
        ...         for seed, acc, note in ((0, 0.96, ""), (1, 0.98, "emptied: fc.weight"))]
        >>> print(per_seed_markdown_table(rows))
        | method | sparsity | seed 0 | seed 1 | mean ± std |
        |---|---|---|---|---|
        | snip | 90% | 96.00 | 98.00* | 97.00 ± 1.41 |
    """
    seeds = sorted({row.seed for row in rows})
    by_key = {(row.method, row.sparsity, row.seed): row for row in rows}

    def run_text(row: RunResult | None) -> str:
        if row is None:
            return ""
        text = "failed" if row.failed else f"{100 * row.test_accuracy:.{digits}f}"
        return text + ("*" if row.note else "")

    lines = []
    for cell in summarize(rows):
        sparsity = "dense" if cell.method == DENSE else percent_label(cell.sparsity)
        lines.append([cell.method, sparsity, *(run_text(by_key.get((cell.method, cell.sparsity, seed)))
                                               for seed in seeds), cell.accuracy_text(digits)])
    return _markdown(["method", "sparsity", *(f"seed {seed}" for seed in seeds), "mean ± std"], lines)


def _dense_text(cells: Sequence[CellSummary]) -> str | None:
    dense = [c for c in cells if c.method == DENSE]
    if not dense:
        return None
    cell = dense[0]
    return f"{cell.accuracy_text()} (n={cell.n})"


def format_text_summary(result: ComparisonResult) -> str:
    """A plain-text accuracy table (via :func:`torch_prune_ext.core.report.format_table`) for the console."""
    cells = summarize(result.rows)
    expected = _expected_n(cells)
    headers, rows = _pivot(cells, lambda c: c.accuracy_text(2, expected))
    lines = [f"test accuracy (%), mean ± std over seeds; {result.data}"]
    dense = _dense_text(cells)
    if dense:
        lines.append(f"dense: {dense}")
    if rows:
        lines += ["", format_table(headers, rows, "l" + "r" * (len(headers) - 1))]
    unknown, variants = _skipped(result)
    if unknown:
        lines.append(f"\nskipped (not in torch_prune_ext.METHODS yet): {', '.join(unknown)}")
    if variants:
        lines.append(f"\nskipped (variants whose options their method does not accept yet): {', '.join(variants)}")
    return "\n".join(lines)


def _skipped(result: ComparisonResult) -> tuple[list[str], list[str]]:
    """The skipped labels split into unknown method names and variants that cannot run yet."""
    variants = [name for name in result.skipped_methods if name.lower() in VARIANTS]
    return [name for name in result.skipped_methods if name not in variants], variants


def _notes(result: ComparisonResult) -> list[str]:
    notes = []
    unknown, variants = _skipped(result)
    if unknown:
        notes.append(f"Skipped, not in `torch_prune_ext.METHODS` yet (they run automatically once they exist): "
                     f"{', '.join(unknown)}.")
    if variants:
        notes.append(f"Skipped, variants whose options their method does not accept yet (they run automatically "
                     f"once it does): {', '.join(variants)}.")
    used = {row.method for row in result.rows}
    for method, options in METHOD_OPTIONS.items():
        if method in used:
            listed = ", ".join(f"{k}={v!r}" for k, v in options.items())
            notes.append(f"`{method}` options: {listed}; its teacher is the seed's trained dense model.")
    for label, variant in VARIANTS.items():
        if label in used:
            notes.append(f"`{label}`: {variant.describe()} (a variant; its rows carry their own recipe hash).")
    if result.pending_runs:
        notes.append(f"**Partial results:** {result.pending_runs} run(s) of this configuration are not done yet; "
                     "run the same command again to continue.")
    if result.ignored_rows:
        notes.append(f"{result.ignored_rows} row(s) of the CSV carry another recipe hash (other settings) and are "
                     "left out of these tables.")
    for row in result.rows:
        if row.note:
            notes.append(f"{row.method} at {percent_label(row.sparsity)}, seed {row.seed}: {row.note}")
    return notes


def format_markdown(
    result: ComparisonResult, header_lines: Sequence[str] = (), plot_lines: Sequence[str] = ()
) -> str:
    """The comparison as a markdown report.

    Args:
        result: the :class:`~torch_prune_ext.evaluation.compare.ComparisonResult`.
        header_lines: extra bullet lines after the title (command, machine, wall time, ...).
        plot_lines: lines about the plots, written at the end.

    Returns:
        The markdown text: the setting, the dense accuracy, the accuracy table (mean ± std
        over seeds), the mean pruning seconds and notes (skipped methods, failures, collapses).
    """
    config = result.config
    cells = summarize(result.rows)
    pruned = [c for c in cells if c.method != DENSE]
    compute = sum(r.prune_seconds + r.train_seconds for r in result.rows)
    lines = [f"# Accuracy after pruning at initialisation: {config.model} on {config.dataset}", ""]
    lines += [f"- {line}" for line in header_lines]
    lines += [
        (f"- data: {result.data}; pruning set: {config.per_class} training examples per class, class-balanced, "
         "drawn once per seed"),
        f"- training (every run): {config.recipe.describe()}",
        (f"- seeds: {', '.join(map(str, config.seeds))}; per seed one initialisation, pruning set and data order "
         "shared by every method"),
        (f"- recipe hash: `{result.recipe_hash}`; {len(result.rows)} runs ({result.new_rows} computed by this "
         f"call), {compute:.0f} s of pruning + training recorded in the rows"),
        ("- sparsity: the requested fraction of zero weights over every Conv/Linear weight (actual densities, "
         "per layer too, are in the CSV)"),
        "",
    ]
    dense = _dense_text(cells)
    if dense:
        lines += [f"Dense (unpruned, same recipe) test accuracy (%): **{dense}**", ""]
    if pruned:
        lines += ["Test accuracy (%), mean ± sample std over seeds:", "", accuracy_markdown_table(cells), ""]
        lines += ["Test accuracy (%) of every seed (`*`: the run has a note, listed below):", "",
                  per_seed_markdown_table(result.rows), ""]
        lines += ["Mean pruning time (s):", "",
                  _markdown(*_pivot(cells, lambda c: f"{c.prune_seconds:.2f}")), ""]
    notes = _notes(result)
    if notes:
        lines += ["Notes:", "", *(f"- {note}" for note in notes), ""]
    lines += list(plot_lines)
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- plots
def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise MissingDependencyError(
            "Plotting a comparison needs matplotlib, which is not installed: `pip install torch-prune-ext[plot]` "
            "(or `pip install matplotlib`), or leave the plots out."
        ) from error
    return plt


def plot_accuracy_vs_density(cells: Sequence[CellSummary], path: str | os.PathLike[str], title: str = "") -> None:
    """Accuracy against density (log scale, decreasing to the right) per method, with ±std bars.

    Args:
        cells: from :func:`summarize`; the dense cell becomes a horizontal band.
        path: the image to write (``.png``).
        title: the figure title.

    Raises:
        MissingDependencyError: matplotlib is not installed.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = "osD^v<>phX*"
    pruned = [c for c in cells if c.method != DENSE and c.n]
    for i, method in enumerate(dict.fromkeys(c.method for c in pruned)):
        points = sorted((c for c in pruned if c.method == method), key=lambda c: c.sparsity)
        ax.errorbar([1 - c.sparsity for c in points], [100 * c.mean for c in points],
                    yerr=[0.0 if math.isnan(c.std) else 100 * c.std for c in points],
                    marker=markers[i % len(markers)], capsize=3, label=method)
    for cell in cells:
        if cell.method == DENSE and cell.n:
            ax.axhline(100 * cell.mean, color="black", linestyle="--", linewidth=1, label="dense")
            if cell.n > 1:
                ax.axhspan(100 * (cell.mean - cell.std), 100 * (cell.mean + cell.std), color="black", alpha=0.08)
    densities = sorted({1 - c.sparsity for c in pruned}, reverse=True)
    if densities:
        ax.set_xscale("log")
        ax.set_xticks(densities)
        ax.set_xticklabels([percent_label(d) for d in densities])
        ax.minorticks_off()
        ax.set_xlim(densities[0] * 1.25, densities[-1] / 1.25)  # decreasing: sparser to the right
    ax.set_xlabel("weights remaining (density, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    _save(plt, fig, ax, path, legend_size=8, legend_columns=2)


def plot_layer_densities(
    rows: Sequence[RunResult], path: str | os.PathLike[str], sparsity: float | None = None, title: str = ""
) -> None:
    """Per-layer density profile of every method at one sparsity (mean over seeds), log scale.

    Args:
        rows: result rows with ``layer_densities``.
        path: the image to write (``.png``).
        sparsity: the sparsity to show; default the highest one in ``rows``.
        title: the figure title (the sparsity is appended).

    Raises:
        MissingDependencyError: matplotlib is not installed.
    """
    plt = _pyplot()
    pruned = [r for r in rows if r.method != DENSE and r.layer_densities]
    fig, ax = plt.subplots(figsize=(max(7.0, 0.28 * max((len(r.layer_densities) for r in pruned), default=0)), 4.8))
    if pruned:
        sparsity = max(r.sparsity for r in pruned) if sparsity is None else sparsity
        chosen = [r for r in pruned if r.sparsity == sparsity]
        layers = list(dict.fromkeys(name for r in chosen for name in r.layer_densities))
        profiles = {}
        for method in dict.fromkeys(r.method for r in chosen):
            group = [r for r in chosen if r.method == method]
            profiles[method] = [statistics.fmean(r.layer_densities.get(name, math.nan) for r in group)
                                for name in layers]
        positive = [m for means in profiles.values() for m in means if m > 0]
        floor = min([1e-4, *positive]) / 4  # where a density of 0 is drawn on the log axis
        for method, means in profiles.items():
            ax.plot(range(len(layers)), [max(m, floor) for m in means], marker=".", label=method)
        ax.axhline(1 - sparsity, color="gray", linestyle=":", label="uniform")
        ax.axhline(floor, color="red", linewidth=0.8, alpha=0.5, label="density 0 (drawn here)")
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels(layers, rotation=90, fontsize=7)
        ax.set_yscale("log")
        title = f"{title} — per-layer density at {percent_label(sparsity)} sparsity".strip(" —")
    ax.set_ylabel("density (kept fraction, log scale)")
    ax.set_title(title, fontsize=10)
    _save(plt, fig, ax, path, legend_size=7, legend_columns=3)


def _save(plt: Any, fig: Any, ax: Any, path: str | os.PathLike[str], legend_size: int, legend_columns: int) -> None:
    """Grid, legend, tight layout; write ``path`` and close the figure."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size, ncol=legend_columns)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(
    result: ComparisonResult,
    markdown_path: str | os.PathLike[str],
    *,
    accuracy_plot: str | os.PathLike[str] | None = None,
    profile_plot: str | os.PathLike[str] | None = None,
    header_lines: Sequence[str] = (),
    plots: bool | None = None,
) -> Path:
    """Write the markdown report and (optionally) the two plots.

    Args:
        result: the comparison.
        markdown_path: where the markdown goes.
        accuracy_plot: the accuracy-vs-density image (``None``: none).
        profile_plot: the per-layer density image at the highest sparsity (``None``: none).
        header_lines: extra bullet lines for the markdown (command, machine, wall time).
        plots: ``None`` draws the plots when matplotlib is installed (else logs a note and
            says so in the markdown); ``True`` requires matplotlib; ``False`` draws none.

    Returns:
        The markdown path.

    Raises:
        MissingDependencyError: ``plots=True`` without matplotlib.
    """
    plot_lines: list[str] = []
    wanted = [(p, kind) for p, kind in ((accuracy_plot, "accuracy"), (profile_plot, "profile")) if p is not None]
    for folder in {Path(markdown_path).parent, *(Path(p).parent for p, _ in wanted)}:
        folder.mkdir(parents=True, exist_ok=True)
    if plots is not False and wanted and result.rows:
        try:
            title = f"{result.config.model} on {result.config.dataset}"
            cells = summarize(result.rows)
            for path, kind in wanted:
                if kind == "accuracy":
                    plot_accuracy_vs_density(cells, path, title)
                    plot_lines.append(f"`{Path(path).name}`: test accuracy against density (log scale), mean ± std.")
                else:
                    plot_layer_densities(result.rows, path, title=title)
                    plot_lines.append(f"`{Path(path).name}`: per-layer density of every method at the highest "
                                      "sparsity (mean over seeds).")
        except MissingDependencyError:
            if plots:
                raise
            logger.warning("No plots: matplotlib is not installed (pip install torch-prune-ext[plot]).")
            plot_lines = ["No plots: matplotlib is not installed."]
    path = Path(markdown_path)
    path.write_text(format_markdown(result, header_lines, plot_lines), encoding="utf-8")
    return path
