"""tritonrnn.nn.checkpoint.checkpoint_sequence: segments under torch.utils.checkpoint equal one full call.

float64 on the torch backend, so the comparison is to rounding: the segmented call carries hx, the momentum
state and step_offset (the restart families' schedule depends on it) across segment boundaries with the
gradient flowing through them, and must give the full call's outputs, final states and gradients of the
input, hx, state and every parameter.
"""
import pytest
import torch

import tritonrnn.nn as tnn
from tritonrnn.nn.checkpoint import checkpoint_sequence
from tritonrnn.reference import STATE_NAMES

from .common import FAMILIES, family_id

TOL = dict(rtol=1e-10, atol=1e-12)


def _inputs(module, T, B, batched, seed=0):
    g = torch.Generator().manual_seed(seed)
    kw = dict(dtype=torch.float64, generator=g)
    LD = module.num_layers
    G = 4 if module._is_lstm else 1
    H = module.hidden_size
    lead = (LD, B) if batched else (LD,)
    if not batched:
        x = torch.randn(T, module.input_size, **kw)
    elif module.batch_first:
        x = torch.randn(B, T, module.input_size, **kw)
    else:
        x = torch.randn(T, B, module.input_size, **kw)
    h0 = torch.randn(*lead, H, **kw) * 0.5
    hx = (h0, torch.randn(*lead, H, **kw) * 0.5) if module._is_lstm else h0
    state = {n: torch.rand(*lead, G * H, **kw) for n in STATE_NAMES[module.dynamics]}
    return x, hx, state


def _leaves(x, hx, state):
    x = x.clone().requires_grad_(True)
    hx = tuple(h.clone().requires_grad_(True) for h in hx) if isinstance(hx, tuple) \
        else hx.clone().requires_grad_(True)
    state = {k: v.clone().requires_grad_(True) for k, v in state.items()}
    return x, hx, state


def _flat(hx):
    return list(hx) if isinstance(hx, tuple) else [hx]


def _run(module, call, x, hx, state):
    x, hx, state = _leaves(x, hx, state)
    module.zero_grad(set_to_none=True)
    out, hidden, final = call(x, hx, state)
    w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    loss = (out * w).sum() + sum((h ** 2).sum() for h in _flat(hidden)) + sum(v.sum() for v in final.values())
    loss.backward()
    tensors = [out, *_flat(hidden), *[final[k] for k in sorted(final)]]
    grads = [x.grad, *[h.grad for h in _flat(hx)], *[state[k].grad for k in sorted(state)]]
    grads += [p.grad for p in module.parameters()]
    return [t.detach() for t in tensors], grads


@pytest.mark.parametrize("entry", FAMILIES, ids=family_id)
@pytest.mark.parametrize("layout", ["time_major", "batch_first", "unbatched"])
def test_segments_equal_one_call(entry, layout):
    cls, _, hyper = entry
    torch.manual_seed(0)
    module = cls(3, 5, num_layers=2, batch_first=layout == "batch_first", dtype=torch.float64, backend="torch",
                 **hyper)
    T, segment, offset = 13, 4, 7  # a partial last segment; a step offset the restart schedule sees
    x, hx, state = _inputs(module, T, 2, layout != "unbatched")

    def full(x, hx, state):
        return module(x, hx, state=state, step_offset=offset, return_state=True)

    def segmented(x, hx, state):
        return checkpoint_sequence(module, x, hx, segment=segment, state=state, step_offset=offset,
                                   return_state=True)

    want, want_grads = _run(module, full, x, hx, state)
    got, got_grads = _run(module, segmented, x, hx, state)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOL)
    for a, b in zip(got_grads, want_grads):
        assert a is not None and b is not None
        torch.testing.assert_close(a, b, **TOL)


def test_step_offset_is_carried():
    """Restart family: a segmented call whose segments all restarted the schedule at 0 would differ."""
    torch.manual_seed(0)
    module = tnn.SRLSTM(2, 4, restart=3, dtype=torch.float64, backend="torch")
    x = torch.randn(10, 1, 2, dtype=torch.float64)
    want = module(x)[0]
    got = checkpoint_sequence(module, x, segment=4)[0]
    torch.testing.assert_close(got, want, **TOL)
    # the same segments without the offset are a different computation
    restarted = torch.cat([module(x[i:i + 4])[0] for i in range(0, 10, 4)])
    assert not torch.allclose(restarted, want)


def test_defaults_return_like_the_module():
    module = tnn.MomentumRNN(2, 3, dtype=torch.float64, backend="torch")
    x = torch.randn(9, 2, 2, dtype=torch.float64)
    out, h = checkpoint_sequence(module, x, segment=4)
    want_out, want_h = module(x)
    torch.testing.assert_close(out, want_out, **TOL)
    torch.testing.assert_close(h, want_h, **TOL)


def test_rejects_what_it_cannot_split():
    module = tnn.MomentumLSTM(2, 3, bidirectional=True, backend="torch")
    with pytest.raises(ValueError, match="bidirectional"):
        checkpoint_sequence(module, torch.randn(6, 1, 2), segment=2)
    module = tnn.MomentumLSTM(2, 3, backend="torch")
    with pytest.raises(ValueError, match="segment"):
        checkpoint_sequence(module, torch.randn(6, 1, 2), segment=0)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(6, 2, 2), [6, 4])
    with pytest.raises(TypeError, match="PackedSequence"):
        checkpoint_sequence(module, packed, segment=2)


def test_checkpoint_lowers_peak_memory():
    """A training step of MomentumLSTM keeps every step's activations (O(T)); segments keep one segment's
    plus the output. Measured as perf/memory.py does (fresh process, peak resident set of the step); there,
    at T = 1000, B = 16, H = 64, segments of 100 took the peak from 64 MB to 21 MB."""
    pytest.importorskip("tritonrnn.perf.memory")
    from tritonrnn.perf.memory import measure_point

    # T = 1500: the activations (~95 MB) dwarf the resident-set noise of the allocator (~10 MB seen in CI at
    # T = 600, where one run measured 23.8 MB segmented against 38.0 MB plain). Expected ratio ~1/3.
    shape = dict(seq_len=1500, batch=16, input_size=16, hidden_size=64)
    plain = measure_point("MomentumLSTM", "torch", **shape)["peak_mb"]
    segmented = measure_point("MomentumLSTM", "torch", **shape, segment=100)["peak_mb"]
    assert plain > 60, plain  # the measurement sees the activations at all
    assert segmented < 0.6 * plain, (segmented, plain)
