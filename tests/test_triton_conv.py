"""Triton implicit-GEMM convolution kernels and the fp32 precision of the Triton kernels.

On a machine without CUDA the kernels run in Triton's interpreter on CPU tensors (conftest sets
``TRITON_INTERPRET=1``), on tiny shapes; the CUDA group repeats the checks on the GPU in fp32, fp16
and bf16, and on realistic layers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torch_prune_ext.errors import InvalidOptionError, PruningError
from torch_prune_ext.kernels import triton_kernels
from torch_prune_ext.kernels.conv_layout import ConvGeometry, from_gemm_view, gemm_view
from torch_prune_ext.kernels.format import BlockSparseWeight
from torch_prune_ext.kernels.triton_kernels import FP32_TOLERANCE, dot_precision, triton_available

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_interpreter = pytest.mark.skipif(
    not (HAS_TRITON and triton_available("cpu")), reason="triton not installed or TRITON_INTERPRET unset"
)
needs_cuda = pytest.mark.skipif(
    not (HAS_TRITON and torch.cuda.is_available()), reason="needs a CUDA GPU and triton (runs on the GPU suite)"
)
BF16_INTERPRETER = "bf16 arithmetic is wrong in Triton's interpreter (kernel.md §4); bf16 is checked on CUDA only"

TOL = {torch.float32: dict(atol=FP32_TOLERANCE, rtol=FP32_TOLERANCE),
       torch.float16: dict(atol=5e-2, rtol=2e-2), torch.bfloat16: dict(atol=2e-1, rtol=5e-2)}


def selfcheck():
    # imported here: the module imports the conv launchers (no triton import until a kernel runs)
    from torch_prune_ext.kernels import selfcheck as module

    return module


def run_case(device, dtype, n, c, o, h, w, k, stride, padding, dilation, block, density, bias, seed, mask=None):
    """Kernel vs masked dense conv (float64 autograd) for one problem; returns the mask used."""
    sc = selfcheck()
    gen = torch.Generator().manual_seed(seed)
    geometry = ConvGeometry(c, o, (k, k), (stride, stride), (padding, padding), (dilation, dilation))
    x = torch.randn(n, c, h, w, generator=gen).to(device, dtype)
    weight = torch.randn(o, c, k, k, generator=gen).to(device, dtype)
    if mask is None:
        mask = sc.random_block_mask(weight.shape, block, density, gen)
    mask = mask.to(device)
    b = torch.randn(o, generator=gen).to(device, dtype) if bias else None
    grad_out = torch.randn(n, o, *geometry.output_size(h, w), generator=gen).to(device, dtype)
    ref = sc.masked_conv_reference(x, weight, mask, b, geometry, grad_out)
    got = sc.kernel_conv_outputs(x, weight, mask, b, geometry, grad_out, block)
    for name, g, r in zip(("forward", "grad_input", "grad_weight"), got, ref):
        assert g.shape == r.shape, name
        assert g.dtype == dtype, name
        torch.testing.assert_close(g.double(), r, **TOL[dtype], msg=lambda m, name=name: f"{name}: {m}")
    assert torch.all(got[2][mask == 0] == 0), "weight gradient must be exactly 0 at pruned entries"
    return mask


conv_problems = st.fixed_dictionaries({
    "n": st.integers(1, 2), "c": st.integers(1, 20), "o": st.integers(1, 40),
    "h": st.integers(5, 9), "w": st.integers(5, 9), "k": st.sampled_from([1, 3]),
    "stride": st.sampled_from([1, 2]), "padding": st.sampled_from([0, 1]), "dilation": st.sampled_from([1, 2]),
    "block": st.sampled_from([16, 32]), "density": st.sampled_from([0.0, 0.15, 0.5, 1.0]),
    "bias": st.booleans(), "seed": st.integers(0, 2**16),
})


# ---------------------------------------------------------------- precision choice (no kernel launch)
def test_dot_precision_is_ieee_for_fp32_unless_tf32_is_asked():
    assert dot_precision(torch.float32) == "ieee"
    assert dot_precision(torch.float32, allow_tf32=True) == "tf32"
    assert dot_precision(torch.float16) == dot_precision(torch.bfloat16) == "tf32"  # ignored by half dots


class RecordingKernel:
    """Stands in for a ``@triton.jit`` kernel: records the keyword arguments of its launch."""

    def __init__(self):
        self.launches = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append(kwargs)


@pytest.mark.skipif(not (HAS_TRITON and triton_available()), reason="triton not installed (or no CUDA and TRITON_INTERPRET unset)")
@pytest.mark.parametrize("dtype,allow_tf32,expected", [
    (torch.float32, False, "ieee"), (torch.float32, True, "tf32"), (torch.float16, False, "tf32"),
])
def test_launchers_pass_the_chosen_precision(monkeypatch, dtype, allow_tf32, expected):
    from torch_prune_ext.kernels import _triton_conv_src, _triton_src, triton_conv

    device = "cuda" if torch.cuda.is_available() else "cpu"  # nothing is launched
    names = ["bsr_forward_kernel", "bsr_grad_input_kernel", "bsr_grad_weight_kernel"]
    fakes = {name: RecordingKernel() for name in names + ["conv_forward_kernel", "conv_grad_weight_kernel"]}
    for name in names:
        monkeypatch.setattr(_triton_src, name, fakes[name])
    for name in ("conv_forward_kernel", "conv_grad_weight_kernel"):
        monkeypatch.setattr(_triton_conv_src, name, fakes[name])
    w = torch.ones(16, 16, dtype=dtype, device=device)
    bsw = BlockSparseWeight.from_dense(w, None, 16)
    x = torch.ones(4, 16, dtype=dtype, device=device)
    triton_kernels.forward(x, bsw, bsw.values, None, allow_tf32=allow_tf32)
    triton_kernels.grad_input(x, bsw, bsw.values, allow_tf32=allow_tf32)
    triton_kernels.grad_weight(x, x, bsw, allow_tf32=allow_tf32)
    geometry = ConvGeometry(16, 16, (1, 1))
    xc = torch.ones(1, 16, 3, 3, dtype=dtype, device=device)
    triton_conv.conv2d_forward(xc, bsw, bsw.values, None, geometry, allow_tf32=allow_tf32)
    triton_conv.conv2d_grad_weight(xc, xc, bsw, geometry, allow_tf32=allow_tf32)
    for name, fake in fakes.items():
        assert [launch["PRECISION"] for launch in fake.launches] == [expected], name


def test_fp32_kernels_compile_to_ieee_fma_and_tf32_to_tensor_cores_on_hopper():
    """What the interpreter cannot show: compiled for sm_90, IEEE fp32 dots avoid TF32 tensor cores."""
    if not HAS_TRITON or importlib.util.find_spec("triton.backends.nvidia") is None:
        pytest.skip("triton's CUDA backend is not installed")
    script = pathlib.Path(__file__).with_name("hopper_ptx.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(script.parent.parent)
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    uses_mma = json.loads(done.stdout.strip().splitlines()[-1])
    for kernel in ("linear_forward", "conv_forward"):
        assert uses_mma[f"{kernel}/fp32/ieee"] is False, kernel
        assert uses_mma[f"{kernel}/fp32/tf32"] is True, kernel
        assert uses_mma[f"{kernel}/bf16/tf32"] is True, kernel


# ---------------------------------------------------------------- interpreter (CPU tensors)
@needs_interpreter
@settings(max_examples=40, deadline=None)
@given(conv_problems)
def test_conv_kernels_fp32_random_shapes(problem):
    run_case("cpu", torch.float32, **problem)


@pytest.mark.parametrize("device,dtype", [
    pytest.param("cpu", torch.float16, marks=needs_interpreter),
    pytest.param("cpu", torch.bfloat16, marks=pytest.mark.skip(BF16_INTERPRETER)),
    pytest.param("cuda", torch.float32, marks=needs_cuda),
    pytest.param("cuda", torch.float16, marks=needs_cuda),
    pytest.param("cuda", torch.bfloat16, marks=needs_cuda),
])
@settings(max_examples=20, deadline=None)
@given(problem=conv_problems)
def test_conv_kernels_random_shapes_per_device_and_dtype(device, dtype, problem):
    run_case(device, dtype, **problem)


@needs_interpreter
@pytest.mark.parametrize("block", [16, 32, 64, (64, 32)])
def test_conv_kernels_block_shapes_with_empty_block_rows_and_columns(block):
    bn, bk = (block, block) if isinstance(block, int) else block
    o, c = 2 * bn + 3, 8  # K = 9·8 = 72: the last block column straddles taps and is partial
    gen = torch.Generator().manual_seed(3)
    mask = selfcheck().random_block_mask((o, c, 3, 3), block, 0.6, gen)
    view = gemm_view(mask)
    view[:bn] = 0  # an empty block row
    view[:, bk:2 * bk] = 0  # an empty block column
    mask = from_gemm_view(view, mask.shape)
    bsw = BlockSparseWeight.from_dense(gemm_view(torch.randn(o, c, 3, 3)), gemm_view(mask), block)
    assert bsw.row_ptr[1] == 0 and bsw.col_ptr[2] == bsw.col_ptr[1]
    run_case("cpu", torch.float32, 2, c, o, 7, 6, 3, 2, 1, 1, block, None, True, 0, mask=mask)


@needs_interpreter
def test_weight_gradient_split_over_output_positions():
    from torch_prune_ext.kernels.triton_conv import _weight_grad_splits

    assert _weight_grad_splits(300, 1, torch.device("cpu")) == (3, 128)
    assert _weight_grad_splits(300, 50, torch.device("cpu")) == (1, 384)
    assert _weight_grad_splits(162, 1, torch.device("cpu")) == (2, 128)
    run_case("cpu", torch.float32, 2, 2, 6, 9, 9, 3, 1, 1, 1, 16, 1.0, False, 5)  # 162 positions, 2 blocks: 2 splits


@needs_interpreter
def test_channels_last_input_and_output_format():
    from torch_prune_ext.kernels.triton_conv import conv2d_forward

    gen = torch.Generator().manual_seed(0)
    geometry = ConvGeometry(5, 7, (3, 3), padding=(1, 1))
    x = torch.randn(2, 5, 6, 7, generator=gen)
    w = torch.randn(7, 5, 3, 3, generator=gen)
    bsw = BlockSparseWeight.from_dense(gemm_view(w), None, 16)
    y = conv2d_forward(x, bsw, bsw.values, None, geometry)
    y_cl = conv2d_forward(x.to(memory_format=torch.channels_last), bsw, bsw.values, None, geometry)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, y_cl, atol=0, rtol=0)
    torch.testing.assert_close(y, torch.nn.functional.conv2d(x, w, padding=1), atol=1e-4, rtol=1e-4)


@needs_interpreter
def test_check_conv_kernels_reports_errors_per_case():
    sc = selfcheck()
    case = sc.ConvCase("tiny", 2, 6, 20, 7, stride=2, bias=True)
    rows = sc.check_conv_kernels("cpu", [torch.float32], [case], densities=[0.0, 0.5], block_size=16)
    assert [(r["case"], r["dtype"], r["density"]) for r in rows] == [("tiny", "float32", 0.0), ("tiny", "float32", 0.5)]
    assert rows[0]["block_density"] == 0.0 and 0.0 < rows[1]["block_density"] < 1.0
    for r in rows:
        assert r["ok"] and r["masked_grad_zero"], r
        assert max(r["forward_max_rel"], r["grad_input_max_rel"], r["grad_weight_max_rel"]) <= FP32_TOLERANCE


# ---------------------------------------------------------------- input errors
@needs_interpreter
def test_conv_kernels_reject_bad_input():
    from torch_prune_ext.kernels.triton_conv import conv2d_forward, conv2d_grad_input, conv2d_grad_weight

    geometry = ConvGeometry(4, 8, (3, 3), padding=(1, 1))
    bsw = BlockSparseWeight.from_dense(gemm_view(torch.randn(8, 4, 3, 3)), None, 16)
    x = torch.randn(1, 4, 5, 5)
    g = torch.randn(1, 8, 5, 5)
    cases = [
        (lambda: conv2d_forward(x.double(), bsw, bsw.values.double(), None, geometry), "float64"),
        (lambda: conv2d_forward(torch.randn(1, 3, 5, 5), bsw, bsw.values, None, geometry), "3 channels"),
        (lambda: conv2d_forward(x[0], bsw, bsw.values, None, geometry), "4-D"),
        (lambda: conv2d_forward(x, bsw, bsw.values.half(), None, geometry), "values are torch.float16"),
        (lambda: conv2d_forward(torch.randn(1, 4, 2, 2), bsw, bsw.values, None, ConvGeometry(4, 8, (3, 3))),
         "smaller than"),
        (lambda: conv2d_forward(x, bsw, bsw.values, None, ConvGeometry(4, 8, (1, 1))), "gemm_view"),
        (lambda: conv2d_grad_input(g[:, :5], bsw, bsw.values, geometry, x.shape), "expected"),
        (lambda: conv2d_grad_input(g, bsw, bsw.values, geometry, (1, 3, 5, 5)), "3 channels"),
        (lambda: conv2d_grad_weight(g, x.to(torch.int32), bsw, geometry), "int32"),
    ]
    for call, words in cases:
        with pytest.raises(InvalidOptionError, match=words):
            call()


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")
def test_cpu_tensors_without_the_interpreter_are_refused(monkeypatch):
    from torch_prune_ext.kernels.triton_conv import conv2d_forward

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    bsw = BlockSparseWeight.from_dense(gemm_view(torch.randn(8, 4, 1, 1)), None, 16)
    with pytest.raises(PruningError, match="CUDA tensors"):
        conv2d_forward(torch.randn(1, 4, 3, 3), bsw, bsw.values, None, ConvGeometry(4, 8, (1, 1)))
    with pytest.raises(PruningError, match="CUDA tensors"):
        triton_kernels.forward(torch.randn(2, 8), BlockSparseWeight.from_dense(torch.randn(8, 8), None, 16),
                               torch.zeros(1, 16, 16), None)


# ---------------------------------------------------------------- CUDA (the GPU suite runs these; random shapes above)
@needs_cuda
@pytest.mark.parametrize("block", [16, 32, 64, (64, 32)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_conv_kernels_block_shapes(block, dtype):
    run_case("cuda", dtype, 4, 24, 100, 11, 13, 3, 1, 1, 1, block, 0.5, True, 1)


@needs_cuda
def test_cuda_conv_kernels_on_realistic_layers_within_tolerance():
    rows = selfcheck().check_conv_kernels("cuda")
    bad = [r for r in rows if not r["ok"]]
    assert not bad, bad


@needs_cuda
def test_cuda_linear_kernels_fp32_ieee_within_tolerance():
    """The Linear kernels on fp32 meet 1e-4 on a GPU (TF32 dots would miss it at K = 1024)."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(256, 1024, generator=gen).cuda()
    x = torch.randn(300, 1024, generator=gen).cuda()
    bsw = BlockSparseWeight.from_dense(w, None, 32)
    y = triton_kernels.forward(x, bsw, bsw.values, None)
    ref = (x.double() @ w.double().t()).float()
    torch.testing.assert_close(y, ref, atol=FP32_TOLERANCE, rtol=FP32_TOLERANCE)
