"""NTK-SAP redraws a Hugging Face Conv1D weight, stored (in, out), with the fan_in of its input axis.

transformers is not needed: a Conv1D is recognised by its class name and module
(``torch_prune_ext.core.targets.is_hf_conv1d``), so a stand-in with transformers' layout is used.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torch_prune_ext as tpe
from torch_prune_ext.methods.ntksap import NTKSAPConfig, iter_draws, transposed_weight_keys


class Conv1D(nn.Module):
    """transformers.pytorch_utils.Conv1D: a Linear whose weight is stored transposed, (in, out)."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).reshape(*x.shape[:-1], self.nf)


Conv1D.__module__ = "transformers.pytorch_utils"
N_IN, N_OUT = 400, 40


def _first_draw(layer, init=None):
    torch.manual_seed(0)
    net = nn.Sequential(layer, nn.ReLU(), nn.Linear(N_OUT, 2))
    config = NTKSAPConfig(repeats=1, batch_size=2, **({"init": init} if init else {}))
    common, _ = tpe.NTKSAP.parse_options({"seed": 0, "input_shape": (N_IN,)})
    problem = tpe.NTKSAP.prepare(net, None, None, common, config)
    return net, next(iter_draws(problem, config)).theta[0]


def test_conv1d_redraw_is_the_linear_draw_transposed_with_fan_in_from_the_input_axis():
    net, conv1d = _first_draw(Conv1D(N_OUT, N_IN))
    assert transposed_weight_keys(net) == {"0.weight"}
    assert tuple(conv1d.shape) == (N_IN, N_OUT)  # the stored layout
    assert float(conv1d.std()) == pytest.approx(math.sqrt(2 / N_IN), rel=0.05)  # not sqrt(2 / N_OUT)
    _, linear = _first_draw(nn.Linear(N_IN, N_OUT))
    assert torch.equal(conv1d, linear.t())


def test_a_custom_init_sees_conv1d_in_pytorch_layout():
    seen = []

    def init(t, g):
        seen.append(tuple(t.shape))
        return nn.init.xavier_normal_(t, generator=g)

    _, theta = _first_draw(Conv1D(N_OUT, N_IN), init)
    assert seen[0] == (N_OUT, N_IN) and tuple(theta.shape) == (N_IN, N_OUT)


def test_ntksap_prunes_a_conv1d_model_exactly():
    torch.manual_seed(0)
    net = nn.Sequential(Conv1D(16, 8), nn.ReLU(), Conv1D(4, 16))
    assert [type(m).__name__ for m, _ in tpe.prunable_parameters(net)] == ["Conv1D", "Conv1D"]
    report = tpe.global_prune(net, "ntksap", 0.5, input_shape=(8,), rounds=2, repeats=1, progress=False)
    assert report.layers.numel - report.layers.kept == round(0.5 * (8 * 16 + 16 * 4))
    assert torch.isfinite(net(torch.randn(3, 8))).all()
