"""tritonrnn.nn modules (SPEC §1.5) against the step-by-step reference and against torch.nn.

Every comparison covers outputs, h_n, c_n, the final momentum states and the gradients of the input, every
parameter and every initial state (hx and the momentum state).
"""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import tritonrnn
import tritonrnn.nn as tnn
from tests.nn.common import BACKENDS, FAMILIES, LSTM_FAMILY, family_id, gates, random_state, reference
from tests.tolerance import assert_close


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def _make(cls, hyper, *args, backend, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    return cls(*args, **kw, **hyper, backend=backend, dtype=dtype)


def _loss(tensors, seed=1):
    """A weighted sum of everything returned, so that no output's gradient can hide behind another's."""
    g = torch.Generator().manual_seed(seed)
    return sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in tensors)


def _compare_with_reference(module, x, h0, c0, state, step_offset, dtype):
    leaves_state = {k: v.clone().requires_grad_(True) for k, v in state.items()}
    x = x.clone().requires_grad_(True)
    h0 = h0.clone().requires_grad_(True)
    hx = h0 if c0 is None else (h0, c0.clone().requires_grad_(True))
    c0 = None if c0 is None else hx[1]
    out, hidden, final = module(x, hx, state=leaves_state, step_offset=step_offset, return_state=True)
    h_n, c_n = hidden if c0 is not None else (hidden, None)
    ref_out, ref_h, ref_c, ref_final = reference(module, x, h0, c0, leaves_state, step_offset)

    T = x.shape[0]
    steps = T * (x.shape[2] + module.hidden_size) * module.num_layers
    assert_close(out, ref_out, dtype, steps)
    assert_close(h_n, ref_h, dtype, steps)
    if c0 is not None:
        assert_close(c_n, ref_c, dtype, steps)
    assert set(final) == set(ref_final)
    for name in final:
        assert final[name].dtype == torch.promote_types(dtype, torch.float32)
        assert_close(final[name], ref_final[name], dtype, steps)

    leaves = [x, h0] + ([c0] if c0 is not None else []) + list(leaves_state.values()) + list(module.parameters())
    names = ["input", "h0"] + (["c0"] if c0 is not None else []) + [f"state[{k}]" for k in leaves_state] + \
        [n for n, _ in module.named_parameters()]
    got = torch.autograd.grad(_loss([out, h_n] + ([c_n] if c0 is not None else []) + list(final.values())), leaves)
    want = torch.autograd.grad(_loss([ref_out, ref_h] + ([ref_c] if c0 is not None else []) + list(ref_final.values())),
                               leaves)
    for name, a, b in zip(names, got, want):
        assert_close(a, b, dtype, steps, msg=f"gradient of {name}")


@pytest.mark.parametrize("entry", FAMILIES, ids=family_id)
@pytest.mark.parametrize("config", [
    dict(num_layers=2, bidirectional=True, step_offset=1),
    dict(num_layers=1, bidirectional=False, step_offset=0, bias=False),
], ids=["2layer-bidir-offset", "bias-free"])
def test_module_matches_reference(entry, config, backend):
    cls, _, hyper = entry
    config = dict(config)
    step_offset = config.pop("step_offset")
    T, B, n_in, H = 5, 3, 4, 3
    module = _make(cls, hyper, n_in, H, backend=backend, **config)
    h0, c0, state = random_state(module, B, torch.float64)
    x = torch.randn(T, B, n_in, dtype=torch.float64)
    _compare_with_reference(module, x, h0, c0, state, step_offset, torch.float64)


@pytest.mark.parametrize("entry", FAMILIES, ids=family_id)
def test_module_matches_reference_float32(entry, backend):
    cls, _, hyper = entry
    T, B, n_in, H = 6, 2, 3, 4
    module = _make(cls, hyper, n_in, H, backend=backend, dtype=torch.float32)
    h0, c0, state = random_state(module, B, torch.float32)
    x = torch.randn(T, B, n_in)
    _compare_with_reference(module, x, h0, c0, state, 2, torch.float32)


