"""Import time of ``torch_prune_ext`` against ``import torch``, side by side in fresh interpreters.

Each repeat starts one fresh ``python -c "import torch"`` and one ``python -c "import
torch_prune_ext"`` (alternating which goes first) and times the import inside the child with
``time.perf_counter``; the script reports the medians, their ratio (target: at most 1.5) and
whether ``torch._dynamo`` got imported, with the machine's load average.

Usage (from the repository root)::

    python benchmarks/import_time.py --repeats 7

Writes ``benchmarks/results/import_time.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PROBE = ("import sys, time; t = time.perf_counter(); import {module}; "
         "print(time.perf_counter() - t, 'torch._dynamo' in sys.modules)")


def time_import(module: str) -> tuple[float, bool]:
    """Seconds to import ``module`` in a fresh interpreter, and whether it loaded ``torch._dynamo``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], capture_output=True, text=True,
                         check=True, env=env, cwd=ROOT).stdout.split()
    return float(out[0]), out[1] == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {"torch": [], "torch_prune_ext": []}
    dynamo = False
    for repeat in range(args.repeats):
        order = ("torch", "torch_prune_ext") if repeat % 2 == 0 else ("torch_prune_ext", "torch")
        for module in order:
            seconds, loaded = time_import(module)
            times[module].append(seconds)
            dynamo |= loaded and module == "torch_prune_ext"
    load_after = os.getloadavg()
    torch_s, ours_s = statistics.median(times["torch"]), statistics.median(times["torch_prune_ext"])
    lines = [
        "# Import time", "",
        f"`python benchmarks/import_time.py --repeats {args.repeats}`, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{cpu_name()}, Python {platform.python_version()}, torch {torch.__version__}; shared machine, load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after (1 min). Fresh interpreter per import, the two "
        "alternating; seconds measured inside the child.", "",
        "| import | median s | min s | max s |", "|---|---:|---:|---:|",
        *(f"| `import {m}` | {statistics.median(t):.3f} | {min(t):.3f} | {max(t):.3f} |" for m, t in times.items()),
        "", f"Ratio of the medians: **{ours_s / torch_s:.2f}×** `import torch` (target ≤ 1.5×); "
        f"`torch._dynamo` imported by `import torch_prune_ext`: {'yes' if dynamo else 'no'}.", "",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "import_time.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
