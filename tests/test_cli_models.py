"""The command line with users' own models (--model module:function, --input-shape, --init-checkpoint),
data-free methods without data, and its one-line errors (rc 2)."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from torch import nn

import torch_prune_ext as tpe
from torch_prune_ext.cli.main import main
from torch_prune_ext.data import datasets
from torch_prune_ext.models.spec import build_model, check_input_shape

NETS = """
import torch
from torch import nn

def build(num_classes=10):
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, num_classes))

def not_a_model():
    return 42
"""


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """A folder holding the user's module ``user_nets_<test>``, as the current directory (sys.path restored)."""
    name = "user_nets_" + str(abs(hash(str(tmp_path))))
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(NETS))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    yield tmp_path, name
    sys.modules.pop(name, None)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("torch-prune-ext: error: ") and err.count("\n") == 1, err
    return err


def masks_of(path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in torch.load(path, weights_only=True)["state_dict"].items() if k.endswith("_mask")}


def test_own_model_from_module_function_prunes_saves_and_reports(user_folder, capsys):
    folder, name = user_folder
    out = folder / "own.pt"
    code = main(["prune", "--model", f"{name}:build", "--input-shape", "3", "8", "8", "--method", "snip",
                 "--data", "random", "--per-class", "2", "--sparsity", "0.5", "--no-progress", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    assert f"snip on {name}:build (1,548 prunable weights), random pruning set of 20 examples" in capsys.readouterr().out
    saved = torch.load(out, weights_only=True)
    assert saved["model"] == f"{name}:build" and saved["input_shape"] == [3, 8, 8]
    assert sum(int((m == 0).sum()) for m in masks_of(out).values()) == round(0.5 * 1548)
    assert main(["report", str(out)]) == 0
    assert "global sparsity 50.0000%" in capsys.readouterr().out


def test_init_checkpoint_starts_from_the_given_weights(user_folder, capsys, tmp_path):
    folder, name = user_folder
    sys.path.append(str(folder))  # restored by the fixture
    trained = build_model(f"{name}:build")
    with torch.no_grad():
        for p in trained.parameters():
            p.mul_(3.0).add_(0.5)  # anything but the fresh initialisation
    torch.save(trained.state_dict(), folder / "weights.pt")
    argv = ["prune", "--model", f"{name}:build", "--input-shape", "3", "8", "8", "--method", "magnitude",
            "--sparsity", "0.5", "--no-progress"]
    assert main([*argv, "--init-checkpoint", str(folder / "weights.pt"), "-o", str(folder / "a.pt")]) == 0
    state = torch.load(folder / "a.pt", weights_only=True)["state_dict"]
    assert torch.equal(state["0.weight_orig"], trained[0].weight) and torch.equal(state["4.bias"], trained[4].bias)
    # magnitude keeps the largest of the given weights
    reference = build_model(f"{name}:build")
    reference.load_state_dict(trained.state_dict())
    tpe.global_prune(reference, "magnitude", 0.5)
    assert torch.equal(state["0.weight_mask"], reference[0].weight_mask)

    # a checkpoint written by prune: pruning goes on from its masks
    assert main([*argv[:-3], "--sparsity", "0.8", "--no-progress", "--init-checkpoint", str(folder / "a.pt"),
                 "-o", str(folder / "b.pt")]) == 0
    first, second = masks_of(folder / "a.pt"), masks_of(folder / "b.pt")
    assert all(bool((second[k] <= first[k]).all()) for k in first)
    assert sum(int((m == 0).sum()) for m in second.values()) == round(0.8 * 1548)


def test_data_free_methods_read_no_data(tmp_path, capsys):
    """Without --data, SynFlow runs on its input shape only, and its masks equal those of a run with data."""
    common = ["prune", "--model", "lenet_300_100", "--rounds", "2", "--no-progress", "--on-collapse", "ignore"]
    assert main([*common, "--data-root", str(tmp_path / "nowhere"), "-o", str(tmp_path / "free.pt")]) == 0
    assert "no pruning data (synflow is data-free)" in capsys.readouterr().out
    assert main([*common, "--data", "random", "-o", str(tmp_path / "with.pt")]) == 0
    free, given = masks_of(tmp_path / "free.pt"), masks_of(tmp_path / "with.pt")
    assert free.keys() == given.keys() and all(torch.equal(free[k], given[k]) for k in free)


@pytest.mark.parametrize("model, extra, expected", [
    ("no_such_module_xyz:build", ["--input-shape", "3", "8", "8"], "cannot import module 'no_such_module_xyz'"),
    ("{name}:missing", ["--input-shape", "3", "8", "8"], "has no 'missing'"),
    ("{name}:not_a_model", ["--input-shape", "3", "8", "8"], "returned a int, not a torch.nn.Module"),
    ("{name}:build", ["--input-shape", "1", "28", "28"], "does not run on inputs of shape (1, 28, 28)"),
    ("{name}:build", [], "pass the shape of one example it takes, e.g. --input-shape"),
    ("resnet20", ["--data", "mnist"], "--data mnist has examples of shape (1, 28, 28) but --model resnet20 takes"),
    ("no_such_model", [], "Unknown model 'no_such_model'"),
])
def test_model_errors_are_one_line(user_folder, capsys, model, extra, expected):
    _, name = user_folder
    code = main(["prune", "--model", model.format(name=name), "--method", "snip", *extra, "--no-progress", "-o", "-"])
    assert code == 2
    assert expected in one_line_error(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("command", [["prune", "-o", "-"], ["compare", "--data", "synthetic"]])
def test_device_cuda_without_cuda_is_one_line(capsys, command, tmp_path):
    assert main([*command, "--device", "cuda", "--no-progress"]) == 2
    assert "CUDA is not available" in one_line_error(capsys)


def test_report_of_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    assert main(["report", str(tmp_path / "notes.pt")]) == 2
    assert "is not a checkpoint torch can read" in one_line_error(capsys)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    assert main(["report", str(tmp_path / "list.pt")]) == 2
    assert "holds no state dict" in one_line_error(capsys)


def test_compare_without_the_data_folder_says_what_it_needs(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    monkeypatch.setattr(datasets, "default_data_roots", lambda: [tmp_path / "no-data"])
    code = main(["compare", "--model", "lenet_300_100", "--methods", "magnitude", "--epochs", "1", "--no-progress",
                 "--no-plots", "-o", str(tmp_path / "c.csv")])
    assert code == 2
    err = one_line_error(capsys)
    assert "whole mnist dataset, which is not bundled" in err and "--data-root DIR" in err and "synthetic" in err


def test_check_input_shape_leaves_the_model_unchanged():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
    model[2].eval()  # mixed modes are restored as they were
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check_input_shape(model, (4,))
    assert model.training and model[1].training and not model[2].training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(tpe.BatchShapeError, match=r"inputs of shape \(5,\)"):
        check_input_shape(model, (5,))
    assert model.training and not model[2].training


def test_build_model_errors_are_pruning_errors():
    with pytest.raises(tpe.ModelSpecError, match="module:function"):
        build_model(":build")
    with pytest.raises(tpe.ModelSpecError, match="not a function"):
        build_model("torch_prune_ext:__version__")
    assert isinstance(build_model("torch.nn:Linear", in_features=2, out_features=1), nn.Linear)
