"""Every public entry point of tritonrnn's recurrent API as one table, for the property tests that must reach all
of them (issue 14): strides (tests/test_strides.py), row isolation (tests/test_row_isolation.py).

An entry names its tensor arguments with their shapes and *roles*, builds a callable for a backend, and that
callable returns its outputs with their roles. A role says which axis is the batch (row) and which axis an
expanded (stride-0) copy may repeat along:

    seq     [B, T, C]   the functional convention (tritonrnn.functional): rows on 0, expanded along time
    seq_tm  [T, B, C]   a module's time-major input / output: rows on 1, expanded along time
    state   [B, C]      functional states, cell inputs and states: rows on 0, expanded along rows (a learned
                        initial state h0.expand(B, H) is the common real case)
    state3  [L, B, C]   a module's hx / state entries / h_n: rows on 1, expanded along rows
    weight  [R, C], bias [R]: no rows; expanded along dim 0

Shapes are tiny (the Triton backend runs under the interpreter on CPU) but pairwise distinct (B = 3, T = 4,
C/in = 2, H = 5), so a transposed read shows up as a shape error or wrong values, never a coincidence.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from tests.profiles import PROFILE
import tritonrnn.functional as F
import tritonrnn.nn as tnn
from tritonrnn.functional.layers import indrnn_layer
from tritonrnn.functional.recurrence import indrnn_recurrence
from tritonrnn.reference import STATE_NAMES

B, T, IN, H = 3, 4, 2, 5
# The opt-in explore profile (tests/profiles.py) runs every entry on every backend in every variant; the default
# one skips, on the Triton backend, the entries whose launchers another entry already reaches with the same
# argument kinds (the Adam / RMSProp scan costs ~5 s a call under the interpreter).
EXHAUSTIVE = PROFILE == "explore"
# Every output of an entry is at most DEPTH fp32 operations deep: T steps, each a dot of at most IN + 4H + 1
# terms, forward and backward chains. Two calls that compute the same function of the same values and differ only
# in a reduction order (another memory layout, another row's content) agree within tolerance(fp32, DEPTH).
DEPTH = T * (IN + 4 * H + 1) * 2
ROW_DIM = {"seq": 0, "seq_tm": 1, "state": 0, "state3": 1, "weight": None, "bias": None}
EXPAND_DIM = {"seq": 1, "seq_tm": 0, "state": 0, "state3": 1, "weight": 0, "bias": 0}


@dataclass
class Arg:
    name: str
    shape: tuple
    role: str
    positive: bool = False  # a second moment m (the scans require m >= 0)


@dataclass
class Entry:
    id: str
    args: list
    build: Callable  # build(backend) -> (fn(**tensors) -> [(tensor, role)], [parameters])
    backends: tuple = ("torch", "triton")
    kind: str = "functional"  # or "module" (modules and cells)
    triton_in_ci: bool = True  # False: on the Triton backend only in the exhaustive profile (EXHAUSTIVE)


def _functional(fn, names):
    """An entry body calling `fn(backend, **tensors)` and labelling its outputs with `names` (roles)."""
    def build(backend):
        def call(**t):
            out = fn(backend, **t)
            return [(o, role) for o, role in zip(out, names)]
        return call, []
    return build


def _scan_entries():
    u = Arg("u", (B, T, H), "seq")
    v0 = Arg("v0", (B, H), "state")
    m0 = Arg("m0", (B, H), "state", positive=True)
    return [
        Entry("momentum_scan", [u, v0], _functional(
            lambda b, u, v0: F.momentum_scan(u, 0.7, 0.5, v0, backend=b), ["seq", "state"])),
        Entry("momentum_scan[restart]", [u, v0], _functional(
            lambda b, u, v0: F.momentum_scan(u, 0.7, 0.5, v0, restart=3, step_offset=1, backend=b), ["seq", "state"])),
        Entry("adam_scan", [u, v0, m0], _functional(
            lambda b, u, v0, m0: F.adam_scan(u, 0.6, 0.6, 0.1, 1e-8, v0, m0, backend=b), ["seq", "state", "state"])),
        Entry("rmsprop_scan", [u, m0], _functional(
            lambda b, u, m0: F.rmsprop_scan(u, 0.6, 0.9, 1e-8, m0, backend=b), ["seq", "state"])),
    ]


def _recurrence_entries():
    def core(G):
        return [Arg("a", (B, T, G * H), "seq"), Arg("weight_hh", (G * H, H), "weight"),
                Arg("bias_hh", (G * H,), "bias"), Arg("h0", (B, H), "state")]
    lstm = core(4) + [Arg("c0", (B, H), "state")]
    u_lstm = [Arg("u", (B, T, 4 * H), "seq")] + lstm[1:]
    entries = [
        Entry("lstm_recurrence", lstm, _functional(
            lambda b, a, weight_hh, bias_hh, h0, c0: F.lstm_recurrence(a, weight_hh, bias_hh, h0, c0, backend=b),
            ["seq", "state", "state"])),
        Entry("indrnn_recurrence", [Arg("a", (B, T, H), "seq"), Arg("weight_hh", (H,), "bias"),
                                    Arg("bias_hh", (H,), "bias"), Arg("h0", (B, H), "state")], _functional(
            lambda b, a, weight_hh, bias_hh, h0: indrnn_recurrence(a, weight_hh, bias_hh, h0, backend=b),
            ["seq", "state"])),
        Entry("nesterov_lstm_recurrence", u_lstm + [Arg("a0", (B, 4 * H), "state")], _functional(
            lambda b, u, weight_hh, bias_hh, h0, c0, a0: F.nesterov_lstm_recurrence(
                u, weight_hh, bias_hh, h0, c0, a0, s=0.8, restart=3, step_offset=1, backend=b),
            ["seq", "state", "state", "state"])),
        Entry("momentum_lstm_recurrence", u_lstm + [Arg("v0", (B, 4 * H), "state")], _functional(
            lambda b, u, weight_hh, bias_hh, h0, c0, v0: F.momentum_lstm_recurrence(
                u, weight_hh, bias_hh, h0, c0, v0, mu=0.7, s=0.5, backend=b),
            ["seq", "state", "state", "state"])),
        Entry("momentum_lstm_recurrence[restart]", u_lstm + [Arg("v0", (B, 4 * H), "state")], _functional(
            lambda b, u, weight_hh, bias_hh, h0, c0, v0: F.momentum_lstm_recurrence(
                u, weight_hh, bias_hh, h0, c0, v0, s=0.5, restart=3, step_offset=2, backend=b),
            ["seq", "state", "state", "state"])),
    ]
    for nl in ("tanh", "relu", "modrelu"):
        entries.append(Entry(f"rnn_recurrence[{nl}]", core(1), _functional(
            lambda b, a, weight_hh, bias_hh, h0, nl=nl: F.rnn_recurrence(a, weight_hh, bias_hh, h0, nonlinearity=nl,
                                                                          backend=b), ["seq", "state"])))
    return entries


def _layer_entries():
    entries = []

    def layer_args(G, dynamics, lstm, per_unit=False, proj=0):
        P = proj or H
        args = [Arg("x", (B, T, IN), "seq"), Arg("weight_ih", (G * H, IN), "weight"),
                Arg("weight_hh", (H,) if per_unit else (G * H, P), "bias" if per_unit else "weight"),
                Arg("bias_ih", (G * H,), "bias"), Arg("bias_hh", (G * H,), "bias"), Arg("h0", (B, P), "state")]
        if proj:
            args.append(Arg("weight_hr", (P, H), "weight"))
        if lstm:
            args.append(Arg("c0", (B, H), "state"))
        return args + [Arg(f"state_{n}", (B, G * H), "state", positive=n == "m") for n in STATE_NAMES[dynamics]]

    def states(t):
        return {k[6:]: t.pop(k) for k in list(t) if k.startswith("state_")}

    def outputs(out, dynamics):
        *main, st = out
        return list(main) + [st[n] for n in STATE_NAMES[dynamics]]

    hyper = {"plain": {}, "momentum": dict(mu=0.7, s=0.5), "restart": dict(s=0.6, restart=3),
             "adam": dict(mu=0.6, s=0.6, beta=0.1), "rmsprop": dict(s=0.6, beta=0.9), "nesterov": dict(s=0.8)}
    for dynamics in ("plain", "momentum", "restart", "adam", "rmsprop", "nesterov"):
        roles = ["seq", "state", "state"] + ["state"] * len(STATE_NAMES[dynamics])

        def lstm(b, dynamics=dynamics, **t):
            st = states(t)
            return outputs(F.lstm_layer(**t, dynamics=dynamics, **hyper[dynamics], state=st, step_offset=1,
                                        backend=b), dynamics)
        entries.append(Entry(f"lstm_layer[{dynamics}]", layer_args(4, dynamics, True), _functional(lstm, roles)))
    for dynamics in ("momentum", "adam"):  # proj_size > 0 runs the torch loops only (the kernels have no projection)
        roles = ["seq", "state", "state"] + ["state"] * len(STATE_NAMES[dynamics])

        def lstm_proj(b, dynamics=dynamics, **t):
            st = states(t)
            return outputs(F.lstm_layer(**t, dynamics=dynamics, **hyper[dynamics], state=st, backend=b), dynamics)
        entries.append(Entry(f"lstm_layer[{dynamics},proj]", layer_args(4, dynamics, True, proj=3),
                             _functional(lstm_proj, roles), backends=("torch",)))
    rnn_cases = [(d, "tanh") for d in ("plain", "momentum", "restart", "adam", "rmsprop")]
    rnn_cases += [("momentum", "relu"), ("adam", "modrelu")]
    for dynamics, nl in rnn_cases:
        roles = ["seq", "state"] + ["state"] * len(STATE_NAMES[dynamics])

        def rnn(b, dynamics=dynamics, nl=nl, **t):
            st = states(t)
            return outputs(F.rnn_layer(**t, nonlinearity=nl, dynamics=dynamics, **hyper[dynamics], state=st,
                                       step_offset=1, backend=b), dynamics)
        entries.append(Entry(f"rnn_layer[{dynamics},{nl}]", layer_args(1, dynamics, False), _functional(rnn, roles)))
    for dynamics in ("plain", "momentum", "rmsprop"):
        roles = ["seq", "state"] + ["state"] * len(STATE_NAMES[dynamics])

        def ind(b, dynamics=dynamics, **t):
            st = states(t)
            return outputs(indrnn_layer(**t, dynamics=dynamics, **hyper[dynamics], state=st, backend=b), dynamics)
        entries.append(Entry(f"indrnn_layer[{dynamics}]", layer_args(1, dynamics, False, per_unit=True),
                             _functional(ind, roles)))
    return entries


MODULES = [tnn.LSTM, tnn.MomentumLSTM, tnn.SRLSTM, tnn.AdamLSTM, tnn.RMSPropLSTM, tnn.NesterovLSTM,
           tnn.RNN, tnn.MomentumRNN, tnn.SRRNN, tnn.AdamRNN, tnn.RMSPropRNN,
           tnn.OrthogonalRNN, tnn.MomentumOrthogonalRNN, tnn.SROrthogonalRNN, tnn.AdamOrthogonalRNN,
           tnn.RMSPropOrthogonalRNN, tnn.IndRNN, tnn.MomentumIndRNN, tnn.SRIndRNN, tnn.AdamIndRNN, tnn.RMSPropIndRNN]
CELLS = [tnn.LSTMCell, tnn.MomentumLSTMCell, tnn.SRLSTMCell, tnn.AdamLSTMCell, tnn.RMSPropLSTMCell,
         tnn.NesterovLSTMCell, tnn.RNNCell, tnn.MomentumRNNCell, tnn.SRRNNCell, tnn.AdamRNNCell, tnn.RMSPropRNNCell]


def _gates(cls):
    return 4 if "LSTM" in cls.__name__ else 1


def _module_entry(cls, num_layers=1, bidirectional=False, suffix=""):
    G, lstm = _gates(cls), _gates(cls) == 4
    LD = num_layers * (2 if bidirectional else 1)
    dynamics = cls.dynamics
    args = [Arg("input", (T, B, IN), "seq_tm"), Arg("h0", (LD, B, H), "state3")]
    if lstm:
        args.append(Arg("c0", (LD, B, H), "state3"))
    args += [Arg(f"state_{n}", (LD, B, G * H), "state3", positive=n == "m") for n in STATE_NAMES[dynamics]]

    def build(backend):
        torch.manual_seed(0)
        module = cls(IN, H, num_layers=num_layers, bidirectional=bidirectional, backend=backend)

        def call(input, h0, c0=None, **st):
            state = {k[6:]: v for k, v in st.items()}
            out, hidden, final = module(input, (h0, c0) if lstm else h0, state=state, step_offset=1,
                                        return_state=True)
            hidden = hidden if lstm else (hidden,)
            return ([(out, "seq_tm")] + [(h, "state3") for h in hidden]
                    + [(final[n], "state3") for n in STATE_NAMES[dynamics]])
        return call, list(module.parameters())
    return Entry(cls.__name__ + suffix, args, build, kind="module")


def _cell_entry(cls):
    G, lstm = _gates(cls), _gates(cls) == 4
    dynamics = cls.dynamics
    args = [Arg("input", (B, IN), "state"), Arg("h0", (B, H), "state")]
    if lstm:
        args.append(Arg("c0", (B, H), "state"))
    args += [Arg(f"state_{n}", (B, G * H), "state", positive=n == "m") for n in STATE_NAMES[dynamics]]

    def build(backend):
        torch.manual_seed(0)
        cell = cls(IN, H, backend=backend)

        def call(input, h0, c0=None, **st):
            hx = (h0, c0) if lstm else h0
            if dynamics == "plain":
                hidden, final = cell(input, hx), {}
            else:
                hidden, final = cell(input, hx, {k[6:]: v for k, v in st.items()}, step=1)
            hidden = hidden if lstm else (hidden,)
            return [(h, "state") for h in hidden] + [(final[n], "state") for n in STATE_NAMES[dynamics]]
        return call, list(cell.parameters())
    return Entry(cls.__name__, args, build, kind="module")


# On the Triton backend the default profile runs every functional entry whose launcher path no other entry
# reaches, and the modules / cells whose own code differs from their family's (the module and cell wiring is
# one code path for every family, which the torch backend runs for all of them).
TRITON_CI_SKIPS = {"lstm_layer[adam]", "lstm_layer[rmsprop]", "rnn_layer[adam,tanh]", "rnn_layer[rmsprop,tanh]",
                   "rnn_layer[adam,modrelu]", "indrnn_layer[rmsprop]"}
TRITON_CI_MODULES = {"LSTM", "NesterovLSTM", "RNN", "MomentumOrthogonalRNN", "MomentumIndRNN", "LSTMCell",
                     "NesterovLSTMCell", "MomentumRNNCell"}

ENTRIES = (_scan_entries() + _recurrence_entries() + _layer_entries() + [_module_entry(c) for c in MODULES]
           + [_module_entry(tnn.MomentumLSTM, 2, True, "[2 layers, bidirectional]")]
           + [_cell_entry(c) for c in CELLS])
for _e in ENTRIES:
    _e.triton_in_ci = (_e.id in TRITON_CI_MODULES) if _e.kind == "module" else _e.id not in TRITON_CI_SKIPS


def entry_params(entries=ENTRIES):
    """(entry, backend) pairs with pytest ids, for parametrize."""
    skip = pytest.mark.skip(reason="Triton twin of a launcher path another entry covers; runs with "
                                   "HYPOTHESIS_PROFILE=explore")
    return [pytest.param(e, b, id=f"{e.id}-{b}", marks=[skip] if b == "triton" and not (e.triton_in_ci or EXHAUSTIVE)
                         else []) for e in entries for b in e.backends]
