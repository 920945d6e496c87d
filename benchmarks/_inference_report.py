"""Files of ``benchmarks/pruned_inference.py``: the CSVs, the markdown with the overhead-bound argument, the plot."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _gpu_common import fmt, versions
from _machine import cpu_name

MODEL_COLUMNS = ["model", "granularity", "sparsity", "density", "batch", "mode", "dense_ms", "accelerated_ms", "speedup",
                 "ideal_speedup", "fraction_of_ideal", "bound_speedup", "live_output", "sparse_layers", "max_rel_err", "loadavg"]
LAYER_COLUMNS = ["layer", "backend", "density", "tile_density", "in_shape", "dense_ms", "accelerated_ms", "empty_ms",
                 "speedup", "fraction_of_ideal", "grid_factor", "dense_gflops", "tile_gflops", "act_mb", "kept_weight_mb"]

#: The goal of issue 16: VGG-16-BN, block-pruned at 95%, at least this much faster than dense on the CPU.
GOAL = ("vgg16_bn", "block", 0.95, 3.0)


def write_csv(path: Path, fields: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """Rows as CSV with ``fields`` as the header (missing cells empty).

    Args:
        path: the file.
        fields: the columns.
        rows: the rows.
    """
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _table(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |" for row in rows]


def _num(value: Any) -> float:
    return value if isinstance(value, float) else math.nan


def _rate(gflop: float, ms: float) -> str:
    return f"{1e3 * gflop / ms:.1f}" if ms > 0 else "n/a"


def bound_lines(models: Sequence[dict[str, Any]], layers: Sequence[dict[str, Any]]) -> list[str]:
    """Where the time of each eager run goes: layers kept dense, fixed cost of sparse layers, the rest.

    Args:
        models: model rows (eager rows with ``bound_ms`` are used).
        layers: layer rows.

    Returns:
        Markdown lines, one bullet per eager model row.
    """
    lines = []
    for row in models:
        if row.get("mode") != "eager" or not isinstance(row.get("bound_ms"), float):
            continue
        key = (row["model"], row["granularity"], row["sparsity"], row["batch"])
        mine = [r for r in layers if (r["model"], r["granularity"], r["sparsity"], r["batch"]) == key]
        sparse = [r for r in mine if r["backend"] in ("tap", "triton")]
        kept_dense = sum(r["dense_ms"] for r in mine if r not in sparse)
        other = row["dense_ms"] - sum(r["dense_ms"] for r in mine)
        fixed = sum(r["empty_ms"] for r in sparse)
        tiles = sum(r["accelerated_ms"] - r["empty_ms"] for r in sparse)
        kept_gflop = sum(2e-3 * r["macs_m"] * r["tile_density"] for r in sparse)
        dense_gflop = sum(2e-3 * r["macs_m"] for r in sparse)
        sparse_dense_ms = sum(r["dense_ms"] for r in sparse)
        grid = sum(r["macs_m"] * r["tile_density"] * r["grid_factor"] for r in sparse) / max(
            sum(r["macs_m"] * r["tile_density"] for r in sparse), 1e-30)
        lines.append(
            f"- {row['model']} {row['granularity']} {row['sparsity']:g} batch {row['batch']}: dense {row['dense_ms']:.2f} ms = "
            f"convs kept dense {kept_dense:.2f} + sparse convs' dense time {sum(r['dense_ms'] for r in sparse):.2f} "
            f"+ other ops (BN, ReLU, pools, classifier) {other:.2f} ms. Accelerated {row['accelerated_ms']:.2f} ms; "
            f"the sparse convs' fixed cost (padded NHWC input copy, output and layout copy; measured with an empty mask) "
            f"{fixed:.2f} ms, their kept tiles {tiles:.2f} ms ({_rate(kept_gflop, tiles)} GFLOP/s on the kept tiles vs "
            f"{_rate(dense_gflop, sparse_dense_ms)} GFLOP/s dense on the same layers; the tap path also computes the "
            f"padded-grid rows: x{grid:.2f} the kept MACs, weighted). Bound if kept tiles were free: "
            f"{row['bound_ms']:.2f} ms = x{_num(row['bound_speedup']):.2f} (ideal by MACs x{_num(row['ideal_speedup']):.1f}).")
    return lines


def goal_lines(models: Sequence[dict[str, Any]]) -> list[str]:
    """Whether the VGG-16-BN block 95% goal was reached (eager and compiled), with the numbers."""
    name, granularity, sparsity, target = GOAL
    rows = [r for r in models if (r["model"], r["granularity"]) == (name, granularity)
            and abs(r["sparsity"] - sparsity) < 1e-9 and isinstance(r.get("speedup"), float)]
    if not rows:
        return [f"The goal case ({name}, {granularity}, {sparsity:g}) was not part of this run."]
    return [f"- batch {r['batch']} {r['mode']}: x{r['speedup']:.2f} "
            f"({'meets' if r['speedup'] >= target else 'below'} the x{target:g} goal; overhead bound "
            f"x{_num(r.get('bound_speedup')):.2f})" for r in rows]


def write_markdown(path: Path, meta: dict[str, Any], models: Sequence[dict[str, Any]],
                   layers: Sequence[dict[str, Any]], quick: bool) -> None:
    """The report: provenance, the goal check, model and layer tables, the overhead-bound breakdown.

    Args:
        path: the ``.md`` file.
        meta: command, device, threads, loadavg_start/end, seconds, date.
        models: model rows.
        layers: layer rows.
        quick: a ``--quick`` run (tiny shapes: the numbers say nothing about speed).
    """
    device = meta["device"]
    lines = ["# Pruned inference: accelerated vs dense, end to end", "",
             f"- command: `{meta['command']}`", f"- date: {meta['date']}; wall {meta['seconds']} s",
             f"- machine: {cpu_name()}; torch threads {meta['threads']}",
             *(f"- {k}: {v}" for k, v in versions(device).items()),
             f"- load average (1/5/15 min) at start {meta['loadavg_start']}, at end {meta['loadavg_end']}",
             *([f"- torch.backends.cudnn.allow_tf32 (dense convs in TF32): {meta['cudnn_allow_tf32']}"]
               if "cudnn_allow_tf32" in meta else []), ""]
    if device.type == "cpu":
        lines.append("Taken on a shared machine unless the load average says otherwise; dense and accelerated "
                     "repeats are interleaved so that load hits both alike; times are medians.")
    if quick:
        lines.append("**--quick run: tiny shapes and repeats, a smoke test; these numbers say nothing about speed.**")
    lines += ["", "## Goal: VGG-16-BN block-pruned at 95% at least 3x dense", "", *goal_lines(models), "",
              "## Whole models", "", "speedup = dense ms / accelerated ms (= throughput ratio); ideal = conv MACs / "
              "kept conv MACs; bound_speedup = the speedup if every kept tile cost nothing (see below); live_output False: "
              "the mask cuts every path from the input (constant logits; common for uniform random block masks at "
              "90%+, whose kept tiles need not line up from layer to layer). The times depend on the tile layout, "
              "not on the values, so the speed numbers stand; such a mask would not train well.", "",
              *_table(MODEL_COLUMNS, models)]
    errors = sorted({r["error"] for r in models if r.get("error")})
    if errors:
        lines += ["", "torch.compile failures:", *(f"- `{e}`" for e in errors)]
    lines += ["", "## Where the time goes (eager)", "", *bound_lines(models, layers)]
    lines += ["", "## Per layer (each conv alone at its input shape, NCHW input)", ""]
    for key in sorted({(r["model"], r["granularity"], r["sparsity"], r["batch"]) for r in layers}):
        lines += [f"### {key[0]} {key[1]} {key[2]:g} batch {key[3]}", "",
                  *_table(LAYER_COLUMNS, [r for r in layers if (r["model"], r["granularity"], r["sparsity"], r["batch"]) == key]), ""]
    path.write_text("\n".join(lines) + "\n")


def write_plot(path: Path, models: Sequence[dict[str, Any]]) -> bool:
    """Speedup vs sparsity per model, granularity, batch and mode, with the ideal and the bound (matplotlib).

    Args:
        path: the ``.png`` file.
        models: model rows.

    Returns:
        Whether the plot was written (``False`` without matplotlib, the optional extra ``plot``).
    """
    try:
        import matplotlib
    except ImportError:
        print(f"matplotlib is not installed (pip install matplotlib): no plot {path.name}")
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["model"] for r in models})
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        mine = [r for r in models if r["model"] == name and isinstance(r.get("speedup"), float)]
        for key in sorted({(r["granularity"], r["batch"], r["mode"]) for r in mine}):
            pts = sorted((r["sparsity"], r["speedup"]) for r in mine if (r["granularity"], r["batch"], r["mode"]) == key)
            ax.plot(*zip(*pts), marker="o", label=f"{key[0]} b{key[1]} {key[2]}")
        ideal = sorted({(r["sparsity"], r["ideal_speedup"]) for r in mine if r["granularity"] == "block"
                        and isinstance(r.get("ideal_speedup"), float) and r["batch"] == mine[0]["batch"]})
        if ideal:
            ax.plot(*zip(*ideal), "k--", label="ideal (block)")
        ax.axhline(1.0, color="k", lw=0.5)
        ax.set(title=name, xlabel="sparsity", ylabel="speedup vs dense", yscale="log")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
