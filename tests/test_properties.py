"""Property-based tests of the pruning contract (api.md §2-§4, baselines.md "The pruning loop").

Random small models (convolutional stacks with optional BatchNorm, or plain MLPs; random
widths, kernel sizes, biases, optionally already pruned by ``torch.nn.utils.prune``), random
amounts, seeds and rounds, for the methods random, magnitude, snip, iter_snip, grasp and synflow.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

import torch_prune_ext as tpe
import torch_prune_ext.core.scoring as scoring_module

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    print_blob=True)

#: Methods exercised by the properties. SNIP, IterSNIP and GraSP use labels; SynFlow is data-free.
METHOD_NAMES = ["random", "magnitude", "snip", "iter_snip", "grasp", "synflow"]


# --------------------------------------------------------------------------- models
@dataclass(frozen=True)
class Spec:
    """A small random architecture, its initialisation seed and its starting pruning state."""

    kind: str  # "conv" or "mlp"
    in_channels: int  # conv only
    size: int  # conv: H = W; mlp: number of input features
    convs: tuple[tuple[int, int, bool, bool], ...]  # (out channels, kernel, bias, batchnorm)
    hidden: tuple[tuple[int, bool], ...]  # (width, bias) of the hidden Linear layers
    classes: int
    last_bias: bool
    dropout: bool
    init_seed: int
    batch: int
    prepruned: tuple[float, ...]  # random_unstructured amount per target, 0 = left unpruned
    train_mode: bool

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.in_channels, self.size, self.size) if self.kind == "conv" else (self.size,)


@st.composite
def specs(draw: st.DrawFn, allow_prepruned: bool = True, allow_dropout: bool = False) -> Spec:
    kind = draw(st.sampled_from(["conv", "mlp"]))
    convs: list[tuple[int, int, bool, bool]] = []
    if kind == "conv":
        in_channels = draw(st.integers(1, 3))
        size = draw(st.integers(3, 6))
        spatial = size
        for _ in range(draw(st.integers(1, 2))):
            kernel = draw(st.integers(1, min(3, spatial)))
            convs.append((draw(st.integers(2, 8)), kernel, draw(st.booleans()), draw(st.booleans())))
            spatial -= kernel - 1
        n_hidden = draw(st.integers(0, 1))  # then 1-2 Linear layers in all
    else:
        in_channels, size = 0, draw(st.integers(2, 8))
        n_hidden = draw(st.integers(0, 2))
    hidden = tuple((draw(st.integers(2, 8)), draw(st.booleans())) for _ in range(n_hidden))
    n_targets = len(convs) + len(hidden) + 1
    if allow_prepruned and draw(st.booleans()):
        prepruned = tuple(draw(st.sampled_from([0.0, 0.0, 0.25, 0.5])) for _ in range(n_targets))
    else:
        prepruned = (0.0,) * n_targets
    return Spec(
        kind=kind, in_channels=in_channels, size=size, convs=tuple(convs), hidden=hidden,
        classes=draw(st.integers(2, 4)), last_bias=draw(st.booleans()),
        dropout=allow_dropout and draw(st.booleans()), init_seed=draw(st.integers(0, 2**16)),
        batch=draw(st.integers(2, 6)), prepruned=prepruned, train_mode=draw(st.booleans()),
    )


def build(spec: Spec, init_seed: int | None = None, prepruned: bool = True) -> nn.Sequential:
    """The model of ``spec``; a different ``init_seed`` gives other weights of the same architecture."""
    torch.manual_seed(spec.init_seed if init_seed is None else init_seed)
    layers: list[nn.Module] = []
    if spec.kind == "conv":
        channels, spatial = spec.in_channels, spec.size
        for width, kernel, bias, batchnorm in spec.convs:
            layers.append(nn.Conv2d(channels, width, kernel, bias=bias))
            if batchnorm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU())
            if spec.dropout:
                layers.append(nn.Dropout2d(0.5))
            channels, spatial = width, spatial - kernel + 1
        layers.append(nn.Flatten())
        features = channels * spatial * spatial
    else:
        features = spec.size
    for width, bias in spec.hidden:
        layers += [nn.Linear(features, width, bias=bias), nn.ReLU()]
        if spec.dropout:
            layers.append(nn.Dropout(0.5))
        features = width
    layers.append(nn.Linear(features, spec.classes, bias=spec.last_bias))
    model = nn.Sequential(*layers)
    if prepruned:
        for (module, name), amount in zip(tpe.prunable_parameters(model), spec.prepruned, strict=True):
            if amount > 0:
                prune.random_unstructured(module, name, amount=amount)
    model.train(spec.train_mode)
    return model


def batch_of(spec: Spec) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(spec.init_seed + 1)
    x = torch.randn((spec.batch, *spec.input_shape), generator=g)
    y = torch.randint(0, spec.classes, (spec.batch,), generator=g)
    return x, y


def call_args(method: str, spec: Spec, x: torch.Tensor, y: torch.Tensor, rounds: int = 1,
              shape_only: bool = False) -> tuple[object, dict]:
    """(data, options) for ``method``; SynFlow optionally gets only ``input_shape``."""
    options: dict = {"progress": False, "on_collapse": "ignore", "rounds": rounds}
    if method == "synflow" and shape_only:
        options["input_shape"] = spec.input_shape
        return None, options
    return (x, y), options


# --------------------------------------------------------------------------- helpers
def masks_of(targets: list[tuple[nn.Module, str]]) -> list[torch.Tensor]:
    """The current 0/1 mask of every target (ones for a tensor not pruned)."""
    out = []
    for module, name in targets:
        mask = getattr(module, name + "_mask", None)
        out.append(mask.detach().clone() if mask is not None else torch.ones_like(getattr(module, name)).detach())
    return out


def zeros(masks: list[torch.Tensor]) -> int:
    return sum(int((m == 0).sum()) for m in masks)


def numel(targets: list[tuple[nn.Module, str]]) -> int:
    return sum(getattr(m, n).numel() for m, n in targets)


def reachable_sparsity(model: nn.Module, u: float) -> float:
    """A sparsity at least the model's current one (global_prune never revives entries)."""
    targets = tpe.prunable_parameters(model)
    current = zeros(masks_of(targets)) / numel(targets)
    return min(1.0, current + (1.0 - current) * u)


