"""benchmarks/gpu_suite.py: the dry run writes every step's files, resumes, and stops cleanly on its budget."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from torch_prune_ext.kernels import dispatch

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.py"
STEPS = ["kernel_correctness", "conv_correctness", "kernel_speed", "crossover", "ntksap_speed", "round_times",
         "pruned_inference", "accuracy_budget", "accuracy_paper"]
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="the dry run's kernel steps need triton (its interpreter on CPU)")


def run_suite(results: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(SUITE), "--dry-run", "--results-dir", str(results), "--workers", "2",
                           *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("gpu_suite")
    first = run_suite(results)
    assert first.returncode == 0, first.stdout + first.stderr
    return results, first


@needs_triton
def test_dry_run_writes_every_step(dry_run):
    results, first = dry_run
    state = json.loads((results / "state.json").read_text())
    assert [s for s in STEPS if s in state["steps"]] == STEPS
    for step in ("kernel_correctness", "kernel_speed", "crossover", "ntksap_speed", "round_times",
                 "accuracy_budget", "accuracy_paper"):
        assert state["steps"][step]["status"] == "complete", (step, state["steps"][step], first.stdout)
    # The conv kernels come from another branch: recorded, not faked.
    assert state["steps"]["conv_correctness"]["status"] in ("unavailable", "complete")
    assert state["steps"]["pruned_inference"]["status"] == "complete", state["steps"]["pruned_inference"]
    inference = read_csv(results / "pruned_inference_quick.csv")  # written into the suite's results folder
    assert inference and all(float(r["speedup"]) > 0 and float(r["max_rel_err"]) < 1e-4 for r in inference)

    checks = read_csv(results / "kernel_correctness.csv")
    assert {r["quantity"] for r in checks} == {"forward", "grad_input", "grad_weight"}
    assert {r["layer"] for r in checks} >= {"triton_kernels", "AcceleratedLinear(triton)"}
    assert checks and all(r["pass"] == "True" for r in checks)
    assert all(float(r["max_rel_err"]) <= float(r["tolerance"]) for r in checks)

    speed = read_csv(results / "kernel_speed.csv")
    ours = [r for r in speed if r["method"] in ("ours_fwd", "ours_dx", "ours_dw")]
    assert len(ours) == 3 * 4 and all(float(r["ms"]) > 0 and float(r["speedup"]) > 0 for r in ours)
    assert all(float(r["max_rel_err"]) < 1e-4 for r in ours if r["method"] == "ours_fwd")
    assert {r["method"] for r in speed} >= {"dense", "dense_dx", "dense_dw", "torch_bsr", "semi24"}

    table = json.loads((results / "crossover_cuda.json").read_text())
    assert set(table["cuda"]["triton_max_block_density"]) == {"16", "32"}
    assert table["measured"]["dry_run"] is True and "torch" in table["measured"] and "command" in table["measured"]
    assert json.loads((results / "crossover_cuda.table.json").read_text()) == table

    ntk = read_csv(results / "ntksap_speed.csv")
    assert len(ntk) == 3 and all(float(r["seconds"]) > 0 for r in ntk)
    assert all(float(r["speedup_vs_slow"]) > 0 and float(r["max_rel_diff_vs_slow"]) < 0.05
               for r in ntk if not r["implementation"].startswith("slow"))
    rounds = read_csv(results / "round_times.csv")
    assert {(r["model"], r["method"]) for r in rounds} == {("resnet20", "px"), ("resnet20", "synflow")}
    assert all(float(r["seconds_median"]) > 0 for r in rounds)

    accuracy = read_csv(results / "accuracy_smoke.csv")
    assert {r["seed"] for r in accuracy} == {"0", "1"}
    assert len(accuracy) == 2 * (1 + 3 * 2)  # per seed: dense + 3 methods x 2 sparsities, merged from 2 parts
    paper = read_csv(results / "accuracy_smoke_paper.csv")
    assert {(r["method"], r["sparsity"]) for r in paper} == {("dense", "0.0"), ("snip", "0.9")}
    summary = (results / "SUMMARY.md").read_text()
    assert "## Still owed" in summary and "## Headline numbers" in summary and "kernel checks pass" in summary
    for step in STEPS:
        assert (results / "SUMMARY.md").read_text().count(f"| {step} |") == 1
    for name in ("kernel_correctness", "kernel_speed", "ntksap_speed", "round_times", "accuracy_smoke"):
        assert "command" in (results / f"{name}.md").read_text()


@needs_triton
def test_second_call_skips_complete_steps(dry_run):
    results, _ = dry_run
    before = {name: (results / name).read_text() for name in ("kernel_speed.csv", "accuracy_smoke.csv")}
    second = run_suite(results)
    assert second.returncode == 0, second.stdout + second.stderr
    for step in ("kernel_correctness", "kernel_speed", "ntksap_speed", "accuracy_budget"):
        assert f"{step}: complete in an earlier call, skipped" in second.stdout
    assert {name: (results / name).read_text() for name in before} == before
    state = json.loads((results / "state.json").read_text())
    assert len(state["calls"]) == 2
    assert "kernel_speed" in state["calls"][1]["skipped_complete"]


@needs_triton
def test_zero_budget_cuts_cleanly_and_summary_says_what_is_owed(tmp_path):
    cut = run_suite(tmp_path, "--budget-s", "0")
    assert cut.returncode == 0, cut.stdout + cut.stderr
    state = json.loads((tmp_path / "state.json").read_text())
    for step in ("kernel_correctness", "kernel_speed", "crossover", "ntksap_speed", "round_times", "accuracy_budget"):
        assert state["steps"][step]["status"] == "partial", (step, state["steps"][step])
    assert not state["calls"][0]["failed"]
    owed = (tmp_path / "SUMMARY.md").read_text().split("## Still owed")[1].split("##")[0]
    for step in ("kernel_correctness", "kernel_speed", "crossover", "accuracy_budget"):
        assert f"- {step}: partial" in owed
    assert not (tmp_path / "crossover_cuda.json").exists()  # never written from missing speed rows


def test_crossover_cuda_json_replaces_the_guesses(tmp_path, monkeypatch):
    measured = {"triton_max_block_density": {"16": 0.02, "32": 0.07, "64": 0.2}, "semi_structured": False}
    path = tmp_path / "crossover_cuda.json"
    path.write_text(json.dumps({"cuda": measured, "measured": {"device": "test"}}))
    monkeypatch.setattr(dispatch, "CUDA_TABLE_PATH", path)
    dispatch._default_table.cache_clear()
    try:
        assert dispatch.load_table()["cuda"] == measured
        path.write_text("not json")
        dispatch._default_table.cache_clear()
        assert dispatch.load_table()["cuda"] == dispatch._FALLBACK_CUDA  # unreadable file: the guesses, logged
        path.unlink()
        dispatch._default_table.cache_clear()
        assert dispatch.load_table()["cuda"] == dispatch._FALLBACK_CUDA
    finally:
        dispatch._default_table.cache_clear()


def _suite_module():
    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("args, words", [(["--budget-s", "-1"], ["--budget-s"]),
                                         (["--steps", "kernel_sped"], ["kernel_sped", "kernel_speed"])])
def test_bad_options_are_usage_errors(tmp_path, capsys, args, words):
    with pytest.raises(SystemExit) as exit_info:
        _suite_module().main(["--dry-run", "--results-dir", str(tmp_path), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert all(word in err for word in words)
    assert not any(tmp_path.iterdir())  # nothing written
