"""Tolerances derived from the dtype, the step count and the op depth of a step, shared by the test suite
and `python -m tritonrnn check`; and the count of the memory autograd saves for backward, shared by the tests
(linear in B, issue 14) and perf's papers' table (its saved_mb column).

Kernels and references see the same (already rounded) inputs and both compute in fp32 (the reference in
fp64 where a test asks for it), so they differ by (a) the final rounding of the output to its dtype, at
most half an ulp: eps(dtype)/2 relative, and (b) the fp32 roundings of the computation, each at most
u = eps32/2 relative, done in a different order or by different formulas (tanh as 2σ(2x) − 1 in a kernel,
torch's own tanh in the reference). A computation of n steps with `depth` roundings per step on each side
accumulates at most depth·n of them on each side (to first order, for the well-conditioned cells here:
the gate derivatives σ(1 − σ), 1 − tanh² are bounded, so an error is not amplified from step to step by
more than the step's own Lipschitz factor, which the magnitude `scale` absorbs). Both terms get a safety
factor of 4 (two sides, and the few roundings of loads and the final store); the absolute floor covers
values that cancel to ~0. An fp32 multiply-add accumulation has depth 2 (the default): rtol = 4·(eps/2 +
eps32·n), the model the scans and optimizers were tested with.

Depths per step, counted from the kernels (kernels/recurrence/step.py) and the reference cells:
- LSTM_STEP_DEPTH = 16: the LSTM step's backward, the deepest of the two directions: tanh(c) = 2σ(2c) − 1
  (3 roundings), dc = dc' + dh·o·(1 − tanh²c) (5), a gate's adjoint e.g. dc·c_{t−1}·f·(1 − f) (4), the
  momentum drive's adjoint (2), the multiply-add into dW_hh / db (2). (Forward: z = a + W h (2), σ / tanh of
  the gates (3), c = f·c + i·g (3), tanh(c) (3), h = o·tanh(c) (1): 12.)
- RNN_STEP_DEPTH = 8: tanh(z) (3), dz = dh·(1 − h²) (3), the multiply-add into dW_hh (2).
"""
import torch

EPS32 = torch.finfo(torch.float32).eps
ACCUMULATE_DEPTH = 2
LSTM_STEP_DEPTH = 16
RNN_STEP_DEPTH = 8


def tolerance(dtype: torch.dtype, steps: int = 1, scale: float = 1.0, depth: int = ACCUMULATE_DEPTH,
              roundings: int = 0):
    """(rtol, atol) for comparing a `dtype` result of a `steps`-long fp32 computation with an oracle, with
    `depth` fp32 roundings per step (see the module docstring).

    `scale` is the magnitude of the accumulated terms (for the absolute floor). `roundings` counts the extra
    roundings to `dtype` inside the chain, each at most eps(dtype)/2 relative like the final one: the
    recurrence kernels round h_{t-1} to the weight's dtype for each step's product (and dz_{t+1} in the
    backward), as cuDNN's half LSTM does, so a half result of T steps carries T (forward) or 2T (gradients)."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if roundings < 0:
        raise ValueError(f"roundings must be >= 0, got {roundings}")
    eps = torch.finfo(dtype).eps if dtype != torch.float32 else 0.0
    rtol = 4 * (eps / 2 * (1 + roundings) + EPS32 / 2 * depth * max(steps, 1))
    # Underflow floor: a value below the normal range has an absolute error of half the subnormal spacing of
    # `dtype` at the last rounding, and up to fp32's smallest normal where an fp32 intermediate underflows
    # (μ^T for small μ and long T; flush-to-zero on GPUs).
    info = torch.finfo(dtype)
    atol = max(rtol * scale, 4 * (info.tiny * info.eps / 2 + torch.finfo(torch.float32).tiny))
    return rtol, atol


def assert_close(actual, expected, dtype, steps=1, scale=1.0, msg="", depth=ACCUMULATE_DEPTH, roundings=0):
    """torch.testing.assert_close with the derived tolerance; a failure names `msg` (a string, or a callable
    in torch's lazy form, given the report), the model's inputs
    (dtype, steps, depth, roundings, scale) and keeps torch's own report (the mismatch size next to rtol and atol)."""
    rtol, atol = tolerance(dtype, steps, scale, depth, roundings)
    label = "" if callable(msg) else msg
    what = (f"{label + ': ' if label else ''}bound |actual − expected| <= atol + rtol·|expected| with rtol {rtol:.3g}, "
            f"atol {atol:.3g} ({dtype}, steps {steps}, depth {depth}, roundings {roundings}, scale {scale:.3g})")
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol,
                               msg=lambda detail: msg(f"{what}\n{detail}") if callable(msg) else f"{what}\n{detail}")


def saved_for_backward_bytes(fn, *args, **kwargs):
    """(fn(*args, **kwargs), the bytes autograd keeps for its backward): every tensor saved during the call, by
    autograd's own nodes, custom autograd Functions' save_for_backward and custom ops alike (a tensor kept as a
    ctx attribute bypasses the hook; tritonrnn keeps none), each underlying storage counted once and whole,
    whatever view of it was saved and however many times (the input and the weights count too)."""
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn(*args, **kwargs)
    return result, sum(storages.values())