def prune_drop_in(model: nn.Module, method: str, amount: float | int, data: object, options: dict,
                  targets: list[tuple[nn.Module, str]] | None = None) -> None:
    params = tpe.prunable_parameters(model) if targets is None else targets
    extra = {} if targets is None else {"targets": targets}
    prune.global_unstructured(params, pruning_method=tpe.METHODS[method], amount=amount, model=model,
                              data=data, **extra, **options)


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes of a tensor, so that NaN == NaN and -0.0 != 0.0."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape and a[key].device == b[key].device, key
        assert torch.equal(bits(a[key]), bits(b[key])), f"{key} changed"


def eval_outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    mode = model.training
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train(mode)
    return out


# --------------------------------------------------------------------------- properties
@SETTINGS
@given(spec=specs(), method=st.sampled_from(METHOD_NAMES), u=st.floats(0, 1), rounds=st.integers(1, 3),
       drop_in=st.booleans(), shape_only=st.booleans())
def test_masks_are_binary_with_the_weights_shape_dtype_and_device(spec, method, u, rounds, drop_in, shape_only):
    model = build(spec)
    x, y = batch_of(spec)
    data, options = call_args(method, spec, x, y, rounds, shape_only)
    if drop_in:
        prune_drop_in(model, method, u, data, options)
    else:
        tpe.global_prune(model, method, reachable_sparsity(model, u), data, **options)
    for module, name in tpe.prunable_parameters(model):
        mask = getattr(module, name + "_mask")
        orig = getattr(module, name + "_orig")
        assert mask.shape == orig.shape
        assert mask.dtype == orig.dtype
        assert mask.device == orig.device
        assert bool(((mask == 0) | (mask == 1)).all())
        assert torch.equal(getattr(module, name), orig * mask)


