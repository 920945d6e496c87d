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

from ..evaluation import CompareConfig, format_text_summary, run_comparison, write_report
from ..errors import MissingDataError
from ..models import default_dataset_of
from .common import check_device
from .fields import add_flags, dataclass_flags, dataclass_kwargs, flag_arguments, given_values

__all__ = ["COMPARE_FLAGS", "add_compare_parser", "cmd_compare", "compare_config"]

#: The flags of :class:`~torch_prune_ext.evaluation.CompareConfig` and its
#: :class:`~torch_prune_ext.evaluation.TrainRecipe` (``--epochs``, ...), one per field.
COMPARE_FLAGS = dataclass_flags(CompareConfig, options={"dataset": "--data", "include_dense": "--dense"})

#: Command-line defaults other than the config's (``--data``: the model's, see :func:`compare_config`).
CLI_DEFAULTS = {"sparsities": (0.9, 0.98)}

#: Fields that choose how the comparison runs, not what it computes: left out of the recorded command.
NOT_RECORDED = ("progress", "data_root")


def compare_config(args: argparse.Namespace) -> CompareConfig:
    """The :class:`~torch_prune_ext.evaluation.CompareConfig` of ``compare``'s parsed arguments.

    Without ``--data`` the model's default dataset (:func:`~torch_prune_ext.models.default_dataset_of`;
    ``synthetic`` where no real dataset fits).
    """
    kwargs = dataclass_kwargs(CompareConfig, given_values(COMPARE_FLAGS, args))
    kwargs.setdefault("dataset", default_dataset_of(kwargs.get("model", CompareConfig.model), no_fit="synthetic"))
    return CompareConfig(**kwargs)


def _command_line(config: CompareConfig, output: Path) -> str:
    """An explicit command that reproduces the comparison (every setting spelled out), generated from the config."""
    recorded = [flag for flag in COMPARE_FLAGS if flag.name not in NOT_RECORDED]
    return shlex.join(["torch-prune-ext", "compare", *flag_arguments(recorded, config), "-o", str(output)])


def cmd_compare(args: argparse.Namespace) -> int:
    """Run the comparison, write the CSV, markdown and plots, print the accuracy table."""
    config = compare_config(args)
    check_device(config.device)
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
    add_flags(c, COMPARE_FLAGS, defaults=CLI_DEFAULTS,
              shown_defaults={"dataset": "the model's: mnist for MLPs, synthetic for resnet18, cifar10 otherwise"})
    c.add_argument("--plots", action=argparse.BooleanOptionalAction, default=None,
                   help="draw the plots (default: when matplotlib is installed; --plots requires it)")
    c.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="start no new run after this long; the same command continues later")
    c.add_argument("-o", "--output", default=None,
                   help="results CSV (default compare-MODEL-DATA.csv); the .md and .png files go next to it")
    c.set_defaults(func=cmd_compare)
    return c
