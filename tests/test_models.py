"""Tests of the reference models in ``torch_prune_ext.models``."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from torch_prune_ext.models import (
    MODEL_INPUT_SHAPES,
    MODELS,
    CifarResNet,
    get_model,
    input_shape_of,
    lenet_300_100,
    mlp,
    resnet18,
    resnet20,
    resnet32,
    vgg16_bn,
    vgg19_bn,
)


def prunable_weight_count(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_resnet20_has_270896_prunable_weights() -> None:
    assert prunable_weight_count(resnet20()) == 270_896


def test_vgg16_bn_100_classes_has_14761664_prunable_weights() -> None:
    assert prunable_weight_count(vgg16_bn(100)) == 14_761_664


def test_resnet32_depth_gives_five_blocks_per_stage() -> None:
    model = resnet32()
    assert [len(stage) for stage in (model.layer1, model.layer2, model.layer3)] == [5, 5, 5]


def test_vgg19_has_sixteen_convs_and_no_pool_after_last_stage() -> None:
    model = vgg19_bn()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 16
    assert all(c.bias is not None for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 4
    assert not isinstance(model.features[-1], nn.MaxPool2d)


@pytest.mark.parametrize(
    ("builder", "kwargs", "input_shape", "classes"),
    [
        (resnet20, {}, (3, 32, 32), 10),
        (resnet32, {"num_classes": 100}, (3, 32, 32), 100),
        (vgg16_bn, {"num_classes": 100}, (3, 32, 32), 100),
        (vgg19_bn, {}, (3, 32, 32), 10),
        (resnet18, {}, (3, 64, 64), 200),
        (lenet_300_100, {}, (1, 28, 28), 10),
        (lenet_300_100, {}, (784,), 10),
        (mlp, {"hidden": (32, 16), "batch_norm": True, "dropout": 0.1}, (1, 28, 28), 10),
    ],
)
def test_output_shapes(builder, kwargs, input_shape, classes) -> None:
    model = builder(**kwargs).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *input_shape))
    assert out.shape == (2, classes)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_runs_at_its_input_shape_and_with_functional_call(name: str) -> None:
    kwargs = {"hidden": (16,)} if name == "mlp" else {}
    model = get_model(name, **kwargs).eval()
    x = torch.randn(2, *input_shape_of(name))
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        expected = model(x)
        got = torch.func.functional_call(model, {**params, **buffers}, (x,))
    torch.testing.assert_close(got, expected)


def test_input_shapes_cover_every_model() -> None:
    assert set(MODEL_INPUT_SHAPES) == set(MODELS)
    assert input_shape_of("resnet20") == (3, 32, 32)
    assert input_shape_of("resnet18") == (3, 64, 64)
    assert input_shape_of("lenet_300_100") == (1, 28, 28)


def test_batch_norm_starts_at_identity_affine() -> None:
    for model in (resnet20(), vgg16_bn(), resnet18(num_classes=10), mlp(hidden=(8,), batch_norm=True)):
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_biases_start_at_zero() -> None:
    for model in (resnet20(), vgg16_bn(), lenet_300_100()):
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                assert torch.all(m.bias == 0)


def test_conv_weights_are_kaiming_normal_fan_in() -> None:
    torch.manual_seed(0)
    conv = vgg16_bn().features[3]  # 64 -> 64, fan_in 576, 36,864 weights
    assert isinstance(conv, nn.Conv2d)
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    expected = math.sqrt(2.0 / fan_in)
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert abs(conv.weight.mean().item()) < 0.05 * expected


def test_linear_weights_are_kaiming_normal_fan_in() -> None:
    torch.manual_seed(0)
    layer = lenet_300_100()[1]  # Linear 784 -> 300
    assert isinstance(layer, nn.Linear)
    assert layer.weight.std().item() == pytest.approx(math.sqrt(2.0 / 784), rel=0.05)


def test_resnet20_shortcut_structure() -> None:
    model = resnet20()
    one_by_one = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(one_by_one) == 2
    assert all(c.stride == (2, 2) and c.bias is None for c in one_by_one)
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    identity = [b for stage in (model.layer1, model.layer2, model.layer3) for b in stage if isinstance(b.shortcut, nn.Identity)]
    assert len(identity) == 7
    assert [c.out_channels for c in (model.layer1[0].conv1, model.layer2[0].conv1, model.layer3[0].conv1)] == [16, 32, 64]
    assert model.fc.in_features == 64 and model.fc.bias is not None


def test_resnet18_has_no_maxpool_and_a_stride_one_stem() -> None:
    model = resnet18()
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert model.fc.in_features == 512


def test_lenet_layers() -> None:
    linears = [m for m in lenet_300_100().modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 300), (300, 100), (100, 10)]


def test_get_model_unknown_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match="resnet20") as info:
        get_model("resnet21")
    assert "resnet21" in str(info.value) and "vgg16_bn" in str(info.value)
    with pytest.raises(ValueError, match="Unknown model"):
        input_shape_of("alexnet")


def test_get_model_passes_kwargs() -> None:
    assert get_model("resnet20", num_classes=7).fc.out_features == 7
    assert get_model("VGG16_BN").classifier.out_features == 10


def test_bad_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(21)
    with pytest.raises(ValueError, match="activation"):
        mlp(activation="swishy")
    with pytest.raises(ValueError, match="dropout"):
        mlp(dropout=1.0)


def test_mlp_default_hidden_is_a_tuple() -> None:
    import inspect

    default = inspect.signature(mlp).parameters["hidden"].default
    assert isinstance(default, tuple)
