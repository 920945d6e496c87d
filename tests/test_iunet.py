"""IUNET pipeline: NT-Xent against explicit loops, κ-init, pruning/rewind, SCARF, views, consistency, runner."""

from __future__ import annotations

import builtins
import math

import pytest
import torch
from builders import relu_mlp
from torch import nn

from torch_prune_ext.errors import InvalidOptionError, TargetError
from torch_prune_ext.iunet import (
    IUNETConfig,
    Scarf,
    StandardAugment,
    VisionViews,
    color_jitter,
    consistency,
    encode,
    encoder_targets,
    finetune,
    invariance_loss,
    load_tabular,
    nt_xent,
    proactive_init_,
    prune_encoder,
    random_grayscale,
    random_resized_crop,
    reset_batchnorm_,
    rewind_,
    run_iunet,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add spin-waiting on busy shared cores (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_mlp(sizes=(6, 12, 10, 3), bn=False, seed=0):
    return relu_mlp(sizes, seed, bn)


def toy_data(n=64, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return x, y


# ------------------------------------------------------------------ NT-Xent
def nt_xent_loops(z1, z2, tau):
    """SimCLR's loss written out term by term."""
    z = [v for v in z1] + [v for v in z2]
    n2 = len(z)
    n = n2 // 2

    def sim(a, b):
        return float(a @ b) / (math.sqrt(float(a @ a)) * math.sqrt(float(b @ b))) / tau

    total = 0.0
    for i in range(n2):
        p = i + n if i < n else i - n
        denom = sum(math.exp(sim(z[i], z[k])) for k in range(n2) if k != i)
        total += -math.log(math.exp(sim(z[i], z[p])) / denom)
    return total / n2


@pytest.mark.parametrize("tau", [0.5, 0.1, 1.0])
def test_nt_xent_matches_explicit_formula(tau):
    z1 = torch.tensor([[1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [0.0, 3.0, 1.0]], dtype=torch.float64)
    z2 = torch.tensor([[0.9, 0.2, 1.5], [1.0, -1.0, 0.3], [-0.2, 2.0, 2.0]], dtype=torch.float64)
    assert float(nt_xent(z1, z2, tau)) == pytest.approx(nt_xent_loops(z1, z2, tau), rel=1e-12)


def test_nt_xent_gradient_finite_differences():
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    z2 = torch.randn(4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: nt_xent(a, b, 0.5), (z1, z2), eps=1e-6, atol=1e-7)
    # and an explicit central difference on one entry against the loop formula
    loss = nt_xent(z1, z2, 0.5)
    loss.backward()
    h = 1e-6
    zp, zm = z1.detach().clone(), z1.detach().clone()
    zp[1, 2] += h
    zm[1, 2] -= h
    fd = (nt_xent_loops(zp, z2.detach(), 0.5) - nt_xent_loops(zm, z2.detach(), 0.5)) / (2 * h)
    assert float(z1.grad[1, 2]) == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_nt_xent_errors():
    with pytest.raises(ValueError, match="same shape"):
        nt_xent(torch.zeros(3, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="at least 2"):
        nt_xent(torch.ones(1, 2), torch.ones(1, 2))
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(torch.ones(2, 2), torch.ones(2, 2), 0.0)


def test_invariance_loss_uses_encoder_output_and_lambda():
    net = tiny_mlp()
    x, y = toy_data(8)
    v1, v2 = x + 0.1, x - 0.2
    loss, parts = invariance_loss(net, net[-1], x, y, v1, v2, weight=0.7, temperature=0.5)
    feats1 = net[:-1](v1)
    feats2 = net[:-1](v2)
    ce = nn.functional.cross_entropy(net(x), y)
    expected = ce + 0.7 * nt_xent_loops(feats1.detach().double(), feats2.detach().double(), 0.5)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    feats, logits = encode(net, x, net[-1])
    assert torch.allclose(feats, net[:-1](x)) and logits.shape == (8, 3)
    loss0, parts0 = invariance_loss(net, net[-1], x, y, v1, v2, weight=0.0)
    assert float(loss0.detach()) == pytest.approx(float(ce.detach())) and parts0["nt_xent"] == 0.0


# ------------------------------------------------------------------ proactive init
def test_proactive_init_scales_weights_only():
    net = tiny_mlp(bn=True)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear):
                m.bias.uniform_(-1, 1)
            if isinstance(m, nn.BatchNorm1d):
                m.weight.uniform_(0.5, 1.5)
                m.running_mean.uniform_(-1, 1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    theta = proactive_init_(net, 0.125)
    linear_weights = {f"{n}.weight" for n, m in net.named_modules() if isinstance(m, nn.Linear)}
    assert set(theta) == linear_weights
    for k, v in net.state_dict().items():
        if k in linear_weights:
            assert torch.equal(v, before[k] * 0.125)
            assert torch.equal(theta[k], before[k])
        else:  # biases, BatchNorm affine parameters and buffers untouched
            assert torch.equal(v, before[k]), k
    # the snapshot is a copy, not a view
    theta["0.weight"].add_(1.0)
    assert torch.equal(net[0].weight, before["0.weight"] * 0.125)


@pytest.mark.parametrize("kappa", [0, -1, float("nan"), True, "a"])
def test_proactive_init_rejects_bad_kappa(kappa):
    net = tiny_mlp()
    before = net[0].weight.clone()
    with pytest.raises(ValueError, match="kappa"):
        proactive_init_(net, kappa)
    assert torch.equal(net[0].weight, before)


# ------------------------------------------------------------------ prune, rewind, finetune
@pytest.mark.parametrize("sparsity", [0.3, 0.77, 0.9])
def test_prune_encoder_exact_count_and_dense_head(sparsity):
    net = tiny_mlp()
    n_enc = sum(m.weight.numel() for m, _ in encoder_targets(net))
    assert n_enc == 6 * 12 + 12 * 10
    prune_encoder(net, sparsity)
    pruned = sum(int((m.weight_mask == 0).sum()) for m, _ in encoder_targets(net))
    assert pruned == round(sparsity * n_enc)
    assert not hasattr(net[-1], "weight_mask") and "weight" in net[-1]._parameters


def test_rewind_to_theta_dagger_and_bn_reset():
    net = tiny_mlp(bn=True)
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    theta = proactive_init_(net, 0.125)
    x, y = toy_data(32)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    assert net[1].running_mean.abs().sum() > 0
    prune_encoder(net, 0.6)
    rewind_(net, theta, initial)
    for m, _ in encoder_targets(net):
        name = next(n for n, mm in net.named_modules() if mm is m) + ".weight"
        mask = m.weight_mask.bool()
        assert torch.equal(m.weight_orig[mask], theta[name][mask])  # survivors = unscaled θ†
        assert bool((m.weight_orig[~mask] == 0).all()) and bool((m.weight[~mask] == 0).all())
        assert torch.equal(m.weight[mask], theta[name][mask])
    assert torch.equal(net[-1].weight, theta[f"{len(net) - 1}.weight"])  # dense head also rewound to θ†
    assert torch.equal(net[0].bias, initial["0.bias"])
    bn = net[1]
    assert torch.equal(bn.running_mean, torch.zeros(12)) and torch.equal(bn.running_var, torch.ones(12))
    assert int(bn.num_batches_tracked) == 0


def test_rewind_rejects_unknown_name():
    net = tiny_mlp()
    with pytest.raises(TargetError, match="not a parameter"):
        rewind_(net, {"7.weight": torch.zeros(2, 2)})


def test_masks_fixed_during_finetune_with_weight_decay():
    net = tiny_mlp()
    prune_encoder(net, 0.7)
    masks = {id(m): m.weight_mask.clone() for m, _ in encoder_targets(net)}
    x, y = toy_data(48)
    seen_steps = []
    for opt_name in ("sgd", "adamw"):
        finetune(net, (x, y), epochs=1, batch_size=8, optimizer=opt_name, lr=0.1, weight_decay=0.5,
                 generator=torch.Generator().manual_seed(0))
        for m, _ in encoder_targets(net):
            assert torch.equal(m.weight_mask, masks[id(m)])
            dead = masks[id(m)] == 0
            assert bool((m.weight[dead] == 0).all()) and bool((m.weight_orig[dead] == 0).all())
            seen_steps.append(int((m.weight[~dead] != 0).sum()))
    assert all(s > 0 for s in seen_steps)


def test_masks_fixed_after_every_step():
    net = tiny_mlp()
    prune_encoder(net, 0.5)
    dead = net[0].weight_mask == 0
    x, y = toy_data(40)
    violations = []

    def check(_module, _args):
        violations.append(int((net[0].weight_orig[dead] != 0).sum()))

    handle = net[2].register_forward_pre_hook(check)  # runs at every forward, i.e. after every step
    finetune(net, (x, y), epochs=2, batch_size=8, optimizer="adam", lr=0.05, weight_decay=1.0)
    handle.remove()
    assert len(violations) == 10 and sum(violations) == 0


def test_reset_batchnorm():
    bn = nn.BatchNorm1d(3)
    bn(torch.randn(10, 3) + 2)
    reset_batchnorm_(bn)
    assert torch.equal(bn.running_mean, torch.zeros(3)) and int(bn.num_batches_tracked) == 0


# ------------------------------------------------------------------ augmentations
def test_scarf_replaces_exact_fraction_from_marginals():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(50, 10, generator=g)
    scarf = Scarf(train, corruption=0.6, generator=torch.Generator().manual_seed(1))
    batch = train[:20] + 100.0  # values no training row has, so replacements are visible
    out = scarf(batch)
    changed = out != batch
    assert changed.sum(1).tolist() == [6] * 20  # exactly round(0.6 * 10) per row
    for i, j in changed.nonzero().tolist():
        assert bool((train[:, j] == out[i, j]).any())  # from the feature's own column
    assert torch.equal(out[~changed], batch[~changed])
    again = Scarf(train, 0.6, generator=torch.Generator().manual_seed(1))(batch)
    assert torch.equal(out, again)
    assert torch.equal(Scarf(train, 0.0)(batch), batch)
    assert (Scarf(train, 1.0)(batch) != batch).all()
    with pytest.raises(ValueError, match="features"):
        scarf(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="fraction"):
        Scarf(train, 1.5)


def test_vision_augmentations_shapes_ranges_reproducible():
    x = torch.rand(6, 3, 12, 10)
    for fn in (
        lambda t, g: random_resized_crop(t, generator=g),
        lambda t, g: color_jitter(t, generator=g),
        lambda t, g: random_grayscale(t, p=0.5, generator=g),
        lambda t, g: VisionViews(generator=g)(t),
        lambda t, g: StandardAugment(padding=2, generator=g)(t),
    ):
        a = fn(x, torch.Generator().manual_seed(5))
        b = fn(x, torch.Generator().manual_seed(5))
        c = fn(x, torch.Generator().manual_seed(6))
        assert a.shape == x.shape and a.dtype == x.dtype
        assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
        assert torch.equal(a, b) and not torch.equal(a, c)
    assert random_resized_crop(x, size=(5, 7)).shape == (6, 3, 5, 7)
    # full-image box with ratio 1 is the identity
    assert torch.allclose(random_resized_crop(x[:, :, :8, :8], scale=(1.0, 1.0), ratio=(1.0, 1.0)), x[:, :, :8, :8],
                          atol=1e-6)
    gray = random_grayscale(x, p=1.0)
    assert torch.allclose(gray[:, 0], 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])
    assert torch.equal(color_jitter(x, p=0.0), x)
    with pytest.raises(ValueError, match="N, C, H, W"):
        color_jitter(torch.rand(3, 4))


# ------------------------------------------------------------------ consistency
def test_consistency_hand_made():
    net = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.eye(2))
    x = torch.tensor([[2.0, 1.0], [1.0, 3.0], [0.0, 1.0], [5.0, 4.0]])
    # negate the second feature: class 0 rows stay 0; class 1 rows flip to 0 ⇒ 2 of 4 unchanged
    negate = lambda b: b * torch.tensor([1.0, -1.0])
    assert consistency(net, x, negate) == 0.5
    loader = [(x[:2], torch.zeros(2)), (x[2:], torch.zeros(2))]
    assert consistency(net, loader, negate) == 0.5
    assert consistency(net, (x, torch.zeros(4, dtype=torch.long)), lambda b: b) == 1.0
    net.train()
    consistency(net, x, negate)
    assert net.training
    with pytest.raises(ValueError, match="no inputs"):
        consistency(net, [], negate)


# ------------------------------------------------------------------ pipeline
def test_run_iunet_end_to_end_tabular_synthetic():
    x, y = toy_data(96)
    xt, yt = toy_data(48, seed=1)
    cfg = IUNETConfig(epochs=2, finetune_epochs=2, batch_size=16, sparsity=0.8, progress=False, seed=3)
    report = run_iunet(lambda: tiny_mlp(bn=True), (x, y), (xt, yt), cfg)
    assert [s.name for s in report.stages] == ["init", "ilo", "pruned", "rewound", "finetuned"]
    assert report.n_encoder == 6 * 12 + 12 * 10 and report.n_pruned == round(0.8 * report.n_encoder)
    assert report.encoder_sparsity == pytest.approx(report.n_pruned / report.n_encoder)
    assert all(0 <= s.test_accuracy <= 1 and 0 <= s.consistency <= 1 for s in report.stages)
    assert not hasattr(report.model[-1], "weight_mask")
    d = report.to_dict()
    import json

    json.dumps(d)
    assert "finetuned" in str(report) and d["n_pruned"] == report.n_pruned
    # same seed ⇒ same result; the global RNG is not consumed
    state = torch.random.get_rng_state()
    again = run_iunet(lambda: tiny_mlp(bn=True), (x, y), (xt, yt), cfg)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert again.final_accuracy == report.final_accuracy


def test_run_iunet_images_with_projection_and_no_pruning():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 1, 8, 8, generator=g)
    y = (x[:, 0, :, :4].mean((1, 2)) > x[:, 0, :, 4:].mean((1, 2))).long()
    build = lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 2))
    cfg = IUNETConfig(epochs=1, finetune_epochs=1, batch_size=16, sparsity=0.0, projection_dim=4,
                      projection_hidden=8, progress=False)
    report = run_iunet(build, (x, y), (x, y), cfg)
    assert [s.name for s in report.stages] == ["init", "ilo"] and report.encoder_sparsity == 0.0
    report = run_iunet(build(), torch.utils.data.TensorDataset(x, y), (x, y),
                       IUNETConfig(epochs=1, finetune_epochs=1, batch_size=16, progress=False))
    assert report.stages[-1].name == "finetuned"


