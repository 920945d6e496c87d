"""Block-sparse kernels, CPU sparse path, dispatcher and accelerate() (kernel.md §4)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

import torch_prune_ext as tpe
from torch_prune_ext.errors import InvalidOptionError
from torch_prune_ext.kernels import BlockSparseWeight, accelerate, choose_backend, is_2_4, make_plan, masked_linear
from torch_prune_ext.kernels.accelerate import AcceleratedLinear
from torch_prune_ext.kernels.triton_kernels import triton_available

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(
    not (HAS_TRITON and triton_available()), reason="triton not installed (or no CUDA and TRITON_INTERPRET unset)"
)
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def block_mask(n, k, bs, density, gen, inner_zeros=True):
    bn, bk = (bs, bs) if isinstance(bs, int) else bs
    nb, kb = -(-n // bn), -(-k // bk)
    occ = torch.rand(nb, kb, generator=gen) < density
    m = occ.repeat_interleave(bn, 0).repeat_interleave(bk, 1)[:n, :k].float()
    if inner_zeros:
        m = m * (torch.rand(n, k, generator=gen) > 0.2).float()
    return m


def check_against_reference(n, k, batch, bs, density, dtype, bias, backend, seed=0, mask=None):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=gen).to(DEV, dtype)
    m = (block_mask(n, k, bs, density, gen) if mask is None else mask).to(DEV, dtype)
    b = torch.randn(n, generator=gen).to(DEV, dtype) if bias else None
    x = torch.randn(batch, k, generator=gen).to(DEV, dtype)
    g = torch.randn(batch, n, generator=gen).to(DEV, dtype)
    plan = make_plan(m, DEV, dtype, backend=backend, block_size=bs)
    assert plan.backend == backend
    outs = []
    for fn in (lambda xx, ww, bb: masked_linear(xx, ww, bb, plan), lambda xx, ww, bb: F.linear(xx, ww * m, bb)):
        xx = x.clone().requires_grad_()
        ww = w.clone().requires_grad_()
        bb = b.clone().requires_grad_() if bias else None
        y = fn(xx, ww, bb)
        y.backward(g)
        outs.append((y, xx.grad, ww.grad, bb.grad if bias else None))
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=5e-2, rtol=2e-2)
    for got, ref in zip(outs[0], outs[1]):
        if ref is None:
            continue
        torch.testing.assert_close(got.float(), ref.float(), **tol)
    assert torch.all(outs[0][2][m == 0] == 0)


# ---------------------------------------------------------------- format
@pytest.mark.parametrize("bs", [16, 32, 64, (64, 32)])
def test_format_round_trip_and_indices(bs):
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(130, 70, generator=gen)
    m = block_mask(130, 70, bs, 0.4, gen)
    m[:, :16] = 0  # empty block column
    m[:64] = 0  # empty block rows
    bsw = BlockSparseWeight.from_dense(w, m, bs)
    assert torch.equal(bsw.to_dense(), w * m)
    nb, kb = bsw.grid
    assert bsw.row_ptr[-1] == bsw.col_ptr[-1] == bsw.nnzb
    # the column-ordered index points into the same values
    for q in range(bsw.nnzb):
        p = int(bsw.col_perm[q])
        assert bsw.row_idx[p] == bsw.col_row_idx[q]
    assert bsw.col_idx[bsw.col_perm.long()].tolist() == sorted(bsw.col_idx.tolist())


def test_format_bad_options():
    with pytest.raises(InvalidOptionError, match="block_size"):
        BlockSparseWeight.from_dense(torch.ones(4, 4), None, 8)
    with pytest.raises(InvalidOptionError, match="mask shape"):
        BlockSparseWeight.from_dense(torch.ones(16, 16), torch.ones(16, 8), 16)
    with pytest.raises(InvalidOptionError, match="backend"):
        make_plan(torch.ones(4, 4), "cpu", backend="fast")


# ---------------------------------------------------------------- triton (interpreter on CPU)
@needs_triton
@pytest.mark.parametrize("bs", [16, 32, 64, (64, 32)])
@pytest.mark.parametrize("density", [0.0, 0.15, 0.5, 1.0])
def test_triton_blocks_and_densities(bs, density):
    check_against_reference(128, 128, 37, bs, density, torch.float32, bias=density != 0.15, backend="triton")


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bias", [True, False])
def test_triton_dtypes_odd_shapes(dtype, bias):
    if dtype == torch.bfloat16 and DEV == "cpu":
        pytest.skip("bf16 arithmetic is wrong in Triton's interpreter; bf16 is tested on a GPU only")
    check_against_reference(100, 72, 45, 32, 0.5, dtype, bias=bias, backend="triton")


@needs_triton
@settings(max_examples=6, deadline=None)
@given(
    bs=st.sampled_from([16, 32, (64, 32)]),
    n=st.integers(1, 128),
    k=st.integers(1, 128),
    batch=st.integers(1, 70),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_triton_random_layouts(bs, n, k, batch, density, seed):
    check_against_reference(n, k, batch, bs, density, torch.float32, bias=seed % 2 == 0, backend="triton", seed=seed)


# ---------------------------------------------------------------- CPU sparse path
@pytest.mark.parametrize("backend,bs", [("csr", None), ("bsr", 16), ("bsr", 32), ("bsr", 64)])
@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 1.0])
def test_cpu_path(backend, bs, density):
    if DEV != "cpu":
        pytest.skip("CPU path")
    check_against_reference(128, 64, 37, bs or 16, density, torch.float32, bias=density != 0.1, backend=backend)


def test_cpu_path_half_upcasts():
    check_against_reference(64, 64, 9, 16, 0.5, torch.float16, bias=True, backend="csr") if DEV == "cpu" else None


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 96), k=st.integers(1, 96), batch=st.integers(1, 40), density=st.floats(0, 1), seed=st.integers(0, 999))
def test_cpu_csr_random(n, k, batch, density, seed):
    gen = torch.Generator().manual_seed(seed)
    m = (torch.rand(n, k, generator=gen) < density).float()
    check_against_reference(n, k, batch, 16, density, torch.float32, bias=seed % 2 == 0, backend="csr", seed=seed, mask=m)


def test_bsr_64x32_uses_square_blocks_and_odd_shapes_use_csr():
    m = block_mask(128, 64, (64, 32), 0.5, torch.Generator().manual_seed(0))
    assert make_plan(m, "cpu", backend="bsr", block_size=(64, 32)).block_size == (32, 32)
    assert make_plan(torch.ones(100, 30), "cpu", backend="bsr", block_size=32).backend == "csr"


# ---------------------------------------------------------------- dispatcher
def test_dispatcher_follows_table():
    gen = torch.Generator().manual_seed(0)
    table = {"cpu": {"csr_max_density": 0.2, "bsr_max_block_density": {"16": 0.3, "32": 0.3, "64": 0.0}}}
    sparse_blocks = block_mask(128, 128, 32, 0.2, gen, inner_zeros=False)
    assert choose_backend(sparse_blocks, "cpu", table=table)[0] == "bsr"
    unstructured = (torch.rand(128, 128, generator=gen) < 0.1).float()
    assert choose_backend(unstructured, "cpu", table=table) == ("csr", None)
    assert choose_backend(torch.ones(128, 128), "cpu", table=table) == ("dense", None)
    assert choose_backend(unstructured, "cpu", table={"cpu": {"csr_max_density": 0.01, "bsr_max_block_density": {}}}) == ("dense", None)


def test_dispatcher_2_4_and_table_file(tmp_path):
    m24 = torch.tensor([1.0, 0, 1, 0]).repeat(64, 16)
    assert is_2_4(m24) and not is_2_4(torch.ones(64, 64))
    assert choose_backend(m24, "cpu", table={"cpu": {"csr_max_density": 0.0, "bsr_max_block_density": {}}})[0] == "dense"
    assert make_plan(m24, "cpu", backend="semi_structured").backend == "dense"  # GPU only
    path = tmp_path / "t.json"
    path.write_text('{"cpu": {"csr_max_density": 1.0}}')
    net = nn.Sequential(nn.Linear(64, 64))
    prune.random_unstructured(net[0], "weight", amount=0.5)
    assert accelerate(net, table=str(path))[0].backend == "csr"
    with pytest.raises(InvalidOptionError, match="crossover table"):
        accelerate(nn.Sequential(nn.Linear(2, 2)), table=str(tmp_path / "missing.json"))


def test_triton_falls_back_without_triton(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    m = block_mask(64, 64, 32, 0.5, torch.Generator().manual_seed(0))
    assert make_plan(m, "cpu", backend="triton", block_size=32).backend == "bsr"
    assert choose_backend(m, "cpu")[0] != "triton"


# ---------------------------------------------------------------- accelerate
def _models():
    torch.manual_seed(0)
    head = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    for mod in (head[0], head[4], head[6]):
        prune.l1_unstructured(mod, "weight", amount=0.8)
    lenet = tpe.models.lenet_300_100() if hasattr(tpe, "models") else None
    if lenet is None:
        from torch_prune_ext.models import lenet_300_100

        lenet = lenet_300_100()
    for mod in lenet.modules():
        if isinstance(mod, nn.Linear):
            prune.random_unstructured(mod, "weight", amount=0.95)
    return [(head, torch.randn(5, 3, 8, 8)), (lenet, torch.randn(7, 784))]


@pytest.mark.parametrize("backend", ["auto", "csr", "bsr", pytest.param("triton", marks=needs_triton)])
def test_accelerate_equal_outputs_and_grads(backend):
    for model, x in _models():
        model.eval()
        x1 = x.clone().requires_grad_()
        ref = model(x1)
        ref.sum().backward()
        model = accelerate(model, device="cpu", backend=backend, block_size=16)
        linears = [m for m in model.modules() if isinstance(m, AcceleratedLinear)]
        assert linears and not any(type(m) is nn.Linear and hasattr(m, "weight_mask") for m in model.modules())
        x2 = x.clone().requires_grad_()
        out = model(x2)
        out.sum().backward()
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(x2.grad, x1.grad, atol=1e-5, rtol=1e-4)
        for lin in linears:
            assert torch.all(lin.weight.grad[lin.weight_mask == 0] == 0)


def test_accelerated_training_keeps_zeros_and_compiles():
    model, x = _models()[1]
    model = accelerate(model, backend="csr")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    for lin in (m for m in model.modules() if isinstance(m, AcceleratedLinear)):
        assert torch.all(lin.weight[lin.weight_mask == 0] == 0)
        ref_lin = F.linear  # outputs still equal the masked dense layer after training
        z = torch.randn(3, lin.in_features)
        torch.testing.assert_close(lin(z), ref_lin(z, lin.weight * lin.weight_mask, lin.bias), atol=1e-5, rtol=1e-4)
    eager = model(x)
    for backend in ("eager", "aot_eager"):
        compiled = torch.compile(model, backend=backend)
        torch.testing.assert_close(compiled(x), eager, atol=1e-5, rtol=1e-4)
