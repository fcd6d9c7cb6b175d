"""The reference cells (tritonrnn.reference.cells) against torch.nn and against arithmetic done by hand.

These tests pin the oracle itself: SPEC §1.1 (b_ih inside the dynamics, b_hh outside), every row of the
§1.2 table, §1.3 (Nesterov), the restart schedule, and that autograd reaches every input.
"""
import math

import pytest
import torch

from tests.tolerance import assert_close
from tritonrnn.reference import STATE_NAMES, recurrent_layer, recurrent_network
from tritonrnn.schedules import restart_momentum

torch.manual_seed(0)


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


# --- parity with torch.nn where the dynamics reduce to the plain cell ---------------------------------

def _layer_params(mod, suffix="l0"):
    return {name: getattr(mod, f"{name}_{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


@pytest.mark.parametrize("dynamics,hyper", [
    ("plain", {}),
    ("momentum", dict(mu=0.0, s=1.0)),
    ("restart", dict(s=1.0, restart=1)),   # F = 1: μ_t = 0 at every step
])
def test_lstm_reduces_to_nn_lstm(dynamics, hyper):
    T, B, n_in, H = 5, 3, 4, 6
    ref = torch.nn.LSTM(n_in, H)
    x = torch.randn(T, B, n_in)
    h0, c0 = torch.randn(1, B, H), torch.randn(1, B, H)
    expected, (h_n, c_n) = ref(x, (h0, c0))
    out, states = recurrent_layer(x, **_layer_params(ref), core="lstm", dynamics=dynamics, **hyper,
                                  h0=h0[0], c0=c0[0])
    steps = T * (n_in + H)
    assert_close(out, expected, torch.float32, steps)
    assert_close(states["h"], h_n[0], torch.float32, steps)
    assert_close(states["c"], c_n[0], torch.float32, steps)


def test_lstm_projection_matches_nn_lstm():
    T, B, n_in, H, P = 4, 2, 3, 5, 2
    ref = torch.nn.LSTM(n_in, H, proj_size=P)
    x = torch.randn(T, B, n_in)
    expected, (h_n, c_n) = ref(x)
    out, states = recurrent_layer(x, **_layer_params(ref), weight_hr=ref.weight_hr_l0, core="lstm",
                                  dynamics="momentum", mu=0.0, s=1.0)
    assert out.shape == (T, B, P)
    assert_close(out, expected, torch.float32, T * (n_in + H))
    assert_close(states["c"], c_n[0], torch.float32, T * (n_in + H))


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_reduces_to_nn_rnn(nonlinearity):
    T, B, n_in, H = 5, 3, 4, 6
    ref = torch.nn.RNN(n_in, H, nonlinearity=nonlinearity)
    x = torch.randn(T, B, n_in)
    h0 = torch.randn(1, B, H)
    expected, h_n = ref(x, h0)
    out, states = recurrent_layer(x, **_layer_params(ref), core=f"rnn_{nonlinearity}", dynamics="momentum",
                                  mu=0.0, s=1.0, h0=h0[0])
    assert_close(out, expected, torch.float32, T * (n_in + H))
    assert_close(states["h"], h_n[0], torch.float32, T * (n_in + H))


def test_network_reduces_to_nn_lstm_multilayer_bidirectional():
    T, B, n_in, H = 4, 2, 3, 5
    ref = torch.nn.LSTM(n_in, H, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, n_in)
    expected, (h_n, c_n) = ref(x)
    out, h, c, state = recurrent_network(x, dict(ref.named_parameters()), num_layers=2, bidirectional=True,
                                         core="lstm", dynamics="momentum", mu=0.0, s=1.0)
    steps = 2 * T * (2 * H + H)
    assert_close(out, expected, torch.float32, steps)
    assert_close(h, h_n, torch.float32, steps)
    assert_close(c, c_n, torch.float32, steps)
    assert set(state) == {"v"} and state["v"].shape == (4, B, 4 * H)


# --- two steps by hand, scalar sizes ---------------------------------------------------------------------
# x = (1, 2), w_ih = 0.5, b_ih = 0.1, w_hh = 0.3, b_hh = -0.2, h_{-1} = 0  =>  u_0 = 0.6, u_1 = 1.1

def _scalar_rnn(dynamics, core="rnn_tanh", **kw):
    x = torch.tensor([[[1.0]], [[2.0]]], dtype=torch.float64)
    w = dict(weight_ih=torch.tensor([[0.5]], dtype=torch.float64), weight_hh=torch.tensor([[0.3]], dtype=torch.float64),
             bias_ih=torch.tensor([0.1], dtype=torch.float64), bias_hh=torch.tensor([-0.2], dtype=torch.float64))
    out, states = recurrent_layer(x, **w, core=core, dynamics=dynamics, **kw)
    return out.flatten().tolist(), {k: v.flatten().tolist() for k, v in states.items()}


def test_plain_rnn_by_hand():
    out, _ = _scalar_rnn("plain")
    h0 = math.tanh(0.6 - 0.2)
    h1 = math.tanh(1.1 + 0.3 * h0 - 0.2)
    assert out == pytest.approx([h0, h1], rel=1e-12)


def test_plain_relu_rnn_by_hand():
    out, _ = _scalar_rnn("plain", core="rnn_relu")
    h0 = max(0.6 - 0.2, 0.0)
    h1 = max(1.1 + 0.3 * h0 - 0.2, 0.0)
    assert out == pytest.approx([h0, h1], rel=1e-12)


def test_momentum_rnn_by_hand():
    out, states = _scalar_rnn("momentum", mu=0.6, s=0.6)
    v0 = 0.6 * 0.0 + 0.6 * 0.6                       # = 0.36, the bias is inside the momentum
    h0 = math.tanh(v0 - 0.2)
    v1 = 0.6 * v0 + 0.6 * 1.1                        # = 0.876
    h1 = math.tanh(v1 + 0.3 * h0 - 0.2)
    assert out == pytest.approx([h0, h1], rel=1e-12)
    assert states["v"] == pytest.approx([v1], rel=1e-12)


def test_restart_rnn_by_hand():
    out, states = _scalar_rnn("restart", s=0.6, restart=2)
    v0 = 0.0 * 0.0 + 0.6 * 0.6                       # μ_0 = 0
    h0 = math.tanh(v0 - 0.2)
    v1 = 0.25 * v0 + 0.6 * 1.1                       # μ_1 = 1/4
    h1 = math.tanh(v1 + 0.3 * h0 - 0.2)
    assert out == pytest.approx([h0, h1], rel=1e-12)
    assert states["v"] == pytest.approx([v1], rel=1e-12)


def test_restart_rnn_step_offset_by_hand():
    # Continuing at step 1 with v_{-1} = 1: the first coefficient is μ_1 = 1/4, the second μ_2 = 0.
    out, states = _scalar_rnn("restart", s=0.6, restart=2, step_offset=1,
                              v0=torch.tensor([[1.0]], dtype=torch.float64))
    v0 = 0.25 * 1.0 + 0.6 * 0.6
    h0 = math.tanh(v0 - 0.2)
    v1 = 0.0 * v0 + 0.6 * 1.1
    h1 = math.tanh(v1 + 0.3 * h0 - 0.2)
    assert out == pytest.approx([h0, h1], rel=1e-12)
    assert states["v"] == pytest.approx([v1], rel=1e-12)


def test_adam_rnn_by_hand():
    out, states = _scalar_rnn("adam", mu=0.6, s=0.6, beta=0.1, eps=1e-8)
    v0, m0 = 0.6 * 0.6, 0.9 * 0.6 * 0.6              # m_0 = β·0 + (1-β) u_0²
    h0 = math.tanh(v0 / (math.sqrt(m0) + 1e-8) - 0.2)
    v1, m1 = 0.6 * v0 + 0.6 * 1.1, 0.1 * m0 + 0.9 * 1.1 * 1.1
    h1 = math.tanh(v1 / (math.sqrt(m1) + 1e-8) + 0.3 * h0 - 0.2)
    assert out == pytest.approx([h0, h1], rel=1e-12)
    assert states["v"] == pytest.approx([v1], rel=1e-12)
    assert states["m"] == pytest.approx([m1], rel=1e-12)


def test_rmsprop_rnn_by_hand():
    out, states = _scalar_rnn("rmsprop", s=0.6, beta=0.9, eps=1e-8)
    m0 = 0.1 * 0.6 * 0.6
    h0 = math.tanh(0.6 * 0.6 / (math.sqrt(m0) + 1e-8) - 0.2)
    m1 = 0.9 * m0 + 0.1 * 1.1 * 1.1
    h1 = math.tanh(0.6 * 1.1 / (math.sqrt(m1) + 1e-8) + 0.3 * h0 - 0.2)
    assert out == pytest.approx([h0, h1], rel=1e-12)
    assert set(states) == {"h", "m"}
    assert states["m"] == pytest.approx([m1], rel=1e-12)


# LSTM core, H = 1: four scalar gates i, f, g, o.
W_IH = [0.5, 0.4, 0.3, 0.2]
B_IH = [0.1, 0.0, -0.1, 0.2]
W_HH = [0.3, 0.2, 0.1, -0.2]
B_HH = [-0.2, 0.1, 0.0, 0.05]


def _scalar_lstm(dynamics, **kw):
    f64 = dict(dtype=torch.float64)
    x = torch.tensor([[[1.0]], [[2.0]]], **f64)
    out, states = recurrent_layer(x, torch.tensor(W_IH, **f64)[:, None], torch.tensor(W_HH, **f64)[:, None],
                                  torch.tensor(B_IH, **f64), torch.tensor(B_HH, **f64),
                                  core="lstm", dynamics=dynamics, **kw)
    return out.flatten().tolist(), {k: v.flatten().tolist() for k, v in states.items()}


def _lstm_update(z, c):
    i, f, g, o = sigmoid(z[0]), sigmoid(z[1]), math.tanh(z[2]), sigmoid(z[3])
    c = f * c + i * g
    return o * math.tanh(c), c


def test_momentum_lstm_by_hand():
    out, states = _scalar_lstm("momentum", mu=0.6, s=0.6)
    u0 = [0.5 * 1 + 0.1, 0.4 * 1 + 0.0, 0.3 * 1 - 0.1, 0.2 * 1 + 0.2]
    u1 = [0.5 * 2 + 0.1, 0.4 * 2 + 0.0, 0.3 * 2 - 0.1, 0.2 * 2 + 0.2]
    v0 = [0.6 * u for u in u0]
    h0, c0 = _lstm_update([v0[k] + W_HH[k] * 0.0 + B_HH[k] for k in range(4)], 0.0)
    v1 = [0.6 * v0[k] + 0.6 * u1[k] for k in range(4)]
    h1, c1 = _lstm_update([v1[k] + W_HH[k] * h0 + B_HH[k] for k in range(4)], c0)
    assert out == pytest.approx([h0, h1], rel=1e-12)
    assert states["c"] == pytest.approx([c1], rel=1e-12)
    assert states["v"] == pytest.approx(v1, rel=1e-12)


def test_nesterov_lstm_by_hand():
    out, states = _scalar_lstm("nesterov", s=1.0, restart=2)
    u0 = [0.6, 0.4, 0.2, 0.4]
    u1 = [1.1, 0.8, 0.5, 0.6]
    a0 = [W_HH[k] * 0.0 + B_HH[k] - 1.0 * u0[k] for k in range(4)]      # minus sign, SPEC §1.3
    z0 = [a0[k] + 0.0 * (a0[k] - 0.0) for k in range(4)]                # μ_0 = 0, a_{-1} = 0
    h0, c0 = _lstm_update(z0, 0.0)
    a1 = [W_HH[k] * h0 + B_HH[k] - 1.0 * u1[k] for k in range(4)]
    z1 = [a1[k] + 0.25 * (a1[k] - a0[k]) for k in range(4)]             # μ_1 = 1/4
    h1, c1 = _lstm_update(z1, c0)
    assert out == pytest.approx([h0, h1], rel=1e-12)
    assert states["c"] == pytest.approx([c1], rel=1e-12)
    assert states["a"] == pytest.approx(a1, rel=1e-12)   # the carried state is a_t, not z_t


# --- the restart schedule ----------------------------------------------------------------------------------

@pytest.mark.parametrize("F,expected", [
    (2, [0.0, 1 / 4, 0.0, 1 / 4]),
    (5, [0.0, 0.25, 0.4, 0.5, 0.571, 0.0]),
])
def test_restart_coefficients(F, expected):
    assert [restart_momentum(t, F) for t in range(len(expected))] == pytest.approx(expected, abs=5e-4)
    # The restart cell uses them: an impulse x_0 = 1 with s = 1 leaves v_t = μ_1 μ_2 ... μ_t.
    x = torch.zeros(len(expected), 1, 1, dtype=torch.float64)
    x[0] = 1.0
    w = torch.ones(1, 1, dtype=torch.float64)
    decay = 1.0
    for T in range(1, len(expected) + 1):
        _, states = recurrent_layer(x[:T], w, w * 0, core="rnn_tanh", dynamics="restart", s=1.0, restart=F)
        assert states["v"].item() == pytest.approx(decay, rel=1e-12)
        if T < len(expected):
            decay *= restart_momentum(T, F)


# --- continuation and gradients ---------------------------------------------------------------------------

FAMILIES = [
    ("lstm", "plain", {}), ("lstm", "momentum", dict(mu=0.6, s=0.6)), ("lstm", "restart", dict(s=0.6, restart=3)),
    ("lstm", "adam", dict(mu=0.6, s=0.6, beta=0.1, eps=1e-8)), ("lstm", "rmsprop", dict(s=0.6, beta=0.9, eps=1e-8)),
    ("lstm", "nesterov", dict(s=1.0, restart=3)),
    ("rnn_tanh", "momentum", dict(mu=0.6, s=0.6)), ("rnn_relu", "restart", dict(s=0.6, restart=2)),
    ("rnn_tanh", "adam", dict(mu=0.6, s=0.6, beta=0.1, eps=1e-8)),
    ("rnn_relu", "rmsprop", dict(s=0.6, beta=0.9, eps=1e-8)),
]


def _random_layer(core, T=5, B=2, n_in=3, H=4, dtype=torch.float64):
    # Seeded here, not by the module's global seed: a test's draw must not depend on which tests ran before it in
    # the same process (pytest-xdist's distribution, -k) — with the global stream, one order drew a relu layer
    # whose units were all dead at every step, so h0's gradient was exactly 0.
    gen = torch.Generator().manual_seed(0)
    G = 4 if core == "lstm" else 1

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    params = dict(weight_ih=randn(G * H, n_in), weight_hh=randn(G * H, H) / 2, bias_ih=randn(G * H),
                  bias_hh=randn(G * H))
    return randn(T, B, n_in), params


@pytest.mark.parametrize("core,dynamics,hyper", FAMILIES)
def test_two_halves_equal_one_call(core, dynamics, hyper):
    x, params = _random_layer(core)
    full, final = recurrent_layer(x, **params, core=core, dynamics=dynamics, **hyper)
    first, mid = recurrent_layer(x[:2], **params, core=core, dynamics=dynamics, **hyper)
    carried = {f"{k}0": v for k, v in mid.items()}
    second, end = recurrent_layer(x[2:], **params, core=core, dynamics=dynamics, **hyper, **carried, step_offset=2)
    torch.testing.assert_close(torch.cat([first, second]), full, rtol=1e-12, atol=1e-12)
    for name in final:
        torch.testing.assert_close(end[name], final[name], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("core,dynamics,hyper", FAMILIES)
def test_gradients_reach_everything(core, dynamics, hyper):
    x, params = _random_layer(core)
    torch.manual_seed(1)  # the initial states too: the same draw whatever ran before in this process
    B, GH, H = x.shape[1], params["weight_ih"].shape[0], params["weight_hh"].shape[1]
    initial = {"h0": torch.randn(B, H, dtype=x.dtype)}
    if core == "lstm":
        initial["c0"] = torch.randn(B, H, dtype=x.dtype)
    for name in STATE_NAMES[dynamics]:
        initial[f"{name}0"] = torch.rand(B, GH, dtype=x.dtype)   # m must be >= 0
    leaves = {"x": x, **params, **initial}
    for t in leaves.values():
        t.requires_grad_(True)
    # step_offset=1: at step 0 the restart coefficient is 0, which would (rightly) cut v_0 and a_{-1} off.
    out, states = recurrent_layer(x, **params, core=core, dynamics=dynamics, **hyper, **initial, step_offset=1)
    (out.sum() + sum(s.sum() for s in states.values())).backward()
    for name, t in leaves.items():
        assert t.grad is not None, name
        assert torch.isfinite(t.grad).all(), name
        assert t.grad.abs().sum() > 0, name


def test_adam_gradient_at_zero_second_moment_is_finite():
    # bias=False and a blank input: m stays 0, and sqrt0 gives the subgradient 0 instead of NaN.
    x = torch.zeros(3, 1, 2, dtype=torch.float64, requires_grad=True)
    w_ih = torch.randn(8, 2, dtype=torch.float64, requires_grad=True)
    w_hh = torch.randn(8, 2, dtype=torch.float64, requires_grad=True)
    out, _ = recurrent_layer(x, w_ih, w_hh, core="lstm", dynamics="adam", mu=0.6, s=0.6, beta=0.1, eps=1e-8)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(w_ih.grad).all()


def test_family_arguments_are_checked():
    x, params = _random_layer("rnn_tanh")
    with pytest.raises(TypeError, match="mu"):
        recurrent_layer(x, **params, core="rnn_tanh", dynamics="momentum", s=0.6)
    with pytest.raises(ValueError, match="nesterov"):
        recurrent_layer(x, **params, core="rnn_tanh", dynamics="nesterov", s=1.0, restart=2)
    with pytest.raises(ValueError, match="core"):
        recurrent_layer(x, **params, core="gru")
