"""The error contract (issue 14, item 6): every user error the package raises is a ``PruningError``
subclass that is also the builtin it used to be (``ValueError``, ``TypeError``, ...).

A scan of the source finds no ``raise`` of a bare builtin exception outside a short, documented
list of internal ones; behavioural tests check that errors from data/, models/, iunet/, kernels/
and core/ are caught both ways and keep their message.
"""

from __future__ import annotations

import ast
import builtins
import inspect
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from torch_prune_ext import errors
from torch_prune_ext.core.ranking import rank_and_mask
from torch_prune_ext.core.targets import resolve_targets
from torch_prune_ext.data import class_balanced_indices, find_data_file, load_mnist, pruning_batch, random_crop
from torch_prune_ext.iunet.objective import nt_xent
from torch_prune_ext.iunet.tabular import load_tabular
from torch_prune_ext.kernels import accelerate
from torch_prune_ext.models.mlp import MLP
from torch_prune_ext.models.resnet_cifar import CifarResNet
from torch_prune_ext.models.vgg import VGG

PACKAGE = Path(__file__).resolve().parents[1] / "torch_prune_ext"

#: ``(file, function, builtin)`` raises that never reach a user, and why.
INTERNAL = {
    ("evaluation/results.py", "_parse_lines", "ValueError"):
        "marks a CSV line with missing fields; caught two lines below, where the line is counted as malformed",
}

BUILTIN_EXCEPTIONS = {name for name, value in vars(builtins).items()
                      if isinstance(value, type) and issubclass(value, BaseException)}


def bare_builtin_raises(source: str) -> list[tuple[str, str, int]]:
    """``(function, exception, line)`` of every ``raise X`` / ``raise X(...)`` of a builtin exception ``X``."""
    found = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            if isinstance(child, ast.Raise) and child.exc is not None:
                raised = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
                if isinstance(raised, ast.Name) and raised.id in BUILTIN_EXCEPTIONS:
                    found.append((function, raised.id, child.lineno))
            visit(child, name)

    visit(ast.parse(source), "<module>")
    return found


def test_the_scan_finds_bare_builtins_and_passes_project_errors():
    source = (
        "def f(x):\n"
        "    if x:\n"
        "        raise ValueError('bad')\n"
        "    raise InvalidOptionError('bad')\n"
        "class C:\n"
        "    def g(self):\n"
        "        raise KeyError\n"
        "raise argparse.ArgumentTypeError('x')\n"
    )
    assert bare_builtin_raises(source) == [("f", "ValueError", 3), ("g", "KeyError", 7)]


@pytest.mark.parametrize("path", [
    p for p in sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py"))
])
def test_no_bare_builtin_raise(path):
    raises = bare_builtin_raises((PACKAGE / path).read_text(encoding="utf-8"))
    user_facing = [f"{path}:{line} {function}() raises {name}" for function, name, line in raises
                   if (path, function, name) not in INTERNAL]
    assert user_facing == [], "use (or add) a torch_prune_ext.errors.PruningError subclass"


def test_every_internal_exception_listed_still_exists():
    for (path, function, name), _reason in INTERNAL.items():
        found = bare_builtin_raises((PACKAGE / path).read_text(encoding="utf-8"))
        assert any(f == function and n == name for f, n, _ in found), (path, function, name)


@pytest.mark.parametrize("cls", [c for _, c in inspect.getmembers(errors, inspect.isclass)
                                 if issubclass(c, errors.PruningError) and c is not errors.PruningError])
def test_every_error_class_is_also_a_builtin_exception(cls):
    builtin_bases = [base for base in cls.__mro__[1:] if base.__module__ == "builtins" and base is not Exception
                     and base is not BaseException and base is not object]
    assert builtin_bases, f"{cls.__name__} should also derive from ValueError, TypeError, ..."
    assert cls.__doc__


def _raises(call, cls, builtin, phrase):
    with pytest.raises(cls) as caught:
        call()
    assert isinstance(caught.value, errors.PruningError) and isinstance(caught.value, builtin)
    assert phrase in str(caught.value)
    return caught.value


