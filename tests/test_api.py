"""Behavioural tests of the public API (api.md §1, §2, §4, §6): names, targets, schedules, reports."""

from __future__ import annotations

import json
import warnings
from collections import OrderedDict
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

import torch_prune_ext as tpe
import torch_prune_ext.core.scoring as scoring_module
from torch_prune_ext.core.schedules import pruned_counts

ALL_METHODS = ["random", "magnitude", "snip", "iter_snip", "grasp", "synflow"]


def nested_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    features = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(2, 4, 3, padding=1), bn1=nn.BatchNorm2d(4), relu1=nn.ReLU(),
        conv2=nn.Conv2d(4, 3, 3, bias=False), relu2=nn.ReLU(),
    ))
    head = nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc=nn.Linear(3 * 2 * 2, 6), relu=nn.ReLU(),
                                     out=nn.Linear(6, 3)))
    return nn.Sequential(OrderedDict(features=features, head=head))


NESTED_NAMES = ["features.conv1.weight", "features.conv2.weight", "head.fc.weight", "head.out.weight"]


def nested_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(6, 2, 4, 4, generator=g), torch.randint(0, 3, (6,), generator=g)


def data_for(method: str, x: torch.Tensor, y: torch.Tensor) -> tuple[object, dict]:
    if method == "synflow":
        return None, {"input_shape": tuple(x.shape[1:])}
    if method in ("random", "magnitude"):
        return None, {}
    return (x, y), {}


def mask_of(module: nn.Module, name: str = "weight") -> torch.Tensor:
    mask = getattr(module, name + "_mask", None)
    return mask if mask is not None else torch.ones_like(getattr(module, name))


# --------------------------------------------------------------------------- compute_scores
@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("prepruned", [False, True])
def test_compute_scores_keys_are_qualified_names_with_weight_shapes(method, prepruned):
    model = nested_model()
    x, y = nested_batch()
    if prepruned:
        prune.random_unstructured(model.features.conv2, "weight", amount=0.5)
        prune.l1_unstructured(model.head.fc, "weight", amount=0.3)
    data, options = data_for(method, x, y)
    scores = tpe.compute_scores(model, method, data, **options)
    assert list(scores) == NESTED_NAMES  # also "...weight" (not "weight_orig") for pruned modules
    params = dict(model.named_parameters())
    for name, score in scores.items():
        module = model.get_submodule(name.rpartition(".")[0])
        weight = module.weight
        assert score.shape == weight.shape
        assert score.device == weight.device
        assert score.is_floating_point()
        assert not score.requires_grad
        assert name in params or name + "_orig" in params


def test_compute_scores_of_a_bare_module_and_of_given_targets():
    torch.manual_seed(0)
    linear = nn.Linear(5, 3)
    assert list(tpe.compute_scores(linear, "magnitude")) == ["weight"]
    model = nested_model()
    picked = [(model.head.out, "weight"), (model.features.conv1, "weight")]
    assert list(tpe.compute_scores(model, "magnitude", targets=picked)) == ["head.out.weight", "features.conv1.weight"]
    with_bias = tpe.compute_scores(model, "magnitude", targets=[(model.head.fc, "bias")])
    assert list(with_bias) == ["head.fc.bias"] and with_bias["head.fc.bias"].shape == (6,)


def test_compute_scores_accepts_a_method_class():
    model = nested_model()
    by_name = tpe.compute_scores(model, "magnitude")
    by_class = tpe.compute_scores(model, tpe.Magnitude)
    assert all(torch.equal(by_name[k], by_class[k]) for k in by_name)
    assert set(tpe.METHODS) >= {"random", "magnitude", "snip", "iter_snip", "grasp", "synflow"}
    assert tpe.METHODS["snip"] is tpe.SNIP


def test_magnitude_scores_are_abs_effective_weight():
    model = nested_model()
    prune.random_unstructured(model.head.fc, "weight", amount=0.5)
    scores = tpe.compute_scores(model, "magnitude")
    for name, score in scores.items():
        module = model.get_submodule(name.rpartition(".")[0])
        assert torch.equal(score, module.weight.detach().abs())


@pytest.mark.parametrize("method", ["magnitude", "iter_snip", "synflow"])
def test_already_pruned_entries_score_exactly_zero_where_the_math_gives_zero(method):
    model = nested_model()
    x, y = nested_batch()
    prune.random_unstructured(model.head.fc, "weight", amount=0.5)
    prune.random_unstructured(model.features.conv1, "weight", amount=0.3)
    data, options = data_for(method, x, y)
    scores = tpe.compute_scores(model, method, data, **options)
    for name, module in (("head.fc.weight", model.head.fc), ("features.conv1.weight", model.features.conv1)):
        assert bool((scores[name][module.weight_mask == 0] == 0).all())
        assert bool((scores[name][module.weight_mask == 1] != 0).any())


def test_random_scores_follow_the_seed_and_the_generator():
    model = nested_model()
    a = tpe.compute_scores(model, "random", seed=3)
    b = tpe.compute_scores(model, "random", seed=3)
    c = tpe.compute_scores(model, "random", seed=4)
    d = tpe.compute_scores(model, "random", generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert all(torch.equal(a[k], d[k]) for k in a)


# --------------------------------------------------------------------------- prunable_parameters
def zoo() -> nn.Module:
    return nn.Sequential(OrderedDict(
        c1=nn.Conv1d(2, 3, 3),
        block=nn.Sequential(OrderedDict(c2=nn.Conv2d(3, 4, 3, bias=False), bn=nn.BatchNorm2d(4),
                                        c3=nn.Conv3d(4, 2, 1))),
        emb=nn.Embedding(10, 4),
        ln=nn.LayerNorm(4),
        t=nn.ConvTranspose2d(2, 2, 3),
        fc=nn.Linear(4, 2),
    ))


def test_prunable_parameters_default_order_and_types():
    model = zoo()
    pairs = tpe.prunable_parameters(model)
    assert isinstance(pairs, list) and all(isinstance(p, tuple) and len(p) == 2 for p in pairs)
    assert [(m, n) for m, n in pairs] == [
        (model.c1, "weight"), (model.block.c2, "weight"), (model.block.c3, "weight"), (model.fc, "weight"),
    ]


def test_prunable_parameters_include_bias_puts_each_bias_right_after_its_weight():
    model = zoo()
    pairs = tpe.prunable_parameters(model, include_bias=True)
    assert pairs == [
        (model.c1, "weight"), (model.c1, "bias"),
        (model.block.c2, "weight"),  # bias=False: no bias entry
        (model.block.c3, "weight"), (model.block.c3, "bias"),
        (model.fc, "weight"), (model.fc, "bias"),
    ]


def test_prunable_parameters_types_narrow_and_widen():
    model = zoo()
    assert tpe.prunable_parameters(model, types=(nn.Linear,)) == [(model.fc, "weight")]
    assert tpe.prunable_parameters(model, types=[nn.Linear, nn.BatchNorm2d, nn.ConvTranspose2d]) == [
        (model.block.bn, "weight"), (model.t, "weight"), (model.fc, "weight"),
    ]
    assert tpe.prunable_parameters(model, types=(nn.Embedding,), include_bias=True) == [(model.emb, "weight")]
    assert tpe.prunable_parameters(nn.Sequential(nn.ReLU())) == []


def test_prunable_parameters_of_an_already_pruned_model():
    model = zoo()
    before = tpe.prunable_parameters(model, include_bias=True)
    prune.random_unstructured(model.fc, "weight", amount=0.5)
    prune.l1_unstructured(model.fc, "bias", amount=1)
    prune.identity(model.block.c2, "weight")
    assert tpe.prunable_parameters(model, include_bias=True) == before
    assert (model.fc, "weight") in tpe.prunable_parameters(model)


def test_prunable_parameters_is_the_parameters_argument_of_global_unstructured():
    model = zoo()
    pairs = tpe.prunable_parameters(model, include_bias=True)
    prune.global_unstructured(pairs, pruning_method=prune.L1Unstructured, amount=0.5)
    n = sum(getattr(m, k).numel() for m, k in pairs)
    assert sum(int((getattr(m, k) == 0).sum()) for m, k in pairs) == round(0.5 * n)


# --------------------------------------------------------------------------- schedules
def spec_counts(n: int, sparsity: float, rounds: int, schedule: str) -> list[int]:
    """api.md §4 / baselines.md: k_r = round((1 - d_r) * N), d = 1 - sparsity, the last round exact."""
    d = 1.0 - sparsity
    densities = [d ** (r / rounds) if schedule == "exponential" else 1.0 - (1.0 - d) * r / rounds
                 for r in range(1, rounds + 1)]
    counts = [round((1.0 - dr) * n) for dr in densities]
    counts[-1] = round(sparsity * n)
    return counts


@pytest.mark.parametrize("schedule", ["exponential", "linear"])
@pytest.mark.parametrize(("n", "k", "rounds"), [(100, 90, 2), (1000, 990, 5), (320, 288, 7), (50, 0, 3),
                                                (50, 50, 4), (7, 3, 10), (1, 1, 3)])
def test_pruned_counts_follow_the_density_formula(n, k, rounds, schedule):
    counts = pruned_counts(n, k, 0, rounds, schedule)
    assert counts == spec_counts(n, k / n, rounds, schedule)
    assert len(counts) == rounds and counts[-1] == k
    assert counts == sorted(counts)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 5000), data=st.data(), rounds=st.integers(1, 12),
       schedule=st.sampled_from(["exponential", "linear"]))
def test_pruned_counts_are_monotone_floored_and_exact(n, data, rounds, schedule):
    already = data.draw(st.integers(0, n), label="already")
    final = data.draw(st.integers(already, n), label="final")
    counts = pruned_counts(n, final, already, rounds, schedule)
    assert len(counts) == rounds
    assert counts[-1] == final
    assert counts == sorted(counts)
    assert all(already <= c <= final for c in counts)
    formula = spec_counts(n, final / n, rounds, schedule)
    expected, floor = [], already
    for c in formula[:-1]:
        floor = max(floor, min(c, final))
        expected.append(floor)
    assert counts == [*expected, final]


def test_pruned_counts_examples():
    assert pruned_counts(100, 99, 0, 2) == [90, 99]
    assert pruned_counts(100, 50, 30, 3, "linear") == [30, 33, 50]
    assert pruned_counts(10, 4, 0, 1) == [4]


def _record_rounds():
    counts: list[int] = []
    real = scoring_module.rank_and_mask

    def recording(targets, scores, masks, n_pruned, **options):
        counts.append(n_pruned)
        return real(targets, scores, masks, n_pruned, **options)

    return counts, mock.patch.object(scoring_module, "rank_and_mask", recording)


@pytest.mark.parametrize("schedule", ["exponential", "linear"])
@pytest.mark.parametrize(("sparsity", "rounds"), [(0.9, 2), (0.99, 5), (0.5, 3), (0.905, 2), (0.8333, 3), (0.955, 3),
                                                  (0.37, 6)])
def test_global_prune_rounds_follow_the_schedule_of_the_requested_sparsity(sparsity, rounds, schedule):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 10, bias=False))  # N = 100
    counts, patch = _record_rounds()
    with patch:
        report = tpe.global_prune(model, "magnitude", sparsity, rounds=rounds, schedule=schedule,
                                  on_collapse="ignore")
    expected = spec_counts(100, sparsity, rounds, schedule)
    # rank_and_mask runs only in rounds that prune something new
    expected_calls = [c for i, c in enumerate(expected) if c > (expected[i - 1] if i else 0)]
    assert counts == expected_calls
    assert report.rounds == rounds and len(report.round_seconds) == rounds
    assert int((model[0].weight_mask == 0).sum()) == round(sparsity * 100)


def test_global_prune_schedule_on_a_prepruned_model_counts_all_entries():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 10, bias=False), nn.ReLU(), nn.Linear(10, 10, bias=False))  # N = 200
    prune.random_unstructured(model[0], "weight", amount=0.2)  # 20 pruned
    counts, patch = _record_rounds()
    with patch:
        tpe.global_prune(model, "magnitude", 0.75, rounds=3, on_collapse="ignore")
    expected = [max(20, c) for c in spec_counts(200, 0.75, 3, "exponential")]
    assert counts == [c for i, c in enumerate(expected) if c > (expected[i - 1] if i else 20)]
    zeros = sum(int((m.weight_mask == 0).sum()) for m in (model[0], model[2]))
    assert zeros == 150


# --------------------------------------------------------------------------- reports
def test_prune_report_fields_table_and_json():
    model = nested_model()
    report = tpe.global_prune(model, "synflow", 0.8, input_shape=(2, 4, 4), rounds=4, progress=False)
    assert isinstance(report, tpe.PruneReport)
    targets = tpe.prunable_parameters(model)
    n_total = sum(m.weight.numel() for m, _ in targets)
    assert report.method == "synflow"
    assert report.sparsity_requested == 0.8
    assert report.rounds == 4
    assert report.schedule == "exponential"
    assert len(report.round_seconds) == 4 and all(s >= 0 for s in report.round_seconds)
    assert report.total_seconds == pytest.approx(sum(report.round_seconds))
    assert report.sparsity == pytest.approx(round(0.8 * n_total) / n_total)
    assert report.density == pytest.approx(1 - report.sparsity)
    assert report.paths_connected is True and not report.has_collapse and report.collapsed == []
    assert [layer.name for layer in report.layers.layers] == NESTED_NAMES
    for layer, (module, _) in zip(report.layers.layers, targets, strict=True):
        assert layer.shape == tuple(module.weight.shape)
        assert layer.numel == module.weight.numel()
        assert layer.kept == int(module.weight_mask.sum())
        assert layer.density == pytest.approx(layer.kept / layer.numel)
    assert report.layers.numel == n_total
    assert report.layers.kept == n_total - round(0.8 * n_total)
    text = str(report)
    for name in NESTED_NAMES:
        assert name in text
    assert "synflow" in text
    encoded = json.dumps(report.to_dict())
    decoded = json.loads(encoded)
    assert decoded["method"] == "synflow" and decoded["rounds"] == 4
    assert decoded["sparsity"] == pytest.approx(report.sparsity)
    assert [layer["name"] for layer in decoded["layers"]["layers"]] == NESTED_NAMES


@pytest.mark.parametrize("method", ["random", "magnitude", "snip", "grasp"])
def test_prune_report_json_for_other_methods(method):
    model = nested_model()
    x, y = nested_batch()
    data, options = data_for(method, x, y)
    report = tpe.global_prune(model, method, 0.5, data, **options)
    assert report.method == method
    json.dumps(report.to_dict())
    for name in NESTED_NAMES:
        assert name in str(report)


def test_sparsity_report_reads_the_masks():
    model = nested_model()
    x, y = nested_batch()
    unpruned = tpe.sparsity_report(model)
    assert unpruned.sparsity == 0.0 and [layer.name for layer in unpruned.layers] == NESTED_NAMES
    tpe.global_prune(model, "snip", 0.7, (x, y))
    report = tpe.sparsity_report(model)
    assert isinstance(report, tpe.SparsityReport)
    total_zeros = 0
    for layer, (module, name) in zip(report.layers, tpe.prunable_parameters(model), strict=True):
        zeros = int((module.weight == 0).sum())
        assert layer.numel - layer.kept == zeros
        assert int((module.weight_orig == 0).sum()) == 0  # the parameters stay dense
        total_zeros += zeros
    assert report.numel - report.kept == total_zeros
    assert report.sparsity == pytest.approx(total_zeros / report.numel)
    json.dumps(report.to_dict())
    for name in NESTED_NAMES:
        assert name in str(report)


