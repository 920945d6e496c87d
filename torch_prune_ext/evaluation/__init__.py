"""Real-data evaluation: prune at initialisation with every method, train with one recipe, compare.

:func:`run_comparison` runs every (method, sparsity, seed) of a :class:`CompareConfig`
on the same initialisation and pruning split per seed, trains each pruned network with
one :class:`TrainRecipe`, and records test accuracy, pruning time and per-layer densities
in a resumable CSV; :func:`write_report` writes the markdown table (mean ± std over seeds)
and the plots. ``torch-prune-ext compare`` and ``benchmarks/accuracy.py`` call it.

Examples:
    >>> from torch_prune_ext.evaluation import CompareConfig, TrainRecipe
    >>> config = CompareConfig(model="resnet20", dataset="cifar10", sparsities=(0.893, 0.982),
    ...                        recipe=TrainRecipe(epochs=8, augment=True), train_subset=5000)
    >>> config.methods[:3]
    ('random', 'magnitude', 'snip')
"""

from __future__ import annotations

from .compare import (
    HARNESS_VERSION,
    METHOD_OPTIONS,
    ON_COLLAPSE,
    CompareConfig,
    ComparisonResult,
    run_comparison,
    split_methods,
)
from .datasets import (
    DATASET_NAMES,
    ClassificationData,
    load_classification_data,
    subset_indices,
    synthetic_classification_data,
)
from .recipe import (
    PRECISIONS,
    SCHEDULES,
    TrainRecipe,
    TrainResult,
    evaluate_accuracy,
    make_scheduler,
    train_model,
)
from .results import CSV_COLUMNS, DENSE, ResultsFile, RunResult, merge_results, read_results
from .summary import (
    CellSummary,
    accuracy_markdown_table,
    format_markdown,
    format_text_summary,
    per_seed_markdown_table,
    percent_label,
    plot_accuracy_vs_density,
    plot_layer_densities,
    summarize,
    write_report,
)
from .variants import VARIANTS, MethodVariant, method_of, options_of

__all__ = [
    "CSV_COLUMNS",
    "DATASET_NAMES",
    "DENSE",
    "HARNESS_VERSION",
    "METHOD_OPTIONS",
    "ON_COLLAPSE",
    "PRECISIONS",
    "SCHEDULES",
    "CellSummary",
    "ClassificationData",
    "CompareConfig",
    "ComparisonResult",
    "ResultsFile",
    "RunResult",
    "TrainRecipe",
    "TrainResult",
    "VARIANTS",
    "MethodVariant",
    "accuracy_markdown_table",
    "evaluate_accuracy",
    "format_markdown",
    "format_text_summary",
    "load_classification_data",
    "make_scheduler",
    "merge_results",
    "method_of",
    "options_of",
    "per_seed_markdown_table",
    "percent_label",
    "plot_accuracy_vs_density",
    "plot_layer_densities",
    "read_results",
    "run_comparison",
    "split_methods",
    "subset_indices",
    "summarize",
    "synthetic_classification_data",
    "train_model",
    "write_report",
]
