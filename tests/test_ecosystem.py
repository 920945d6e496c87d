"""Pruned models in the PyTorch ecosystem: save/load, deepcopy, pickle, compile, DDP, dtype and
device moves, channels_last, torch.export, sparsity_report, accelerate after a round trip.

Every test prunes through both paths: ``tpe.global_prune`` (masks applied by
``custom_from_mask`` without autograd) and ``prune.global_unstructured(..., pruning_method=tpe.SynFlow)``.
"""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import torch_prune_ext as tpe

PATHS = ["global_prune", "drop_in"]


def conv_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 6 * 6, 10))


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def pruned(path: str, make=conv_net, shape=(3, 8, 8), sparsity=0.8) -> nn.Module:
    model = make()
    if path == "global_prune":
        tpe.global_prune(model, "synflow", sparsity, input_shape=shape, rounds=3, progress=False)
    else:
        prune.global_unstructured(tpe.prunable_parameters(model), pruning_method=tpe.SynFlow, amount=sparsity,
                                  model=model, input_shape=shape, rounds=3, progress=False)
    return model


def x_for(shape=(3, 8, 8)) -> torch.Tensor:
    return torch.randn(4, *shape, generator=torch.Generator().manual_seed(1))


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.endswith("_mask")}


def assert_same_pruning(a: nn.Module, b: nn.Module) -> None:
    ma, mb = masks(a), masks(b)
    assert ma.keys() == mb.keys() and ma
    for k in ma:
        assert torch.equal(ma[k].cpu(), mb[k].cpu()), k


@pytest.mark.parametrize("path", PATHS)
def test_save_load_whole_model_and_state_dict(path, tmp_path):
    model = pruned(path).eval()
    x = x_for()
    ref = model(x)
    torch.save(model, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    assert torch.equal(loaded(x), ref) and prune.is_pruned(loaded)
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    fresh = tpe.load_pruned_state_dict(conv_net(), torch.load(tmp_path / "sd.pt", weights_only=True)).eval()
    assert torch.equal(fresh(x), ref)
    assert_same_pruning(fresh, model)


@pytest.mark.parametrize("path", PATHS)
def test_deepcopy_and_pickle_right_after_pruning(path):
    """torch's custom_from_mask computes the cached ``module.weight = orig * mask`` with autograd on,
    a non-leaf that plain deepcopy refuses; every pruned module gets a deepcopy that recomputes it."""
    model = pruned(path)
    x = x_for()
    assert torch.equal(copy.deepcopy(model).eval()(x), model.eval()(x))
    assert_same_pruning(copy.deepcopy(model), model)
    again = pickle.loads(pickle.dumps(model))  # pickle works
    assert torch.equal(again.eval()(x), model.eval()(x))
    assert_same_pruning(again, model)
    assert torch.equal(copy.deepcopy(again)(x), model(x))  # the unpickled model copies too


@pytest.mark.parametrize("stage", ["after_forward", "after_backward", "after_step"])
@pytest.mark.parametrize("path", PATHS)
def test_deepcopy_at_any_point_of_training(path, stage):
    """``best = copy.deepcopy(model)`` mid-training: an exact, independent, graph-free copy; training unchanged."""
    model, twin = pruned(path).train(), pruned(path).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    x, y = x_for(), torch.tensor([0, 1, 2, 3])
    loss = nn.functional.cross_entropy(model(x), y)
    if stage != "after_forward":
        loss.backward()
    if stage == "after_step":
        optimizer.step()
    assert any(m.__dict__["weight"].grad_fn is not None for m, _ in tpe.prunable_parameters(model))
    best = copy.deepcopy(model)
    assert all(m.__dict__["weight"].grad_fn is None for m, _ in tpe.prunable_parameters(best))
    for (k, a), (_, b) in zip(best.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr(), k
    for (a, _), (b, _) in zip(tpe.prunable_parameters(best), tpe.prunable_parameters(model)):
        # the copy's weight is the current orig * mask (what the next forward uses; after a step the
        # original's cached weight is still the one before the step)
        assert torch.equal(a.weight, (b.weight_orig * b.weight_mask).detach())
    # the original trains on exactly as a model that was never copied
    if stage == "after_forward":
        loss.backward()
    twin_loss = nn.functional.cross_entropy(twin(x), y)
    twin_loss.backward()
    if stage != "after_step":
        optimizer.step()
    twin_optimizer.step()
    for _ in range(2):
        for net, opt in ((model, optimizer), (twin, twin_optimizer)):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values()))
    # and the copy trains on its own, its pruned entries staying zero
    copy_optimizer = torch.optim.SGD(best.parameters(), lr=0.1)
    nn.functional.cross_entropy(best(x), y).backward()
    copy_optimizer.step()
    assert all(bool((m.weight[m.weight_mask == 0] == 0).all()) for m, _ in tpe.prunable_parameters(best))


