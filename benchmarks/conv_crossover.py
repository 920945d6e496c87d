"""The CPU conv crossover: tile density below which the ``"tap"`` backend beats mkldnn's dense conv.

For a few layer shapes of VGG-16-BN and ResNet-20 on CIFAR-10 inputs, a random tap-major tile
mask at each tile density (``kernels.selfcheck.random_block_mask``, no zeros inside kept tiles),
timed side by side in one run: dense ``nn.Conv2d`` (mkldnn, full weight) and ``AcceleratedConv2d``
with ``backend="tap"`` (same input, NCHW, inference mode), interleaved repeats, medians. The
crossover of a tile size is the largest tested density at which the tap path beats dense on every
shape and batch, and at every lower tested density too (the same rule as ``masked_matmul.py``;
``--rule geomean`` asks the geometric mean over shapes instead). It is written in the format
``accelerate`` reads (``{"cpu": {"conv_max_block_density": {"32": ...}}}``): into
``<results-dir>/conv_crossover.json`` always, and into ``torch_prune_ext/kernels/crossover_cpu.json``
(the Linear keys are kept) with ``--write``. Also ``conv_crossover.csv`` and ``.md``.

Usage::

    python benchmarks/conv_crossover.py --threads 2 --write     # quiet machine, about 1-2 minutes
    python benchmarks/conv_crossover.py --quick --results-dir /tmp/cc   # tiny shapes, seconds
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _crossover_table import merge_table  # noqa: E402
from _gpu_common import fmt, versions  # noqa: E402
from _inference_report import write_csv  # noqa: E402
from _machine import cpu_name  # noqa: E402
from _timing import interleaved_ms, load_average  # noqa: E402

from torch_prune_ext.kernels import AcceleratedConv2d, ConvGeometry  # noqa: E402
from torch_prune_ext.kernels.cpu_conv import tap_occupancy  # noqa: E402
from torch_prune_ext.kernels.dispatch import DEFAULT_TABLE_PATH  # noqa: E402
from torch_prune_ext.kernels.selfcheck import random_block_mask  # noqa: E402

FIELDS = ["shape", "batch", "block", "density", "tile_density", "dense_ms", "tap_ms", "speedup", "max_rel_err",
          "loadavg"]
#: ``in:out:size`` of 3x3 stride-1 layers: VGG-16-BN's stages and ResNet-20's last stage (CIFAR-10).
DEFAULT_SHAPES = ["64:64:32", "128:128:16", "256:256:8", "512:512:4", "512:512:2", "64:64:8"]
QUICK_SHAPES = ["16:16:6", "32:32:4"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (``--quick`` fills the ones not given with tiny values)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--shapes", nargs="+", default=None, help="in:out:size of 3x3 stride-1 convs")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=None, help="default 32")
    parser.add_argument("--densities", nargs="+", type=float, default=None,
                        help="tile densities (default 0.02 0.05 0.1 0.15 0.2 0.25 0.3 0.4)")
    parser.add_argument("--blocks", nargs="+", type=int, default=[32], help="tile sides: 16, 32, 64 (default 32)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per candidate (default 9)")
    parser.add_argument("--rule", choices=["all", "geomean"], default="all",
                        help="beat dense on every shape (default) or on the geometric mean over shapes")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (CI); cannot be combined with --write")
    parser.add_argument("--write", action="store_true", help="update torch_prune_ext/kernels/crossover_cpu.json")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    args.shapes = args.shapes or (QUICK_SHAPES if args.quick else DEFAULT_SHAPES)
    args.batch_sizes = args.batch_sizes or ([2] if args.quick else [32])
    args.densities = sorted(args.densities or ([0.1, 0.5] if args.quick else [0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4]))
    args.repeats = args.repeats or (2 if args.quick else 9)
    if args.quick and args.write:
        parser.error("--quick times tiny shapes, not a measurement: it cannot --write the shipped table")
    try:
        args.shapes = [tuple(int(v) for v in s.split(":")) for s in args.shapes]
    except ValueError:
        parser.error("--shapes takes in:out:size triples, e.g. 256:256:8")
    if any(len(s) != 3 or min(s) < 1 for s in args.shapes):
        parser.error("--shapes takes in:out:size triples of positive integers, e.g. 256:256:8")
    if not all(0.0 < d <= 1.0 for d in args.densities):
        parser.error("--densities must lie in (0, 1]")
    if not set(args.blocks) <= {16, 32, 64}:
        parser.error("--blocks takes tile sides 16, 32 or 64 (the block sizes pruning and the kernels use)")
    if min(args.batch_sizes) < 1 or args.repeats < 1 or (args.threads or 1) < 1:
        parser.error("--batch-sizes, --repeats and --threads must be >= 1")
    return args


def measure(shape: tuple[int, int, int], batch: int, block: int, density: float, repeats: int,
            gen: torch.Generator) -> dict[str, Any]:
    """Dense vs tap for one layer shape, batch, tile side and tile density."""
    c, o, size = shape
    conv = nn.Conv2d(c, o, 3, padding=1, bias=True)
    mask = random_block_mask(conv.weight.shape, block, density, gen, inner_zeros=0.0)
    fast = AcceleratedConv2d(conv.weight.detach(), mask, conv.bias, ConvGeometry.of(conv), backend="tap",
                             block_size=block)
    x = torch.randn(batch, c, size, size, generator=gen)
    with torch.inference_mode():
        ref = nn.functional.conv2d(x, conv.weight * mask, conv.bias, padding=1)
        err = float((fast(x) - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
        load = " ".join(map(str, load_average()))
        times = interleaved_ms({"dense": lambda: conv(x), "tap": lambda: fast(x)}, repeats)
    return dict(shape=f"{c}:{o}:{size}", batch=batch, block=block, density=density,
                tile_density=float(tap_occupancy(mask, block).float().mean()), dense_ms=times["dense"],
                tap_ms=times["tap"], speedup=times["dense"] / times["tap"], max_rel_err=err, loadavg=load)


def crossover(rows: Sequence[dict[str, Any]], block: int, rule: str = "all") -> float:
    """Largest tested density at which tap beats dense (every row, or their geometric mean), and at all below.

    Args:
        rows: measured rows (``block``, ``density``, ``speedup``).
        block: the tile side.
        rule: ``"all"`` (every shape and batch) or ``"geomean"``.

    Returns:
        The threshold (0.0 when tap never beats dense at the lowest density).

    Examples:
        >>> rows = [dict(block=32, density=d, speedup=s) for d, s in [(0.05, 3.0), (0.1, 1.4), (0.2, 0.9)]]
        >>> rows += [dict(block=32, density=d, speedup=s) for d, s in [(0.05, 2.0), (0.1, 0.8), (0.2, 1.1)]]
        >>> crossover(rows, 32), crossover(rows, 32, "geomean")
        (0.05, 0.1)
    """
    best = 0.0
    for density in sorted({r["density"] for r in rows if r["block"] == block}):
        speedups = [r["speedup"] for r in rows if r["block"] == block and r["density"] == density]
        score = min(speedups) if rule == "all" else math.exp(sum(map(math.log, speedups)) / len(speedups))
        if score <= 1.0:
            break
        best = density
    return best


def write_markdown(path: Path, meta: dict[str, Any], rows: Sequence[dict[str, Any]], table: dict[str, Any],
                   table_paths: Sequence[Path], quick: bool) -> None:
    """Provenance, the thresholds and where they went, each shape's own crossover, every row."""
    lines = ["# CPU conv crossover: tap backend vs mkldnn dense", "", f"- command: `{meta['command']}`",
             f"- date: {meta['date']}; wall {meta['seconds']} s", f"- machine: {cpu_name()}; torch threads {meta['threads']}",
             *(f"- {k}: {v}" for k, v in versions(torch.device("cpu")).items() if k in ("torch", "python")),
             f"- load average (1/5/15 min) at start {meta['loadavg_start']}, at end {meta['loadavg_end']}",
             f"- rule: {meta['rule']}", ""]
    if quick:
        lines += ["**--quick run: tiny shapes, a smoke test; these numbers are not a measurement.**", ""]
    lines += ["Dense and tap repeats are interleaved (the load hits both alike); times are medians. "
              "Unless the load average says otherwise, taken on a shared machine.", "",
              "## Thresholds", "", "```json", json.dumps(table, indent=1), "```", "",
              "written to: " + ", ".join(f"`{p}`" for p in table_paths), "", "## Per shape", "",
              "| shape | batch | block | crossover (all lower densities faster) |", "|---|---|---|---|"]
    for key in sorted({(r["shape"], r["batch"], r["block"]) for r in rows}):
        mine = [r for r in rows if (r["shape"], r["batch"], r["block"]) == key]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {crossover(mine, key[2]):g} |")
    lines += ["", "## Rows", "", "| " + " | ".join(FIELDS) + " |", "|" + "---|" * len(FIELDS)]
    lines += ["| " + " | ".join(fmt(r[f]) for f in FIELDS) + " |" for r in rows]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Measure, write the CSV, markdown and JSON table (and the shipped table with ``--write``); returns 0."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    meta: dict[str, Any] = dict(command="python " + " ".join(shlex.quote(a) for a in ["benchmarks/conv_crossover.py",
                                                                                     *(sys.argv[1:] if argv is None else argv)]),
                                threads=torch.get_num_threads(), loadavg_start=load_average(), rule=args.rule,
                                torch=torch.__version__, cpu=cpu_name(), quick=args.quick,
                                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    started, gen, rows = time.perf_counter(), torch.Generator().manual_seed(0), []
    for shape in args.shapes:
        for batch in args.batch_sizes:
            for block in args.blocks:
                for density in args.densities:
                    rows.append(measure(shape, batch, block, density, args.repeats, gen))
                    r = rows[-1]
                    print(f"{r['shape']:>12} b{batch:<3} {block}x{block} d={density:<5g} dense {r['dense_ms']:8.3f} ms "
                          f"tap {r['tap_ms']:8.3f} ms x{r['speedup']:.2f}", flush=True)
    meta.update(loadavg_end=load_average(), seconds=round(time.perf_counter() - started, 1))
    values = {"conv_max_block_density": {str(b): crossover(rows, b, args.rule) for b in args.blocks}}
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / ("conv_crossover_quick" if args.quick else "conv_crossover")
    paths = [stem.with_suffix(".json")] + ([DEFAULT_TABLE_PATH] if args.write else [])
    for path in paths:
        merge_table(path, "cpu", values, "measured_conv", meta)
    write_csv(stem.with_suffix(".csv"), FIELDS, rows)
    write_markdown(stem.with_suffix(".md"), meta, rows, {"cpu": values}, paths, args.quick)
    print("thresholds", values, "written to", ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
