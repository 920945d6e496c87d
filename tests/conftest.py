"""Shared test setup.

Triton's interpreter (``TRITON_INTERPRET=1``) runs the Triton kernels on CPU tensors, so the kernel
tests run without a GPU. Triton reads the variable when kernels are defined (at import), so it must be
set before anything imports triton: here, at conftest import, only when CUDA is absent (with CUDA the
real kernels are tested).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
