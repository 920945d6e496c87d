"""Distributed scoring: one scoring round on 1 process vs N processes (gloo), side by side.

For every world size the script launches ``python -m torch.distributed.run --standalone
--nproc_per_node=N`` on itself; every rank builds ResNet-20 (seed 0) and the same pruning set
(Gaussian noise with random labels, ``--batches`` batches of ``--batch`` images: scoring time does
not depend on pixel values), scores with ``distributed=True, shard_data=True`` (rank r reads
batches r, r + N, ...; NTK-SAP evaluates every N-th draw), once to warm up and then
``--repeats`` times, with ``--threads`` threads per process. Rank 0 reports the median seconds
and the scores; the launcher writes seconds, speedup over one process, and the largest
relative difference of the scores from the one-process scores.

Usage::

    python benchmarks/distributed_scoring.py                          # world sizes 1 and 2, 1 thread each
    python benchmarks/distributed_scoring.py --worlds 1 2 4 --methods ntksap --threads 1

Writes ``benchmarks/results/distributed_scoring.csv`` and ``.md``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("snip", "grasp", "ntksap", "px", "synflow")


def worker(args: argparse.Namespace) -> None:
    """One rank: time ``compute_scores`` for every method; rank 0 saves the timings and scores."""
    import torch.distributed as dist

    import torch_prune_ext as tpe
    from torch_prune_ext.models import get_model, input_shape_of

    dist.init_process_group("gloo", timeout=datetime.timedelta(minutes=10))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = get_model("resnet20", num_classes=10)
    generator = torch.Generator().manual_seed(0)
    shape = input_shape_of("resnet20")
    data = [(torch.randn((args.batch, *shape), generator=generator), torch.randint(0, 10, (args.batch,),
                                                                                    generator=generator))
            for _ in range(args.batches)]
    results = {}
    for method in args.methods:
        options = {"seed": 0, "distributed": True, "shard_data": True}
        if method == "ntksap":
            options["repeats"] = args.repeats_ntksap
        scores = tpe.compute_scores(model, method, data, **options)  # warm-up
        seconds = []
        for _ in range(args.repeats):
            dist.barrier()
            start = time.perf_counter()
            scores = tpe.compute_scores(model, method, data, **options)
            seconds.append(time.perf_counter() - start)
        results[method] = {"seconds": statistics.median(seconds), "scores": scores}
    if dist.get_rank() == 0:
        torch.save(results, args.out)
    dist.destroy_process_group()


def launch(world: int, args: argparse.Namespace, out: Path) -> dict:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
               __file__, "--worker", "--out", str(out), "--threads", str(args.threads), "--batch", str(args.batch),
               "--batches", str(args.batches), "--repeats", str(args.repeats), "--repeats-ntksap",
               str(args.repeats_ntksap), "--methods", *args.methods]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    subprocess.run(command, check=True, env=env)
    return torch.load(out, weights_only=False)


def max_relative_difference(scores: dict, reference: dict) -> float:
    return max(float((scores[k] - reference[k]).abs().max() / reference[k].abs().max().clamp_min(1e-300))
               for k in reference)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--threads", type=int, default=1, help="threads per process")
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--repeats-ntksap", type=int, default=5, help="NTK-SAP's R (draws per batch)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if 1 not in args.worlds:
        parser.error("--worlds must include 1 (the reference the others are compared with)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {world: launch(world, args, Path(tmp) / f"world{world}.pt") for world in sorted(args.worlds)}
    rows = []
    for method in args.methods:
        reference = runs[1][method]
        for world, result in runs.items():
            rows.append({
                "method": method, "processes": world, "threads_per_process": args.threads,
                "seconds": round(result[method]["seconds"], 4),
                "speedup": round(reference["seconds"] / result[method]["seconds"], 3),
                "max_rel_diff_vs_1": f"{max_relative_difference(result[method]['scores'], reference['scores']):.2e}",
            })
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "distributed_scoring.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# Distributed scoring: one round, 1 vs N gloo processes",
        "",
        f"ResNet-20, {args.batches} pruning batches of {args.batch} (shard_data=True), NTK-SAP R={args.repeats_ntksap}, "
        f"{args.threads} thread(s) per process, median of {args.repeats} after a warm-up.",
        f"torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs; wall time {time.perf_counter() - started:.0f} s.",
        f"Command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`",
        "",
        "| method | processes | seconds | speedup vs 1 | max rel. score diff vs 1 |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['method']} | {r['processes']} | {r['seconds']:.3f} | {r['speedup']:.2f}x | {r['max_rel_diff_vs_1']} |"
              for r in rows]
    (RESULTS / "distributed_scoring.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
