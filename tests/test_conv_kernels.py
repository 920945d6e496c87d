"""Accelerated pruned Conv2d: outputs and gradients against the masked dense conv, dispatch, bad input."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

from torch_prune_ext.errors import InvalidOptionError
from torch_prune_ext.kernels import AcceleratedConv2d, ConvGeometry, accelerate


@settings(max_examples=15, deadline=None)
@given(c=st.integers(1, 9), o=st.integers(1, 9), k=st.sampled_from([1, 3]), stride=st.sampled_from([1, 2]),
       padding=st.sampled_from([0, 1]), dilation=st.sampled_from([1, 2]), bias=st.booleans(),
       kind=st.sampled_from(["empty", "full", "random"]), seed=st.integers(0, 100))
def test_tap_backend_matches_masked_conv(c, o, k, stride, padding, dilation, bias, kind, seed):
    torch.manual_seed(seed)
    conv = nn.Conv2d(c, o, k, stride=stride, padding=padding, dilation=dilation, bias=bias)
    mask = {"empty": torch.zeros_like(conv.weight), "full": torch.ones_like(conv.weight),
            "random": (torch.rand_like(conv.weight) > 0.5).float()}[kind]
    acc = AcceleratedConv2d(conv.weight, mask, conv.bias, ConvGeometry.of(conv), backend="tap", block_size=4)
    x = torch.randn(2, c, 7, 6, requires_grad=True)
    ref = F.conv2d(x, conv.weight * mask, conv.bias, stride, padding, dilation)
    out = acc(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(ref, [x, conv.weight] + ([conv.bias] if bias else []), g)
    mine = torch.autograd.grad(out, [x, acc.weight] + ([acc.bias] if bias else []), g)
    torch.testing.assert_close(mine[0], grads[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(mine[1], grads[1] * mask, atol=1e-4, rtol=1e-4)
    if bias:
        torch.testing.assert_close(mine[2], grads[2], atol=1e-4, rtol=1e-4)


def test_accelerate_converts_convs_keeps_zeros_and_reports():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, groups=2), nn.Flatten())
    prune.l1_unstructured(net[0], "weight", amount=0.9)
    prune.l1_unstructured(net[2], "weight", amount=0.5)
    x = torch.randn(2, 8, 6, 6)
    before = net(x)
    accelerate(net, conv_backend="auto", block_size=4, table={"cpu": {"conv_max_block_density": {"4": 1.0}}})
    assert isinstance(net[0], AcceleratedConv2d) and net[0].backend == "tap"
    assert type(net[2]) is nn.Conv2d  # grouped: left dense
    report = net.accelerate_report.backends()
    assert report == {"0": "tap", "2": "unchanged"}
    assert "grouped" in str(net.accelerate_report)
    torch.testing.assert_close(net(x), before, atol=1e-5, rtol=1e-4)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for _ in range(3):
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
    assert torch.all(net[0].weight[net[0].weight_mask == 0] == 0)


def test_forced_conv_backend_bad_input_raises():
    conv = nn.Conv2d(4, 4, 3, groups=2)
    prune.l1_unstructured(conv, "weight", amount=0.5)
    with pytest.raises(InvalidOptionError, match="grouped"):
        accelerate(nn.Sequential(conv), conv_backend="tap")
    good = nn.Conv2d(4, 4, 3).double()
    with pytest.raises(InvalidOptionError, match="dtype"):
        AcceleratedConv2d(good.weight, torch.ones_like(good.weight), None, ConvGeometry.of(good), backend="tap")
    with pytest.raises(InvalidOptionError, match="mask shape"):
        AcceleratedConv2d(good.weight, torch.ones(4, 4, 1, 1), None, ConvGeometry.of(good), backend="tap")


TILE4 = {"cpu": {"conv_max_block_density": {"4": 1.0}}}  # the tap backend for any mask, with 4x4 tiles


def pruned_convnet(seed: int, amount: float) -> nn.Sequential:
    """Two pruned convs (channel-structured masks, so whole tiles are empty) around a ReLU."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, stride=2), nn.Flatten())
    for conv in (net[0], net[2]):
        prune.random_structured(conv, "weight", amount=amount, dim=0)
    return net


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_accelerated_conv_under_torch_compile_equals_eager(backend):
    net = accelerate(pruned_convnet(0, 0.5), block_size=4, table=TILE4)
    assert net.accelerate_report.backends() == {"0": "tap", "2": "tap"}
    x = torch.randn(2, 8, 7, 7, requires_grad=True)
    eager = net(x)
    (gx_eager,) = torch.autograd.grad(eager.square().sum(), x)
    compiled = torch.compile(net, backend=backend)  # the layer is a graph break: fullgraph is not required
    out = compiled(x)
    torch.testing.assert_close(out, eager, atol=1e-6, rtol=1e-5)
    (gx,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(gx, gx_eager, atol=1e-5, rtol=1e-4)


def test_state_dict_round_trip_rebuilds_the_plan_and_keeps_zeros(tmp_path):
    source = accelerate(pruned_convnet(0, 0.5), block_size=4, table=TILE4)
    x = torch.randn(2, 8, 7, 7)
    expected = source(x)
    torch.save(source.state_dict(), tmp_path / "acc.pt")
    state = torch.load(tmp_path / "acc.pt")
    # Into an accelerated model with other masks: the loaded masks replace the tiles it runs.
    target = accelerate(pruned_convnet(1, 0.75), block_size=4, table=TILE4)
    target.load_state_dict(state)
    torch.testing.assert_close(target(x), expected, atol=1e-6, rtol=1e-5)
    for i in (0, 2):
        assert torch.equal(target[i].weight_mask, source[i].weight_mask)
        assert torch.all(target[i].weight[target[i].weight_mask == 0] == 0)
        assert torch.equal(target[i].plan.mask, source[i].weight_mask)
    # Into a dense model: the weights hold exact zeros where pruned, so only the masks are extra keys.
    dense = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, stride=2), nn.Flatten())
    result = dense.load_state_dict(state, strict=False)
    assert sorted(result.unexpected_keys) == ["0.weight_mask", "2.weight_mask"] and not result.missing_keys
    torch.testing.assert_close(dense(x), expected, atol=1e-5, rtol=1e-4)
    assert int((dense[0].weight == 0).sum()) == int((source[0].weight_mask == 0).sum()) == 8 * 8 * 9