def test_deepcopy_after_torch_own_pruning_with_make_deepcopyable():
    model = conv_net()
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    model(x_for()).sum().backward()
    with pytest.raises(RuntimeError, match="deepcopy"):
        copy.deepcopy(model)  # torch's own pruning functions: plain deepcopy still refuses
    tpe.make_deepcopyable(model)
    assert torch.equal(copy.deepcopy(model)(x_for()), model(x_for()))


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("path", PATHS)
def test_torch_compile(path, backend):
    torch._dynamo.reset()
    model = pruned(path).eval()
    x = x_for()
    ref = model(x)
    compiled = torch.compile(model, backend=backend)
    assert torch.allclose(compiled(x), ref, atol=1e-6)
    if backend == "eager":
        explanation = torch._dynamo.explain(model)(x)
        print(f"{path}: graph breaks = {explanation.graph_break_count}, graphs = {explanation.graph_count}")
        assert explanation.graph_break_count == 0


DDP_SCRIPT = """
import sys, datetime
import torch, torch.distributed as dist
from torch import nn
sys.path.insert(0, {tests!r})
import test_ecosystem as eco
import torch_prune_ext as tpe
model = eco.pruned({path!r}, eco.mlp, (32,))
dist.init_process_group("gloo", init_method="file://{store}", rank=0, world_size=1,
                        timeout=datetime.timedelta(seconds=60))
try:
    ddp = nn.parallel.DistributedDataParallel(model)
    ddp(torch.randn(8, 32)).sum().backward()
    for module, name in tpe.prunable_parameters(model):
        grad = getattr(module, name + "_orig").grad
        assert grad is not None
        assert bool((grad[getattr(module, name + "_mask") == 0] == 0).all()), name
finally:
    dist.destroy_process_group()
print("DDP OK")
"""


@pytest.mark.parametrize("path", PATHS)
def test_ddp_after_pruning_masks_gradients(path, tmp_path):
    """In a fresh interpreter: after torch.compile(backend="aot_eager") ran in this process, gloo's
    process-group start hangs here, so DDP gets a clean process."""
    script = DDP_SCRIPT.format(tests=str(Path(__file__).parent), path=path, store=tmp_path / "store")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "DDP OK" in result.stdout


@pytest.mark.parametrize("path", PATHS)
def test_dtype_and_meta_round_trip(path):
    model = pruned(path)
    before = {k: v.clone() for k, v in masks(model).items()}
    model.to(torch.float64)
    # torch's Module.to casts every floating buffer, masks included: they follow the weights' dtype
    assert all(v.dtype == torch.float64 for v in masks(model).values())
    assert all(torch.equal(v.float(), before[k]) for k, v in masks(model).items())
    model.eval()(x_for().double())
    model.to("meta")
    assert all(v.device.type == "meta" for v in masks(model).values())
    model.to_empty(device="cpu")  # values are lost on meta: reload the masks from a checkpoint
    assert set(masks(model)) == set(before)


@pytest.mark.parametrize("path", PATHS)
def test_channels_last_weights(path):
    ref = pruned(path)
    model = conv_net().to(memory_format=torch.channels_last)
    if path == "drop_in":  # torch's global_unstructured uses final_mask[...].view_as(param): fails
        with pytest.raises(RuntimeError, match="view size"):
            prune.global_unstructured(tpe.prunable_parameters(model), pruning_method=tpe.SynFlow, amount=0.8,
                                      model=model, input_shape=(3, 8, 8), rounds=3, progress=False)
        return
    if path == "global_prune":
        tpe.global_prune(model, "synflow", 0.8, input_shape=(3, 8, 8), rounds=3, progress=False)
    else:
        prune.global_unstructured(tpe.prunable_parameters(model), pruning_method=tpe.SynFlow, amount=0.8,
                                  model=model, input_shape=(3, 8, 8), rounds=3, progress=False)
    assert_same_pruning(model, ref)
    scores = tpe.compute_scores(conv_net().to(memory_format=torch.channels_last), "magnitude")
    plain = tpe.compute_scores(conv_net(), "magnitude")
    assert all(torch.equal(scores[k], plain[k]) for k in plain)


@pytest.mark.parametrize("path", PATHS)
def test_export_permanent_model(path):
    model = tpe.make_permanent(pruned(path)).eval()
    x = x_for()
    exported = torch.export.export(model, (x,))
    assert torch.allclose(exported.module()(x), model(x), atol=1e-6)


def test_onnx_export(tmp_path):
    pytest.importorskip("onnx", reason="onnx is not installed")
    model = tpe.make_permanent(pruned("global_prune")).eval()
    torch.onnx.export(model, (x_for(),), str(tmp_path / "m.onnx"))


@pytest.mark.parametrize("path", PATHS)
def test_sparsity_report_agrees_with_zero_count_after_make_permanent(path):
    model = pruned(path)
    report = tpe.sparsity_report(model)
    tpe.make_permanent(model)
    zeros = sum(int((m.weight == 0).sum()) for m, _ in tpe.prunable_parameters(model))
    total = sum(m.weight.numel() for m, _ in tpe.prunable_parameters(model))
    assert report.sparsity == pytest.approx(zeros / total)


@pytest.mark.parametrize("path", PATHS)
def test_accelerate_after_save_load(path, tmp_path):
    model = pruned(path, mlp, (32,), sparsity=0.9).eval()
    x = torch.randn(5, 32)
    ref = model(x)
    torch.save(model, tmp_path / "m.pt")
    loaded = tpe.accelerate(torch.load(tmp_path / "m.pt", weights_only=False), device="cpu")
    assert type(loaded[0]).__name__ == "AcceleratedLinear"
    assert torch.allclose(loaded(x), ref, atol=1e-5)
