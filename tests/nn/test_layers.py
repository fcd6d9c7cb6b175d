"""tritonrnn.functional.layers: both torch paths (the commuted native cell of SPEC §1.4 and the general
scan + recurrence path) against the reference, with per-row lengths, reversal, carried states and offsets."""
import pytest
import torch

import tritonrnn.functional.layers as layers
from tests.tolerance import assert_close
from tritonrnn.reference import STATE_NAMES, recurrent_layer

_FUSED = layers._fused
HYPER = {"plain": {}, "momentum": dict(mu=0.7, s=0.5), "restart": dict(s=0.6, restart=3),
         "adam": dict(mu=0.6, s=0.6, beta=0.1, eps=1e-8), "rmsprop": dict(s=0.6, beta=0.9, eps=1e-8),
         "nesterov": dict(s=1.0, restart=2)}


@pytest.fixture(params=["native", "general", "fused"])
def path(request, monkeypatch):
    """Run the commuted families through the other paths too (on the torch backend they use the native
    cell): "general" is the scan + recurrence wiring the Triton backend takes, here on the torch paths of the
    scans and recurrences (it has no projection: those layers take the fused loop); "fused" is the torch
    step loop of the Adam / RMSProp / Nesterov families. Both are checked against the reference on CPU."""
    if request.param == "general":
        monkeypatch.setattr(layers, "_native", lambda *args: layers._general(*args, "torch") if args[6] is None
                            else layers._fused(*args))
        monkeypatch.setattr(layers, "_fused", lambda *args: layers._general(*args, "torch") if args[6] is None
                            else _FUSED(*args))
    elif request.param == "fused":
        monkeypatch.setattr(layers, "_native", layers._fused)
    return request.param


def _inputs(core, T=6, B=3, n_in=2, H=3, proj=0):
    torch.manual_seed(0)
    G = 4 if core == "lstm" else 1
    P = proj or H
    f64 = dict(dtype=torch.float64)
    params = dict(weight_ih=torch.randn(G * H, n_in, **f64), weight_hh=torch.randn(G * H, P, **f64) / 2,
                  bias_ih=torch.randn(G * H, **f64), bias_hh=torch.randn(G * H, **f64))
    if proj:
        params["weight_hr"] = torch.randn(P, H, **f64)
    init = dict(h0=torch.randn(B, P, **f64), c0=torch.randn(B, H, **f64) if core == "lstm" else None)
    return torch.randn(T, B, n_in, **f64), params, init


def _call(core, x, params, init, dynamics, state, **kw):
    """The layer on time-major x [T, B, in] (passed as the [B, T, in] view), output back time-major."""
    common = dict(dynamics=dynamics, **HYPER[dynamics], h0=init["h0"], state=state, backend="torch", **kw)
    if core == "lstm":
        out, h, c, st = layers.lstm_layer(x.transpose(0, 1), **params, c0=init["c0"], **common)
        return out.transpose(0, 1), h, c, st
    out, h, st = layers.rnn_layer(x.transpose(0, 1), **params, nonlinearity=core[4:], **common)
    return out.transpose(0, 1), h, None, st


CASES = [("lstm", d) for d in HYPER] + [("rnn_tanh", "momentum"), ("rnn_relu", "restart"), ("rnn_tanh", "adam")]


@pytest.mark.parametrize("core,dynamics", CASES)
@pytest.mark.parametrize("reverse", [False, True])
def test_layer_with_lengths_matches_reference(core, dynamics, reverse, path):
    _check_against_reference(core, dynamics, reverse)


IDENTITY_CASES = [("lstm", "adam"), ("lstm", "rmsprop"), ("rnn_tanh", "adam"), ("rnn_relu", "rmsprop")]