def test_config_and_input_errors():
    with pytest.raises(InvalidOptionError, match="sparsity"):
        IUNETConfig(sparsity=1.5)
    with pytest.raises(InvalidOptionError, match="temperature"):
        IUNETConfig(temperature=0)
    with pytest.raises(ValueError, match="pair of tensors"):
        run_iunet(tiny_mlp(), [1, 2, 3], toy_data(), IUNETConfig(progress=False))
    with pytest.raises(TargetError, match="hidden layer|encoder"):
        run_iunet(nn.Linear(6, 3), toy_data(), toy_data(), IUNETConfig(progress=False))


# ------------------------------------------------------------------ tabular (scikit-learn)
def test_load_tabular_standardised():
    pytest.importorskip("sklearn", reason="scikit-learn is the optional 'tabular' extra")
    (xtr, ytr), (xte, yte) = load_tabular("wine", seed=0)
    assert xtr.shape[1] == 13 and xtr.dtype == torch.float32 and ytr.dtype == torch.long
    assert torch.allclose(xtr.mean(0), torch.zeros(13), atol=1e-5)
    assert torch.allclose(xtr.std(0, unbiased=False), torch.ones(13), atol=1e-4)
    assert xte.shape[0] + xtr.shape[0] == 178
    with pytest.raises(ValueError, match="Unknown tabular"):
        load_tabular("iris")


