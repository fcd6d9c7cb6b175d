"""The reference of the issue #8 cores (tritonrnn.reference.cells, cores "rnn_modrelu" and "indrnn") against
numbers worked out by hand and against a scalar Python loop written here from the equations, independent
of the library:

    orthogonal RNN: u_t = W_ih x_t (+ b_ih); a_t = D(u_t); z_t = a_t + U h_{t-1}; h_t = sign(z_t)·relu(|z_t| + b)
    IndRNN:         u_t = W_ih x_t + b_ih;   a_t = D(u_t); h_t = relu(a_t + w ⊙ h_{t-1} + b_hh)

with D the input dynamics of SPEC §1.2 (plain, momentum, restart, Adam, RMSProp). Also: modReLU at its edges,
IndRNN's per-unit independence, U's norm preservation, and that autograd reaches every input.
"""
import math

import pytest
import torch

from tests.tolerance import assert_close
from tritonrnn.reference import STATE_NAMES, core_step, recurrent_layer, recurrent_network

F64 = torch.float64


def _t(rows):
    return torch.tensor(rows, dtype=F64)


# --- worked by hand --------------------------------------------------------------------------------------------
# Orthogonal core, H = 2, in = 1: U the rotation by 90°, W_ih = [1, 2]ᵀ, b = [0.5, -1], x = (1, -1).
U_ROT = [[0.0, -1.0], [1.0, 0.0]]
W_IH = [[1.0], [2.0]]
B_MOD = [0.5, -1.0]
X_TWO = [[[1.0]], [[-1.0]]]  # [T=2, B=1, in=1]


def test_modrelu_plain_two_steps_by_hand():
    # t=0: u = [1, 2], z = u = [1, 2],  h = [relu(1.5), relu(1.0)] = [1.5, 1.0]
    # t=1: u = [-1, -2], U h = [-1.0, 1.5], z = [-2.0, -0.5], h = [-relu(2.5), -relu(-0.5)] = [-2.5, 0]
    out, states = recurrent_layer(_t(X_TWO), _t(W_IH), _t(U_ROT), None, _t(B_MOD), core="rnn_modrelu")
    assert torch.equal(out, _t([[[1.5, 1.0]], [[-2.5, 0.0]]]))
    assert torch.equal(states["h"], _t([[-2.5, 0.0]]))
    assert set(states) == {"h"}


def test_modrelu_momentum_two_steps_by_hand():
    # mu = 0.5, s = 2.  t=0: v = 2·[1, 2] = [2, 4] = z, h = [2.5, 3.0]
    # t=1: v = 0.5·[2, 4] + 2·[-1, -2] = [-1, -2]; U h = [-3.0, 2.5]; z = [-4.0, 0.5];
    #      h = [-(4 + 0.5), relu(0.5 - 1)] = [-4.5, 0]
    out, states = recurrent_layer(_t(X_TWO), _t(W_IH), _t(U_ROT), None, _t(B_MOD), core="rnn_modrelu",
                                  dynamics="momentum", mu=0.5, s=2.0)
    assert torch.equal(out, _t([[[2.5, 3.0]], [[-4.5, 0.0]]]))
    assert torch.equal(states["v"], _t([[-1.0, -2.0]]))


def test_modrelu_input_bias_is_inside_the_momentum_and_h0_is_used():
    # b_ih = [0.5, 0], h0 = [1, 0], mu = 0.5, s = 2, b = 0 (identity).
    # t=0: u = [1.5, 2], v = [3, 4], U h0 = [0, 1], h = z = [3, 5]
    # t=1: u = [-0.5, -2], v = [1.5, 2] + [-1, -4] = [0.5, -2], U h = [-5, 3], h = [-4.5, 1]
    out, states = recurrent_layer(_t(X_TWO), _t(W_IH), _t(U_ROT), _t([0.5, 0.0]), _t([0.0, 0.0]),
                                  core="rnn_modrelu", dynamics="momentum", mu=0.5, s=2.0, h0=_t([[1.0, 0.0]]))
    assert torch.equal(out, _t([[[3.0, 5.0]], [[-4.5, 1.0]]]))
    assert torch.equal(states["v"], _t([[0.5, -2.0]]))


# IndRNN, H = 2, in = 1: W_ih = [1, -1]ᵀ, b_ih = [0.5, 0.5], w = [0.5, 2], b_hh = [0, -1], h0 = [1, 1], x = (1, 2).
IND = dict(w_ih=[[1.0], [-1.0]], w=[0.5, 2.0], b_ih=[0.5, 0.5], b_hh=[0.0, -1.0])
X_IND = [[[1.0]], [[2.0]]]


def test_indrnn_plain_two_steps_by_hand():
    # t=0: u = [1.5, -0.5]; z = u + w⊙h0 + b_hh = [1.5 + 0.5, -0.5 + 2 - 1] = [2, 0.5]; h = [2, 0.5]
    # t=1: u = [2.5, -1.5]; z = [2.5 + 1, -1.5 + 1 - 1] = [3.5, -1.5]; h = [3.5, 0]
    out, states = recurrent_layer(_t(X_IND), _t(IND["w_ih"]), _t(IND["w"]), _t(IND["b_ih"]), _t(IND["b_hh"]),
                                  core="indrnn", h0=_t([[1.0, 1.0]]))
    assert torch.equal(out, _t([[[2.0, 0.5]], [[3.5, 0.0]]]))
    assert torch.equal(states["h"], _t([[3.5, 0.0]]))


def test_indrnn_momentum_two_steps_by_hand():
    # mu = 0.5, s = 2, h0 = 0 (b_ih inside the momentum, b_hh outside).
    # t=0: v = 2·[1.5, -0.5] = [3, -1]; z = [3 + 0, -1 - 1] = [3, -2]; h = [3, 0]
    # t=1: v = [1.5, -0.5] + [5, -3] = [6.5, -3.5]; z = [6.5 + 1.5, -3.5 + 0 - 1] = [8, -4.5]; h = [8, 0]
    out, states = recurrent_layer(_t(X_IND), _t(IND["w_ih"]), _t(IND["w"]), _t(IND["b_ih"]), _t(IND["b_hh"]),
                                  core="indrnn", dynamics="momentum", mu=0.5, s=2.0)
    assert torch.equal(out, _t([[[3.0, 0.0]], [[8.0, 0.0]]]))
    assert torch.equal(states["v"], _t([[6.5, -3.5]]))


def test_indrnn_restart_two_steps_by_hand():
    # restart F = 2: μ_0 = 0, μ_1 = 1/4; s = 2.  From step_offset = 1: μ = 1/4 then 0.
    # offset 0: v0 = [3, -1]; v1 = 0.25·[3, -1] + [5, -3] = [5.75, -3.25];
    #           h0 = [3, 0] (z = [3, -2]); z1 = [5.75 + 1.5, -3.25 - 1] → h = [7.25, 0]
    x, args = _t(X_IND), (_t(IND["w_ih"]), _t(IND["w"]), _t(IND["b_ih"]), _t(IND["b_hh"]))
    out, states = recurrent_layer(x, *args, core="indrnn", dynamics="restart", s=2.0, restart=2)
    assert torch.equal(out, _t([[[3.0, 0.0]], [[7.25, 0.0]]]))
    assert torch.equal(states["v"], _t([[5.75, -3.25]]))
    # offset 1 with v0 = [4, 4]: v0' = 0.25·[4, 4] + [3, -1] = [4, 0]; h = relu([4, -1]) = [4, 0]
    #                            v1' = 0·v + [5, -3] = [5, -3]; z = [5 + 2, -3 - 1]; h = [7, 0]
    out, states = recurrent_layer(x, *args, core="indrnn", dynamics="restart", s=2.0, restart=2, step_offset=1,
                                  v0=_t([[4.0, 4.0]]))
    assert torch.equal(out, _t([[[4.0, 0.0]], [[7.0, 0.0]]]))
    assert torch.equal(states["v"], _t([[5.0, -3.0]]))


# --- every family against a scalar loop written from the equations --------------------------------------------
HYPER = {
    "plain": {},
    "momentum": dict(mu=0.7, s=0.5),
    "restart": dict(s=0.6, restart=3),
    "adam": dict(mu=0.6, s=0.6, beta=0.1, eps=1e-8),
    "rmsprop": dict(s=0.6, beta=0.9, eps=1e-8),
}


def _scalar_oracle(core, dynamics, hyper, x, w_ih, w_hh, b_ih, b_hh, h0, v0, m0, step_offset):
    """Nested lists of Python floats; one line per equation of the module docstring."""
    T, B, H = len(x), len(x[0]), len(w_ih)
    outs = [[None] * B for _ in range(T)]
    finals = []
    for b in range(B):
        h, v, m = list(h0[b]), list(v0[b]), list(m0[b])
        for t in range(T):
            k = step_offset + t
            lam = ((k % hyper["restart"]) / ((k % hyper["restart"]) + 3) if dynamics == "restart"
                   else hyper.get("mu", 0.0))
            u = [sum(w_ih[i][j] * x[t][b][j] for j in range(len(x[t][b]))) + b_ih[i] for i in range(H)]
            a = [0.0] * H
            for i in range(H):
                if dynamics == "plain":
                    a[i] = u[i]
                elif dynamics in ("momentum", "restart"):
                    v[i] = lam * v[i] + hyper["s"] * u[i]
                    a[i] = v[i]
                elif dynamics == "adam":
                    v[i] = lam * v[i] + hyper["s"] * u[i]
                    m[i] = hyper["beta"] * m[i] + (1 - hyper["beta"]) * u[i] * u[i]
                    a[i] = v[i] / (math.sqrt(m[i]) + hyper["eps"])
                else:  # rmsprop
                    m[i] = hyper["beta"] * m[i] + (1 - hyper["beta"]) * u[i] * u[i]
                    a[i] = hyper["s"] * u[i] / (math.sqrt(m[i]) + hyper["eps"])
            new = [0.0] * H
            for i in range(H):
                if core == "rnn_modrelu":
                    z = a[i] + sum(w_hh[i][j] * h[j] for j in range(H))
                    mag = abs(z) + b_hh[i]
                    new[i] = (1.0 if z > 0 else -1.0 if z < 0 else 0.0) * max(mag, 0.0)
                else:
                    new[i] = max(a[i] + w_hh[i] * h[i] + b_hh[i], 0.0)
            h = new
            outs[t][b] = h
        finals.append((h, v, m))
    return outs, finals


@pytest.mark.parametrize("dynamics", list(HYPER))
@pytest.mark.parametrize("core", ["rnn_modrelu", "indrnn"])
def test_every_family_matches_the_scalar_loop(core, dynamics):
    gen = torch.Generator().manual_seed(10 * list(HYPER).index(dynamics) + (core == "indrnn"))
    T, B, n_in, H, step_offset = 4, 2, 3, 3, 1
    x = torch.randn(T, B, n_in, generator=gen, dtype=F64)
    w_ih = torch.randn(H, n_in, generator=gen, dtype=F64)
    if core == "rnn_modrelu":
        w_hh = torch.linalg.qr(torch.randn(H, H, generator=gen, dtype=F64))[0]
        b_ih = torch.zeros(H, dtype=F64) if dynamics in ("plain", "adam") else 0.3 * torch.randn(H, generator=gen,
                                                                                                   dtype=F64)
    else:
        w_hh = 2.4 * torch.rand(H, generator=gen, dtype=F64) - 1.2
        b_ih = 0.3 * torch.randn(H, generator=gen, dtype=F64)
    b_hh = 0.7 * torch.randn(H, generator=gen, dtype=F64)
    h0 = torch.randn(B, H, generator=gen, dtype=F64).abs()
    v0 = torch.randn(B, H, generator=gen, dtype=F64)
    m0 = torch.rand(B, H, generator=gen, dtype=F64)
    hyper = HYPER[dynamics]
    names = STATE_NAMES[dynamics]
    given = {"v0": v0, "m0": m0}
    out, states = recurrent_layer(x, w_ih, w_hh, b_ih, b_hh, core=core, dynamics=dynamics, **hyper, h0=h0,
                                  step_offset=step_offset, **{f"{n}0": given[f"{n}0"] for n in names})
    want_out, finals = _scalar_oracle(core, dynamics, hyper, x.tolist(), w_ih.tolist(), w_hh.tolist(),
                                      b_ih.tolist(), b_hh.tolist(), h0.tolist(),
                                      v0.tolist() if "v" in names else [[0.0] * H] * B,
                                      m0.tolist() if "m" in names else [[0.0] * H] * B, step_offset)
    steps = T * (n_in + H)
    assert_close(out, _t(want_out), F64, steps, msg="output")
    assert_close(states["h"], _t([f[0] for f in finals]), F64, steps, msg="h_T")
    for n, idx in (("v", 1), ("m", 2)):
        if n in names:
            assert_close(states[n], _t([f[idx] for f in finals]), F64, steps, msg=n)
        else:
            assert n not in states


