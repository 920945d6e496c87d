"""Side-by-side timing for CPU/CUDA benchmarks: candidates measured in alternation, medians reported.

On a shared machine the load changes while a benchmark runs; timing every candidate once per
repeat, in alternating order, lets a load spike hit all of them alike (a block of dense repeats
followed by a block of sparse repeats would not).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping

import torch

__all__ = ["interleaved_ms", "load_average"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_ms(candidates: Mapping[str, Callable[[], object]], repeats: int, device: torch.device | str = "cpu",
                   warmup: int = 1) -> dict[str, float]:
    """Median milliseconds of each candidate, timed in alternation (forward order, then reversed).

    Args:
        candidates: ``{name: work}``; each is called ``warmup + repeats`` times.
        repeats: timed calls per candidate (at least 1).
        device: where the work runs (CUDA work is synchronised around every call).
        warmup: untimed calls per candidate first.

    Returns:
        ``{name: median ms}``.

    Examples:
        >>> times = interleaved_ms({"a": lambda: sum(range(100)), "b": lambda: None}, repeats=3)
        >>> sorted(times), all(t >= 0 for t in times.values())
        (['a', 'b'], True)
    """
    device = torch.device(device)
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            candidates[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(max(1, repeats)):
        for name in (names if rep % 2 == 0 else names[::-1]):
            _sync(device)
            start = time.perf_counter()
            candidates[name]()
            _sync(device)
            samples[name].append(1e3 * (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in samples.items()}


def load_average() -> list[float]:
    """The 1/5/15-minute load averages, rounded (``[]`` where the platform has none).

    Examples:
        >>> len(load_average()) in (0, 3)
        True
    """
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []
