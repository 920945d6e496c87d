"""Tests of ``torch_prune_ext.data``; they read only the small fixtures in tests/fixtures."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from torch_prune_ext.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CifarTrainAugment,
    cifar10_tensors,
    class_balanced_indices,
    find_data_file,
    load_cifar10,
    load_mnist,
    mnist_tensors,
    normalize,
    pruning_batch,
    random_crop,
    random_horizontal_flip,
    resolve_data_root,
)
from torch_prune_ext.data import datasets as datasets_module

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the caller's data or cache folders."""
    monkeypatch.delenv("TORCH_PRUNE_EXT_DATA", raising=False)
    monkeypatch.setenv("TORCH_PRUNE_EXT_CACHE", str(tmp_path / "default-cache"))


# --------------------------------------------------------------------------- locating files


def test_explicit_root_wins_over_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_PRUNE_EXT_DATA", str(tmp_path))
    assert resolve_data_root(FIXTURES) == FIXTURES
    assert resolve_data_root() == tmp_path


def test_env_var_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_PRUNE_EXT_DATA", str(FIXTURES))
    assert find_data_file("mnist.npz") == FIXTURES / "mnist.npz"
    x, _ = load_mnist("test")
    assert x.shape == (20, 28, 28)


def test_missing_file_error_names_file_folder_and_env(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_mnist("train", root=tmp_path)
    message = str(info.value)
    assert "mnist.npz" in message and str(tmp_path) in message and "TORCH_PRUNE_EXT_DATA" in message
    with pytest.raises(FileNotFoundError, match="cifar10_jpeg_q75.npz"):
        load_cifar10("train", root=tmp_path)


def test_missing_root_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="TORCH_PRUNE_EXT_DATA"):
        resolve_data_root(tmp_path / "nope")


def test_default_roots_point_at_a_shared_data_folder() -> None:
    roots = datasets_module.default_data_roots()
    repo = Path(datasets_module.__file__).resolve().parents[2]
    assert (repo.parent / "shared" / "data").resolve() in roots
    assert all(r.parts[-2:] == ("shared", "data") for r in roots)


def test_bad_split() -> None:
    with pytest.raises(ValueError, match="split"):
        load_mnist("validation", root=FIXTURES)


# --------------------------------------------------------------------------- MNIST


def test_mnist_loads_fixture() -> None:
    x, y = load_mnist("train", root=FIXTURES)
    assert x.shape == (60, 28, 28) and x.dtype == torch.uint8
    assert y.dtype == torch.int64 and y[0].item() == 5
    x_test, y_test = load_mnist("test", root=FIXTURES)
    assert x_test.shape == (20, 28, 28) and y_test.shape == (20,)


def test_mnist_tensors_normalisation() -> None:
    raw, _ = load_mnist("train", root=FIXTURES)
    x, y = mnist_tensors("train", root=FIXTURES)
    assert x.shape == (60, 1, 28, 28) and x.dtype == torch.float32 and y[0].item() == 5
    expected = (raw.float() / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(x[:, 0], expected)
    plain, _ = mnist_tensors("train", root=FIXTURES, normalize=False)
    assert plain.min() >= 0 and plain.max() <= 1


# --------------------------------------------------------------------------- CIFAR-10


def test_cifar_loads_fixture(tmp_path: Path) -> None:
    x, y = load_cifar10("train", root=FIXTURES, cache_dir=tmp_path)
    assert x.shape == (60, 32, 32, 3) and x.dtype == torch.uint8
    assert y.dtype == torch.int64 and y[0].item() == 6
    x_test, y_test = load_cifar10("test", root=FIXTURES, cache_dir=tmp_path)
    assert x_test.shape == (20, 32, 32, 3) and y_test[0].item() == 3


def test_indices_decode_matches_full_decode(tmp_path: Path) -> None:
    full_x, full_y = load_cifar10("train", root=FIXTURES, use_cache=False)
    picks = [17, 3, 59, 0, 3]
    x, y = load_cifar10("train", root=FIXTURES, indices=picks, use_cache=False)
    assert torch.equal(x, full_x[picks]) and torch.equal(y, full_y[picks])
    # Same answer through a torch index tensor and from an existing cache.
    load_cifar10("train", root=FIXTURES, cache_dir=tmp_path)
    x2, _ = load_cifar10("train", root=FIXTURES, indices=torch.tensor(picks), cache_dir=tmp_path)
    assert torch.equal(x2, full_x[picks])


def test_indices_out_of_range() -> None:
    with pytest.raises(ValueError, match="indices"):
        load_cifar10("test", root=FIXTURES, indices=[0, 20], use_cache=False)


def _forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded although a valid cache exists")

    monkeypatch.setattr(datasets_module, "_decode_jpegs", fail)


def test_cache_is_written_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    first_x, first_y = load_cifar10("train", root=FIXTURES, cache_dir=cache)
    files = list(cache.glob("*.npy"))
    assert len(files) == 1 and not list(cache.glob("*.tmp"))
    _forbid_decoding(monkeypatch)
    second_x, second_y = load_cifar10("train", root=FIXTURES, cache_dir=cache)
    assert torch.equal(first_x, second_x) and torch.equal(first_y, second_y)


def test_cache_is_invalidated_when_the_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = tmp_path / "data", tmp_path / "cache"
    root.mkdir()
    source = root / "cifar10_jpeg_q75.npz"
    shutil.copy(FIXTURES / "cifar10_jpeg_q75.npz", source)
    load_cifar10("test", root=root, cache_dir=cache)

    # Rewrite the file with the first 10 test images only (and a clearly different mtime).
    with np.load(source) as data:
        arrays = {k: data[k] for k in data.files}
    offsets = arrays["offsets_test"][:11]
    arrays.update(jpeg_test=arrays["jpeg_test"][: offsets[-1]], offsets_test=offsets, y_test=arrays["y_test"][:10])
    np.savez_compressed(source, **arrays)
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))

    decoded: list[int] = []
    original = datasets_module._decode_jpegs

    def counting(buffer: np.ndarray, offsets: np.ndarray, indices: np.ndarray) -> np.ndarray:
        decoded.append(len(indices))
        return original(buffer, offsets, indices)

    monkeypatch.setattr(datasets_module, "_decode_jpegs", counting)
    x, y = load_cifar10("test", root=root, cache_dir=cache)
    assert decoded == [10] and x.shape == (10, 32, 32, 3) and y[0].item() == 3


