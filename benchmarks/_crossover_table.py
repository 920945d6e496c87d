"""Writing measured thresholds into a crossover table without losing the ones another benchmark measured.

``torch_prune_ext/kernels/crossover_cpu.json`` holds the Linear thresholds (``benchmarks/masked_matmul.py``)
and the Conv2d threshold (``benchmarks/conv_crossover.py``) side by side; each benchmark replaces only
its own keys and its own provenance entry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from _gpu_common import save_json  # benchmarks/ is on sys.path when run as a script

__all__ = ["merge_table"]


def merge_table(path: Path, device: str, values: Mapping[str, Any], provenance_key: str,
                provenance: Mapping[str, Any]) -> dict[str, Any]:
    """Update ``path``'s ``device`` section with ``values`` and set ``provenance_key``; other keys are kept.

    Args:
        path: the JSON table (created when missing; an unreadable file is replaced).
        device: the section, ``"cpu"`` or ``"cuda"``.
        values: threshold keys of that section to replace.
        provenance_key: where the measurement's provenance goes (e.g. ``"measured_conv"``).
        provenance: command, load, versions...

    Returns:
        The table written.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = Path(folder) / "t.json"
        ...     _ = merge_table(path, "cpu", {"csr_max_density": 0.1}, "measured", {"by": "linear"})
        ...     table = merge_table(path, "cpu", {"conv_max_block_density": {"32": 0.2}}, "measured_conv", {"by": "conv"})
        >>> table["cpu"], sorted(table)
        ({'csr_max_density': 0.1, 'conv_max_block_density': {'32': 0.2}}, ['cpu', 'measured', 'measured_conv'])
    """
    path = Path(path)
    try:
        table = json.loads(path.read_text())
        table = table if isinstance(table, dict) else {}
    except (OSError, ValueError):
        table = {}
    section = table.get(device) if isinstance(table.get(device), dict) else {}
    table[device] = {**section, **values}
    table[provenance_key] = dict(provenance)
    save_json(path, table)
    return table