@pytest.mark.parametrize("core,dynamics", IDENTITY_CASES)
@pytest.mark.parametrize("reverse", [False, True])
def test_identity_native_matches_reference(core, dynamics, reverse, monkeypatch):
    # KERNELS.md §2.6: the scan, then the native cell with W_ih = I, b_ih = 0 (oneDNN / native on CPU); outputs,
    # final states and the gradients of every input, parameter and initial state against the float64 reference.
    calls = []
    drive_native = layers._drive_native
    monkeypatch.setattr(layers, "_drive_native", lambda *a: calls.append(1) or drive_native(*a))
    with layers.forced_path("identity-native"):
        _check_against_reference(core, dynamics, reverse)
    assert calls == [1]


def _check_against_reference(core, dynamics, reverse):
    x, params, init = _inputs(core)
    GH = params["weight_ih"].shape[0]
    state = {n: torch.rand(x.shape[1], GH, dtype=x.dtype) for n in STATE_NAMES[dynamics]}
    leaves = [x, *params.values(), *(t for t in init.values() if t is not None), *state.values()]
    for t in leaves:
        t.requires_grad_(True)
    lengths = torch.tensor([4, 6, 1])
    out, h, c, final = _call(core, x, params, init, dynamics, state, lengths=lengths, reverse=reverse,
                             step_offset=1)
    refs = []
    for b, n in enumerate(lengths.tolist()):
        xb = x[:n, b:b + 1].flip(0) if reverse else x[:n, b:b + 1]
        ref_out, ref = recurrent_layer(xb, **params, core=core, dynamics=dynamics, **HYPER[dynamics],
                                       h0=init["h0"][b:b + 1], c0=None if c is None else init["c0"][b:b + 1],
                                       step_offset=1, **{f"{k}0": v[b:b + 1] for k, v in state.items()})
        ref["out"] = ref_out.flip(0) if reverse else ref_out
        refs.append(ref)
        steps = n * (x.shape[2] + init["h0"].shape[1])
        assert_close(out[:n, b:b + 1], ref["out"], torch.float64, steps)
        assert torch.equal(out[n:, b], torch.zeros_like(out[n:, b]))   # padding stays zero
        assert_close(h[b:b + 1], ref["h"], torch.float64, steps)
        if c is not None:
            assert_close(c[b:b + 1], ref["c"], torch.float64, steps)
        assert set(final) == set(STATE_NAMES[dynamics])
        for name in final:
            assert_close(final[name][b:b + 1], ref[name], torch.float64, steps)
    # gradients of everything, through the per-row segments
    g = torch.Generator().manual_seed(3)
    weights = [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in [out, h] + list(final.values())]
    mask = (torch.arange(x.shape[0])[:, None] < lengths[None, :])[:, :, None]
    got = torch.autograd.grad((out * weights[0] * mask).sum() + (h * weights[1]).sum()
                              + sum((f * w).sum() for f, w in zip(final.values(), weights[2:])), leaves)
    ref_loss = 0
    for b, ref in enumerate(refs):
        n = lengths[b]
        ref_loss = ref_loss + (ref["out"] * weights[0][:n, b:b + 1]).sum() + (ref["h"] * weights[1][b:b + 1]).sum()
        ref_loss = ref_loss + sum((ref[name] * w[b:b + 1]).sum() for name, w in zip(final, weights[2:]))
    want = torch.autograd.grad(ref_loss, leaves)
    for a, b in zip(got, want):
        assert_close(a, b, torch.float64, x.shape[0] * 8)


@pytest.mark.parametrize("dynamics", ["plain", "momentum", "restart", "adam"])
def test_projection(dynamics, path):
    _check_projection(dynamics)


@pytest.mark.parametrize("dynamics", ["adam", "rmsprop"])
def test_identity_native_projection(dynamics):
    with layers.forced_path("identity-native"):
        _check_projection(dynamics)


