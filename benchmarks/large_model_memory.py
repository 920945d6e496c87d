"""Peak resident memory and seconds of data-free pruning on a ~100M-parameter MLP (CPU).

The model is 8 ``nn.Linear(3584, 3584)`` layers with ReLUs between them: 8 x 3584^2 =
102,760,448 prunable fp32 weights, i.e. 411 MB of weights ("model size" below). Every method
runs in its own fresh process (``--child``) so that its peak is its own. Inside a child:

1. build the model (seeded) and record the resident baseline ``VmRSS``;
2. phase ``scores``: reset the kernel's high-water mark, ``tpe.compute_scores`` once
   (one scoring round), record ``VmHWM - baseline`` and the seconds; keep the scores;
3. phase ``rank``: reset, ``core.ranking.rank_and_mask`` on those scores with all-ones masks
   (the global ranking alone: float64 copies, concatenation, sort), record the peak;
   scores and masks are then freed;
4. phase ``prune``: reset, ``tpe.global_prune(model, method, 0.9, ...)`` (the whole schedule,
   collapse check and torch's ``custom_from_mask``), record the peak, the seconds and the
   resident memory left afterwards (``retained``: masks + torch's cached ``weight`` tensors).

Usage::

    python benchmarks/large_model_memory.py                 # every data-free method
    python benchmarks/large_model_memory.py --methods random magnitude

Writes ``benchmarks/results/large_model_memory.csv`` and ``.md``.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
WIDTH = 3584
DEPTH = 8
SPARSITY = 0.9

#: method -> global_prune options. SynFlow's default is 100 rounds; 2 keep the run short
#: (every round costs the same memory, so the peak does not depend on the number of rounds).
METHODS: dict[str, dict] = {
    "random": {},
    "magnitude": {},
    "synflow": {"rounds": 2, "input_shape": (WIDTH,)},
    "ntksap": {"rounds": 1, "repeats": 1, "batch_size": 8, "input_shape": (WIDTH,)},
}


def child(method: str, threads: int) -> dict:
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _memory import reset_peak, status_bytes

    import torch_prune_ext as tpe
    from torch_prune_ext.core.ranking import rank_and_mask
    from torch_prune_ext.core.targets import resolve_targets

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(DEPTH):
        layers.append(nn.Linear(WIDTH, WIDTH))
        if i < DEPTH - 1:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    n_weights = sum(m.weight.numel() for m in model if isinstance(m, nn.Linear))
    options = dict(METHODS[method])
    rounds = options.pop("rounds", None)
    gc.collect()
    base = status_bytes("VmRSS")
    row: dict = {"method": method, "weights": n_weights, "model_mb": n_weights * 4 / 1e6,
                 "rounds": rounds if rounds is not None else 1, "baseline_mb": base / 1e6}

    def peak() -> float:
        return (status_bytes("VmHWM") - base) / 1e6

    # phase 1: one scoring round
    gc.collect()
    reset_peak()
    start = time.perf_counter()
    scores = tpe.compute_scores(model, method, progress=False, **options)
    row["scores_s"] = time.perf_counter() - start
    row["scores_peak_mb"] = peak()
    row["scores_dtype"] = str(next(iter(scores.values())).dtype).replace("torch.", "")

    # phase 2: the global ranking alone
    targets = resolve_targets(model)
    masks = [torch.ones_like(t.raw) for t in targets]
    gc.collect()
    reset_peak()
    start = time.perf_counter()
    new = rank_and_mask(targets, list(scores.values()), masks, round(SPARSITY * n_weights))
    row["rank_s"] = time.perf_counter() - start
    row["rank_peak_mb"] = peak()
    del scores, masks, new, targets
    gc.collect()

    # phase 3: the whole global_prune
    reset_peak()
    start = time.perf_counter()
    report = tpe.global_prune(model, method, SPARSITY, rounds=rounds, progress=False, on_collapse="ignore",
                              **options)
    row["prune_s"] = time.perf_counter() - start
    row["prune_peak_mb"] = peak()
    gc.collect()
    row["retained_mb"] = (status_bytes("VmRSS") - base) / 1e6
    row["sparsity"] = report.sparsity
    zeros = sum(int((m.weight_mask == 0).sum()) for m in model if isinstance(m, nn.Linear))
    row["exact_count"] = zeros == round(SPARSITY * n_weights)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.threads)), flush=True)
        return

    load_before = os.getloadavg()
    rows = []
    total_start = time.perf_counter()
    for method in args.methods:
        proc = subprocess.run([sys.executable, __file__, "--child", method, "--threads", str(args.threads)],
                              capture_output=True, text=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            print(f"{method} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
            rows.append({"method": method, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "?"})
            continue
        row = json.loads(line[0][len("RESULT "):])
        rows.append(row)
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    total = time.perf_counter() - total_start
    load_after = os.getloadavg()

    import torch

    RESULTS.mkdir(exist_ok=True)
    fields = ["method", "weights", "model_mb", "rounds", "baseline_mb", "scores_dtype", "scores_s",
              "scores_peak_mb", "rank_s", "rank_peak_mb", "prune_s", "prune_peak_mb", "retained_mb", "sparsity",
              "exact_count", "error"]
    with open(RESULTS / "large_model_memory.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in row.items()})

    lines = [
        "# Peak memory of data-free pruning on a 103M-parameter MLP (CPU)",
        "",
        f"- command: `python benchmarks/large_model_memory.py{''.join(' ' + a for a in sys.argv[1:])}`",
        f"- machine: {platform.machine()}, 2 cores / 24 GiB shared with another job; torch.set_num_threads"
        f"({args.threads}); torch {torch.__version__}; Python {platform.python_version()}",
        f"- load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f}; total wall time {total:.0f} s",
        f"- model: {DEPTH} x Linear({WIDTH}, {WIDTH}) + ReLU, {DEPTH * WIDTH * WIDTH:,} prunable fp32 weights "
        f"= {DEPTH * WIDTH * WIDTH * 4 / 1e6:.0f} MB (\"model size\"); sparsity {SPARSITY}",
        "- peak = VmHWM above the process's resident baseline after building the model (one process per "
        "method); `scores` = one `compute_scores` round, `rank` = `rank_and_mask` alone on those scores, "
        "`prune` = the whole `global_prune`; retained = resident memory left after pruning",
        "",
        "| method | rounds | score dtype | score s | score peak MB (x model) | rank s | rank peak MB (x model) "
        "| prune s | prune peak MB (x model) | retained MB (x model) | exact count |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['method']} | failed: {row['error']} |||||||||")
            continue
        m = row["model_mb"]
        lines.append(
            f"| {row['method']} | {row['rounds']} | {row['scores_dtype']} | {row['scores_s']:.1f} | "
            f"{row['scores_peak_mb']:.0f} ({row['scores_peak_mb'] / m:.1f}) | {row['rank_s']:.1f} | "
            f"{row['rank_peak_mb']:.0f} ({row['rank_peak_mb'] / m:.1f}) | {row['prune_s']:.1f} | "
            f"{row['prune_peak_mb']:.0f} ({row['prune_peak_mb'] / m:.1f}) | "
            f"{row['retained_mb']:.0f} ({row['retained_mb'] / m:.1f}) | {row['exact_count']} |"
        )
    (RESULTS / "large_model_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