# --- modReLU at its edges ------------------------------------------------------------------------------------
def test_modrelu_is_zero_at_z_zero_whatever_b():
    z = torch.zeros(1, 4, dtype=F64)
    h, _ = core_step(z, None, None, core="rnn_modrelu", b_hh=_t([2.0, 0.0, -1.0, 1e-3]))
    assert torch.equal(h, torch.zeros(1, 4, dtype=F64))


def test_modrelu_dead_zone():
    # |z| + b = 0 exactly and |z| + b < 0 both give 0, on either sign of z
    z = _t([[0.5, -0.5, 0.25, -0.25, 3.0]])
    b = _t([-0.5, -0.5, -1.0, -1.0, -3.5])
    h, _ = core_step(z, None, None, core="rnn_modrelu", b_hh=b)
    assert torch.equal(h.abs(), torch.zeros(1, 5, dtype=F64))
    # just outside the dead zone the sign of z comes back
    h, _ = core_step(z, None, None, core="rnn_modrelu", b_hh=b + 0.125)
    assert torch.equal(h, _t([[0.125, -0.125, 0.0, 0.0, 0.0]]))


def test_modrelu_with_zero_bias_is_the_identity():
    z = torch.randn(3, 7, dtype=F64)
    z[0, 0] = 0.0
    h, _ = core_step(z, None, None, core="rnn_modrelu", b_hh=torch.zeros(7, dtype=F64))
    assert torch.equal(h, z)
    h, _ = core_step(z, None, None, core="rnn_modrelu")  # b_hh defaults to 0
    assert torch.equal(h, z)


def test_modrelu_positive_bias_moves_away_from_zero():
    z = _t([[0.5, -0.5, 2.0, -2.0]])
    h, _ = core_step(z, None, None, core="rnn_modrelu", b_hh=_t([0.25, 0.25, -0.5, -0.5]))
    assert torch.equal(h, _t([[0.75, -0.75, 1.5, -1.5]]))


def test_modrelu_gradients_at_and_off_the_edges():
    """∂h/∂z = 1 where |z| + b > 0 (z ≠ 0), 0 in the dead zone and at z = 0; ∂h/∂b = sign(z) where active.
    The Triton kernel's backward relies on exactly this (slope from h alone)."""
    z = _t([[0.0, 0.5, -0.5, 2.0, -1.0, 0.75]]).requires_grad_()
    b = _t([0.3, -0.5, -1.0, -0.5, 0.25, 0.0]).requires_grad_()
    h, _ = core_step(z, None, None, core="rnn_modrelu", b_hh=b)
    dz, db = torch.autograd.grad(h.sum(), [z, b])
    assert torch.equal(dz, _t([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]]))
    assert torch.equal(db, _t([0.0, 0.0, 0.0, 1.0, -1.0, 1.0]))


