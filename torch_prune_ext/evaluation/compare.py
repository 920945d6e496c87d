"""Compare pruning-at-initialisation methods on real data: same init, same pruning split, one recipe.

For every seed the model is built once under ``torch.manual_seed(seed)`` (that state is
*the* initialisation of the seed) and a class-balanced pruning batch is drawn once from
the training set with the same seed. Then, for every method and sparsity, a fresh copy of
the initialisation is pruned with :func:`~torch_prune_ext.global_prune` (``seed=seed``),
trained with the comparison's :class:`~torch_prune_ext.evaluation.recipe.TrainRecipe`
(data order seeded by ``seed``) and tested. A ``"dense"`` row per seed trains the unpruned
initialisation with the same recipe; it is also the teacher of methods that need one
(LNPT).

Every finished run is appended to a CSV at once (:class:`~torch_prune_ext.evaluation.results.ResultsFile`);
a second call with the same configuration skips what is there, so a killed run continues
where it stopped. Method names that are not (yet) in :data:`torch_prune_ext.METHODS` are
skipped with a note, and run automatically once they exist.

Examples:
    >>> from torch_prune_ext.evaluation import CompareConfig, TrainRecipe, run_comparison
    >>> from torch_prune_ext.evaluation import synthetic_classification_data
    >>> data = synthetic_classification_data((1, 4, 4), num_classes=2, train_size=32, test_size=16)
    >>> config = CompareConfig(model="mlp", dataset="synthetic", methods=("magnitude", "no_such_method"),
    ...                        sparsities=(0.5,), seeds=(0,), per_class=2, progress=False,
    ...                        recipe=TrainRecipe(epochs=1, batch_size=16),
    ...                        model_kwargs={"in_features": 16, "hidden": (8,)})
    >>> result = run_comparison(config, data)
    >>> [(row.method, row.sparsity, round(row.density, 3)) for row in result.rows], result.skipped_methods
    ([('dense', 0.0, 1.0), ('magnitude', 0.5, 0.5)], ('no_such_method',))
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import numbers
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from ..api import global_prune
from ..core.report import sparsity_report
from ..data import pruning_batch
from ..errors import InvalidAmountError, InvalidOptionError, PruningError
from ..methods import METHODS
from ..models import MODELS, get_model, input_shape_of
from .comparison_result import ComparisonResult, collapse_note, first_line
from .comparison_result import collapse_note as _collapse_note  # noqa: F401  (its name here before the split)
from .datasets import DATASET_NAMES, ClassificationData, load_classification_data
from .recipe import TrainRecipe, is_plain_int, evaluate_accuracy, train_model
from .results import DENSE, ResultsFile, RunKey, RunResult
from .run_queue import Run, planned_runs, run_pending
from .variants import METHOD_OPTIONS, VARIANTS, method_of, options_of, split_methods, variant_identity

logger = logging.getLogger("torch_prune_ext")

__all__ = [
    "HARNESS_VERSION",
    "METHOD_OPTIONS",
    "ON_COLLAPSE",
    "CompareConfig",
    "ComparisonResult",
    "run_comparison",
    "split_methods",
]

#: Bumped when the protocol changes in a way that changes the numbers (part of the recipe hash).
HARNESS_VERSION = 1

#: Accepted values of :attr:`CompareConfig.on_collapse`.
ON_COLLAPSE = ("ignore", "warn", "raise")

#: Batch size of the test-set evaluation.
EVAL_BATCH_SIZE = 1000


def _as_tuple(value: object, label: str) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidOptionError(f"{label} must be a tuple or list, got {value!r}.")
    return tuple(value)


@dataclass(frozen=True)
class CompareConfig:
    """What to compare and how (every field is validated on construction).

    Fields that change the numbers (model, its arguments, the data, the pruning-set size,
    ``on_collapse``, the recipe, a device other than the CPU) enter :meth:`recipe_hash`; the
    lists of methods, sparsities and seeds only choose which runs to do, and ``threads``,
    ``data_root`` and ``progress`` how.

    Attributes:
        model: a name of :data:`torch_prune_ext.models.MODELS` (e.g. ``"lenet_300_100"``,
            ``"resnet20"``); built with ``num_classes`` of the data.
        dataset: ``"mnist"``, ``"cifar10"`` or ``"synthetic"`` (loaded by
            :func:`~torch_prune_ext.evaluation.datasets.load_classification_data`), or the
            ``name`` of the :class:`~torch_prune_ext.evaluation.datasets.ClassificationData`
            passed to :func:`run_comparison`.
        methods: method labels: names of :data:`torch_prune_ext.METHODS` or of the variants of
            :data:`~torch_prune_ext.evaluation.variants.VARIANTS` (e.g. ``"px-running"``, a row of
            its own); default every name of :data:`torch_prune_ext.METHODS`. Labels that cannot
            run yet are skipped with a note (and run once they can).
        sparsities: target sparsities, each in (0, 1).
        seeds: seeds; one initialisation, one pruning split and one data order per seed.
        recipe: the :class:`~torch_prune_ext.evaluation.recipe.TrainRecipe` of every run.
        per_class: pruning-set examples per class (10: a 100-image set for 10 classes).
        train_subset: train on a fixed random subset of this many training examples
            (``None``: all); the pruning set is drawn from it.
        test_subset: test on a fixed random subset of this many test examples (``None``: all).
        include_dense: add a ``"dense"`` row per seed (the unpruned initialisation, trained).
        on_collapse: ``global_prune``'s policy for layer collapse: ``"ignore"`` (default; a
            collapse is still written in the row's note), ``"warn"`` or ``"raise"`` (the
            run is recorded with NaN accuracy and the error as its note).
        model_kwargs: extra arguments of the model builder (e.g. ``{"hidden": (64,)}`` for ``"mlp"``).
        threads: ``torch.set_num_threads`` during the comparison (``None``: unchanged).
        device: where models are pruned, trained and tested (``"cpu"``, ``"cuda"``); the
            data is moved there once (preloaded: full CIFAR-10 takes 0.6 GB in float32), so
            batches and their augmentation never leave the device. A device type other than
            ``"cpu"`` enters the recipe hash: rows of one device are never reused by another.
        data_root: folder of the ``.npz`` files (``None``: ``$TORCH_PRUNE_EXT_DATA`` or ``../shared/data``).
        progress: tqdm bars over runs and epochs.

    Raises:
        InvalidOptionError: for a bad value (the message lists every problem).
        InvalidAmountError: for a sparsity outside (0, 1).

    Examples:
        >>> config = CompareConfig(methods=("snip", "random"), sparsities=(0.9, 0.98), seeds=(0, 1))
        >>> config.model, config.recipe.epochs, len(config.recipe_hash_of({"name": "mnist"}))
        ('lenet_300_100', 5, 10)
        >>> CompareConfig(seeds=(0, 0))
        Traceback (most recent call last):
        ...
        torch_prune_ext.errors.InvalidOptionError: Bad CompareConfig: seeds must be distinct ints >= 0, got (0, 0).
    """

    model: str = field(default="lenet_300_100", metadata={"help": "model", "choices": tuple(sorted(MODELS))})
    dataset: str = field(default="mnist", metadata={
        "help": "dataset (synthetic: learnable random clusters, no files)", "choices": DATASET_NAMES})
    methods: tuple[str, ...] = field(default_factory=lambda: tuple(METHODS), metadata={
        "help": "method names or variant labels such as px-running (names that cannot run yet are skipped with a "
                "note)"})
    sparsities: tuple[float, ...] = field(default=(0.9, 0.98, 0.995), metadata={"help": "target sparsities in (0, 1)"})
    seeds: tuple[int, ...] = field(default=(0,), metadata={"help": "seeds (initialisation, pruning split, data order)"})
    recipe: TrainRecipe = field(default_factory=TrainRecipe, metadata={"help": "the training recipe of every run"})
    per_class: int = field(default=10, metadata={"help": "pruning examples per class"})
    train_subset: int | None = field(default=None, metadata={"help": "train on a fixed subset of this size"})
    test_subset: int | None = field(default=None, metadata={"help": "test on a fixed subset of this size"})
    include_dense: bool = field(default=True, metadata={"help": "also train the unpruned model"})
    on_collapse: str = field(default="ignore", metadata={
        "help": "layer collapse: noted in the CSV (ignore), warned about, or the run fails (raise)",
        "choices": ON_COLLAPSE})
    model_kwargs: Mapping[str, Any] = field(default_factory=dict, metadata={
        "help": "extra arguments of the model builder, e.g. '{\"hidden\": [64]}' for mlp"})
    threads: int | None = field(default=None, metadata={"help": "torch threads (default: torch's)"})
    device: str = field(default="cpu", metadata={"help": "where models are pruned, trained and tested"})
    data_root: str | None = field(default=None, metadata={"help": "folder with the .npz files"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bars"})

    def __post_init__(self) -> None:
        problems: list[str] = []
        methods = _as_tuple(self.methods, "methods")
        sparsities = _as_tuple(self.sparsities, "sparsities")
        seeds = _as_tuple(self.seeds, "seeds")
        object.__setattr__(self, "methods", methods)
        object.__setattr__(self, "sparsities", tuple(float(s) if isinstance(s, numbers.Real) else s
                                                     for s in sparsities))
        object.__setattr__(self, "seeds", seeds)
        if not isinstance(self.model_kwargs, Mapping):
            problems.append(f"model_kwargs must be a mapping, got {self.model_kwargs!r}")
        elif "num_classes" in self.model_kwargs:
            problems.append("model_kwargs must not set num_classes: it is the data's number of classes")
        else:
            object.__setattr__(self, "model_kwargs", MappingProxyType(dict(self.model_kwargs)))
        self._check_sparsities(sparsities)
        problems += self._problems(methods, seeds)
        if problems:
            raise InvalidOptionError("Bad CompareConfig: " + "; ".join(problems) + ".")

    @staticmethod
    def _check_sparsities(sparsities: tuple[Any, ...]) -> None:
        bad = [s for s in sparsities if isinstance(s, bool) or not isinstance(s, numbers.Real)
               or not 0.0 < float(s) < 1.0]
        if bad or not sparsities:
            raise InvalidAmountError(
                f"sparsities must be a non-empty list of numbers in (0, 1) (0 is the dense row, see include_dense), "
                f"got {sparsities!r}."
            )
        if len({float(s) for s in sparsities}) != len(sparsities):
            raise InvalidAmountError(f"sparsities must be distinct, got {sparsities!r}.")

    def _problems(self, methods: tuple[Any, ...], seeds: tuple[Any, ...]) -> list[str]:
        problems = []
        if not isinstance(self.model, str) or self.model.lower() not in MODELS:
            problems.append(f"model must be one of {', '.join(sorted(MODELS))}, got {self.model!r}")
        if not isinstance(self.dataset, str) or not self.dataset:
            problems.append(f"dataset must be a non-empty name, got {self.dataset!r}")
        if not all(isinstance(m, str) and m for m in methods):
            problems.append(f"methods must be non-empty names, got {methods!r}")
        elif len({m.lower() for m in methods}) != len(methods):
            problems.append(f"methods must be distinct, got {methods!r}")
        elif DENSE in {m.lower() for m in methods}:
            problems.append("'dense' is not a method: the dense baseline row is include_dense=True")
        if not seeds or not all(is_plain_int(s) and s >= 0 for s in seeds) or len(set(seeds)) != len(seeds):
            problems.append(f"seeds must be distinct ints >= 0, got {seeds!r}")
        if not isinstance(self.recipe, TrainRecipe):
            problems.append(f"recipe must be a TrainRecipe, got {type(self.recipe).__name__}")
        if not is_plain_int(self.per_class) or self.per_class < 1:
            problems.append(f"per_class must be a positive int, got {self.per_class!r}")
        for label in ("train_subset", "test_subset", "threads"):
            value = getattr(self, label)
            if value is not None and (not is_plain_int(value) or value < 1):
                problems.append(f"{label} must be a positive int or None, got {value!r}")
        if self.on_collapse not in ON_COLLAPSE:
            problems.append(f"on_collapse must be one of {', '.join(ON_COLLAPSE)}, got {self.on_collapse!r}")
        for label in ("include_dense", "progress"):
            if not isinstance(getattr(self, label), bool):
                problems.append(f"{label} must be True or False, got {getattr(self, label)!r}")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            problems.append(f"device must name a torch device such as 'cpu' or 'cuda', got {self.device!r}")
        return problems

    def recipe_hash_of(self, data_fingerprint: Mapping[str, Any], method: str | None = None) -> str:
        """The short hash of everything besides a run's key that affects its numbers.

        Args:
            data_fingerprint: the data's identity
                (:meth:`ClassificationData.fingerprint <torch_prune_ext.evaluation.datasets.ClassificationData.fingerprint>`).
            method: a method label; a variant's base method and options enter its hash
                (plain names and ``None`` give the comparison's hash).

        Returns:
            10 hex digits of a SHA-256 over the harness version, model and its arguments,
            data, pruning-set size, ``on_collapse``, the method options, the recipe, the
            device type unless ``"cpu"``, and the variant of ``method``.
        """
        identity = {
            "harness": HARNESS_VERSION,
            "model": self.model.lower(),
            "model_kwargs": dict(self.model_kwargs),
            "data": dict(data_fingerprint),
            "per_class": self.per_class,
            "on_collapse": self.on_collapse,
            "method_options": {name: dict(options) for name, options in METHOD_OPTIONS.items()},
            "recipe": self.recipe.identity(),
        }
        device = torch.device(self.device).type
        if device != "cpu":  # the CPU rows recorded before devices were told apart keep their hash
            identity["device"] = device
        variant = variant_identity(method) if method is not None else None
        if variant is not None:
            identity["variant"] = variant
        text = json.dumps(identity, sort_keys=True, default=repr)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def recipe_hash(self, data: ClassificationData, method: str | None = None) -> str:
        """:meth:`recipe_hash_of` the given data (and method label)."""
        return self.recipe_hash_of(data.fingerprint(), method)

    def recipe_hashes(self, data: ClassificationData) -> dict[str, str]:
        """The recipe hash of the dense row and of every method label and variant, by label."""
        labels = {DENSE, *(m.lower() for m in self.methods), *VARIANTS}
        return {label: self.recipe_hash(data, label) for label in labels}


class _SeedRuns:
    """The runs of one seed: its initialisation, pruning batch and (on demand) trained dense model."""

    def __init__(self, config: CompareConfig, data: ClassificationData, seed: int, hashes: Mapping[str, str]) -> None:
        self.config = config
        self.data = data
        self.seed = seed
        self.hashes = hashes
        self.device = torch.device(config.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.init_model = get_model(config.model, num_classes=data.num_classes, **config.model_kwargs)
        self.init_model.to(self.device)
        try:
            x, y = pruning_batch(data.train_x, data.train_y, config.per_class, seed, data.num_classes)
        except ValueError as error:
            raise InvalidOptionError(f"Cannot draw the pruning set: {error}") from error
        self.pruning_data = (data.normalized(x).to(self.device), y.to(self.device))
        self._dense: nn.Module | None = None

    def _row(self, method: str, sparsity: float, **values: Any) -> RunResult:
        for timing in ("prune_seconds", "train_seconds"):
            values[timing] = round(values[timing], 4)
        return RunResult(model=self.config.model, dataset=self.data.name, method=method, sparsity=sparsity,
                         seed=self.seed, recipe=self.hashes[method], **values)

    def _train_and_test(self, model: nn.Module) -> tuple[float, float, float]:
        """Train with the recipe; return (test accuracy, train seconds, last-epoch loss)."""
        start = time.perf_counter()
        result = train_model(model, self.data.train_x, self.data.train_y, self.config.recipe, seed=self.seed,
                             mean=self.data.mean, std=self.data.std, progress=self.config.progress)
        seconds = time.perf_counter() - start
        accuracy = evaluate_accuracy(model, self.data.test_x, self.data.test_y, batch_size=EVAL_BATCH_SIZE,
                                     mean=self.data.mean, std=self.data.std)
        return accuracy, seconds, result.final_loss

    def dense(self) -> tuple[RunResult, nn.Module]:
        """Train the unpruned initialisation: its row and the trained model."""
        model = copy.deepcopy(self.init_model)
        accuracy, seconds, loss = self._train_and_test(model)
        layers = sparsity_report(model)
        note = "" if math.isfinite(loss) else "training loss is not finite"
        row = self._row(DENSE, 0.0, test_accuracy=accuracy, prune_seconds=0.0, train_seconds=seconds,
                        density=layers.density, layer_densities={layer.name: layer.density for layer in layers.layers},
                        train_loss=loss, note=note)
        self._dense = model
        return row, model

    def teacher(self) -> nn.Module:
        """The seed's trained dense model (trained now if its row came from the CSV or is not wanted)."""
        if self._dense is not None:
            return self._dense
        logger.info("seed %d: training the dense model as the teacher (its row is not part of this call)", self.seed)
        return self.dense()[1]

    def _options(self, label: str) -> dict[str, Any]:
        options = options_of(label)
        if "teacher" in {f.name for f in dataclasses.fields(METHODS[method_of(label)].Config)}:
            options["teacher"] = self.teacher()
        return options

    def run(self, method: str, sparsity: float) -> RunResult:
        """The row of one run: the dense row for ``"dense"``, else :meth:`pruned`."""
        return self.dense()[0] if method == DENSE else self.pruned(method, sparsity)

    def pruned(self, method: str, sparsity: float) -> RunResult:
        """Prune a copy of the initialisation with the method (or variant) labelled ``method``, train and test it."""
        options = self._options(method)
        model = copy.deepcopy(self.init_model)
        start = time.perf_counter()
        try:
            report = global_prune(model, method_of(method), sparsity, data=self.pruning_data, seed=self.seed,
                                  progress=False, on_collapse=self.config.on_collapse, **options)
        except PruningError as error:
            logger.warning("%s at sparsity %g, seed %d failed: %s", method, sparsity, self.seed, error)
            return self._row(method, sparsity, test_accuracy=math.nan, prune_seconds=time.perf_counter() - start,
                             train_seconds=0.0, density=math.nan, layer_densities={}, train_loss=math.nan,
                             note=first_line(error))
        prune_seconds = time.perf_counter() - start
        layers = sparsity_report(model)
        accuracy, seconds, loss = self._train_and_test(model)
        notes = [collapse_note(report), "" if math.isfinite(loss) else "training loss is not finite"]
        return self._row(method, sparsity, test_accuracy=accuracy, prune_seconds=prune_seconds,
                         train_seconds=seconds, density=layers.density,
                         layer_densities={layer.name: layer.density for layer in layers.layers}, train_loss=loss,
                         note="; ".join(n for n in notes if n))


def run_comparison(
    config: CompareConfig,
    data: ClassificationData | None = None,
    *,
    csv_path: str | os.PathLike[str] | None = None,
    on_row: Callable[[RunResult], None] | None = None,
    time_limit_s: float | None = None,
) -> ComparisonResult:
    """Prune, train and test every (method, sparsity, seed) of ``config``; resumable through ``csv_path``.

    Args:
        config: the :class:`CompareConfig`.
        data: the data; ``None`` loads ``config.dataset`` with
            :func:`~torch_prune_ext.evaluation.datasets.load_classification_data`
            (``config.train_subset``/``test_subset``/``data_root``). Given data is used as it
            is; its ``name`` must equal ``config.dataset``.
        csv_path: the results CSV: rows already there (same key and recipe hash) are not run
            again, and every new row is appended and flushed as soon as it is finished.
            ``None`` keeps the rows in memory only.
        on_row: called with every new row after it is written (e.g. to report progress).
        time_limit_s: start no new run after this many seconds (a run in progress is
            finished); the rest stays pending for the next call. ``None``: no limit.

    Returns:
        A :class:`ComparisonResult` whose rows are those of ``config`` (from the CSV or new).

    Raises:
        InvalidOptionError: the data's name differs from ``config.dataset``, the pruning set
            cannot be drawn (too few examples of a class), or the CSV has other columns.

    A pruning error (:class:`~torch_prune_ext.PruningError`, e.g. a layer collapse with
    ``on_collapse="raise"``) does not stop the comparison: the run is recorded with NaN
    accuracy and the error in its ``note``.
    """
    start = time.perf_counter()
    if data is None:
        data = load_classification_data(config.dataset, root=config.data_root, train_subset=config.train_subset,
                                        test_subset=config.test_subset, input_shape=input_shape_of(config.model))
    elif not isinstance(data, ClassificationData):
        raise InvalidOptionError(f"data must be a ClassificationData or None, got {type(data).__name__}.")
    elif data.name != config.dataset:
        raise InvalidOptionError(
            f"The data is named {data.name!r} but config.dataset is {config.dataset!r}; make them equal (the name "
            "is recorded in every row)."
        )
    data = data.to(config.device)
    methods, skipped = split_methods(config.methods)
    for name in skipped:
        logger.warning("Skipping method %r: it cannot run yet (not in torch_prune_ext.METHODS, or a variant whose "
                       "options its method does not accept); it will run once it can.", name)
    hashes = config.recipe_hashes(data)
    recipe_hash = hashes[DENSE]
    store = ResultsFile(csv_path) if csv_path is not None else None
    existing = list(store.rows) if store is not None else []
    done: dict[RunKey, RunResult] = {row.key: row for row in existing
                                     if row.recipe == hashes.get(row.method, recipe_hash)}
    ignored = len(existing) - len(done)
    if ignored:
        logger.warning("%s: ignoring %d row(s) of other settings (recipe hash other than %s, or duplicates)",
                       csv_path, ignored, recipe_hash)

    def key(seed: int, method: str, sparsity: float) -> RunKey:
        return (config.model, data.name, method, sparsity, seed, hashes.get(method, recipe_hash))

    plan = planned_runs(config, methods)
    pending = [run for run in plan if key(*run) not in done]
    logger.info("comparison %s on %s: %d run(s), %d already in %s", recipe_hash, data.describe(), len(plan),
                len(plan) - len(pending), csv_path)
    deadline = None if time_limit_s is None else start + float(time_limit_s)

    def record(run: Run, row: RunResult) -> None:
        if store is not None:
            store.append(row)
        done[key(*run)] = row

    new_rows = run_pending(config, pending, lambda seed: _SeedRuns(config, data, seed, hashes).run, record, on_row,
                           deadline)
    rows = tuple(done[key(*run)] for run in plan if key(*run) in done)
    left = len(plan) - len(rows)
    if left:
        logger.warning("time limit reached: %d run(s) left; call again with the same CSV to continue", left)
    return ComparisonResult(config, data.describe(), recipe_hash, rows, skipped, ignored, new_rows, left,
                            time.perf_counter() - start)
