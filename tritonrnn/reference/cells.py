"""Step-by-step reference cells for SPEC §1: every family (plain, momentum, restart, Adam, RMSProp,
Nesterov) on the LSTM core and the RNN core (tanh / relu), and the input dynamics of SPEC §1.2 on two more
cores (issue #8):

    rnn_modrelu (orthogonal RNN, DTRIV):  z_t = a_t + U h_{t-1};          h_t = sign(z_t)·relu(|z_t| + b)
    indrnn      (IndRNN, Li et al. 2018): z_t = a_t + w ⊙ h_{t-1} + b_hh; h_t = relu(z_t)

For rnn_modrelu the bias_hh slot holds the modReLU bias b (there is no additive recurrent bias; U is
orthogonal and the input map has no bias in DTRIV, though b_ih is accepted); for indrnn weight_hh is the
per-unit recurrent weight w [H].

One Python step per time step, one equation per line, differentiable by autograd. This is the oracle of the
module and kernel tests, so it is written to be obviously correct, not fast: it even recomputes W_ih x_t
inside the loop, exactly as SPEC §1.1 writes it. States are carried in fp32 (fp64 when the input is fp64,
for gradcheck); the output is cast back to the input's dtype.

Layout: time-major like torch.nn.LSTM, x [T, B, in]; one layer, one direction per `recurrent_layer` call.
`recurrent_network` stacks layers and directions with the parameter names of torch.nn.LSTM (dropout off).
"""
from __future__ import annotations

import torch

from ..schedules import restart_momentum
from .scans import sqrt0

CORES = ("lstm", "rnn_tanh", "rnn_relu", "rnn_modrelu", "indrnn")
DYNAMICS = ("plain", "momentum", "restart", "adam", "rmsprop", "nesterov")

# Which carried input-dynamics states each family has (SPEC §1.2, §1.3); h (and c) are always carried.
STATE_NAMES = {
    "plain": (),
    "momentum": ("v",),
    "restart": ("v",),
    "adam": ("v", "m"),
    "rmsprop": ("m",),
    "nesterov": ("a",),
}

# The hyper-parameters each family reads (SPEC §1.2 table, keyword names are part of the contract).
HYPER_NAMES = {
    "plain": (),
    "momentum": ("mu", "s"),
    "restart": ("s", "restart"),
    "adam": ("mu", "s", "beta", "eps"),
    "rmsprop": ("s", "beta", "eps"),
    "nesterov": ("s", "restart"),
}


def _gate_count(core: str) -> int:
    return 4 if core == "lstm" else 1


def _check_family(core: str, dynamics: str, hyper: dict) -> None:
    if core not in CORES:
        raise ValueError(f"core must be one of {CORES}, got {core!r}")
    if dynamics not in DYNAMICS:
        raise ValueError(f"dynamics must be one of {DYNAMICS}, got {dynamics!r}")
    if dynamics == "nesterov" and core != "lstm":
        raise ValueError("dynamics='nesterov' is defined for the LSTM core only (SPEC §1.3)")
    for name in HYPER_NAMES[dynamics]:
        if hyper[name] is None:
            raise TypeError(f"dynamics={dynamics!r} needs the hyper-parameter {name!r}")


