"""Scale (issue #7 item 4): T = 100 000, and element offsets beyond 2^31.

Long T.
- torch backend, T = 100 000, B = 2, H = 4: MomentumLSTM (native path plus the reference scan) and AdamLSTM
  (the fused Python step loop: an autograd graph of ~10^6 nodes) run forward + backward without a recursion
  error or non-finite value, and their outputs agree with the same computation split into two truncated-
  BPTT chunks that carry hx, the momentum state and step_offset (one side of each comparison runs under
  no_grad to keep CI time; gradients of split and checkpointed calls are compared at small T in
  tests/nn/test_checkpoint.py).
- Triton's interpreter: measured on this project's 2-core CPU machine, the scan kernels cost ~1 ms per
  time step (the interpreter's associative_scan walks the rows of every chunk in Python, so no BLOCK_T
  helps: 256 and 1024 gave 0.8-0.9 ms/step), the recurrence kernels 5 ms (RNN, H=16) to 10 ms (LSTM, H=4)
  per step forward and as much again backward. T = 100 000 therefore takes ~100 s per scan direction and
  ~1000-2000 s for a recurrence: those runs are opt-in (TRITONRNN_SCALE_FULL=1). CI runs the same tests at
  a T that fits its budget (scans T = 1 027, recurrences T = 300 / 100; measured at T = 4 099 the Adam
  scan's forward + backward alone took 114 s); what is specific to
  long T in the kernels (64-bit time offsets, the chunk-carry buffers) is covered exactly by the offset
  tests below, which do not need a long sequence to pass 2^31.

Offsets beyond 2^31 elements (STYLE.md: int64 offsets wherever B·T·C can pass 2^31).
Tensors are views (torch.as_strided) into 4 GiB bf16 storages (one per role) that torch allocates lazily:
only the pages the kernels touch become resident, a few MB. Row b of the input starts at b·2^30 elements and step t
of the outputs and output gradients at t·2^26 or more, so the last rows / steps lie beyond 2^31 elements
from the base pointer while every stride stays below 2^31 (strides that large reach the kernel as i32,
so a product in 32 bits would wrap: test_interpreter_wraps_int32_offsets shows that it does). Outputs
land there through the launchers' allocation hooks (scan._empty_like, recurrence._output). The internal
fp32 buffers of the recurrence (hs, cs, gates, dz) and the scan carries cannot be pushed past 2^31 without
that many elements of work; their offsets are products with the int64 row and step indices of the same
kernels. The multi-tensor optimizer kernels address each tensor through a pointer table: there a base
pointer 2^31 elements below a real buffer, with a chunk map that starts at element 2^31, reproduces a
single tensor of more than 2^31 elements.
"""
import os

import pytest
import torch
import triton
import triton.language as tl

import tritonrnn.nn as tnn
from tritonrnn import functional as F
from tritonrnn.functional import recurrence as R
from tritonrnn.kernels import multi_tensor as MT
from tritonrnn.kernels import recurrence as RK
from tritonrnn.kernels import scan as SK

from .tolerance import assert_close

T_LONG = 100_000
FULL = os.environ.get("TRITONRNN_SCALE_FULL") == "1"
full_only = pytest.mark.skipif(not FULL, reason="T = 100 000 on the interpreter takes minutes to hours "
                                                "(module docstring); set TRITONRNN_SCALE_FULL=1")
# The LSTM forgets: a rounding difference at a segment boundary decays within a few dozen steps, so outputs
# agree to a short accumulation's tolerance; gradients are sums over all T·B steps.
OUT_STEPS = 64


def _loss(out, hidden):
    h, c = hidden if isinstance(hidden, tuple) else (hidden, None)
    loss = out.square().mean() + h.sum()
    return loss + c.sum() if c is not None else loss


def _run(module, x, call):
    x = x.clone().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    out, hidden = call(module, x)
    _loss(out, hidden).backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters()}
    return out.detach(), grads, x.grad, [h.detach() for h in hidden]


# ------------------------------------------------------------------------------------ torch, T = 100 000
def test_momentum_lstm_100k_steps_torch_backend():
    """Native path plus the reference scan at T = 100 000 (one graph of ~3·10^5 scan nodes). Oracle: the
    same sequence as two truncated-BPTT chunks under no_grad (hx, state and step_offset carried); a graph
    of both (or checkpoint_sequence, tests/nn/test_checkpoint.py) would double the test's time."""
    torch.manual_seed(0)
    m = tnn.MomentumLSTM(1, 4, backend="torch")
    x = torch.randn(T_LONG, 2, 1)
    k = 33_331  # mid-sequence: the carried v_0 and the bias channel's decay meet there
    with torch.no_grad():
        out1, hx, state = m(x[:k], return_state=True)
        out2, (h_want, c_want), _ = m(x[k:], hx, state=state, step_offset=k, return_state=True)
        want = torch.cat([out1, out2])
    out, grads, dx, (h, c) = _run(m, x, lambda mod, inp: mod(inp))
    assert torch.isfinite(want).all()
    assert_close(out, want, torch.float32, steps=OUT_STEPS)
    assert_close(h, h_want, torch.float32, steps=OUT_STEPS)
    assert_close(c, c_want, torch.float32, steps=OUT_STEPS)
    assert torch.isfinite(dx).all() and dx.abs().sum() > 0
    for name, g in grads.items():
        assert torch.isfinite(g).all() and g.abs().sum() > 0, name


