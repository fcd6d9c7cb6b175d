"""Chunked-scan kernels (tritonrnn.kernels.scan) against the step-by-step references, through
tritonrnn.functional.scan with backend="triton": Triton's interpreter on CPU, compiled on a GPU.

Every output and state buffer the launchers allocate is poisoned with NaN, so an element a kernel forgets
to write fails the comparison. The oracle and tolerances are those of tests/test_functional_scan.py.
Shapes stay small (the interpreter runs a scan element by element) but cross the chunk (BLOCK_T = 32) and
C-block boundaries.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings

pytest.importorskip("triton")

from tests.conftest import DEVICE  # noqa: E402
from tests.profiles import budget  # noqa: E402
from tests.test_functional_scan import assert_close, check_continuation, check_scan, scan_cases  # noqa: E402
from tritonrnn.functional.scan import adam_scan, momentum_scan, rmsprop_scan  # noqa: E402
from tritonrnn.kernels import scan as kernels  # noqa: E402
from tritonrnn.reference import scans as ref  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def poisoned_outputs():
    # Module-scoped: hypothesis refuses function-scoped fixtures on @given tests.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kernels, "_empty_like", lambda x: torch.full_like(x, math.nan))
        mp.setattr(kernels, "_empty_state",
                   lambda shape, device: torch.full(shape, math.nan, dtype=torch.float32, device=device))
        yield


def _to_device(case):
    u, states, params, cot, restart, step_offset = case
    move = lambda x: None if x is None else x.to(DEVICE)  # noqa: E731  (.to keeps a transposed layout)
    return move(u), [move(x) for x in states], params, [move(c) for c in cot], restart, step_offset


@given(case=scan_cases("momentum", max_B=2))
def test_momentum_kernel_matches_reference(case):
    u, states, params, cot, restart, step_offset = _to_device(case)
    check_scan("momentum", u, states, params, cot, backend="triton", restart=restart, step_offset=step_offset)


@given(case=scan_cases("adam", max_B=2))
def test_adam_kernel_matches_reference(case):
    u, states, params, cot, _, _ = _to_device(case)
    check_scan("adam", u, states, params, cot, backend="triton")


# RMSProp runs Adam's kernels with mu = 0 (and the torch path is checked against the reference at full
# strength), so a few examples suffice here: the interpreter is slow.
@settings(max_examples=budget(4))
@given(case=scan_cases("rmsprop", max_B=2))
def test_rmsprop_kernel_matches_reference(case):
    u, states, params, cot, _, _ = _to_device(case)
    check_scan("rmsprop", u, states, params, cot, backend="triton")


def _randn(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype).to(DEVICE)


@pytest.mark.parametrize("op", ["momentum", "restart", "adam"])
def test_several_channel_blocks_and_rows(op):
    # C = 70 spans two forward C-blocks (64) and three backward ones (32); T = 33 leaves a 1-step chunk.
    B, T, C = 2, 33, 70
    u = _randn(B, T, C, seed=1)
    v0, m0 = _randn(B, C, seed=2), _randn(B, C, seed=3).abs()
    cot = [_randn(B, T, C, seed=4), _randn(B, C, seed=5), _randn(B, C, seed=6)]
    if op == "adam":
        check_scan("adam", u, [v0, m0], (0.6, 0.6, 0.1, 1e-8), cot, backend="triton")
    else:
        restart = 4 if op == "restart" else None
        check_scan("momentum", u, [v0], (0.9, 0.6), cot[:2], backend="triton", restart=restart, step_offset=7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_adam_zero_history_gradient_is_finite(dtype):
    # m_t = 0 on channel 1 (zero input, zero m0): the kernels take d√m/dm = 0 there, as reference.sqrt0.
    u = _randn(2, 40, 3, dtype=dtype, seed=7)
    u[:, :, 1] = 0
    m0 = _randn(2, 3, seed=8).abs()
    m0[:, 1] = 0
    cot = [_randn(2, 40, 3, dtype=dtype, seed=9), _randn(2, 3, seed=10), _randn(2, 3, seed=11)]
    check_scan("adam", u, [_randn(2, 3, seed=12), m0], (0.6, 0.6, 0.1, 1e-8), cot, backend="triton")


def _grads(fn, u, *states):
    u = u.detach().requires_grad_()
    states = [x.detach().requires_grad_() for x in states]
    out = fn(u, *states)
    return torch.autograd.grad(out, [u, *states])


@pytest.mark.parametrize("which", ["sequence", "final_state"])
def test_gradient_through_one_output_only(which):
    # Autograd hands the backward None for an unused output (set_materialize_grads(False)); the kernels
    # must then treat that cotangent as zero.
    B, T, C = 2, 37, 5
    u, v0, m0 = _randn(B, T, C, seed=13), _randn(B, C, seed=14), _randn(B, C, seed=15).abs()
    if which == "sequence":
        pick = lambda outs: outs[0].sum()  # noqa: E731
    else:
        pick = lambda outs: sum((state * state).sum() for state in outs[1:])  # noqa: E731
    cases = [
        (lambda u_, v_: pick(momentum_scan(u_, 0.7, 0.6, v_, restart=3, backend="triton")),
         lambda u_, v_: pick(ref.momentum_scan(u_, 0.7, 0.6, v_, restart=3)), [v0]),
        (lambda u_, v_, m_: pick(adam_scan(u_, 0.7, 0.6, 0.2, 1e-8, v_, m_, backend="triton")),
         lambda u_, v_, m_: pick(ref.adam_scan(u_, 0.7, 0.6, 0.2, 1e-8, v_, m_)), [v0, m0]),
    ]
    for fast, oracle, states in cases:
        got = _grads(fast, u, *states)
        want = _grads(oracle, u.double(), *[x.double() for x in states])
        for g, w in zip(got, want):
            assert_close(g, w, torch.float32, steps=T, scale=w.abs().max().item(), msg=which)


def test_restart_period_and_offset_beyond_int32():
    # F and step_offset are Python ints of any size; the launcher reduces the phase on the host.
    u, cot = _randn(1, 40, 2, seed=22), [_randn(1, 40, 2, seed=23), _randn(1, 2, seed=24)]
    check_scan("momentum", u, [None], (0.5, 0.6), cot, backend="triton", restart=2**40, step_offset=2**41 + 3)
    check_scan("momentum", u, [None], (0.5, 0.6), cot, backend="triton", restart=5, step_offset=2**62 + 1)


def test_continuation_with_step_offset(device):
    check_continuation("triton", torch.float16, B=1, C=2, device=device)


def test_outputs_keep_a_time_major_layout_and_no_grad_skips_carries():
    B, T, C = 2, 35, 6
    u = _randn(T, B, C, dtype=torch.bfloat16, seed=16).transpose(0, 1)  # [B, T, C] view of [T, B, C]
    with torch.no_grad():
        a, vT, mT = adam_scan(u, 0.6, 0.6, 0.1, 1e-8, backend="triton")
        v, _ = momentum_scan(u, 0.6, 0.6, backend="triton")
    assert a.stride() == u.stride() and v.stride() == u.stride()
    a_ref, vT_ref, mT_ref = ref.adam_scan(u.double(), 0.6, 0.6, 0.1, 1e-8)
    assert_close(a, a_ref, torch.bfloat16, steps=T, scale=a_ref.abs().max().item(), msg="a")
    assert_close(mT, mT_ref, torch.float32, steps=T, scale=mT_ref.abs().max().item(), msg="m_T")


def test_low_precision_initial_states_get_gradients_in_their_dtype():
    B, T, C = 1, 9, 4
    u = _randn(B, T, C, seed=17).requires_grad_()
    v0 = _randn(B, C, dtype=torch.bfloat16, seed=18).requires_grad_()
    m0 = _randn(B, C, dtype=torch.float16, seed=19).abs().requires_grad_()
    a, vT, mT = adam_scan(u, 0.6, 0.6, 0.1, 1e-8, v0, m0, backend="triton")
    (a.sum() + vT.sum() + mT.sum()).backward()
    assert v0.grad.dtype == torch.bfloat16 and m0.grad.dtype == torch.float16
    v, vT = momentum_scan(u, 0.6, 0.6, v0, backend="triton")
    assert vT.dtype == torch.float32


def test_rmsprop_equals_adam_with_zero_momentum():
    u, m0 = _randn(2, 20, 3, seed=20), _randn(2, 3, seed=21).abs()
    a, mT = rmsprop_scan(u, 0.6, 0.9, 1e-8, m0, backend="triton")
    a_ref, _, mT_ref = adam_scan(u, 0.0, 0.6, 0.9, 1e-8, None, m0, backend="triton")
    torch.testing.assert_close(a, a_ref, rtol=0, atol=0)
    torch.testing.assert_close(mT, mT_ref, rtol=0, atol=0)


def test_aot_configs_cover_both_dtypes_of_every_kernel():
    names = {cfg.name.split("[")[0] for cfg in kernels.AOT_CONFIGS}
    assert names == {"scan.momentum_scan_fwd", "scan.momentum_scan_bwd", "scan.adam_scan_fwd", "scan.adam_scan_bwd"}
    for cfg in kernels.AOT_CONFIGS:
        pointers = {k: v for k, v in cfg.signature.items() if v.startswith("*")}
        assert cfg.signature["T"] == "i32" and cfg.default
        assert any(v in ("*fp32", "*bf16") for v in pointers.values())
    assert {cfg.name.split("[")[1].split(",")[0] for cfg in kernels.AOT_CONFIGS} == {"fp32", "bf16"}