def test_corrupt_cache_is_ignored(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    expected, _ = load_cifar10("test", root=FIXTURES, cache_dir=cache)
    (cache_file,) = cache.glob("*.npy")
    np.save(cache_file, np.zeros((3, 2), dtype=np.uint8))
    x, _ = load_cifar10("test", root=FIXTURES, cache_dir=cache)
    assert torch.equal(x, expected)


def test_cifar10_tensors_layout_and_normalisation() -> None:
    raw, _ = load_cifar10("test", root=FIXTURES, indices=range(4), use_cache=False)
    x, y = cifar10_tensors("test", root=FIXTURES, indices=range(4))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y[0].item() == 3
    mean = torch.tensor(CIFAR10_MEAN)[:, None, None]
    std = torch.tensor(CIFAR10_STD)[:, None, None]
    torch.testing.assert_close(x, (raw.permute(0, 3, 1, 2).float() / 255 - mean) / std)


# --------------------------------------------------------------------------- splits


def _labels() -> torch.Tensor:
    return torch.arange(100) % 10  # 10 classes x 10 examples


def test_class_balanced_indices_picks_k_per_class() -> None:
    labels = _labels()
    idx = class_balanced_indices(labels, per_class=3, seed=1)
    assert idx.dtype == torch.int64 and idx.numel() == 30
    assert idx.unique().numel() == 30
    assert torch.bincount(labels[idx], minlength=10).tolist() == [3] * 10
    assert torch.equal(idx, idx.sort().values)


def test_class_balanced_indices_is_seeded() -> None:
    labels = _labels()
    a = class_balanced_indices(labels, 4, seed=7)
    assert torch.equal(a, class_balanced_indices(labels.numpy(), 4, seed=7))
    others = [class_balanced_indices(labels, 4, seed=s) for s in range(8, 12)]
    assert any(not torch.equal(a, b) for b in others)


def test_class_balanced_indices_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    class_balanced_indices(_labels(), 2, seed=0)
    assert torch.equal(torch.get_rng_state(), state)


def test_class_balanced_indices_too_few_examples() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    with pytest.raises(ValueError, match="class 1: 2"):
        class_balanced_indices(labels, 3, seed=0)
    with pytest.raises(ValueError, match="class 3: 0"):
        class_balanced_indices(labels, 2, seed=0, num_classes=4)
    with pytest.raises(ValueError, match="per_class"):
        class_balanced_indices(labels, 0, seed=0)


def test_pruning_batch_on_fixture() -> None:
    x, y = load_mnist("train", root=FIXTURES)
    xs, ys = pruning_batch(x, y, per_class=2, seed=0)
    assert xs.shape == (20, 28, 28) and torch.bincount(ys, minlength=10).tolist() == [2] * 10
    idx = class_balanced_indices(y, 2, seed=0)
    assert torch.equal(xs, x[idx])


# --------------------------------------------------------------------------- augmentation


def test_random_crop_is_a_window_of_the_padded_input() -> None:
    x = torch.rand(6, 3, 8, 8)
    out = random_crop(x, size=8, padding=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, 8, 8)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        windows = [padded[i, :, r : r + 8, c : c + 8] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_random_crop_offsets_follow_the_documented_draws() -> None:
    x = torch.rand(5, 2, 6, 6)
    out = random_crop(x, size=(4, 5), padding=1, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    top, left = torch.randint(0, 5, (5,), generator=g), torch.randint(0, 4, (5,), generator=g)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i in range(5):
        assert torch.equal(out[i], padded[i, :, top[i] : top[i] + 4, left[i] : left[i] + 5])


def test_random_crop_varies_offsets_across_samples() -> None:
    x = torch.rand(1, 1, 8, 8).expand(32, 1, 8, 8)
    out = random_crop(x, size=8, padding=4, generator=torch.Generator().manual_seed(0))
    assert len({tuple(o.flatten().tolist()) for o in out}) > 1


def test_random_crop_bad_arguments() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        random_crop(torch.rand(2, 3, 8, 8), size=20, padding=2)
    with pytest.raises(ValueError, match="N, C, H, W"):
        random_crop(torch.rand(3, 8, 8))


def test_flip_flips_exactly_the_selected_samples() -> None:
    x = torch.rand(16, 3, 4, 5)
    out = random_horizontal_flip(x, p=0.5, generator=torch.Generator().manual_seed(1))
    selected = torch.rand(16, generator=torch.Generator().manual_seed(1)) < 0.5
    assert 0 < int(selected.sum()) < 16
    for i in range(16):
        assert torch.equal(out[i], x[i].flip(-1) if selected[i] else x[i])
    assert torch.equal(random_horizontal_flip(x, p=0.0), x)
    assert torch.equal(random_horizontal_flip(x, p=1.0), x.flip(-1))
    with pytest.raises(ValueError, match="p must"):
        random_horizontal_flip(x, p=1.5)


def test_augmentation_is_reproducible_with_a_generator() -> None:
    x = torch.rand(10, 3, 32, 32)
    a = CifarTrainAugment(generator=torch.Generator().manual_seed(5))(x)
    b = CifarTrainAugment(generator=torch.Generator().manual_seed(5))(x)
    c = CifarTrainAugment(generator=torch.Generator().manual_seed(6))(x)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(
        random_crop(x, generator=torch.Generator().manual_seed(2)),
        random_crop(x, generator=torch.Generator().manual_seed(2)),
    )


def test_cifar_train_augment_normalises_last() -> None:
    x = torch.rand(4, 3, 32, 32)
    augment = CifarTrainAugment(mean=CIFAR10_MEAN, std=CIFAR10_STD, generator=torch.Generator().manual_seed(0))
    plain = CifarTrainAugment(generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(augment(x), normalize(plain(x), CIFAR10_MEAN, CIFAR10_STD))


def test_normalize_checks_channels() -> None:
    with pytest.raises(ValueError, match="one value per channel"):
        normalize(torch.rand(2, 3, 4, 4), (0.5,), (0.5,))
    with pytest.raises(ValueError, match="floating"):
        normalize(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), CIFAR10_MEAN, CIFAR10_STD)