def test_adam_lstm_100k_steps_torch_backend():
    """The fused step loop at T = 100 000: ~10^6 autograd nodes, built, run backward and freed without
    recursion. One call under no_grad is the oracle of the outputs (a second graph would double the
    test's time); the graph-building run is two truncated-BPTT chunks with the gradient flowing across."""
    torch.manual_seed(1)
    m = tnn.AdamLSTM(1, 4, backend="torch")
    x = torch.randn(T_LONG, 2, 1)
    k = 61_237
    with torch.no_grad():
        want, (h_want, c_want) = m(x)

    def two_chunks(mod, inp):
        out1, hx, state = mod(inp[:k], return_state=True)
        out2, hidden, _ = mod(inp[k:], hx, state=state, step_offset=k, return_state=True)
        return torch.cat([out1, out2]), hidden

    out, grads, dx, (h, c) = _run(m, x, two_chunks)
    assert torch.isfinite(want).all()
    assert_close(out, want, torch.float32, steps=OUT_STEPS)
    assert_close(h, h_want, torch.float32, steps=OUT_STEPS)
    assert_close(c, c_want, torch.float32, steps=OUT_STEPS)
    assert torch.isfinite(dx).all() and dx[:k].abs().sum() > 0  # the gradient crossed the chunk boundary
    for name, g in grads.items():
        assert torch.isfinite(g).all() and g.abs().sum() > 0, name


# ------------------------------------------------------------------------------------ interpreter, long T
def _scan_pair(fn, T, C=3, seed=0):
    """fn(u, backend) -> (out, *states); forward + backward on both backends, compared."""
    torch.manual_seed(seed)
    u = torch.randn(2, T, C)
    results = []
    for backend in ("triton", "torch"):
        ui = u.clone().requires_grad_(True)
        out, *states = fn(ui, backend)
        w = torch.linspace(-1, 1, T)[None, :, None]
        ((out * w).sum() + sum(s.sum() for s in states)).backward()
        results.append((out.detach(), [s.detach() for s in states], ui.grad))
    (out_k, st_k, du_k), (out_t, st_t, du_t) = results
    assert_close(out_k, out_t, torch.float32, steps=OUT_STEPS)
    for a, b in zip(st_k, st_t):
        assert_close(a, b, torch.float32, steps=OUT_STEPS)
    assert_close(du_k, du_t, torch.float32, steps=OUT_STEPS, scale=float(du_t.abs().max()))


def _momentum(u, backend):
    return F.momentum_scan(u, 0.9, 0.6, restart=None, backend=backend)


def _adam(u, backend):
    return F.adam_scan(u, 0.9, 0.6, 0.99, 1e-8, backend=backend)


@pytest.mark.parametrize("fn", [_momentum, _adam], ids=["momentum", "adam"])
def test_scan_kernels_long_T(fn):
    _scan_pair(fn, 1_027)  # 33 chunks of BLOCK_T = 32, the last one partial


@full_only
@pytest.mark.slow
@pytest.mark.parametrize("fn", [_momentum, _adam], ids=["momentum", "adam"])
def test_scan_kernels_100k_steps(fn):
    _scan_pair(fn, T_LONG)


def _recurrence_pair(core, T, H, B=1, seed=0, grad=True):
    torch.manual_seed(seed)
    G = 4 if core == "lstm" else 1
    a = torch.randn(B, T, G * H)
    w = torch.randn(G * H, H) / H ** 0.5
    b = torch.randn(G * H) * 0.1
    results = []
    for backend in ("triton", "torch"):
        ai, wi = a.clone().requires_grad_(grad), w.clone().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            if core == "lstm":
                out, h, c = R.lstm_recurrence(ai, wi, b, backend=backend)
            else:
                out, h = R.rnn_recurrence(ai, wi, b, backend=backend)
            if grad:
                (out.square().mean() + h.sum()).backward()
        results.append((out.detach(), h.detach(), ai.grad, wi.grad))
    (out_k, h_k, da_k, dw_k), (out_t, h_t, da_t, dw_t) = results
    assert torch.isfinite(out_k).all()
    assert_close(out_k, out_t, torch.float32, steps=OUT_STEPS)
    assert_close(h_k, h_t, torch.float32, steps=OUT_STEPS)
    if grad:
        assert_close(da_k, da_t, torch.float32, steps=OUT_STEPS, scale=float(da_t.abs().max()))
        assert_close(dw_k, dw_t, torch.float32, steps=T, scale=float(dw_t.abs().max()))


