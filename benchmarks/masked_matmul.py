"""Microbenchmark of masked linear layers (spec: /work/shared/specs/kernel.md §5).

CPU (runs now): dense ``F.linear`` vs ``F.linear(x, W*M)`` vs ``F.linear(x, W_csr)`` (reference for the
"never do this" rule) vs ``addmm`` on CSR / BSR vs ours (``torch_prune_ext.kernels`` CPU path), fp32,
one thread. Writes ``benchmarks/results/masked_matmul.csv``/``.md``/``.png`` and the crossover table
``torch_prune_ext/kernels/crossover_cpu.json`` that the dispatcher reads.

GPU (``--device cuda``; ``benchmarks/gpu_suite.py`` is the measured, time-boxed GPU run): bf16/fp16, dense cuBLAS, masked dense, torch's Triton
BSR (``F.linear(x, W.to_sparse_bsr(b))``), 2:4 at 50%, ours (forward/dX/dW), timed with
``triton.testing.do_bench`` (L2 flush, warm-up), TFLOP/s and % of the roofline (H200 defaults).

Usage::

    python benchmarks/masked_matmul.py --threads 1              # CPU, ~5 min
    python benchmarks/masked_matmul.py --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _crossover_table import merge_table  # noqa: E402

from torch_prune_ext.kernels.cpu import CpuSparsePlan  # noqa: E402
from torch_prune_ext.kernels.dispatch import DEFAULT_TABLE_PATH  # noqa: E402


def block_mask(n, k, b, density, gen):
    occ = torch.rand(n // b, k // b, generator=gen) < density
    return occ.repeat_interleave(b, 0).repeat_interleave(b, 1).float()


def cpu_time(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def gpu_time(fn):
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100) / 1e3


def run(args):
    dev = torch.device(args.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    gen = torch.Generator().manual_seed(0)
    rows = []
    for shape in args.shapes:
        n, k = (int(s) for s in shape.split("x"))
        x = torch.randn(args.batch, k, generator=gen).to(dev, dtype)
        w = torch.randn(n, k, generator=gen).to(dev, dtype)
        reps = args.reps if n * k <= 1024 * 1024 else max(3, args.reps // 2)
        timer = (lambda f: gpu_time(f)) if dev.type == "cuda" else (lambda f: cpu_time(f, reps))
        with torch.inference_mode():
            t_dense = timer(lambda: F.linear(x, w))
        flops = 2 * args.batch * n * k
        for kind in ["unstructured"] + [f"block{b}" for b in args.blocks]:
            for sp in args.sparsities:
                d = 1 - sp / 100
                if kind == "unstructured":
                    m = (torch.rand(n, k, generator=gen) < d).float()
                else:
                    m = block_mask(n, k, int(kind[5:]), d, gen)
                m = m.to(dev, dtype)
                wm = w * m
                ref = F.linear(x.float(), wm.float())
                cands = {"masked_dense": lambda: F.linear(x, w * m)}
                if dev.type == "cpu":
                    wcsr = wm.to_sparse_csr()
                    cands["csr_addmm"] = lambda: torch.mm(wcsr, x.t()).t()
                    if kind != "unstructured":
                        b = int(kind[5:])
                        wbsr = wm.to_sparse_bsr((b, b))
                        cands["bsr_addmm"] = lambda: torch.mm(wbsr, x.t()).t()
                        plan = CpuSparsePlan.build(m, "bsr", b)
                    else:
                        plan = CpuSparsePlan.build(m, "csr")
                    plan.matrices(w)
                    cands["ours_cpu"] = lambda: plan.forward(x, w, None)
                    if sp >= 90 and n <= 1024:
                        cands["linear_csr"] = lambda: F.linear(x, wcsr)
                else:
                    from torch_prune_ext.kernels.dispatch import make_plan
                    from torch_prune_ext.kernels.function import masked_linear

                    if kind != "unstructured":
                        b = int(kind[5:])
                        wbsr = wm.to_sparse_bsr((b, b))
                        cands["torch_triton_bsr"] = lambda: F.linear(x, wbsr)
                        plan = make_plan(m, dev, dtype, backend="triton", block_size=b)
                        cands["ours_triton"] = lambda: masked_linear(x, w, None, plan)
                    if sp == 50:
                        from torch.sparse import to_sparse_semi_structured

                        m24 = torch.tensor([1, 1, 0, 0], device=dev, dtype=dtype).repeat(n, k // 4)
                        w24 = to_sparse_semi_structured(w * m24)
                        cands["semi_structured_2:4"] = lambda: F.linear(x, w24)
                for name, fn in cands.items():
                    try:
                        with torch.inference_mode():
                            out = fn()
                            t = timer(fn)
                        err = float((out.float() - ref).abs().max()) if name != "semi_structured_2:4" else float("nan")
                    except (RuntimeError, NotImplementedError) as exc:
                        print(f"skip {name} {shape} {kind} {sp}: {exc}"[:200])
                        continue
                    row = dict(device=args.device, dtype=args.dtype, shape=shape, batch=args.batch, mask=kind,
                               sparsity=sp, method=name, time_ms=t * 1e3, dense_ms=t_dense * 1e3,
                               speedup=t_dense / t, tflops_effective=flops / t / 1e12, max_err=err)
                    if dev.type == "cuda":
                        bytes_moved = (x.numel() + n * args.batch + wm.numel() * d) * x.element_size()
                        bound = max(flops * d / (args.peak_tflops * 1e12), bytes_moved / (args.peak_tbs * 1e12))
                        row["roofline_pct"] = 100 * bound / t
                    rows.append(row)
                    print(f"{shape:>10} {kind:>12} {sp:>3}% {name:>16} {t*1e3:9.3f} ms  x{t_dense/t:5.2f}  err {err:.1e}", flush=True)
    return rows


def max_density(rows, method, mask):
    """Largest tested density (1 - sparsity/100) at which ``method`` beat dense on every row of ``mask``.

    Rows are dicts with ``method``, ``mask`` (e.g. ``"block32"``), ``sparsity`` (%) and ``speedup``.
    """
    best = 0.0
    by_sp = {}
    for r in rows:
        if r["method"] == method and r["mask"] == mask:
            by_sp.setdefault(r["sparsity"], []).append(r["speedup"])
    for sp, s in by_sp.items():
        if min(s) > 1.0:
            best = max(best, 1 - sp / 100)
    return round(best, 4)


def crossover(rows, blocks):
    """Largest tested density at which the sparse path beats dense on every shape."""
    return {
        "csr_max_density": max_density(rows, "ours_cpu", "unstructured"),
        "bsr_max_block_density": {str(b): max_density(rows, "ours_cpu", f"block{b}") for b in blocks},
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--shapes", nargs="+", default=["1024x1024", "4096x4096"])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--sparsities", nargs="+", type=int, default=[50, 75, 90, 95, 99])
    p.add_argument("--blocks", nargs="+", type=int, default=[16, 32, 64])
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--peak-tflops", type=float, default=790.0, help="roofline compute peak (H200 bf16)")
    p.add_argument("--peak-tbs", type=float, default=4.8, help="roofline memory bandwidth, TB/s (H200)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "masked_matmul"))
    p.add_argument("--table", default=None, help="where to write the crossover JSON (default: the shipped CPU table for --device cpu)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    t0 = time.time()
    rows = run(args)
    meta = dict(command="python " + " ".join(sys.argv), threads=args.threads, loadavg_start=load0,
                loadavg_end=os.getloadavg(), seconds=round(time.time() - t0, 1), torch=torch.__version__,
                cpu=platform.processor() or platform.machine(), date=time.strftime("%Y-%m-%d %H:%M"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    if args.device == "cpu":
        values = crossover(rows, args.blocks)
    else:
        values = {"triton_max_block_density": {str(b): max_density(rows, "ours_triton", f"block{b}") for b in args.blocks},
                  "semi_structured": True}
    table_path = Path(args.table) if args.table else (DEFAULT_TABLE_PATH if args.device == "cpu" else out.with_suffix(".crossover.json"))
    # Only the Linear keys: the conv threshold (benchmarks/conv_crossover.py) in the same file is kept.
    table = merge_table(table_path, "cpu" if args.device == "cpu" else "cuda", values, "measured", meta)
    lines = [f"# masked matmul benchmark ({args.device}, {args.dtype}, batch {args.batch})", "",
             f"command: `{meta['command']}`; threads {args.threads}; load average {load0} -> {meta['loadavg_end']}; "
             f"{meta['seconds']} s; torch {torch.__version__}", "",
             "| shape | mask | sparsity % | method | ms | speedup vs dense | max err |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['shape']} | {r['mask']} | {r['sparsity']} | {r['method']} | {r['time_ms']:.3f} | {r['speedup']:.2f} | {r['max_err']:.1e} |" for r in rows]
    lines += ["", "dense F.linear time per shape: " + ", ".join(sorted({f"{r['shape']}: {r['dense_ms']:.2f} ms" for r in rows})),
              "", "## crossover table (written to " + str(table_path.relative_to(ROOT) if table_path.is_relative_to(ROOT) else table_path) + ")",
              "", "```json", json.dumps({k: v for k, v in table.items() if not k.startswith("measured")}, indent=1), "```"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(args.shapes), figsize=(6 * len(args.shapes), 4), squeeze=False)
        for ax, shape in zip(axes[0], args.shapes):
            for method in sorted({r["method"] for r in rows}):
                for mask in sorted({r["mask"] for r in rows}):
                    pts = [(r["sparsity"], r["speedup"]) for r in rows if r["shape"] == shape and r["method"] == method and r["mask"] == mask]
                    if pts and method in ("ours_cpu", "ours_triton", "masked_dense"):
                        ax.plot(*zip(*pts), marker="o", label=f"{method} {mask}")
            ax.axhline(1.0, color="k", lw=0.5)
            ax.set(title=shape, xlabel="sparsity %", ylabel="speedup vs dense", yscale="log")
            ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out.with_suffix(".png"), dpi=100)
    except ImportError:
        pass
    print("wrote", out.with_suffix(".csv"), out.with_suffix(".md"), table_path)


if __name__ == "__main__":
    main()
