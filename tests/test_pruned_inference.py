"""benchmarks/pruned_inference.py --quick: the files it writes and the sanity of their numbers."""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import pytest
from builders import load_benchmark

from torch_prune_ext.kernels.dispatch import CONV_BACKENDS

def _script():
    return load_benchmark("pruned_inference")


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("pruned_inference")
    module = _script()
    argv = ["--quick", "--sparsities", "0.9", "0.95", "--batch-sizes", "1", "3", "--results-dir", str(results)]
    assert module.main(argv) == 0
    return module, results


def test_quick_run_writes_model_rows_with_sane_numbers(quick_run):
    module, results = quick_run
    fields, rows = read_csv(results / "pruned_inference_quick.csv")
    assert fields == module.MODEL_FIELDS
    cases = {(r["granularity"], float(r["sparsity"]), int(r["batch"])) for r in rows}
    assert cases == {(g, s, b) for g in ("block", "hybrid") for s in (0.9, 0.95) for b in (1, 3)}
    assert {r["model"] for r in rows} == {"resnet20"} and {r["mode"] for r in rows} == {"eager"}
    for r in rows:
        assert abs(float(r["density"]) - (1 - float(r["sparsity"]))) < 1e-3  # the pruned targets' density
        for key in ("dense_ms", "accelerated_ms", "speedup", "dense_img_per_s", "accelerated_img_per_s"):
            assert math.isfinite(float(r[key])) and float(r[key]) > 0, (key, r)
        assert math.isfinite(float(r["bound_ms"]))  # a difference of timings: noise may push it below 0
        assert float(r["speedup"]) == pytest.approx(float(r["dense_ms"]) / float(r["accelerated_ms"]))
        assert float(r["accelerated_img_per_s"]) == pytest.approx(1e3 * int(r["batch"]) / float(r["accelerated_ms"]))
        assert float(r["ideal_speedup"]) > 1 and float(r["fraction_of_ideal"]) > 0
        assert float(r["max_rel_err"]) < 1e-4  # accelerated logits = masked dense logits
        assert int(r["sparse_layers"]) + int(r["dense_layers"]) == 21  # ResNet-20: 19 3x3 convs and 2 shortcuts
        assert r["error"] == "" and r["live_output"] in ("True", "False") and len(r["loadavg"].split()) == 3


def test_quick_run_writes_layer_rows_naming_real_backends(quick_run):
    module, results = quick_run
    fields, rows = read_csv(results / "pruned_inference_quick_layers.csv")
    assert fields == module.LAYER_FIELDS
    known = set(CONV_BACKENDS) - {"auto"} | {"unchanged", "not pruned"}
    assert {r["backend"] for r in rows} <= known and any(r["backend"] == "tap" for r in rows)
    first = [r for r in rows if r["layer"] == "conv1"]
    assert first and all(r["backend"] == "not pruned" and float(r["density"]) == 1.0 for r in first)
    for r in rows:
        assert float(r["dense_ms"]) > 0 and float(r["accelerated_ms"]) > 0 and float(r["speedup"]) > 0
        assert 0.0 <= float(r["density"]) <= 1.0 and float(r["macs_m"]) > 0
        if r["backend"] == "tap":
            assert float(r["empty_ms"]) > 0 and 0.0 <= float(r["tile_density"]) <= 1.0
            assert float(r["tile_density"]) >= float(r["density"]) - 1e-6  # a kept entry keeps its whole tile
            assert "crossover table" in r["reason"]


def test_quick_run_writes_markdown_and_plot(quick_run):
    _, results = quick_run
    text = (results / "pruned_inference_quick.md").read_text()
    for words in ("command: `python benchmarks/pruned_inference.py --quick", "load average", "machine:", "torch",
                  "--quick run", "## Where the time goes", "Bound if kept tiles were free", "### resnet20 block 0.95 batch 3"):
        assert words in text, words
    plot = results / "pruned_inference_quick.png"
    if importlib.util.find_spec("matplotlib") is None:  # the optional extra "plot": the run goes on without it
        assert not plot.exists()
    else:
        assert plot.stat().st_size > 1000


@pytest.mark.parametrize("args, words", [(["--sparsities", "95"], "--sparsities"),
                                         (["--models", "vgg16_bn", "--image-size", "8"], "vgg16_bn needs"),
                                         (["--hybrid-fill", "0"], "--hybrid-fill")])
def test_bad_options_are_usage_errors(tmp_path, capsys, args, words):
    with pytest.raises(SystemExit) as exit_info:
        _script().main(["--quick", "--results-dir", str(tmp_path), *args])
    assert exit_info.value.code == 2 and words in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
