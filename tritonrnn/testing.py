"""Tolerances derived from the dtype, shared by the test suite and `python -m tritonrnn check`.

Kernels and references see the same (already rounded) inputs and both accumulate in fp32 (the reference in
fp64 where a test asks for it), so they differ by (a) the final rounding of the output to its dtype,
at most half an ulp: eps(dtype)/2 relative, and (b) fp32 accumulation in a different order (parallel scan
vs sequential loop), which grows like eps(fp32)·n for n accumulated steps. Both terms get a safety factor of
4 (a few roundings happen before the last one) and the absolute floor covers values that cancel to ~0.
"""
import torch

EPS32 = torch.finfo(torch.float32).eps


def tolerance(dtype: torch.dtype, steps: int = 1, scale: float = 1.0):
    """(rtol, atol) for comparing a `dtype` result of a `steps`-long fp32 accumulation with an oracle.

    `scale` is the magnitude of the accumulated terms (for the absolute floor)."""
    eps = torch.finfo(dtype).eps if dtype != torch.float32 else 0.0
    rtol = 4 * (eps / 2 + EPS32 * max(steps, 1))
    # Underflow floor: a value below the normal range has an absolute error of half the subnormal spacing of
    # `dtype` at the last rounding, and up to fp32's smallest normal where an fp32 intermediate underflows
    # (μ^T for small μ and long T; flush-to-zero on GPUs).
    info = torch.finfo(dtype)
    atol = max(rtol * scale, 4 * (info.tiny * info.eps / 2 + torch.finfo(torch.float32).tiny))
    return rtol, atol


def assert_close(actual, expected, dtype, steps=1, scale=1.0, msg=""):
    rtol, atol = tolerance(dtype, steps, scale)
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol, msg=msg or None)