@pytest.mark.parametrize("entry", LSTM_FAMILY, ids=family_id)
def test_projection_matches_reference(entry, backend):
    cls, _, hyper = entry
    module = _make(cls, hyper, 3, 5, num_layers=2, proj_size=2, backend=backend)
    h0, c0, state = random_state(module, 2, torch.float64)
    assert h0.shape[-1] == 2 and c0.shape[-1] == 5
    _compare_with_reference(module, torch.randn(4, 2, 3, dtype=torch.float64), h0, c0, state, 1, torch.float64)


@given(entry=st.sampled_from(FAMILIES), T=st.integers(1, 6), B=st.integers(1, 3), n_in=st.integers(1, 4),
       H=st.integers(1, 5), num_layers=st.integers(1, 2), bidirectional=st.booleans(), bias=st.booleans(),
       step_offset=st.integers(0, 4), seed=st.integers(0, 2 ** 16))
def test_module_matches_reference_on_random_shapes(entry, T, B, n_in, H, num_layers, bidirectional, bias, step_offset,
                                                   seed):
    # T = 1, odd T, B = 1, H not a power of two, offsets across the restart period (STYLE.md, tests)
    cls, _, hyper = entry
    module = _make(cls, hyper, n_in, H, num_layers=num_layers, bidirectional=bidirectional, bias=bias,
                   backend=BACKENDS[0])
    torch.manual_seed(seed)
    h0, c0, state = random_state(module, B, torch.float64)
    x = torch.randn(T, B, n_in, dtype=torch.float64)
    _compare_with_reference(module, x, h0, c0, state, step_offset, torch.float64)


# --- packed sequences: each sequence's states at its own last step ------------------------------------------

@pytest.mark.parametrize("entry", FAMILIES, ids=family_id)
def test_packed_sequence_matches_reference_per_sequence(entry, backend):
    cls, _, hyper = entry
    lengths = torch.tensor([3, 5, 1, 3])
    T, B, n_in, H = 5, 4, 2, 3
    module = _make(cls, hyper, n_in, H, num_layers=2, bidirectional=True, backend=backend)
    h0, c0, state = random_state(module, B, torch.float64)
    x = torch.randn(T, B, n_in, dtype=torch.float64)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    hx = h0 if c0 is None else (h0, c0)
    out, hidden, final = module(packed, hx, state=state, step_offset=1, return_state=True)
    assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
    assert torch.equal(out.batch_sizes, packed.batch_sizes) and torch.equal(out.sorted_indices, packed.sorted_indices)
    padded, out_lengths = pad_packed_sequence(out)
    assert torch.equal(out_lengths, lengths)
    h_n, c_n = hidden if c0 is not None else (hidden, None)
    steps = T * (n_in + H) * 2
    for b, n in enumerate(lengths.tolist()):
        ref_out, ref_h, ref_c, ref_final = reference(
            module, x[:n, b:b + 1], h0[:, b:b + 1], None if c0 is None else c0[:, b:b + 1],
            {k: v[:, b:b + 1] for k, v in state.items()}, 1)
        assert_close(padded[:n, b:b + 1], ref_out, torch.float64, steps, msg=f"output of sequence {b}")
        assert_close(h_n[:, b:b + 1], ref_h, torch.float64, steps, msg=f"h_n of sequence {b}")
        if c0 is not None:
            assert_close(c_n[:, b:b + 1], ref_c, torch.float64, steps, msg=f"c_n of sequence {b}")
        for name in final:
            assert_close(final[name][:, b:b + 1], ref_final[name], torch.float64, steps, msg=f"{name} of sequence {b}")


# --- parity with torch.nn at mu = 0, s = 1 -------------------------------------------------------------------

PARITY = [
    dict(),
    dict(num_layers=2, bidirectional=True),
    dict(batch_first=True, num_layers=2),
    dict(bias=False, bidirectional=True),
]


