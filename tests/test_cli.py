"""The command line: the default run end to end (small budget), report, methods, bad input."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torch_prune_ext import LayerEmptiedWarning
from torch_prune_ext.cli.main import main
from torch_prune_ext.methods import METHODS

FIXTURES = Path(__file__).parent / "fixtures"


def marked_rows(table: str) -> dict[str, str]:
    """The tensors of a printed per-layer table whose last column is a COLLAPSED/emptied/density 0 mark."""
    marks = ("COLLAPSED", "emptied", "density 0")
    return {line.split()[0]: mark for line in table.splitlines() for mark in marks if line.rstrip().endswith(mark)}


def test_default_prune_run_end_to_end(tmp_path, capsys):
    checkpoint = tmp_path / "pruned.pt"
    # The defaults (ResNet-20, CIFAR-10, SynFlow, 90%) on the repository's CIFAR fixture, 2 rounds.
    # 2 rounds are too few for 90%: SynFlow empties a shortcut conv, but the residual branch carries the signal
    with pytest.warns(LayerEmptiedWarning, match="layer2.0.shortcut.0.weight"):
        code = main(["prune", "--rounds", "2", "--per-class", "1", "--data-root", str(FIXTURES),
                     "--no-progress", "-o", str(checkpoint)])
    out = capsys.readouterr().out
    assert code == 0
    emptied = {"layer2.0.shortcut.0.weight": "emptied", "layer3.0.shortcut.0.weight": "emptied"}
    assert marked_rows(out) == emptied
    assert "input-output paths intact" in out and "emptied (density 0, not a layer collapse)" in out
    assert "synflow on resnet20 (270,896 prunable weights)" in out
    assert "layer3.2.conv2.weight" in out and "total" in out
    assert "global sparsity 89.9999%" in out  # round(0.9 * 270896) = 243806 pruned
    saved = torch.load(checkpoint, weights_only=True)
    masks = [v for k, v in saved["state_dict"].items() if k.endswith("_mask")]
    assert sum(int((m == 0).sum()) for m in masks) == round(0.9 * 270_896)
    assert saved["model"] == "resnet20" and saved["report"]["rounds"] == 2

    assert main(["report", str(checkpoint)]) == 0
    report_out = capsys.readouterr().out
    assert "fc.weight" in report_out and "global sparsity 89.9999%" in report_out
    assert marked_rows(report_out) == emptied


def test_prune_mnist_lenet_with_snip(tmp_path, capsys):
    code = main(["prune", "--model", "lenet_300_100", "--method", "snip", "--sparsity", "0.98",
                 "--per-class", "2", "--data-root", str(FIXTURES), "-o", "-", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "mnist pruning set of 20 examples" in out
    assert "global sparsity 98.0000%" in out


def test_report_of_a_raw_state_dict(tmp_path, capsys):
    net = torch.nn.Sequential(torch.nn.Linear(10, 10))
    torch.nn.utils.prune.random_unstructured(net[0], "weight", amount=0.3)
    torch.save(net.state_dict(), tmp_path / "raw.pt")
    assert main(["report", str(tmp_path / "raw.pt")]) == 0
    assert "30.0000%" in capsys.readouterr().out


def test_methods_table_lists_every_method(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name, cls in METHODS.items():
        assert name in out and cls.__name__ in out
    assert "data with labels" in out and "temperature=200.0" in out


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "torch_prune_ext", "methods"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "synflow" in result.stdout


@pytest.mark.parametrize("argv", [["prune", "--sparsity", "1.5"], ["prune", "--rounds", "0"],
                                  ["prune", "--method", "nope"]])
def test_bad_arguments_exit_with_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    code = main(["prune", "--method", "snip", "--data-root", str(tmp_path), "-o", "-", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "cifar10_jpeg_q75.npz" in err and "TORCH_PRUNE_EXT_DATA" in err


def test_report_of_missing_file(tmp_path, capsys):
    assert main(["report", str(tmp_path / "none.pt")]) == 2
    assert "No checkpoint" in capsys.readouterr().err


def test_prune_with_block_granularity_reports_empty_tiles(capsys):
    code = main(["prune", "--model", "lenet_300_100", "--method", "magnitude", "--sparsity", "0.95",
                 "--granularity", "block", "--block-size", "32", "32", "--data", "random", "-o", "-",
                 "--no-progress", "--on-collapse", "ignore"])
    out = capsys.readouterr().out
    assert code == 0
    assert "global sparsity 95.0000%" in out
    fraction = float(out.split("empty 32x32 tiles: ")[1].split("%")[0])
    assert fraction > 80.0


def test_an_interrupted_cli_run_resumes_to_the_same_checkpoint(tmp_path, monkeypatch, capsys):
    cli = importlib.import_module("torch_prune_ext.cli.main")  # the module (the package exports the function)

    argv = ["prune", "--model", "lenet_300_100", "--method", "synflow", "--rounds", "6", "--data", "random",
            "--per-class", "1", "--no-progress"]
    assert main([*argv, "-o", str(tmp_path / "reference.pt")]) == 0
    target = tmp_path / "run.pt"
    original = cli.PartialCheckpoint.__call__

    def save_then_die_at_round_3(self, state):
        original(self, state)
        if state.completed == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli.PartialCheckpoint, "__call__", save_then_die_at_round_3)
    capsys.readouterr()
    assert main([*argv, "-o", str(target)]) == 130  # Ctrl-C: one line, the shell's status for SIGINT
    assert capsys.readouterr().err == "torch-prune-ext: interrupted (rerun the same command with --resume to continue)\n"
    assert not target.exists() and (tmp_path / "run.pt.partial").is_file()
    monkeypatch.setattr(cli.PartialCheckpoint, "__call__", original)

    capsys.readouterr()
    # other arguments than the interrupted run's: refused, nothing written
    assert main([*argv, "--seed", "5", "--resume", "-o", str(target)]) == 2
    assert "other arguments" in capsys.readouterr().err and not target.exists()
    assert main([*argv, "--resume", "-o", str(target)]) == 0
    assert "resuming after round 3" in capsys.readouterr().out
    assert not (tmp_path / "run.pt.partial").exists()
    resumed = torch.load(target, weights_only=True)["state_dict"]
    reference = torch.load(tmp_path / "reference.pt", weights_only=True)["state_dict"]
    for key in reference:
        if key.endswith("_mask"):
            assert torch.equal(resumed[key], reference[key]), key