@SETTINGS
@given(spec=specs(), method=st.sampled_from(METHOD_NAMES), rounds=st.integers(1, 3), as_int=st.booleans(),
       draw=st.data())
def test_drop_in_prunes_exactly_torchs_count_of_the_remaining_entries(spec, method, rounds, as_int, draw):
    model = build(spec)
    x, y = batch_of(spec)
    targets = tpe.prunable_parameters(model)
    before = zeros(masks_of(targets))
    remaining = numel(targets) - before
    if as_int:
        amount = draw.draw(st.integers(0, remaining), label="amount")
        expected = amount
    else:
        amount = draw.draw(st.floats(0, 1), label="amount")
        expected = round(amount * remaining)  # what torch.nn.utils.prune prunes
    data, options = call_args(method, spec, x, y, rounds)
    prune_drop_in(model, method, amount, data, options)
    assert zeros(masks_of(targets)) - before == expected


@SETTINGS
@given(spec=specs(), method=st.sampled_from(METHOD_NAMES), u=st.floats(0, 1), rounds=st.integers(1, 3),
       schedule=st.sampled_from(["exponential", "linear"]))
def test_global_prune_reaches_exactly_round_sparsity_times_total(spec, method, u, rounds, schedule):
    model = build(spec)
    x, y = batch_of(spec)
    sparsity = reachable_sparsity(model, u)
    targets = tpe.prunable_parameters(model)
    data, options = call_args(method, spec, x, y, rounds)
    report = tpe.global_prune(model, method, sparsity, data, schedule=schedule, **options)
    n_total = numel(targets)
    assert zeros(masks_of(targets)) == round(sparsity * n_total)
    assert report.layers.numel - report.layers.kept == round(sparsity * n_total)


@SETTINGS
@given(spec=specs(), method=st.sampled_from(METHOD_NAMES), u1=st.floats(0, 1), u2=st.floats(0, 1),
       rounds=st.integers(2, 4), drop_in=st.booleans())
def test_pruned_entries_stay_pruned_across_rounds_and_calls(spec, method, u1, u2, rounds, drop_in):
    model = build(spec)
    x, y = batch_of(spec)
    targets = tpe.prunable_parameters(model)
    data, options = call_args(method, spec, x, y, rounds)
    seen: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
    real = scoring_module.rank_and_mask

    def recording(targets_, scores, masks, n_pruned, **options):
        new = real(targets_, scores, masks, n_pruned, **options)
        seen.append(([m.clone() for m in masks], [m.clone() for m in new]))
        return new

    history = [masks_of(targets)]
    with mock.patch.object(scoring_module, "rank_and_mask", recording):
        for u in (u1, u2):
            if drop_in:
                prune_drop_in(model, method, u, data, options)
            else:
                tpe.global_prune(model, method, reachable_sparsity(model, u), data, **options)
            history.append(masks_of(targets))
    # across calls: a zero never becomes a one again
    for old, new in itertools.pairwise(history):
        for o, n in zip(old, new, strict=True):
            assert bool((n <= o).all())
    # across rounds inside each call: every round's output is a subset of its input
    for before, after in seen:
        for b, a in zip(before, after, strict=True):
            assert bool((a <= b).all())
    # consecutive rounds chain: round r starts from round r-1's masks (or from the model's masks)
    starts = [s[0] for s in seen]
    ends = [s[1] for s in seen]
    for i in range(1, len(seen)):
        chained = all(torch.equal(a, b) for a, b in zip(starts[i], ends[i - 1]))
        from_model = any(all(torch.equal(a, b) for a, b in zip(starts[i], h)) for h in history)
        assert chained or from_model


def hook_counts(model: nn.Module) -> list[tuple[int, ...]]:
    return [(len(m._forward_pre_hooks), len(m._forward_hooks), len(m._backward_hooks),
             len(m._backward_pre_hooks)) for m in model.modules()]


