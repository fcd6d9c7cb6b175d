"""tritonrnn.functional.scan: the torch path against the step-by-step references (SPEC §1.2), float64
gradcheck, argument checks and empty inputs. The Triton path reuses the oracle helpers defined here
(tests/kernels/test_scan.py).

Oracle: the reference run in float64 on the same (already rounded) inputs and cotangents. Tolerances come
from tests/tolerance.py with `steps` = T; `scale` (the absolute floor) is the magnitude of the summed terms,
measured by running the same oracle on |inputs| and |cotangents| (every coefficient of these recurrences is
>= 0, so that run adds magnitudes where the real one may cancel). Adam's du adds a v-path and an m-path
that cancel exactly for T = 1 (a_0 does not depend on u_0 when there is no history); their magnitudes are
taken separately.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, reject
from hypothesis import strategies as st

from tests.tolerance import assert_close
from tritonrnn.functional.scan import adam_scan, momentum_scan, rmsprop_scan
from tritonrnn.reference import scans as ref

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


# ------------------------------------------------------------------------------- oracle helpers
def adam_decomposed(u_v, u_m, mu, s, beta, eps, v0=None, m0=None):
    """reference.adam_scan with the input split into the copy that drives v and the copy that drives m,
    so their gradient contributions can be measured apart (checked equal to reference.adam_scan in
    tests/test_reference_scans.py)."""
    v_seq, vT = ref.momentum_scan(u_v, mu, s, v0)
    m_seq, mT = ref.momentum_scan(u_m * u_m, beta, 1.0 - beta, m0)
    v_seq, m_seq = v_seq.to(torch.float64), m_seq.to(torch.float64)
    return v_seq / (ref.sqrt0(m_seq) + eps), vT, mT


def _leaf(x):
    return None if x is None else x.detach().requires_grad_()


def forward_backward(call, u, states, cotangents):
    """Outputs of call(u, *states) and the gradients of Σ out·cotangent w.r.t. u and every given state."""
    u = _leaf(u)
    states = [_leaf(x) for x in states]
    outs = call(u, *states)
    inputs = [u] + [x for x in states if x is not None]
    grads = torch.autograd.grad(outs, inputs, cotangents, allow_unused=True)
    return [o.detach() for o in outs], list(grads)


def _f64(x):
    return None if x is None else x.detach().to(torch.float64)


def _abs64(x):
    return None if x is None else x.detach().to(torch.float64).abs()


def _magnitude(x):
    return x.abs().max().item() if x is not None and x.numel() else 0.0


def check_scan(op, u, states, params, cotangents, *, backend, restart=None, step_offset=0):
    """Run `op` ("momentum" | "adam" | "rmsprop") on `backend` and compare outputs, final states and the
    gradients of u and of every initial state with the float64 reference."""
    T = u.shape[1]
    if op == "momentum":
        mu, s = params
        kw = dict(restart=restart, step_offset=step_offset)

        def call(u_, v0):
            return momentum_scan(u_, mu, s, v0, backend=backend, **kw)

        def oracle(u_, v0):
            return ref.momentum_scan(u_, mu, s, v0, **kw)

        def magnitude(u_, v0):
            return ref.momentum_scan(u_, mu, abs(s), v0, **kw)
    else:
        if op == "adam":
            mu, s, beta, eps = params

            def call(u_, v0, m0):
                return adam_scan(u_, mu, s, beta, eps, v0, m0, backend=backend)
        else:
            s, beta, eps = params
            mu = 0.0

            def call(u_, m0):
                return rmsprop_scan(u_, s, beta, eps, m0, backend=backend)

        def oracle(u_, *st_):
            v0, m0 = st_ if op == "adam" else (None, st_[0])
            a, vT, mT = ref.adam_scan(u_, mu, s, beta, eps, v0, m0)
            return (a, vT, mT) if op == "adam" else (a, mT)

        def magnitude(u_, *st_, cotangents):
            v0, m0 = st_ if op == "adam" else (None, st_[0])
            return adam_magnitudes(u_, mu, s, beta, eps, v0, m0, op, cotangents)

    outs, grads = forward_backward(call, u, states, cotangents)
    exp_outs, exp_grads = forward_backward(oracle, _f64(u), [_f64(x) for x in states], [_f64(c) for c in cotangents])
    mag_outs, mag_grads = magnitude_run(magnitude, u, states, cotangents, op)
    # A drawn case whose exact result does not fit u's dtype (fp16 tops out at 65504: Adam's gradient at a
    # tiny |u| with no history) has no representable answer to compare with.
    if max(_magnitude(x) for x in [exp_outs[0], exp_grads[0]]) >= torch.finfo(u.dtype).max / 2:
        reject()

    state_dtype = torch.promote_types(u.dtype, torch.float32)
    assert outs[0].dtype == u.dtype and outs[0].shape == u.shape
    for i, (out, exp, mag) in enumerate(zip(outs, exp_outs, mag_outs)):
        dtype = u.dtype if i == 0 else state_dtype
        if i > 0:
            assert out.dtype == state_dtype and out.shape == (u.shape[0], u.shape[2])
        assert_close(out, exp, dtype, steps=T, scale=mag, msg=f"{op} output {i}")
    for i, (grad, exp, mag) in enumerate(zip(grads, exp_grads, mag_grads)):
        dtype = u.dtype if i == 0 else state_dtype
        assert grad is not None and torch.isfinite(grad).all(), f"{op} gradient {i} missing or not finite"
        assert_close(grad, exp, dtype, steps=T, scale=mag, msg=f"{op} gradient {i}")


def magnitude_run(magnitude, u, states, cotangents, op):
    """Scalar magnitudes of the summed terms of every output and gradient (see the module docstring)."""
    if op == "momentum":
        outs, grads = forward_backward(magnitude, _abs64(u), [_abs64(x) for x in states],
                                       [_abs64(c) for c in cotangents])
        return [_magnitude(o) for o in outs], [_magnitude(g) for g in grads]
    return magnitude(_abs64(u), *[_abs64(x) for x in states], cotangents=[_abs64(c) for c in cotangents])


def adam_magnitudes(u, mu, s, beta, eps, v0, m0, op, cotangents=None):
    """Magnitudes for Adam/RMSProp from the decomposed oracle on |inputs|: the v-path and m-path parts of
    du are measured apart and added (on |inputs| they have opposite signs and would cancel)."""
    u_v, u_m = _leaf(u), _leaf(u.clone())
    v0, m0 = _leaf(v0), _leaf(m0)
    a, vT, mT = adam_decomposed(u_v, u_m, mu, abs(s), beta, eps, v0, m0)
    outs = (a, vT, mT) if op == "adam" else (a, mT)
    states = [x for x in ((v0, m0) if op == "adam" else (m0,)) if x is not None]
    grads = torch.autograd.grad(outs, [u_v, u_m] + states, cotangents, allow_unused=True)
    zero = torch.zeros(())
    du = (grads[0] if grads[0] is not None else zero).abs() + (grads[1] if grads[1] is not None else zero).abs()
    return [_magnitude(o.detach()) for o in outs], [_magnitude(du)] + [_magnitude(g) for g in grads[2:]]


# ------------------------------------------------------------------------------- input generation
@st.composite
def scan_cases(draw, op, dtypes=DTYPES, long_T=(250, 300), max_B=3, max_C=20):
    """(u, states, params, cotangents, restart, step_offset) covering the edges of SPEC §1.2."""
    B = draw(st.integers(1, max_B))
    T = draw(st.one_of(st.integers(1, 70), st.integers(*long_T)))
    C = draw(st.integers(1, max_C))
    dtype = draw(st.sampled_from(dtypes))
    time_major = draw(st.booleans())
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    near_one = st.sampled_from([0.9, 0.99, 0.999])
    # Hyper-parameters reach the kernels as fp32: keep them representable (no subnormal or 1e-300 rates).
    inner = st.floats(1e-3, 0.9)
    s = draw(st.sampled_from([0.6, 1.0, -0.7, 2.5]))
    restart, step_offset = None, 0

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    if time_major:  # a [T, B, C] tensor seen as [B, T, C]: non-contiguous, time stride B*C
        u = randn(T, B, C).to(dtype).transpose(0, 1)
    else:
        u = randn(B, T, C).to(dtype)
    v0 = randn(B, C) if draw(st.booleans()) else None
    m0 = (0.1 + torch.rand(B, C, generator=gen)) if draw(st.booleans()) else None
    if op == "momentum":
        if draw(st.integers(0, 2)):  # the restart schedule in two draws out of three
            restart = draw(st.integers(1, 6))
            step_offset = draw(st.one_of(st.integers(0, 12), st.just(2**33 + 5)))
        mu = draw(st.one_of(st.just(0.0), inner, near_one))
        params, states = (mu, s), [v0]
        outs = 2
    else:
        beta = draw(st.one_of(st.sampled_from([0.0, 1e-3]), inner, near_one))
        eps = draw(st.sampled_from([1e-8, 1e-3, 0.1]))
        if op == "adam":
            mu = draw(st.one_of(st.just(0.0), inner, near_one))
            params, states, outs = (mu, s, beta, eps), [v0, m0], 3
        else:
            params, states, outs = (s, beta, eps), [m0], 2
    cot = [randn(B, T, C).to(dtype)] + [randn(B, C) for _ in range(outs - 1)]
    # Sometimes drop a cotangent: the gradient must then flow through the other outputs alone.
    drop = draw(st.sampled_from([None, None, 0, outs - 1]))
    if drop is not None:
        cot[drop] = torch.zeros_like(cot[drop])
    return u, states, params, cot, restart, step_offset


# --------------------------------------------------------------------------- torch path vs oracle
@given(case=scan_cases("momentum"))
def test_momentum_torch_matches_reference(case):
    u, states, params, cot, restart, step_offset = case
    check_scan("momentum", u, states, params, cot, backend="torch", restart=restart, step_offset=step_offset)


@given(case=scan_cases("adam"))
def test_adam_torch_matches_reference(case):
    u, states, params, cot, _, _ = case
    check_scan("adam", u, states, params, cot, backend="torch")


@given(case=scan_cases("rmsprop"))
def test_rmsprop_torch_matches_reference(case):
    u, states, params, cot, _, _ = case
    check_scan("rmsprop", u, states, params, cot, backend="torch")


def check_continuation(backend, dtype=torch.float32, B=2, T=45, C=3, split=19, device="cpu"):
    """Truncated BPTT (SPEC §1.2: t restarts at 0 unless a step offset is passed): two calls, the second
    entering with the first's final state and step_offset = split, equal one call over the whole sequence."""
    u = torch.randn(B, T, C, generator=torch.Generator().manual_seed(5)).to(device, dtype)
    for restart in (None, 4):
        whole, whole_T = momentum_scan(u, 0.8, 0.6, restart=restart, step_offset=3, backend=backend)
        first, mid = momentum_scan(u[:, :split], 0.8, 0.6, restart=restart, step_offset=3, backend=backend)
        second, last = momentum_scan(u[:, split:], 0.8, 0.6, mid, restart=restart, step_offset=3 + split,
                                     backend=backend)
        assert_close(torch.cat([first, second], 1), whole, dtype, T, whole.abs().max().item(), f"v, F={restart}")
        assert_close(last, whole_T, torch.float32, T, whole_T.abs().max().item(), f"v_T, F={restart}")
    whole, _, _ = adam_scan(u, 0.8, 0.6, 0.9, 1e-8, backend=backend)
    first, v_mid, m_mid = adam_scan(u[:, :split], 0.8, 0.6, 0.9, 1e-8, backend=backend)
    second, _, _ = adam_scan(u[:, split:], 0.8, 0.6, 0.9, 1e-8, v_mid, m_mid, backend=backend)
    assert_close(torch.cat([first, second], 1), whole, dtype, T, whole.abs().max().item(), "a")