def recurrent_layer(x, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, core="lstm", dynamics="plain",
                    mu=None, s=None, beta=None, eps=None, restart=None, h0=None, c0=None, v0=None, m0=None,
                    a0=None, step_offset=0, weight_hr=None, step_fn=None):
    """One layer, one direction of SPEC §1 over x [T, B, in].

    Returns (output [T, B, P], states) where P is the projection size (weight_hr rows) or H, and `states`
    maps "h" (and "c" for the LSTM core) plus the family's carried states (STATE_NAMES) to their values after
    the last step. Step t uses the restart coefficient of step `step_offset + t`. `step_fn` replaces
    `cell_step` (same signature), e.g. by a torch.compile'd copy for the perf suite's compiled peer.
    """
    _check_family(core, dynamics, dict(mu=mu, s=s, beta=beta, eps=eps, restart=restart))
    T, B, _ = x.shape
    G = _gate_count(core)
    H = weight_ih.shape[0] // G
    P = weight_hr.shape[0] if weight_hr is not None else H
    dtype = torch.promote_types(x.dtype, torch.float32)

    def initial(state, width):
        return x.new_zeros(B, width, dtype=dtype) if state is None else state.to(dtype)

    h, c = initial(h0, P), initial(c0, H)
    v, m, a_prev = initial(v0, G * H), initial(m0, G * H), initial(a0, G * H)
    w_ih, w_hh = weight_ih.to(dtype), weight_hh.to(dtype)
    b_ih = 0.0 if bias_ih is None else bias_ih.to(dtype)
    b_hh = 0.0 if bias_hh is None else bias_hh.to(dtype)

    w_hr = None if weight_hr is None else weight_hr.to(dtype)
    step_fn = cell_step if step_fn is None else step_fn
    outputs = []
    for t, x_t in enumerate(x.unbind(0)):  # unbind: one backward node, not T full-size index gradients
        lam = restart_momentum(step_offset + t, restart) if dynamics in ("restart", "nesterov") else mu
        h, c, v, m, a_prev = step_fn(x_t.to(dtype), h, c, v, m, a_prev, w_ih, w_hh, b_ih, b_hh, w_hr,
                                     core=core, dynamics=dynamics, lam=lam, s=s, beta=beta, eps=eps)
        outputs.append(h)

    output = torch.stack(outputs).to(x.dtype) if outputs else x.new_zeros(0, B, P)
    states = {"h": h}
    if core == "lstm":
        states["c"] = c
    carried = {"v": v, "m": m, "a": a_prev}
    for name in STATE_NAMES[dynamics]:
        states[name] = carried[name]
    return output, states


def cell_step(x_t, h, c, v, m, a_prev, w_ih, w_hh, b_ih, b_hh, w_hr, *, core, dynamics, lam, s, beta, eps):
    """One time step of SPEC §1.1-1.3: returns the new (h, c, v, m, a_prev). `lam` is this step's momentum
    coefficient (μ, or the restart schedule's μ_t); states a family does not use pass through unchanged."""
    u = x_t @ w_ih.T + b_ih                          # SPEC §1.1: input drive, b_ih inside the dynamics
    z, v, m, a_prev = drive_step(u, h, v, m, a_prev, w_hh, b_hh, core=core, dynamics=dynamics, lam=lam, s=s,
                                 beta=beta, eps=eps)
    h, c = core_step(z, c, w_hr, core=core, b_hh=b_hh)
    return h, c, v, m, a_prev


def recurrent_term(h, w_hh, b_hh, *, core):
    """What h_{t-1} adds to the pre-activations: W_hh h + b_hh (b_hh outside the dynamics, SPEC §1.1);
    w ⊙ h + b_hh for IndRNN; U h for the orthogonal core (its b_hh is the modReLU bias, see core_step)."""
    if core == "indrnn":
        return h * w_hh + b_hh
    if core == "rnn_modrelu":
        return h @ w_hh.T
    return h @ w_hh.T + b_hh


def drive_step(u, h, v, m, a_prev, w_hh, b_hh, *, core, dynamics, lam, s, beta, eps):
    """The gate pre-activations z_t from the input drive u_t = W_ih x_t + b_ih and h_{t-1} (SPEC §1.1-1.3),
    with the family's input dynamics; returns (z, v, m, a_prev)."""
    recurrent = recurrent_term(h, w_hh, b_hh, core=core)
    if dynamics == "plain":
        z = u + recurrent
    elif dynamics in ("momentum", "restart"):
        v = lam * v + s * u                          # SPEC §1.2
        z = v + recurrent
    elif dynamics == "adam":
        v = lam * v + s * u
        m = torch.addcmul(beta * m, u, u, value=1.0 - beta)   # β m + (1-β) u⊙u
        z = v / (sqrt0(m) + eps) + recurrent         # paper eq. 15
    elif dynamics == "rmsprop":
        m = torch.addcmul(beta * m, u, u, value=1.0 - beta)
        z = s * u / (sqrt0(m) + eps) + recurrent     # Adam with mu = 0
    else:  # nesterov, SPEC §1.3: the recurrent term is inside the momentum, u enters with a minus sign
        a = recurrent - s * u
        z = a + lam * (a - a_prev)
        a_prev = a
    return z, v, m, a_prev


