"""``compare``'s flags generated from CompareConfig and TrainRecipe: every field reaches the config,
the recorded command line is generated from the config and reproduces it, --model-kwargs reaches the model."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import pytest

from torch_prune_ext.cli.compare import COMPARE_FLAGS, NOT_RECORDED, _command_line, compare_config
from torch_prune_ext.cli.main import build_parser, main
from torch_prune_ext.evaluation import CompareConfig, TrainRecipe
from torch_prune_ext.evaluation.results import read_results

#: A value other than the default for every field, as flags, and the config they must give.
EVERY_FLAG = ["--model", "mlp", "--data", "cifar10", "--methods", "snip", "px-running", "--sparsities", "0.5", "0.8",
              "--seeds", "3", "4", "--epochs", "2", "--batch-size", "16", "--lr", "0.2", "--momentum", "0.5",
              "--weight-decay", "0.001", "--schedule", "onecycle", "--augment", "--channels-last", "--precision",
              "bf16", "--per-class", "3", "--train-subset", "40", "--test-subset", "20", "--no-dense",
              "--on-collapse", "raise", "--model-kwargs", '{"hidden": [16]}', "--threads", "1", "--device", "cpu:0",
              "--data-root", "some/folder", "--no-progress"]
EXPECTED = CompareConfig(
    model="mlp", dataset="cifar10", methods=("snip", "px-running"), sparsities=(0.5, 0.8), seeds=(3, 4),
    recipe=TrainRecipe(epochs=2, batch_size=16, lr=0.2, momentum=0.5, weight_decay=0.001, schedule="onecycle",
                       augment=True, channels_last=True, precision="bf16"),
    per_class=3, train_subset=40, test_subset=20, include_dense=False, on_collapse="raise",
    model_kwargs={"hidden": [16]}, threads=1, device="cpu:0", data_root="some/folder", progress=False)


def config_of(argv: list[str]) -> CompareConfig:
    return compare_config(build_parser().parse_args(["compare", *argv]))


def test_every_config_and_recipe_field_has_a_flag():
    names = {flag.name for flag in COMPARE_FLAGS}
    fields = {f.name for f in dataclasses.fields(CompareConfig)} - {"recipe"}
    assert names == fields | {f"recipe.{f.name}" for f in dataclasses.fields(TrainRecipe)}


def test_every_flag_reaches_the_config():
    config = config_of(EVERY_FLAG)
    assert config == EXPECTED
    for f in dataclasses.fields(CompareConfig):  # every value differs from the default: no flag was ignored
        if f.name != "recipe":
            assert getattr(config, f.name) != getattr(CompareConfig(), f.name), f.name
    assert all(getattr(config.recipe, f.name) != getattr(TrainRecipe(), f.name) for f in dataclasses.fields(TrainRecipe))


def test_the_recorded_command_line_reproduces_the_config():
    line = _command_line(EXPECTED, Path("out dir/run.csv"))
    argv = shlex.split(line)
    assert argv[:2] == ["torch-prune-ext", "compare"] and argv[-2:] == ["-o", "out dir/run.csv"]
    again = config_of(argv[2:-2])
    not_recorded = {name: getattr(CompareConfig(), name) for name in NOT_RECORDED}
    assert again == dataclasses.replace(EXPECTED, **not_recorded)


def test_defaults_without_flags():
    config = config_of([])
    assert (config.model, config.dataset, config.sparsities) == ("lenet_300_100", "mnist", (0.9, 0.98))
    assert config.recipe == TrainRecipe() and config.include_dense and config.progress
    assert config_of(["--model", "resnet18"]).dataset == "synthetic"  # no real dataset has 64x64 images
    assert config_of(["--model", "resnet20"]).dataset == "cifar10"


def test_model_kwargs_reach_the_model(tmp_path, capsys):
    output = tmp_path / "kw.csv"
    assert main(["compare", "--model", "mlp", "--model-kwargs", '{"hidden": [16]}', "--data", "synthetic",
                 "--methods", "magnitude", "--sparsities", "0.5", "--epochs", "0", "--train-subset", "40",
                 "--test-subset", "20", "--per-class", "2", "--no-dense", "--no-progress", "--no-plots",
                 "-o", str(output)]) == 0, capsys.readouterr().err
    (row,) = read_results(output)
    assert sorted(row.layer_densities) == ["1.weight", "3.weight"]  # hidden (16,) and the classifier: 2 Linear
    assert "--model-kwargs '{\"hidden\": [16]}'" in output.with_suffix(".md").read_text()


def test_bad_model_kwargs_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        config_of(["--model-kwargs", "[1, 2]"])
    assert exit_info.value.code == 2 and "not a JSON object" in capsys.readouterr().err