def test_data_errors_are_data_errors_and_value_errors(tmp_path):
    _raises(lambda: class_balanced_indices(torch.tensor([0.0, 1.0]), 1, 0), errors.DataError, ValueError,
            "integer class indices")
    _raises(lambda: class_balanced_indices(torch.tensor([0, 0, 1]), 2, 0), errors.DataError, ValueError,
            "class 1: 1")
    _raises(lambda: pruning_batch(torch.zeros(3, 2), torch.tensor([0, 1]), 1, 0), errors.DataError, ValueError,
            "x has 3 examples but y has 2")
    _raises(lambda: load_mnist("validation", root=tmp_path), errors.DataError, ValueError,
            "split must be 'train' or 'test'")
    _raises(lambda: class_balanced_indices(torch.tensor([0, 1]), 0, 0), errors.InvalidOptionError, ValueError,
            "per_class must be a positive int")


def test_a_missing_data_file_is_a_file_not_found_error(tmp_path):
    error = _raises(lambda: find_data_file("mnist.npz", tmp_path), errors.DataNotFoundError, FileNotFoundError,
                    "Data file 'mnist.npz' not found")
    assert str(tmp_path) in str(error)


def test_a_bad_image_batch_is_a_batch_shape_error():
    _raises(lambda: random_crop(torch.zeros(3, 32, 32)), errors.BatchShapeError, ValueError,
            "random_crop expects a batch (N, C, H, W)")
    _raises(lambda: random_crop(torch.zeros(1, 3, 8, 8), size=32, padding=0), errors.InvalidOptionError,
            ValueError, "does not fit the padded image")


@pytest.mark.parametrize("build, phrase", [
    (lambda: MLP(0, (8,), 10), "MLP sizes must be positive"),
    (lambda: MLP(4, (8,), 10, activation="swish"), "Unknown activation 'swish'"),
    (lambda: CifarResNet(depth=21), "depth must be 6n+2"),
    (lambda: VGG(["M"]), "at least one convolution"),
])
def test_bad_model_arguments_are_model_config_errors(build, phrase):
    _raises(build, errors.ModelConfigError, ValueError, phrase)


def test_iunet_errors_keep_their_builtin_base():
    _raises(lambda: nt_xent(torch.zeros(4, 3), torch.zeros(4, 2)), errors.BatchShapeError, ValueError,
            "two (N, D) embeddings of the same shape")
    _raises(lambda: nt_xent(torch.zeros(4, 3), torch.zeros(4, 3), temperature=0.0), errors.InvalidOptionError,
            ValueError, "temperature must be > 0")
    _raises(lambda: load_tabular("iris"), errors.DataError, ValueError, "Unknown tabular dataset 'iris'")


def test_unknown_name_error_is_a_key_error_that_reads_as_written():
    error = errors.UnknownNameError("No stage 'x'; the stages are ['a'].")
    assert isinstance(error, KeyError) and isinstance(error, errors.PruningError)
    assert str(error) == "No stage 'x'; the stages are ['a']."  # a plain KeyError would quote it
    with pytest.raises(KeyError, match="No stage 'x'"):
        raise error


def test_accelerating_the_root_module_is_an_unsupported_layer_and_leaves_it_pruned():
    layer = nn.Linear(8, 4)
    prune.random_unstructured(layer, "weight", 0.5)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    _raises(lambda: accelerate(layer), errors.UnsupportedLayerError, TypeError, "wrap the layer in nn.Sequential")
    assert prune.is_pruned(layer)
    assert all(torch.equal(before[k], v) for k, v in layer.state_dict().items())


def test_asking_to_prune_fewer_than_are_already_pruned_is_an_amount_error():
    net = nn.Linear(4, 1, bias=False)
    [target] = resolve_targets(net, [(net, "weight")])
    mask = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    _raises(lambda: rank_and_mask([target], [torch.ones(1, 4)], [mask], 1), errors.InvalidAmountError, ValueError,
            "cannot prune 1 of 4 entries when 2 are already pruned")
