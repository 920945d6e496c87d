"""Baseline scores against independent, slow, obvious implementations.

Every oracle below is written the plain way: an explicit network whose target layers use
``W = theta * mask`` with ``theta`` and ``mask`` as ``nn.Parameter`` leaves, evaluated with
``F.linear`` / ``F.conv2d`` / ``F.batch_norm``, a hand-written cross-entropy, ``.backward()``
(or ``torch.autograd.grad`` where a second derivative is needed) and ``.grad``. Nothing
here uses ``torch.func`` or the library's internals; the library is only reached through
``torch_prune_ext.compute_scores``.
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

import torch_prune_ext as tpe

TARGET_TYPES = (nn.Linear, nn.Conv2d)


# --------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def seeded(seed: int):
    """Run a block with a fixed global seed, leaving the caller's RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-6, name: str = "") -> None:
    """Entry-wise relative agreement; a tiny absolute floor relative to the tensor's scale."""
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    assert bool(torch.isfinite(actual).all()), f"{name}: non-finite library scores"
    expected = expected.to(actual.dtype)
    scale = float(expected.abs().max())
    assert scale > 0, f"{name}: degenerate oracle (all zeros)"
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=1e-10 * scale, msg=lambda m: f"{name}: {m}")


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy written out: -mean_i log softmax(logits_i)[y_i]."""
    shifted = logits - logits.max(dim=1, keepdim=True).values.detach()
    log_z = shifted.exp().sum(dim=1).log()
    picked = shifted[torch.arange(len(y)), y]
    return (log_z - picked).mean()


def target_names(model: nn.Sequential) -> list[str]:
    return [f"{name}.weight" for name, layer in model.named_children() if isinstance(layer, TARGET_TYPES)]


class OracleNet(nn.Module):
    """An explicit re-implementation of an ``nn.Sequential`` whose target weights are theta * mask.

    Supports Linear, Conv2d, BatchNorm2d, ReLU, Tanh, Softplus, Flatten. ``theta`` and ``mask``
    of every target are ``nn.Parameter`` copies (read their ``.grad`` after ``backward``); the
    other tensors are detached copies. BatchNorm running statistics are cloned per forward, so
    the oracle is stateless.
    """

    def __init__(self, seq: nn.Sequential, *, bn_training: bool) -> None:
        super().__init__()
        self.bn_training = bn_training
        self.layers: list[tuple[str, str, dict]] = []
        self.thetas = nn.ParameterDict()
        self.masks = nn.ParameterDict()
        for name, layer in seq.named_children():
            key = f"{name}.weight"
            if isinstance(layer, TARGET_TYPES):
                if hasattr(layer, "weight_orig"):
                    theta, mask = layer.weight_orig, layer.weight_mask
                else:
                    theta, mask = layer.weight, torch.ones_like(layer.weight)
                self.thetas[name] = nn.Parameter(theta.detach().clone())
                self.masks[name] = nn.Parameter(mask.detach().clone().to(theta.dtype))
                bias = None if layer.bias is None else layer.bias.detach().clone()
                if isinstance(layer, nn.Linear):
                    self.layers.append(("linear", name, {"bias": bias, "key": key}))
                else:
                    self.layers.append(("conv", name, {"bias": bias, "key": key, "stride": layer.stride,
                                                       "padding": layer.padding, "dilation": layer.dilation,
                                                       "groups": layer.groups}))
            elif isinstance(layer, nn.BatchNorm2d):
                self.layers.append(("bn", name, {
                    "weight": layer.weight.detach().clone(), "bias": layer.bias.detach().clone(),
                    "mean": layer.running_mean.detach().clone(), "var": layer.running_var.detach().clone(),
                    "eps": layer.eps}))
            elif isinstance(layer, nn.ReLU):
                self.layers.append(("relu", name, {}))
            elif isinstance(layer, nn.Tanh):
                self.layers.append(("tanh", name, {}))
            elif isinstance(layer, nn.Softplus):
                self.layers.append(("softplus", name, {}))
            elif isinstance(layer, nn.Flatten):
                self.layers.append(("flatten", name, {}))
            else:  # pragma: no cover - test-construction error
                raise TypeError(f"OracleNet does not know {type(layer).__name__}")

    def effective(self, name: str) -> torch.Tensor:
        return self.thetas[name] * self.masks[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for kind, name, p in self.layers:
            if kind == "linear":
                x = F.linear(x, self.effective(name), p["bias"])
            elif kind == "conv":
                x = F.conv2d(x, self.effective(name), p["bias"], p["stride"], p["padding"], p["dilation"],
                             p["groups"])
            elif kind == "bn":
                if self.bn_training:
                    dims = (0, 2, 3)
                    mean = x.mean(dim=dims, keepdim=True)
                    var = x.var(dim=dims, unbiased=False, keepdim=True)
                else:
                    mean = p["mean"].view(1, -1, 1, 1)
                    var = p["var"].view(1, -1, 1, 1)
                x = (x - mean) / torch.sqrt(var + p["eps"]) * p["weight"].view(1, -1, 1, 1) \
                    + p["bias"].view(1, -1, 1, 1)
            elif kind == "relu":
                x = torch.clamp(x, min=0)
            elif kind == "tanh":
                x = torch.tanh(x)
            elif kind == "softplus":
                x = torch.log1p(torch.exp(-x.abs())) + torch.clamp(x, min=0)
            elif kind == "flatten":
                x = x.reshape(x.shape[0], -1)
        return x

    def keys(self) -> list[str]:
        return [f"{name}.weight" for name in self.thetas.keys()]

    def zero_grad_all(self) -> None:
        for p in list(self.thetas.values()) + list(self.masks.values()):
            p.grad = None


# ------------------------------------------------------------------- the oracles
def oracle_snip(model: nn.Sequential, batches, *, bn_training: bool = True) -> dict[str, torch.Tensor]:
    """|Σ_b ∂L_b/∂m| at the current mask: backward of every batch's loss, accumulated in .grad."""
    net = OracleNet(model, bn_training=bn_training)
    for x, y in batches:
        cross_entropy(net(x), y).backward()  # .grad accumulates: sum over batches before abs
    return {f"{n}.weight": net.masks[n].grad.detach().abs() for n in net.thetas.keys()}


def oracle_iter_snip(model: nn.Sequential, batches, *, bn_training: bool = True) -> dict[str, torch.Tensor]:
    """|θ ⊙ ∂(Σ_b L_b)/∂θ| with W = θ ⊙ m."""
    net = OracleNet(model, bn_training=bn_training)
    total = sum(cross_entropy(net(x), y) for x, y in batches)
    total.backward()
    return {f"{n}.weight": (net.thetas[n].detach() * net.thetas[n].grad).abs() for n in net.thetas.keys()}


def oracle_grasp_hg(model: nn.Sequential, batches, *, temperature: float = 200.0,
                    bn_training: bool = True) -> tuple[OracleNet, dict[str, torch.Tensor]]:
    """Hg, computed as ∇_θ ⟨g, ∇_θ Σ_b L_b⟩ with g = ∇_θ Σ_b L_b detached (one graph over all batches)."""
    net = OracleNet(model, bn_training=bn_training)
    thetas = list(net.thetas.values())
    total = sum(cross_entropy(net(x) / temperature, y) for x, y in batches)
    grads = torch.autograd.grad(total, thetas, create_graph=True)
    g = [gr.detach() for gr in grads]
    inner = sum((gi * gr).sum() for gi, gr in zip(g, grads))
    inner.backward()
    return net, {f"{n}.weight": net.thetas[n].grad.detach().clone() for n in net.thetas.keys()}


def oracle_grasp(model: nn.Sequential, batches, **kw) -> dict[str, torch.Tensor]:
    net, hg = oracle_grasp_hg(model, batches, **kw)
    return {f"{n}.weight": hg[f"{n}.weight"] * net.thetas[n].detach() for n in net.thetas.keys()}


def oracle_synflow_deepcopy(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """A deep copy, every parameter and buffer abs'd, eval mode, all-ones input, R = Σ out, backward."""
    # torch.nn.utils.prune leaves a non-leaf plain ``weight`` attribute on pruned modules, which
    # deepcopy refuses; hand deepcopy a detached stand-in (the hook recomputes it on forward).
    memo = {id(m.__dict__["weight"]): m.__dict__["weight"].detach().clone()
            for m in model.modules() if "weight" in m.__dict__ and isinstance(m.__dict__["weight"], torch.Tensor)}
    net = copy.deepcopy(model, memo)
    net.eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
        for b in net.buffers():
            if b.is_floating_point():
                b.abs_()
    net.zero_grad(set_to_none=True)
    x = torch.ones((1, *input_shape), dtype=next(net.parameters()).dtype)
    net(x).sum().backward()
    out = {}
    for name, layer in net.named_modules():
        if isinstance(layer, TARGET_TYPES):
            theta = layer.weight_orig if hasattr(layer, "weight_orig") else layer.weight
            out[f"{name}.weight"] = (theta.detach() * theta.grad).abs()
    return out


def synflow_closed_form(linears: list[nn.Linear], dtype=torch.float64) -> dict[str, torch.Tensor]:
    """score(W_l[i,j]) = A_l[i,j] · (1ᵀ A_L⋯A_{l+1})_i · (A_{l-1}⋯A_1 1)_j, A_l = |W_l| ⊙ m_l."""
    mats = []
    for layer in linears:
        if hasattr(layer, "weight_orig"):
            a = layer.weight_orig.detach().to(dtype).abs() * layer.weight_mask.to(dtype)
        else:
            a = layer.weight.detach().to(dtype).abs()
        mats.append(a)
    scores = []
    for l, a in enumerate(mats):
        right = torch.ones(mats[0].shape[1], dtype=dtype)
        for m in mats[:l]:
            right = m @ right
        left = torch.ones(mats[-1].shape[0], dtype=dtype)
        for m in reversed(mats[l + 1:]):
            left = left @ m
        scores.append(a * left[:, None] * right[None, :])
    return scores


# ----------------------------------------------------------------------- the models
def make_mlp(seed: int = 0, act: type[nn.Module] = nn.ReLU, dims=(6, 5, 4, 3)) -> nn.Sequential:
    with seeded(seed):
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b, bias=True))
            if i < len(dims) - 2:
                layers.append(act())
        model = nn.Sequential(*layers)
        with torch.no_grad():  # non-trivial biases
            for layer in model:
                if isinstance(layer, nn.Linear):
                    layer.bias.uniform_(-0.5, 0.5)
    return model.double()


def make_cnn(seed: int = 0) -> nn.Sequential:
    """Conv-BN-ReLU-Conv(no bias, stride 2)-BN-ReLU-Flatten-Linear on 2x6x6 inputs, 3 classes."""
    with seeded(seed):
        model = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 3, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(3),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(3 * 3 * 3, 3),
        )
        with torch.no_grad():  # non-default BN affine and running statistics, some negative entries
            for layer in model:
                if isinstance(layer, nn.BatchNorm2d):
                    layer.weight.uniform_(-1.5, 1.5)
                    layer.bias.uniform_(-0.5, 0.5)
                    layer.running_mean.uniform_(-0.5, 0.5)
                    layer.running_var.uniform_(0.5, 2.0)
                    layer.num_batches_tracked.fill_(7)
    return model.double()


def make_batches(shape, n_classes=3, n_batches=2, batch=8, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn((batch, *shape), generator=g, dtype=dtype),
             torch.randint(0, n_classes, (batch,), generator=g)) for _ in range(n_batches)]


def prune_randomly(model: nn.Module, amount: float = 0.4, seed: int = 3) -> nn.Module:
    with seeded(seed):
        for layer in model.modules():
            if isinstance(layer, TARGET_TYPES):
                prune.random_unstructured(layer, "weight", amount=amount)
    return model


def check_against(scores: dict[str, torch.Tensor], oracle: dict[str, torch.Tensor], rtol=1e-6) -> None:
    assert set(scores) == set(oracle), (sorted(scores), sorted(oracle))
    for name in oracle:
        assert_close_rel(scores[name], oracle[name], rtol=rtol, name=name)


# ================================================================ 1. SNIP
def test_snip_mlp_with_biases_single_batch():
    model = make_mlp()
    batch = make_batches((6,), n_batches=1)[0]
    scores = tpe.compute_scores(model, "snip", batch)
    oracle = oracle_snip(model, [batch])
    check_against(scores, oracle)
    assert set(scores) == {"0.weight", "2.weight", "4.weight"}


def test_snip_mlp_two_batches_sums_before_abs():
    model = make_mlp()
    batches = make_batches((6,), n_batches=2)
    scores = tpe.compute_scores(model, "snip", batches)
    check_against(scores, oracle_snip(model, batches))
    # Summing |per-batch| would be a different (larger) quantity: the test can tell them apart.
    per_batch = [oracle_snip(model, [b]) for b in batches]
    wrong = {k: per_batch[0][k] + per_batch[1][k] for k in per_batch[0]}
    assert any(not torch.allclose(scores[k], wrong[k], rtol=1e-6) for k in wrong)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_snip_cnn_batchnorm(mode):
    model = make_cnn()
    batches = make_batches((2, 6, 6), n_batches=2)
    options = {} if mode == "train" else {"mode": "eval"}
    scores = tpe.compute_scores(model, "snip", batches, **options)
    check_against(scores, oracle_snip(model, batches, bn_training=(mode == "train")))
    if mode == "train":  # default is batch statistics: the eval-mode oracle must differ
        other = oracle_snip(model, batches, bn_training=False)
        assert not torch.allclose(scores["0.weight"], other["0.weight"], rtol=1e-4)


@pytest.mark.parametrize("factory", [make_mlp, make_cnn], ids=["mlp", "cnn"])
def test_snip_on_pruned_model_matches_oracle_including_pruned_entries(factory):
    model = prune_randomly(factory())
    shape = (6,) if factory is make_mlp else (2, 6, 6)
    batches = make_batches(shape, n_batches=2)
    scores = tpe.compute_scores(model, "snip", batches)
    oracle = oracle_snip(model, batches)
    check_against(scores, oracle)
    # The current mask is not all ones, and at pruned entries SNIP (= |θ ∂L/∂W|) is not zero.
    pruned_scores = torch.cat([scores[n][getattr(model, n.split(".")[0]).weight_mask == 0] for n in scores])
    assert pruned_scores.numel() > 0
    assert bool((pruned_scores > 0).any())


# ================================================================ 2. IterSNIP
@pytest.mark.parametrize("factory", [make_mlp, make_cnn], ids=["mlp", "cnn"])
@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "pruned"])
def test_iter_snip_matches_oracle(factory, pruned):
    model = factory()
    if pruned:
        prune_randomly(model)
    shape = (6,) if factory is make_mlp else (2, 6, 6)
    batches = make_batches(shape, n_batches=2)
    scores = tpe.compute_scores(model, "iter_snip", batches)
    check_against(scores, oracle_iter_snip(model, batches))
    if pruned:
        for name, s in scores.items():
            mask = getattr(model, name.split(".")[0]).weight_mask
            assert bool((mask == 0).any())
            assert bool((s[mask == 0] == 0).all()), f"{name}: pruned entries must score exactly 0"
            assert bool((s[mask != 0] > 0).any())  # (a dead ReLU unit can give exact zeros)


# ================================================================ 3. GraSP
@pytest.mark.parametrize("factory", [make_mlp, make_cnn], ids=["mlp", "cnn"])
@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "pruned"])
def test_grasp_matches_oracle_and_is_signed(factory, pruned):
    model = factory()
    if pruned:
        prune_randomly(model)
    shape = (6,) if factory is make_mlp else (2, 6, 6)
    batches = make_batches(shape, n_batches=2)
    scores = tpe.compute_scores(model, "grasp", batches)
    check_against(scores, oracle_grasp(model, batches))
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    assert bool((flat < 0).any()), "GraSP scores are signed: some must be negative"
    assert bool((flat > 0).any())
    if pruned:
        for name, s in scores.items():
            mask = getattr(model, name.split(".")[0]).weight_mask
            assert bool((s[mask == 0] == 0).all())


def test_grasp_temperature_option():
    model = make_mlp()
    batches = make_batches((6,), n_batches=2)
    scores = tpe.compute_scores(model, "grasp", batches, temperature=1.0)
    check_against(scores, oracle_grasp(model, batches, temperature=1.0))
    default = tpe.compute_scores(model, "grasp", batches)
    assert not torch.allclose(scores["0.weight"], default["0.weight"], rtol=1e-3)


@pytest.mark.parametrize("act", [nn.Tanh, nn.Softplus], ids=["tanh", "softplus"])
def test_grasp_hessian_gradient_product_against_finite_differences(act):
    model = prune_randomly(make_mlp(seed=5, act=act, dims=(4, 5, 3)), amount=0.3)
    batches = make_batches((4,), n_batches=2, seed=7)
    temperature = 200.0

    net, hg = oracle_grasp_hg(model, batches, temperature=temperature)
    keys = net.keys()

    def grad_at(thetas: list[torch.Tensor]) -> list[torch.Tensor]:
        probe = OracleNet(model, bn_training=True)
        with torch.no_grad():
            for p, t in zip(probe.thetas.values(), thetas):
                p.copy_(t)
        total = sum(cross_entropy(probe(x) / temperature, y) for x, y in batches)
        total.backward()
        return [p.grad.detach().clone() for p in probe.thetas.values()]

    theta0 = [p.detach().clone() for p in net.thetas.values()]
    g = grad_at(theta0)
    gmax = max(float(t.abs().max()) for t in g)
    h = 1e-5 / gmax  # perturbation of size ~1e-5 in the largest coordinate
    plus = grad_at([t + h * gi for t, gi in zip(theta0, g)])
    minus = grad_at([t - h * gi for t, gi in zip(theta0, g)])
    fd = {k: (p - m) / (2 * h) for k, p, m in zip(keys, plus, minus)}

    for k in keys:
        torch.testing.assert_close(hg[k], fd[k], rtol=1e-5, atol=1e-6 * float(fd[k].abs().max()))

    scores = tpe.compute_scores(model, "grasp", batches, temperature=temperature)
    for k, theta in zip(keys, theta0):
        expected = fd[k] * theta
        torch.testing.assert_close(scores[k], expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))


# ================================================================ 4. SynFlow
def linear_chain(widths, seed=0, scale=None, dtype=torch.float32) -> nn.Sequential:
    with seeded(seed):
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layer = nn.Linear(a, b, bias=False)
            if scale is not None:
                with torch.no_grad():
                    layer.weight.uniform_(-scale, scale)
            layers.append(layer)
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers).to(dtype)


@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "pruned"])
def test_synflow_closed_form_linear_chain(pruned):
    model = linear_chain((5, 7, 6, 4, 3), dtype=torch.float64)
    if pruned:
        prune_randomly(model, amount=0.3)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    scores = tpe.compute_scores(model, "synflow", input_shape=(5,))
    expected = synflow_closed_form(linears)
    names = target_names(model)
    assert set(scores) == set(names)
    for name, e in zip(names, expected):
        assert_close_rel(scores[name], e, name=name)
    if pruned:
        for name, layer in zip(names, linears):
            assert bool((scores[name][layer.weight_mask == 0] == 0).all())


def test_synflow_closed_form_float32_model():
    model = linear_chain((5, 7, 6, 3), seed=2)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    scores = tpe.compute_scores(model, "synflow", input_shape=(5,))
    for name, e in zip(target_names(model), synflow_closed_form(linears)):
        assert_close_rel(scores[name].double(), e, rtol=1e-5, name=name)


