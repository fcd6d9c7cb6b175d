"""The fused recurrence kernels (kernels/recurrence.py) and their functional API
(tritonrnn.functional.recurrence) against torch.nn.LSTM / nn.RNN and the step-by-step torch path.

nn.LSTM is the oracle of the LSTM core: feeding a = x W_ihᵀ + b_ih to the core is exactly nn.LSTM
(SPEC §1.1). Outputs, final states AND the gradients of a, W_hh, b_hh, h0, c0 are compared.
"""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tolerance import assert_close
from tritonrnn.functional.recurrence import (lstm_recurrence, momentum_lstm_recurrence, nesterov_lstm_recurrence,
                                             rnn_recurrence)
from tritonrnn.reference.scans import momentum_scan
from tritonrnn.schedules import restart_momentum

pytest.importorskip("triton")

# The `device` fixture is function-scoped; it returns the same device for every example.
FIXTURE_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                             HealthCheck.data_too_large])
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _layout(x, time_major):
    """x [B, T, C] as a transposed time-major view (the common caller layout) or contiguous."""
    return x.transpose(0, 1).contiguous().transpose(0, 1) if time_major else x.contiguous()


def _weights(G, H, gen, dtype=torch.float32, device="cpu"):
    w = (torch.randn(G * H, H, generator=gen) / H ** 0.5).to(dtype).to(device)
    b = (0.5 * torch.randn(G * H, generator=gen)).to(dtype).to(device)
    return w, b


def _loss_weights(shapes, gen, device):
    """Fixed random cotangents, so every output reaches the loss with its own weight."""
    return [torch.randn(*s, generator=gen).to(device) for s in shapes]


def _grads(outputs, inputs, cotangents):
    loss = sum((o.float() * c).sum() for o, c in zip(outputs, cotangents) if c is not None)
    used = [x for x in inputs if x is not None]
    grads = iter(torch.autograd.grad(loss, used))
    return [next(grads) if x is not None else None for x in inputs]


def _scale(t):
    return max(1.0, t.abs().max().item())


def _identity_input(module, width):
    """Make `module` (nn.LSTM / nn.RNN with input_size = G·H) read its input as the drive a itself:
    W_ih = I, b_ih = 0, so its output is the core on a and its input gradient is da."""
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.eye(width))
        if module.bias:
            module.bias_ih_l0.zero_()
    return module


def _leaf(x, device, time_major=False):
    """A device copy of a CPU oracle input, as its own leaf (the kernel and the oracle get the same values)."""
    if x is None:
        return None
    return _layout(x.detach().to(device), time_major).requires_grad_()


# nn.LSTM / nn.RNN oracles run on the CPU in fp32: on CUDA, cuDNN would use TF32 (allow_tf32 defaults on).
# ----------------------------------------------------------------------------------------------- LSTM
@FIXTURE_OK
@given(B=st.integers(1, 3), T=st.integers(1, 6), H=st.sampled_from([1, 5, 12, 17]), bias=st.booleans(),
       initial=st.booleans(), time_major=st.booleans(), seed=st.integers(0, 2**16))
