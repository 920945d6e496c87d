"""End-to-end speed of block- and hybrid-pruned VGG-16-BN and ResNet-20 after ``accelerate``, against dense.

Per model, granularity and sparsity: the dense model and the same model (same initial weights)
pruned with ``tpe.global_prune(..., granularity="block"|"hybrid")`` (a cheap method, ``random`` by
default, so that pruning takes seconds) and converted by ``tpe.accelerate``. The first conv and the
classifier stay dense (they are not pruning targets), as is usual. Measured in one run, side by side:

* whole model, eager and ``torch.compile`` (failures are recorded, not fatal), batch 1 and 64:
  medians of interleaved dense/accelerated repeats (the load hits both alike), latency ratio =
  throughput ratio, the ideal speedup (conv MACs / kept conv MACs) and the fraction of it reached,
  and the max error against the masked dense model;
* every conv alone at its input shape (eager): dense ``nn.Conv2d``, the accelerated layer, and the
  same layer with an empty mask (its fixed cost: padding, layout, output), the backend that
  ``accelerate`` chose and why (``model.accelerate_report``), activation and kept-weight megabytes;
* the overhead bound: the accelerated model's time if every kept tile were free (dense time minus
  the sparse convs' dense time plus their fixed cost), i.e. the best speedup this design can reach.

Writes ``<stem>.csv`` (models), ``<stem>_layers.csv``, ``<stem>.md`` and ``<stem>.png`` into
``--results-dir`` (default ``benchmarks/results/``, ``benchmarks/results/gpu/`` for CUDA; stem
``pruned_inference``, ``pruned_inference_quick`` with ``--quick``).

Usage::

    python benchmarks/pruned_inference.py --threads 2                     # CPU, quiet machine, ~15-25 min
    python benchmarks/pruned_inference.py --models vgg16_bn --sparsities 0.95 --granularities block
    python benchmarks/pruned_inference.py --device cuda                   # (benchmarks/gpu_suite.py runs this)
    python benchmarks/pruned_inference.py --quick                         # tiny ResNet-20, seconds (CI)
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _inference_report import write_csv, write_markdown, write_plot  # noqa: E402
from _timing import interleaved_ms, load_average  # noqa: E402

import torch_prune_ext as tpe  # noqa: E402
from torch_prune_ext.errors import PruningError  # noqa: E402
from torch_prune_ext.kernels import AcceleratedConv2d, ConvGeometry  # noqa: E402
from torch_prune_ext.models import get_model  # noqa: E402

MODEL_FIELDS = ["model", "granularity", "sparsity", "density", "batch", "mode", "dense_ms", "accelerated_ms",
                "speedup", "dense_img_per_s", "accelerated_img_per_s", "ideal_speedup", "fraction_of_ideal",
                "bound_ms", "bound_speedup", "live_output", "sparse_layers", "dense_layers", "max_rel_err", "threads", "loadavg",
                "repeats", "error"]
LAYER_FIELDS = ["model", "granularity", "sparsity", "batch", "layer", "backend", "reason", "density", "tile_density",
                "in_shape", "dense_ms", "accelerated_ms", "empty_ms", "speedup", "ideal_speedup", "fraction_of_ideal",
                "act_mb", "kept_weight_mb", "macs_m", "grid_factor", "dense_gflops", "tile_gflops"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (``--quick`` fills the ones not given with tiny values)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--models", nargs="+", choices=["vgg16_bn", "resnet20"], default=None)
    parser.add_argument("--sparsities", nargs="+", type=float, default=None,
                        help="default 0.95 0.9 0.98 (the goal case first: a cut run has it)")
    parser.add_argument("--granularities", nargs="+", choices=["block", "hybrid"], default=["block", "hybrid"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=None, help="default 1 64")
    parser.add_argument("--modes", nargs="+", choices=["eager", "compile"], default=None,
                        help="default eager compile (--quick: eager)")
    parser.add_argument("--method", default="random", help="pruning method (default random: fast)")
    parser.add_argument("--block-size", type=int, default=32, help="pruning tile side (default 32)")
    parser.add_argument("--hybrid-fill", type=float, default=0.5,
                        help="hybrid: kept fraction inside kept tiles, block_density = density / fill (default 0.5)")
    parser.add_argument("--conv-backend", default="auto", help="accelerate(conv_backend=...) (default auto)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per candidate (default 15)")
    parser.add_argument("--image-size", type=int, default=32, help="input side (default 32; --quick 8 for ResNet-20)")
    parser.add_argument("--no-layers", action="store_true", help="skip the per-layer timings")
    parser.add_argument("--quick", action="store_true", help="tiny ResNet-20 run (CI, gpu_suite --dry-run)")
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    quick = args.quick
    args.models = args.models or (["resnet20"] if quick else ["vgg16_bn", "resnet20"])
    args.sparsities = args.sparsities or ([0.95] if quick else [0.95, 0.9, 0.98])
    args.batch_sizes = args.batch_sizes or ([1, 2] if quick else [1, 64])
    args.modes = args.modes or (["eager"] if quick else ["eager", "compile"])
    args.repeats = args.repeats or (2 if quick else 15)
    if quick and args.image_size == 32 and args.models == ["resnet20"]:
        args.image_size = 8
    if not all(0.0 < s < 1.0 for s in args.sparsities):
        parser.error("--sparsities must lie in (0, 1), e.g. 0.95")
    if not 0.0 < args.hybrid_fill <= 1.0:
        parser.error("--hybrid-fill must lie in (0, 1]")
    if min(args.batch_sizes) < 1 or args.repeats < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--batch-sizes, --repeats and --threads must be >= 1")
    if "vgg16_bn" in args.models and args.image_size != 32:
        parser.error("vgg16_bn needs --image-size 32 (five 2x2 pools and a 2x2 average pool)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    default_dir = ROOT / "benchmarks" / "results" / ("gpu" if args.device == "cuda" else "")
    args.results_dir = args.results_dir or default_dir
    args.stem = "pruned_inference_quick" if quick else "pruned_inference"
    return args


def prune_targets(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Every conv weight but the first (first conv and classifier stay dense)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return [(m, "weight") for m in convs[1:]]


def pruned_copy(name: str, seed: int, args: argparse.Namespace, granularity: str, sparsity: float) -> nn.Module:
    """The model ``name`` initialised with ``seed``, pruned globally (``args.method``) at ``granularity``."""
    torch.manual_seed(seed)
    model = get_model(name, num_classes=10)
    options: dict[str, Any] = dict(granularity=granularity, block_size=(args.block_size, args.block_size))
    if granularity == "hybrid":
        options["block_density"] = min(1.0, (1.0 - sparsity) / args.hybrid_fill)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # collapse warnings of a random mask; the density is recorded
        tpe.global_prune(model, args.method, sparsity, targets=prune_targets(model), seed=seed,
                         input_shape=(3, args.image_size, args.image_size), **options)
    return model.eval()


def conv_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Size]:
    """Input shape of every ``nn.Conv2d`` of ``model`` for the input ``x`` (one forward, hooks removed after)."""
    shapes: dict[str, torch.Size] = {}
    handles = [m.register_forward_hook(lambda mod, inp, out, n=n: shapes.__setitem__(n, inp[0].shape))
               for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def empty_twin(layer: AcceleratedConv2d) -> AcceleratedConv2d | None:
    """The same accelerated conv with an all-zero mask and the same backend (its fixed cost per call), or None
    when that backend cannot run an empty mask (its ``empty_ms`` is then NaN)."""
    block = layer.plan.tap.block if layer.plan.tap is not None else None
    try:
        twin = AcceleratedConv2d(layer.weight.detach(), torch.zeros_like(layer.weight_mask), layer.bias,
                                 layer.geometry, backend=layer.backend, block_size=block)
        with torch.inference_mode():
            twin(torch.zeros(1, layer.geometry.in_channels, 8, 8, device=layer.weight.device))
        return twin
    except (RuntimeError, ValueError, PruningError) as exc:
        print(f"  no empty-mask twin for a {layer.backend} layer: {exc}"[:200], flush=True)
        return None


def layer_rows(dense: nn.Module, accelerated: nn.Module, shapes: dict[str, torch.Size], case: dict[str, Any],
               args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Per-conv timings (dense, accelerated, empty-mask twin) at the conv's input shape."""
    report = {row.name: row for row in accelerated.accelerate_report.layers}
    rows = []
    for name, shape in shapes.items():
        conv, fast = dense.get_submodule(name), accelerated.get_submodule(name)
        x = torch.randn(shape, device=device)
        geometry = ConvGeometry.of(conv)
        ho, wo = geometry.output_size(shape[2], shape[3])
        choice = report.get(name)
        mask = getattr(fast, "weight_mask", None)
        density = float((mask != 0).float().mean()) if mask is not None else 1.0
        candidates = {"dense": lambda: conv(x), "accelerated": lambda: fast(x)}
        sparse = isinstance(fast, AcceleratedConv2d) and fast.backend != "dense"
        twin = empty_twin(fast) if sparse else None
        if twin is not None:
            candidates["empty"] = lambda: twin(x)
        with torch.inference_mode():
            times = interleaved_ms(candidates, args.repeats, device)
        macs = shape[0] * ho * wo * conv.weight.numel()
        tile = float(fast.plan.tap.tile_density) if sparse and fast.plan.tap is not None else float("nan")
        rows.append(dict(case, layer=name, backend=choice.backend if choice else "not pruned",
                         reason=choice.reason if choice else "not a pruning target", density=density,
                         tile_density=tile, in_shape="x".join(map(str, shape)), dense_ms=times["dense"],
                         accelerated_ms=times["accelerated"], empty_ms=times.get("empty", float("nan")),
                         speedup=times["dense"] / times["accelerated"],
                         ideal_speedup=1.0 / density if density > 0 else float("inf"),
                         fraction_of_ideal=times["dense"] / times["accelerated"] * density,
                         dense_gflops=2e-6 * macs / times["dense"],
                         tile_gflops=2e-6 * macs * tile / (times["accelerated"] - times["empty"])
                         if sparse and times["accelerated"] > times["empty"] else float("nan"),
                         act_mb=4e-6 * (x.numel() + shape[0] * conv.out_channels * ho * wo),
                         kept_weight_mb=4e-6 * conv.weight.numel() * density, macs_m=macs / 1e6,
                         grid_factor=grid_factor(geometry, shape)))
    return rows