def test_fp16_on_the_cpu_tap_path_upcasts_to_fp32():
    # Documented: "tap" computes fp16/bf16 in fp32 and casts the result back (README, AcceleratedConv2d).
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1).half()
    mask = (torch.rand_like(conv.weight, dtype=torch.float32) > 0.7).half()
    acc = AcceleratedConv2d(conv.weight, mask, conv.bias, ConvGeometry.of(conv), block_size=4, table=TILE4)
    assert acc.backend == "tap" and acc.weight.dtype == torch.float16
    x = torch.randn(2, 8, 6, 6).half().requires_grad_()
    out = acc(x)
    assert out.dtype == torch.float16
    ref = F.conv2d(x.float(), (conv.weight * mask).float(), conv.bias.float(), padding=1)
    # fp32 accumulation in both: the only difference is the final rounding to fp16 (half an ulp, 2**-11 relative).
    torch.testing.assert_close(out.float(), ref, atol=1e-3, rtol=2 ** -10)
    out.float().sum().backward()
    assert x.grad.dtype == torch.float16 and acc.weight.grad.dtype == torch.float16
    assert torch.all(acc.weight.grad[mask == 0] == 0)


def test_unsupported_dtype_stays_dense_with_a_logged_reason(caplog):
    net = pruned_convnet(0, 0.5).double()
    x = torch.randn(2, 8, 7, 7, dtype=torch.float64)
    before = net(x)
    with caplog.at_level(logging.INFO, logger="torch_prune_ext"):
        accelerate(net, block_size=4, table=TILE4)
    rows = {row.name: row for row in net.accelerate_report.layers}
    assert {name: row.backend for name, row in rows.items()} == {"0": "dense", "2": "dense"}
    assert "dtype torch.float64" in rows["0"].reason and "dtype torch.float64" in caplog.text
    torch.testing.assert_close(net(x), before, atol=1e-12, rtol=1e-12)


def test_mask_of_the_wrong_shape_is_left_unchanged_or_raises_when_forced(caplog):
    net = pruned_convnet(0, 0.5)
    net[2].weight_mask = torch.ones(8, 16, 1, 1)  # broadcastable, but not the weight's shape
    with caplog.at_level(logging.INFO, logger="torch_prune_ext"):
        accelerate(net, block_size=4, table=TILE4)
    assert net.accelerate_report.backends() == {"0": "tap", "2": "unchanged"}
    assert type(net[2]) is nn.Conv2d and "mask shape" in caplog.text
    forced = pruned_convnet(0, 0.5)
    forced[2].weight_mask = torch.ones(8, 16, 1, 1)
    with pytest.raises(InvalidOptionError, match="mask shape"):
        accelerate(forced, conv_backend="tap", block_size=4)


def test_resnet20_logits_after_accelerate_equal_the_masked_dense_logits():
    import torch_prune_ext as tpe
    from torch_prune_ext.models import resnet20

    torch.manual_seed(0)
    model = resnet20().eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    with warnings.catch_warnings():  # block magnitude at 95% empties some layers; the skip paths stay alive
        warnings.simplefilter("ignore")
        tpe.global_prune(model, "magnitude", 0.95, targets=[(m, "weight") for m in convs[1:]],
                         granularity="block", block_size=(32, 32))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        masked = model(x)
    accelerate(model)
    backends = model.accelerate_report.backends()
    assert sum(b == "tap" for b in backends.values()) >= 8, backends
    with torch.no_grad():
        logits = model(x)
    assert masked.std(0).max() > 1e-3  # the logits depend on the input: the comparison is not vacuous
    # fp32, different summation order (tap tiles vs mkldnn): 1e-5 of the logits' scale.
    torch.testing.assert_close(logits, masked, atol=1e-5 * float(masked.abs().max()), rtol=1e-4)
