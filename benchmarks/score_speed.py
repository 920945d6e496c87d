"""Seconds and peak memory of one scoring round, for every method, side by side.

Each (model, method) pair runs in a fresh process so that its peak memory is its own:
the process builds the model and the pruning batch, records its resident memory, resets
the kernel's high-water mark (``/proc/self/clear_refs``), scores once to warm up, then
``--repeats`` times; it reports the median seconds and the peak resident memory above the
baseline. The pruning batch is Gaussian noise with random labels: scoring time does not
depend on pixel values, and this keeps the benchmark free of dataset decoding.

Usage::

    python benchmarks/score_speed.py                       # ResNet-20 and VGG-16-BN, batch 100
    python benchmarks/score_speed.py --models resnet20 --methods snip grasp --repeats 5

Writes ``benchmarks/results/score_speed_<device>.csv`` and ``.md``.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from _memory import reset_peak, status_bytes

RESULTS = Path(__file__).resolve().parent / "results"


def measure(model_name: str, method: str, batch: int, repeats: int, device: str, threads: int,
            queue: mp.Queue) -> None:
    """Child process: one (model, method) measurement, put on ``queue``."""
    import torch_prune_ext as tpe
    from torch_prune_ext.models import get_model, input_shape_of

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = get_model(model_name, num_classes=10).to(device)
    shape = input_shape_of(model_name)
    generator = torch.Generator().manual_seed(0)
    data = (torch.randn((batch, *shape), generator=generator).to(device),
            torch.randint(0, 10, (batch,), generator=generator).to(device))
    tpe.compute_scores(model, method, data, seed=0)  # warm-up (allocator, kernels)
    baseline = status_bytes("VmRSS")
    peak_ok = reset_peak()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        tpe.compute_scores(model, method, data, seed=0)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    if device.startswith("cuda"):
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        hwm = status_bytes("VmHWM")
        peak_mib = (hwm - baseline) / 2**20 if peak_ok and hwm is not None and baseline is not None else float("nan")
    queue.put({
        "model": model_name, "method": method, "batch": batch, "device": device, "threads": threads,
        "repeats": repeats, "median_s": statistics.median(seconds), "min_s": min(seconds),
        "peak_mib": round(peak_mib, 1),
        "n_weights": sum(getattr(m, n).numel() for m, n in tpe.prunable_parameters(model)),
    })


def main(argv: list[str] | None = None) -> int:
    from torch_prune_ext import METHODS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "vgg16_bn"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    context = mp.get_context("spawn")
    rows = []
    for model_name in args.models:
        for method in args.methods:
            queue = context.Queue()
            child = context.Process(target=measure, args=(model_name, method, args.batch, args.repeats,
                                                          args.device, args.threads, queue))
            child.start()
            row = queue.get()
            child.join()
            rows.append(row)
            print(f"{model_name:10s} {method:10s} {row['median_s']:8.3f} s  {row['peak_mib']:8.1f} MiB", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    tag = args.device.split(":")[0]
    with open(args.out / f"score_speed_{tag}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    device_name = (torch.cuda.get_device_name() if args.device.startswith("cuda")
                   else f"{platform.processor() or platform.machine()}, {args.threads} threads")
    lines = [
        f"# Scoring speed: one round per method ({args.device})",
        "",
        f"- device: {device_name}; torch {torch.__version__}; Python {platform.python_version()}",
        f"- command: `python benchmarks/{Path(__file__).name} {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"- batch {args.batch} Gaussian examples with random labels; median of {args.repeats} runs after a warm-up;"
        " peak = resident memory high-water mark above the process baseline (CPU) or"
        " torch.cuda.max_memory_allocated (GPU)",
        "",
        "| model | weights | method | median s / round | peak MiB | × magnitude time |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        base = next((r["median_s"] for r in rows if r["model"] == row["model"] and r["method"] == "magnitude"), None)
        ratio = f"{row['median_s'] / base:.1f}" if base else "-"
        lines.append(f"| {row['model']} | {row['n_weights']:,} | {row['method']} | {row['median_s']:.3f} | "
                     f"{row['peak_mib']:.1f} | {ratio} |")
    (args.out / f"score_speed_{tag}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / f'score_speed_{tag}.csv'} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
