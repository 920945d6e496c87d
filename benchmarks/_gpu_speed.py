"""GPU suite steps: kernel speed against cuBLAS dense, torch's Triton BSR and 2:4, and the CUDA crossover table.

Each case (dtype, shape, tokens, block, sparsity) is timed side by side in one call and appended to
``kernel_speed.csv`` as soon as it is done; the dense baseline of a (dtype, shape, tokens) group is its
own case, timed first. Speedups are against that baseline (forward: ``F.linear``; dX: ``g @ W``; dW:
``g^T @ x``). ``roofline_pct`` = the lower bound ``max(FLOP·d / peak, bytes / bandwidth)`` over the time,
with ``d`` the stored block density and bytes = x, y and the stored weight read or written once.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from _gpu_common import Context, Outcome, Pending, Table, provenance, save_json, time_ms, write_markdown
from _gpu_correctness import DTYPES, compare, exact_fp32
from masked_matmul import block_mask, max_density

from torch_prune_ext.kernels import triton_kernels
from torch_prune_ext.kernels.format import BlockSparseWeight

#: Roofline ceilings of an H200 (bf16 dense matrix product measured here ~790 TFLOP/s; HBM3e 4.8 TB/s).
PEAK_TFLOPS = 790.0
PEAK_TBS = 4.8

SPEED_FIELDS = ["case", "dtype", "N", "K", "tokens", "mask", "block", "sparsity", "method", "ms", "baseline_ms",
                "speedup", "tflops_effective", "roofline_pct", "max_rel_err", "note"]
BASELINE_OF = {"ours_fwd": "dense", "torch_bsr": "dense", "semi24": "dense", "masked_dense": "dense",
               "ours_dx": "dense_dx", "ours_dw": "dense_dw"}


def speed_plan(ctx: Context) -> tuple[list[tuple[str, list[tuple[int, int]], list[int]]], list[int], list[int]]:
    """``(groups, blocks, sparsities)``; a group is ``(dtype, [(N, K)], [tokens])``, main dtype first."""
    if ctx.tiny:
        groups = [("fp32", [(64, 128)], [32])] + ([("fp16", [(64, 128)], [32])] if ctx.device.type == "cuda" else [])
        return groups, [16, 32], [50, 90]
    groups = [("bf16", [(4096, 4096), (4096, 11008)], [256, 4096]), ("fp16", [(4096, 4096)], [4096])]
    return groups, [16, 32, 64], [50, 75, 90, 95, 99]


def speed_cases(ctx: Context) -> Iterator[dict[str, Any]]:
    """Every case in priority order: per (dtype, shape, tokens) the dense baseline, then blocks × sparsities."""
    groups, blocks, sparsities = speed_plan(ctx)
    for dtype, shapes, token_counts in groups:
        for n, k in shapes:
            for tokens in token_counts:
                yield dict(dtype=dtype, N=n, K=k, tokens=tokens, block=0, sparsity=0)
                for b in blocks:
                    for sp in sparsities:
                        yield dict(dtype=dtype, N=n, K=k, tokens=tokens, block=b, sparsity=sp)


def case_name(case: dict[str, Any]) -> str:
    """The case's key in the CSV, e.g. ``bf16/4096x4096/t256/b32/s90`` (``.../dense`` for a baseline)."""
    head = f"{case['dtype']}/{case['N']}x{case['K']}/t{case['tokens']}"
    return head + ("/dense" if case["block"] == 0 else f"/b{case['block']}/s{case['sparsity']}")


def bound_ms(case: dict[str, Any], density: float, element_bytes: int) -> float:
    """The roofline lower bound in ms at weight density ``density``.

    Examples:
        >>> round(bound_ms(dict(N=4096, K=4096, tokens=4096), 1.0, 2), 4)   # compute-bound dense bf16
        0.174
    """
    m, n, k = case["tokens"], case["N"], case["K"]
    flops = 2 * m * n * k * density
    moved = (m * k + m * n + n * k * density) * element_bytes
    return 1e3 * max(flops / (PEAK_TFLOPS * 1e12), moved / (PEAK_TBS * 1e12))


