"""NTK-SAP against an independent, slow oracle, and its contract.

The oracle (:func:`oracle_scores`) is written the obvious way, one draw at a time: two
explicit copies of a fresh model (``copy.deepcopy``), the drawn weights written into them,
masks applied as ``weight * mask`` through ``torch.nn.utils.parametrize`` with ONE shared
leaf mask per target, BatchNorm statistics captured by hand with forward hooks on the
unperturbed copy in train mode (mean, unbiased variance) and written into both copies'
running buffers, both copies then run in eval mode, ``J = sum (f0 - f1)^2`` and
``.backward()``. It shares only the random draws with the library
(:func:`torch_prune_ext.methods.ntksap.draw_samples`, the documented draw order).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize, prune

import torch_prune_ext as tpe
from torch_prune_ext import models
from torch_prune_ext.core.scoring import PruningOptions
from torch_prune_ext.errors import InvalidOptionError, MissingDataError
from torch_prune_ext.methods.ntksap import (
    NTKSAP,
    BatchNormStatistics,
    Draw,
    NTKSAPConfig,
    NTKSAPObjective,
    draw_samples,
    kaiming_normal_init,
    redrawn_weight_keys,
)

CONV_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


# ----------------------------------------------------------------------------- models
class SmallCNN(nn.Module):
    """Conv-BN-ReLU twice (functional and in-place ReLU), a residual add, pooling, a linear head."""

    def __init__(self, width: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(width)
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.act(self.bn2(self.conv2(x)) + x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def small_mlp(batch_norm: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(12, 10)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(10))
    layers += [nn.ReLU(inplace=True), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 4)]
    return nn.Sequential(*layers)


def group_norm_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(), nn.Conv2d(4, 4, 3),
                         nn.Flatten(), nn.LayerNorm(4 * 4 * 4), nn.Linear(64, 3))


def resnet20() -> nn.Module:
    return models.resnet20()


def seeded_model(factory, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory()
        # non-trivial biases and BN affine values: biases are kept, BN affine must be ignored
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, CONV_LINEAR) and module.bias is not None:
                    module.bias.uniform_(-0.3, 0.3)
                if isinstance(module, BATCH_NORMS):
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.uniform_(-0.5, 0.5)
    return model


def random_masks(model: nn.Module, density: float, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {f"{name}.weight": (torch.rand(module.weight.shape, generator=generator) < density).float()
            for name, module in model.named_modules() if isinstance(module, CONV_LINEAR)}


def prune_with(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    for name, module in model.named_modules():
        if f"{name}.weight" in masks:
            prune.custom_from_mask(module, "weight", masks[f"{name}.weight"])
    return model


# ----------------------------------------------------------------------------- oracle
class SharedMask(nn.Module):
    """``W -> W * mask`` with ``mask`` a plain attribute: the same leaf in both copies."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.mask = mask

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def oracle_scores(model: nn.Module, masks: dict[str, torch.Tensor], draws: list[Draw], epsilon: float,
                  dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The slow per-draw NTK-SAP of the spec on two explicit copies of an UNPRUNED ``model``."""
    leaves = {name: mask.to(dtype).clone().requires_grad_(True) for name, mask in masks.items()}
    for draw in draws:
        nets = [copy.deepcopy(model).to(dtype) for _ in range(2)]
        for net in nets:
            layers = [(n, m) for n, m in net.named_modules() if isinstance(m, CONV_LINEAR)]
            targets = [(n, m) for n, m in layers if f"{n}.weight" in masks]
            with torch.no_grad():
                for (_, layer), theta in zip(layers, draw.theta, strict=True):
                    layer.weight.copy_(theta)
                if net is nets[1]:
                    for (_, layer), delta in zip(targets, draw.delta, strict=True):
                        layer.weight.add_(epsilon * delta)
                for module in net.modules():
                    if isinstance(module, BATCH_NORMS):
                        module.weight.fill_(1.0)
                        module.bias.fill_(0.0)
            for name, layer in targets:
                parametrize.register_parametrization(layer, "weight", SharedMask(leaves[f"{name}.weight"]))
        # BatchNorm statistics by hand: inputs of every BN of the unperturbed copy, train mode
        inputs: dict[str, torch.Tensor] = {}
        handles = [module.register_forward_hook(lambda mod, args, out, name=name: inputs.__setitem__(name, args[0]))
                   for name, module in nets[0].named_modules() if isinstance(module, BATCH_NORMS)]
        nets[0].train()
        with torch.no_grad():
            nets[0](draw.z)
        for handle in handles:
            handle.remove()
        for net in nets:
            for name, module in net.named_modules():
                if isinstance(module, BATCH_NORMS):
                    x = inputs[name]
                    dims = [0, *range(2, x.dim())]
                    module.running_mean = x.mean(dims).detach().clone()
                    module.running_var = x.var(dims, unbiased=True).detach().clone()
            net.eval()
        f0, f1 = nets[0](draw.z), nets[1](draw.z)
        ((f0 - f1) ** 2).sum().backward()
    return {name: (leaf.grad.abs() * (masks[name] != 0)).detach() for name, leaf in leaves.items()}


def shared_draws(model: nn.Module, seed: int, input_shape, **config) -> list[Draw]:
    problem = NTKSAP.prepare(model, None, None, PruningOptions(seed=seed, input_shape=input_shape))
    return draw_samples(problem, NTKSAPConfig(**config))


def rel_error(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> float:
    assert actual.keys() == expected.keys()
    scale = max(float(e.abs().max()) for e in expected.values())
    assert scale > 0
    return max(float((actual[k].double() - expected[k].double()).abs().max()) for k in expected) / scale


# ----------------------------------------------------------------------------- oracle tests
CASES = {
    "mlp": (lambda: small_mlp(True), (3, 2, 2), 4, 2),
    "cnn_bn": (lambda: SmallCNN(), (3, 6, 6), 3, 2),
    "group_layer_norm": (group_norm_cnn, (3, 6, 6), 2, 1),
    "resnet20": (resnet20, (3, 32, 32), 2, 1),
}


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_oracle(case: str, dtype: torch.dtype, tolerance: float) -> None:
    factory, shape, batch, repeats = CASES[case]
    model = seeded_model(factory).to(dtype)
    masks = random_masks(model, 0.7, seed=1)
    pruned = prune_with(copy.deepcopy(model), masks)
    config = dict(repeats=repeats, batch_size=batch, dtype=dtype)
    draws = shared_draws(pruned, 3, shape, **config)
    scores = tpe.compute_scores(pruned, NTKSAP, input_shape=shape, seed=3, channels_last=False, **config)
    expected = oracle_scores(model, masks, draws, 0.01, dtype)
    assert rel_error(scores, expected) < tolerance
    for name, mask in masks.items():
        assert bool((scores[name][mask == 0] == 0).all())
        assert scores[name].dtype == dtype


def test_oracle_with_data_shapes_and_unequal_batches() -> None:
    """Data: only the batch shapes are used (values ignored), unequal batches vectorise separately."""
    model = seeded_model(lambda: small_mlp(True)).double()
    masks = {name: torch.ones_like(m) for name, m in random_masks(model, 1.0, 0).items()}
    data = [(torch.randn(5, 3, 2, 2, dtype=torch.float64),), (torch.randn(3, 3, 2, 2, dtype=torch.float64),)]
    problem = NTKSAP.prepare(model, data, None, PruningOptions(seed=7))
    draws = draw_samples(problem, NTKSAPConfig(repeats=2))
    assert [tuple(d.z.shape) for d in draws] == [(5, 3, 2, 2), (3, 3, 2, 2)] * 2
    expected = oracle_scores(model, masks, draws, 0.01, torch.float64)
    for vectorize in (False, True):
        scores = tpe.compute_scores(model, NTKSAP, data, seed=7, repeats=2, vectorize=vectorize, chunk_size=3)
        assert rel_error(scores, expected) < 1e-10
    other = [(torch.full_like(x, 7.0), torch.zeros(len(x))) for (x,) in data]
    assert rel_error(tpe.compute_scores(model, NTKSAP, other, seed=7, repeats=2), expected) < 1e-10


def test_float32_vectorized_channels_last_close_to_float64() -> None:
    """The fast float32 paths (vmap, channels_last) agree with float64 to float32 accuracy."""
    model = seeded_model(SmallCNN)
    exact = tpe.compute_scores(model, NTKSAP, input_shape=(3, 6, 6), batch_size=4, repeats=2, seed=0,
                               dtype=torch.float64)
    for vectorize in (False, True):
        for channels_last in (False, True):
            fast = tpe.compute_scores(model, NTKSAP, input_shape=(3, 6, 6), batch_size=4, repeats=2, seed=0,
                                      vectorize=vectorize, channels_last=channels_last)
            assert rel_error(fast, exact) < 1e-4


# ----------------------------------------------------------------------------- batching
@pytest.mark.parametrize("factory, shape", [(small_mlp, (3, 2, 2)), (SmallCNN, (3, 5, 5))])
def test_chunked_vmapped_and_looped_agree(factory, shape) -> None:
    model = seeded_model(factory).double()
    options = dict(input_shape=shape, batch_size=3, repeats=5, seed=11)
    loop = tpe.compute_scores(model, NTKSAP, vectorize=False, **options)
    for chunk_size in (None, 1, 2, 5, 8):
        vmapped = tpe.compute_scores(model, NTKSAP, vectorize=True, chunk_size=chunk_size, **options)
        assert rel_error(vmapped, loop) < 1e-12
    again = tpe.compute_scores(model, NTKSAP, vectorize=False, **options)
    assert all(torch.equal(again[k], loop[k]) for k in loop)


def test_seed_determinism_and_generator() -> None:
    model = seeded_model(SmallCNN)
    options = dict(input_shape=(3, 5, 5), batch_size=3, repeats=1)
    a = tpe.compute_scores(model, NTKSAP, seed=1, **options)
    b = tpe.compute_scores(model, NTKSAP, seed=1, **options)
    c = tpe.compute_scores(model, NTKSAP, seed=2, **options)
    d = tpe.compute_scores(model, NTKSAP, generator=torch.Generator().manual_seed(1), **options)
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], d[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_draw_order_is_the_documented_one() -> None:
    model = seeded_model(SmallCNN)
    draws = shared_draws(model, 5, (3, 4, 4), repeats=2, batch_size=2)
    generator = torch.Generator().manual_seed(5)
    for draw in draws:
        for key, theta in zip(redrawn_weight_keys(model), draw.theta, strict=True):
            expected = nn.init.kaiming_normal_(torch.empty(dict(model.named_parameters())[key].shape),
                                               mode="fan_in", nonlinearity="relu", generator=generator)
            assert torch.equal(theta, expected)
        assert torch.equal(draw.z, torch.randn((2, 3, 4, 4), generator=generator))
        for (module, _), delta in zip(tpe.prunable_parameters(model), draw.delta, strict=True):
            assert torch.equal(delta, torch.randn(module.weight.shape, generator=generator))


def test_custom_init_is_used() -> None:
    model = seeded_model(lambda: small_mlp(False)).double()
    masks = random_masks(model, 1.0, 0)

    def ones_init(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.ones_like(t) / t.shape[1]

    draws = draw_samples(NTKSAP.prepare(model, None, None, PruningOptions(seed=0, input_shape=(12,))),
                         NTKSAPConfig(repeats=1, batch_size=3, init=ones_init))
    assert all(bool((t == 1.0 / t.shape[1]).all()) for t in draws[0].theta)
    scores = tpe.compute_scores(model, NTKSAP, input_shape=(12,), batch_size=3, repeats=1, seed=0, init=ones_init)
    assert rel_error(scores, oracle_scores(model, masks, draws, 0.01, torch.float64)) < 1e-10
    with pytest.raises(InvalidOptionError, match="init must return"):
        tpe.compute_scores(model, NTKSAP, input_shape=(12,), init=lambda t, g: torch.zeros(2))


# ----------------------------------------------------------------------------- properties
def test_invariant_to_current_weights_and_bn_state() -> None:
    model = seeded_model(SmallCNN)
    masks = random_masks(model, 0.6, 2)
    prune_with(model, masks)
    options = dict(input_shape=(3, 5, 5), batch_size=3, repeats=2, seed=4)
    before = tpe.compute_scores(model, NTKSAP, **options)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, CONV_LINEAR):
                module.weight_orig.normal_(0.0, 5.0)
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(2.0, 3.0)
                module.bias.normal_()
                module.running_mean.normal_()
                module.running_var.uniform_(3.0, 4.0)
    after = tpe.compute_scores(model, NTKSAP, **options)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_masked_entries_score_exactly_zero_and_rest_positive() -> None:
    model = seeded_model(SmallCNN)
    masks = random_masks(model, 0.5, 3)
    prune_with(model, masks)
    scores = tpe.compute_scores(model, NTKSAP, input_shape=(3, 5, 5), batch_size=3, repeats=1, seed=0)
    for name, mask in masks.items():
        assert bool((scores[name][mask == 0] == 0).all())
        assert float(scores[name][mask != 0].max()) > 0
        assert scores[name].shape == mask.shape and scores[name].is_contiguous()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.func.jvp's own torch.jit use
def test_epsilon_to_zero_j_scales_as_epsilon_squared() -> None:
    """J(eps)/eps^2 converges (to ||J_f Delta||^2 with frozen BN statistics) as eps shrinks."""
    model = seeded_model(SmallCNN).double()
    problem = NTKSAP.prepare(model, None, None, PruningOptions(seed=0, input_shape=(3, 5, 5)))
    draw = draw_samples(problem, NTKSAPConfig(repeats=1, batch_size=4))[0]
    masks = [m.double() for m in problem.masks]
    ratios = []
    with torch.no_grad():
        for epsilon in (1e-4, 1e-5, 1e-6):  # small enough that no ReLU flips: a smooth regime
            objective = NTKSAPObjective(problem, NTKSAPConfig(epsilon=epsilon))
            ratios.append(float(objective(masks, draw.theta, draw.z, draw.delta)) / epsilon**2)
    objective = NTKSAPObjective(problem, NTKSAPConfig())
    stats = objective.statistics(masks, draw.theta, draw.z)
    base = objective.base_weights(draw.theta)

    def output(weights):
        with BatchNormStatistics(stats):
            return objective.forward(draw.z, weights, masks, draw.theta)

    _, tangent = torch.func.jvp(output, (base,), (draw.delta,))
    limit = float(tangent.square().sum())
    errors = [abs(r - limit) / limit for r in ratios]
    assert errors[-1] < 1e-5
    assert 5 < errors[0] / errors[1] < 20 and 5 < errors[1] / errors[2] < 20  # first-order convergence
    assert max(ratios) / min(ratios) < 1.001  # J / eps^2 is (nearly) constant


def test_mask_gradient_matches_finite_differences_without_bn() -> None:
    """Without BatchNorm (no detached statistics) the score is |sum_d dJ_d/dm| exactly."""
    model = seeded_model(lambda: small_mlp(False)).double()
    problem = NTKSAP.prepare(model, None, None, PruningOptions(seed=0, input_shape=(12,)))
    config = NTKSAPConfig(repeats=2, batch_size=3, epsilon=0.05)
    draws = draw_samples(problem, config)
    objective = NTKSAPObjective(problem, config)
    masks = [m.double() for m in problem.masks]
    scores = tpe.compute_scores(model, NTKSAP, input_shape=(12,), seed=0, repeats=2, batch_size=3, epsilon=0.05)
    generator = torch.Generator().manual_seed(0)
    for layer, name in enumerate(scores):
        for _ in range(3):
            j = int(torch.randint(masks[layer].numel(), (1,), generator=generator))
            h = 1e-5

            def total(step: float) -> float:
                moved = [m.clone() for m in masks]
                moved[layer].view(-1)[j] += step
                return sum(float(objective(moved, d.theta, d.z, d.delta)) for d in draws)

            fd = (total(h) - total(-h)) / (2 * h)
            assert math.isclose(abs(fd), float(scores[name].view(-1)[j]), rel_tol=1e-6, abs_tol=1e-12)


def test_model_left_exactly_as_it_was() -> None:
    model = seeded_model(SmallCNN)
    prune.l1_unstructured(model.conv2, "weight", amount=0.3)
    model.train()
    model.bn2.eval()
    model.fc.bias.requires_grad_(False)
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    hooks = [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()]
    weight_attr = model.conv2.weight
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    for vectorize in (False, True):
        tpe.compute_scores(model, NTKSAP, input_shape=(3, 5, 5), batch_size=3, repeats=2, vectorize=vectorize)
    assert torch.equal(torch.get_rng_state(), rng)
    after = model.state_dict()
    assert after.keys() == state.keys()
    assert all(torch.equal(after[k], state[k]) and after[k].dtype == state[k].dtype for k in state)
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()] == hooks
    assert model.conv2.weight is weight_attr
    assert all(p.grad is None for p in model.parameters())


def test_no_data_needs_input_shape() -> None:
    model = seeded_model(lambda: small_mlp(False))
    with pytest.raises(MissingDataError, match="input_shape"):
        tpe.compute_scores(model, NTKSAP)
    scores = tpe.compute_scores(model, NTKSAP, input_shape=(12,), batch_size=2, repeats=1)
    assert set(scores) == {"1.weight", "3.weight", "5.weight"}


@pytest.mark.parametrize("options, match", [
    (dict(repeats=0), "repeats"), (dict(epsilon=0.0), "epsilon"), (dict(epsilon=float("nan")), "epsilon"),
    (dict(batch_size=-1), "batch_size"), (dict(chunk_size=0), "chunk_size"), (dict(dtype=torch.int32), "dtype"),
    (dict(init=3), "init"), (dict(vectorize="yes"), "vectorize"), (dict(channels_last=1), "channels_last"),
])
def test_bad_options(options, match) -> None:
    model = small_mlp(False)
    with pytest.raises(InvalidOptionError, match=match):
        tpe.compute_scores(model, NTKSAP, input_shape=(12,), **options)


def test_norm_variants_and_conv_dims_run() -> None:
    nets = {
        (3, 6, 6): group_norm_cnn(),
        (2, 7): nn.Sequential(nn.Conv1d(2, 3, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Flatten(), nn.Linear(15, 2)),
        (1, 4, 4, 4): nn.Sequential(nn.Conv3d(1, 2, 3), nn.BatchNorm3d(2), nn.ReLU(inplace=True), nn.Flatten(),
                                    nn.Linear(16, 2)),
        (6,): nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2)),
        (3, 4, 4): nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2, track_running_stats=False),
                                 nn.BatchNorm2d(2, affine=False), nn.Flatten(), nn.Linear(8, 2)),
    }
    for shape, net in nets.items():
        for vectorize in (False, True):
            scores = tpe.compute_scores(net, NTKSAP, input_shape=shape, batch_size=3, repeats=2, vectorize=vectorize)
            assert all(bool(torch.isfinite(s).all()) and float(s.sum()) > 0 for s in scores.values())


def test_track_running_stats_false_uses_own_batch_statistics() -> None:
    """A BN without running buffers normalises each branch with its own statistics (as the reference)."""
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, track_running_stats=False), nn.ReLU(), nn.Linear(3, 2))
    net = net.double()
    draws = shared_draws(net, 0, (4,), repeats=1, batch_size=5)
    scores = tpe.compute_scores(net, NTKSAP, input_shape=(4,), batch_size=5, repeats=1, seed=0, dtype=torch.float64)
    d = draws[0]
    masks = {k: torch.ones_like(v) for k, v in random_masks(net, 1.0, 0).items()}
    leaves = [masks["0.weight"].double().requires_grad_(), masks["3.weight"].double().requires_grad_()]

    def f(w0, w3):
        h = F.batch_norm(F.linear(d.z, w0 * leaves[0], net[0].bias), None, None, training=True)
        return F.linear(F.relu(h), w3 * leaves[1], net[3].bias)

    J = ((f(d.theta[0], d.theta[1]) - f(d.theta[0] + 0.01 * d.delta[0], d.theta[1] + 0.01 * d.delta[1])) ** 2).sum()
    J.backward()
    assert rel_error(scores, {"0.weight": leaves[0].grad.abs(), "3.weight": leaves[1].grad.abs()}) < 1e-10


def test_shared_bn_module_uses_its_last_call_statistics() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.bn, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)

        def forward(self, x):
            return self.head(F.relu(self.bn(self.b(F.relu(self.bn(self.a(x)))))))

    net = Twice().double()
    masks = {k: torch.ones_like(v) for k, v in random_masks(net, 1.0, 0).items()}
    draws = shared_draws(net, 0, (4,), repeats=1, batch_size=6)
    scores = tpe.compute_scores(net, NTKSAP, input_shape=(4,), batch_size=6, repeats=1, seed=0)
    assert rel_error(scores, oracle_scores(net, masks, draws, 0.01, torch.float64)) < 1e-10


# ----------------------------------------------------------------------------- pruning
def test_global_prune_rounds_exact_counts_and_pruned_stay_pruned() -> None:
    model = seeded_model(SmallCNN)
    targets = tpe.prunable_parameters(model)
    total = sum(m.weight.numel() for m, _ in targets)
    tpe.global_prune(model, "random", 0.3, seed=0)
    before = {id(m): m.weight_mask.clone() for m, _ in targets}
    options = dict(input_shape=(3, 5, 5), batch_size=3, repeats=1, seed=0, on_collapse="ignore", progress=False)
    report = tpe.global_prune(model, NTKSAP, 0.8, rounds=3, **options)
    assert report.rounds == 3 and len(report.round_seconds) == 3
    zeros = sum(int((m.weight_mask == 0).sum()) for m, _ in targets)
    assert zeros == round(0.8 * total)
    for module, _ in targets:
        assert bool((module.weight_mask[before[id(module)] == 0] == 0).all())


def test_global_unstructured_drop_in() -> None:
    model = seeded_model(lambda: small_mlp(True))
    targets = tpe.prunable_parameters(model)
    alive = sum(m.weight.numel() for m, _ in targets)
    prune.global_unstructured(targets, pruning_method=NTKSAP, amount=0.75, model=model, input_shape=(3, 2, 2),
                              rounds=4, batch_size=4, repeats=1, seed=0, on_collapse="ignore", progress=False)
    zeros = sum(int((m.weight_mask == 0).sum()) for m, _ in targets)
    assert zeros == round(0.75 * alive)
    kept = {id(m): m.weight_mask.clone() for m, _ in targets}
    prune.global_unstructured(targets, pruning_method=NTKSAP, amount=10, model=model, input_shape=(3, 2, 2),
                              rounds=2, batch_size=4, repeats=1, seed=1, on_collapse="ignore", progress=False)
    assert sum(int((m.weight_mask == 0).sum()) for m, _ in targets) == zeros + 10
    assert all(bool((m.weight_mask[kept[id(m)] == 0] == 0).all()) for m, _ in targets)


def test_each_round_scores_the_current_mask() -> None:
    """Iterative rounds: every round's scores are zero on everything pruned so far."""
    model = seeded_model(SmallCNN)
    seen: list[list[torch.Tensor]] = []

    class Spy(NTKSAP):
        @classmethod
        def score(cls, problem, config):
            scores = super().score(problem, config)
            assert all(bool((s[m == 0] == 0).all()) for s, m in zip(scores, problem.masks))
            seen.append([m.clone() for m in problem.masks])
            return scores

    tpe.global_prune(model, Spy, 0.9, rounds=4, input_shape=(3, 5, 5), batch_size=3, repeats=1,
                     on_collapse="ignore", progress=False)
    assert len(seen) == 4
    for earlier, later in zip(seen, seen[1:]):
        assert all(bool((b[a == 0] == 0).all()) for a, b in zip(earlier, later))
        assert sum(int((b == 0).sum()) for b in later) > sum(int((a == 0).sum()) for a in earlier)


def test_works_on_model_already_pruned_by_torch() -> None:
    model = seeded_model(SmallCNN)
    masks = random_masks(model, 0.6, 9)
    pruned = prune_with(copy.deepcopy(model), masks)
    options = dict(input_shape=(3, 5, 5), batch_size=3, repeats=1, seed=2)
    from_pruned = tpe.compute_scores(pruned, NTKSAP, **options)
    # the same masks given as a torch-pruned model or as an explicit partial pruning agree
    partial = prune_with(copy.deepcopy(model), {k: v for k, v in masks.items() if k != "fc.weight"})
    prune.custom_from_mask(partial.fc, "weight", masks["fc.weight"])
    assert all(torch.equal(from_pruned[k], tpe.compute_scores(partial, NTKSAP, **options)[k]) for k in masks)
    assert set(from_pruned) == set(masks)


# ----------------------------------------------------------------------------- hypothesis
@settings(max_examples=8, deadline=None)
@given(width=st.integers(1, 5), batch=st.integers(2, 5), repeats=st.integers(1, 3), density=st.floats(0.2, 1.0),
       seed=st.integers(0, 2**16))
def test_property_loop_equals_vmap_and_zeros_stay_zero(width, batch, repeats, density, seed) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(3, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, 2)).double()
    masks = random_masks(model, density, seed)
    prune_with(model, masks)
    options = dict(input_shape=(3,), batch_size=batch, repeats=repeats, seed=seed)
    loop = tpe.compute_scores(model, NTKSAP, vectorize=False, **options)
    vmapped = tpe.compute_scores(model, NTKSAP, vectorize=True, chunk_size=2, **options)
    for name, mask in masks.items():
        assert bool((loop[name][mask == 0] == 0).all()) and bool((vmapped[name][mask == 0] == 0).all())
        torch.testing.assert_close(vmapped[name], loop[name], rtol=1e-9, atol=1e-12)


