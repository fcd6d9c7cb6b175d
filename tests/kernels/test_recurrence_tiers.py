"""The three launch forms of the rebuilt recurrence (issue 12 item 6; KERNELS.md §2.5) under the interpreter:
Tier A (W_hhᵀ and h on chip), Tier B at P ∈ {1, 2, 4, 8} (one launch per step, P programs per batch tile)
and Tier C at P = 1 (one launch; its barrier code runs: the program's own arrival satisfies it), for every
cell, forward and every gradient (drive, W_hh, b_hh, h0, c0, carried state), fp32 / bf16 / fp16, B not a
multiple of BB, H not a multiple of HS, T = 1 and odd T — each against the float64 torch path on the same
(rounded) inputs. Tier C at P > 1 needs co-resident programs: it is checked on a GPU by
perf/recurrence_tiers.py (section check), and refused here with a clear error.

Tolerances come from tritonrnn.testing's model: fp32 roundings per step (LSTM_STEP_DEPTH / RNN_STEP_DEPTH)
over T steps (T·B for the weight gradients, sums over every row and step), plus — for half weights — one
rounding of h_{t-1} to the weight dtype per step (the product's input, as cuDNN's half LSTM) and one of
dz_{t+1} in the backward. ReLU and modReLU have a kink: a half-precision perturbation of z near it flips a
unit's slope, an O(1) change of a gradient that no rounding model bounds, so their half cases check the
forward only, on a 1-Lipschitz map (modReLU with b <= 0: for b > 0 its value jumps by 2b at z = 0); their
gradients are checked in fp32.
"""
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.profiles import budget
from tritonrnn.functional.recurrence import (lstm_recurrence, momentum_lstm_recurrence, nesterov_lstm_recurrence,
                                             rnn_recurrence)
from tritonrnn.testing import LSTM_STEP_DEPTH, RNN_STEP_DEPTH, assert_close

R = pytest.importorskip("tritonrnn.kernels.recurrence")
dispatch = R.dispatch

CELLS = ["lstm", "rnn_tanh", "rnn_relu", "rnn_modrelu", "nesterov_lstm", "momentum_lstm"]
KINKED = ("rnn_relu", "rnn_modrelu")
FORMS = [("A", 0), ("B", 1), ("B", 2), ("B", 4), ("B", 8), ("C", 1)]


def _call(cell, x, backend):
    """Run `cell` on the inputs x = (a, w, b, h0, c0, n0); returns its outputs (h, h_T[, c_T][, n_T])."""
    a, w, b, h0, c0, n0 = x
    if cell == "lstm":
        return lstm_recurrence(a, w, b, h0, c0, backend=backend)
    if cell.startswith("rnn_"):
        return rnn_recurrence(a, w, b, h0, nonlinearity=cell[4:], backend=backend)
    if cell == "nesterov_lstm":
        return nesterov_lstm_recurrence(a, w, b, h0, c0, n0, s=0.7, restart=3, step_offset=2, backend=backend)
    return momentum_lstm_recurrence(a, w, b, h0, c0, n0, mu=0.6, s=0.7, restart=None, step_offset=1,
                                    backend=backend)


def _inputs(cell, B, T, H, dtype, gen):
    G = 4 if "lstm" in cell else 1
    a = torch.randn(B, T, G * H, generator=gen)
    w = torch.randn(G * H, H, generator=gen) / H ** 0.5
    b = torch.randn(H if cell == "rnn_modrelu" else G * H, generator=gen) * 0.3
    if cell == "rnn_modrelu" and dtype != torch.float32:
        b = -b.abs()  # modReLU is continuous (and 1-Lipschitz) for b <= 0 only: see the module docstring
    h0, c0 = (torch.randn(B, H, generator=gen) * 0.5 for _ in range(2))
    n0 = torch.randn(B, G * H, generator=gen) * 0.3
    x = [a, w, b, h0, c0 if G == 4 else None, n0 if cell in ("nesterov_lstm", "momentum_lstm") else None]
    # every input rounded to the tested dtype once, so the reference sees exactly the kernel's inputs
    # (the carried state is fp32 by contract, SPEC §1.2)
    return [None if v is None else v.to(dtype if i < 5 else torch.float32) for i, v in enumerate(x)]


def _grads(outs, leaves, cots):
    torch.autograd.backward([o for o in outs], [c.to(o.dtype) for o, c in zip(outs, cots)])
    return [None if v is None else v.grad for v in leaves]