def test_modrelu_without_bias_preserves_the_norm_of_h():
    """b = 0 and a = 0: h_t = U h_{t-1} with U orthogonal, so ‖h_t‖ = ‖h_0‖ at every step."""
    gen = torch.Generator().manual_seed(3)
    H, T = 6, 8
    U = torch.linalg.qr(torch.randn(H, H, generator=gen, dtype=F64))[0]
    h0 = torch.randn(2, H, generator=gen, dtype=F64)
    out, states = recurrent_layer(torch.zeros(T, 2, 1, dtype=F64), torch.zeros(H, 1, dtype=F64), U, None, None,
                                  core="rnn_modrelu", h0=h0)
    norms = out.norm(dim=2)
    assert_close(norms, h0.norm(dim=1).expand(T, 2), F64, steps=T * H)
    assert_close(states["h"], h0 @ torch.linalg.matrix_power(U, T).T, F64, steps=T * H)


# --- IndRNN: every unit its own recurrence ---------------------------------------------------------------------
@pytest.mark.parametrize("dynamics", list(HYPER))
def test_indrnn_units_are_independent(dynamics):
    """With W_ih = I (unit j reads input channel j only), changing unit j's input at every step changes
    unit j alone: every other unit's output and final states stay bitwise the same (the Adam / RMSProp
    normalisation is elementwise too)."""
    gen = torch.Generator().manual_seed(4)
    T, B, H = 5, 3, 4
    x = torch.randn(T, B, H, generator=gen, dtype=F64)
    w = 2.4 * torch.rand(H, generator=gen, dtype=F64) - 1.2
    b_ih, b_hh = (0.3 * torch.randn(H, generator=gen, dtype=F64) for _ in range(2))
    h0 = torch.rand(B, H, generator=gen, dtype=F64)
    eye = torch.eye(H, dtype=F64)
    run = lambda inp: recurrent_layer(inp, eye, w, b_ih, b_hh, core="indrnn", dynamics=dynamics,  # noqa: E731
                                      **HYPER[dynamics], h0=h0)
    base_out, base_states = run(x)
    for j in range(H):
        changed = x.clone()
        changed[:, :, j] = torch.randn(T, B, generator=gen, dtype=F64) + 2.0
        out, states = run(changed)
        others = torch.arange(H) != j
        assert torch.equal(out[..., others], base_out[..., others]), j
        for name, value in states.items():
            assert torch.equal(value[:, others], base_states[name][:, others]), (j, name)
        assert not torch.equal(out[..., j], base_out[..., j]), j


def test_indrnn_jacobian_is_diagonal_in_the_units():
    gen = torch.Generator().manual_seed(5)
    T, B, H = 3, 1, 4
    w = 2.4 * torch.rand(H, generator=gen, dtype=F64) - 1.2
    b = torch.rand(H, generator=gen, dtype=F64) + 0.5  # keep every unit active, so the diagonal is nonzero
    x = torch.rand(T, B, H, generator=gen, dtype=F64)
    fn = lambda inp: recurrent_layer(inp, torch.eye(H, dtype=F64), w, b, b, core="indrnn")[0][-1, 0]  # noqa: E731
    jac = torch.autograd.functional.jacobian(fn, x)  # [H out, T, B, H in]
    for i in range(H):
        for j in range(H):
            if i != j:
                assert torch.equal(jac[i, :, :, j], torch.zeros(T, B, dtype=F64))
    # the diagonal: ∂h_T,i/∂x_t,i = w_i^(T-1-t)
    for t in range(T):
        assert_close(torch.diagonal(jac[:, t, 0, :]), w ** (T - 1 - t), F64, steps=T)