def test_default_init_statistics() -> None:
    generator = torch.Generator().manual_seed(0)
    w = kaiming_normal_init(torch.empty(64, 32, 3, 3), generator)
    assert abs(float(w.std()) - math.sqrt(2 / (32 * 9))) < 0.01


def test_registered_by_name_and_data_loader_read_once_per_call() -> None:
    """``"ntksap"`` is in the method table; a DataLoader is iterated for its shapes once per call."""
    assert tpe.METHODS["ntksap"] is NTKSAP and tpe.NTKSAP is NTKSAP

    class CountingLoader:
        def __init__(self) -> None:
            self.iterations = 0
            self.loader = torch.utils.data.DataLoader(
                torch.utils.data.TensorDataset(torch.randn(10, 3, 5, 5), torch.zeros(10, dtype=torch.long)),
                batch_size=4)

        def __iter__(self):
            self.iterations += 1
            return iter(self.loader)

    counts = {}
    for rounds in (1, 4):
        model = seeded_model(SmallCNN)
        loader = CountingLoader()
        total = sum(m.weight.numel() for m, _ in tpe.prunable_parameters(model))
        tpe.global_prune(model, "ntksap", 0.5, loader, rounds=rounds, repeats=1, seed=0, on_collapse="ignore",
                         progress=False)
        counts[rounds] = loader.iterations
        assert sum(int((m.weight_mask == 0).sum()) for m, _ in tpe.prunable_parameters(model)) == round(0.5 * total)
    assert counts[1] == counts[4] <= 2  # ntksap reads it once (the core may read one batch for the input shape)


def test_dropout_is_off_and_input_shape_must_match_data() -> None:
    net = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 2)).double().train()
    options = dict(input_shape=(6,), batch_size=4, repeats=2, seed=0)
    loop = tpe.compute_scores(net, NTKSAP, vectorize=False, **options)
    vmapped = tpe.compute_scores(net, NTKSAP, vectorize=True, **options)
    assert rel_error(vmapped, loop) < 1e-12  # dropout would make them differ (and vmap would refuse it)
    assert net.training and net[1].training
    with pytest.raises(tpe.BatchShapeError, match="input_shape"):
        tpe.compute_scores(net, NTKSAP, torch.randn(4, 5, dtype=torch.float64), input_shape=(6,))
