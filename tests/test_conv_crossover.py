"""benchmarks/conv_crossover.py: the crossover rule, the --quick files, a table accelerate reads, --write merging."""

from __future__ import annotations

import csv
import json

import pytest
from builders import load_benchmark
import torch

from torch_prune_ext.kernels.dispatch import choose_conv_backend, load_table

def _script():
    return load_benchmark("conv_crossover")


def test_crossover_rule_stops_at_the_first_density_where_dense_wins():
    rule = _script().crossover
    rows = [dict(block=32, density=d, speedup=s) for d, s in [(0.05, 3.0), (0.1, 1.5), (0.2, 0.9), (0.3, 1.2)]]
    assert rule(rows, 32) == 0.1  # 0.3 beat dense too, but 0.2 did not: noise above the crossover is ignored
    rows += [dict(block=32, density=0.1, speedup=0.8)]  # a second shape loses at 0.1
    assert rule(rows, 32) == 0.05
    assert rule(rows, 32, "geomean") == 0.1  # sqrt(1.5 * 0.8) > 1
    assert rule([dict(block=32, density=0.05, speedup=0.5)], 32) == 0.0
    assert rule(rows, 16) == 0.0  # no rows for that tile size


def test_quick_run_writes_rows_and_a_table_accelerate_reads(tmp_path):
    module = _script()
    assert module.main(["--quick", "--blocks", "16", "32", "--results-dir", str(tmp_path)]) == 0
    with open(tmp_path / "conv_crossover_quick.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == module.FIELDS
        rows = list(reader)
    assert len(rows) == 2 * 2 * 2  # shapes x blocks x densities, batch 2
    for r in rows:
        assert float(r["dense_ms"]) > 0 and float(r["tap_ms"]) > 0
        assert float(r["speedup"]) == pytest.approx(float(r["dense_ms"]) / float(r["tap_ms"]))
        assert float(r["max_rel_err"]) < 1e-5  # the timed tap layer computes the masked conv
        assert 0.0 <= float(r["tile_density"]) <= 1.0  # random tiles: a tiny layer may keep none at 0.1
    table = json.loads((tmp_path / "conv_crossover_quick.json").read_text())
    thresholds = table["cpu"]["conv_max_block_density"]
    assert set(thresholds) == {"16", "32"} and all(t in (0.0, 0.1, 0.5) for t in thresholds.values())
    assert table["measured_conv"]["quick"] is True and "loadavg_start" in table["measured_conv"]
    text = (tmp_path / "conv_crossover_quick.md").read_text()
    assert "command: `python benchmarks/conv_crossover.py --quick" in text and "## Per shape" in text
    # accelerate's dispatcher reads the file as it is.
    loaded = load_table(tmp_path / "conv_crossover_quick.json")
    mask = torch.zeros(32, 32, 3, 3)
    mask[:16, :16, 1, 1] = 1  # 1 tile of 36 at 16x16, 1 of 9 at 32x32
    backend = choose_conv_backend(mask, "cpu", table=loaded)[0]
    below = thresholds["16"] >= 1 / 36 or thresholds["32"] >= 1 / 9
    assert backend == ("tap" if below else "dense")


def test_write_replaces_only_the_conv_threshold(tmp_path, monkeypatch):
    module = _script()
    shipped = tmp_path / "crossover_cpu.json"
    linear = {"csr_max_density": 0.1, "bsr_max_block_density": {"32": 0.25}, "conv_max_block_density": {"32": 0.15}}
    shipped.write_text(json.dumps({"cpu": linear, "measured": {"command": "masked_matmul"}}))
    monkeypatch.setattr(module, "DEFAULT_TABLE_PATH", shipped)  # a copy stands in for the shipped table
    argv = ["--shapes", "16:16:6", "--densities", "0.5", "--batch-sizes", "1", "--repeats", "1", "--write",
            "--results-dir", str(tmp_path / "out")]
    assert module.main(argv) == 0
    table = json.loads(shipped.read_text())
    assert table["measured"] == {"command": "masked_matmul"} and table["measured_conv"]["quick"] is False
    assert {k: v for k, v in table["cpu"].items() if k != "conv_max_block_density"} == {
        "csr_max_density": 0.1, "bsr_max_block_density": {"32": 0.25}}
    measured = json.loads((tmp_path / "out" / "conv_crossover.json").read_text())["cpu"]["conv_max_block_density"]
    assert table["cpu"]["conv_max_block_density"] == measured and set(measured) == {"32"}


@pytest.mark.parametrize("args, words", [(["--quick", "--write"], "cannot --write"), (["--shapes", "64x64"], "in:out:size"),
                                         (["--densities", "0"], "--densities"), (["--blocks", "8"], "--blocks")])
def test_bad_options_are_usage_errors(tmp_path, capsys, args, words):
    with pytest.raises(SystemExit) as exit_info:
        _script().main([*args, "--results-dir", str(tmp_path)])
    assert exit_info.value.code == 2 and words in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