def test_indrnn_is_relu_rnn_with_a_diagonal_recurrent_matrix():
    """IndRNN is nn.RNN(relu) with W_hh = diag(w): the reference's two cores agree."""
    gen = torch.Generator().manual_seed(6)
    T, B, n_in, H = 5, 2, 3, 4
    x = torch.randn(T, B, n_in, generator=gen, dtype=F64)
    w_ih = torch.randn(H, n_in, generator=gen, dtype=F64)
    w = 2.4 * torch.rand(H, generator=gen, dtype=F64) - 1.2
    b_ih, b_hh = (torch.randn(H, generator=gen, dtype=F64) for _ in range(2))
    for dynamics in HYPER:
        ind, s1 = recurrent_layer(x, w_ih, w, b_ih, b_hh, core="indrnn", dynamics=dynamics, **HYPER[dynamics])
        rnn, s2 = recurrent_layer(x, w_ih, torch.diag(w), b_ih, b_hh, core="rnn_relu", dynamics=dynamics,
                                  **HYPER[dynamics])
        assert_close(ind, rnn, F64, steps=T * (n_in + H), msg=dynamics)
        for name in s1:
            assert_close(s1[name], s2[name], F64, steps=T * (n_in + H), msg=f"{dynamics} {name}")


# --- networks and autograd -------------------------------------------------------------------------------------
@pytest.mark.parametrize("core", ["rnn_modrelu", "indrnn"])
def test_network_bidirectional_reverse_direction_runs_reversed_time(core):
    gen = torch.Generator().manual_seed(7)
    T, B, n_in, H = 4, 2, 3, 3
    x = torch.randn(T, B, n_in, generator=gen, dtype=F64)
    params = {}
    for key in ("l0", "l0_reverse"):
        params[f"weight_ih_{key}"] = torch.randn(H, n_in, generator=gen, dtype=F64)
        params[f"weight_hh_{key}"] = (torch.linalg.qr(torch.randn(H, H, generator=gen, dtype=F64))[0]
                                      if core == "rnn_modrelu" else torch.rand(H, generator=gen, dtype=F64))
        params[f"bias_hh_{key}"] = 0.3 * torch.randn(H, generator=gen, dtype=F64)
        if core == "indrnn":
            params[f"bias_ih_{key}"] = 0.3 * torch.randn(H, generator=gen, dtype=F64)
    out, h_n, c_n, state = recurrent_network(x, params, bidirectional=True, core=core, dynamics="momentum",
                                             mu=0.5, s=0.6)
    assert c_n is None and out.shape == (T, B, 2 * H) and state["v"].shape == (2, B, H)
    rev, st = recurrent_layer(x.flip(0), params["weight_ih_l0_reverse"], params["weight_hh_l0_reverse"],
                              params.get("bias_ih_l0_reverse"), params["bias_hh_l0_reverse"], core=core,
                              dynamics="momentum", mu=0.5, s=0.6)
    assert torch.equal(out[..., H:], rev.flip(0))
    assert torch.equal(h_n[1], st["h"]) and torch.equal(state["v"][1], st["v"])


@pytest.mark.parametrize("dynamics", list(HYPER))
@pytest.mark.parametrize("core", ["rnn_modrelu", "indrnn"])
def test_gradcheck_reaches_every_input(core, dynamics):
    gen = torch.Generator().manual_seed(8)
    T, B, n_in, H = 3, 2, 2, 3
    x = torch.randn(T, B, n_in, generator=gen, dtype=F64)
    w_ih = torch.randn(H, n_in, generator=gen, dtype=F64)
    w_hh = (torch.linalg.qr(torch.randn(H, H, generator=gen, dtype=F64))[0] if core == "rnn_modrelu"
            else torch.rand(H, generator=gen, dtype=F64))
    b_ih, b_hh = (0.3 * torch.randn(H, generator=gen, dtype=F64) for _ in range(2))
    h0 = torch.rand(B, H, generator=gen, dtype=F64)
    inputs = [t.requires_grad_() for t in (x, w_ih, w_hh, b_ih, b_hh, h0)]

    def fn(*args):
        out, states = recurrent_layer(*args[:5], core=core, dynamics=dynamics, **HYPER[dynamics], h0=args[5])
        return (out,) + tuple(states[k] for k in sorted(states))

    assert torch.autograd.gradcheck(fn, inputs)
