"""Rows stay apart on the torch backend's native paths (issue #14, "rows leak into each other"; issue #13):
the commuted native cell of the momentum / restart families with a carried v_0, and the identity-native core
of Adam / RMSProp. A NaN or inf in one row of x, h0, c0 or the carried state never changes another row's
outputs, final states or gradients (tests/rows.py; tests/test_row_isolation.py runs the same check on every other
path), and the memory saved for backward is linear in the batch."""
import pytest
import torch

import tritonrnn.functional.layers as layers
from tests.rows import assert_rows_isolated
from tritonrnn.reference import STATE_NAMES
from tritonrnn.testing import saved_for_backward_bytes

HYPER = {"momentum": dict(mu=0.7, s=0.5), "restart": dict(s=0.6, restart=3),
         "adam": dict(mu=0.6, s=0.6, beta=0.1, eps=1e-8), "rmsprop": dict(s=0.6, beta=0.9, eps=1e-8)}
CASES = [("lstm", "momentum"), ("lstm", "restart"), ("rnn_tanh", "momentum"), ("lstm", "adam"),
         ("lstm", "rmsprop"), ("rnn_relu", "adam")]


def _path(dynamics):
    # momentum / restart take the native commuted cell on backend="torch" by themselves; Adam / RMSProp are
    # run on their identity-native core (a candidate path, forced here).
    return layers.forced_path("identity-native" if dynamics in ("adam", "rmsprop") else "torch")


def _inputs(core, dynamics, B, T=5, n_in=3, H=4, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    G = 4 if core == "lstm" else 1
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=dtype)  # noqa: E731
    params = dict(weight_ih=r(G * H, n_in), weight_hh=r(G * H, H) / 2, bias_ih=r(G * H), bias_hh=r(G * H))
    leaves = dict(x=r(B, T, n_in), h0=r(B, H), **({"c0": r(B, H)} if core == "lstm" else {}))
    leaves.update({n: r(B, G * H).abs() for n in STATE_NAMES[dynamics]})  # m >= 0 as a second moment is
    return params, leaves


def _run(core, dynamics, params, leaves):
    state = {n: leaves[n] for n in STATE_NAMES[dynamics]}
    kw = dict(dynamics=dynamics, **HYPER[dynamics], h0=leaves["h0"], state=state, step_offset=1, backend="torch")
    with _path(dynamics):
        if core == "lstm":
            out, h, c, final = layers.lstm_layer(leaves["x"], **params, c0=leaves["c0"], **kw)
            return [out, h, c, *final.values()]
        out, h, final = layers.rnn_layer(leaves["x"], **params, nonlinearity=core[4:], **kw)
        return [out, h, *final.values()]


@pytest.mark.parametrize("core,dynamics", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_poison_in_one_row_stays_in_that_row(core, dynamics, dtype):
    params, clean = _inputs(core, dynamics, B=3, dtype=dtype)
    # every leaf is [B, ...] here: x in the functional [B, T, in] convention, h0, c0 and the states [B, ·]
    assert_rows_isolated(lambda **leaves: [(o, 0) for o in _run(core, dynamics, params, leaves)], clean,
                         {k: 0 for k in clean}, dtype=dtype, steps=8 * clean["x"].shape[1])


def _saved_bytes(core, dynamics, B):
    """Bytes autograd saves for backward in one forward (tritonrnn.testing.saved_for_backward_bytes)."""
    params, leaves = _inputs(core, dynamics, B, T=16)
    leaves = {k: v.requires_grad_(True) for k, v in leaves.items()}
    return saved_for_backward_bytes(_run, core, dynamics, params, leaves)[1]


@pytest.mark.parametrize("core,dynamics", [("lstm", "momentum"), ("lstm", "adam")])
def test_memory_saved_for_backward_is_linear_in_batch(core, dynamics):
    # Everything saved is either per row (∝ B) or of parameter size (constant): bytes(B) = α + β·B with α, β ≥ 0,
    # hence bytes(B2) / bytes(B1) ≤ B2 / B1 for B2 > B1. A state entering through B one-hot channels (the device
    # this replaces) saves T·B·B more and breaks the bound (measured ~3x over it at these sizes).
    b1, b2 = 16, 64
    assert _saved_bytes(core, dynamics, b2) <= _saved_bytes(core, dynamics, b1) * b2 / b1