def grid_factor(geometry: ConvGeometry, shape: torch.Size) -> float:
    """Rows the tap backend computes per valid output: ``Hp·Wp / (Ho·Wo)`` for stride 1 (its shift mode), else 1."""
    if geometry.stride != (1, 1):
        return 1.0
    ho, wo = geometry.output_size(shape[2], shape[3])
    (ph, pw) = geometry.padding
    return (shape[2] + 2 * ph) * (shape[3] + 2 * pw) / (ho * wo)


def ideal_speedup(layers: list[dict[str, Any]]) -> float:
    """Conv MACs of the dense model over the conv MACs the pruned model keeps."""
    total = sum(r["macs_m"] for r in layers)
    kept = sum(r["macs_m"] * r["density"] for r in layers)
    return total / kept if kept > 0 else float("inf")


def compiled_pair(dense: nn.Module, accelerated: nn.Module, x: torch.Tensor,
                  cache: dict[int, Any]) -> tuple[Any, Any, str]:
    """``torch.compile`` of both models, run once on ``x``; ``(None, None, error)`` when compiling fails.

    The compiled dense model is kept in ``cache`` (by ``id(dense)``) and reused by the next cases.
    """
    import torch._dynamo

    # Every graph break (one per accelerated layer) resumes in a new frame that recompiles per layer shape.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    try:
        pair = cache.setdefault(id(dense), torch.compile(dense)), torch.compile(accelerated)
        with torch.inference_mode():
            for model in pair:
                model(x)
        return pair[0], pair[1], ""
    except Exception as exc:  # noqa: BLE001 - any compiler failure is a result to record
        text = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        return None, None, text


