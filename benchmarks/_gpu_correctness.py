"""GPU suite steps: correctness of the Triton kernels (Linear, Conv2d) against the masked dense result.

The reference is computed in float32 from the same (possibly half-precision) inputs with TF32 off
(``torch.backends.cuda.matmul.allow_tf32 = False``, ``cudnn.allow_tf32 = False``). The error of a
quantity is ``max |got - ref| / max |ref|`` (relative to the output's scale); it passes under the
dtype's tolerance (:data:`TOLERANCE`). A float32 ``tl.dot`` on a GPU uses TF32 unless the kernels
ask for ``input_precision="ieee"``: :func:`fp32_mode` reads which, and fp32 gets the TF32 tolerance
then (documented in the markdown).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import torch
from _gpu_common import Context, Outcome, Pending, Table, write_markdown
from masked_matmul import block_mask

from torch_prune_ext.kernels import selfcheck, triton_kernels
from torch_prune_ext.kernels.accelerate import AcceleratedLinear
from torch_prune_ext.kernels.format import BlockSparseWeight

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

#: Largest ``max |error| / max |reference|`` that passes: fp32 with IEEE products, fp32 with TF32 products
#: (10-bit mantissa: ~5e-4 per product, a few 1e-3 after accumulation), fp16, bf16.
TOLERANCE = {"fp32-ieee": 1e-4, "fp32-tf32": 5e-3, "fp16": 1e-2, "bf16": 3e-2}

CORRECTNESS_FIELDS = ["case", "layer", "dtype", "fp32_mode", "shape", "block", "density", "quantity",
                      "max_abs_err", "max_rel_err", "tolerance", "pass", "detail"]


def fp32_mode(ctx: Context) -> str:
    """``"ieee"`` or ``"tf32"``: how the kernels multiply float32 on this device.

    The interpreter computes in NumPy float32 (IEEE). On CUDA the kernel module's
    ``FP32_INPUT_PRECISION`` is read when it declares one, else Triton's default, TF32.
    """
    if ctx.device.type != "cuda":
        return "ieee"
    from torch_prune_ext.kernels import _triton_src

    return str(getattr(_triton_src, "FP32_INPUT_PRECISION", "tf32"))


def tolerance(ctx: Context, dtype: str) -> float:
    """The pass threshold of ``dtype`` on this device (see :data:`TOLERANCE`)."""
    return TOLERANCE[f"fp32-{fp32_mode(ctx)}" if dtype == "fp32" else dtype]


def checked_dtypes(ctx: Context) -> list[str]:
    """fp32, fp16, bf16; not bf16 in the interpreter (its bf16 arithmetic is wrong: kernel.md §4)."""
    return ["fp32", "fp16"] if ctx.device.type != "cuda" else ["fp32", "fp16", "bf16"]


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """TF32 off for cuBLAS and cuDNN inside (the float32 reference), restored on exit."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def compare(got: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """``(max |got - ref|, that / max |ref|)``; NaN or Inf anywhere gives an infinite error.

    Examples:
        >>> compare(torch.tensor([1.0, 2.1]), torch.tensor([1.0, 2.0]))[1] < 0.051
        True
    """
    diff = (got.float() - ref.float()).abs()
    if not bool(torch.isfinite(got.float()).all()):
        return float("inf"), float("inf")
    err = float(diff.max()) if diff.numel() else 0.0
    return err, err / max(float(ref.abs().max()) if ref.numel() else 0.0, 1e-30)


def linear_cases(ctx: Context) -> list[dict[str, Any]]:
    """The Linear correctness cases: every checked dtype at blocks 16/32/64, plus ragged token counts."""
    if ctx.tiny:
        shapes = [(37, 64, 96)]
        blocks = [16, 32]
    else:
        shapes = [(300, 1024, 768), (1024, 2048, 1024)]
        blocks = [16, 32, 64]
    return [dict(dtype=dtype, m=m, n=n, k=k, block=b, density=0.5)
            for dtype in checked_dtypes(ctx) for m, n, k in shapes for b in blocks]


def _inputs(ctx: Context, case: dict[str, Any]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(case["seed"])
    n, k, m, b = case["n"], case["k"], case["m"], case["block"]
    mask = block_mask(n, k, b, case["density"], gen) * (torch.rand(n, k, generator=gen) > 0.2).float()
    dtype = DTYPES[case["dtype"]]
    tensors = dict(mask=mask, w=torch.randn(n, k, generator=gen), x=torch.randn(m, k, generator=gen),
                   g=torch.randn(m, n, generator=gen), bias=torch.randn(n, generator=gen))
    return {name: t.to(ctx.device, dtype) for name, t in tensors.items()}


def _references(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    with exact_fp32():
        wm = t["w"].float() * t["mask"].float()
        return {"forward": t["x"].float() @ wm.t() + t["bias"].float(), "grad_input": t["g"].float() @ wm,
                "grad_weight": (t["g"].float().t() @ t["x"].float()) * t["mask"].float()}


def _kernel_outputs(t: dict[str, torch.Tensor], block: int) -> dict[str, dict[str, torch.Tensor]]:
    bsw = BlockSparseWeight.from_dense(t["w"], t["mask"], block)
    direct = {"forward": triton_kernels.forward(t["x"], bsw, bsw.values, t["bias"]),
              "grad_input": triton_kernels.grad_input(t["g"], bsw, bsw.values),
              "grad_weight": bsw.scatter(triton_kernels.grad_weight(t["g"], t["x"], bsw))}
    layer = AcceleratedLinear(t["w"], t["mask"], t["bias"], backend="triton", block_size=block)
    x = t["x"].clone().requires_grad_(True)
    y = layer(x)
    y.backward(t["g"])
    accelerated = {"forward": y.detach(), "grad_input": x.grad, "grad_weight": layer.weight.grad}
    return {"triton_kernels": direct, "AcceleratedLinear(triton)": accelerated}


def linear_correctness(ctx: Context) -> Outcome:
    """Step: forward, dX and dW of the Linear kernels (direct and through ``AcceleratedLinear``)."""
    started = time.perf_counter()
    table = Table(ctx.results / "kernel_correctness.csv", CORRECTNESS_FIELDS)
    cases = [(f"linear/{c['dtype']}/{c['m']}x{c['n']}x{c['k']}/b{c['block']}", dict(c, seed=i))
             for i, c in enumerate(linear_cases(ctx))]
    pending = Pending(ctx, table, cases, 2.0, "kernel correctness")
    for name, case in pending:
        tensors = _inputs(ctx, case)
        refs = _references(tensors)
        rows = []
        for layer, outputs in _kernel_outputs(tensors, case["block"]).items():
            for quantity, got in outputs.items():
                abs_err, rel_err = compare(got, refs[quantity])
                tol = tolerance(ctx, case["dtype"])
                rows.append(dict(case=name, layer=layer, dtype=case["dtype"], fp32_mode=fp32_mode(ctx),
                                 shape=f"{case['m']}x{case['n']}x{case['k']}", block=case["block"],
                                 density=case["density"], quantity=quantity, max_abs_err=abs_err,
                                 max_rel_err=rel_err, tolerance=tol, **{"pass": rel_err <= tol}))
        table.add(rows)
    return _finish(ctx, table, started, cut=pending.cut)


def _finish(ctx: Context, table: Table, started: float, cut: bool) -> Outcome:
    rows = table.rows
    passed = sum(str(r["pass"]) == "True" for r in rows)
    notes = [f"Error = max |got - ref| / max |ref|; reference in float32 with TF32 off. fp32 products on this "
             f"device: {fp32_mode(ctx)} (tolerance {tolerance(ctx, 'fp32')}); fp16 {TOLERANCE['fp16']}, "
             f"bf16 {TOLERANCE['bf16']}."]
    if ctx.device.type != "cuda":
        notes.append("Interpreter run: bf16 is not checked (the interpreter's bf16 arithmetic is wrong).")
    write_markdown(ctx.results / "kernel_correctness.md", "Kernel correctness (Linear and Conv2d)", ctx,
                   time.perf_counter() - started, CORRECTNESS_FIELDS[1:-1], rows, notes)
    worst = {}
    for r in rows:
        worst[r["dtype"]] = max(worst.get(r["dtype"], 0.0), float(r["max_rel_err"]))
    headline = f"{passed}/{len(rows)} kernel checks pass; worst relative error " + ", ".join(
        f"{d} {e:.1e}" for d, e in sorted(worst.items()))
    return Outcome.after(cut, [headline])


# ------------------------------------------------------------------------------------------- Conv2d

def conv_shapes(tiny: bool) -> list:
    """Cases handed to ``check_conv_kernels``: one tiny layer in a dry run, else ResNet-20 and VGG-16 layers."""
    return [selfcheck.ConvCase("tiny", 2, 16, 16, 6)] if tiny else list(selfcheck.REALISTIC_CONV_CASES)


def conv_correctness(ctx: Context) -> Outcome:
    """Step: the Conv2d kernels' own self-check, recorded with this suite's tolerances."""
    started = time.perf_counter()
    table = Table(ctx.results / "kernel_correctness.csv", CORRECTNESS_FIELDS)
    if table.has("conv/0"):
        return _finish(ctx, table, started, cut=False)
    dtypes = [DTYPES[d] for d in checked_dtypes(ctx)]
    ctx.log(f"conv kernel self-check on {ctx.device}, {len(dtypes)} dtypes")
    cases = conv_shapes(ctx.tiny)
    # fp32 products as the Linear kernels multiply them on this device (TF32 on CUDA unless disabled).
    allow_tf32 = fp32_mode(ctx) == "tf32"
    results = selfcheck.check_conv_kernels(ctx.device, dtypes, cases, allow_tf32=allow_tf32)
    if not results:
        return Outcome("partial", note="check_conv_kernels returned no rows")
    names = {v: k for k, v in DTYPES.items()}
    by_name = {case.name: case for case in cases}
    rows = []
    # check_conv_kernels returns one dict per (case, dtype, density) with "dtype" as e.g. "float32" and
    # {forward,grad_input,grad_weight}_max_{abs,rel}: one row per quantity, like the Linear rows.
    for index, result in enumerate(results):
        dtype = names.get(getattr(torch, str(result["dtype"]), None), str(result["dtype"]))
        case = by_name.get(result["case"])
        shape = (f"{case.batch}x{case.in_channels}x{case.size}x{case.size}->{case.out_channels}"
                 f"/k{case.kernel_size}s{case.stride}p{case.padding}" if case is not None else result["case"])
        tol = tolerance(ctx, dtype) if dtype in DTYPES else float("nan")
        for quantity in ("forward", "grad_input", "grad_weight"):
            rel = float(result[f"{quantity}_max_rel"])
            ok = rel <= tol and (quantity != "grad_weight" or bool(result.get("masked_grad_zero", True)))
            rows.append(dict(case=f"conv/{index}", layer="conv2d (triton_conv)", dtype=dtype,
                             fp32_mode="tf32" if allow_tf32 else "ieee", shape=shape, block=result.get("block", ""),
                             density=result.get("density", ""), quantity=quantity,
                             max_abs_err=float(result[f"{quantity}_max_abs"]), max_rel_err=rel, tolerance=tol,
                             detail=json.dumps(result, default=str), **{"pass": ok}))
    table.add(rows)
    return _finish(ctx, table, started, cut=False)