def test_continuation_with_step_offset_torch():
    check_continuation("torch", torch.bfloat16)


def test_adam_zero_history_gradient_is_finite():
    # m_t = 0 (zero input, no history) on one channel: reference.sqrt0's zero derivative, never NaN.
    u = torch.randn(2, 9, 3, dtype=torch.float64)
    u[:, :, 1] = 0.0
    m0 = torch.rand(2, 3, dtype=torch.float64)
    m0[:, 1] = 0.0
    check_scan("adam", u, [torch.randn(2, 3, dtype=torch.float64), m0], (0.6, 0.6, 0.1, 1e-8),
               [torch.randn(2, 9, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64),
                torch.randn(2, 3, dtype=torch.float64)], backend="torch")


# ----------------------------------------------------------------------------------- gradcheck
def _f64_inputs(B=2, T=7, C=3):
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(B, T, C, generator=gen, dtype=torch.float64, requires_grad=True)
    v0 = torch.randn(B, C, generator=gen, dtype=torch.float64, requires_grad=True)
    m0 = (0.5 + torch.rand(B, C, generator=gen, dtype=torch.float64)).requires_grad_()
    return u, v0, m0


@pytest.mark.parametrize("restart,step_offset", [(None, 0), (3, 4), (1, 0)])
def test_momentum_gradcheck(restart, step_offset):
    u, v0, _ = _f64_inputs(B=1, T=66, C=1)  # crosses a torch-path chunk boundary (64 steps)
    assert torch.autograd.gradcheck(
        lambda u_, v_: momentum_scan(u_, 0.8, 0.6, v_, restart=restart, step_offset=step_offset, backend="torch"),
        (u, v0))


