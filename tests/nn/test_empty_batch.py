"""Batch size 0 (issue 14): torch.nn.LSTM / RNN / LSTMCell / RNNCell return empty outputs for an empty batch, and
so does every tritonrnn module, cell and functional entry point, on both backends: outputs, h_n, c_n and final
momentum states of the right shapes and dtypes, a zero-size gradient for every batched input, and a zero
gradient (not None) for every parameter, as torch gives. (An empty PackedSequence does not exist: torch's
pack_padded_sequence refuses empty tensors.)

What makes it work, so that a regression shows here: the Triton path has nothing to launch for an empty batch,
so the functional recurrences run it on the torch step loop (zero work, the autograd graph of every input), and
the step loop's backward returns the (zero-size) gradient of its drive."""
import pytest
import torch

import tritonrnn.nn as tnn
from tests.entry_points import CELLS, ENTRIES, MODULES, ROW_DIM
from tritonrnn.reference import STATE_NAMES

T, IN, H = 4, 2, 3
BACKENDS = ("torch", "triton")


def _is_lstm(cls):
    return "LSTM" in cls.__name__


def _zero_grads(named_parameters):
    """Names of the parameters whose gradient is missing or nonzero (torch gives zeros for an empty batch)."""
    return [n for n, p in named_parameters if p.grad is None or p.grad.shape != p.shape or bool(p.grad.any())]


def _backward(tensors, leaves):
    torch.autograd.backward([t for t in tensors if t.requires_grad],
                            [torch.ones_like(t) for t in tensors if t.requires_grad])
    for name, leaf in leaves.items():
        assert leaf.grad is not None and leaf.grad.shape == leaf.shape, f"{name}: no gradient of its shape"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("cls", MODULES, ids=lambda c: c.__name__)
def test_module_matches_torch(cls, with_hx, batch_first, backend):
    lstm = _is_lstm(cls)
    G, L, D = (4 if lstm else 1), 2, 2
    kw = dict(num_layers=L, bidirectional=True, batch_first=batch_first)
    ours = cls(IN, H, **kw, backend=backend)
    theirs = (torch.nn.LSTM if lstm else torch.nn.RNN)(IN, H, **kw)
    x = torch.randn((0, T, IN) if batch_first else (T, 0, IN))
    hx = [torch.randn(L * D, 0, H) for _ in range(2 if lstm else 1)]
    state = {n: torch.randn(L * D, 0, G * H) for n in STATE_NAMES[cls.dynamics]} if with_hx else {}
    results = {}
    for who, module in (("ours", ours), ("theirs", theirs)):
        leaves = {"x": x.clone().requires_grad_()}
        if with_hx:
            leaves.update({f"hx{i}": h.clone().requires_grad_() for i, h in enumerate(hx)})
        args = [leaves["x"]]
        if with_hx:
            args.append((leaves["hx0"], leaves["hx1"]) if lstm else leaves["hx0"])
        if who == "ours":
            leaves.update({f"state[{n}]": v.clone().requires_grad_() for n, v in state.items()})
            out, hidden, final = module(*args, state={n: leaves[f"state[{n}]"] for n in state} or None,
                                        return_state=True)
            assert sorted(final) == sorted(STATE_NAMES[cls.dynamics])
            for n, v in final.items():
                assert v.shape == (L * D, 0, G * H) and v.dtype == torch.float32, f"final state {n}: {v.shape} {v.dtype}"
        else:
            out, hidden = module(*args)
            final = {}
        hidden = hidden if lstm else (hidden,)
        _backward([out, *hidden, *final.values()], leaves)
        assert not _zero_grads(module.named_parameters()), f"{who}: parameters without a zero gradient"
        shared = [k for k in leaves if not k.startswith("state")]  # what both modules take
        results[who] = [(t.shape, t.dtype) for t in (out, *hidden)] + [(leaves[k].grad.shape, leaves[k].grad.dtype)
                                                                        for k in shared]
    assert results["ours"] == results["theirs"]