def _check(cell, form, B, T, H, dtype, seed, monkeypatch):
    tier, P = form
    monkeypatch.setenv("TRITONRNN_RECURRENCE_TIER", tier)
    monkeypatch.setenv("TRITONRNN_RECURRENCE_P", str(P))
    gen = torch.Generator().manual_seed(seed)
    x = _inputs(cell, B, T, H, dtype, gen)
    plan = dispatch.plan_for(H, B, x[1].dtype, x[0].device, "fwd")
    assert plan.tier == tier and (tier == "A" or -(-H // plan.HS) == P), (plan, H)
    leaves = [None if v is None else v.clone().requires_grad_() for v in x]
    ref_leaves = [None if v is None else v.double().requires_grad_() for v in x]
    got = _call(cell, leaves, "triton")
    want = _call(cell, ref_leaves, "torch")
    half = dtype != torch.float32
    depth = LSTM_STEP_DEPTH if "lstm" in cell else RNN_STEP_DEPTH
    # The carried state (output 3, gradient of n0) is fp32 but computed through the same half roundings of
    # h and dz: it is held to the half model too (one final rounding more than it has: an upper bound).
    for i, (g, r) in enumerate(zip(got, want)):
        r = r.detach()
        assert_close(g, r, dtype, steps=T, depth=depth, scale=max(1.0, float(r.abs().max())),
                     roundings=T if half else 0, msg=f"{cell} {form} output {i}")
    if half and cell in KINKED:
        return
    cots = [torch.randn(r.shape, generator=gen, dtype=torch.float64) for r in want]
    for name, g, r in zip("a w b h0 c0 n0".split(), _grads(got, leaves, cots), _grads(want, ref_leaves, cots)):
        if r is None:
            assert g is None, name
            continue
        assert_close(g, r, dtype, steps=T * B, depth=depth, scale=max(1.0, float(r.abs().max())),
                     roundings=2 * T if half else 0, msg=f"{cell} {form} gradient of {name}")


def _h_for(form):
    """H drawn so that it is not a multiple of the program's HS where the form allows: Tier A owns all H
    units (HS = next power of two); Tier B/C at P programs have HS = max(16, HK / P)."""
    tier, P = form
    if tier == "A":
        return st.integers(1, 40)
    lo = 16 * (P - 1) + 1 if P > 1 else 1
    return st.integers(lo, 16 * P)


@pytest.mark.parametrize("form", FORMS, ids=[f"{t}{p}" for t, p in FORMS])
# monkeypatch is shared across examples on purpose: every example sets both variables it reads
@settings(max_examples=budget(4), suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])
@given(data=st.data())
def test_forms_match_float64(form, data, monkeypatch):
    cell = data.draw(st.sampled_from(CELLS), label="cell")
    dtype = data.draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float16]), label="dtype")
    B = data.draw(st.sampled_from([1, 3, 17]), label="B")  # 17: two batch tiles, the second nearly empty
    T = data.draw(st.sampled_from([1, 2, 5]), label="T")
    H = data.draw(_h_for(form), label="H")
    _check(cell, form, B, T, H, dtype, data.draw(st.integers(0, 2 ** 16), label="seed"), monkeypatch)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("form", [("A", 0), ("B", 2), ("C", 1)], ids=["A", "B2", "C1"])
def test_every_cell_every_form_fp32(cell, form, monkeypatch):
    """The exhaustive corner the property test samples: each cell in each form once, B 17 (two batch
    tiles), H 21 (not a multiple of HS), T 3 (odd)."""
    _check(cell, form, 17, 3, 21, torch.float32, 5, monkeypatch)


def test_tiers_agree_bitwise_where_they_should(monkeypatch):
    """Two runs of a form are bitwise identical (no value atomics), forward and backward."""
    monkeypatch.setenv("TRITONRNN_RECURRENCE_TIER", "B")
    monkeypatch.setenv("TRITONRNN_RECURRENCE_P", "2")
    gen = torch.Generator().manual_seed(3)
    x = _inputs("lstm", 5, 3, 20, torch.float32, gen)
    cots = [torch.randn(s, generator=gen) for s in ((5, 3, 20), (5, 20), (5, 20))]
    runs = []
    for _ in range(2):
        leaves = [None if v is None else v.clone().requires_grad_() for v in x]
        outs = _call("lstm", leaves, "triton")
        runs.append(list(outs) + [g for g in _grads(outs, leaves, cots) if g is not None])
    for u, v in zip(*runs):
        assert torch.equal(u, v)


