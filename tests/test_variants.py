"""Method variants in the comparison harness, device-separated rows, merged CSV parts, and accuracy.py."""

from __future__ import annotations

import dataclasses
import importlib
import sys
from pathlib import Path
from types import MappingProxyType

import pytest

from torch_prune_ext.evaluation import (
    VARIANTS,
    CompareConfig,
    MethodVariant,
    ResultsFile,
    RunResult,
    TrainRecipe,
    merge_results,
    read_results,
    run_comparison,
    split_methods,
    synthetic_classification_data,
    write_report,
)
from torch_prune_ext.evaluation import compare, summary, variants
from torch_prune_ext.evaluation.results import DENSE

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
RECORDED = BENCHMARKS / "results"


def accuracy_script():
    """The module of benchmarks/accuracy.py (it imports its sibling _machine.py)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module("accuracy")
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def data():
    return synthetic_classification_data((1, 4, 4), num_classes=3, train_size=96, test_size=48, seed=0)


def tiny_config(**changes: object) -> CompareConfig:
    base = CompareConfig(model="mlp", dataset="synthetic", methods=("magnitude",), sparsities=(0.5,), seeds=(0,),
                         per_class=2, model_kwargs={"in_features": 16, "hidden": (8,)},
                         recipe=TrainRecipe(epochs=1, batch_size=32, lr=0.1), progress=False)
    return dataclasses.replace(base, **changes)


def use_variants(monkeypatch, **added: MethodVariant) -> None:
    """The variants table with ``added`` in every module that reads it."""
    table = MappingProxyType({**VARIANTS, **{label.replace("_", "-"): v for label, v in added.items()}})
    for module in (variants, compare, summary):
        monkeypatch.setattr(module, "VARIANTS", table)


@pytest.fixture
def extra_variants(monkeypatch):
    """Two test variants: magnitude in 4x4 blocks (an option that exists) and SNIP with one that does not."""
    use_variants(monkeypatch, magnitude_block=MethodVariant("magnitude", {"granularity": "block", "block_size": (4, 4)}),
                 snip_bogus=MethodVariant("snip", {"no_such_option": 1}))


# --------------------------------------------------------------------------- variants
def test_variant_labels_resolve_to_their_method_and_options():
    assert variants.method_of("PX-Running") == "px" and variants.options_of("px-running") == {"norm": "running"}
    assert variants.options_of("ntksap-1") == {"repeats": 1} and variants.options_of("px") == {}
    assert variants.options_of("lnpt") == {"classifier": "kd"} and variants.variant_identity("px") is None


def test_a_variant_runs_only_when_its_method_accepts_the_options(extra_variants):
    available, skipped = split_methods(("magnitude-block", "snip-bogus", "px-reference", "no_such_method"))
    assert available == ("magnitude-block", "px-reference")
    assert skipped == ("snip-bogus", "no_such_method")


def test_variant_rows_are_separate_carry_their_own_hash_and_get_their_options(extra_variants, data, monkeypatch):
    calls = []
    real = compare.global_prune

    def spy(model, method, sparsity, **options):
        calls.append((method, {k: v for k, v in options.items() if k in ("granularity", "block_size")}))
        return real(model, method, sparsity, **options)

    monkeypatch.setattr(compare, "global_prune", spy)
    config = tiny_config(methods=("magnitude", "magnitude-block", "snip-bogus"))
    result = run_comparison(config, data)
    assert [(r.method, r.sparsity) for r in result.rows] == [(DENSE, 0.0), ("magnitude", 0.5),
                                                             ("magnitude-block", 0.5)]
    assert result.skipped_methods == ("snip-bogus",)
    assert calls == [("magnitude", {}), ("magnitude", {"granularity": "block", "block_size": (4, 4)})]
    hashes = {r.method: r.recipe for r in result.rows}
    assert hashes[DENSE] == hashes["magnitude"] == result.recipe_hash != hashes["magnitude-block"]
    assert hashes["magnitude-block"] == config.recipe_hash(data, "magnitude-block")


def test_a_variant_row_is_resumed_and_redone_when_its_options_change(extra_variants, data, tmp_path, monkeypatch):
    config = tiny_config(methods=("magnitude-block",))
    csv = tmp_path / "runs.csv"
    assert run_comparison(config, data, csv_path=csv).new_rows == 2
    assert run_comparison(config, data, csv_path=csv).new_rows == 0
    use_variants(monkeypatch, magnitude_block=MethodVariant("magnitude", {"granularity": "block", "block_size": (8, 8)}))
    again = run_comparison(config, data, csv_path=csv)
    assert again.new_rows == 1 and again.ignored_rows == 1  # the dense row is still valid


def test_the_markdown_names_the_variants_and_shows_every_seed(extra_variants, data, tmp_path):
    result = run_comparison(tiny_config(methods=("magnitude-block",), seeds=(0, 1)), data)
    text = write_report(result, tmp_path / "r.md", plots=False).read_text()
    assert "`magnitude-block`: magnitude with granularity='block', block_size=(4, 4)" in text
    by_seed = {r.seed: r for r in result.rows if r.method == "magnitude-block"}
    line = next(line for line in text.splitlines() if line.startswith("| magnitude-block | 50% |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:4] == [f"{100 * by_seed[s].test_accuracy:.2f}" for s in (0, 1)]
    assert "| method | sparsity | seed 0 | seed 1 | mean ± std |" in text


# --------------------------------------------------------------------------- recipe hashes
def fingerprint(config: CompareConfig, train: int, test: int, shape: list[int]) -> dict:
    return {"name": config.dataset, "train": train, "test": test, "input_shape": shape, "num_classes": 10}


def test_recorded_rows_keep_their_hash_and_another_device_does_not_reuse_them():
    accuracy = accuracy_script()
    cifar, mnist = accuracy.PRESETS["cifar-resnet20"], accuracy.PRESETS["mnist-lenet"]
    assert cifar.seeds == (0, 1, 2) and cifar.sparsities == (0.893, 0.982)
    assert {"px", "px-running", "px-release-2024", "ntksap", "lnpt"} <= set(cifar.methods)
    cifar_print = fingerprint(cifar, 5000, 2000, [3, 32, 32])
    for config, data_print, csv in ((cifar, cifar_print, "accuracy_cifar-resnet20.csv"),
                                    (mnist, fingerprint(mnist, 60000, 10000, [1, 28, 28]), "accuracy_mnist-lenet.csv")):
        rows = read_results(RECORDED / csv)
        assert rows and all(row.recipe == config.recipe_hash_of(data_print, row.method) for row in rows), csv
        plain = {row.recipe for row in rows if row.method not in VARIANTS}
        assert plain == {config.recipe_hash_of(data_print)}, csv
    cuda = dataclasses.replace(cifar, device="cuda")
    assert cuda.recipe_hash_of(cifar_print) != cifar.recipe_hash_of(cifar_print)
    assert cuda.recipe_hash_of(cifar_print, "px-running") not in {cuda.recipe_hash_of(cifar_print),
                                                                  cifar.recipe_hash_of(cifar_print, "px-running")}


# --------------------------------------------------------------------------- merging parts
def row(method: str, seed: int, accuracy: float, recipe: str, sparsity: float = 0.5, note: str = "") -> RunResult:
    return RunResult("mlp", "synthetic", method, 0.0 if method == DENSE else sparsity, seed, accuracy, 0.1, 1.0,
                     1.0 if method == DENSE else 1 - sparsity, {"1.weight": 0.5}, 0.3, recipe, note)


def test_merge_keeps_every_run_once_and_the_destination_rows(tmp_path):
    for name, rows in (("a.csv", [row("magnitude", 0, 0.5, "h"), row("magnitude", 1, 0.6, "h")]),
                       ("b.csv", [row("magnitude", 1, 0.9, "h"), row("snip", 1, 0.7, "h")]),
                       ("all.csv", [row(DENSE, 0, 0.8, "h")])):
        for r in rows:
            ResultsFile(tmp_path / name).append(r)
    merged = merge_results([tmp_path / "a.csv", tmp_path / "b.csv"], tmp_path / "all.csv")
    assert [(r.method, r.seed, r.test_accuracy) for r in merged] == [
        (DENSE, 0, 0.8), ("magnitude", 0, 0.5), ("magnitude", 1, 0.6), ("snip", 1, 0.7)]
    assert read_results(tmp_path / "all.csv") == merged
    with pytest.raises(Exception, match="No CSV to merge"):
        merge_results([tmp_path / "missing.csv"], tmp_path / "all.csv")


@pytest.fixture
def tiny_preset(monkeypatch):
    """benchmarks/accuracy.py with one tiny synthetic preset."""
    accuracy = accuracy_script()
    # loaded by name: synthetic data shaped like the model's default input (784 features)
    config = tiny_config(methods=("magnitude", "random"), seeds=(0, 1), threads=1,
                         model_kwargs={"in_features": 784, "hidden": (8,)})
    monkeypatch.setattr(accuracy, "PRESETS", {"tiny": config})
    return accuracy, config


def test_accuracy_script_runs_resumes_and_merges_parts(tiny_preset, tmp_path, capsys):
    accuracy, config = tiny_preset
    common = ["--preset", "tiny", "--device", "cpu", "--no-progress", "--no-plots"]
    accuracy.main([*common, "--seeds", "0", "--results-dir", str(tmp_path / "p1")])
    accuracy.main([*common, "--seeds", "1", "--methods", "magnitude", "--results-dir", str(tmp_path / "p2")])
    accuracy.main([*common, "--seeds", "1", "--methods", "magnitude", "--results-dir", str(tmp_path / "p2")])
    assert "wall time" in capsys.readouterr().out
    part1 = read_results(tmp_path / "p1" / "accuracy_tiny.csv")
    part2 = read_results(tmp_path / "p2" / "accuracy_tiny.csv")
    assert len(part1) == 3 and len(part2) == 2  # the rerun of part 2 added nothing
    merged_dir = tmp_path / "merged"
    accuracy.main([*common, "--results-dir", str(merged_dir), "--merge-csv",
                   str(tmp_path / "p1" / "accuracy_tiny.csv"), str(tmp_path / "p2" / "accuracy_tiny.csv")])
    out = capsys.readouterr().out
    assert "merged 5 row(s) of 2 part(s)" in out and "1 run(s) left" in out  # random, seed 1: not run by any part
    assert read_results(merged_dir / "accuracy_tiny.csv") == part1 + part2
    text = (merged_dir / "accuracy_tiny.md").read_text()
    assert "merged from:" in text and "**Partial results:** 1 run(s)" in text
    line = next(line for line in text.splitlines() if line.startswith("| magnitude | 50% |"))
    accuracies = {r.seed: r.test_accuracy for r in part1 + part2 if r.method == "magnitude"}
    assert [c.strip() for c in line.strip("|").split("|")][2:4] == [f"{100 * accuracies[s]:.2f}" for s in (0, 1)]


def test_the_summary_tells_an_unknown_method_from_a_variant_that_cannot_run_yet(extra_variants, data):
    result = run_comparison(tiny_config(methods=("magnitude", "snip-bogus", "no_such_method"), seeds=(0,),
                                        sparsities=(0.5,)), data)
    text = summary.format_text_summary(result)
    assert "skipped (not in torch_prune_ext.METHODS yet): no_such_method" in text
    assert "skipped (variants whose options their method does not accept yet): snip-bogus" in text
    notes = " ".join(summary._notes(result))
    assert "METHODS` yet (they run automatically once they exist): no_such_method." in notes
    assert "does not accept yet (they run automatically once it does): snip-bogus." in notes