@SETTINGS
@given(spec=specs(allow_dropout=True), method=st.sampled_from(METHOD_NAMES), frozen=st.sets(st.integers(0, 20)),
       extra_hook=st.booleans(), seed=st.integers(0, 1000), shape_only=st.booleans())
def test_compute_scores_leaves_the_model_and_the_global_rng_untouched(spec, method, frozen, extra_hook, seed,
                                                                      shape_only):
    model = build(spec)
    x, y = batch_of(spec)
    for i, p in enumerate(model.parameters()):
        if i in frozen:
            p.requires_grad_(False)
    if extra_hook:
        model[0].register_forward_hook(lambda *args: None)
        model[-1].register_forward_pre_hook(lambda *args: None)
    if spec.kind == "conv":  # BN running statistics that are not the defaults
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-1, 1)
                    m.running_var.uniform_(0.5, 2)
                    m.num_batches_tracked.fill_(7)
    torch.manual_seed(seed)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    params = [(n, id(p), p.requires_grad, p.grad) for n, p in model.named_parameters()]
    buffers = [(n, id(b)) for n, b in model.named_buffers()]
    modes = [m.training for m in model.modules()]
    hooks = hook_counts(model)
    weights = {id(m): m.__dict__.get("weight") for m in model.modules()}
    rng = torch.get_rng_state()

    data, options = call_args(method, spec, x, y, 1, shape_only)
    del options["on_collapse"], options["progress"]
    scores = tpe.compute_scores(model, method, data, seed=seed, **options)

    assert torch.equal(torch.get_rng_state(), rng)
    assert_bit_identical(state, {k: v for k, v in model.state_dict().items()})
    assert [(n, id(p), p.requires_grad, p.grad) for n, p in model.named_parameters()] == params
    assert [(n, id(b)) for n, b in model.named_buffers()] == buffers
    assert [m.training for m in model.modules()] == modes
    assert hook_counts(model) == hooks
    for m in model.modules():  # the pruning hook's cached effective weight is the same object
        assert m.__dict__.get("weight") is weights[id(m)]
    assert len(scores) == len(tpe.prunable_parameters(model))


@SETTINGS
@given(spec=specs(), method=st.sampled_from(METHOD_NAMES), u=st.floats(0, 1), rounds=st.integers(1, 3),
       seed=st.integers(0, 2**31 - 1), other_global_seed=st.integers(0, 1000), drop_in=st.booleans())
def test_same_seed_gives_the_same_mask(spec, method, u, rounds, seed, other_global_seed, drop_in):
    x, y = batch_of(spec)
    results = []
    for global_seed in (None, other_global_seed):
        model = build(spec)
        if global_seed is not None:
            torch.manual_seed(global_seed)  # the global RNG must not matter, only seed=
        data, options = call_args(method, spec, x, y, rounds)
        if drop_in:
            prune_drop_in(model, method, u, data, {**options, "seed": seed})
        else:
            tpe.global_prune(model, method, reachable_sparsity(model, u), data, seed=seed, **options)
        results.append(masks_of(tpe.prunable_parameters(model)))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


_TWO_LAYER_MLP = Spec(kind="mlp", in_channels=0, size=4, convs=(), hidden=((4, True),), classes=3, last_bias=True,
                     dropout=False, init_seed=0, batch=3, prepruned=(0.0, 0.0), train_mode=True)


@SETTINGS
@given(spec=specs(), method=st.sampled_from(METHOD_NAMES), u=st.floats(0, 1), rounds=st.integers(1, 3),
       order=st.permutations(range(6)), drop_in=st.booleans())