def test_sparsity_report_counts_masks_not_zero_valued_weights():
    model = nested_model()
    with torch.no_grad():
        model.head.out.weight[0].zero_()  # zeros that are not pruned
    prune.random_unstructured(model.head.fc, "weight", amount=0.5)
    report = {layer.name: layer for layer in tpe.sparsity_report(model).layers}
    assert report["head.out.weight"].kept == model.head.out.weight.numel()
    assert report["head.fc.weight"].kept == int(model.head.fc.weight_mask.sum())


def test_sparsity_report_includes_other_pruned_tensors():
    model = nested_model()
    prune.l1_unstructured(model.head.fc, "bias", amount=2)
    report = {layer.name: layer for layer in tpe.sparsity_report(model).layers}
    assert report["head.fc.bias"].kept == 4


# --------------------------------------------------------------------------- layer collapse
def collapsing_model() -> nn.Sequential:
    """Magnitude at sparsity 16/24 prunes every weight of the first layer (its weights are tiny)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.ReLU(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[0].weight.mul_(1e-3)
        model[2].weight.add_(torch.sign(model[2].weight))
    return model


def test_layer_collapse_is_flagged_and_warned():
    model = collapsing_model()
    with pytest.warns(UserWarning, match="0.weight") as record:
        report = tpe.global_prune(model, "magnitude", 16 / 24)
    assert record[0].filename == __file__  # the warning points at the caller
    assert report.collapsed == ["0.weight"]
    assert report.has_collapse
    assert report.to_dict()["layers"]["empty"] == ["0.weight"] and report.to_dict()["collapsed"] == ["0.weight"]
    assert "0.weight" in str(report).split("\n", 1)[1]
    assert int(model[0].weight_mask.sum()) == 0  # "warn" still prunes


def test_layer_collapse_warns_in_the_drop_in_path():
    model = collapsing_model()
    with pytest.warns(UserWarning, match="0.weight"):
        prune.global_unstructured(tpe.prunable_parameters(model), pruning_method=tpe.Magnitude, amount=16,
                                  model=model)
    assert int(model[0].weight_mask.sum()) == 0


def test_on_collapse_ignore_silences_the_warning_but_the_report_still_flags_it():
    model = collapsing_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = tpe.global_prune(model, "magnitude", 16 / 24, on_collapse="ignore")
        other = collapsing_model()
        prune.global_unstructured(tpe.prunable_parameters(other), pruning_method=tpe.Magnitude, amount=16,
                                  model=other, on_collapse="ignore")
    assert report.collapsed == ["0.weight"] and report.has_collapse


def test_no_warning_without_collapse():
    model = collapsing_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = tpe.global_prune(model, "magnitude", 15 / 24)
    assert report.collapsed == [] and not report.has_collapse


def test_a_cut_path_without_an_empty_layer_is_flagged():
    """Hidden unit 0 has no way out and hidden unit 1 no way in: no layer is empty, yet no path survives."""
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[10.0, 10.0], [0.01, 0.02]]))
        model[2].weight.copy_(torch.tensor([[0.03, 10.0]]))
    with pytest.warns(UserWarning):
        report = tpe.global_prune(model, "magnitude", 0.5, input_shape=(2,))
    assert report.collapsed == []
    assert report.paths_connected is False and report.has_collapse
    assert report.to_dict()["paths_connected"] is False


def test_a_cut_path_is_flagged_when_the_input_shape_comes_from_the_data():
    """baselines.md: the report flags any cut input-output path; the data tells the shape of one example."""
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[10.0, 10.0], [0.01, 0.02]]))
        model[2].weight.copy_(torch.tensor([[0.03, 10.0]]))
    x, y = torch.randn(4, 2), torch.zeros(4, dtype=torch.long)
    with pytest.warns(UserWarning):
        report = tpe.global_prune(model, "magnitude", 0.5, (x, y))
    assert report.paths_connected is False and report.has_collapse


def test_a_surviving_path_is_reported_connected():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[10.0, 10.0], [0.01, 0.02]]))
        model[2].weight.copy_(torch.tensor([[10.0, 0.03]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = tpe.global_prune(model, "magnitude", 0.5, input_shape=(2,))
    assert report.paths_connected is True and not report.has_collapse


# --------------------------------------------------------------------------- data formats, biases, utilities
def test_data_may_be_a_batch_a_list_of_batches_or_a_dataloader():
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    loader = tpe.compute_scores(model, "snip", DataLoader(TensorDataset(x, y), batch_size=4))
    listed = tpe.compute_scores(model, "snip", [(x[:4], y[:4]), [x[4:], y[4:]]])
    assert all(torch.equal(loader[k], listed[k]) for k in loader)
    # SNIP sums the gradients over batches before the absolute value
    weights = [model[0].weight, model[2].weight]
    total = [torch.zeros_like(w) for w in weights]
    for xb, yb in ((x[:4], y[:4]), (x[4:], y[4:])):
        for acc, grad in zip(total, torch.autograd.grad(torch.nn.functional.cross_entropy(model(xb), yb), weights)):
            acc += grad
    for (name, score), w, g in zip(loader.items(), weights, total, strict=True):
        torch.testing.assert_close(score, (w * g).abs().detach(), rtol=1e-5, atol=1e-7, msg=name)
    single = tpe.compute_scores(model, "snip", (x, y))  # one batch of 8: a different (mean) loss
    assert set(single) == set(loader)


def test_biases_can_be_targets():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    targets = tpe.prunable_parameters(model, include_bias=True)
    assert list(tpe.compute_scores(model, "snip", (x, y), targets=targets)) == ["0.weight", "0.bias", "2.weight",
                                                                                "2.bias"]
    report = tpe.global_prune(model, "snip", 0.5, (x, y), targets=targets)
    n_total = sum(getattr(m, n).numel() for m, n in targets)
    assert report.layers.numel == n_total
    assert sum(int((getattr(m, n) == 0).sum()) for m, n in targets) == round(0.5 * n_total)
    assert hasattr(model[0], "bias_mask")


def test_load_pruned_state_dict_into_a_differently_pruned_model():
    def make() -> nn.Module:
        return nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))

    torch.manual_seed(0)
    source, target = make(), make()
    tpe.global_prune(source, "random", 0.6, seed=1)
    tpe.global_prune(target, "random", 0.3, seed=2)
    tpe.load_pruned_state_dict(target, source.state_dict())
    x = torch.randn(4, 5)
    for i in (0, 2):
        assert torch.equal(target[i].weight_mask, source[i].weight_mask)
        assert torch.equal(target[i].weight, source[i].weight)
    assert torch.equal(target(x), source(x))
    assert tpe.sparsity_report(target).sparsity == pytest.approx(tpe.sparsity_report(source).sparsity)


def test_make_permanent_removes_every_mask_and_is_a_no_op_when_unpruned():
    model = nested_model()
    assert tpe.make_permanent(model) is model and not prune.is_pruned(model)
    prune.l1_unstructured(model.head.fc, "bias", amount=2)
    tpe.global_prune(model, "magnitude", 0.5)
    expected = {name: getattr(m, "weight").detach().clone() for name, m in
                (("features.conv1", model.features.conv1), ("head.out", model.head.out))}
    tpe.make_permanent(model)
    assert not prune.is_pruned(model)
    assert not any(name.endswith(("_orig", "_mask")) for name in model.state_dict())
    assert torch.equal(model.features.conv1.weight, expected["features.conv1"])
    assert torch.equal(model.head.out.weight, expected["head.out"])
    assert int((model.head.fc.bias == 0).sum()) == 2


@pytest.mark.parametrize("method", ["iter_snip", "snip"])
def test_a_one_shot_iterator_of_batches_serves_every_round(method):
    """api.md §2: data is "an iterable of batches"; a generator is one, and multi-round methods re-read it."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    masks = []
    for data in (batches, (b for b in batches)):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
        tpe.global_prune(model, method, 0.5, data, rounds=3, progress=False)
        masks.append([model[0].weight_mask, model[2].weight_mask])
    for a, b in zip(*masks, strict=True):
        assert torch.equal(a, b)
