"""The README's main command on a fresh machine: a clone with no data folder, and the built wheel.

The README's command is ``pip install -c constraints.txt -e . && torch-prune-ext prune``. The install
step downloads torch, which a test cannot do (CI runs exactly that command for the test suite, see
``.ci/run``); so these tests (1) copy the repository's files into an empty folder with no
``../shared`` and run ``python -m torch_prune_ext prune`` there (the same program as the console
script), and (2) build the wheel offline, install it without dependencies into a folder and run its
``torch-prune-ext`` console script, which also checks that the bundled data ships as package data.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from torch_prune_ext.data import DATA_ENV

ROOT = Path(__file__).resolve().parents[1]


def clean_env(pythonpath: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (DATA_ENV, "PYTHONPATH")}
    env.update(PYTHONPATH=str(pythonpath), OMP_NUM_THREADS="1")
    return env


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The repository's files (tracked and not ignored) in a folder with no data folder beside it."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (or no git): cannot list the repository's files")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    target = tmp_path_factory.mktemp("fresh") / "repo"
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    assert not (target.parent / "shared").exists()
    return target


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_main_command_runs_in_a_clone_without_data(clone):
    result = run([sys.executable, "-m", "torch_prune_ext", "prune", "--no-progress"], clone, clean_env(clone))
    assert result.returncode == 0, result.stderr
    assert "synflow on resnet20 (270,896 prunable weights), no pruning data (synflow is data-free)" in result.stdout
    assert "global sparsity 89.9999%" in result.stdout and "not found" not in result.stderr
    assert (clone / "pruned-resnet20-synflow-0.9.pt").is_file()


def test_a_method_that_needs_data_uses_the_bundled_set(clone):
    result = run([sys.executable, "-m", "torch_prune_ext", "prune", "--method", "snip", "-o", "-", "--no-progress"],
                 clone, clean_env(clone))
    assert result.returncode == 0, result.stderr
    assert "cifar10 pruning set of 100 examples" in result.stdout
    notices = [line for line in result.stderr.splitlines() if "bundled with the package" in line]
    assert len(notices) == 1 and "seed-0 selection" in notices[0]


def test_compare_without_data_is_one_line_rc_2(clone):
    result = run([sys.executable, "-m", "torch_prune_ext", "compare", "--no-progress"], clone, clean_env(clone))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "not bundled" in result.stderr


def test_the_wheel_ships_the_bundled_data_and_its_console_script_runs(clone, tmp_path):
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                 "-w", str(tmp_path / "dist"), str(clone)], tmp_path, clean_env(tmp_path))
    if built.returncode != 0 and "No module named" in built.stderr:
        pytest.skip(f"cannot build a wheel offline here: {built.stderr.strip().splitlines()[-1]}")
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("torch_prune_ext-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("bundled_cifar10_pruning.npz", "bundled_mnist_pruning.npz", "BUNDLED_PROVENANCE.txt"):
        assert f"torch_prune_ext/data/{name}" in names
    site = tmp_path / "site"
    installed = run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
                     str(wheel)], tmp_path, clean_env(tmp_path))
    assert installed.returncode == 0, installed.stderr
    result = run([str(site / "bin" / "torch-prune-ext"), "prune", "--model", "lenet_300_100", "--method", "snip",
                  "-o", "-", "--no-progress"], tmp_path, clean_env(site))
    assert result.returncode == 0, result.stderr
    assert "mnist pruning set of 100 examples" in result.stdout and "bundled with the package" in result.stderr
