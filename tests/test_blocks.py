"""Block-aware pruning (granularity="block"|"hybrid") and the empty-tile diagnostic."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import torch_prune_ext as tpe
from torch_prune_ext.core.blocks import as_matrix, block_sums, from_matrix, tile_statistics
from torch_prune_ext.core.ranking import rank_and_mask
from torch_prune_ext.core.targets import resolve_targets


def blocks_of(mask: torch.Tensor, bn: int, bk: int) -> list[torch.Tensor]:
    """Every block of a mask's GEMM view, by explicit slicing (the oracle's view)."""
    m = as_matrix(mask)
    return [m[r:r + bn, c:c + bk] for r in range(0, m.shape[0], bn) for c in range(0, m.shape[1], bk)]


def mixed_blocks(masks: list[torch.Tensor], bn: int, bk: int) -> int:
    return sum(1 for mask in masks for b in blocks_of(mask, bn, bk) if 0 < int(b.sum()) < b.numel())


def two_layer_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 12, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12 * 4 * 4, 20), nn.ReLU(),
                         nn.Linear(20, 5))


def test_block_sums_matches_slicing():
    torch.manual_seed(0)
    x = torch.randn(7, 10)
    sums = block_sums(x, (3, 4))
    expected = torch.tensor([[float(x[r:r + 3, c:c + 4].sum()) for c in range(0, 10, 4)] for r in range(0, 7, 3)])
    torch.testing.assert_close(sums, expected)


def brute_force_block_ranking(scores, n_prune_blocks_elements, bn, bk):
    """Independent oracle for fresh masks: rank (layer, block) by mean score, prune whole blocks, then
    the lowest entries of the first block that does not fit."""
    entries = []
    for layer, s in enumerate(scores):
        m = as_matrix(s)
        for r in range(0, m.shape[0], bn):
            for c in range(0, m.shape[1], bk):
                block = m[r:r + bn, c:c + bk]
                entries.append((float(block.mean()), layer, r, c, block.numel()))
    order = sorted(range(len(entries)), key=lambda i: (entries[i][0], i))
    keep = [torch.ones_like(as_matrix(s), dtype=torch.bool) for s in scores]
    left = n_prune_blocks_elements
    for i in order:
        _, layer, r, c, size = entries[i]
        if left == 0:
            break
        window = keep[layer][r:r + bn, c:c + bk]
        if size <= left:
            window[:] = False
            left -= size
        else:
            flat = as_matrix(scores[layer])[r:r + bn, c:c + bk].reshape(-1)
            lowest = torch.sort(flat.double(), stable=True).indices[:left]
            mask = window.reshape(-1).clone()
            mask[lowest] = False
            window[:] = mask.reshape(window.shape)
            left = 0
    return [from_matrix(k, s.shape) for k, s in zip(keep, scores)]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), bn=st.sampled_from([1, 2, 3, 4]), bk=st.sampled_from([1, 2, 5]),
       fraction=st.floats(0.0, 1.0))
def test_block_ranking_against_brute_force(seed, bn, bk, fraction):
    net = two_layer_net(seed)
    targets = resolve_targets(net)
    g = torch.Generator().manual_seed(seed)
    scores = [torch.rand(t.raw.shape, generator=g) for t in targets]
    masks = [torch.ones_like(t.raw) for t in targets]
    n_total = sum(m.numel() for m in masks)
    n_pruned = round(fraction * n_total)
    new = rank_and_mask(targets, scores, masks, n_pruned, granularity="block", block_size=(bn, bk))
    expected = brute_force_block_ranking(scores, n_pruned, bn, bk)
    for m, e in zip(new, expected):
        assert torch.equal(m.bool(), e)
    assert sum(int((m == 0).sum()) for m in new) == n_pruned
    assert mixed_blocks(new, bn, bk) <= 1


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), sparsity=st.floats(0.0, 1.0), granularity=st.sampled_from(["block", "hybrid"]),
       block=st.sampled_from([(4, 4), (8, 2), (16, 16)]), rounds=st.integers(1, 3))
def test_block_granularities_hit_exact_counts_and_keep_pruned_entries(seed, sparsity, granularity, block, rounds):
    net = two_layer_net(seed)
    torch.nn.utils.prune.random_unstructured(net[3], "weight", amount=0.2)
    before = net[3].weight_mask.clone()
    targets = tpe.prunable_parameters(net)
    n_total = sum(getattr(m, n).numel() for m, n in targets)
    n_dead = int((before == 0).sum())
    if round(sparsity * n_total) < n_dead:
        sparsity = n_dead / n_total
    tpe.global_prune(net, "magnitude", sparsity, rounds=rounds, granularity=granularity, block_size=block,
                     progress=False, on_collapse="ignore")
    zeros = sum(int((getattr(m, n + "_mask") == 0).sum()) for m, n in targets)
    assert zeros == round(sparsity * n_total)
    assert bool((net[3].weight_mask[before == 0] == 0).all())


def test_hybrid_prunes_elements_only_inside_kept_blocks():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 64, bias=False), nn.ReLU(), nn.Linear(64, 32, bias=False))
    report = tpe.global_prune(net, "magnitude", 0.96, granularity="hybrid", block_size=(8, 8), block_density=0.2)
    assert report.sparsity == round(0.96 * (64 * 64 + 64 * 32)) / (64 * 64 + 64 * 32)
    masks = [net[0].weight_mask, net[2].weight_mask]
    live_blocks = sum(1 for m in masks for b in blocks_of(m, 8, 8) if int(b.sum()) > 0)
    all_blocks = sum(len(blocks_of(m, 8, 8)) for m in masks)
    # kept blocks hold about 20% of the entries, and the 4% density lives inside them
    assert live_blocks / all_blocks == pytest.approx(0.2, abs=1.5 / all_blocks + 1e-9)
    assert mixed_blocks(masks, 8, 8) >= live_blocks - 1


def test_block_masks_are_invariant_to_the_target_order():
    results = []
    for permute in (False, True):
        net = two_layer_net(3)
        targets = tpe.prunable_parameters(net)
        if permute:
            targets = targets[::-1]
        tpe.global_prune(net, "synflow", 0.8, targets=targets, input_shape=(3, 6, 6), rounds=3,
                         granularity="block", block_size=(4, 4), progress=False, on_collapse="ignore")
        results.append([m.weight_mask.clone() for m in (net[0], net[3], net[5])])
    assert all(torch.equal(a, b) for a, b in zip(*results))


@pytest.mark.parametrize("method, kwargs", [
    ("snip", {}), ("synflow", {"rounds": 4}), ("grasp", {}),
    ("ntksap", {"rounds": 2, "repeats": 1}), ("px", {"rounds": 2}),
])
def test_every_scoring_method_has_block_variants(method, kwargs):
    net = two_layer_net(1)
    data = (torch.randn(8, 3, 6, 6), torch.randint(0, 5, (8,)))
    report = tpe.global_prune(net, method, 0.75, data, granularity="block", block_size=(4, 4), progress=False,
                              on_collapse="ignore", **kwargs)
    n_total = 12 * 27 + 20 * 192 + 5 * 20
    assert report.sparsity == round(0.75 * n_total) / n_total
    masks = [net[0].weight_mask, net[3].weight_mask, net[5].weight_mask]
    assert mixed_blocks(masks, 4, 4) <= kwargs.get("rounds", 1)  # at most one partial block per round


def test_tile_statistics_against_loops():
    torch.manual_seed(0)
    mask = (torch.rand(40, 70) > 0.97).float()
    mask[:16, :32] = 0
    for tile in (8, 16, 32):
        stats = tile_statistics("w", mask, tile)
        blocks = blocks_of(mask, tile, tile)
        assert stats.tiles == len(blocks)
        assert stats.empty == sum(1 for b in blocks if int(b.sum()) == 0)
        assert stats.predicted_speedup == pytest.approx(len(blocks) / max(len(blocks) - stats.empty, 1))


def test_tile_report_shows_what_block_pruning_buys():
    results = {}
    for granularity in ("element", "block"):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 128))
        tpe.global_prune(net, "magnitude", 0.95, granularity=granularity, block_size=(32, 32))
        report = tpe.tile_report(net, tile_sizes=(16, 32, 64))
        results[granularity] = report
        assert "0.weight" in str(report) and "total" in str(report)
        json.dumps(report.to_dict())
    assert results["element"].overall(32).empty_fraction < 0.05
    assert results["block"].overall(32).empty_fraction > 0.9
    assert results["block"].overall(32).predicted_speedup > 10


def test_conv_blocks_use_the_gemm_view():
    conv = nn.Conv2d(4, 8, 3, bias=False)
    [target] = resolve_targets(conv, [(conv, "weight")])
    scores = torch.arange(conv.weight.numel(), dtype=torch.float32).reshape(conv.weight.shape)
    [mask] = rank_and_mask([target], [scores], [torch.ones_like(conv.weight)], 4 * 36, granularity="block",
                           block_size=(4, 36))
    assert torch.equal(mask[:4], torch.zeros(4, 4, 3, 3)) and torch.equal(mask[4:], torch.ones(4, 4, 3, 3))


def test_conv_blocks_are_tap_major_tiles():
    """A (4, 4) block of a conv with 4 input channels is 4 output x all 4 input channels at ONE tap."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, bias=False)
    tpe.global_prune(conv, "magnitude", 12 / 18, granularity="block", block_size=(4, 4))  # 12 of 18 tiles
    mask = conv.weight_mask.bool()
    assert int(mask.sum()) == 6 * 16
    per_tap = mask.reshape(2, 4, 4, 9)  # (out block, out, in, tap)
    uniform = per_tap.all(dim=(1, 2)) | ~per_tap.any(dim=(1, 2))
    assert bool(uniform.all())  # every (out block, tap) is kept or pruned whole
    assert int(per_tap.all(dim=(1, 2)).sum()) == 6
    stats = tile_statistics("w", conv.weight_mask, 4)
    assert (stats.tiles, stats.empty) == (18, 18 - int(per_tap.all(dim=(1, 2)).sum()))


@pytest.mark.parametrize("options, phrase", [
    ({"granularity": "tiles"}, "granularity must be one of"),
    ({"granularity": "block", "block_size": (0, 4)}, "block_size"),
    ({"granularity": "hybrid", "block_density": 1.5}, "block_density"),
])
def test_bad_block_options_are_clear_errors(options, phrase):
    net = two_layer_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(tpe.InvalidOptionError, match=phrase):
        tpe.global_prune(net, "magnitude", 0.5, **options)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