def test_lstm_matches_nn_lstm(device, B, T, H, bias, initial, time_major, seed):
    """a = x W_ihᵀ + b_ih fed to the core is nn.LSTM (SPEC §1.1); with W_ih = I the drive is a itself."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    lstm = _identity_input(torch.nn.LSTM(4 * H, H, batch_first=True, bias=bias), 4 * H)
    a = torch.randn(B, T, 4 * H, generator=gen).requires_grad_()
    h0 = torch.randn(B, H, generator=gen).requires_grad_() if initial else None
    c0 = torch.randn(B, H, generator=gen).requires_grad_() if initial else None
    ref, (hn, cn) = lstm(a, (h0[None], c0[None]) if initial else None)
    b_hh = lstm.bias_hh_l0 if bias else None
    oracle_inputs = [a, lstm.weight_hh_l0, b_hh, h0, c0]
    inputs = [_leaf(a, device, time_major)] + [_leaf(x, device) for x in oracle_inputs[1:]]
    h, hT, cT = lstm_recurrence(*inputs, backend="triton")
    assert h.shape == (B, T, H) and hT.shape == (B, H) and cT.shape == (B, H)
    assert h.dtype == hT.dtype == cT.dtype == torch.float32
    if time_major and B > 1 and T > 1:
        assert h.transpose(0, 1).is_contiguous(), "a time-major a gives a time-major h"
    for g, r in zip((h, hT, cT), (ref, hn[0], cn[0])):
        assert_close(g.cpu(), r, torch.float32, steps=T)
    cot = _loss_weights([(B, T, H), (B, H), (B, H)], gen, "cpu")
    got = _grads((h, hT, cT), inputs, [c.to(device) for c in cot])
    want = _grads((ref, hn[0], cn[0]), oracle_inputs, cot)
    for name, g, r in zip(["a", "weight_hh", "bias_hh", "h0", "c0"], got, want):
        if r is None:
            assert g is None
            continue
        assert_close(g.cpu(), r, torch.float32, steps=T * B, scale=_scale(r), msg=f"gradient of {name}")


@pytest.mark.parametrize("case", ["multi_block", "multi_program"])
def test_lstm_tiles(device, case):
    """Several hidden blocks per step (H > BH: a step reads the whole h_{t-1} while it writes h_t) and
    several batch tiles (B > BB); with T > 2 under no_grad, the 2-slot ping-pong of the evaluation path."""
    B, T, H = (2, 4, 70) if case == "multi_block" else (17, 3, 5)
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    lstm = _identity_input(torch.nn.LSTM(4 * H, H, batch_first=True), 4 * H)
    a = torch.randn(B, T, 4 * H, generator=gen)
    h0, c0 = (torch.randn(B, H, generator=gen) for _ in range(2))
    with torch.no_grad():
        ref, (hn, cn) = lstm(a, (h0[None], c0[None]))
        got = lstm_recurrence(*(x.to(device) for x in (a, lstm.weight_hh_l0, lstm.bias_hh_l0, h0, c0)),
                              backend="triton")
    for g, r in zip(got, (ref, hn[0], cn[0])):
        assert_close(g.cpu(), r, torch.float32, steps=T)
    # the training path (T+1 slots, saved gates) and its gradients against the torch path
    inputs = [_leaf(x, device) for x in (a, lstm.weight_hh_l0, lstm.bias_hh_l0, h0, c0)]
    cot = _loss_weights([(B, T, H), (B, H), (B, H)], gen, device)
    got_out = lstm_recurrence(*inputs, backend="triton")
    want_out = lstm_recurrence(*inputs, backend="torch")
    for g, r in zip(got_out, want_out):
        assert_close(g, r, torch.float32, steps=T)
    for name, g, r in zip("a w b h0 c0".split(), _grads(got_out, inputs, cot), _grads(want_out, inputs, cot)):
        assert_close(g, r, torch.float32, steps=T * B, scale=_scale(r), msg=f"gradient of {name}")


@FIXTURE_OK
@given(B=st.integers(1, 3), T=st.integers(1, 5), H=st.sampled_from([5, 12]), dtype=st.sampled_from(DTYPES),
       time_major=st.booleans(), seed=st.integers(0, 2**16))
def test_lstm_low_precision_matches_torch_path(device, B, T, H, dtype, time_major, seed):
    """bf16/fp16 inputs: the kernel keeps state and accumulation fp32 like the torch path, so the two
    differ by fp32 summation order and the final rounding to the dtype."""
    gen = torch.Generator().manual_seed(seed)
    w, b = (p.requires_grad_() for p in _weights(4, H, gen, dtype, device))
    a = _layout(torch.randn(B, T, 4 * H, generator=gen).to(dtype).to(device), time_major).requires_grad_()
    h0 = torch.randn(B, H, generator=gen).to(dtype).to(device).requires_grad_()
    c0 = torch.randn(B, H, generator=gen).to(dtype).to(device).requires_grad_()
    inputs = [a, w, b, h0, c0]
    got = lstm_recurrence(*inputs, backend="triton")
    want = lstm_recurrence(*inputs, backend="torch")
    for g, r in zip(got, want):
        assert g.dtype == dtype
        assert_close(g, r, dtype, steps=T)
    cot = _loss_weights([(B, T, H), (B, H), (B, H)], gen, device)
    for name, g, r in zip("a w b h0 c0".split(), _grads(got, inputs, cot), _grads(want, inputs, cot)):
        assert g.dtype == dtype
        assert_close(g, r, dtype, steps=T * B, scale=_scale(r), msg=f"gradient of {name}")


def test_lstm_partial_outputs_in_the_loss(device):
    """Gradients when only some outputs reach the loss (the kernel gets None cotangents)."""
    gen = torch.Generator().manual_seed(3)
    B, T, H = 2, 3, 5
    w, b = (p.requires_grad_() for p in _weights(4, H, gen, device=device))
    a = torch.randn(B, T, 4 * H, generator=gen).to(device).requires_grad_()
    c0 = torch.randn(B, H, generator=gen).to(device).requires_grad_()
    for pick in range(3):
        got = lstm_recurrence(a, w, b, None, c0, backend="triton")[pick]
        want = lstm_recurrence(a, w, b, None, c0, backend="torch")[pick]
        for g, r in zip(torch.autograd.grad(got.sum(), [a, w, b, c0]), torch.autograd.grad(want.sum(), [a, w, b, c0])):
            assert_close(g, r, torch.float32, steps=T * B, scale=_scale(r))


# ------------------------------------------------------------------------------------------------ RNN
@FIXTURE_OK
@given(B=st.integers(1, 3), T=st.integers(1, 6), H=st.sampled_from([1, 5, 12]),
       nonlinearity=st.sampled_from(["tanh", "relu"]), bias=st.booleans(), time_major=st.booleans(),
       seed=st.integers(0, 2**16))
def test_rnn_matches_nn_rnn(device, B, T, H, nonlinearity, bias, time_major, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    rnn = _identity_input(torch.nn.RNN(H, H, batch_first=True, bias=bias, nonlinearity=nonlinearity), H)
    a = torch.randn(B, T, H, generator=gen).requires_grad_()
    h0 = torch.randn(B, H, generator=gen).requires_grad_()
    ref, hn = rnn(a, h0[None])
    oracle_inputs = [a, rnn.weight_hh_l0, rnn.bias_hh_l0 if bias else None, h0]
    inputs = [_leaf(a, device, time_major)] + [_leaf(x, device) for x in oracle_inputs[1:]]
    h, hT = rnn_recurrence(*inputs, nonlinearity=nonlinearity, backend="triton")
    assert_close(h.cpu(), ref, torch.float32, steps=T)
    assert_close(hT.cpu(), hn[0], torch.float32, steps=T)
    cot = _loss_weights([(B, T, H), (B, H)], gen, "cpu")
    got = _grads((h, hT), inputs, [c.to(device) for c in cot])
    want = _grads((ref, hn[0]), oracle_inputs, cot)
    for name, g, r in zip("a w b h0".split(), got, want):
        if r is None:
            assert g is None
            continue
        assert_close(g.cpu(), r, torch.float32, steps=T * B, scale=_scale(r), msg=f"gradient of {name}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rnn_low_precision_matches_torch_path(device, dtype):
    gen = torch.Generator().manual_seed(4)
    B, T, H = 2, 5, 12
    w, b = (p.requires_grad_() for p in _weights(1, H, gen, dtype, device))
    a = torch.randn(B, T, H, generator=gen).to(dtype).to(device).requires_grad_()
    h0 = torch.randn(B, H, generator=gen).to(dtype).to(device).requires_grad_()
    cot = _loss_weights([(B, T, H), (B, H)], gen, device)
    for nonlinearity in ("tanh", "relu"):
        got = rnn_recurrence(a, w, b, h0, nonlinearity=nonlinearity, backend="triton")
        want = rnn_recurrence(a, w, b, h0, nonlinearity=nonlinearity, backend="torch")
        for g, r in zip(got, want):
            assert_close(g, r, dtype, steps=T)
        for g, r in zip(_grads(got, [a, w, b, h0], cot), _grads(want, [a, w, b, h0], cot)):
            assert_close(g, r, dtype, steps=T * B, scale=_scale(r))


# ------------------------------------------------------------------------------------- NesterovLSTM
def _nesterov_oracle(u, w, b, h0, c0, a0, s, restart, step_offset):
    """SPEC §1.3 written out, one step at a time, in float64."""
    u, w, b, h, c, a_prev = (x.double() for x in (u, w, b, h0, c0, a0))
    H = w.shape[1]
    hs = []
    for t in range(u.shape[1]):
        mu = restart_momentum(step_offset + t, restart)
        a_t = (h @ w.T + b) - s * u[:, t]
        z = a_t + mu * (a_t - a_prev)
        i, f = torch.sigmoid(z[:, :H]), torch.sigmoid(z[:, H:2 * H])
        g, o = torch.tanh(z[:, 2 * H:3 * H]), torch.sigmoid(z[:, 3 * H:])
        c = f * c + i * g
        h = o * torch.tanh(c)
        a_prev = a_t
        hs.append(h)
    return torch.stack(hs, 1), h, c, a_prev


@FIXTURE_OK
@given(B=st.integers(1, 3), T=st.integers(1, 6), H=st.sampled_from([1, 5, 12]), s=st.floats(-1.5, 1.5),
       restart=st.integers(1, 4), step_offset=st.integers(0, 7), time_major=st.booleans(), seed=st.integers(0, 2**16))
def test_nesterov_lstm(device, B, T, H, s, restart, step_offset, time_major, seed):
    gen = torch.Generator().manual_seed(seed)
    w, b = (p.requires_grad_() for p in _weights(4, H, gen, device=device))
    u = _layout(torch.randn(B, T, 4 * H, generator=gen).to(device), time_major).requires_grad_()
    h0, c0 = (torch.randn(B, H, generator=gen).to(device).requires_grad_() for _ in range(2))
    a0 = torch.randn(B, 4 * H, generator=gen).to(device).requires_grad_()
    inputs = [u, w, b, h0, c0, a0]
    got = nesterov_lstm_recurrence(*inputs, s=s, restart=restart, step_offset=step_offset, backend="triton")
    oracle = _nesterov_oracle(*inputs, s, restart, step_offset)
    assert got[3].dtype == torch.float32
    for g, r in zip(got, oracle):
        assert_close(g, r, torch.float32, steps=T, scale=_scale(r))
    want = nesterov_lstm_recurrence(*inputs, s=s, restart=restart, step_offset=step_offset, backend="torch")
    for g, r in zip(want, oracle):
        assert_close(g, r, torch.float32, steps=T, scale=_scale(r))
    cot = _loss_weights([(B, T, H), (B, H), (B, H), (B, 4 * H)], gen, device)
    for name, g, r in zip("u w b h0 c0 a0".split(), _grads(got, inputs, cot), _grads(oracle, inputs, cot)):
        assert_close(g, r, torch.float32, steps=T * B, scale=_scale(r), msg=f"gradient of {name}")


def test_nesterov_lstm_bf16_matches_torch_path(device):
    gen = torch.Generator().manual_seed(5)
    B, T, H, dtype = 2, 4, 5, torch.bfloat16
    w, b = (p.requires_grad_() for p in _weights(4, H, gen, dtype, device))
    u = torch.randn(B, T, 4 * H, generator=gen).to(dtype).to(device).requires_grad_()
    inputs = [u, w, b, None, None, None]
    got = nesterov_lstm_recurrence(*inputs, s=0.8, restart=2, backend="triton")
    want = nesterov_lstm_recurrence(*inputs, s=0.8, restart=2, backend="torch")
    for g, r in zip(got, want):
        assert_close(g, r, dtype, steps=T, scale=_scale(r))
    cot = _loss_weights([(B, T, H), (B, H), (B, H), (B, 4 * H)], gen, device)
    for g, r in zip(_grads(got, inputs, cot), _grads(want, inputs, cot)):
        if r is not None:
            assert_close(g, r, dtype, steps=T * B, scale=_scale(r))


# ------------------------------------------------------------------------- fused momentum drive
@FIXTURE_OK
@given(B=st.integers(1, 3), T=st.integers(1, 6), H=st.sampled_from([1, 5, 12]), mu=st.floats(0.0, 0.95),
       s=st.floats(-1.5, 1.5), restart=st.sampled_from([None, 1, 2, 5]), step_offset=st.integers(0, 7),
       time_major=st.booleans(), seed=st.integers(0, 2**16))
def test_momentum_lstm_is_scan_then_core(device, B, T, H, mu, s, restart, step_offset, time_major, seed):
    """The fused momentum/restart drive equals the reference momentum scan (SPEC §1.2) followed by the
    LSTM core, for outputs, final states (v_T included) and every gradient."""
    gen = torch.Generator().manual_seed(seed)
    w, b = (p.requires_grad_() for p in _weights(4, H, gen, device=device))
    u = _layout(torch.randn(B, T, 4 * H, generator=gen).to(device), time_major).requires_grad_()
    h0, c0 = (torch.randn(B, H, generator=gen).to(device).requires_grad_() for _ in range(2))
    v0 = torch.randn(B, 4 * H, generator=gen).to(device).requires_grad_()
    inputs = [u, w, b, h0, c0, v0]
    got = momentum_lstm_recurrence(*inputs, mu=mu, s=s, restart=restart, step_offset=step_offset, backend="triton")
    a, vT = momentum_scan(u, mu, s, v0, restart=restart, step_offset=step_offset)
    want = lstm_recurrence(a, w, b, h0, c0, backend="torch") + (vT,)
    assert got[3].dtype == torch.float32
    for g, r in zip(got, want):
        assert_close(g, r, torch.float32, steps=T, scale=_scale(r))
    torch_path = momentum_lstm_recurrence(*inputs, mu=mu, s=s, restart=restart, step_offset=step_offset,
                                          backend="torch")
    for g, r in zip(torch_path, want):
        assert_close(g, r, torch.float32, steps=T, scale=_scale(r))
    cot = _loss_weights([(B, T, H), (B, H), (B, H), (B, 4 * H)], gen, device)
    for name, g, r in zip("u w b h0 c0 v0".split(), _grads(got, inputs, cot), _grads(want, inputs, cot)):
        assert_close(g, r, torch.float32, steps=T * B, scale=_scale(r), msg=f"gradient of {name}")


def test_momentum_lstm_bf16_matches_torch_path(device):
    gen = torch.Generator().manual_seed(10)
    B, T, H, dtype = 2, 4, 5, torch.bfloat16
    w, b = (p.requires_grad_() for p in _weights(4, H, gen, dtype, device))
    u = torch.randn(B, T, 4 * H, generator=gen).to(dtype).to(device).requires_grad_()
    inputs = [u, w, b, None, None, None]
    got = momentum_lstm_recurrence(*inputs, restart=2, backend="triton")
    want = momentum_lstm_recurrence(*inputs, restart=2, backend="torch")
    for g, r in zip(got, want):
        assert_close(g, r, dtype, steps=T, scale=_scale(r))
    cot = _loss_weights([(B, T, H), (B, H), (B, H), (B, 4 * H)], gen, device)
    for g, r in zip(_grads(got, inputs, cot), _grads(want, inputs, cot)):
        if r is not None:
            assert_close(g, r, dtype, steps=T * B, scale=_scale(r))


# ------------------------------------------------------------------------------ layout, determinism
def test_time_major_layout_is_bitwise_the_same(device):
    """The kernel reads a through its strides: a transposed time-major view gives bitwise the same
    values as the contiguous tensor, in a time-major output."""
    gen = torch.Generator().manual_seed(6)
    B, T, H = 3, 4, 5
    w, b = _weights(4, H, gen, device=device)
    a = torch.randn(B, T, 4 * H, generator=gen).to(device)
    h1, hT1, cT1 = lstm_recurrence(a, w, b, backend="triton")
    h2, hT2, cT2 = lstm_recurrence(_layout(a, True), w, b, backend="triton")
    assert h1.is_contiguous() and h2.transpose(0, 1).is_contiguous()
    assert torch.equal(h1, h2) and torch.equal(hT1, hT2) and torch.equal(cT1, cT2)
    # the torch path keeps the layout too
    h3, _, _ = lstm_recurrence(_layout(a, True), w, b, backend="torch")
    assert h3.transpose(0, 1).is_contiguous()


def test_bitwise_deterministic(device):
    gen = torch.Generator().manual_seed(7)
    B, T, H = 3, 5, 12
    w, b = (p.requires_grad_() for p in _weights(4, H, gen, device=device))
    a = torch.randn(B, T, 4 * H, generator=gen).to(device).requires_grad_()
    h0, c0 = (torch.randn(B, H, generator=gen).to(device).requires_grad_() for _ in range(2))
    cot = _loss_weights([(B, T, H), (B, H), (B, H)], gen, device)
    runs = []
    for _ in range(2):
        out = lstm_recurrence(a, w, b, h0, c0, backend="triton")
        runs.append(list(out) + _grads(out, [a, w, b, h0, c0], cot))
    for x, y in zip(*runs):
        assert torch.equal(x, y)


# ---------------------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("shape", [(0, 3), (2, 0)])
def test_empty_batch_or_sequence_launches_nothing(device, shape, monkeypatch):
    import tritonrnn.kernels.recurrence as k

    def no_launch(*args, **kwargs):
        raise AssertionError("launched a kernel for an empty input")

    monkeypatch.setattr(k, "recurrence_fwd", no_launch)
    B, T = shape
    H = 5
    gen = torch.Generator().manual_seed(8)
    w, b = _weights(4, H, gen, device=device)
    a = torch.randn(B, T, 4 * H, generator=gen).to(device)
    h0 = torch.randn(B, H, generator=gen).to(device)
    h, hT, cT = lstm_recurrence(a, w, b, h0, None, backend="triton")
    assert h.shape == (B, T, H)
    assert torch.equal(hT, h0) and (B == 0 or hT.data_ptr() != h0.data_ptr()), "h_T is a copy of h0"
    assert torch.equal(cT, torch.zeros(B, H, device=device))
    h, hT = rnn_recurrence(a[..., :H], w[:H], b[:H], h0, backend="triton")
    assert h.shape == (B, T, H) and torch.equal(hT, h0)
    h, hT, cT, aT = nesterov_lstm_recurrence(a, w, b, h0, backend="triton")
    assert h.shape == (B, T, H) and aT.shape == (B, 4 * H) and aT.dtype == torch.float32
    h, hT, cT, vT = momentum_lstm_recurrence(a, w, b, h0, backend="triton")
    assert h.shape == (B, T, H) and vT.shape == (B, 4 * H) and vT.dtype == torch.float32


BAD_CALLS = {
    # case: (the argument the error must name, the call)
    "a_ndim": ("a", lambda a, w, b, h0: lstm_recurrence(a[0], w)),
    "a_type": ("a", lambda a, w, b, h0: lstm_recurrence(a.tolist(), w)),
    "a_dtype": ("a", lambda a, w, b, h0: lstm_recurrence(a.int(), w)),
    "a_width": ("a", lambda a, w, b, h0: lstm_recurrence(a[..., :-1], w)),
    "weight_hh_shape": ("weight_hh", lambda a, w, b, h0: lstm_recurrence(a, w[:-1])),
    "weight_hh_dtype": ("weight_hh", lambda a, w, b, h0: lstm_recurrence(a, w.half())),
    "bias_hh_shape": ("bias_hh", lambda a, w, b, h0: lstm_recurrence(a, w, b[:-1])),
    "bias_hh_dtype": ("bias_hh", lambda a, w, b, h0: lstm_recurrence(a, w, b.double())),
    "h0_shape": ("h0", lambda a, w, b, h0: lstm_recurrence(a, w, b, h0[:1])),
    "c0_shape": ("c0", lambda a, w, b, h0: lstm_recurrence(a, w, b, h0, h0[:, :1])),
    "rnn_h0_type": ("h0", lambda a, w, b, h0: rnn_recurrence(a[..., :3], w[:3], None, 0.0)),
    "nonlinearity": ("nonlinearity", lambda a, w, b, h0: rnn_recurrence(a[..., :3], w[:3], nonlinearity="sigmoid")),
    "backend": ("backend", lambda a, w, b, h0: lstm_recurrence(a, w, backend="cudnn")),
    "s": ("s", lambda a, w, b, h0: nesterov_lstm_recurrence(a, w, s=float("nan"))),
    "restart": ("restart", lambda a, w, b, h0: nesterov_lstm_recurrence(a, w, restart=0)),
    "step_offset": ("step_offset", lambda a, w, b, h0: nesterov_lstm_recurrence(a, w, step_offset=-1)),
    "a0_shape": ("a0", lambda a, w, b, h0: nesterov_lstm_recurrence(a, w, a0=h0)),
    "u_width": ("u", lambda a, w, b, h0: nesterov_lstm_recurrence(a[..., 1:], w)),
    "mu": ("mu", lambda a, w, b, h0: momentum_lstm_recurrence(a, w, mu=1.0)),
    "v0_shape": ("v0", lambda a, w, b, h0: momentum_lstm_recurrence(a, w, v0=h0)),
    "momentum_restart": ("restart", lambda a, w, b, h0: momentum_lstm_recurrence(a, w, restart=0)),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_arguments_name_the_argument(device, case):
    name, call = BAD_CALLS[case]
    H = 3
    a = torch.zeros(2, 4, 4 * H, device=device)
    w = torch.zeros(4 * H, H, device=device)
    b = torch.zeros(4 * H, device=device)
    h0 = torch.zeros(2, H, device=device)
    with pytest.raises((ValueError, TypeError), match=rf"^{name} "):
        call(a, w, b, h0)


def test_float64_runs_on_the_torch_path(device):
    """float64 (for gradcheck) falls back to the torch path under backend="auto" and is refused by
    backend="triton"; the torch path is differentiable by autograd."""
    gen = torch.Generator().manual_seed(9)
    w, b = (p.double().requires_grad_() for p in _weights(4, 2, gen, device=device))
    a = torch.randn(1, 3, 8, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    with pytest.raises(TypeError, match="a must have dtype"):
        lstm_recurrence(a, w, b, backend="triton")
    assert torch.autograd.gradcheck(lambda a, w, b: lstm_recurrence(a, w, b, backend="auto"), (a, w, b))