@pytest.mark.parametrize("cls", [tnn.LSTM, tnn.MomentumLSTM, tnn.AdamLSTM], ids=lambda c: c.__name__)
def test_projection_matches_torch(cls):
    """proj_size > 0 (torch backend only: the kernels have no projection): h_n is proj_size wide, c_n is not."""
    ours, theirs = cls(IN, H, proj_size=2, backend="torch"), torch.nn.LSTM(IN, H, proj_size=2)
    x = torch.randn(T, 0, IN)
    (o1, (h1, c1)), (o2, (h2, c2)) = ours(x), theirs(x)
    assert [(t.shape, t.dtype) for t in (o1, h1, c1)] == [(t.shape, t.dtype) for t in (o2, h2, c2)]
    (o1.sum() + h1.sum() + c1.sum()).backward()
    assert not _zero_grads(ours.named_parameters())


def test_float64_module():
    ours = tnn.MomentumRNN(IN, H, dtype=torch.float64, backend="torch")
    out, h, final = ours(torch.randn(T, 0, IN, dtype=torch.float64), return_state=True)
    assert out.dtype == h.dtype == final["v"].dtype == torch.float64 and out.shape == (T, 0, H)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("cls", CELLS, ids=lambda c: c.__name__)
def test_cell_matches_torch(cls, with_hx, backend):
    lstm = _is_lstm(cls)
    G = 4 if lstm else 1
    ours = cls(IN, H, backend=backend)
    theirs = (torch.nn.LSTMCell if lstm else torch.nn.RNNCell)(IN, H)
    results = {}
    for who, cell in (("ours", ours), ("theirs", theirs)):
        leaves = {"x": torch.randn(0, IN, requires_grad=True)}
        if with_hx:
            leaves.update({f"hx{i}": torch.randn(0, H, requires_grad=True) for i in range(2 if lstm else 1)})
        hx = ((leaves["hx0"], leaves["hx1"]) if lstm else leaves["hx0"]) if with_hx else None
        final = {}
        if who == "ours" and cls.dynamics != "plain":
            hidden, final = cell(leaves["x"], hx, None, step=1)
            for n, v in final.items():
                assert v.shape == (0, G * H) and v.dtype == torch.float32, f"final state {n}: {v.shape} {v.dtype}"
        else:
            hidden = cell(leaves["x"], hx)
        hidden = hidden if lstm else (hidden,)
        _backward([*hidden, *final.values()], leaves)
        assert not _zero_grads(cell.named_parameters()), f"{who}: parameters without a zero gradient"
        results[who] = [(t.shape, t.dtype) for t in hidden] + [(g.grad.shape, g.grad.dtype) for g in leaves.values()]
    assert results["ours"] == results["theirs"]


def _empty_rows(shape, role):
    d = ROW_DIM[role]
    return shape if d is None else shape[:d] + (0,) + shape[d + 1:]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.id)
def test_every_entry_point_returns_empty_rows(entry, backend):
    """Every entry of tests/entry_points.py (scans, recurrences, layers, modules, cells) with the batch axis of
    each batched argument made empty: each output has the shape of the batched call (B = 3, torch backend) with
    its batch axis empty and the same dtype; every argument gets a gradient of its shape, zero for the unbatched
    ones (weights), and every parameter a zero one."""
    if backend not in entry.backends:
        pytest.skip(f"{entry.id} has no {backend} backend")
    gen = torch.Generator().manual_seed(0)
    full = {a.name: torch.randn(a.shape, generator=gen).abs() for a in entry.args}
    call, _ = entry.build("torch")
    want = [(_empty_rows(tuple(o.shape), role), o.dtype) for o, role in call(**full)]

    call, params = entry.build(backend)
    leaves = {a.name: full[a.name][tuple(slice(0, 0) if d == ROW_DIM[a.role] else slice(None)
                                         for d in range(len(a.shape)))].clone().requires_grad_() for a in entry.args}
    outs = call(**leaves)
    assert [(tuple(o.shape), o.dtype) for o, _ in outs] == want
    _backward([o for o, _ in outs], leaves)
    nonzero = [n for n, leaf in leaves.items() if leaf.grad.any()]
    assert not nonzero, f"nonzero gradients of {nonzero} from an empty batch"
    assert not _zero_grads((str(i), p) for i, p in enumerate(params)), "parameters without a zero gradient"
