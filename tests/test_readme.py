"""Every ```python block of README.md runs as written, on its own, in a fresh interpreter.

The blocks run from a copy of the package with no data folder beside it (as in a fresh clone or an
installed package), in an empty working directory. A block whose first lines say it is launched with
``torchrun --nproc_per_node=N`` runs under ``python -m torch.distributed.run --standalone`` with 2
CPU processes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from torch_prune_ext.data import DATA_ENV

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
TORCHRUN = re.compile(r"torchrun --nproc_per_node=\S+")
TIMEOUT_S = 300


def readme_blocks() -> list[tuple[int, str]]:
    """``(line number, code)`` of every python block of README.md."""
    text = (ROOT / "README.md").read_text()
    return [(text.count("\n", 0, match.start()) + 1, match.group(1)) for match in BLOCK.finditer(text)]


BLOCKS = readme_blocks()


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 9  # catches a broken pattern, which would silently test nothing


@pytest.fixture(scope="module")
def package_without_data(tmp_path_factory) -> Path:
    """A copy of the package in a folder with no ``shared/data`` anywhere near it."""
    clone = tmp_path_factory.mktemp("clone")
    shutil.copytree(ROOT / "torch_prune_ext", clone / "torch_prune_ext",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return clone


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_block_runs_on_its_own(line, code, package_without_data, tmp_path):
    script = tmp_path / f"readme_block_{line}.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if k not in (DATA_ENV, "PYTHONPATH")}
    env.update(PYTHONPATH=str(package_without_data), OMP_NUM_THREADS="1", TORCH_PRUNE_EXT_CACHE=str(tmp_path))
    head = "\n".join(code.splitlines()[:3])
    command = [sys.executable, str(script)]
    if TORCHRUN.search(head):
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, f"README.md line {line}:\n{code}\n--- stderr:\n{result.stderr[-3000:]}"