def _check_projection(dynamics):
    x, params, init = _inputs("lstm", proj=2)
    state = {n: torch.rand(x.shape[1], 12, dtype=x.dtype) for n in STATE_NAMES[dynamics]}
    out, h, c, final = _call("lstm", x, params, init, dynamics, state, step_offset=2)
    ref_out, ref = recurrent_layer(x, **params, core="lstm", dynamics=dynamics, **HYPER[dynamics], **init,
                                   step_offset=2, **{f"{k}0": v for k, v in state.items()})
    assert out.shape == (6, 3, 2)
    assert_close(out, ref_out, torch.float64, 30)
    assert_close(c, ref["c"], torch.float64, 30)
    for name in final:
        assert_close(final[name], ref[name], torch.float64, 30)


@pytest.mark.parametrize("dynamics", ["plain", "momentum", "restart"])
def test_commuted_families_use_the_native_cell_on_torch(dynamics, monkeypatch):
    calls = []
    native = layers._native
    monkeypatch.setattr(layers, "_native", lambda *a: calls.append(1) or native(*a))
    monkeypatch.setattr(layers, "_general", lambda *a: pytest.fail("the general path ran"))
    x, params, init = _inputs("lstm")
    _call("lstm", x, params, init, dynamics, {"v": torch.zeros(3, 12, dtype=x.dtype)} if dynamics != "plain" else {})
    assert calls == [1]


def test_layout_follows_the_functional_convention():
    # [B, T, in] in logical order, any strides: a contiguous batch-major tensor and a transposed time-major
    # one give the same result; the output is [B, T, P].
    x, params, init = _inputs("lstm")
    for dynamics in ("momentum", "adam"):
        a = layers.lstm_layer(x.transpose(0, 1).contiguous(), **params, dynamics=dynamics, backend="torch")
        b = layers.lstm_layer(x.transpose(0, 1), **params, dynamics=dynamics, backend="torch")
        assert a[0].shape == (3, 6, 3)
        for u, v in zip(a[:3], b[:3]):
            torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)


def test_layer_bad_arguments():
    x, params, init = _inputs("lstm")
    x = x.transpose(0, 1)  # [B, T, in]: B = 3, T = 6
    with pytest.raises(ValueError, match="mu"):
        layers.lstm_layer(x, **params, dynamics="restart", mu=0.5, backend="torch")
    with pytest.raises(ValueError, match="dynamics"):
        layers.lstm_layer(x, **params, dynamics="nag", backend="torch")
    with pytest.raises(ValueError, match="nesterov"):
        layers.rnn_layer(x, params["weight_ih"][:3], params["weight_hh"][:3], dynamics="nesterov", backend="torch")
    with pytest.raises(ValueError, match="weight_ih"):
        layers.lstm_layer(x, params["weight_ih"][:, :1], params["weight_hh"], backend="torch")
    with pytest.raises(ValueError, match="weight_hh"):
        layers.lstm_layer(x, params["weight_ih"], params["weight_hh"][:, :2], backend="torch")
    with pytest.raises(ValueError, match="bias"):
        layers.lstm_layer(x, params["weight_ih"], params["weight_hh"], params["bias_ih"], backend="torch")
    with pytest.raises(ValueError, match="lengths"):
        layers.lstm_layer(x, params["weight_ih"], params["weight_hh"], lengths=torch.tensor([0, 6, 6]),
                          backend="torch")
    with pytest.raises(ValueError, match="lengths"):
        layers.lstm_layer(x, params["weight_ih"], params["weight_hh"], lengths=torch.tensor([7, 6, 6]),
                          backend="torch")
    with pytest.raises(ValueError, match="state has the key"):
        layers.lstm_layer(x, params["weight_ih"], params["weight_hh"], dynamics="momentum",
                          state={"a": torch.zeros(3, 12, dtype=x.dtype)}, backend="torch")
    with pytest.raises(ValueError, match="h0"):
        layers.lstm_layer(x, params["weight_ih"], params["weight_hh"], h0=torch.zeros(2, 3, dtype=x.dtype),
                          backend="torch")
