"""The ``torch-prune-ext`` command line: ``prune``, ``report``, ``methods``, ``compare``.

Examples::

    torch-prune-ext prune                      # ResNet-20, CIFAR-10, SynFlow, 90% sparsity
    torch-prune-ext prune --model lenet_300_100 --method snip --sparsity 0.98
    torch-prune-ext prune --model my_pkg.nets:build --input-shape 3 32 32 --init-checkpoint weights.pt
    torch-prune-ext report pruned-resnet20-synflow-0.9.pt
    torch-prune-ext methods
    torch-prune-ext compare --model lenet_300_100 --sparsities 0.9 0.98 --seeds 0 1 2   # accuracy table
    torchrun --nproc_per_node=2 -m torch_prune_ext prune --distributed   # scoring shared by 2 processes
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..api import global_prune
from ..core.blocks import tile_report
from ..core.checkpoint import load_pruned_state_dict, read_checkpoint, state_dict_in
from ..core.report import LayerSparsity, SparsityReport, format_table, sparsity_report
from ..core.scoring import RoundState
from ..core.targets import prunable_parameters
from ..errors import BatchShapeError, ModelSpecError, PruningError
from ..methods import METHODS
from ..models import MODELS, default_dataset_of, input_shape_of
from ..models.spec import build_model, check_input_shape, is_model_path
from ..training.batches import minibatches
from .common import CHECKPOINT_FORMAT, check_device, checkpoint_is_ours
from .compare import add_compare_parser
from .fields import add_flags, given_values
from .method_flags import add_method_flags, common_flags, method_flags, method_options, methods_listing
from .teacher import load_teacher

#: Exit status after Ctrl-C (128 + SIGINT, the shell's convention).
INTERRUPTED = 130

DATASET_CLASSES = {"cifar10": 10, "mnist": 10}
#: The path check of a pruning run, in words (``PruneReport.paths_connected``).
PATH_WORDS = {True: "intact", False: "CUT (layer collapse)", None: "not checked"}


def _input_shape(args: argparse.Namespace) -> tuple[int, ...]:
    """One example's shape: ``--input-shape``, else the built-in model's own."""
    if args.input_shape:
        return tuple(args.input_shape)
    if is_model_path(args.model):
        raise ModelSpecError(f"--model {args.model} is your own model: pass the shape of one example it takes, "
                             "e.g. --input-shape 3 32 32.")
    return input_shape_of(args.model)


def _pruning_data(args: argparse.Namespace, num_classes: int, input_shape: tuple[int, ...]) -> tuple[Any, Any]:
    """The pruning batch ``(x, y)`` of the run, shaped for the model."""
    if args.data == "random":
        generator = torch.Generator().manual_seed(args.seed)
        n = args.per_class * num_classes
        x = torch.randn((n, *input_shape), generator=generator)
        y = torch.randint(0, num_classes, (n,), generator=generator)
        return x, y
    from ..data import pruning_set

    x, y = pruning_set(args.data, per_class=args.per_class, seed=args.seed, root=args.data_root)
    if x[0].numel() != math.prod(input_shape):
        raise BatchShapeError(
            f"--data {args.data} has examples of shape {tuple(x.shape[1:])} but --model {args.model} takes "
            f"{input_shape}; use --data random, or a dataset of that shape (cifar10: 3 32 32, mnist: 1 28 28).")
    return x.reshape(len(x), *input_shape), y


def model_kwargs(args: argparse.Namespace, num_classes: int) -> dict[str, int]:
    """The builder's arguments: ``num_classes`` for built-in models and with ``--num-classes``."""
    return {"num_classes": num_classes} if (args.num_classes or not is_model_path(args.model)) else {}