@example(spec=_TWO_LAYER_MLP, method="random", u=0.5, rounds=1, order=(1, 0, 2, 3, 4, 5), drop_in=False)
@example(spec=_TWO_LAYER_MLP, method="random", u=0.5, rounds=1, order=(1, 0, 2, 3, 4, 5), drop_in=True)
def test_permuting_the_target_list_gives_the_same_masks(spec, method, u, rounds, order, drop_in):
    x, y = batch_of(spec)
    reference, permuted = build(spec), build(spec)
    targets = tpe.prunable_parameters(permuted)
    assert len(targets) <= len(order)
    shuffled = [targets[i] for i in order if i < len(targets)]
    data, options = call_args(method, spec, x, y, rounds)
    if drop_in:
        prune_drop_in(reference, method, u, data, options)
        prune_drop_in(permuted, method, u, data, options, targets=shuffled)
    else:
        sparsity = reachable_sparsity(reference, u)
        tpe.global_prune(reference, method, sparsity, data, **options)
        tpe.global_prune(permuted, method, sparsity, data, targets=shuffled, **options)
    for a, b in zip(masks_of(tpe.prunable_parameters(reference)), masks_of(targets), strict=True):
        assert torch.equal(a, b)


@SETTINGS
@given(spec=specs(), method=st.sampled_from(METHOD_NAMES), u=st.floats(0, 1), use_remove=st.booleans())
def test_making_pruning_permanent_keeps_the_outputs(spec, method, u, use_remove):
    model = build(spec)
    x, y = batch_of(spec)
    data, options = call_args(method, spec, x, y)
    tpe.global_prune(model, method, reachable_sparsity(model, u), data, **options)
    pruned_out = eval_outputs(model, x)
    effective = [getattr(m, n).detach().clone() for m, n in tpe.prunable_parameters(model)]
    if use_remove:
        for module, name in tpe.prunable_parameters(model):
            prune.remove(module, name)
    else:
        assert tpe.make_permanent(model) is model
    assert not prune.is_pruned(model)
    assert torch.equal(eval_outputs(model, x), pruned_out)
    for w, (m, n) in zip(effective, tpe.prunable_parameters(model), strict=True):
        assert isinstance(getattr(m, n), nn.Parameter)
        assert torch.equal(getattr(m, n), w)


@SETTINGS
@given(spec=specs(), method=st.sampled_from(METHOD_NAMES), u=st.floats(0, 1), other_seed=st.integers(0, 2**16))
def test_pruned_state_dict_round_trips_into_a_fresh_model(spec, method, u, other_seed):
    model = build(spec)
    x, y = batch_of(spec)
    data, options = call_args(method, spec, x, y)
    tpe.global_prune(model, method, reachable_sparsity(model, u), data, **options)
    state = copy.deepcopy(model.state_dict())

    fresh = build(spec, init_seed=other_seed + spec.init_seed + 1, prepruned=False)
    fresh.train(model.training)
    assert tpe.load_pruned_state_dict(fresh, state) is fresh
    assert prune.is_pruned(fresh)
    for a, b in zip(masks_of(tpe.prunable_parameters(model)), masks_of(tpe.prunable_parameters(fresh)), strict=True):
        assert torch.equal(a, b)
    assert_bit_identical(model.state_dict(), fresh.state_dict())
    assert torch.equal(eval_outputs(fresh, x), eval_outputs(model, x))
    for (m1, n1), (m2, n2) in zip(tpe.prunable_parameters(model), tpe.prunable_parameters(fresh), strict=True):
        assert torch.equal(getattr(m1, n1), getattr(m2, n2))


@SETTINGS
@given(spec=specs(), method=st.sampled_from(METHOD_NAMES), u=st.floats(0, 1), drop_in=st.booleans())
def test_masked_weights_get_zero_gradient(spec, method, u, drop_in):
    model = build(spec)
    x, y = batch_of(spec)
    data, options = call_args(method, spec, x, y)
    if drop_in:
        prune_drop_in(model, method, u, data, options)
    else:
        tpe.global_prune(model, method, reachable_sparsity(model, u), data, **options)
    model.train()
    F.cross_entropy(model(x), y).backward()
    for module, name in tpe.prunable_parameters(model):
        grad = getattr(module, name + "_orig").grad
        mask = getattr(module, name + "_mask")
        assert grad is not None
        assert bool((grad[mask == 0] == 0).all())


