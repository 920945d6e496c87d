"""make_plan builds the plan of a linear or (with ``geometry``) a conv layer; make_conv_plan is the conv
spelling with the same options, by position or by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torch_prune_ext.errors import InvalidOptionError
from torch_prune_ext.kernels import ConvGeometry, make_conv_plan, make_plan
from torch_prune_ext.kernels.conv import ConvPlan
from torch_prune_ext.kernels.function import LayerPlan

GEOMETRY = ConvGeometry.of(nn.Conv2d(8, 8, 3))
TABLE = {"cpu": {"conv_max_block_density": {"8": 0.5}}}


def conv_mask() -> torch.Tensor:
    mask = torch.zeros(8, 8, 3, 3)
    mask[:, :, 1, 1] = 1  # one tap of nine: tile density 1/9
    return mask


def test_make_conv_plan_is_make_plan_with_geometry_by_position_and_by_name():
    by_position = make_conv_plan(conv_mask(), GEOMETRY, "cpu", torch.float32, "auto", None, TABLE)
    by_name = make_conv_plan(conv_mask(), GEOMETRY, "cpu", table=TABLE)
    direct = make_plan(conv_mask(), "cpu", table=TABLE, geometry=GEOMETRY)
    for plan in (by_position, by_name, direct):
        assert isinstance(plan, ConvPlan)
        assert (plan.backend, plan.reason) == ("tap", "tile density 0.111 <= 0.5 at 8x8 (crossover table)")
        assert torch.equal(plan.mask, conv_mask())


def test_without_geometry_the_plan_is_a_linear_plan():
    plan = make_plan(torch.ones(8, 8), "cpu", backend="csr")
    assert isinstance(plan, LayerPlan) and plan.backend == "csr"


@pytest.mark.parametrize("call, phrase", [
    (lambda: make_plan(torch.ones(8, 8), "cpu", backend="tap"), "backend='tap' is unknown"),
    (lambda: make_conv_plan(conv_mask(), GEOMETRY, "cpu", backend="csr"), "conv backend='csr' is unknown"),
    (lambda: make_conv_plan(conv_mask(), GEOMETRY, "cpu", torch.float64, "tap"), "does not support dtype"),
])
def test_each_kind_of_layer_takes_only_its_own_backends(call, phrase):
    with pytest.raises(InvalidOptionError, match=phrase):
        call()
