"""The pruning sets bundled with the package: equal to the data folder's, and the fallback without it."""

from __future__ import annotations

import logging

import pytest
import torch

from torch_prune_ext.data import bundled, datasets, pruning_set


def data_folder_or_skip(filename: str):
    try:
        return datasets.find_data_file(filename).parent
    except FileNotFoundError:
        pytest.skip(f"{filename} is not in a data folder here: nothing to compare the bundled set with")


@pytest.mark.parametrize("dataset, filename", [("cifar10", datasets.CIFAR10_FILE), ("mnist", datasets.MNIST_FILE)])
def test_bundled_set_equals_the_data_folder_selection(dataset, filename):
    root = data_folder_or_skip(filename)
    x, y = bundled.bundled_pruning_set(dataset)
    x_ref, y_ref = pruning_set(dataset, per_class=10, seed=0, root=root)
    assert torch.equal(y, y_ref) and torch.equal(x, x_ref)


@pytest.fixture
def no_data_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    monkeypatch.setattr(datasets, "default_data_roots", lambda: [tmp_path / "no-data"])
    return tmp_path


@pytest.mark.parametrize("dataset, shape", [("cifar10", (100, 3, 32, 32)), ("mnist", (100, 1, 28, 28))])
def test_pruning_set_falls_back_with_a_one_line_notice(no_data_folder, caplog, dataset, shape):
    with caplog.at_level(logging.WARNING, logger="torch_prune_ext"):
        x, y = pruning_set(dataset, per_class=10, seed=0)
    assert tuple(x.shape) == shape and torch.bincount(y).tolist() == [10] * 10
    assert x.dtype == torch.float32 and abs(float(x.mean())) < 1.0  # normalised like the data folder's
    [record] = caplog.records
    assert "bundled with the package" in record.getMessage() and "\n" not in record.getMessage()


def test_fallback_subsets_for_other_seeds_and_refuses_more_than_it_has(no_data_folder, caplog):
    full_x, _ = bundled.bundled_pruning_set("cifar10")
    x, y = pruning_set("cifar10", per_class=3, seed=5)
    assert torch.bincount(y).tolist() == [3] * 10
    assert all(any(torch.equal(row, ref) for ref in full_x) for row in x)  # a subset of the bundled images
    assert "not the data folder's selection" in caplog.records[-1].getMessage()
    with pytest.raises(FileNotFoundError, match="--per-class 10"):
        pruning_set("cifar10", per_class=11, seed=0)


def test_explicit_folders_never_fall_back(no_data_folder, monkeypatch):
    with pytest.raises(FileNotFoundError, match="cifar10_jpeg_q75.npz"):
        pruning_set("cifar10", root=no_data_folder)
    monkeypatch.setenv(datasets.DATA_ENV, str(no_data_folder))
    with pytest.raises(FileNotFoundError, match="TORCH_PRUNE_EXT_DATA"):
        pruning_set("cifar10")
    with pytest.raises(FileNotFoundError):
        pruning_set("cifar10", split="test")