# --------------------------------------------------------------------------- non-hypothesis
def _mlp(seed: int = 0, widths: tuple[int, ...] = (6, 5, 4, 3)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def _constant_mlp() -> nn.Sequential:
    model = _mlp()
    with torch.no_grad():
        for module, name in tpe.prunable_parameters(model):
            getattr(module, name).fill_(0.5)
    return model


@pytest.mark.parametrize("drop_in", [False, True])
def test_ties_are_broken_deterministically_and_independently_of_target_order(drop_in):
    masks = []
    for order in ([0, 1, 2], [0, 1, 2], [2, 0, 1], [1, 2, 0]):
        model = _constant_mlp()
        targets = tpe.prunable_parameters(model)
        listed = [targets[i] for i in order]
        n_total = numel(targets)
        if drop_in:
            prune.global_unstructured(listed, pruning_method=tpe.Magnitude, amount=0.37, model=model, targets=listed)
            assert zeros(masks_of(targets)) == round(0.37 * n_total)
        else:
            tpe.global_prune(model, "magnitude", 0.37, targets=listed)
            assert zeros(masks_of(targets)) == round(0.37 * n_total)
        masks.append(masks_of(targets))
    for other in masks[1:]:
        for a, b in zip(masks[0], other, strict=True):
            assert torch.equal(a, b)
    # a tie is not resolved by over-pruning: some entries with the same score are kept
    flat = torch.cat([m.reshape(-1) for m in masks[0]])
    assert 0 < int(flat.sum()) < flat.numel()


def test_ties_with_a_partly_pruned_model_prune_only_alive_entries():
    model = _constant_mlp()
    prune.random_unstructured(model[0], "weight", amount=0.5)
    targets = tpe.prunable_parameters(model)
    before = masks_of(targets)
    remaining = numel(targets) - zeros(before)
    prune.global_unstructured(targets, pruning_method=tpe.Magnitude, amount=0.25, model=model)
    after = masks_of(targets)
    assert zeros(after) - zeros(before) == round(0.25 * remaining)
    for b, a in zip(before, after, strict=True):
        assert bool((a <= b).all())


def test_grasp_prunes_the_lowest_signed_scores():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    x, y = torch.randn(16, 6), torch.randint(0, 4, (16,))
    scores = tpe.compute_scores(model, "grasp", (x, y))
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    # the test only discriminates if signed and absolute orders differ
    assert bool((flat < 0).any()) and bool((flat > 0).any())
    tpe.global_prune(model, "grasp", 0.5, (x, y), on_collapse="ignore")
    mask = torch.cat([m.reshape(-1) for m in masks_of(tpe.prunable_parameters(model))])
    assert int((mask == 0).sum()) == round(0.5 * flat.numel())
    pruned, kept = flat[mask == 0], flat[mask == 1]
    assert float(pruned.max()) <= float(kept.min())
    # with absolute values, a different set would be pruned
    assert float(pruned.abs().max()) > float(kept.abs().min())


def test_grasp_drop_in_prunes_the_lowest_signed_scores():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    x, y = torch.randn(12, 5), torch.randint(0, 3, (12,))
    flat = torch.cat([s.reshape(-1) for s in tpe.compute_scores(model, "grasp", (x, y)).values()])
    prune.global_unstructured(tpe.prunable_parameters(model), pruning_method=tpe.GraSP, amount=0.3, model=model,
                              data=(x, y), on_collapse="ignore")
    mask = torch.cat([m.reshape(-1) for m in masks_of(tpe.prunable_parameters(model))])
    assert int((mask == 0).sum()) == round(0.3 * flat.numel())
    assert float(flat[mask == 0].max()) <= float(flat[mask == 1].min())


@pytest.mark.parametrize("method", ["random", "magnitude", "snip", "synflow", "grasp"])
@pytest.mark.parametrize("already_pruned", [False, True])
@pytest.mark.parametrize("amount", [0.4, 3])
def test_apply_prunes_exactly_that_tensor(method, already_pruned, amount):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 5),
                          nn.ReLU(), nn.Linear(5, 3))
    x, y = torch.randn(4, 2, 4, 4), torch.randint(0, 3, (4,))
    target = model[4]
    if already_pruned:
        prune.random_unstructured(target, "weight", amount=0.5)
    others = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("4.")}
    before = masks_of([(target, "weight")])[0]
    alive = int(before.sum())
    hook = tpe.METHODS[method].apply(target, "weight", amount=amount, model=model, data=(x, y), progress=False,
                                     on_collapse="ignore")
    assert isinstance(hook, prune.BasePruningMethod)
    after = target.weight_mask
    expected = amount if isinstance(amount, int) else round(amount * alive)
    assert int((after == 0).sum()) - int((before == 0).sum()) == expected
    assert bool((after <= before).all())
    assert torch.equal(target.weight, target.weight_orig * target.weight_mask)
    # nothing else was pruned nor changed
    assert not prune.is_pruned(model[0]) and not prune.is_pruned(model[6])
    assert not hasattr(target, "bias_mask")
    assert_bit_identical(others, {k: v for k, v in model.state_dict().items() if not k.startswith("4.")})


