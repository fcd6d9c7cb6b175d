"""Rows never leak into each other, on every path (issue 14): for every public entry point of tests/entry_points.py
(the scans, the recurrences including the IndRNN kernel, the layers of every family, the modules and cells) on
both backends, a NaN or inf at one element of one batch row of the input, hx, a carried state or a cotangent
leaves every other row's outputs and gradients as they were (the check: tests/rows.py). The torch backend takes
the native commuted cell (plain / momentum / restart LSTM and RNN layers) or the step loop (the other families
and cores); the Triton backend the kernels under the interpreter. The identity-native core, a path only a
dispatcher picks, has the same check in tests/nn/test_native_rows.py.

And the memory autograd saves for backward is linear in the batch on the step loop, the Triton backend's scans,
recurrences and IndRNN kernel, and the torch scans (tritonrnn.testing.saved_for_backward_bytes; the native paths:
tests/nn/test_native_rows.py).

Tolerance: the poisoned and the clean call compute the same function of the same values on the other rows; only
a reduction order may change, so the bound of tests/test_strides.py applies (entry_points.DEPTH).
"""
import pytest
import torch

import tritonrnn.functional as F
from tests.entry_points import DEPTH, EXHAUSTIVE, ROW_DIM, entry_params
from tests.rows import assert_rows_isolated
from tritonrnn.functional.layers import indrnn_layer
from tritonrnn.testing import saved_for_backward_bytes


# The interpreter computes with numpy, which warns on the poisoned values themselves (inf·0, inf − inf).
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning",
                            "ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("entry, backend", entry_params())
def test_a_poisoned_row_stays_in_its_row(entry, backend):
    """Each batched argument alone, then the cotangents, poisoned (NaN, then inf) on the torch backend; all of
    them at once on the Triton backend (the interpreter is slow; the explore profile runs them one at a time)."""
    call, _ = entry.build(backend)
    gen = torch.Generator().manual_seed(0)
    clean = {}
    for a in entry.args:
        v = torch.randn(a.shape, generator=gen) * 0.5
        clean[a.name] = v.abs() if a.positive else v
    assert_rows_isolated(lambda **t: [(o, ROW_DIM[role]) for o, role in call(**t)], clean,
                         {a.name: ROW_DIM[a.role] for a in entry.args}, dtype=torch.float32, steps=DEPTH,
                         one_at_a_time=backend == "torch" or EXHAUSTIVE)


# ------------------------------------------------------------------------------------------ memory
T, IN, H = 8, 3, 4


def _layer(fn, G, backend, state_names=(), **kw):
    """A layer call at batch B with every input requiring grad: x, h0 (and c0), the family's carried states."""
    def at(B):
        gen = torch.Generator().manual_seed(B)
        r = lambda *shape: torch.randn(*shape, generator=gen).requires_grad_()  # noqa: E731
        w_hh = r(H) if fn is indrnn_layer else r(G * H, H)
        args = dict(x=r(B, T, IN), weight_ih=r(G * H, IN), weight_hh=w_hh, bias_ih=r(G * H), bias_hh=r(G * H),
                    h0=r(B, H), **({"c0": r(B, H)} if G == 4 else {}))
        state = {n: r(B, G * H).abs().detach().requires_grad_() for n in state_names}  # m >= 0
        return lambda: fn(**args, state=state, backend=backend, **kw)
    return at


def _scan(fn, backend, n_states, **kw):
    def at(B):
        gen = torch.Generator().manual_seed(B)
        u = torch.randn(B, T, H, generator=gen).requires_grad_()
        states = [torch.rand(B, H, generator=gen).requires_grad_() for _ in range(n_states)]
        return lambda: fn(u, *kw.values(), *states, backend=backend)
    return at


# Each path of the issue: the step loop (torch backend, Adam / Nesterov LSTM, the modReLU and IndRNN cores), the
# Triton backend (scan + recurrence, Nesterov in the loop, the IndRNN kernel, the scans alone) and the torch scans.
MEMORY_CASES = {
    "step loop: lstm_layer[adam]": _layer(F.lstm_layer, 4, "torch", dynamics="adam", state_names=("v", "m")),
    "step loop: lstm_layer[nesterov]": _layer(F.lstm_layer, 4, "torch", dynamics="nesterov", state_names=("a",)),
    "step loop: rnn_layer[momentum,modrelu]": _layer(F.rnn_layer, 1, "torch", dynamics="momentum",
                                                     nonlinearity="modrelu", state_names=("v",)),
    "step loop: indrnn_layer[rmsprop]": _layer(indrnn_layer, 1, "torch", dynamics="rmsprop", state_names=("m",)),
    "triton: lstm_layer[momentum]": _layer(F.lstm_layer, 4, "triton", dynamics="momentum", state_names=("v",)),
    "triton: lstm_layer[nesterov]": _layer(F.lstm_layer, 4, "triton", dynamics="nesterov", state_names=("a",)),
    "triton: rnn_layer[plain,tanh]": _layer(F.rnn_layer, 1, "triton"),
    "triton: indrnn_layer[momentum]": _layer(indrnn_layer, 1, "triton", dynamics="momentum", state_names=("v",)),
    "triton: momentum_scan": _scan(F.momentum_scan, "triton", 1, mu=0.7, s=0.5),
    "triton: adam_scan": _scan(F.adam_scan, "triton", 2, mu=0.6, s=0.6, beta=0.1, eps=1e-8),
    "torch: momentum_scan": _scan(F.momentum_scan, "torch", 1, mu=0.7, s=0.5),
    "torch: rmsprop_scan": _scan(F.rmsprop_scan, "torch", 1, s=0.6, beta=0.9, eps=1e-8),
}


@pytest.mark.parametrize("case", list(MEMORY_CASES))
def test_memory_saved_for_backward_is_linear_in_batch(case):
    """What one forward saves is per row (∝ B) or of parameter size: bytes(B) = α + β·B, α, β ≥ 0, so
    bytes(B2) ≤ bytes(B1)·B2/B1 for B2 > B1. A term in B² (a state entering through B one-hot channels, the
    device tests/nn/test_native_rows.py replaced) exceeds it as soon as it outweighs α/(B1·B2)."""
    b1, b2 = 4, 16
    small = saved_for_backward_bytes(MEMORY_CASES[case](b1))[1]
    large = saved_for_backward_bytes(MEMORY_CASES[case](b2))[1]
    if case.endswith("momentum_scan"):  # linear in u and v0: its backward is a reverse scan that reads no activation
        assert small == large == 0, f"{case} saves {small} bytes at B={b1}: it should keep nothing"
    else:
        assert small > 0, "nothing saved for backward: the measurement missed the path"
    assert large <= small * b2 / b1, f"{case}: {large} bytes saved at B={b2}, {small} at B={b1} (more than linear)"