def model_rows(dense: nn.Module, accelerated: nn.Module, inputs: dict[int, torch.Tensor],
               masked_out: dict[int, torch.Tensor], layers: list[dict], case: dict[str, Any], args: argparse.Namespace,
               compiled: dict[int, Any]) -> list[dict[str, Any]]:
    """Whole-model timings, eager and compiled (dense compiled once, in ``compiled``), per batch size."""
    device = torch.device(args.device)
    rows = []
    for batch, x in inputs.items():
        with torch.inference_mode():
            ref, out = masked_out[batch], accelerated(x)
        err = float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
        at_batch = [r for r in layers if r["batch"] == batch]
        for mode in args.modes:
            d_model, a_model, error = (dense, accelerated, "") if mode == "eager" else compiled_pair(dense, accelerated, x, compiled)
            row = dict(case, batch=batch, mode=mode, max_rel_err=err, threads=torch.get_num_threads(),
                       repeats=args.repeats, error=error, ideal_speedup=ideal_speedup(at_batch) if at_batch else "",
                       sparse_layers=sum(r["backend"] in ("tap", "triton") for r in at_batch),
                       dense_layers=sum(r["backend"] not in ("tap", "triton") for r in at_batch))
            if d_model is not None:
                with torch.inference_mode():
                    row["loadavg"] = " ".join(map(str, load_average()))
                    times = interleaved_ms({"dense": lambda: d_model(x), "accelerated": lambda: a_model(x)},
                                           args.repeats, device)
                row.update(_speed_columns(times, batch, at_batch, mode, row["ideal_speedup"]))
            rows.append(row)
    return rows