def test_apply_follows_the_methods_scores():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    scores = tpe.compute_scores(model, "magnitude")["2.weight"]
    tpe.Magnitude.apply(model[2], "weight", amount=5, model=model)
    mask = model[2].weight_mask
    assert float(scores[mask == 0].max()) <= float(scores[mask == 1].min())


@pytest.mark.parametrize("amount", [0.9, 0.37, 101])
def test_many_rounds_inside_one_global_unstructured_call_end_at_torchs_count(amount):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(36, 6),
                          nn.ReLU(), nn.Linear(6, 3))
    prune.random_unstructured(model[4], "weight", amount=0.1)
    targets = tpe.prunable_parameters(model)
    before = zeros(masks_of(targets))
    remaining = numel(targets) - before
    counts: list[int] = []
    real = scoring_module.rank_and_mask

    def recording(targets_, scores, masks, n_pruned, **options):
        counts.append(n_pruned)
        return real(targets_, scores, masks, n_pruned, **options)

    with mock.patch.object(scoring_module, "rank_and_mask", recording):
        prune.global_unstructured(targets, pruning_method=tpe.SynFlow, amount=amount, model=model,
                                  input_shape=(1, 5, 5), rounds=5, progress=False)
    expected = amount if isinstance(amount, int) else round(amount * remaining)
    assert zeros(masks_of(targets)) - before == expected
    assert len(counts) == 5  # five scoring rounds actually ran
    assert counts == sorted(counts) and len(set(counts)) == 5
    assert counts[-1] == before + expected


@pytest.mark.parametrize("method", ["snip", "iter_snip", "grasp", "random", "synflow"])
@pytest.mark.parametrize("drop_in", [False, True])
def test_global_rng_is_restored_even_when_dropout_draws_from_it(method, drop_in):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3)).train()
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    if drop_in:
        prune.global_unstructured(tpe.prunable_parameters(model), pruning_method=tpe.METHODS[method], amount=0.5,
                                  model=model, data=(x, y), rounds=2, progress=False)
    else:
        tpe.compute_scores(model, method, (x, y))
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(m.training for m in model.modules())


def test_scoring_randomness_comes_from_seed_not_from_the_global_rng():
    """api.md §2: "Randomness comes from seed= (int) or generator=" - also for Dropout in train mode."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    torch.manual_seed(1)
    a = tpe.compute_scores(model, "snip", (x, y), seed=0)
    torch.manual_seed(2)
    b = tpe.compute_scores(model, "snip", (x, y), seed=0)
    for key in a:
        assert torch.equal(a[key], b[key]), key