def _parity_pairs(lstm):
    if lstm:
        return [(tnn.LSTM, {}), (tnn.MomentumLSTM, dict(mu=0.0, s=1.0)), (tnn.SRLSTM, dict(s=1.0, restart=1))]
    return [(tnn.RNN, {}), (tnn.MomentumRNN, dict(mu=0.0, s=1.0)), (tnn.SRRNN, dict(s=1.0, restart=1))]


def _copy_of(torch_module, cls, hyper, backend, **kw):
    ours = cls(torch_module.input_size, torch_module.hidden_size, **kw, **hyper, backend=backend)
    ours.load_state_dict(torch_module.state_dict(), strict=True)
    return ours


def _assert_parity(ours, theirs, inp, hx, steps):
    out, hidden = ours(inp, hx)
    ref_out, ref_hidden = theirs(inp, hx)
    if isinstance(out, torch.nn.utils.rnn.PackedSequence):
        assert torch.equal(out.batch_sizes, ref_out.batch_sizes)
        out, ref_out = out.data, ref_out.data
    assert out.shape == ref_out.shape
    assert_close(out, ref_out, torch.float32, steps)
    hidden = hidden if isinstance(hidden, tuple) else (hidden,)
    ref_hidden = ref_hidden if isinstance(ref_hidden, tuple) else (ref_hidden,)
    for a, b in zip(hidden, ref_hidden):
        assert a.shape == b.shape
        assert_close(a, b, torch.float32, steps)
    got = torch.autograd.grad(_loss([out, *hidden]), list(ours.parameters()))
    want = torch.autograd.grad(_loss([ref_out, *ref_hidden]), list(theirs.parameters()))
    for (name, _), a, b in zip(ours.named_parameters(), got, want):
        assert_close(a, b, torch.float32, steps, msg=f"gradient of {name}")


@pytest.mark.parametrize("kw", PARITY, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()) or "default")
@pytest.mark.parametrize("pair", _parity_pairs(True), ids=lambda p: p[0].__name__)
def test_lstm_parity_with_torch(pair, kw, backend):
    cls, hyper = pair
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(3, 4, **kw)
    ours = _copy_of(theirs, cls, hyper, backend, **kw)
    L = theirs.num_layers * (2 if theirs.bidirectional else 1)
    x = torch.randn(5, 2, 3)
    if kw.get("batch_first"):
        x = x.transpose(0, 1).contiguous()
    hx = (torch.randn(L, 2, 4), torch.randn(L, 2, 4))
    _assert_parity(ours, theirs, x, hx, 5 * 8 * theirs.num_layers)
    _assert_parity(ours, theirs, x, None, 5 * 8 * theirs.num_layers)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("kw", PARITY, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()) or "default")
@pytest.mark.parametrize("pair", _parity_pairs(False), ids=lambda p: p[0].__name__)
def test_rnn_parity_with_torch(pair, kw, nonlinearity, backend):
    cls, hyper = pair
    torch.manual_seed(0)
    theirs = torch.nn.RNN(3, 4, nonlinearity=nonlinearity, **kw)
    ours = _copy_of(theirs, cls, hyper, backend, nonlinearity=nonlinearity, **kw)
    L = theirs.num_layers * (2 if theirs.bidirectional else 1)
    x = torch.randn(5, 2, 3)
    if kw.get("batch_first"):
        x = x.transpose(0, 1).contiguous()
    _assert_parity(ours, theirs, x, torch.randn(L, 2, 4), 5 * 8 * theirs.num_layers)


@pytest.mark.parametrize("pair", _parity_pairs(True), ids=lambda p: p[0].__name__)
def test_lstm_parity_unbatched_packed_projection(pair, backend):
    cls, hyper = pair
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2)
    ours = _copy_of(theirs, cls, hyper, backend, num_layers=2, bidirectional=True, proj_size=2)
    steps = 5 * 8 * 2
    # unbatched (T, in) with an unbatched hx
    _assert_parity(ours, theirs, torch.randn(5, 3), (torch.randn(4, 2), torch.randn(4, 4)), steps)
    # a PackedSequence, unsorted lengths, with hx in the caller's batch order
    x = torch.randn(5, 3, 3)
    packed = pack_padded_sequence(x, torch.tensor([2, 5, 3]), enforce_sorted=False)
    _assert_parity(ours, theirs, packed, (torch.randn(4, 3, 2), torch.randn(4, 3, 4)), steps)
    _assert_parity(ours, theirs, packed, None, steps)