def test_run_iunet_on_real_tabular_data():
    pytest.importorskip("sklearn", reason="scikit-learn is the optional 'tabular' extra")
    train, test = load_tabular("breast_cancer", seed=0)
    cfg = IUNETConfig(epochs=3, finetune_epochs=3, batch_size=64, sparsity=0.8, progress=False)
    report = run_iunet(lambda: tiny_mlp((30, 64, 64, 2)), train, test, cfg)
    assert report.final_accuracy > 0.85


def test_load_tabular_without_sklearn(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError("no sklearn")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"pip install torch-prune-ext\[tabular\]"):
        load_tabular("wine")


def test_finetune_skips_a_last_batch_of_one_with_batchnorm():
    net = tiny_mlp(bn=True)
    x, y = toy_data(17)
    losses = finetune(net, (x, y), epochs=1, batch_size=8, generator=torch.Generator().manual_seed(0))
    assert len(losses) == 1 and math.isfinite(losses[0])


def test_run_iunet_on_standardised_images():
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(32, 1, 8, 8, generator=g) - 0.13) / 0.31  # standardised pixels, negative values
    y = (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long()
    build = lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 2))
    report = run_iunet(build, (x, y), (x, y), IUNETConfig(epochs=1, finetune_epochs=1, batch_size=16, progress=False))
    assert report.n_pruned == round(0.9 * 64 * 16)