def _speed_columns(times: dict[str, float], batch: int, layers: list[dict], mode: str, ideal: Any) -> dict[str, Any]:
    speedup = times["dense"] / times["accelerated"]
    cols = dict(dense_ms=times["dense"], accelerated_ms=times["accelerated"], speedup=speedup,
                dense_img_per_s=1e3 * batch / times["dense"], accelerated_img_per_s=1e3 * batch / times["accelerated"])
    if isinstance(ideal, float):
        cols["fraction_of_ideal"] = speedup / ideal
    sparse = [r for r in layers if r["backend"] in ("tap", "triton")]
    if mode == "eager" and layers:
        bound = times["dense"] - sum(r["dense_ms"] for r in sparse) + sum(r["empty_ms"] for r in sparse)
        cols.update(bound_ms=bound, bound_speedup=times["dense"] / bound if bound > 0 else float("nan"))
    return cols


def dense_inputs(dense: nn.Module,
                 args: argparse.Namespace) -> tuple[dict[int, torch.Tensor], dict[int, dict[str, torch.Size]]]:
    """The input batch of every batch size (seeded by the size) and each conv's input shape in ``dense``."""
    device = torch.device(args.device)
    inputs = {b: torch.randn(b, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(b)).to(device)
              for b in args.batch_sizes}
    return inputs, {b: conv_inputs(dense, x) for b, x in inputs.items()}


def run_case(dense: nn.Module, name: str, granularity: str, sparsity: float, args: argparse.Namespace,
             compiled: dict[int, Any], inputs: dict[int, torch.Tensor],
             shapes: dict[int, dict[str, torch.Size]]) -> tuple[list[dict], list[dict]]:
    """One model at one granularity and sparsity against ``dense`` (seed 0): its model rows and layer rows.

    ``inputs`` and ``shapes`` come from :func:`dense_inputs` (the same for every case of a model).
    """
    seed, device = 0, torch.device(args.device)
    pruned = pruned_copy(name, seed, args, granularity, sparsity).to(device)
    masks = [m.weight_mask for m, _ in prune_targets(pruned)]
    density = sum(float(m.sum()) for m in masks) / sum(m.numel() for m in masks)
    case = dict(model=name, granularity=granularity, sparsity=sparsity, density=density)
    with torch.inference_mode():
        masked_out = {b: pruned(x) for b, x in inputs.items()}
        probe = pruned(torch.randn(2, 3, args.image_size, args.image_size, device=device))
    # A mask that cuts every path from the input leaves constant logits: such a case is flagged, not hidden.
    case["live_output"] = bool((probe[0] - probe[1]).abs().max() > 1e-6 * probe.abs().max().clamp_min(1e-30))
    tpe.accelerate(pruned, device=device, conv_backend=args.conv_backend)
    layers = []
    if not args.no_layers:
        for batch in args.batch_sizes:
            layers += layer_rows(dense, pruned, shapes[batch], dict(case, batch=batch), args, device)
    return model_rows(dense, pruned, inputs, masked_out, layers, case, args, compiled), layers


def save(args: argparse.Namespace, meta: dict[str, Any], models: list[dict], layers: list[dict]) -> None:
    """Write the CSVs, the markdown and the plot of the rows so far."""
    stem = args.results_dir / args.stem
    write_csv(stem.with_suffix(".csv"), MODEL_FIELDS, models)
    write_csv(stem.parent / (stem.name + "_layers.csv"), LAYER_FIELDS, layers)
    write_markdown(stem.with_suffix(".md"), meta, models, layers, quick=args.quick)
    write_plot(stem.with_suffix(".png"), models)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/pruned_inference.py",
                                                              *(sys.argv[1:] if argv is None else argv)])
    meta = dict(command=command, device=device, threads=torch.get_num_threads(), loadavg_start=load_average(),
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    if device.type == "cuda":  # dense cuDNN convs round fp32 to TF32 when this is on; the Triton kernels do not
        meta["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
    started = time.perf_counter()
    models, layers, compiled = [], [], {}
    args.results_dir.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        torch.manual_seed(0)
        dense = get_model(name, num_classes=10).eval().to(device)
        inputs, shapes = dense_inputs(dense, args)
        for granularity in args.granularities:
            for sparsity in args.sparsities:
                print(f"{name} {granularity} {sparsity:.0%}", flush=True)
                rows, layer_list = run_case(dense, name, granularity, sparsity, args, compiled, inputs, shapes)
                models += rows
                layers += layer_list
                for r in rows:
                    print(f"  batch {r['batch']:>3} {r['mode']:>7}: x{r.get('speedup', float('nan')):.2f} "
                          f"(ideal x{r['ideal_speedup'] if r['ideal_speedup'] == '' else round(r['ideal_speedup'], 1)})"
                          f" {r['error']}", flush=True)
                # After every case: a run cut short (e.g. by gpu_suite's budget) keeps what it measured.
                save(args, dict(meta, loadavg_end=load_average(), seconds=round(time.perf_counter() - started, 1)),
                     models, layers)
    print("wrote", ", ".join(str(args.results_dir / args.stem) + s for s in (".csv", "_layers.csv", ".md", ".png")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
