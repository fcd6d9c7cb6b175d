"""The torch path's step-loop op (tritonrnn.functional.steploop, issue #16): its hand-written backward against
the reference cells differentiated by autograd, every core and family, float64; the no-grad forward; the
double-backward error."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tritonrnn.functional.layers as layers
from tests.tolerance import assert_close
from tritonrnn.functional import steploop
from tritonrnn.reference import STATE_NAMES, recurrent_layer

HYPER = {"plain": {}, "momentum": dict(mu=0.7, s=0.5), "restart": dict(s=0.6, restart=3),
         "adam": dict(mu=0.6, s=0.6, beta=0.3, eps=1e-8), "rmsprop": dict(s=0.6, beta=0.9, eps=1e-8),
         "nesterov": dict(s=1.0, restart=2)}
CASES = [(core, dyn) for core in ("lstm", "rnn_tanh", "rnn_relu", "rnn_modrelu", "indrnn") for dyn in HYPER
         if dyn != "nesterov" or core == "lstm"]


def _problem(core, dynamics, T, B, n_in, H, bias, states, seed):
    g = torch.Generator().manual_seed(seed)
    G = 4 if core == "lstm" else 1
    f64 = dict(dtype=torch.float64)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, **f64) * scale).requires_grad_()

    params = dict(weight_ih=rand(G * H, n_in),
                  weight_hh=rand(H) if core == "indrnn" else rand(G * H, H, scale=H ** -0.5),
                  bias_ih=rand(G * H) if bias else None, bias_hh=rand(G * H) if bias else None)
    x = rand(T, B, n_in)
    init = dict(h0=rand(B, H), c0=rand(B, H) if core == "lstm" else None)
    state = {n: rand(B, G * H).abs().detach().requires_grad_() for n in STATE_NAMES[dynamics]} if states else {}
    return x, params, init, state


def _results(core, dynamics, x, params, init, state, path):
    """(outputs, final states) of the layer: "op" the torch path, "reference" the reference cells."""
    if path == "reference":
        out, st_ = recurrent_layer(x, **params, core=core, dynamics=dynamics, **HYPER[dynamics], **init, step_offset=1,
                                   **{f"{n}0": v for n, v in state.items()})
        return [out, st_["h"], *([st_["c"]] if core == "lstm" else []), *(st_[n] for n in STATE_NAMES[dynamics])]
    hyper = layers.check_hyper(dynamics, **HYPER[dynamics])
    out, h, c, final = layers._fused(core, x, *params.values(), None, dynamics, hyper, init["h0"], init["c0"], state,
                                     1, None)
    return [out, h, *([c] if core == "lstm" else []), *(final[n] for n in STATE_NAMES[dynamics])]


@pytest.mark.parametrize("dynamics", HYPER)
@given(data=st.data(), T=st.integers(1, steploop.CHUNK + 3), B=st.integers(1, 3), H=st.integers(1, 4),
       bias=st.booleans(), states=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_step_loop_matches_reference(dynamics, data, T, B, H, bias, states, seed):
    """Outputs, final states and the gradients of x, every parameter and every initial state, for a random
    cotangent on every result; T crosses the Adam / RMSProp checkpoint chunk. The core is drawn (every core
    and family pair is one test case too many for CI's budget)."""
    core = data.draw(st.sampled_from([c for c, d in CASES if d == dynamics]), label="core")
    n_in = 2
    x, params, init, state = _problem(core, dynamics, T, B, n_in, H, bias, states, seed)
    leaves = [t for t in (x, *params.values(), *init.values(), *state.values()) if t is not None]
    want = _results(core, dynamics, x, params, init, state, "reference")
    got = _results(core, dynamics, x, params, init, state, "op")
    g = torch.Generator().manual_seed(seed + 1)
    cot = [torch.randn(w.shape, generator=g, dtype=w.dtype) for w in want]
    grads_want = torch.autograd.grad(want, leaves, cot, allow_unused=True)
    grads_got = torch.autograd.grad(got, leaves, cot, allow_unused=True)
    # The same float64 math in another order: errors grow with the depth of the recurrence (T steps of an
    # (in + G·H)-term dot product), relative to each result's magnitude.
    steps = T * (n_in + 4 * H)
    for a, b in zip(got + list(grads_got), want + list(grads_want)):
        b = torch.zeros_like(a) if b is None else b
        assert a is not None and a.shape == b.shape and a.dtype == b.dtype
        assert_close(a, b, torch.float64, steps, scale=1.0 + b.abs().max().item())


@pytest.mark.parametrize("core,dynamics", [("lstm", "adam"), ("lstm", "nesterov"), ("rnn_modrelu", "rmsprop"),
                                           ("indrnn", "momentum")])
def test_no_grad_forward_is_the_same(core, dynamics):
    """Without a backward to follow the forward keeps nothing (other buffers, same arithmetic): bitwise equal."""
    x, params, init, state = _problem(core, dynamics, 2 * steploop.CHUNK + 1, 2, 2, 3, True, True, 0)
    with_grad = _results(core, dynamics, x, params, init, state, "op")
    with torch.no_grad():
        without = _results(core, dynamics, x, params, init, state, "op")
    for a, b in zip(with_grad, without):
        assert torch.equal(a.detach(), b)


@pytest.mark.parametrize("core,dynamics", [("lstm", "adam"), ("rnn_tanh", "plain")])
def test_double_backward_raises(core, dynamics):
    x, params, init, state = _problem(core, dynamics, 3, 2, 2, 3, True, False, 0)
    out = _results(core, dynamics, x, params, init, state, "op")[0]
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        torch.autograd.grad(out.square().sum(), [x], create_graph=True)
    # a first-order backward after a failed attempt still works
    (gx,) = torch.autograd.grad(_results(core, dynamics, x, params, init, state, "op")[0].square().sum(), [x])
    assert gx.isfinite().all()


@pytest.mark.parametrize("core,dynamics", [("lstm", "adam"), ("lstm", "nesterov"), ("rnn_modrelu", "momentum"),
                                           ("indrnn", "rmsprop"), ("rnn_tanh", "plain")])
def test_absent_initial_states_are_zeros(core, dynamics):
    """h0 = c0 = None and absent drive states (how a compiled layer calls the op, issue #17: no zeros kernel
    around it) give bitwise the results and gradients of explicit zeros."""
    x, params, init, _ = _problem(core, dynamics, steploop.CHUNK + 2, 2, 2, 3, True, False, 0)
    zeros = {k: None if v is None else torch.zeros_like(v) for k, v in init.items()}
    got = _results(core, dynamics, x, params, {"h0": None, "c0": None}, {}, "op")
    want = _results(core, dynamics, x, params, zeros, {}, "op")
    leaves = [x, *(p for p in params.values() if p is not None)]
    cot = [torch.ones_like(w) for w in want]
    pairs = zip(got + list(torch.autograd.grad(got, leaves, cot)), want + list(torch.autograd.grad(want, leaves, cot)))
    for a, b in pairs:
        assert torch.equal(a, b)


@pytest.mark.parametrize("core,dynamics", [("lstm", "adam"), ("lstm", "nesterov"), ("lstm", "momentum"),
                                           ("rnn_modrelu", "rmsprop"), ("indrnn", "restart"), ("rnn_tanh", "plain")])
def test_span_length_changes_only_summation_order(core, dynamics, monkeypatch):
    """The span length K (steps per whole-span op, from B·G·H) only groups work: every elementwise op sees the
    same inputs in the same order; what K changes is the grouping of sums (the parameter gradients accumulate
    span by span, over T·B terms; the input GEMM's rows may take another kernel). So K = 1, 2, 4 and CHUNK agree
    to float64 summation error: 4·eps64 per summed term, relative to each result's magnitude. The small shapes
    of the property test above always take K = CHUNK; this covers the spans that larger batches take
    (T = 2·CHUNK + 3: spans and checkpoint chunks not multiples of each other, a short last span)."""
    T, B, H, G, n_in = 2 * steploop.CHUNK + 3, 2, 3, (4 if core == "lstm" else 1), 2
    x, params, init, state = _problem(core, dynamics, T, B, n_in, H, True, True, 0)
    leaves = [t for t in (x, *params.values(), *init.values(), *state.values()) if t is not None]
    runs = []
    for K in (1, 2, 4, steploop.CHUNK):
        monkeypatch.setattr(steploop, "SUB_ELEMS", K * B * G * H)
        assert steploop._sub_len(B, G * H) == K
        got = _results(core, dynamics, x, params, init, state, "op")
        cot = [torch.full_like(r, 0.5) + torch.arange(r.numel(), dtype=r.dtype).view(r.shape) / r.numel() for r in got]
        runs.append(got + list(torch.autograd.grad(got, leaves, cot)))
    rtol = 4 * torch.finfo(torch.float64).eps * (T * B + n_in)
    for other in runs[:-1]:
        for a, b in zip(other, runs[-1]):
            torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * (1.0 + b.abs().max().item()))