def test_tier_c_beyond_one_program_is_refused_off_gpu(monkeypatch):
    monkeypatch.setenv("TRITONRNN_RECURRENCE_TIER", "C")
    monkeypatch.setenv("TRITONRNN_RECURRENCE_P", "2")
    x = _inputs("lstm", 2, 2, 20, torch.float32, torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="co-resident"):
        _call("lstm", x, "triton")


def test_barrier_runs_and_counts():
    """The barrier code itself (P = 1 under the interpreter): it passes, counts every arrival, raises no
    error; a probe asked for P > 1 off a GPU is refused instead of deadlocking."""
    launch = R.launch
    assert launch.barrier_probe(1, 7, torch.device("cpu")) > 0
    with pytest.raises(RuntimeError, match="co-resident"):
        launch.barrier_probe(2, 3, torch.device("cpu"))


def test_missed_barrier_raises_instead_of_hanging():
    """A barrier whose peers never arrive (here: a counter target no program can reach) ends after the
    bounded spin with the error flag set, and the launcher turns the flag into a RuntimeError."""
    launch = R.launch
    cnt = torch.zeros(1, dtype=torch.int32)
    err = torch.zeros(1, dtype=torch.int32)
    # grid 1 but the kernel believes nothing about peers: feed a counter already past nothing — instead,
    # start the counter negative so the single program's arrival cannot reach the target
    cnt.fill_(-5)
    R.step._barrier_probe_kernel[(1,)](cnt, err, 2, 50)
    assert int(err.item()) == 1
    with pytest.raises(RuntimeError, match="missed the Tier C barrier"):
        launch._check_barrier(err, "test")


def test_double_backward_says_unsupported(monkeypatch):
    monkeypatch.setenv("TRITONRNN_RECURRENCE_TIER", "A")
    x = _inputs("lstm", 2, 2, 8, torch.float32, torch.Generator().manual_seed(0))
    leaves = [None if v is None else v.clone().requires_grad_() for v in x]
    out = _call("lstm", leaves, "triton")[0]
    # create_graph=True is refused at once (kernels/_ops.refuse_double_backward), never a wrong number later
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        torch.autograd.grad(out.sum(), leaves[1], create_graph=True)


@pytest.mark.parametrize("H,dtype,gates,tier", [
    (64, torch.float32, 4, "A"), (65, torch.float32, 4, "B"), (64, torch.bfloat16, 4, "A"),
    (65, torch.bfloat16, 4, "B"), (128, torch.bfloat16, 1, "A"), (129, torch.float16, 1, "B")])
def test_auto_never_picks_tier_c_off_gpu(H, dtype, gates, tier, monkeypatch):
    """`auto` on the interpreter (no SM count): Tier A where W_hhᵀ fits on chip (a half LSTM to H 64, a half
    RNN — a quarter of the slice — to H 128), else Tier B; never C. The cell's gate count reaches the rule."""
    monkeypatch.delenv("TRITONRNN_RECURRENCE_TIER", raising=False)
    plan = dispatch.plan_for(H, 128, dtype, torch.device("cpu"), "fwd", gates=gates)
    assert plan.tier == tier


def test_step_graphs_capture_on_second_sight_and_replay(monkeypatch):
    """Tier B's graph cache (no CUDA here, so torch.cuda's graph API is replaced by a recorder): the first call
    of a key runs the launches eagerly (and so JIT-compiles before any capture), the second captures and
    replays, later ones replay only; the LRU bounds the graphs kept."""
    events = []

    class FakeGraph:
        def __init__(self):
            self.id = len([e for e in events if e[0] == "capture"])

        def replay(self):
            events.append(("replay", self.id))

    class Capture:
        def __init__(self, graph):
            events.append(("capture", graph.id))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", Capture)
    graphs = R.launch.StepGraphs(size=2)
    monkeypatch.setattr(graphs, "usable", lambda device: True)
    dev = torch.device("cpu")

    def steps():
        events.append(("launch",))

    graphs.run("k1", dev, steps)
    assert events == [("launch",)]  # first sight: eager
    graphs.run("k1", dev, steps)
    assert events[1:] == [("capture", 0), ("launch",), ("replay", 0)]  # second: capture, then replay
    events.clear()
    graphs.run("k1", dev, steps)
    assert events == [("replay", 0)]
    for key in ("k2", "k3"):  # two more keys, each seen twice: k1 is evicted (LRU of 2)
        graphs.run(key, dev, steps)
        graphs.run(key, dev, steps)
    assert list(graphs.graphs) == ["k2", "k3"]
    events.clear()
    graphs.run("k1", dev, steps)  # seen before, graph evicted: captured again
    assert events[0][0] == "capture"
