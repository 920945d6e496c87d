"""Every owed GPU measurement in one time-boxed, resumable command.

Steps, in priority order (each writes its own CSV + markdown into the results folder):

1. ``kernel_correctness``: the Triton Linear kernels (forward, dX, dW; direct and through
   ``AcceleratedLinear(backend="triton")``) in fp32/fp16/bf16 against the masked dense result.
2. ``conv_correctness``: the Conv2d kernels' self-check (``torch_prune_ext.kernels.selfcheck``,
   when that module is in the tree).
3. ``kernel_speed``: ours vs cuBLAS dense, torch's Triton BSR and 2:4 at 50-99% sparsity, blocks
   16/32/64, with % of the roofline.
4. ``crossover``: the CUDA crossover table ``torch_prune_ext/kernels/crossover_cuda.json`` that the
   dispatcher loads (a copy goes into the results folder).
5. ``ntksap_speed``: NTK-SAP loop vs vmap vs the slow per-draw way, same draws.
6. ``round_times``: PX and SynFlow seconds per round.
7. ``pruned_inference``: ``benchmarks/pruned_inference.py`` (when that script is in the tree).
8. ``accuracy_budget`` / 9. ``accuracy_paper``: accuracy rows in the time left, as concurrent
   ``benchmarks/accuracy.py`` workers.

A step already complete in the results is skipped; a step cut by the budget keeps its rows and
the next call continues it. An exception in a step is recorded (traceback in ``SUMMARY.md``) and
the next step runs. ``SUMMARY.md`` (what ran, what is owed, the headline numbers) is rewritten
after every step. The command exits 0 even when the budget cuts it.

Usage::

    python benchmarks/gpu_suite.py --budget-s 480                  # on the GPU machine
    python benchmarks/gpu_suite.py --dry-run --results-dir /tmp/s  # tiny shapes; CPU: Triton's interpreter
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget of this call (default 480)")
    parser.add_argument("--dry-run", action="store_true",
                        help="every step on tiny shapes (the CPU goes through Triton's interpreter)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CUDA when available, else the CPU")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="default benchmarks/results/gpu (a fresh temporary folder with --dry-run)")
    parser.add_argument("--data-root", default=os.environ.get("TORCH_PRUNE_EXT_DATA"),
                        help="folder with cifar10_jpeg_q75.npz (default $TORCH_PRUNE_EXT_DATA)")
    parser.add_argument("--workers", type=int, default=8, help="concurrent accuracy processes (default 8)")
    parser.add_argument("--steps", nargs="+", default=None, help="run only these steps (default: all, in order)")
    parser.add_argument("--table-path", type=Path, default=None,
                        help="where the crossover table goes (default: the package's crossover_cuda.json; "
                             "with --dry-run: the results folder)")
    args = parser.parse_args(argv)
    if args.budget_s < 0 or args.workers < 1:
        parser.error("--budget-s must be >= 0 and --workers >= 1")
    unknown = sorted(set(args.steps or ()) - set(STEP_NAMES))
    if unknown:
        parser.error(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEP_NAMES)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here; use --device auto or cpu")
    if not args.dry_run and (args.device == "cpu" or not torch.cuda.is_available()):
        parser.error("the full suite needs a CUDA GPU (full shapes through Triton's CPU interpreter would take "
                     "days); add --dry-run for the tiny-shape check")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the suite; returns 0 (also when the budget cuts it)."""
    args = _parse(argv)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    if device.type == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton
    from _gpu_common import Budget, Context

    results = args.results_dir or (Path(tempfile.mkdtemp(prefix="gpu_suite_")) if args.dry_run
                                   else ROOT / "benchmarks" / "results" / "gpu")
    results.mkdir(parents=True, exist_ok=True)
    table_path = args.table_path or (results / "crossover_cuda.table.json" if args.dry_run
                                     else ROOT / "torch_prune_ext" / "kernels" / "crossover_cuda.json")
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT),
                                                               *(sys.argv[1:] if argv is None else argv)])
    ctx = Context(results=results, device=device, tiny=args.dry_run, budget=Budget(args.budget_s), command=command,
                  data_root=args.data_root, table_path=table_path, workers=args.workers)
    ctx.log(f"gpu suite on {device}{' (dry run)' if args.dry_run else ''}, budget {args.budget_s:.0f} s, "
            f"results in {results}")
    from _gpu_summary import run_steps

    run_steps(ctx, steps(), only=args.steps)
    return 0


#: The step names, in priority order (:func:`steps` gives their functions).
STEP_NAMES = ("kernel_correctness", "conv_correctness", "kernel_speed", "crossover", "ntksap_speed", "round_times",
              "pruned_inference", "accuracy_budget", "accuracy_paper")


def steps() -> list[tuple[str, Callable]]:
    """The steps in priority order, as ``(name, function(ctx) -> Outcome)``."""
    from _gpu_accuracy import accuracy_budget, accuracy_paper
    from _gpu_correctness import conv_correctness, linear_correctness
    from _gpu_models import ntksap_speed, pruned_inference, round_times
    from _gpu_speed import crossover, kernel_speed

    functions = [linear_correctness, conv_correctness, kernel_speed, crossover, ntksap_speed, round_times,
                 pruned_inference, accuracy_budget, accuracy_paper]
    return list(zip(STEP_NAMES, functions))


if __name__ == "__main__":
    sys.exit(main())
