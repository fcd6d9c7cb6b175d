"""Triton kernels of tritonrnn, shipped as `tritonrnn.kernels` (STYLE.md).

Each module holds the `@triton.jit` kernels of one op, their launchers (registered as `tritonrnn::` torch custom
ops with fake implementations and autograd, so torch.compile traces them without graph breaks), and
lists representative compile configurations in `AOT_CONFIGS` for the ahead-of-time compile proof
(`python -m tritonrnn.kernels._aot`, tests/kernels/test_compile.py).

This package itself imports nothing (tritonrnn._backend holds it to reach the modules under torch.compile);
its modules require triton and `tritonrnn` imports them only when a Triton backend is chosen. Set TRITON_INTERPRET=1 before the first import to run the kernels on CPU tensors.
"""