def core_step(z, c, w_hr, *, core, b_hh=0.0):
    """The LSTM / RNN update from the pre-activations z (SPEC §1.1); returns (h, c). `b_hh` is read by the
    orthogonal core only (its modReLU bias)."""
    if core == "lstm":
        z_i, z_f, z_g, z_o = z.chunk(4, dim=1)       # nn.LSTM gate order i, f, g, o
        c = torch.sigmoid(z_f) * c + torch.sigmoid(z_i) * torch.tanh(z_g)
        h = torch.sigmoid(z_o) * torch.tanh(c)
        if w_hr is not None:
            h = h @ w_hr.T                           # nn.LSTM proj_size
    elif core == "rnn_tanh":
        h = torch.tanh(z)
    elif core == "rnn_modrelu":
        h = torch.sign(z) * torch.relu(z.abs() + b_hh)   # modReLU (Arjovsky et al. 2016; DTRIV)
    else:  # rnn_relu, indrnn
        h = torch.relu(z)
    return h, c


def recurrent_network(x, params, *, num_layers=1, bidirectional=False, core="lstm", dynamics="plain",
                      mu=None, s=None, beta=None, eps=None, restart=None, h0=None, c0=None, state=None,
                      step_offset=0):
    """A full torch.nn.LSTM/nn.RNN-shaped stack (dropout off) over x [T, B, in].

    `params` maps nn.LSTM's parameter names (`weight_ih_l{k}[_reverse]`, `weight_hh_...`, `bias_ih_...`,
    `bias_hh_...`, `weight_hr_...`) to tensors; missing biases mean bias=False. h0/c0 are
    [num_layers * D, B, ·] like nn.LSTM; `state` maps the family's state names to [num_layers * D, B, G*H].
    The reverse direction runs its own dynamics over reversed time (SPEC §1.5).
    Returns (output [T, B, D*P], h_n, c_n (None for the RNN core), final state dict).
    """
    directions = ("", "_reverse") if bidirectional else ("",)
    hyper = dict(mu=mu, s=s, beta=beta, eps=eps, restart=restart)
    state = state or {}
    h_n, c_n, final = [], [], {name: [] for name in STATE_NAMES[dynamics]}
    layer_input = x
    for layer in range(num_layers):
        outputs = []
        for d, suffix in enumerate(directions):
            index = layer * len(directions) + d
            key = f"l{layer}{suffix}"
            inp = layer_input if d == 0 else layer_input.flip(0)
            out, states = recurrent_layer(
                inp, params[f"weight_ih_{key}"], params[f"weight_hh_{key}"],
                params.get(f"bias_ih_{key}"), params.get(f"bias_hh_{key}"),
                core=core, dynamics=dynamics, **hyper,
                h0=None if h0 is None else h0[index], c0=None if c0 is None else c0[index],
                **{f"{name}0": state[name][index] for name in STATE_NAMES[dynamics] if name in state},
                step_offset=step_offset, weight_hr=params.get(f"weight_hr_{key}"))
            outputs.append(out if d == 0 else out.flip(0))
            h_n.append(states["h"])
            if core == "lstm":
                c_n.append(states["c"])
            for name in final:
                final[name].append(states[name])
        layer_input = torch.cat(outputs, dim=2)
    return (layer_input, torch.stack(h_n), torch.stack(c_n) if core == "lstm" else None,
            {name: torch.stack(values) for name, values in final.items()})