def _build_model(args: argparse.Namespace, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """The run's model on ``--device``: built, loaded from ``--init-checkpoint`` and checked against the input shape."""
    if is_model_path(args.model) and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # the user's own modules are importable, as under `python -m`
    model = build_model(args.model, **model_kwargs(args, num_classes))
    if args.init_checkpoint:
        load_pruned_state_dict(model, state_dict_in(read_checkpoint(args.init_checkpoint), args.init_checkpoint))
    model = model.to(args.device)
    check_input_shape(model, input_shape, args.device)
    return model


def _pruning_batches(args: argparse.Namespace, num_classes: int, input_shape: tuple[int, ...],
                     world_size: int) -> tuple[list[Any] | None, str]:
    """The pruning batches (``None`` for a data-free method when ``--data`` is not given) and their description."""
    method = METHODS[args.method]
    if args.data is None and not (method.needs_data or method.needs_labels):
        return None, f"no pruning data ({args.method} is data-free)"
    args.data = args.data or default_dataset_of(args.model, no_fit="random")
    x, y = _pruning_data(args, num_classes, input_shape)
    batch_size = min(args.batch_size, math.ceil(len(x) / world_size))  # every rank gets a batch
    batches = list(minibatches(x, y, batch_size))
    return batches, f"{args.data} pruning set of {len(x)} examples"


def _save_atomically(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


PARTIAL_FORMAT = "torch_prune_ext.partial/1"
#: The arguments a resumed run must share with the interrupted one.
RUN_KEYS = ("model", "method", "sparsity", "rounds", "schedule", "data", "num_classes", "per_class", "batch_size",
            "seed", "granularity", "block_size")


class PartialCheckpoint:
    """Saves the state of every round atomically next to the output, for ``--resume``."""

    def __init__(self, path: Path, key: dict[str, Any]) -> None:
        self.path = path
        self.key = key

    def __call__(self, state: RoundState) -> None:
        _save_atomically({"format": PARTIAL_FORMAT, "key": self.key, "state": state.to_dict()}, self.path)

    def load(self) -> RoundState | None:
        """The saved state of an interrupted run with the same arguments, or ``None`` if there is none."""
        if not self.path.is_file():
            return None
        saved = torch.load(self.path, map_location="cpu", weights_only=True)
        if saved.get("format") != PARTIAL_FORMAT or saved.get("key") != self.key:
            raise PruningError(
                f"{self.path} belongs to a run with other arguments ({saved.get('key')}); rerun with those "
                "arguments, or delete the file to start afresh."
            )
        return RoundState.from_dict(saved["state"])


@contextlib.contextmanager
def _process_group(args: argparse.Namespace):  # noqa: ANN202
    """With ``--distributed``: join the ``torchrun`` job (gloo on CPU, NCCL on CUDA) for the run; else nothing.

    Yields ``(rank, world_size)``.
    """
    if not args.distributed:
        yield 0, 1
        return
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise PruningError("--distributed runs under torchrun, which sets RANK and WORLD_SIZE: "
                           "torchrun --nproc_per_node=N -m torch_prune_ext prune --distributed ...")
    import torch.distributed as dist

    cuda = torch.device(args.device).type == "cuda"
    if cuda:
        args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(args.device)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        dist.destroy_process_group()


def cmd_prune(args: argparse.Namespace) -> int:
    check_device(args.device)
    with _process_group(args) as (rank, world_size):
        return _prune(args, rank, world_size)


def _prune(args: argparse.Namespace, rank: int, world_size: int) -> int:
    say = print if rank == 0 else (lambda *_: None)
    options = {**given_values(args.common_flags, args), **method_options(args.method_flags, args, args.method)}
    num_classes = args.num_classes or DATASET_CLASSES.get(args.data or "cifar10", 10)
    input_shape = _input_shape(args)
    torch.manual_seed(args.seed)
    model = _build_model(args, num_classes, input_shape)
    if "teacher" in options:
        options["teacher"] = load_teacher(options["teacher"], args.model, model_kwargs(args, num_classes), args.device)
    batches, data_text = _pruning_batches(args, num_classes, input_shape, world_size)
    n_weights = sum(getattr(module, name).numel() for module, name in prunable_parameters(model))
    if world_size > 1:
        say(f"distributed: {world_size} processes, " + (f"{len(batches)} pruning batches of up to "
                                                        f"{len(batches[0][0])}" if batches else "no pruning data"))
    say(f"torch-prune-ext {__version__}: {args.method} on {args.model} ({n_weights:,} prunable weights), "
        f"{data_text}, sparsity {args.sparsity}")
    output = None if args.output == "-" else Path(
        args.output or f"pruned-{args.model.replace(':', '.')}-{args.method}-{args.sparsity:g}.pt")
    key = {name: getattr(args, name) for name in RUN_KEYS}
    key["block_size"] = list(args.block_size)
    key["input_shape"], key["init_checkpoint"] = list(input_shape), args.init_checkpoint
    if options:
        key["options"] = {flag.dest: str(getattr(args, flag.dest)) for flag in args.method_flags + args.common_flags
                          if hasattr(args, flag.dest)}
    partial = PartialCheckpoint(output.with_name(output.name + ".partial"), key) if output else None
    resume = partial.load() if (partial is not None and args.resume) else None
    if args.resume and resume is None:
        say("no interrupted run to resume: starting afresh")
    elif resume is not None:
        say(f"resuming after round {resume.completed}")
    distributed = {"distributed": True, "shard_data": batches is not None} if args.distributed else {}
    start = time.perf_counter()
    report = global_prune(
        model, args.method, args.sparsity, batches, rounds=args.rounds, schedule=args.schedule,
        seed=args.seed, input_shape=input_shape, on_collapse=args.on_collapse, progress=args.progress,
        granularity=args.granularity, block_size=tuple(args.block_size), on_round=partial if rank == 0 else None,
        resume=resume, **distributed, **options,
    )
    elapsed = time.perf_counter() - start
    if rank != 0:
        return 0
    print(report.table())
    seconds = report.round_seconds
    print(f"\n{report.rounds} round(s), {report.schedule} schedule: {elapsed:.2f} s in all, "
          f"{statistics.median(seconds):.3f} s median per round (max {max(seconds):.3f} s)")
    print(f"global sparsity {report.sparsity:.4%} (requested {args.sparsity:.4%}); "
          f"input-output paths {PATH_WORDS[report.paths_connected]}")
    if report.emptied:
        print(f"emptied (density 0, not a layer collapse): {', '.join(report.emptied)}")
    tiles = tile_report(model, tile_sizes=(32,)).overall(32)
    print(f"empty 32x32 tiles: {tiles.empty_fraction:.1%} (ideal tile-skipping speedup {tiles.predicted_speedup:.2f}x)")
    if output is not None:
        _save_atomically({
            "format": CHECKPOINT_FORMAT, "model": args.model, "input_shape": list(input_shape),
            "model_kwargs": model_kwargs(args, num_classes),
            "method": args.method, "sparsity": args.sparsity, "seed": args.seed,
            "state_dict": model.state_dict(), "report": report.to_dict(),
        }, output)
        partial.path.unlink(missing_ok=True)
        print(f"saved {output}")
    return 0


def _saved_marks(saved_report: dict[str, Any]) -> dict[str, str] | None:
    """The table marks of a checkpoint's saved :meth:`PruneReport.to_dict` (``None``: saved before they existed)."""
    if "emptied" not in saved_report:
        return None
    return {**{name: "COLLAPSED" for name in saved_report.get("collapsed", [])},
            **{name: "emptied" for name in saved_report["emptied"]}}


def report_of_checkpoint(path: Path) -> tuple[SparsityReport, dict[str, str] | None]:
    """The sparsity of a saved checkpoint (ours, model rebuilt, or a raw pruned state dict) and the
    ``COLLAPSED``/``emptied`` marks its pruning run recorded (``None``: unknown, density-0 tensors are marked)."""
    checkpoint = read_checkpoint(path)
    marks = None
    if checkpoint_is_ours(checkpoint):
        marks = _saved_marks(checkpoint.get("report", {}))
        with contextlib.suppress(ModelSpecError):  # a user's model that is not importable here: read the masks
            model = build_model(checkpoint["model"], **checkpoint.get("model_kwargs", {}))
            load_pruned_state_dict(model, checkpoint["state_dict"])
            return sparsity_report(model), marks
    state = state_dict_in(checkpoint, path)
    layers = [
        LayerSparsity(key[:-5], tuple(mask.shape), mask.numel(), int((mask != 0).sum()))
        for key, mask in state.items() if key.endswith("_mask") and isinstance(mask, torch.Tensor)
    ]
    return SparsityReport(layers), marks


def cmd_report(args: argparse.Namespace) -> int:
    report, marks = report_of_checkpoint(Path(args.checkpoint))
    print(report.table(marks))
    print(f"\nglobal sparsity {report.sparsity:.4%}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    print(methods_listing(args.method_flags))
    return 0


def _sparsity(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"sparsity must be in [0, 1], got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """The flags ``parser`` has so far (``--model``, ...)."""
    return {option for action in parser._actions for option in action.option_strings}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torch-prune-ext", description="Pruning at initialisation for PyTorch.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prune", help="prune a model at initialisation and save the checkpoint")
    p.add_argument("--model", default="resnet20", metavar="NAME|module:function",
                   help=f"a built-in model ({', '.join(sorted(MODELS))}; default resnet20) or your own: an importable "
                        "module:function returning an nn.Module (called with no arguments, or num_classes=N "
                        "with --num-classes)")
    p.add_argument("--input-shape", type=_positive_int, nargs="+", default=None, metavar="D",
                   help="shape of one example, no batch dimension (required for module:function models)")
    p.add_argument("--init-checkpoint", default=None, metavar="PATH",
                   help="start from these weights: a state dict (torch.save(model.state_dict(), PATH)) or a "
                        "checkpoint written by prune")
    p.add_argument("--method", default="synflow", choices=list(METHODS), help="method (default: synflow)")
    p.add_argument("--sparsity", type=_sparsity, default=0.9, help="final fraction of zero weights (default 0.9)")
    p.add_argument("--rounds", type=_positive_int, default=None, help="scoring rounds (default: the method's)")
    p.add_argument("--schedule", default="exponential", choices=("exponential", "linear"))
    p.add_argument("--data", default=None, choices=("cifar10", "mnist", "random"),
                   help="pruning data (default: none for data-free methods, else cifar10 for CIFAR models, mnist "
                        "for MLPs; without a data folder the 10-per-class sets bundled with the package)")
    p.add_argument("--data-root", default=None, help="folder with the .npz files (default: $TORCH_PRUNE_EXT_DATA "
                                                     "or ../shared/data, else the bundled pruning sets)")
    p.add_argument("--num-classes", type=_positive_int, default=None)
    p.add_argument("--per-class", type=_positive_int, default=10, help="pruning examples per class (default 10)")
    p.add_argument("--batch-size", type=_positive_int, default=100, help="pruning batch size (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--on-collapse", default="warn", choices=("warn", "raise", "ignore"))
    p.add_argument("--granularity", default="element", choices=("element", "block", "hybrid"),
                   help="rank single weights, or whole tiles of each weight (block/hybrid) for faster kernels")
    p.add_argument("--block-size", type=_positive_int, nargs=2, default=(32, 32), metavar=("B_N", "B_K"),
                   help="tile of the block granularities (default 32 32)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bar")
    p.add_argument("--distributed", action="store_true",
                   help="share the scoring among the processes of a torchrun job (rank 0 prints and saves)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from OUTPUT.partial (saved after every round)")
    p.add_argument("-o", "--output", default=None,
                   help="checkpoint path (default pruned-MODEL-METHOD-SPARSITY.pt; '-' to save nothing)")
    flags = method_flags(_option_strings(p))
    common = common_flags(_option_strings(p))
    add_flags(p, common)
    add_method_flags(p, flags)
    p.set_defaults(func=cmd_prune, method_flags=flags, common_flags=common)

    r = sub.add_parser("report", help="per-layer sparsity of a saved checkpoint")
    r.add_argument("checkpoint")
    r.set_defaults(func=cmd_report)

    m = sub.add_parser("methods", help="the table of methods, their needs and defaults")
    m.set_defaults(func=cmd_methods, method_flags=flags)
    add_compare_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (PruningError, FileNotFoundError, ValueError) as error:
        print(f"torch-prune-ext: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = " (rerun the same command with --resume to continue)" if args.command == "prune" else ""
        print(f"torch-prune-ext: interrupted{hint}", file=sys.stderr)
        return INTERRUPTED


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
