"""Compile the Triton kernels for Hopper (sm_90) without a GPU; print which use tensor-core MMA.

Run by ``tests/test_triton_conv.py`` in a subprocess with ``TRITON_INTERPRET`` unset (the test
process runs the interpreter). Prints one JSON object ``{"kernel/dtype/precision": uses_mma}``.
Everything happens under ``__main__``: importing this file (pytest's doctest collection) does nothing.
"""

import json
import os

POINTERS = {"x_ptr", "values_ptr", "bias_ptr", "y_ptr"}
GEOMETRY = dict(KW=3, SH=2, SW=2, PH=1, PW=1, DH=2, DW=2)
LINEAR_ARGS = ["x_ptr", "values_ptr", "row_ptr_ptr", "col_idx_ptr", "bias_ptr", "y_ptr", "M", "N", "K",
               "stride_xm", "stride_ym"]
CONV_ARGS = ["x_ptr", "values_ptr", "row_ptr_ptr", "col_idx_ptr", "bias_ptr", "y_ptr", "P", "O", "K", "C", "H", "W",
             "HW_OUT", "W_OUT"]


def uses_mma(kernel, names, extra, dtype, precision):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {n: (f"*{dtype}" if n in POINTERS else "*i32" if n.endswith("_ptr") else "i32") for n in names}
    constexprs = dict(extra, HAS_BIAS=True, BN=32, BK=32, PRECISION=precision, BLOCK_M=64)
    signature.update({n: "constexpr" for n in constexprs})
    source = ASTSource(fn=kernel.fn, signature=signature, constexprs=constexprs)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    return "mma" in compiled.asm["ptx"]


def main():
    os.environ.pop("TRITON_INTERPRET", None)
    from torch_prune_ext.kernels import _triton_conv_src, _triton_src

    kernels = {"linear_forward": (_triton_src.bsr_forward_kernel, LINEAR_ARGS, {}),
               "conv_forward": (_triton_conv_src.conv_forward_kernel, CONV_ARGS, GEOMETRY)}
    result = {}
    for name, (kernel, names, extra) in kernels.items():
        for dtype, precision in (("fp32", "ieee"), ("fp32", "tf32"), ("bf16", "tf32")):
            result[f"{name}/{dtype}/{precision}"] = uses_mma(kernel, names, extra, dtype, precision)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
