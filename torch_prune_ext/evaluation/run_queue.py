"""The order of a comparison's runs, and running the pending ones seed by seed under a deadline.

:func:`~torch_prune_ext.evaluation.compare.run_comparison` plans every run of its configuration
(:func:`planned_runs`), leaves out those already in its CSV, and hands the rest to
:func:`run_pending` with a maker of each seed's runner (the seed's initialisation and pruning
batch are built once, when its first run starts).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from .results import DENSE, RunResult

if TYPE_CHECKING:  # the config module imports this one
    from .compare import CompareConfig

logger = logging.getLogger("torch_prune_ext")

__all__ = ["Run", "planned_runs", "run_pending", "torch_threads"]

#: One run: ``(seed, method label, sparsity)``.
Run = tuple[int, str, float]


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside, the previous value restored on exit.

    Examples:
        >>> before = torch.get_num_threads()
        >>> with torch_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def planned_runs(config: CompareConfig, methods: Sequence[str]) -> list[Run]:
    """Every run of ``config`` in run order: per seed the dense row (if included), then sparsity-major.

    Args:
        config: the comparison's configuration (its seeds, sparsities and ``include_dense``).
        methods: the method labels that can run.

    Returns:
        ``(seed, method, sparsity)`` tuples.

    Examples:
        >>> from types import SimpleNamespace
        >>> planned_runs(SimpleNamespace(seeds=(0,), sparsities=(0.5, 0.9), include_dense=True), ["snip"])
        [(0, 'dense', 0.0), (0, 'snip', 0.5), (0, 'snip', 0.9)]
    """
    runs = []
    for seed in config.seeds:
        if config.include_dense:
            runs.append((seed, DENSE, 0.0))
        runs += [(seed, method, sparsity) for sparsity in config.sparsities for method in methods]
    return runs


def run_pending(
    config: CompareConfig,
    pending: Sequence[Run],
    runner_of_seed: Callable[[int], Callable[[str, float], RunResult]],
    record: Callable[[Run, RunResult], None],
    on_row: Callable[[RunResult], None] | None,
    deadline: float | None,
) -> int:
    """Run ``pending`` seed by seed (in its order), recording every row as soon as it is done.

    Args:
        config: the configuration (its ``threads`` and ``progress``).
        pending: the runs to do, grouped by seed as :func:`planned_runs` orders them.
        runner_of_seed: makes the runner of a seed, called once per seed before its first run;
            the runner maps ``(method, sparsity)`` to the run's row.
        record: stores a finished run's row (in the CSV and the rows done).
        on_row: called with every new row after ``record``.
        deadline: a ``time.perf_counter()`` value after which no run starts; None: no limit.

    Returns:
        How many runs were done.
    """
    count = 0
    seeds = list(dict.fromkeys(seed for seed, _, _ in pending))
    with torch_threads(config.threads), tqdm(total=len(pending), desc="compare", disable=not config.progress) as bar:
        for seed in seeds:
            if deadline is not None and time.perf_counter() >= deadline:
                break
            run = runner_of_seed(seed)
            for method, sparsity in [(m, s) for sd, m, s in pending if sd == seed]:
                if deadline is not None and time.perf_counter() >= deadline:
                    return count
                bar.set_postfix_str(f"seed {seed} {method} {sparsity:g}")
                row = run(method, sparsity)
                record((seed, method, sparsity), row)
                count += 1
                bar.update()
                logger.info("seed %d %s %g: accuracy %.4f, density %.5f, prune %.2f s, train %.1f s%s", seed,
                            method, sparsity, row.test_accuracy, row.density, row.prune_seconds, row.train_seconds,
                            f" ({row.note})" if row.note else "")
                if on_row is not None:
                    on_row(row)
    return count
