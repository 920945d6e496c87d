"""Accelerated pruned Conv2d: outputs and gradients against the masked dense conv, dispatch, bad input."""

from __future__ import annotations

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
