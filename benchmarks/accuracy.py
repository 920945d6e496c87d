"""Test accuracy after pruning at initialisation, every method on the same init and pruning split.

Presets of :func:`torch_prune_ext.evaluation.run_comparison`, two CPU budget runs:

* ``mnist-lenet``: LeNet-300-100 on all of MNIST, 90 / 98 / 99.5% sparsity, seeds 0-2,
  10 epochs of SGD (lr 0.05, momentum 0.9, wd 1e-4, cosine), batch 128, 100-image pruning set.
* ``cifar-resnet20``: ResNet-20 on a fixed 5000-image CIFAR-10 training subset (tested on a
  fixed 2000-image test subset), 89.3 / 98.2% sparsity, seeds 0-2, every method plus the PX
  variants ``px-running`` (``norm="running"``) and ``px-release-2024``, 8 epochs of SGD (peak
  lr 0.05, momentum 0.9, wd 5e-4, one-cycle) with crop + flip, batch 64, 100-image pruning set.
  About 150 s per training run on one CPU thread, plus the pruning (PX ~2 min, its 2024 release
  ~4 min, NTK-SAP ~1 min per run); ``--time-limit 1800`` runs it in pieces. The seed-0 rows of
  the plain methods recorded before the seeds and variants were added keep their recipe hash
  (PX's were rerun: they predate ``norm="batch"``).

and two GPU runs (prepared, not run yet: no GPU was available to this work), ResNet-20 on all
of CIFAR-10, data preloaded on the GPU, augmentation on the GPU, channels_last + bf16
autocast, 30 epochs of one-cycle SGD (peak lr 0.1, momentum 0.9, wd 5e-4, batch 128):

* ``cifar-resnet20-gpu-grid``: the papers' grid (density 0.8^c, c = 2, 4, ..., 18: 36.0 ...
  98.2%), seed 0;
* ``cifar-resnet20-gpu-seeds``: 95.6 / 98.2%, seeds 0-2.

and ``smoke``, a seconds-long check of the harness on synthetic data (``benchmarks/gpu_suite.py
--dry-run`` launches it the way it launches the real presets).

Usage::

    python benchmarks/accuracy.py --preset mnist-lenet
    python benchmarks/accuracy.py --preset cifar-resnet20 --time-limit 1800   # in pieces: rerun to continue
    python benchmarks/accuracy.py --preset cifar-resnet20-gpu-seeds --time-limit 540   # on a GPU machine
    # the CPU budget preset on a GPU: its rows carry another recipe hash (the device), keep them apart
    python benchmarks/accuracy.py --preset cifar-resnet20 --device cuda --results-dir benchmarks/results/gpu \
        --time-limit 240
    # concurrent parts (disjoint --seeds / --methods, each its own --results-dir), then one report:
    python benchmarks/accuracy.py --preset cifar-resnet20 --device cuda --seeds 0 --methods px px-running \
        --results-dir /tmp/part1
    python benchmarks/accuracy.py --preset cifar-resnet20 --device cuda --results-dir benchmarks/results/gpu \
        --merge-csv /tmp/part1/accuracy_cifar-resnet20.csv /tmp/part2/accuracy_cifar-resnet20.csv

``--merge-csv`` runs nothing: it merges the parts (and the rows already in the results dir)
into ``accuracy_<preset>.csv`` of the results dir and writes the report from it; give it the
parts' ``--device`` so that their recipe hashes match. The data comes from
``$TORCH_PRUNE_EXT_DATA`` (else ``../shared/data``).

Writes ``benchmarks/results/accuracy_<preset>.csv`` (one row per run, appended as runs finish;
rerunning the same command skips the finished runs), ``accuracy_<preset>.md`` (mean ± std
over seeds, with the command, machine and wall time), ``accuracy_<preset>.png`` (accuracy
against density) and ``accuracy_<preset>_layers.png`` (per-layer densities at the highest
sparsity). Methods not in ``torch_prune_ext.METHODS`` yet (and variants whose options their
method does not accept yet) are skipped with a note.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from _machine import cpu_name  # benchmarks/ is on sys.path when run as a script

from torch_prune_ext.evaluation import (
    CompareConfig,
    TrainRecipe,
    format_text_summary,
    merge_results,
    run_comparison,
    write_report,
)
from torch_prune_ext.methods import METHODS

RESULTS = Path(__file__).resolve().parent / "results"

#: The sparsities of the NTK-SAP and PX papers' CIFAR-10 figures: density 0.8^c, c = 2, 4, ..., 18.
PAPER_GRID = tuple(round(1 - 0.8**c, 3) for c in range(2, 19, 2))
GPU_RECIPE = TrainRecipe(epochs=30, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="onecycle",
                         augment=True, channels_last=True, precision="bf16")

PRESETS: dict[str, CompareConfig] = {
    "mnist-lenet": CompareConfig(
        model="lenet_300_100", dataset="mnist", sparsities=(0.9, 0.98, 0.995), seeds=(0, 1, 2), per_class=10,
        recipe=TrainRecipe(epochs=10, batch_size=128, lr=0.05, momentum=0.9, weight_decay=1e-4, schedule="cosine"),
        threads=1,
    ),
    "cifar-resnet20": CompareConfig(
        model="resnet20", dataset="cifar10", sparsities=(0.893, 0.982), seeds=(0, 1, 2), per_class=10,
        methods=(*METHODS, "px-running", "px-release-2024"), train_subset=5000, test_subset=2000,
        recipe=TrainRecipe(epochs=8, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="onecycle",
                           augment=True),
        threads=1,
    ),
    "cifar-resnet20-gpu-grid": CompareConfig(
        model="resnet20", dataset="cifar10", sparsities=PAPER_GRID, seeds=(0,), per_class=10,
        recipe=GPU_RECIPE, device="cuda",
    ),
    "cifar-resnet20-gpu-seeds": CompareConfig(
        model="resnet20", dataset="cifar10", sparsities=(0.956, 0.982), seeds=(0, 1, 2), per_class=10,
        recipe=GPU_RECIPE, device="cuda",
    ),
    # Seconds-long check of the harness (no data files): benchmarks/gpu_suite.py --dry-run runs it.
    "smoke": CompareConfig(
        model="mlp", dataset="synthetic", sparsities=(0.5, 0.9), seeds=(0,), methods=("random", "magnitude", "snip"),
        model_kwargs={"hidden": (16,)}, train_subset=64, test_subset=32, per_class=2,
        recipe=TrainRecipe(epochs=1, batch_size=32, lr=0.05, momentum=0.9, weight_decay=0.0, schedule="constant"),
        threads=1,
    ),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS))
    parser.add_argument("--methods", nargs="+", default=None,
                        help="override the method labels (plain names or variants such as px-running)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="override the preset's seeds")
    parser.add_argument("--sparsities", type=float, nargs="+", default=None, help="override the preset's sparsities")
    parser.add_argument("--threads", type=int, default=None, help="override the preset's torch threads (1)")
    parser.add_argument("--device", default=None, help="override the preset's device (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                        help="start no new run after this long (rerun the same command to continue)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--merge-csv", type=Path, nargs="+", default=None, metavar="CSV",
                        help="run nothing: merge these CSVs into the results dir's CSV and write the report")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--no-plots", action="store_true")
    return parser.parse_args(argv)


def preset_config(args: argparse.Namespace) -> CompareConfig:
    """The preset with the command line's overrides."""
    changes = {"progress": not args.no_progress}
    for name in ("methods", "seeds", "sparsities"):
        if getattr(args, name):
            changes[name] = tuple(getattr(args, name))
    for name in ("threads", "device"):
        if getattr(args, name):
            changes[name] = getattr(args, name)
    return dataclasses.replace(PRESETS[args.preset], **changes)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = preset_config(args)
    stem = args.results_dir / f"accuracy_{args.preset}"
    if args.merge_csv:
        rows = merge_results(args.merge_csv, stem.with_suffix(".csv"))
        print(f"merged {len(rows)} row(s) of {len(args.merge_csv)} part(s) into {stem.with_suffix('.csv')}")
    load_before = os.getloadavg()
    start = time.perf_counter()
    result = run_comparison(config, csv_path=stem.with_suffix(".csv"), time_limit_s=0 if args.merge_csv
                            else args.time_limit)
    wall = time.perf_counter() - start
    load_after = os.getloadavg()
    argv = sys.argv[1:] if argv is None else argv
    header = [
        f"command: `{' '.join(shlex.quote(a) for a in ['python', 'benchmarks/accuracy.py', *argv])}`",
        f"torch {torch.__version__}, Python {platform.python_version()}, {platform.platform()}",
        f"machine: {cpu_name()}, {os.cpu_count()} cores (shared with other jobs); torch threads {config.threads}",
        f"device: {config.device}" + (f" ({torch.cuda.get_device_name(config.device)}, CUDA {torch.version.cuda})"
                                      if torch.device(config.device).type == "cuda" else ""),
        (f"load average (1/5/15 min) before: {'/'.join(f'{v:.2f}' for v in load_before)}; after: "
         f"{'/'.join(f'{v:.2f}' for v in load_after)}"),
        (f"merged from: {', '.join(map(str, args.merge_csv))} (machine, load and wall time above are the merge's)"
         if args.merge_csv else
         f"wall time of this call: {wall:.0f} s ({result.new_rows} runs computed, "
         f"{len(result.rows) - result.new_rows} read from the CSV)"),
    ]
    markdown = write_report(result, stem.with_suffix(".md"), accuracy_plot=stem.with_suffix(".png"),
                            profile_plot=stem.with_name(stem.name + "_layers.png"), header_lines=header,
                            plots=False if args.no_plots else None)
    print(format_text_summary(result))
    print(f"\nwall time {wall:.0f} s; {markdown}")
    if result.pending_runs:
        print(f"{result.pending_runs} run(s) left: rerun the same command to continue.")


if __name__ == "__main__":
    main()
