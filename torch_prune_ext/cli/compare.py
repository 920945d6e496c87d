"""``torch-prune-ext compare``: parse the arguments, run :func:`~torch_prune_ext.evaluation.run_comparison`, print.

Example::

    torch-prune-ext compare --model lenet_300_100 --sparsities 0.9 0.98 --seeds 0 1 2 --epochs 5 -o lenet.csv

writes ``lenet.csv`` (one row per run, appended as runs finish: the same command continues
an interrupted comparison), ``lenet.md`` (mean ± std over seeds), ``lenet.png`` and
``lenet_layers.png`` (when matplotlib is installed), and prints the accuracy table.
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path
from typing import Any

import torch

from ..evaluation import (
    DATASET_NAMES,
    PRECISIONS,
    SCHEDULES,
    CompareConfig,
    TrainRecipe,
    format_text_summary,
    run_comparison,
    write_report,
)
from ..errors import MissingDataError
from ..methods import METHODS
from ..models import MODELS
from .common import check_device

__all__ = ["DEFAULT_COMPARE_DATASET", "add_compare_parser", "cmd_compare", "compare_config"]

#: The dataset each model is compared on by default (no real dataset fits resnet18's 64x64 inputs).
DEFAULT_COMPARE_DATASET = {"lenet_300_100": "mnist", "mlp": "mnist", "resnet18": "synthetic"}


def compare_config(args: argparse.Namespace) -> CompareConfig:
    """The :class:`~torch_prune_ext.evaluation.CompareConfig` of ``compare``'s parsed arguments."""
    recipe = TrainRecipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                         weight_decay=args.weight_decay, schedule=args.schedule, augment=args.augment,
                         channels_last=args.channels_last, precision=args.precision)
    return CompareConfig(
        model=args.model, dataset=args.data or DEFAULT_COMPARE_DATASET.get(args.model, "cifar10"),
        methods=tuple(args.methods) if args.methods else tuple(METHODS), sparsities=tuple(args.sparsities),
        seeds=tuple(args.seeds), recipe=recipe, per_class=args.per_class, train_subset=args.train_subset,
        test_subset=args.test_subset, include_dense=args.dense, on_collapse=args.on_collapse, threads=args.threads,
        device=args.device, data_root=args.data_root, progress=args.progress,
    )


def _command_line(config: CompareConfig, output: Path) -> str:
    """An explicit command that reproduces the comparison (every setting spelled out)."""
    recipe = config.recipe
    parts = ["torch-prune-ext", "compare", "--model", config.model, "--data", config.dataset,
             "--methods", *config.methods, "--sparsities", *map(str, config.sparsities),
             "--seeds", *map(str, config.seeds), "--epochs", str(recipe.epochs), "--batch-size", str(recipe.batch_size),
             "--lr", str(recipe.lr), "--momentum", str(recipe.momentum), "--weight-decay", str(recipe.weight_decay),
             "--schedule", recipe.schedule, "--augment" if recipe.augment else "--no-augment",
             "--per-class", str(config.per_class), "--on-collapse", config.on_collapse]
    if recipe.channels_last:
        parts.append("--channels-last")
    if recipe.precision != "fp32":
        parts += ["--precision", recipe.precision]
    if config.device != "cpu":
        parts += ["--device", config.device]
    for flag, value in (("--train-subset", config.train_subset), ("--test-subset", config.test_subset),
                        ("--threads", config.threads)):
        if value is not None:
            parts += [flag, str(value)]
    if not config.include_dense:
        parts.append("--no-dense")
    return " ".join(shlex.quote(p) for p in [*parts, "-o", str(output)])


