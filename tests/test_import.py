"""``import torch_prune_ext`` stays light: heavy torch subsystems load only when used."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def modules_after_import(code: str) -> set[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", f"import sys; {code}; print(' '.join(sys.modules))"],
                            capture_output=True, text=True, timeout=120, env=env, check=True)
    return set(result.stdout.split())


def test_import_does_not_load_dynamo_or_triton():
    loaded = modules_after_import("import torch_prune_ext")
    assert "torch_prune_ext" in loaded
    assert "torch._dynamo" not in loaded and "triton" not in loaded


def test_accelerated_layer_still_loads_the_compiler_guard_when_it_runs():
    code = ("import torch, torch_prune_ext as tpe; from torch.nn.utils import prune; "
            "net = torch.nn.Sequential(torch.nn.Linear(8, 8)); prune.random_unstructured(net[0], 'weight', 0.5); "
            "net = tpe.accelerate(net); before = 'torch._dynamo' in sys.modules; net(torch.randn(2, 8)); "
            "assert not before")
    assert "torch._dynamo" in modules_after_import(code)