@functools.lru_cache(maxsize=1)
def _group_tensors(device: torch.device, dtype: str, n: int, k: int, tokens: int) -> dict[str, torch.Tensor]:
    """x, W and dY of one (dtype, shape, tokens) group, drawn on the device once for all its cases."""
    gen = torch.Generator(device=device).manual_seed(n + k + tokens)
    draw = {"w": (n, k), "x": (tokens, k), "g": (tokens, n)}
    return {name: torch.randn(shape, generator=gen, device=device).to(DTYPES[dtype]) for name, shape in draw.items()}


def _tensors(ctx: Context, case: dict[str, Any]) -> dict[str, torch.Tensor]:
    out = dict(_group_tensors(ctx.device, case["dtype"], case["N"], case["K"], case["tokens"]))
    if case["block"]:
        gen = torch.Generator().manual_seed(case["block"] * 1000 + case["sparsity"])
        b = case["block"]  # block occupancy drawn on the CPU (small), expanded on the device
        occupancy = block_mask(case["N"] // b, case["K"] // b, 1, 1 - case["sparsity"] / 100, gen)
        out["mask"] = occupancy.to(ctx.device, DTYPES[case["dtype"]]).repeat_interleave(b, 0).repeat_interleave(b, 1)
    return out


def _candidates(case: dict[str, Any], t: dict[str, torch.Tensor]) -> tuple[dict[str, Callable], float, torch.Tensor]:
    """``({method: fn}, density, masked weight)`` of one case."""
    if case["block"] == 0:
        m24 = torch.tensor([1, 1, 0, 0], device=t["w"].device, dtype=t["w"].dtype).repeat(case["N"], case["K"] // 4)
        ones = torch.ones_like(t["w"])
        fns = {"dense": lambda: F.linear(t["x"], t["w"]), "masked_dense": lambda: F.linear(t["x"], t["w"] * ones),
               "dense_dx": lambda: t["g"] @ t["w"], "dense_dw": lambda: t["g"].t() @ t["x"]}
        try:
            from torch.sparse import to_sparse_semi_structured

            w24 = to_sparse_semi_structured(t["w"] * m24)
            fns["semi24"] = lambda: F.linear(t["x"], w24)
        except Exception as exc:  # noqa: BLE001 - recorded: 2:4 needs CUDA, fp16/bf16, sm80+
            fns["semi24"] = _raiser(exc)
        return fns, 1.0, t["w"] * m24
    wm = t["w"] * t["mask"]
    bsw = BlockSparseWeight.from_dense(t["w"], t["mask"], case["block"])
    fns = {"ours_fwd": lambda: triton_kernels.forward(t["x"], bsw, bsw.values, None),
           "ours_dx": lambda: triton_kernels.grad_input(t["g"], bsw, bsw.values),
           "ours_dw": lambda: triton_kernels.grad_weight(t["g"], t["x"], bsw)}
    try:
        w_bsr = wm.to_sparse_bsr((case["block"], case["block"]))
        fns["torch_bsr"] = lambda: F.linear(t["x"], w_bsr)
    except Exception as exc:  # noqa: BLE001 - recorded: not every dtype/device has BSR
        fns["torch_bsr"] = _raiser(exc)
    return fns, bsw.block_density, wm


def _raiser(exc: Exception) -> Callable[[], Any]:
    def fail() -> Any:
        raise exc
    return fail


def _baseline_ms(table: Table, case: dict[str, Any], method: str) -> float:
    base = case_name(dict(case, block=0, sparsity=0))
    return next((float(r["ms"]) for r in table.rows if r["case"] == base and r["method"] == BASELINE_OF.get(method, method)),
                float("nan"))


def _time_case(ctx: Context, table: Table, case: dict[str, Any]) -> list[dict[str, Any]]:
    t = _tensors(ctx, case)
    fns, density, wm = _candidates(case, t)
    with exact_fp32():
        ref = F.linear(t["x"].float(), wm.float())
    rows: list[dict[str, Any]] = []
    for method, fn in fns.items():
        row = dict(case=case_name(case), **case, mask="dense" if not case["block"] else f"block{case['block']}",
                   method=method, note="")
        rows.append(row)
        try:
            with torch.inference_mode():
                out = fn()
                ms = time_ms(ctx, fn)
        except Exception as exc:  # noqa: BLE001 - one failing backend must not stop the suite
            row.update(ms=float("nan"), note=f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}")
            continue
        baseline = BASELINE_OF.get(method, method)
        same_case = {r["method"]: r.get("ms") for r in rows}
        base = ms if baseline == method else (same_case.get(baseline) or _baseline_ms(table, case, method))
        d = 0.5 if method == "semi24" else (1.0 if not case["block"] else density)
        row.update(ms=ms, baseline_ms=base, speedup=base / ms,
                   tflops_effective=2 * case["tokens"] * case["N"] * case["K"] / ms / 1e9,
                   roofline_pct=100 * bound_ms(case, d, t["x"].element_size()) / ms)
        if method in ("ours_fwd", "torch_bsr", "semi24"):
            row["max_rel_err"] = compare(out, ref)[1]
        if method == "semi24":
            row.update(mask="2:4", sparsity=50)
    return rows


def kernel_speed(ctx: Context) -> Outcome:
    """Step: every speed case, resumable row by row."""
    started = time.perf_counter()
    table = Table(ctx.results / "kernel_speed.csv", SPEED_FIELDS)
    pending = Pending(ctx, table, [(case_name(c), c) for c in speed_cases(ctx)], 0.5 if ctx.tiny else 3.0,
                      "kernel speed")
    for _, case in pending:
        rows = _time_case(ctx, table, case)
        table.add(rows)
        ours = next((r for r in rows if r["method"] == "ours_fwd"), None)
        if ours is not None and ours.get("speedup") is not None:
            ctx.log(f"    ours fwd {ours['ms']:.4f} ms, x{ours['speedup']:.2f} vs dense, {ours['roofline_pct']:.0f}% roofline")
    write_markdown(ctx.results / "kernel_speed.md", "Kernel speed vs cuBLAS dense, torch BSR and 2:4", ctx,
                   time.perf_counter() - started, SPEED_FIELDS[1:], table.rows,
                   [f"Roofline ceilings: {PEAK_TFLOPS} TFLOP/s, {PEAK_TBS} TB/s (H200). Medians of "
                    "triton.testing.do_bench (warm-up, L2 flush) on CUDA; forward timings under inference_mode."])
    return pending.outcome(_speed_headlines(table.rows))


def _speed_headlines(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in rows:
        if r["method"] == "ours_fwd" and r["sparsity"] in (90, 95, 99) and isinstance(r.get("speedup"), float):
            if r["block"] == max(x["block"] for x in rows):
                lines.append(f"ours fwd {r['dtype']} {r['N']}x{r['K']} tokens {r['tokens']} block {r['block']} at "
                             f"{r['sparsity']}%: x{r['speedup']:.2f} vs dense ({r['roofline_pct']:.0f}% of roofline)")
    return lines[:9]


def crossover(ctx: Context) -> Outcome:
    """Step: the CUDA crossover table from the main dtype's speed rows (written once they are all there)."""
    started = time.perf_counter()
    table = Table(ctx.results / "kernel_speed.csv", SPEED_FIELDS)
    groups, blocks, _ = speed_plan(ctx)
    dtype = groups[0][0]
    missing = [c for c in speed_cases(ctx) if c["dtype"] == dtype and not table.has(case_name(c))]
    if missing:
        return Outcome("partial", note=f"waits for {len(missing)} {dtype} kernel speed case(s)")
    rows = [r for r in table.rows if r["dtype"] == dtype]
    semi = [r.get("speedup") for r in rows if r["method"] == "semi24"]
    cuda = {"triton_max_block_density": {str(b): max_density(rows, "ours_fwd", f"block{b}") for b in blocks},
            "semi_structured": bool(semi) and all(isinstance(s, float) and s > 1.0 for s in semi)}
    result = {"cuda": cuda, "measured": {**provenance(ctx, time.perf_counter() - started), "dtype": dtype,
                                         "rule": "largest tested block density at which the kernel's forward beat "
                                                 "cuBLAS dense on every shape and token count"}}
    save_json(ctx.table_path, result)
    save_json(ctx.results / "crossover_cuda.json", result)
    write_markdown(ctx.results / "crossover_cuda.md", "CUDA crossover table", ctx, time.perf_counter() - started,
                   ["block", "triton_max_block_density"],
                   [dict(block=b, triton_max_block_density=d) for b, d in cuda["triton_max_block_density"].items()],
                   [f"Written to `{ctx.table_path}`; 2:4 beats dense: {cuda['semi_structured']}."])
    return Outcome("complete", [f"crossover ({dtype}): max block density {cuda['triton_max_block_density']}, "
                                f"2:4 {cuda['semi_structured']}"])
