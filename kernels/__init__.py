"""Triton kernels of tritonrnn, shipped as `tritonrnn.kernels` (STYLE.md).

Each module holds the `@triton.jit` kernels of one op, their launchers and one autograd Function, and
lists representative compile configurations in `AOT_CONFIGS` for the ahead-of-time compile proof
(`python -m tritonrnn.kernels._aot`, tests/kernels/test_compile.py).

Importing this package requires triton; `tritonrnn` itself imports it only when a Triton backend is
chosen. Set TRITON_INTERPRET=1 before the first import to run the kernels on CPU tensors.
"""