def test_adam_and_rmsprop_gradcheck():
    u, v0, m0 = _f64_inputs()
    assert torch.autograd.gradcheck(lambda *x: adam_scan(x[0], 0.7, 0.6, 0.3, 1e-3, x[1], x[2], backend="torch"),
                                    (u, v0, m0))
    assert torch.autograd.gradcheck(lambda *x: rmsprop_scan(x[0], 0.6, 0.9, 1e-3, x[1], backend="torch"), (u, m0))


# ------------------------------------------------------------------------------ layout and dtypes
def test_torch_path_outputs_keep_a_time_major_layout():
    u = torch.randn(7, 2, 3).transpose(0, 1)  # [B, T, C] view of a [T, B, C] tensor
    assert momentum_scan(u, 0.5, 1.0, backend="torch")[0].stride() == u.stride()
    assert adam_scan(u, 0.5, 1.0, 0.9, 1e-8, backend="torch")[0].stride() == u.stride()


def test_float64_runs_on_torch_path_and_is_refused_by_triton():
    u = torch.randn(1, 4, 2, dtype=torch.float64)
    v, vT = momentum_scan(u, 0.5, 1.0, backend="auto")
    assert v.dtype == torch.float64 and vT.dtype == torch.float64
    with pytest.raises(TypeError, match="u"):
        momentum_scan(u, 0.5, 1.0, backend="triton")


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("shape", [(0, 5, 3), (2, 0, 3), (2, 5, 0)])
def test_empty_inputs_return_initial_states(backend, shape):
    B, _, C = shape
    u = torch.randn(shape, dtype=torch.bfloat16)
    v0, m0 = torch.randn(B, C), torch.rand(B, C)
    for out, states in [
        (momentum_scan(u, 0.5, 1.0, v0, backend=backend), (v0,)),
        (momentum_scan(u, 0.5, 1.0, backend=backend), (torch.zeros(B, C),)),
        (adam_scan(u, 0.5, 1.0, 0.9, 1e-8, v0, m0, backend=backend), (v0, m0)),
        (rmsprop_scan(u, 1.0, 0.9, 1e-8, m0, backend=backend), (m0,)),
    ]:
        assert out[0].shape == shape and out[0].dtype == torch.bfloat16
        for got, want in zip(out[1:], states):
            assert got.dtype == torch.float32
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_empty_sequence_final_state_gradient_flows_to_initial_state():
    v0 = torch.randn(2, 3, requires_grad=True)
    _, vT = momentum_scan(torch.randn(2, 0, 3), 0.5, 1.0, v0, backend="torch")
    vT.sum().backward()
    torch.testing.assert_close(v0.grad, torch.ones(2, 3), rtol=0, atol=0)


