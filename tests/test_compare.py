"""The evaluation harness (``torch_prune_ext.evaluation``, ``torch-prune-ext compare``) on tiny synthetic data."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import pytest
import torch

import torch_prune_ext as tpe
from torch_prune_ext.cli.main import main
from torch_prune_ext.errors import InvalidAmountError, InvalidOptionError
from torch_prune_ext.evaluation import (
    CSV_COLUMNS,
    ClassificationData,
    CompareConfig,
    ComparisonResult,
    ResultsFile,
    RunResult,
    TrainRecipe,
    accuracy_markdown_table,
    format_markdown,
    read_results,
    run_comparison,
    summarize,
    synthetic_classification_data,
    train_model,
    write_report,
)
from torch_prune_ext.models import mlp

MODEL_KWARGS = {"in_features": 16, "hidden": (16, 8)}
N_WEIGHTS = 16 * 16 + 16 * 8 + 8 * 3  # the prunable weights of the tiny MLP


@pytest.fixture(scope="module")
def data() -> ClassificationData:
    return synthetic_classification_data((1, 4, 4), num_classes=3, train_size=96, test_size=48, seed=0)


def tiny_config(**changes: object) -> CompareConfig:
    base = CompareConfig(model="mlp", dataset="synthetic", methods=("magnitude", "lnpt", "snip"),
                         sparsities=(0.5, 0.9), seeds=(0, 1), per_class=2, model_kwargs=MODEL_KWARGS,
                         recipe=TrainRecipe(epochs=2, batch_size=32, lr=0.1), progress=False)
    return dataclasses.replace(base, **changes)


def numbers(rows: tuple[RunResult, ...] | list[RunResult]) -> list[tuple]:
    """Everything of a row but the timings."""
    return [(r.key, r.test_accuracy, r.density, r.layer_densities, r.train_loss, r.note) for r in rows]


def test_a_row_for_every_method_sparsity_and_seed(data):
    config = tiny_config(methods=tuple(tpe.METHODS), seeds=(0, 1))
    result = run_comparison(config, data)
    expected = [(seed, "dense", 0.0) for seed in (0, 1)]
    expected += [(seed, m, s) for seed in (0, 1) for s in (0.5, 0.9) for m in tpe.METHODS]
    assert sorted((r.seed, r.method, r.sparsity) for r in result.rows) == sorted(expected)
    assert result.pending_runs == 0 and result.new_rows == len(expected) and result.skipped_methods == ()
    names = {"1.weight", "3.weight", "5.weight"}
    for row in result.rows:
        assert set(row.layer_densities) == names
        assert abs(row.density - (1.0 - row.sparsity)) <= 0.5 / N_WEIGHTS, row
        assert 0.0 <= row.test_accuracy <= 1.0 and row.recipe == result.recipe_hash
        assert row.prune_seconds >= 0 and row.train_seconds > 0
    dense = [r for r in result.rows if r.method == "dense"]
    assert all(r.density == 1.0 and r.prune_seconds == 0.0 for r in dense)


def test_same_config_and_seeds_give_identical_numbers(data):
    config = tiny_config()
    first, second = run_comparison(config, data), run_comparison(config, data)
    assert numbers(first.rows) == numbers(second.rows)
    # the seeds differ from each other (different init, split and data order)
    by_seed = {seed: [r.test_accuracy for r in first.rows if r.seed == seed] for seed in (0, 1)}
    assert by_seed[0] != by_seed[1]
    # the global RNG is left alone
    state = torch.get_rng_state()
    run_comparison(dataclasses.replace(config, seeds=(0,), methods=("random",)), data)
    assert torch.equal(state, torch.get_rng_state())


class Interrupt(Exception):
    pass


def interrupt_after(k: int):
    seen = []

    def on_row(row: RunResult) -> None:
        seen.append(row)
        if len(seen) == k:
            raise Interrupt

    return on_row


def test_interrupted_comparison_resumes_to_the_uninterrupted_result(data, tmp_path):
    config = tiny_config()
    reference = run_comparison(config, data, csv_path=tmp_path / "reference.csv")
    path = tmp_path / "resumed.csv"
    # stop after the dense row and one pruned row of seed 0: LNPT's teacher must be trained again on resume
    with pytest.raises(Interrupt):
        run_comparison(config, data, csv_path=path, on_row=interrupt_after(2))
    assert len(read_results(path)) == 2
    with pytest.raises(Interrupt):
        run_comparison(config, data, csv_path=path, on_row=interrupt_after(5))
    assert len(read_results(path)) == 7
    resumed = run_comparison(config, data, csv_path=path)
    assert resumed.new_rows == len(reference.rows) - 7 and resumed.pending_runs == 0
    assert numbers(resumed.rows) == numbers(reference.rows)
    in_file = read_results(path)
    assert len({r.key for r in in_file}) == len(in_file) == len(reference.rows)  # no duplicates
    again = run_comparison(config, data, csv_path=path)
    assert again.new_rows == 0 and numbers(again.rows) == numbers(reference.rows)


def test_a_line_cut_off_by_a_kill_is_dropped_and_the_run_redone(data, tmp_path):
    config = tiny_config(seeds=(0,), methods=("magnitude",))
    reference = run_comparison(config, data)
    path = tmp_path / "cut.csv"
    run_comparison(config, data, csv_path=path)
    text = path.read_text()
    path.write_text(text[: len(text) - 40])  # the last row loses its end, no newline
    assert len(read_results(path)) == len(reference.rows) - 1
    resumed = run_comparison(config, data, csv_path=path)
    assert resumed.new_rows == 1 and numbers(resumed.rows) == numbers(reference.rows)
    assert len(read_results(path)) == len(reference.rows)


def test_time_limit_leaves_runs_for_the_next_call(data, tmp_path):
    config = tiny_config(seeds=(0,))
    path = tmp_path / "pieces.csv"
    first = run_comparison(config, data, csv_path=path, time_limit_s=0)
    assert first.rows == () and first.pending_runs == 7
    report = write_report(first, tmp_path / "new" / "r.md", accuracy_plot=tmp_path / "new" / "r.png",
                          profile_plot=tmp_path / "new" / "r_layers.png")
    assert "Partial results" in report.read_text() and not (tmp_path / "new" / "r.png").exists()
    assert run_comparison(config, data, csv_path=path).pending_runs == 0


def test_rows_of_other_settings_are_kept_but_left_out(data, tmp_path, caplog):
    path = tmp_path / "mixed.csv"
    config = tiny_config(seeds=(0,), methods=("magnitude",))
    old = run_comparison(config, data, csv_path=path)
    other = dataclasses.replace(config, recipe=TrainRecipe(epochs=1, batch_size=32, lr=0.1))
    with caplog.at_level(logging.WARNING, logger="torch_prune_ext"):
        new = run_comparison(other, data, csv_path=path)
    assert new.recipe_hash != old.recipe_hash
    assert new.ignored_rows == len(old.rows) and new.new_rows == len(old.rows)
    assert all(r.recipe == new.recipe_hash for r in new.rows)
    assert len(read_results(path)) == 2 * len(old.rows)
    assert "ignoring 3 row(s) of other settings" in caplog.text
    assert "carry another recipe hash" in format_markdown(new)


def test_unknown_and_future_methods_are_skipped_with_a_note(data, caplog):
    config = tiny_config(seeds=(0,), sparsities=(0.5,), methods=("snip", "iunet", "some_future_method"))
    with caplog.at_level(logging.WARNING, logger="torch_prune_ext"):
        result = run_comparison(config, data)
    assert result.skipped_methods == ("iunet", "some_future_method")
    assert [r.method for r in result.rows] == ["dense", "snip"]
    assert "Skipping method 'iunet'" in caplog.text
    markdown = format_markdown(result)
    assert "iunet, some_future_method" in markdown and "not in `torch_prune_ext.METHODS` yet" in markdown


def test_a_pruning_error_is_recorded_with_nan_accuracy(data):
    config = tiny_config(seeds=(0,), sparsities=(0.999,), methods=("random", "magnitude"), on_collapse="raise")
    result = run_comparison(config, data)
    failed = [r for r in result.rows if r.method != "dense"]
    assert len(failed) == 2
    for row in failed:
        assert math.isnan(row.test_accuracy) and math.isnan(row.density)
        assert row.note.startswith("LayerCollapseError:")
    assert "(1 failed)" in format_markdown(result)
    # with on_collapse="ignore" the run trains and the collapse is written in the note
    noted = run_comparison(dataclasses.replace(config, on_collapse="ignore"), data)
    assert all("layer collapse" in r.note for r in noted.rows if r.method != "dense")


def row(method: str, sparsity: float, seed: int, accuracy: float, prune_seconds: float = 1.0) -> RunResult:
    return RunResult("mlp", "synthetic", method, sparsity, seed, accuracy, prune_seconds, 2.0,
                     1.0 - sparsity, {"1.weight": 1.0 - sparsity}, 0.1, "hash")


def test_markdown_mean_and_sample_std_from_a_hand_made_csv(tmp_path):
    results = ResultsFile(tmp_path / "hand.csv")
    for r in [row("dense", 0.0, 0, 0.95), row("dense", 0.0, 1, 0.97),
              row("snip", 0.9, 0, 0.90, 1.0), row("snip", 0.9, 1, 0.92, 2.0), row("snip", 0.9, 2, 0.94, 3.0),
              row("snip", 0.98, 0, 0.80), row("snip", 0.98, 1, math.nan),
              row("random", 0.9, 0, 0.85)]:
        results.append(r)
    assert (tmp_path / "hand.csv").read_text().splitlines()[0] == ",".join(CSV_COLUMNS)
    rows = read_results(tmp_path / "hand.csv")
    cells = {(c.method, c.sparsity): c for c in summarize(rows)}
    assert cells[("snip", 0.9)].mean == pytest.approx(0.92)
    assert cells[("snip", 0.9)].std == pytest.approx(0.02)  # sample std: sqrt((0.02² + 0 + 0.02²) / 2)
    assert cells[("snip", 0.9)].prune_seconds == pytest.approx(2.0)
    assert cells[("snip", 0.98)].failed == 1
    table = accuracy_markdown_table(list(cells.values()))
    assert table.splitlines() == [
        "| method | 90% | 98% |",
        "|---|---|---|",
        "| snip | 92.00 ± 2.00 | 80.00 (n=1) (1 failed) |",
        "| random | 85.00 (n=1) |  |",
    ]
    config = CompareConfig(model="mlp", dataset="synthetic", methods=("snip", "random"), sparsities=(0.9, 0.98),
                           seeds=(0, 1, 2), model_kwargs=MODEL_KWARGS)
    result = ComparisonResult(config, "synthetic", "hash", tuple(rows), (), 0, 0, 0, 1.0)
    markdown = format_markdown(result, header_lines=["command: `python x.py`"])
    assert "- command: `python x.py`" in markdown
    assert "Dense (unpruned, same recipe) test accuracy (%): **96.00 ± 1.41 (n=2)**" in markdown
    assert table in markdown
    assert "| snip | 2.00 | 1.00 |" in markdown  # mean pruning seconds


def test_masked_entries_stay_exactly_zero_through_training():
    torch.manual_seed(0)
    model = mlp(16, (32, 16), 3)
    tpe.global_prune(model, "magnitude", 0.8, input_shape=(16,))
    masks = {name: buffer.clone() for name, buffer in model.named_buffers() if name.endswith("_mask")}
    x, y = torch.randn(64, 16), torch.randint(0, 3, (64,))
    recipe = TrainRecipe(epochs=3, batch_size=16, lr=0.2, momentum=0.9, weight_decay=1e-2, schedule="onecycle")
    train_model(model, x, y, recipe, seed=0)
    for name, mask in masks.items():
        module = model.get_submodule(name.rsplit(".", 1)[0])
        assert torch.equal(module.weight_mask, mask)  # masks unchanged
        assert torch.all(module.weight[mask == 0] == 0) and torch.all(module.weight_orig[mask == 0] == 0)
        assert torch.any(module.weight[mask == 1] != 0)


def test_augmentation_runs_on_images_and_is_seeded():
    images = synthetic_classification_data((3, 8, 8), num_classes=2, train_size=32, test_size=8)
    recipe = TrainRecipe(epochs=1, batch_size=8, augment=True)
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 2))
        train_model(net, images.train_x, images.train_y, recipe, seed=3, mean=(0.5,) * 3, std=(0.25,) * 3)
        weights.append(net[1].weight.detach().clone())
    assert torch.equal(*weights)


def test_channels_last_bf16_training_keeps_masks_and_repeats():
    """The GPU recipe's options, on the CPU: bf16 autocast and channels_last train a pruned conv net
    with float32 weights, exact zeros where pruned, and the same weights from the same seed."""
    images = synthetic_classification_data((3, 8, 8), num_classes=2, train_size=32, test_size=8)
    recipe = TrainRecipe(epochs=2, batch_size=8, lr=0.05, augment=True, channels_last=True, precision="bf16")
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                  torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
        tpe.global_prune(net, "magnitude", 0.7, input_shape=(3, 8, 8))
        result = train_model(net, images.train_x, images.train_y, recipe, seed=1, mean=(0.5,) * 3, std=(0.25,) * 3)
        assert all(math.isfinite(loss) for loss in result.epoch_losses)
        conv = net[0]
        assert conv.weight_orig.dtype == torch.float32
        assert conv.weight_orig.is_contiguous(memory_format=torch.channels_last)
        assert torch.all(conv.weight_orig[conv.weight_mask == 0] == 0)
        runs.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert torch.equal(*runs)
    fp32 = dataclasses.replace(recipe, precision="fp32", channels_last=False)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
    tpe.global_prune(net, "magnitude", 0.7, input_shape=(3, 8, 8))
    train_model(net, images.train_x, images.train_y, fp32, seed=1, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert not torch.equal(runs[0], torch.cat([p.detach().flatten() for p in net.parameters()]))  # bf16 rounds


def test_recipe_fields_added_later_enter_the_hash_only_when_set(data):
    plain = TrainRecipe(epochs=2)
    assert plain.identity() == {k: v for k, v in plain.to_dict().items() if k not in ("channels_last", "precision")}
    hashes = {tiny_config(recipe=recipe).recipe_hash(data) for recipe in
              (plain, dataclasses.replace(plain, precision="bf16"), dataclasses.replace(plain, channels_last=True))}
    assert len(hashes) == 3


def test_data_is_preloaded_on_the_device(data):
    moved = data.to("cpu")
    assert moved.fingerprint() == data.fingerprint() and torch.equal(moved.train_x, data.train_x)
    result = run_comparison(tiny_config(methods=("magnitude",), sparsities=(0.5,), seeds=(0,), device="cpu"), data)
    assert [r.method for r in result.rows] == ["dense", "magnitude"]


@pytest.mark.parametrize("changes, error, match", [
    ({"sparsities": (0.0,)}, InvalidAmountError, "in \\(0, 1\\)"),
    ({"sparsities": (0.5, 1.2)}, InvalidAmountError, "in \\(0, 1\\)"),
    ({"sparsities": (0.5, 0.5)}, InvalidAmountError, "distinct"),
    ({"seeds": (-1,)}, InvalidOptionError, "seeds"),
    ({"seeds": ()}, InvalidOptionError, "seeds"),
    ({"methods": ("snip", "SNIP")}, InvalidOptionError, "distinct"),
    ({"methods": "snip"}, InvalidOptionError, "tuple or list"),
    ({"methods": ("dense",)}, InvalidOptionError, "include_dense"),
    ({"model": "no_such_model"}, InvalidOptionError, "model must be one of"),
    ({"per_class": 0}, InvalidOptionError, "per_class"),
    ({"train_subset": 0}, InvalidOptionError, "train_subset"),
    ({"on_collapse": "explode"}, InvalidOptionError, "on_collapse"),
    ({"model_kwargs": {"num_classes": 3}}, InvalidOptionError, "num_classes"),
    ({"device": "no_such_device"}, InvalidOptionError, "device"),
])
def test_bad_configs_raise_clear_errors(changes, error, match):
    with pytest.raises(error, match=match):
        tiny_config(**changes)


@pytest.mark.parametrize("changes, match", [
    ({"lr": 0.0}, "lr"), ({"epochs": -1}, "epochs"), ({"momentum": 1.0}, "momentum"),
    ({"schedule": "step"}, "schedule"), ({"batch_size": 0}, "batch_size"), ({"augment": "yes"}, "augment"),
    ({"precision": "fp16"}, "precision"), ({"channels_last": 1}, "channels_last"),
])
def test_bad_recipes_raise_clear_errors(changes, match):
    with pytest.raises(InvalidOptionError, match=match):
        TrainRecipe(**changes)


def test_bad_data_raises_clear_errors(data, tmp_path):
    with pytest.raises(InvalidOptionError, match="config.dataset"):
        run_comparison(tiny_config(dataset="mnist"), data)
    with pytest.raises(InvalidOptionError, match="pruning set"):
        run_comparison(tiny_config(per_class=1000), data)
    with pytest.raises(InvalidOptionError, match="augment=True needs image batches"):
        run_comparison(tiny_config(recipe=TrainRecipe(epochs=1, augment=True)),
                       synthetic_classification_data((16,), num_classes=3, train_size=30, test_size=9))
    with pytest.raises(InvalidOptionError, match="must lie in"):
        ClassificationData("x", torch.zeros(4, 2), torch.tensor([0, 1, 2, 5]), torch.zeros(2, 2),
                           torch.tensor([0, 1]), num_classes=3)
    with pytest.raises(InvalidOptionError, match="must match"):
        ClassificationData("x", torch.zeros(4, 2), torch.tensor([0, 1]), torch.zeros(2, 2), torch.tensor([0, 1]), 2)
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(InvalidOptionError, match="not those of a comparison"):
        run_comparison(tiny_config(), data, csv_path=other)


def test_cli_compare_writes_csv_and_markdown_and_resumes(tmp_path, capsys):
    output = tmp_path / "cmp.csv"
    argv = ["compare", "--model", "lenet_300_100", "--data", "synthetic", "--methods", "snip", "random", "iunet",
            "--sparsities", "0.9", "--seeds", "0", "1", "--epochs", "1", "--train-subset", "100",
            "--test-subset", "50", "--per-class", "2", "--threads", "1", "--no-progress", "--no-plots",
            "-o", str(output)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "snip" in out and "random" in out and "skipped (not in torch_prune_ext.METHODS yet): iunet" in out
    assert "6 run(s) in" in out and "(6 new)" in out
    rows = read_results(output)
    assert len(rows) == 6 and {r.method for r in rows} == {"dense", "snip", "random"}
    markdown = output.with_suffix(".md").read_text()
    assert "torch-prune-ext compare --model lenet_300_100 --data synthetic" in markdown
    assert "| method | 90% |" in markdown
    assert main(argv) == 0
    assert "(0 new)" in capsys.readouterr().out
    assert len(read_results(output)) == 6


def test_cli_compare_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    output = tmp_path / "plots.csv"
    assert main(["compare", "--model", "lenet_300_100", "--data", "synthetic", "--methods", "magnitude",
                 "--sparsities", "0.5", "0.9", "--epochs", "0", "--train-subset", "60", "--test-subset", "30",
                 "--per-class", "2", "--no-progress", "--plots", "-o", str(output)]) == 0
    assert output.with_suffix(".png").stat().st_size > 0
    assert (tmp_path / "plots_layers.png").stat().st_size > 0
    assert "plots.png" in output.with_suffix(".md").read_text()


@pytest.mark.parametrize("bad, message", [
    (["--seeds", "0", "0"], "seeds must be distinct"),
    (["--sparsities", "1.5"], "numbers in (0, 1)"),
    (["--epochs", "-1"], "epochs must be an int >= 0"),
    (["--per-class", "0"], "per_class must be a positive int"),
])
def test_cli_compare_bad_input_exits_with_a_message(tmp_path, capsys, bad, message):
    code = main(["compare", "--data", "synthetic", *bad, "--no-progress", "-o", str(tmp_path / "x.csv")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_cli_compare_takes_the_gpu_recipe_options():
    from torch_prune_ext.cli.compare import _command_line, compare_config
    from torch_prune_ext.cli.main import build_parser

    args = build_parser().parse_args(["compare", "--model", "resnet20", "--channels-last", "--precision", "bf16",
                                      "--device", "cuda", "--augment"])
    config = compare_config(args)
    assert (config.recipe.channels_last, config.recipe.precision, config.device) == (True, "bf16", "cuda")
    line = _command_line(config, Path("out.csv"))
    assert "--channels-last" in line and "--precision bf16" in line and "--device cuda" in line
    assert line.endswith("-o out.csv")