@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "pruned"])
def test_synflow_cnn_batchnorm_against_deepcopy_oracle(pruned):
    model = make_cnn(seed=4)
    if pruned:
        prune_randomly(model, amount=0.3)
    model.train()  # SynFlow must score in eval mode whatever the caller's mode
    scores = tpe.compute_scores(model, "synflow", input_shape=(2, 6, 6))
    oracle = oracle_synflow_deepcopy(model, (2, 6, 6))
    check_against(scores, oracle)
    # Reading the input shape from a data batch gives the same scores.
    x = make_batches((2, 6, 6), n_batches=1)[0][0]
    from_data = tpe.compute_scores(model, "synflow", x)
    check_against(from_data, oracle)


def test_synflow_float64_fallback_on_overflow():
    widths = (8,) * 41  # 40 Linear layers
    model = linear_chain(widths, seed=6, scale=10.0)  # float32 model
    linears = [m for m in model if isinstance(m, nn.Linear)]
    # Precondition: the float32 linearised forward really overflows.
    with torch.no_grad():
        v = torch.ones(8)
        for layer in linears:
            v = layer.weight.abs() @ v
    assert not bool(torch.isfinite(v).all())

    expected = synflow_closed_form(linears, torch.float64)
    assert all(bool(torch.isfinite(e).all()) for e in expected)
    scores = tpe.compute_scores(model, "synflow", input_shape=(8,))
    for name, e in zip(target_names(model), expected):
        s = scores[name]
        assert s.dtype == torch.float64, f"{name}: fallback scores must be float64, got {s.dtype}"
        assert bool(torch.isfinite(s).all())
        assert_close_rel(s, e, name=name)


def test_synflow_explicit_float64_dtype_option():
    model = linear_chain((5, 7, 6, 3), seed=8)  # float32 model, no overflow
    linears = [m for m in model if isinstance(m, nn.Linear)]
    scores = tpe.compute_scores(model, "synflow", input_shape=(5,), dtype=torch.float64)
    for name, e in zip(target_names(model), synflow_closed_form(linears, torch.float64)):
        assert scores[name].dtype == torch.float64
        # float64 computation on float32 weights: agreement far beyond float32 precision
        assert_close_rel(scores[name], e, rtol=1e-12, name=name)
    assert model[0].weight.dtype == torch.float32


# ================================================================ 5. Random and Magnitude
@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "pruned"])
def test_magnitude_is_abs_theta_times_mask(pruned):
    model = make_cnn()
    if pruned:
        prune_randomly(model)
    scores = tpe.compute_scores(model, "magnitude")
    for name, layer in model.named_children():
        if isinstance(layer, TARGET_TYPES):
            theta = layer.weight_orig if pruned else layer.weight
            mask = layer.weight_mask if pruned else torch.ones_like(theta)
            assert torch.equal(scores[f"{name}.weight"], (theta.detach() * mask).abs())
            if pruned:
                assert bool((scores[f"{name}.weight"][mask == 0] == 0).all())


@pytest.mark.parametrize("distribution", ["normal", "uniform"])
def test_random_seeded_deterministic_and_rng_free(distribution):
    model = make_mlp()
    rng_before = torch.get_rng_state()
    a = tpe.compute_scores(model, "random", seed=1, distribution=distribution)
    b = tpe.compute_scores(model, "random", seed=1, distribution=distribution)
    c = tpe.compute_scores(model, "random", seed=2, distribution=distribution)
    assert torch.equal(torch.get_rng_state(), rng_before), "random scoring must not touch the global RNG"
    assert set(a) == {"0.weight", "2.weight", "4.weight"}
    for k in a:
        assert a[k].shape == model.get_submodule(k.split(".")[0]).weight.shape
        assert torch.equal(a[k], b[k])
        assert not torch.equal(a[k], c[k])
    # Changing the global seed does not change seeded scores.
    with seeded(12345):
        d = tpe.compute_scores(model, "random", seed=1, distribution=distribution)
    assert all(torch.equal(a[k], d[k]) for k in a)
    flat = torch.cat([s.reshape(-1) for s in a.values()])
    if distribution == "uniform":
        assert bool((flat >= 0).all()) and bool((flat < 1).all())
    else:
        assert bool((flat < 0).any())
    # The same stream from an explicit generator.
    e = tpe.compute_scores(model, "random", generator=torch.Generator().manual_seed(1), distribution=distribution)
    assert all(torch.equal(a[k], e[k]) for k in a)