@pytest.mark.parametrize("core,T,H", [("rnn", 300, 16), ("lstm", 100, 4)])
def test_recurrence_kernels_long_T(core, T, H):
    _recurrence_pair(core, T, H)


@full_only
@pytest.mark.slow
@pytest.mark.parametrize("core,H,grad", [("rnn", 16, False), ("rnn", 16, True), ("lstm", 4, True)])
def test_recurrence_kernels_100k_steps(core, H, grad):
    _recurrence_pair(core, T_LONG, H, grad=grad)


# ------------------------------------------------------------------------------------ offsets past 2^31
FAR = 2 ** 31


def test_interpreter_wraps_int32_offsets(device):
    """The offset tests can fail: a kernel that forms row · stride in 32 bits gets a wrapped (negative)
    offset here, as on a GPU, so it would read and write the wrong elements."""

    @triton.jit
    def _int32_products(out, stride):
        pid = tl.program_id(0)
        tl.store(out + pid, pid * stride)  # i32 × i32: wraps past 2^31

    out = torch.zeros(3, dtype=torch.int64, device=device)
    _int32_products[(3,)](out, 2 ** 30)
    assert out.tolist() == [0, 2 ** 30, -(2 ** 31)]


class FarStorage:
    """Views into one lazily allocated bf16 storage of 2^31 + 2^25 elements; every view is checked to be
    disjoint from the earlier ones, so the kernels cannot pass by reading their own writes."""

    SIZE = FAR + 2 ** 25

    def __init__(self, device):
        try:
            self.base = torch.empty(self.SIZE, dtype=torch.bfloat16, device=device)
        except (RuntimeError, MemoryError) as err:  # strict overcommit or a small GPU
            pytest.skip(f"cannot reserve a 4 GiB address range: {err}")
        self.used = set()

    def view(self, shape, strides, offset):
        index = torch.zeros((), dtype=torch.int64)
        for n, s in zip(shape, strides):
            index = index[..., None] + torch.arange(n) * s
        cells = set((index + offset).flatten().tolist())
        assert max(cells) < self.SIZE and not cells & self.used
        self.used |= cells
        return self.base.as_strided(shape, strides, offset)

    def batch_far(self, shape):
        """[B, T, C] with row b at b·2^30: rows 2.. start past 2^31."""
        B, T, C = shape
        assert B >= 3
        return self.view(shape, (2 ** 30, C, 1), 0)

    def time_far(self, shape, offset):
        """[B, T, C] with step t at t·S, S < 2^31 chosen so that the last step lies past 2^31."""
        B, T, C = shape
        S = -(-FAR // (T - 1)) + 2 ** 12
        return self.view(shape, (C, S, 1), offset)


@pytest.fixture
def far(device):
    """A FarStorage per role (input, outputs, output gradients): the kernels' custom ops reject outputs
    that share a storage with their inputs."""
    stores = []

    def make():
        stores.append(FarStorage(device))
        return stores[-1]

    yield make
    stores.clear()  # the storages go with the test


def _far_outputs(monkeypatch, module, name, far, *, width_arg=None):
    """Route a launcher's sequence outputs into time-far views (disjoint offsets per call)."""
    calls = []

    def alloc(x, *args):
        B, T = x.shape[:2]
        C = x.shape[2] if width_arg is None else args[width_arg]
        calls.append(1)
        return far.time_far((B, T, C), offset=2 ** 20 * len(calls))

    monkeypatch.setattr(module, name, alloc)
    return calls


@pytest.mark.parametrize("fn", [_momentum, _adam], ids=["momentum", "adam"])
def test_scan_offsets_past_2_31(fn, far, monkeypatch, device):
    B, T, C = 3, 40, 5
    torch.manual_seed(0)
    u_far = far().batch_far((B, T, C))
    u_far.copy_(torch.randn(B, T, C))
    g_far = far().time_far((B, T, C), offset=2 ** 24)
    g_far.copy_(torch.randn(B, T, C))
    u_ref = u_far.detach().clone().float().requires_grad_(True)
    out_ref, *_ = fn(u_ref, "torch")
    out_ref.backward(g_far.float())

    outs = far()
    calls = _far_outputs(monkeypatch, SK, "_empty_like", outs)
    u = u_far.requires_grad_(True)
    out, *_ = fn(u, "triton")
    assert out.data_ptr() == outs.base.data_ptr() + 2 * 2 ** 20  # the forward wrote into the far view
    out.backward(g_far)
    assert len(calls) == 2  # forward output and input gradient both far
    assert_close(out, out_ref, torch.bfloat16, steps=T)
    assert_close(u.grad, u_ref.grad, torch.bfloat16, steps=T, scale=float(u_ref.grad.abs().max()))


@pytest.mark.parametrize("core", ["lstm", "rnn"])
def test_recurrence_offsets_past_2_31(core, far, monkeypatch, device):
    B, T, H = 3, 24, 16
    G = 4 if core == "lstm" else 1
    torch.manual_seed(0)
    a_far = far().batch_far((B, T, G * H))
    a_far.copy_(torch.randn(B, T, G * H))
    g_far = far().time_far((B, T, H), offset=2 ** 24)
    g_far.copy_(torch.randn(B, T, H))
    w = (torch.randn(G * H, H) / H ** 0.5).to(torch.bfloat16).to(device)

    def call(a, weight, backend):
        if core == "lstm":
            return R.lstm_recurrence(a, weight, backend=backend)[0]
        return R.rnn_recurrence(a, weight, backend=backend)[0]

    a_ref = a_far.detach().clone().float().requires_grad_(True)
    w_ref = w.float().requires_grad_(True)
    out_ref = call(a_ref, w_ref, "torch")
    out_ref.backward(g_far.float())

    outs = far()
    calls = _far_outputs(monkeypatch, RK.launch, "_output", outs, width_arg=0)
    a = a_far.requires_grad_(True)
    wk = w.clone().requires_grad_(True)
    out = call(a, wk, "triton")
    assert calls and out.data_ptr() == outs.base.data_ptr() + 2 * 2 ** 20
    out.backward(g_far)  # the backward kernel reads dout through the far view
    assert_close(out, out_ref, torch.bfloat16, steps=T)
    assert_close(a.grad, a_ref.grad, torch.bfloat16, steps=T, scale=float(a_ref.grad.abs().max()))
    assert_close(wk.grad, w_ref.grad, torch.bfloat16, steps=T * B, scale=float(w_ref.grad.abs().max()))


def _tables(device, real, start):
    """A pointer table whose entry lies `start` elements below `real`: element `start` is real[0]."""
    return torch.tensor([real.data_ptr() - start * real.element_size()], dtype=torch.int64, device=device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_multi_tensor_offsets_past_2_31(dtype, device):
    """One tensor of 2^31 + 2^11 elements, of which the program owning the chunk at 2^31 + 1024 runs."""
    start, n = FAR + 1024, FAR + 2048
    numels = torch.tensor([n], dtype=torch.int64, device=device)
    chunk_tensor = torch.zeros(1, dtype=torch.int64, device=device)
    chunk_start = torch.tensor([start], dtype=torch.int64, device=device)
    torch.manual_seed(0)
    w = torch.randn(MT.BLOCK, device=device).to(dtype)
    g = torch.randn(MT.BLOCK, device=device).to(dtype)
    buf = torch.randn(MT.BLOCK, device=device)
    w0, buf0 = w.float().clone(), buf.clone()
    lr, mu, wd = 0.1, 0.5, 0.01
    kw = dict(P_DTYPE=MT.TL_DTYPES[dtype], G_DTYPE=MT.TL_DTYPES[dtype], BLOCK=MT.BLOCK, num_warps=MT.NUM_WARPS)

    partial_max = torch.full((1,), float("nan"), device=device)
    partial_ssq = torch.full((1,), float("nan"), device=device)
    MT._fw_norm_kernel[(1,)](_tables(device, w, start), _tables(device, g, start), numels, chunk_tensor,
                             chunk_start, partial_max, partial_ssq, wd, **kw)
    g_eff = g.float() + wd * w0
    assert torch.equal(partial_max, g_eff.abs().max()[None])  # (m, s): ‖g‖² = m²·s, scale-safe (issue 14)
    assert_close(partial_ssq, (g_eff / partial_max).square().sum()[None], torch.float32, steps=MT.BLOCK)

    MT._srsgd_kernel[(1,)](_tables(device, w, start), _tables(device, g, start), _tables(device, buf, start),
                           numels, chunk_tensor, chunk_start, lr, mu, wd, **kw)
    v = w0 - lr * g_eff  # SPEC §2.1
    assert_close(buf, v, torch.float32)
    assert_close(w, v + mu * (v - buf0), dtype)

    w1 = w.float().clone()
    vel = buf0.clone()
    MT._nag_kernel[(1,)](_tables(device, w, start), _tables(device, g, start), _tables(device, vel, start),
                         numels, chunk_tensor, chunk_start, lr, mu, 1.5, 0.5, wd, **kw)
    v_new = mu * buf0 - lr * (g.float() + wd * w1)  # SPEC §2.2 with (c_new, c_old) = (1.5, 0.5)
    assert_close(vel, v_new, torch.float32)
    assert_close(w, w1 + 1.5 * v_new - 0.5 * buf0, dtype)