def cmd_compare(args: argparse.Namespace) -> int:
    """Run the comparison, write the CSV, markdown and plots, print the accuracy table."""
    check_device(args.device)
    config = compare_config(args)
    output = Path(args.output or f"compare-{config.model}-{config.dataset}.csv")
    start = time.perf_counter()
    try:
        result = run_comparison(config, csv_path=output, time_limit_s=args.time_limit)
    except FileNotFoundError as error:
        raise MissingDataError(
            f"compare trains and tests on the whole {config.dataset} dataset, which is not bundled with the package: "
            f"{' '.join(str(error).split())} CLI: --data-root DIR, or --data synthetic (no files)."
        ) from error
    markdown = write_report(
        result, output.with_suffix(".md"), accuracy_plot=output.with_suffix(".png"),
        profile_plot=output.with_name(output.stem + "_layers.png"), plots=args.plots,
        header_lines=[f"command: `{_command_line(config, output)}`",
                      (f"torch {torch.__version__}, {config.threads or torch.get_num_threads()} thread(s), "
                       f"device {config.device}"),
                      f"wall time of this call: {time.perf_counter() - start:.0f} s"],
    )
    print(format_text_summary(result))
    print(f"\n{len(result.rows)} run(s) in {output} ({result.new_rows} new); report: {markdown}")
    if result.pending_runs:
        print(f"{result.pending_runs} run(s) left: run the same command again to continue.")
    return 0


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``compare`` subcommand to ``subparsers`` (from ``ArgumentParser.add_subparsers``).

    Values are checked by :class:`~torch_prune_ext.evaluation.CompareConfig` and
    :class:`~torch_prune_ext.evaluation.TrainRecipe`, whose errors the command prints.
    """
    c = subparsers.add_parser(
        "compare", help="prune with several methods, train with one recipe, tabulate test accuracy",
        description="Prune the same initialisation with every method at every sparsity and seed, train with one "
                    "recipe, and write a resumable CSV, a markdown table (mean ± std over seeds) and plots.")
    c.add_argument("--model", default="lenet_300_100", choices=sorted(MODELS), help="model (default lenet_300_100)")
    c.add_argument("--data", default=None, choices=DATASET_NAMES,
                   help="dataset (default: mnist for MLPs, cifar10 otherwise; synthetic: learnable random clusters, "
                        "no files)")
    c.add_argument("--methods", nargs="+", default=None,
                   help="method names or variant labels such as px-running (default: every method; names that "
                        "cannot run yet are skipped with a note)")
    c.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.98], help="default 0.9 0.98")
    c.add_argument("--seeds", type=int, nargs="+", default=[0], help="default 0")
    c.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    c.add_argument("--batch-size", type=int, default=128, help="training batch size (default 128)")
    c.add_argument("--lr", type=float, default=0.05, help="peak SGD learning rate (default 0.05)")
    c.add_argument("--momentum", type=float, default=0.9, help="default 0.9")
    c.add_argument("--weight-decay", type=float, default=5e-4, help="default 5e-4")
    c.add_argument("--schedule", default="cosine", choices=SCHEDULES, help="per-step LR schedule (default cosine)")
    c.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False,
                   help="random crop + flip of the training images (CIFAR)")
    c.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False,
                   help="train in the channels-last memory format (GPU tensor cores)")
    c.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="fp32, or bf16 autocast for the training forward pass (default fp32)")
    c.add_argument("--per-class", type=int, default=10, help="pruning examples per class (default 10)")
    c.add_argument("--train-subset", type=int, default=None, help="train on a fixed subset of this size")
    c.add_argument("--test-subset", type=int, default=None, help="test on a fixed subset of this size")
    c.add_argument("--dense", action=argparse.BooleanOptionalAction, default=True,
                   help="also train the unpruned model (default yes)")
    c.add_argument("--on-collapse", default="ignore", choices=("warn", "raise", "ignore"),
                   help="layer collapse: noted in the CSV (ignore, default), warned about, or the run fails (raise)")
    c.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    c.add_argument("--device", default="cpu")
    c.add_argument("--data-root", default=None, help="folder with the .npz files")
    c.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bars")
    c.add_argument("--plots", action=argparse.BooleanOptionalAction, default=None,
                   help="draw the plots (default: when matplotlib is installed; --plots requires it)")
    c.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="start no new run after this long; the same command continues later")
    c.add_argument("-o", "--output", default=None,
                   help="results CSV (default compare-MODEL-DATA.csv); the .md and .png files go next to it")
    c.set_defaults(func=cmd_compare)
    return c
