"""PX against a brute-force path oracle, and its contract.

The oracle writes each tiny network as a chain of dense matrices (a convolution is unfolded
into its dense matrix by hand, with the index of the weight entry behind every matrix
entry), computes the real network's gates itself, then enumerates every input -> output
path one by one and evaluates the spec's formula literally::

    score(theta_j) = sum_{n,k} z1[n,k] * sum_{p ∋ j, p -> k} v_p^2

with ``z1[n,k] = sum_{p -> k} a_p(x_n) x_n[s(p)]^2`` (a_p: product of the ReLU gates on p,
all-ones masked weights, BatchNorm scale 1) and ``v_p^2`` the product of the squared
masked weights and squared BatchNorm scales ``gamma / sqrt(running_var + eps)`` on p. Fixed
linear maps (average pooling) are not parameters: their coefficient enters J and P once.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.utils import prune

import torch_prune_ext as tpe
from torch_prune_ext.core.functional import FunctionalModel
from torch_prune_ext.core.targets import resolve_targets
from torch_prune_ext.errors import InvalidOptionError, MissingDataError, NonFiniteScoreError
from torch_prune_ext.methods.px import (
    PX,
    ActivationGates,
    NormReduction,
    PXConfig,
    UnsupportedLayerError,
)
from torch_prune_ext.methods.px_norm import batch_statistics

D = torch.float64


def scores_of(model, data, **options):
    return list(tpe.compute_scores(model, PX, data, **options).values())


# ----------------------------------------------------------------------- oracle
class Layer:
    """One dense stage: out = M @ in (+ bias); then optional BN (eval) and ReLU.

    ``weight_index[b, a]``: flat index of the target weight behind entry (b, a), or -1 for a
    fixed coefficient (pooling); ``mask`` 0/1 per entry (1 for fixed coefficients).
    """

    def __init__(self, matrix, weight_index, target, mask, bias=None, bn=None, relu=False):
        self.matrix, self.weight_index, self.target, self.mask = matrix, weight_index, target, mask
        self.bias, self.bn, self.relu = bias, bn, relu

    def forward(self, h):
        out = h @ self.matrix.T
        if self.bias is not None:
            out = out + self.bias
        if self.bn is not None:
            gamma, beta, mean, var, eps, per_unit = self.bn
            out = (out - mean[per_unit]) / torch.sqrt(var[per_unit] + eps) * gamma[per_unit] + beta[per_unit]
        gate = out > 0
        return (out.clamp_min(0) if self.relu else out), gate

    def scale_squared(self, unit):
        if self.bn is None:
            return 1.0
        gamma, _, _, var, eps, per_unit = self.bn
        c = per_unit[unit]
        return float(gamma[c] ** 2 / (var[c] + eps))


def oracle(layers, x, n_targets, shapes):
    """Brute-force path enumeration; returns one score tensor per target."""
    h = x.reshape(len(x), -1).to(D)
    gates = []
    for layer in layers:
        h, gate = layer.forward(h)
        gates.append(gate if layer.relu else torch.ones_like(gate))
    n_in = layers[0].matrix.shape[1]
    x2 = x.reshape(len(x), -1).to(D) ** 2
    n_out = layers[-1].matrix.shape[0]
    # enumerate paths: (units..., list of (target, flat index)), J factor per example, P factor
    paths = []

    def walk(level, unit, j_factor, p_factor, used, start):
        if level == len(layers):
            paths.append((start, unit, j_factor, p_factor, used))
            return
        layer = layers[level]
        column = layer.matrix[:, unit]
        for b in range(layer.matrix.shape[0]):
            w_idx = int(layer.weight_index[b, unit])
            if w_idx < 0 and column[b] == 0:
                continue  # no edge (outside the window)
            if w_idx >= 0 and layer.mask[b, unit] == 0:
                continue  # masked: v_p = 0 and a_p x^2 = 0
            if w_idx >= 0:
                j_coef, p_coef = 1.0, float(column[b]) ** 2
                new_used = used + [(layer.target, w_idx)]
            else:
                j_coef = p_coef = float(column[b])
                new_used = used
            j = j_factor * j_coef * gates[level][:, b].to(D)
            p = p_factor * p_coef * layer.scale_squared(b)
            walk(level + 1, b, j, p, new_used, start)

    for a in range(n_in):
        walk(0, a, torch.ones(len(x), dtype=D), 1.0, [], a)
    z1 = torch.zeros(len(x), n_out, dtype=D)
    for start, end, j, _, _ in paths:
        z1[:, end] += j * x2[:, start]
    scores = [torch.zeros(s, dtype=D).reshape(-1) for s in shapes]
    for start, end, _, p, used in paths:
        for t, idx in used:
            scores[t][idx] += z1[:, end].sum() * p
    return [s.reshape(shape) for s, shape in zip(scores, shapes)]


def linear_layer(module, target, relu, bn=None):
    w = (module.weight.detach() if not prune.is_pruned(module) else module.weight_orig.detach() * module.weight_mask)
    mask = module.weight_mask if hasattr(module, "weight_mask") else torch.ones_like(w)
    index = torch.arange(w.numel()).reshape(w.shape)
    bias = None if module.bias is None else module.bias.detach().to(D)
    return Layer((w * mask).to(D), index, target, mask, bias, bn, relu)


def conv_layer(module, target, in_shape, bn, relu):
    """A Conv2d unfolded by hand into its dense matrix (stride, zero padding); ``bn``: (gamma, beta, mean, var, eps)."""
    c_in, h_in, w_in = in_shape
    w = module.weight_orig.detach() if prune.is_pruned(module) else module.weight.detach()
    mask = module.weight_mask if prune.is_pruned(module) else torch.ones_like(w)
    c_out, _, kh, kw = w.shape
    (sh, sw), (ph, pw) = module.stride, module.padding
    h_out, w_out = (h_in + 2 * ph - kh) // sh + 1, (w_in + 2 * pw - kw) // sw + 1
    n_out, n_inp = c_out * h_out * w_out, c_in * h_in * w_in
    matrix = torch.zeros(n_out, n_inp, dtype=D)
    index = torch.full((n_out, n_inp), -1, dtype=torch.long)
    entry_mask = torch.zeros(n_out, n_inp)
    for co, oy, ox, ci, ky, kx in itertools.product(range(c_out), range(h_out), range(w_out), range(c_in),
                                                    range(kh), range(kw)):
        iy, ix = oy * sh - ph + ky, ox * sw - pw + kx
        if 0 <= iy < h_in and 0 <= ix < w_in:
            b, a = (co * h_out + oy) * w_out + ox, (ci * h_in + iy) * w_in + ix
            matrix[b, a] = float(w[co, ci, ky, kx] * mask[co, ci, ky, kx])
            index[b, a] = ((co * c_in + ci) * kh + ky) * kw + kx
            entry_mask[b, a] = float(mask[co, ci, ky, kx])
    per_unit = torch.arange(n_out) // (h_out * w_out)
    bias = None if module.bias is None else module.bias.detach().to(D)[per_unit]
    bn_params = None if bn is None else (*bn, per_unit)
    return Layer(matrix, index, target, entry_mask, bias, bn_params, relu), (c_out, h_out, w_out)


def avg_pool_layer(shape, k):
    c, h, w = shape
    ho, wo = h // k, w // k
    matrix = torch.zeros(c * ho * wo, c * h * w, dtype=D)
    for ch, y, x in itertools.product(range(c), range(h), range(w)):
        if y // k < ho and x // k < wo:
            matrix[(ch * ho + y // k) * wo + x // k, (ch * h + y) * w + x] = 1.0 / (k * k)
    return Layer(matrix, torch.full(matrix.shape, -1), -1, torch.ones(matrix.shape)), (c, ho, wo)


def random_masks(model, generator, density=0.6):
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            prune.custom_from_mask(m, "weight", (torch.rand(m.weight.shape, generator=generator) < density).float())


@pytest.mark.parametrize("bias", [False, True])
def test_oracle_mlp(bias):
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4, bias=bias), nn.ReLU(), nn.Linear(4, 4, bias=bias), nn.ReLU(),
                          nn.Linear(4, 2, bias=bias)).double()
    random_masks(model, g)
    x = torch.randn(5, 3, generator=g, dtype=D)
    layers = [linear_layer(model[0], 0, True), linear_layer(model[2], 1, True), linear_layer(model[4], 2, False)]
    expected = oracle(layers, x, 3, [model[i].weight.shape for i in (0, 2, 4)])
    got = scores_of(model, x)
    for e, s, i in zip(expected, got, (0, 2, 4)):
        torch.testing.assert_close(s, e, rtol=1e-9, atol=1e-12 * float(e.abs().max()))
        assert bool((s[model[i].weight_mask == 0] == 0).all())


def bn_inputs_in_train_mode(model, x):
    """The input of every BatchNorm, and the output, of a train-mode forward of ``model`` on ``x`` as one batch
    (on cloned buffers: the running statistics are left alone)."""
    seen = []
    hooks = [m.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
             for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    training = model.training
    try:
        model.train()
        out = functional_call(model, {k: v.clone() for k, v in model.named_buffers()}, (x,), strict=False)
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    return seen, out.detach()


@pytest.mark.parametrize("norm", ["batch", "running"])
def test_oracle_conv_bn(norm):
    """Conv + BN + ReLU, twice; avg-pool, flatten, linear. BN statistics: batch ones of the
    whole set from a train-mode forward (the default), or non-trivial running ones (as after training)."""
    g = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, bias=True), nn.BatchNorm2d(3), nn.ReLU(),
        nn.Conv2d(3, 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2), nn.ReLU(inplace=True),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(2, 3),
    ).double()
    with torch.no_grad():
        for bn in (model[1], model[4]):
            bn.weight.uniform_(0.5, 1.5, generator=g)
            bn.bias.uniform_(-0.3, 0.3, generator=g)
            bn.running_mean.uniform_(-0.2, 0.2, generator=g)
            bn.running_var.uniform_(0.5, 2.0, generator=g)
        model[0].bias.uniform_(-0.2, 0.2, generator=g)
    random_masks(model, g, density=0.7)
    model.train()
    x = torch.randn(3, 2, 4, 4, generator=g, dtype=D)
    inputs, train_out = bn_inputs_in_train_mode(model, x)
    stats = {1: (inputs[0].mean((0, 2, 3)), inputs[0].var((0, 2, 3), unbiased=False)),
             4: (inputs[1].mean((0, 2, 3)), inputs[1].var((0, 2, 3), unbiased=False))}

    def bn_params(i):
        bn = model[i]
        mean, var = stats[i] if norm == "batch" else (bn.running_mean.to(D), bn.running_var.to(D))
        return bn.weight.detach().to(D), bn.bias.detach().to(D), mean, var, bn.eps

    l1, s1 = conv_layer(model[0], 0, (2, 4, 4), bn_params(1), True)
    l2, s2 = conv_layer(model[3], 1, s1, bn_params(4), True)
    pool, _ = avg_pool_layer(s2, 2)
    fc = linear_layer(model[8], 2, False)
    layers = [l1, l2, pool, fc]
    # the hand-made dense network is the model: in train mode on the whole set (batch), in eval mode (running)
    h = x.reshape(3, -1)
    for layer in layers:
        h, _ = layer.forward(h)
    model.eval()
    torch.testing.assert_close(h, train_out if norm == "batch" else model(x), rtol=1e-10, atol=1e-12)
    model.train()
    expected = oracle(layers, x, 3, [model[i].weight.shape for i in (0, 3, 8)])
    got = scores_of(model, x, norm=norm)
    for e, s in zip(expected, got):
        torch.testing.assert_close(s, e, rtol=1e-9, atol=1e-12 * float(e.abs().max()))
    assert model.training  # modes restored


# -------------------------------------------------------------- the c-trick
def small_convnet():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


@pytest.mark.parametrize("norm", ["batch", "running"])
def test_c_trick_equals_per_batch_accumulation(norm):
    """Scores do not depend on the batching; with fixed (running) statistics they add up over subsets."""
    model = small_convnet()
    x = torch.randn(9, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    whole = scores_of(model, x, norm=norm)
    batched = scores_of(model, [x[:2], x[2:6], x[6:]], norm=norm)
    for w, b in zip(whole, batched):
        assert w.dtype == torch.float64
        torch.testing.assert_close(b, w, rtol=1e-12, atol=0.0)
    if norm == "running":
        summed = [sum(parts) for parts in zip(*(scores_of(model, x[i:i + 3], norm=norm) for i in range(0, 9, 3)))]
        for w, s in zip(whole, summed):
            torch.testing.assert_close(s, w, rtol=1e-12, atol=0.0)


# ---------------------------------------------------------- batch statistics
class ResidualBN(nn.Module):
    """Conv-BN-ReLU, max-pool, a residual block (one BN without running statistics), GAP, linear; float64."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(10)
        self.stem, self.bn0 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4, track_running_stats=False)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            for bn in (self.bn0, self.bn1, self.bn2):
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.5, 0.5)
        self.double()

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.bn0(self.stem(x))), 2)
        branch = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(h)))))
        return self.fc(F.adaptive_avg_pool2d(F.relu(branch + h), 1).flatten(1))


def test_batch_statistics_and_gates_equal_a_train_mode_forward_on_the_whole_set():
    model = ResidualBN()
    random_masks(model, torch.Generator().manual_seed(11), density=0.7)
    x = torch.randn(12, 3, 8, 8, generator=torch.Generator().manual_seed(12), dtype=D)
    with ActivationGates("record") as train_gates:
        inputs, _ = bn_inputs_in_train_mode(model, x)
    expected = [(i.mean((0, 2, 3)), i.var((0, 2, 3), unbiased=False)) for i in inputs]
    model.eval()
    with torch.no_grad():
        with NormReduction("measure") as measured, ActivationGates("record") as gates:
            model(x)  # one pass, the set as one batch (what PX does with one pruning batch)
        layered = batch_statistics(model, [x[:5], x[5:9], x[9:]])  # several batches, layer by layer
    assert len(measured.statistics) == len(layered) == len(expected) == 3
    for (mean, var), one, several in zip(expected, measured.statistics, layered):
        for got in (one, several):
            torch.testing.assert_close(got.mean, mean, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(got.var, var, rtol=1e-12, atol=1e-14)
    assert len(gates.gates) == len(train_gates.gates) == 4  # 3 ReLUs and the max-pool
    for (kind, got), (_, want) in zip(gates.gates, train_gates.gates):
        assert torch.equal(got[0], want[0]) if kind == "gate" else torch.equal(got, want)
    assert all(not bool(m.running_mean.ne(0).any()) for m in (model.bn0, model.bn1))  # buffers untouched


def test_batch_norm_scores_do_not_depend_on_the_batching():
    model = ResidualBN()
    random_masks(model, torch.Generator().manual_seed(13), density=0.6)
    x = torch.randn(100, 3, 8, 8, generator=torch.Generator().manual_seed(14), dtype=D)
    whole = scores_of(model, x)
    quarters = scores_of(model, [x[i:i + 25] for i in range(0, 100, 25)])
    for w, q in zip(whole, quarters):
        assert bool((w >= 0).all()) and bool((w[q == 0] == 0).all())
        torch.testing.assert_close(q, w, rtol=1e-10, atol=0.0)
    with pytest.raises(UnsupportedLayerError, match="running statistics"):  # bn2 has none
        scores_of(model, x, norm="running")


@pytest.mark.parametrize("build", ["mlp", "conv"])
def test_norm_changes_nothing_without_normalisation(build):
    torch.manual_seed(15)
    if build == "mlp":
        model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    else:
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3),
                              nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))
    random_masks(model, torch.Generator().manual_seed(16))
    x = torch.randn(6, 3, *((2, 2) if build == "mlp" else (8, 8)), generator=torch.Generator().manual_seed(17))
    for data in (x, [x[:2], x[2:]]):
        for b, r in zip(scores_of(model, data, norm="batch"), scores_of(model, data, norm="running")):
            assert torch.equal(b, r)
            assert bool((b > 0).any())


# ------------------------------------------------------------------- gating
class Net(nn.Module):
    def __init__(self, relu):
        super().__init__()
        torch.manual_seed(4)
        self.a, self.b, self.c = nn.Linear(5, 6), nn.Linear(6, 6), nn.Linear(6, 2)
        self.relu = relu
        self.module = nn.ReLU(inplace=relu == "module_inplace")

    def act(self, h):
        kind = self.relu
        if kind == "F.relu":
            return F.relu(h)
        if kind == "torch.relu":
            return torch.relu(h)
        if kind == "method":
            return h.relu()
        if kind in ("module", "module_inplace"):
            return self.module(h)
        if kind == "F.relu_inplace":
            F.relu(h, inplace=True)
            return h
        if kind == "relu_":
            h.relu_()
            return h
        if kind == "torch.relu_":
            return torch.relu_(h)
        raise ValueError(kind)

    def forward(self, x):
        return self.c(self.act(self.b(self.act(self.a(x)))))


RELU_KINDS = ["F.relu", "torch.relu", "method", "module", "module_inplace", "F.relu_inplace", "relu_", "torch.relu_"]


def test_gates_identical_for_every_relu_form():
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(5))
    reference = None
    for kind in RELU_KINDS:
        model = Net(kind)
        with ActivationGates("record") as record:
            model(x)
        assert len(record.gates) == 2, kind
        scores = scores_of(model, x)
        if reference is None:
            reference, gates = scores, record.gates
        for (_, (g, _)), (_, (g0, _)) in zip(record.gates, gates):
            assert torch.equal(g, g0), kind
        for s, r in zip(scores, reference):
            assert torch.equal(s, r), kind


def test_leaky_relu_uses_its_slope():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.LeakyReLU(0.25), nn.Linear(2, 1, bias=False))
    x = torch.tensor([[1.0, -2.0]])
    w1, w2 = model[0].weight.detach().double(), model[2].weight.detach().double()
    gate = torch.where(model[0](x).detach()[0] > 0, 1.0, 0.25).double()
    c = (gate * (torch.ones(2, 2, dtype=D) @ x[0].double() ** 2)).sum()  # z1: all-ones weights, gated
    expected_fc = c * w2 ** 2 * (w1 ** 2).sum(1)
    torch.testing.assert_close(scores_of(model, x)[1], expected_fc, rtol=1e-12, atol=0.0)


def test_max_pool_routes_through_a_argmax():
    # A's argmax of x = [-3, 1] is entry 1; J's input x^2 = [9, 1] would pick entry 0 itself.
    model = nn.Sequential(nn.MaxPool2d((1, 2)), nn.Flatten(), nn.Linear(1, 3, bias=False))
    x = torch.tensor([[[[-3.0, 1.0]]]])
    w = model[2].weight.detach().double()
    # z1 = 1 (x[argmax]^2 * ones), P: sum pool of ones = 2 -> score = c * 2 * w^2 with c = 1
    torch.testing.assert_close(scores_of(model, x)[0], 2.0 * w ** 2, rtol=1e-12, atol=0.0)
    a, b = torch.tensor([[[[5.0, 1.0, 0.0, 2.0]]]]), torch.tensor([[[[1.0, 7.0, 3.0, 0.0]]]])
    with ActivationGates("record") as record:
        F.max_pool2d(a, (1, 2))
    with ActivationGates("apply", record.gates):
        routed = F.max_pool2d(b, (1, 2))
    assert routed.flatten().tolist() == [1.0, 0.0]  # b at a's argmax, not max(b) = [7, 3]


def test_unsupported_activations_raise_clear_errors():
    x = torch.randn(4, 3)
    for act, word in ((nn.GELU(), "GELU"), (nn.Tanh(), "tanh"), (nn.SiLU(), "SiLU")):
        model = nn.Sequential(nn.Linear(3, 3), act, nn.Linear(3, 2))
        with pytest.raises(UnsupportedLayerError, match=word):
            scores_of(model, x)
    model = nn.Sequential(nn.Linear(3, 3), nn.GELU(), nn.Linear(3, 2))
    approx = scores_of(model, x, approximate_activations=True)
    assert all(bool((s >= 0).all()) for s in approx)
    with pytest.raises(UnsupportedLayerError, match="LayerNorm"):
        scores_of(nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3), nn.ReLU(), nn.Linear(3, 2)), x)


def test_errors_for_missing_data_and_overflow():
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(MissingDataError):
        tpe.compute_scores(model, PX, None)
    with pytest.raises(NonFiniteScoreError, match="px"):
        scores_of(model.double(), torch.full((1, 3), 1e200, dtype=D))


# -------------------------------------------------------------- real models
def test_resnet20_and_vgg16_scores_finite_and_nonnegative():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    from torch_prune_ext.models import resnet20, vgg16_bn
    for model in (resnet20(), vgg16_bn()):
        scores = scores_of(model, x)
        for s in scores:
            assert bool(torch.isfinite(s).all()) and bool((s >= 0).all())
        assert sum(int((s > 0).sum()) for s in scores) > 0.99 * sum(s.numel() for s in scores)


@pytest.fixture(scope="module", params=["batch", "running"])
def pruned_narrow_resnet20(request):
    """ResNet-20 layout at width 4 (not 16: the full one takes minutes on 2 busy cores), 30 rounds to 98.2%."""
    from torch_prune_ext.core.report import check_collapse
    from torch_prune_ext.models import CifarResNet
    torch.manual_seed(0)
    model = CifarResNet(20, width=4)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small kernels: one thread is faster and immune to oversubscription on busy cores
    try:
        report = tpe.global_prune(model, PX, 0.982, data=x, rounds=30, progress=False, on_collapse="ignore",
                                  norm=request.param)
    finally:
        torch.set_num_threads(threads)
    targets = resolve_targets(model)
    layers, connected = check_collapse(model, targets, [t.current_mask() for t in targets], (3, 32, 32),
                                       "ignore", "px")
    return request.param, model, report, layers, connected


def test_resnet20_982_stays_connected(pruned_narrow_resnet20):
    _, model, report, _, connected = pruned_narrow_resnet20
    assert abs(report.sparsity - 0.982) < 1e-3
    assert connected is True
    for name in ("conv1", "layer2.0.shortcut.0", "layer3.0.shortcut.0", "fc"):
        assert float(model.get_submodule(name).weight_mask.mean()) > 0.0, name


def test_resnet20_982_no_layer_emptied_by_default_only(pruned_narrow_resnet20):
    """Issue 4: with the running statistics of an initialised network (mean 0, variance 1) iterative PX
    empties whole residual branches; with the pruning set's batch statistics (the default) no layer empties."""
    norm, model, _, layers, _ = pruned_narrow_resnet20
    densities = {name: float(module.weight_mask.mean()) for name, module in model.named_modules()
                 if hasattr(module, "weight_mask")}
    if norm == "batch":
        assert not layers.empty
        assert min(densities.values()) > 0.0
    else:
        emptied = sorted(name for name, d in densities.items() if d == 0.0)
        assert "layer3.0.conv1" in emptied and "layer3.0.conv2" in emptied  # a whole branch
        assert set(layers.empty) == {f"{name}.weight" for name in emptied}


def test_model_untouched():
    model = small_convnet()
    model.train()
    model[1].eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    x = torch.randn(4, 3, 8, 8)
    rng = torch.get_rng_state()
    for options in ({"norm": "batch"}, {"norm": "running"}, {"mode": "reference"}):
        scores_of(model, x, **options)
    scores_of(model, [x[:1], x[1:]])  # the layer-by-layer statistics passes
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(torch.get_rng_state(), rng)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------- reference mode
class GapNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(7)
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        with torch.no_grad():
            self.bn1.bias.uniform_(-1, 1)
            self.bn2.bias.uniform_(-1, 1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)) + h)
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def test_reference_mode_runs_and_is_degenerate_with_gap():
    model = GapNet()
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    ref = tpe.compute_scores(model, PX, x, mode="reference")
    assert all(bool(torch.isfinite(s).all()) and bool((s >= 0).all()) for s in ref.values())
    # P of the reference: train-mode BN on identical all-ones inputs; its output ignores conv weights.
    targets = resolve_targets(model)
    fm = FunctionalModel(model, targets, lambda n, t: t.double() if "bn" in n or "fc" in n or not
                         t.is_floating_point() else t.double() ** 2)
    ones = torch.ones(6, 3, 8, 8, dtype=D)
    outputs = []
    for seed in (0, 1):
        g = torch.Generator().manual_seed(seed)
        weights = [torch.randn(t.raw.shape, generator=g, dtype=D) ** 2 for t in targets[:2]] + \
                  [targets[2].raw.detach().double()]
        with torch.no_grad(), NormReduction("batch"), ActivationGates("identity"):
            outputs.append(fm(ones, weights, [torch.ones_like(w) for w in weights]))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-10, atol=1e-10)
    # hence the conv scores are theta^2 times rounding noise, unlike the theory mode's
    theory = tpe.compute_scores(model, PX, x)
    for name in ("conv1.weight", "conv2.weight"):
        w2 = model.get_submodule(name[:-7]).weight.detach().double() ** 2
        ref_g = (ref[name] / w2).max()
        fc_g = (ref["fc.weight"] / model.fc.weight.detach().double() ** 2).max()
        assert float(ref_g) < 1e-8 * float(fc_g)
        assert float((theory[name] / w2).min()) > 0.0


def test_prune_global_unstructured_dropin():
    torch.manual_seed(9)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(5, 6)
    prune.global_unstructured(tpe.prunable_parameters(model), pruning_method=PX, amount=0.5, model=model,
                              data=x, rounds=3, progress=False)
    total = sum(int(m.weight_mask.sum()) for m in (model[0], model[2]))
    assert total == 72 - 36


def test_config_validation():
    with pytest.raises(ValueError, match="mode"):
        PXConfig(mode="paper")
    with pytest.raises(ValueError, match="dtype"):
        PXConfig(dtype=torch.int64)
    with pytest.raises(InvalidOptionError, match="norm must be one of 'batch', 'running', got 'eval'"):
        PXConfig(norm="eval")


def test_unknown_norm_raises_and_changes_nothing():
    model = small_convnet()
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InvalidOptionError, match="'batch', 'running'"):
        tpe.global_prune(model, PX, 0.5, data=torch.randn(4, 3, 8, 8), rounds=2, progress=False, norm="Batch")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not prune.is_pruned(model[4])