# ================================================================ 6. nothing changes
def stateful_model() -> nn.Sequential:
    """A float32 CNN with BN (non-trivial statistics), Dropout, one pruned conv, mixed modes."""
    with seeded(11):
        model = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Conv2d(4, 3, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(3),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(27, 3),
        )
        model.train()
        for _ in range(3):  # real running statistics and num_batches_tracked = 3
            model(torch.randn(8, 2, 6, 6))
        prune.random_unstructured(model[0], "weight", amount=0.3)
    return model


METHOD_CALLS = {
    "random": lambda model, data: tpe.compute_scores(model, "random", seed=3),
    "magnitude": lambda model, data: tpe.compute_scores(model, "magnitude"),
    "snip": lambda model, data: tpe.compute_scores(model, "snip", data),
    "iter_snip": lambda model, data: tpe.compute_scores(model, "iter_snip", data),
    "grasp": lambda model, data: tpe.compute_scores(model, "grasp", data),
    "synflow": lambda model, data: tpe.compute_scores(model, "synflow", input_shape=(2, 6, 6)),
    "synflow_f64": lambda model, data: tpe.compute_scores(model, "synflow", input_shape=(2, 6, 6),
                                                          dtype=torch.float64),
}


@pytest.mark.parametrize("initial_mode", ["train", "eval", "mixed"])
@pytest.mark.parametrize("method", sorted(METHOD_CALLS))
def test_compute_scores_leaves_model_and_rng_untouched(method, initial_mode):
    model = stateful_model()
    if initial_mode == "eval":
        model.eval()
    elif initial_mode == "mixed":
        model.train()
        model[1].eval()
        model[3].eval()
    data = make_batches((2, 6, 6), n_batches=2, dtype=torch.float32)

    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [(name, m.training) for name, m in model.named_modules()]
    flags = [(name, p.requires_grad) for name, p in model.named_parameters()]
    hooks = [(name, len(m._forward_pre_hooks), len(m._forward_hooks)) for name, m in model.named_modules()]
    effective_weight = model[0].weight
    torch.manual_seed(2024)
    rng = torch.get_rng_state()

    scores = METHOD_CALLS[method](model, data)

    assert torch.equal(torch.get_rng_state(), rng), "global RNG state changed"
    after = model.state_dict()
    assert list(after) == list(state)
    for k, v in state.items():
        assert after[k].dtype == v.dtype, k
        assert torch.equal(after[k], v), f"state_dict entry {k} changed"
    assert [(name, m.training) for name, m in model.named_modules()] == modes
    assert [(name, p.requires_grad) for name, p in model.named_parameters()] == flags
    assert [(name, len(m._forward_pre_hooks), len(m._forward_hooks)) for name, m in model.named_modules()] == hooks
    assert all(p.grad is None for p in model.parameters()), "scoring left .grad on the model's parameters"
    assert model[0].weight is effective_weight
    # and the scores are real numbers of the right shapes
    assert set(scores) == {"0.weight", "4.weight", "8.weight"}
    for name, s in scores.items():
        assert s.shape == model.get_submodule(name.split(".")[0]).weight.shape
        assert bool(torch.isfinite(s).all())


def test_synflow_falls_back_to_float64_when_float32_underflows():
    """A deep chain of tiny weights: float32 flow underflows to 0, the fallback recovers the ranking."""
    torch.manual_seed(0)
    layers = []
    for _ in range(40):
        layers += [nn.Linear(8, 8, bias=False), nn.ReLU()]
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.uniform_(-0.01, 0.01)
    scores = tpe.compute_scores(model, "synflow", input_shape=(8,))
    reference = tpe.compute_scores(model, "synflow", input_shape=(8,), dtype=torch.float64)
    for name, s in scores.items():
        assert s.dtype == torch.float64
        assert (s > 0).any()
        torch.testing.assert_close(s, reference[name], rtol=1e-12, atol=0)
