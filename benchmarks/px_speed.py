"""PX: seconds and peak memory per scoring round, and the per-layer density profile at 98.2%.

PX variants (``--variants``): a name in ``PXConfig``'s norms (``batch``, the default, and
``running``) sets ``norm=``, any other name sets ``mode=`` (``reference``; a conformance
mode such as ``release-2024`` once it exists).

Part ``speed``: each (model, variant) runs in a fresh process
(``torch.set_num_threads(--threads)``, 1 by default: the machine is shared, and OpenMP
oversubscription inflates timings). The process builds the model and a Gaussian pruning
set, records its resident memory, resets the high-water mark, then times ``--repeats`` PX
rounds (``compute_scores``); it reports the median seconds, the peak resident memory above
the baseline, and the ratio of the median to the first variant's. ResNet-20 with 100 images
(one batch) and, with ``--models resnet20 vgg16_bn``, VGG-16-BN with 1000 images (fed as
batches of 100: same scores; ``norm="batch"`` then makes one partial pass per BatchNorm).

Part ``profile``: ResNet-20 (seed 0 init) pruned to 98.2% sparsity with every PX variant
(100 rounds), NTK-SAP (20 rounds) and SynFlow (100 rounds) on the real CIFAR-10 pruning set
(10 images per class, seed 0); the per-layer densities side by side as a table and a PNG.

Usage::

    python benchmarks/px_speed.py                      # both parts, variants batch and running
    python benchmarks/px_speed.py --parts speed --variants batch running release-2024 --repeats 3
    python benchmarks/px_speed.py --parts profile --threads 1

Writes ``benchmarks/results/px_speed.{csv,md}``, ``px_density_982.{csv,png}`` and adds the
profile to the markdown.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from _memory import reset_peak, status_bytes

RESULTS = Path(__file__).resolve().parent / "results"
IMAGES = {"resnet20": 100, "vgg16_bn": 1000}


def variant_options(variant: str) -> dict[str, str]:
    """PX options of a variant name: a norm of PXConfig sets ``norm=``, any other name ``mode=``."""
    from torch_prune_ext.methods.px import NORMS

    return {"norm": variant} if variant in NORMS else {"mode": variant}


def measure(model_name: str, variant: str, n_images: int, batch: int, repeats: int, threads: int,
            queue: mp.Queue) -> None:
    """Child process: seconds and peak memory of PX rounds of one variant on one model."""
    import torch_prune_ext as tpe
    from torch_prune_ext.methods.px import PX
    from torch_prune_ext.models import get_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = get_model(model_name, num_classes=10)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((n_images, 3, 32, 32), generator=generator)
    data = [x[i:i + batch] for i in range(0, n_images, batch)]
    baseline = status_bytes("VmRSS")
    peak_ok = reset_peak()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        tpe.compute_scores(model, PX, data, **variant_options(variant))
        seconds.append(time.perf_counter() - start)
    hwm = status_bytes("VmHWM")
    peak = (hwm - baseline) / 2**20 if peak_ok and hwm is not None and baseline is not None else float("nan")
    queue.put({"model": model_name, "variant": variant, "images": n_images, "batch": batch, "threads": threads, "repeats": repeats,
               "median_s": round(statistics.median(seconds), 3), "min_s": round(min(seconds), 3),
               "peak_mib": round(peak, 1)})


def profile(variants: list[str], threads: int, queue: mp.Queue) -> None:
    """Child process: per-layer densities of the PX variants / NTK-SAP / SynFlow at 98.2% on ResNet-20."""
    import torch_prune_ext as tpe
    from torch_prune_ext.data import pruning_set
    from torch_prune_ext.methods.px import PX
    from torch_prune_ext.models import resnet20

    torch.set_num_threads(threads)
    x, y = pruning_set("cifar10", per_class=10, seed=0)
    rows: dict[str, dict[str, float]] = {}
    seconds = {}
    runs = [(f"px ({variant})", PX, 100, variant_options(variant)) for variant in variants]
    for name, method, rounds, options in runs + [("ntksap", "ntksap", 20, {}), ("synflow", "synflow", 100, {})]:
        torch.manual_seed(0)
        model = resnet20()
        start = time.perf_counter()
        tpe.global_prune(model, method, 0.982, data=(x, y), rounds=rounds, progress=False, on_collapse="ignore",
                         seed=0, **options)
        seconds[name] = time.perf_counter() - start
        rows[name] = {f"{prefix}.{n}": float(getattr(m, n + "_mask").float().mean())
                      for prefix, m in model.named_modules() for n in ("weight",)
                      if hasattr(m, n + "_mask")}
    queue.put((rows, seconds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=["speed", "profile"], choices=["speed", "profile"])
    parser.add_argument("--variants", nargs="+", default=["batch", "running"],
                        help="PX variants: a norm (batch, running) or a mode (reference, ...); the first is the baseline "
                             "of the speed ratios")
    parser.add_argument("--models", nargs="+", default=["resnet20"], choices=list(IMAGES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    context = mp.get_context("spawn")
    load_before = os.getloadavg()[0]
    lines = [
        "# PX: speed per round and density profile (CPU)",
        "",
        (f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared with other jobs); "
         f"torch {torch.__version__}; {args.threads} thread(s) in every measured process"),
        f"- command: `python benchmarks/{Path(__file__).name} {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"- 1-minute load average before: {load_before:.2f}",
        "",
    ]
    if "speed" in args.parts:
        rows = []
        for model_name in args.models:
            first = None
            for variant in args.variants:
                queue = context.Queue()
                child = context.Process(target=measure, args=(model_name, variant, IMAGES[model_name], 100,
                                                              args.repeats, args.threads, queue))
                child.start()
                row = queue.get()
                child.join()
                first = first or row["median_s"]
                row["ratio"] = round(row["median_s"] / first, 2)
                row["load_1min"] = round(os.getloadavg()[0], 2)
                rows.append(row)
                print(f"{model_name:10s} {variant:12s} {row['median_s']:8.3f} s x{row['ratio']:.2f} "
                      f"{row['peak_mib']:8.1f} MiB", flush=True)
        with open(args.out / "px_speed.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        lines += [
            "## Seconds and peak memory per PX round (float64 J and P)",
            "",
            (f"Gaussian images, fed as batches of 100; median of {args.repeats} round(s), no warm-up, one fresh "
             "process per row; ratio = median / the first variant's median on the same model; peak = resident "
             "memory high-water mark above the process baseline (model and data already built); load = 1-minute "
             "load average after the row."),
            "",
            "| model | variant | images | s / round (median) | min s | ratio | peak MiB | load |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [f"| {r['model']} | {r['variant']} | {r['images']} | {r['median_s']:.2f} | {r['min_s']:.2f} | "
                  f"{r['ratio']:.2f} | {r['peak_mib']:.0f} | {r['load_1min']:.2f} |" for r in rows]
        lines.append("")
    if "profile" in args.parts:
        queue = context.Queue()
        child = context.Process(target=profile, args=(args.variants, args.threads, queue))
        child.start()
        rows, seconds = queue.get()
        child.join()
        methods = list(rows)
        layers = list(rows[methods[0]])
        with open(args.out / "px_density_982.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["layer", *methods])
            for layer in layers:
                writer.writerow([layer, *(f"{rows[m][layer]:.6f}" for m in methods)])
        lines += [
            "## Per-layer density at 98.2% sparsity, ResNet-20 (init seed 0), CIFAR-10 pruning set (100 images)",
            "",
            "PX (each variant) 100 rounds, NTK-SAP 20 rounds, SynFlow 100 rounds, exponential schedule; wall time of the whole "
            "pruning run: " + ", ".join(f"{m} {s:.0f} s" for m, s in seconds.items()) + ".",
            "",
            "| layer | " + " | ".join(methods) + " |",
            "|---|" + "---:|" * len(methods),
        ]
        lines += [f"| {layer} | " + " | ".join(f"{rows[m][layer]:.4f}" for m in methods) + " |" for layer in layers]
        collapsed = {m: [layer for layer in layers if rows[m][layer] == 0.0] for m in methods}
        lines += ["", "Layers with no weight left: " + "; ".join(
            f"{m}: {', '.join(c) if c else 'none'}" for m, c in collapsed.items()), "",
                  "Lowest layer density: " + "; ".join(
            f"{m}: {min(rows[m].values()):.4f} ({min(rows[m], key=rows[m].get)})" for m in methods), ""]
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(11, 4.5))
            width = 0.8 / len(methods)
            for i, m in enumerate(methods):
                ax.bar([j + i * width for j in range(len(layers))], [rows[m][layer] for layer in layers], width,
                       label=m)
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(layers))])
            ax.set_xticklabels([layer.removesuffix(".weight") for layer in layers], rotation=75, fontsize=7)
            ax.set_yscale("symlog", linthresh=1e-3)
            ax.set_ylabel("density (kept fraction)")
            ax.set_title("ResNet-20, 98.2% sparsity: per-layer density")
            ax.legend()
            fig.tight_layout()
            fig.savefig(args.out / "px_density_982.png", dpi=120)
            lines.append("Plot: `px_density_982.png`.")
        except ImportError:
            lines.append("matplotlib is not installed: no plot (pip install matplotlib).")
        lines.append("")
    lines.insert(5, f"- 1-minute load average after: {os.getloadavg()[0]:.2f}")
    (args.out / "px_speed.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'px_speed.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
