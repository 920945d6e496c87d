"""Density schedules: how many entries are pruned after each round.

Round ``r`` of ``R`` targets density ``d ** (r / R)`` ("exponential") or
``1 - (1 - d) * r / R`` ("linear"), ``d`` the final density. Counts are rounded with
Python's ``round`` (as ``torch.nn.utils.prune`` does), never fall below what is already
pruned, never decrease, and the last round hits the requested count exactly.
"""

from __future__ import annotations

from ..errors import InvalidOptionError

SCHEDULES = ("exponential", "linear")


def density_at(final_density: float, round_index: int, rounds: int, schedule: str = "exponential") -> float:
    """Density after round ``round_index`` (1-based) of ``rounds``.

    Examples:
        >>> density_at(0.25, 1, 2)
        0.5
        >>> density_at(0.2, 1, 2, "linear")
        0.6
    """
    if schedule == "exponential":
        return final_density ** (round_index / rounds)
    if schedule == "linear":
        return 1.0 - (1.0 - final_density) * round_index / rounds
    raise InvalidOptionError(f"Unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}.")


def pruned_counts(
    n: int,
    n_pruned_final: int,
    n_already: int,
    rounds: int,
    schedule: str = "exponential",
    final_density: float | None = None,
) -> list[int]:
    """The number of entries pruned after each round.

    Args:
        n: number of entries the densities refer to.
        n_pruned_final: entries pruned after the last round (exact).
        n_already: entries pruned before the first round (a floor for every round).
        rounds: number of rounds, >= 1.
        schedule: ``"exponential"`` or ``"linear"``.
        final_density: the requested final density ``d`` that the rounds interpolate to
            (``1 - sparsity``); default ``1 - n_pruned_final / n``.

    Returns:
        ``rounds`` non-decreasing counts, the last equal to ``n_pruned_final``.

    Examples:
        >>> pruned_counts(100, 99, 0, 2)
        [90, 99]
        >>> pruned_counts(100, 50, 30, 3, "linear")
        [30, 33, 50]
    """
    if schedule not in SCHEDULES:
        raise InvalidOptionError(f"Unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}.")
    if n == 0:
        return [n_pruned_final] * rounds
    if final_density is None:
        final_density = 1.0 - n_pruned_final / n
    counts: list[int] = []
    floor = n_already
    for r in range(1, rounds):
        count = round((1.0 - density_at(final_density, r, rounds, schedule)) * n)
        floor = max(floor, min(count, n_pruned_final))
        counts.append(floor)
    counts.append(n_pruned_final)
    return counts
