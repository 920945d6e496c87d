"""GPU suite steps: accuracy rows in the time left, as concurrent ``benchmarks/accuracy.py`` workers.

ResNet-20 leaves an H200 mostly idle, so a preset is split into parts (one seed and a subset of the
methods each) run as up to ``--workers`` concurrent processes, each with its own results folder under
``parts/``. ``accuracy.py`` itself skips the runs already in a part's CSV, so a later call continues
every part; the parts are then merged into one CSV, markdown and plot in the results folder.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _gpu_common import ROOT, Context, Outcome, provenance

ACCURACY = ROOT / "benchmarks" / "accuracy.py"

#: accuracy.py's option names by role: the one place to adjust after merging a branch that renames them.
#: A role whose option is missing from accuracy.py is left out of the command (and said in the summary).
OPTIONS = {"preset": "--preset", "device": "--device", "seeds": "--seeds", "methods": "--methods",
           "sparsities": "--sparsities", "results_dir": "--results-dir", "time_limit": "--time-limit",
           "no_progress": "--no-progress", "no_plots": "--no-plots"}


@dataclasses.dataclass(frozen=True)
class AccuracyJob:
    """One accuracy comparison of the suite.

    Attributes:
        stem: the merged files' name in the results folder (``<stem>.csv/.md/.png``).
        preset: the preset of ``accuracy.py``.
        seeds: the seeds.
        methods: the methods (None: the preset's).
        sparsities: the sparsities (None: the preset's).
    """

    stem: str
    preset: str
    seeds: tuple[int, ...]
    methods: tuple[str, ...] | None = None
    sparsities: tuple[float, ...] | None = None


def budget_job(ctx: Context) -> AccuracyJob:
    """Issue 13's three-seed CIFAR budget preset, every method (the dry run: the ``smoke`` preset)."""
    if ctx.tiny:
        return AccuracyJob("accuracy_smoke", "smoke", (0, 1))
    return AccuracyJob("accuracy_cifar-resnet20", "cifar-resnet20", (0, 1, 2))


def paper_job(ctx: Context) -> AccuracyJob:
    """The paper-recipe rows of NTK-SAP and PX at 98.2% (the dry run: one smoke cell)."""
    if ctx.tiny:
        return AccuracyJob("accuracy_smoke_paper", "smoke", (0,), ("snip",), (0.9,))
    return AccuracyJob("accuracy_cifar-resnet20-gpu-seeds_982", "cifar-resnet20-gpu-seeds", (0, 1, 2),
                       ("ntksap", "px"), (0.982,))


def supported_options() -> dict[str, str]:
    """The roles of :data:`OPTIONS` whose option ``accuracy.py`` defines."""
    source = ACCURACY.read_text()
    return {role: name for role, name in OPTIONS.items() if f'"{name}"' in source}


def _config(job: AccuracyJob) -> Any:
    """The preset's CompareConfig with the job's seeds, methods and sparsities."""
    sys.path.insert(0, str(ACCURACY.parent))
    from accuracy import PRESETS

    from torch_prune_ext.evaluation.compare import split_methods

    config = PRESETS[job.preset]
    methods = split_methods(job.methods or config.methods)[0]
    return dataclasses.replace(config, seeds=job.seeds, methods=methods,
                               sparsities=job.sparsities or config.sparsities)


def plan_parts(job: AccuracyJob, methods: tuple[str, ...], workers: int) -> list[tuple[str, int, tuple[str, ...]]]:
    """``(name, seed, methods)`` of every part: each seed's methods dealt round-robin into groups.

    Examples:
        >>> job = AccuracyJob("a", "p", (0, 1))
        >>> [(n, s, m) for n, s, m in plan_parts(job, ("x", "y", "z"), 4)][:2]
        [('a-s0-g0', 0, ('x', 'z')), ('a-s0-g1', 0, ('y',))]
    """
    groups = max(1, min(len(methods), math.ceil(workers / len(job.seeds))))
    return [(f"{job.stem}-s{seed}-g{i}", seed, methods[i::groups]) for seed in job.seeds for i in range(groups)]


def _part_csv(ctx: Context, job: AccuracyJob, part: str) -> Path:
    return ctx.results / "parts" / part / f"accuracy_{job.preset}.csv"


def _part_rows(ctx: Context, job: AccuracyJob, part: str) -> list[Any]:
    from torch_prune_ext.evaluation.results import ResultsFile

    path = _part_csv(ctx, job, part)
    return ResultsFile(path).rows if path.is_file() else []


def _part_done(ctx: Context, job: AccuracyJob, config: Any, part: tuple[str, int, tuple[str, ...]]) -> bool:
    name, seed, methods = part
    have = {(r.method, r.sparsity) for r in _part_rows(ctx, job, name) if r.seed == seed}
    want = {(m, s) for m in methods for s in config.sparsities} | ({("dense", 0.0)} if config.include_dense else set())
    return want <= have


def _command(ctx: Context, job: AccuracyJob, part: tuple[str, int, tuple[str, ...]], limit: float,
             options: dict[str, str]) -> list[str]:
    name, seed, methods = part
    values = {"preset": [job.preset], "device": [str(ctx.device)], "seeds": [str(seed)], "methods": list(methods),
              "sparsities": [str(s) for s in job.sparsities or ()], "results_dir": [str(ctx.results / "parts" / name)],
              "time_limit": [f"{max(limit, 0.0):.0f}"], "no_progress": [], "no_plots": []}
    command = [sys.executable, str(ACCURACY)]
    for role, option in options.items():
        if role != "sparsities" or job.sparsities:
            command += [option, *values[role]]
    return command


def _environment(ctx: Context) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(ctx.workers, 1))))
    if ctx.data_root:
        env["TORCH_PRUNE_EXT_DATA"] = ctx.data_root
    return env


def _missing_data(ctx: Context, dataset: str) -> str | None:
    from torch_prune_ext.data.datasets import CIFAR10_FILE, MNIST_FILE, find_data_file

    files = {"cifar10": CIFAR10_FILE, "mnist": MNIST_FILE}
    if dataset not in files:
        return None
    try:
        find_data_file(files[dataset], ctx.data_root)
    except FileNotFoundError as exc:
        return f"no data, accuracy not run: {exc}"
    return None


def _run_parts(ctx: Context, job: AccuracyJob, pending: list, options: dict[str, str]) -> None:
    """Run the pending parts, at most ``ctx.workers`` at a time; every process is ended by the budget's end."""
    margin = 0.0 if ctx.tiny else 45.0  # accuracy.py finishes the run in progress after its time limit
    running: list[tuple[subprocess.Popen, Any]] = []
    queue = list(pending)
    while queue or running:
        while queue and len(running) < ctx.workers and ctx.budget.allows(margin + 5.0):
            part = queue.pop(0)
            (ctx.results / "parts").mkdir(parents=True, exist_ok=True)
            log = open(ctx.results / "parts" / f"{part[0]}.log", "a")  # noqa: SIM115 - closed when the process ends
            command = _command(ctx, job, part, ctx.budget.left() - margin, options)
            ctx.log(f"accuracy part {part[0]}: {' '.join(command[2:])}")
            running.append((subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                             env=_environment(ctx)), log))
        if queue and not running:
            break  # no budget left to start one
        time.sleep(0.2)
        if ctx.budget.left() <= 0:
            for process, _ in running:
                process.terminate()
        for process, log in list(running):
            if process.poll() is not None:
                log.close()
                running.remove((process, log))


def merge(ctx: Context, job: AccuracyJob, config: Any, parts: list, seconds: float) -> int:
    """Merge the parts' rows into ``<stem>.csv`` and write ``<stem>.md`` (+ plots); returns the runs still owed."""
    from torch_prune_ext.evaluation import write_report
    from torch_prune_ext.evaluation.compare import ComparisonResult
    from torch_prune_ext.evaluation.results import ResultsFile

    rows = {}
    for name, _, _ in parts:
        for row in _part_rows(ctx, job, name):
            rows.setdefault(row.key, row)
    ordered = sorted(rows.values(), key=lambda r: (r.seed, r.sparsity, r.method))
    merged = ctx.results / f"{job.stem}.csv"
    merged.unlink(missing_ok=True)
    store = ResultsFile(merged)
    for row in ordered:
        store.append(row)
    planned = len(config.seeds) * (len(config.methods) * len(config.sparsities) + int(config.include_dense))
    owed = max(planned - len(ordered), 0)
    recipe = collections.Counter(r.recipe for r in ordered).most_common(1)[0][0] if ordered else ""
    result = ComparisonResult(config, config.dataset, recipe, tuple(ordered), (), 0, 0, owed, seconds)
    meta = provenance(ctx, seconds)
    header = [f"{k}: {v}" for k, v in meta.items()] + [f"merged from {len(parts)} part(s) under parts/; {owed} run(s) owed"]
    stem = ctx.results / job.stem
    write_report(result, stem.with_suffix(".md"), accuracy_plot=stem.with_suffix(".png"),
                 profile_plot=stem.with_name(stem.name + "_layers.png"), header_lines=header,
                 plots=False if ctx.tiny else None)
    return owed


def run_accuracy(ctx: Context, job: AccuracyJob) -> Outcome:
    """Step body: check the data, run the owed parts in the time left, merge."""
    started = time.perf_counter()
    config = _config(job)
    missing = _missing_data(ctx, config.dataset)
    if missing:
        return Outcome("skipped", note=missing)
    options = supported_options()
    parts = plan_parts(job, config.methods, ctx.workers)
    pending = [p for p in parts if not _part_done(ctx, job, config, p)]
    if pending:
        _run_parts(ctx, job, pending, options)
    owed = merge(ctx, job, config, parts, time.perf_counter() - started)
    absent = sorted(set(OPTIONS) - set(options))
    note = (f"{owed} run(s) owed (cut by the budget)" if owed else "") + (
        f"; accuracy.py lacks {', '.join(OPTIONS[r] for r in absent)}" if absent else "")
    headline = f"{job.stem}: {len(config.seeds)} seed(s), {len(parts)} part(s), {owed} run(s) owed"
    return Outcome("partial" if owed else "complete", [headline], note.strip("; "))


def accuracy_budget(ctx: Context) -> Outcome:
    """Step: the three-seed CIFAR budget preset (every method)."""
    return run_accuracy(ctx, budget_job(ctx))


def accuracy_paper(ctx: Context) -> Outcome:
    """Step: the paper-recipe rows of NTK-SAP and PX at 98.2%."""
    return run_accuracy(ctx, paper_job(ctx))