# ------------------------------------------------------------------------------ argument errors
def _u():
    return torch.randn(2, 5, 3)


@pytest.mark.parametrize("call,exc,name", [
    (lambda: momentum_scan(_u().numpy(), 0.5, 1.0), TypeError, "u"),
    (lambda: momentum_scan(torch.randn(5, 3), 0.5, 1.0), ValueError, "u"),
    (lambda: momentum_scan(torch.ones(2, 5, 3, dtype=torch.int64), 0.5, 1.0), TypeError, "u"),
    (lambda: momentum_scan(_u(), 1.0, 1.0), ValueError, "mu"),
    (lambda: momentum_scan(_u(), -0.1, 1.0), ValueError, "mu"),
    (lambda: momentum_scan(_u(), math.nan, 1.0), ValueError, "mu"),
    (lambda: momentum_scan(_u(), 0.5, "1"), TypeError, "s"),
    (lambda: momentum_scan(_u(), 0.5, 1.0, torch.zeros(2, 4)), ValueError, "v0"),
    (lambda: momentum_scan(_u(), 0.5, 1.0, torch.zeros(2, 3, 1)), ValueError, "v0"),
    (lambda: momentum_scan(_u(), 0.5, 1.0, torch.zeros(2, 3, dtype=torch.int32)), TypeError, "v0"),
    (lambda: momentum_scan(_u(), 0.5, 1.0, restart=0), ValueError, "restart"),
    (lambda: momentum_scan(_u(), 0.5, 1.0, restart=2.0), TypeError, "restart"),
    (lambda: momentum_scan(_u(), 0.5, 1.0, restart=2, step_offset=-1), ValueError, "step_offset"),
    (lambda: momentum_scan(_u(), 0.5, 1.0, backend="cuda"), ValueError, "backend"),
    (lambda: adam_scan(_u(), 0.5, 1.0, 1.0, 1e-8), ValueError, "beta"),
    (lambda: adam_scan(_u(), 0.5, 1.0, 0.9, 0.0), ValueError, "eps"),
    (lambda: adam_scan(_u(), 0.5, 1.0, 0.9, 1e-8, m0=torch.zeros(3, 3)), ValueError, "m0"),
    (lambda: adam_scan(_u(), 0.5, 1.0, 0.9, 1e-8, torch.zeros(3)), ValueError, "v0"),
    (lambda: rmsprop_scan(_u(), 1.0, -0.5, 1e-8), ValueError, "beta"),
    (lambda: rmsprop_scan(_u(), 1.0, 0.9, -1.0), ValueError, "eps"),
    (lambda: rmsprop_scan(_u(), 1.0, 0.9, 1e-8, m0=[0.0]), TypeError, "m0"),
])
def test_bad_arguments_raise_naming_the_argument(call, exc, name):
    with pytest.raises(exc, match=rf"\b{name}\b"):
        call()