@pytest.mark.parametrize("pair", _parity_pairs(False), ids=lambda p: p[0].__name__)
def test_rnn_parity_unbatched_packed(pair, backend):
    cls, hyper = pair
    torch.manual_seed(0)
    theirs = torch.nn.RNN(3, 4, num_layers=2, bidirectional=True)
    ours = _copy_of(theirs, cls, hyper, backend, num_layers=2, bidirectional=True)
    _assert_parity(ours, theirs, torch.randn(5, 3), torch.randn(4, 4), 80)
    packed = pack_padded_sequence(torch.randn(4, 3, 3), torch.tensor([4, 4, 1]), enforce_sorted=True)
    _assert_parity(ours, theirs, packed, torch.randn(4, 3, 4), 80)


# --- parameters, state_dict, initialisation -----------------------------------------------------------------

@pytest.mark.parametrize("entry", FAMILIES, ids=family_id)
def test_state_dict_round_trip_with_torch(entry):
    cls, _, _ = entry
    lstm = gates(cls(2, 3)) == 4
    kw = dict(num_layers=2, bidirectional=True, **(dict(proj_size=2) if lstm else {}))
    theirs = (torch.nn.LSTM if lstm else torch.nn.RNN)(5, 3, **kw)
    ours = cls(5, 3, **kw)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in theirs.named_parameters()]
    ours.load_state_dict(theirs.state_dict(), strict=True)
    for (_, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert torch.equal(a, b)
    theirs.load_state_dict(ours.state_dict(), strict=True)


@pytest.mark.parametrize("entry", FAMILIES, ids=family_id)
def test_initialisation_like_torch(entry):
    cls, _, _ = entry
    torch.manual_seed(0)
    module = cls(6, 16)
    bound = 1 / 16 ** 0.5
    for name, p in module.named_parameters():
        assert p.abs().max() <= bound, name
        assert p.abs().max() > 0.8 * bound, name  # spread over the range, not left at zero


def test_package_exports_every_module_and_cell():
    for name in tritonrnn._NN + tritonrnn._CELLS:
        assert getattr(tritonrnn, name) is getattr(tnn, name)


# --- truncated BPTT -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", FAMILIES, ids=family_id)
def test_two_halves_with_carried_state_equal_one_call(entry, backend):
    cls, _, hyper = entry
    module = _make(cls, hyper, 3, 4, num_layers=2, backend=backend, batch_first=True)
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    full, hidden_full, state_full = module(x, return_state=True)
    first, hidden, state = module(x[:, :3], return_state=True)
    second, hidden_end, state_end = module(x[:, 3:], hidden, state=state, step_offset=3, return_state=True)
    torch.testing.assert_close(torch.cat([first, second], dim=1), full, rtol=1e-12, atol=1e-12)
    hidden_full = hidden_full if isinstance(hidden_full, tuple) else (hidden_full,)
    hidden_end = hidden_end if isinstance(hidden_end, tuple) else (hidden_end,)
    for a, b in zip(hidden_end, hidden_full):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert set(state_end) == set(state_full)
    for name in state_full:
        torch.testing.assert_close(state_end[name], state_full[name], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("entry", [LSTM_FAMILY[3], LSTM_FAMILY[5]], ids=family_id)
def test_unbatched_input_with_state_equals_a_batch_of_one(entry, backend):
    cls, _, hyper = entry
    module = _make(cls, hyper, 3, 4, num_layers=2, bidirectional=True, backend=backend)
    h0, c0, state = random_state(module, 1, torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)
    out, (h, c), final = module(x, (h0[:, 0], c0[:, 0]), state={k: v[:, 0] for k, v in state.items()},
                                step_offset=1, return_state=True)
    ref_out, (ref_h, ref_c), ref_final = module(x[:, None], (h0, c0), state=state, step_offset=1, return_state=True)
    assert out.shape == (5, 8) and h.shape == (4, 4)
    torch.testing.assert_close(out, ref_out[:, 0])
    torch.testing.assert_close(c, ref_c[:, 0])
    for name in ref_final:
        assert final[name].shape == (4, 16)
        torch.testing.assert_close(final[name], ref_final[name][:, 0])


def test_restart_offset_changes_the_result(backend):
    # The step offset must reach the schedule: at offset 1 the first coefficient is 1/4, not 0.
    module = _make(tnn.SRLSTM, dict(s=0.6, restart=2), 2, 3, backend=backend)
    x = torch.randn(3, 1, 2, dtype=torch.float64)
    state = {"v": torch.ones(1, 1, 12, dtype=torch.float64)}
    a, _ = module(x, state=state, step_offset=0)
    b, _ = module(x, state=state, step_offset=1)
    assert not torch.allclose(a, b)


# --- hyper-parameters, dropout, T = 0 ---------------------------------------------------------------------------

def test_hyper_parameters_can_change_between_calls(backend):
    module = _make(tnn.AdamLSTM, {}, 2, 3, backend=backend)
    assert module.hyper_parameters() == dict(mu=0.6, s=0.6, beta=0.1, eps=1e-8)   # SPEC §1.2 defaults
    x = torch.randn(4, 2, 2, dtype=torch.float64)
    before, _ = module(x)
    module.beta = 0.5
    after, _ = module(x)
    fresh = _make(tnn.AdamLSTM, dict(beta=0.5), 2, 3, backend=backend)
    torch.testing.assert_close(after, fresh(x)[0])
    assert not torch.allclose(before, after)
    module.beta = 1.0
    with pytest.raises(ValueError, match="beta"):
        module(x)


@pytest.mark.parametrize("cls,expected", [
    (tnn.MomentumLSTM, dict(mu=0.6, s=0.6)), (tnn.SRLSTM, dict(s=0.6, restart=2)),
    (tnn.RMSPropRNN, dict(s=0.6, beta=0.9, eps=1e-8)), (tnn.NesterovLSTM, dict(s=1.0, restart=2)),
    (tnn.LSTM, {}),
])
def test_spec_defaults(cls, expected):
    assert cls(2, 3).hyper_parameters() == expected


def test_dropout_between_layers_only(backend):
    module = _make(tnn.MomentumLSTM, {}, 3, 4, num_layers=2, dropout=0.5, backend=backend)
    plain = _make(tnn.MomentumLSTM, {}, 3, 4, num_layers=2, backend=backend)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    module.eval()
    torch.testing.assert_close(module(x)[0], plain(x)[0])
    module.train()
    torch.manual_seed(1)
    a = module(x)[0]
    assert not torch.allclose(a, plain(x)[0])
    with pytest.warns(UserWarning, match="dropout"):
        tnn.MomentumLSTM(3, 4, dropout=0.5)


@pytest.mark.parametrize("entry", FAMILIES, ids=family_id)
def test_empty_sequence_returns_the_initial_states(entry, backend):
    cls, _, hyper = entry
    module = _make(cls, hyper, 3, 4, num_layers=2, bidirectional=True, backend=backend)
    h0, c0, state = random_state(module, 2, torch.float64)
    out, hidden, final = module(torch.zeros(0, 2, 3, dtype=torch.float64), h0 if c0 is None else (h0, c0),
                                state=state, return_state=True)
    assert out.shape == (0, 2, 8)
    torch.testing.assert_close(hidden[0] if c0 is not None else hidden, h0)
    for name in state:
        torch.testing.assert_close(final[name], state[name])


# --- bad arguments ---------------------------------------------------------------------------------------------

def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="mu"):
        tnn.MomentumLSTM(2, 3, mu=1.0)
    with pytest.raises(ValueError, match="beta"):
        tnn.AdamLSTM(2, 3, beta=-0.1)
    with pytest.raises(ValueError, match="eps"):
        tnn.RMSPropRNN(2, 3, eps=0.0)
    with pytest.raises(ValueError, match="restart"):
        tnn.SRLSTM(2, 3, restart=0)
    with pytest.raises(TypeError, match="restart"):
        tnn.SRRNN(2, 3, restart=1.5)
    with pytest.raises(TypeError, match="mu"):
        tnn.SRLSTM(2, 3, mu=0.5)           # the restart family has a schedule, not a constant mu
    with pytest.raises(ValueError, match="backend"):
        tnn.MomentumLSTM(2, 3, backend="cuda")
    with pytest.raises(ValueError, match="proj_size"):
        tnn.MomentumLSTM(2, 3, proj_size=3)
    with pytest.raises(ValueError, match="dropout"):
        tnn.LSTM(2, 3, num_layers=2, dropout=1.5)
    with pytest.raises(ValueError, match="nonlinearity"):
        tnn.MomentumRNN(2, 3, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="hidden_size"):
        tnn.AdamRNN(2, 0)


def test_bad_forward_arguments(backend):
    module = tnn.MomentumLSTM(3, 4, num_layers=2, backend=backend)
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match="input"):
        module(torch.randn(5, 2, 3, 1))
    with pytest.raises(ValueError, match="input_size"):
        module(torch.randn(5, 2, 4))
    with pytest.raises(TypeError, match="dtype"):
        module(x.double())
    with pytest.raises(TypeError, match="hx"):
        module(x, torch.zeros(2, 2, 4))
    with pytest.raises(ValueError, match=r"hx\[0\]"):
        module(x, (torch.zeros(2, 3, 4), torch.zeros(2, 2, 4)))
    with pytest.raises(TypeError, match=r"hx\[1\]"):
        module(x, (torch.zeros(2, 2, 4), torch.zeros(2, 2, 4, dtype=torch.float64)))
    with pytest.raises(ValueError, match=r"hx\[0\]"):
        module(x, (torch.zeros(2, 2, 4, device="meta"), torch.zeros(2, 2, 4)))
    with pytest.raises(ValueError, match=r"hx\[0\]"):   # unbatched input with a batched hx
        module(torch.randn(5, 3), (torch.zeros(2, 2, 4), torch.zeros(2, 2, 4)))
    with pytest.raises(ValueError, match="state has the key 'm'"):
        module(x, state={"m": torch.zeros(2, 2, 16)})
    with pytest.raises(ValueError, match=r"state\['v'\]"):
        module(x, state={"v": torch.zeros(2, 2, 4)})
    with pytest.raises(TypeError, match=r"state\['v'\]"):
        module(x, state={"v": torch.zeros(2, 2, 16, dtype=torch.float16)})
    with pytest.raises(TypeError, match="state"):
        module(x, state=[torch.zeros(2, 2, 16)])
    with pytest.raises(ValueError, match="step_offset"):
        module(x, step_offset=-1)
    rnn = tnn.MomentumRNN(3, 4, backend=backend)
    with pytest.raises(ValueError, match="hx"):
        rnn(x, torch.zeros(1, 2, 5))


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["LSTM", "MomentumLSTM", "SRRNN"])
def test_torch_backend_trains_on_cuda(name):
    """The native (cuDNN) path backpropagates: cuDNN's RNN backward needs the forward run with train=True
    (the first GPU run found a train=False call that only CPU tolerated)."""
    torch.manual_seed(0)
    module = getattr(tritonrnn.nn, name)(3, 8, backend="torch").cuda()
    cpu = getattr(tritonrnn.nn, name)(3, 8, backend="torch")
    cpu.load_state_dict(module.state_dict())
    x = torch.randn(5, 2, 3)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # fp32 math on both sides
        out, _ = module(x.cuda())
        out.square().sum().backward()
    ref, _ = cpu(x)
    ref.square().sum().backward()
    for (name_, p), q in zip(module.named_parameters(), cpu.parameters()):
        assert_close(p.grad.cpu(), q.grad, torch.float32, 5 * 2, q.grad.abs().max().item(), name_)
