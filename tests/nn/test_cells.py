"""Single-step cells (SPEC §1.5): drop-in parity of LSTMCell/RNNCell with torch, and every momentum cell
against the reference step and against its multi-step module."""
import pytest
import torch

import tritonrnn.nn as tnn
from tests.nn.common import BACKENDS, CELLS, FAMILIES, family_id, gates, reference_cell
from tests.tolerance import assert_close
from tritonrnn.reference import STATE_NAMES


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.mark.parametrize("bias", [True, False])
def test_lstm_cell_is_a_drop_in(bias, backend):
    torch.manual_seed(0)
    theirs = torch.nn.LSTMCell(3, 4, bias=bias)
    ours = tnn.LSTMCell(3, 4, bias=bias, backend=backend)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x, hx = torch.randn(2, 3), (torch.randn(2, 4), torch.randn(2, 4))
    for args in [(x, hx), (x,), (x[0], (hx[0][0], hx[1][0]))]:
        got, want = ours(*args), theirs(*args)
        for a, b in zip(got, want):
            assert a.shape == b.shape
            assert_close(a, b, torch.float32, 8)
    grads = torch.autograd.grad(sum(t.sum() for t in ours(x, hx)), list(ours.parameters()))
    ref_grads = torch.autograd.grad(sum(t.sum() for t in theirs(x, hx)), list(theirs.parameters()))
    for a, b in zip(grads, ref_grads):
        assert_close(a, b, torch.float32, 8)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_cell_is_a_drop_in(nonlinearity, backend):
    torch.manual_seed(0)
    theirs = torch.nn.RNNCell(3, 4, nonlinearity=nonlinearity)
    ours = tnn.RNNCell(3, 4, nonlinearity=nonlinearity, backend=backend)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    assert_close(ours(x, h), theirs(x, h), torch.float32, 8)
    assert_close(ours(x[1]), theirs(x[1]), torch.float32, 8)


@pytest.mark.parametrize("entry", [e for e in FAMILIES if e[1] != "plain"], ids=family_id)
def test_cell_step_matches_reference(entry, backend):
    cls, dynamics, hyper = entry
    torch.manual_seed(0)
    cell = CELLS[cls](3, 4, **hyper, backend=backend, dtype=torch.float64)
    G = gates(cell)
    B = 2
    x = torch.randn(B, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, 4, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(B, 4, dtype=torch.float64, requires_grad=True) if G == 4 else None
    state = {n: torch.rand(B, G * 4, dtype=torch.float64, requires_grad=True) for n in STATE_NAMES[dynamics]}
    hx = h0 if c0 is None else (h0, c0)
    new_hx, new_state = cell(x, hx, state, step=1)
    h = new_hx if c0 is None else new_hx[0]
    ref = reference_cell(cell, x, h0, c0, state, step=1)
    assert_close(h, ref["h"], torch.float64, 8)
    if c0 is not None:
        assert_close(new_hx[1], ref["c"], torch.float64, 8)
    assert set(new_state) == set(STATE_NAMES[dynamics])
    for name in new_state:
        assert_close(new_state[name], ref[name], torch.float64, 8)
    leaves = [x, h0, *([c0] if c0 is not None else []), *state.values(), *cell.parameters()]
    got = torch.autograd.grad(h.sum() + sum(v.sum() for v in new_state.values()), leaves)
    want = torch.autograd.grad(ref["h"].sum() + sum(ref[n].sum() for n in new_state), leaves)
    for a, b in zip(got, want):
        assert_close(a, b, torch.float64, 8)


@pytest.mark.parametrize("entry", FAMILIES, ids=family_id)
def test_cells_stepped_through_time_equal_the_module(entry, backend):
    cls, dynamics, hyper = entry
    torch.manual_seed(0)
    module = cls(3, 4, **hyper, backend=backend, dtype=torch.float64)
    cell = CELLS[cls](3, 4, **hyper, backend=backend, dtype=torch.float64)
    cell.load_state_dict({k[:-3]: v for k, v in module.state_dict().items()}, strict=True)  # strip "_l0"
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out, hidden, final = module(x, step_offset=2, return_state=True)
    hx, state, outs = None, None, []
    for t in range(5):
        if cls in (tnn.LSTM, tnn.RNN):
            hx = cell(x[t], hx)
        else:
            hx, state = cell(x[t], hx, state, step=2 + t)
        outs.append(hx[0] if isinstance(hx, tuple) else hx)
    torch.testing.assert_close(torch.stack(outs), out, rtol=1e-12, atol=1e-12)
    for name in final:
        torch.testing.assert_close(state[name], final[name][0], rtol=1e-12, atol=1e-12)


def test_unbatched_cell_state():
    cell = tnn.AdamLSTMCell(3, 4, backend="torch")
    (h, c), state = cell(torch.randn(3))
    assert h.shape == (4,) and c.shape == (4,) and state["v"].shape == (16,) and state["m"].shape == (16,)
    (h2, _), state2 = cell(torch.randn(3), (h, c), state)
    assert state2["m"].dtype == torch.float32


def test_cell_bad_arguments(backend):
    cell = tnn.MomentumRNNCell(3, 4, backend=backend)
    with pytest.raises(ValueError, match="input"):
        cell(torch.randn(2, 3, 1))
    with pytest.raises(ValueError, match="input_size"):
        cell(torch.randn(2, 5))
    with pytest.raises(ValueError, match="hx"):
        cell(torch.randn(2, 3), torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"state\['v'\]"):
        cell(torch.randn(2, 3), None, {"v": torch.zeros(2, 5)})
    with pytest.raises(ValueError, match="step"):
        cell(torch.randn(2, 3), step=-1)
    with pytest.raises(TypeError, match="hx"):
        tnn.NesterovLSTMCell(3, 4, backend=backend)(torch.randn(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="restart"):
        tnn.SRLSTMCell(3, 4, restart=0)
