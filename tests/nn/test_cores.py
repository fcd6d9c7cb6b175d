"""The issue #8 modules (tritonrnn.nn.cores): the orthogonal RNN (DTRIV) and IndRNN families, five input
dynamics each, against the step-by-step reference (tritonrnn.reference.recurrent_network with core
"rnn_modrelu" / "indrnn") and against each other's backends.

The reference cannot take the orthogonal parametrization, so it gets the materialised parameters
{name: getattr(module, name) for name in module._flat_weights_names}; U = weight_hh is then a function of
`parametrizations.weight_hh_l{k}.original`, and the gradients of every module parameter (original, the
modReLU bias, IndRNN's w, ...) are compared through that same graph.
"""
import math

import pytest
import torch
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import tritonrnn
import tritonrnn.nn as tnn
from tests.tolerance import EPS32, assert_close, tolerance
from tritonrnn.reference import STATE_NAMES, recurrent_network

F64 = torch.float64
HYPER = {
    "plain": {},
    "momentum": dict(mu=0.7, s=0.5),
    "restart": dict(s=0.6, restart=3),
    "adam": dict(mu=0.6, s=0.6, beta=0.1, eps=1e-8),
    "rmsprop": dict(s=0.6, beta=0.9, eps=1e-8),
}
ORTHOGONAL = [(tnn.OrthogonalRNN, "plain"), (tnn.MomentumOrthogonalRNN, "momentum"), (tnn.SROrthogonalRNN, "restart"),
              (tnn.AdamOrthogonalRNN, "adam"), (tnn.RMSPropOrthogonalRNN, "rmsprop")]
INDRNN = [(tnn.IndRNN, "plain"), (tnn.MomentumIndRNN, "momentum"), (tnn.SRIndRNN, "restart"), (tnn.AdamIndRNN, "adam"),
          (tnn.RMSPropIndRNN, "rmsprop")]
ALL = ORTHOGONAL + INDRNN


def cid(entry):
    return entry[0].__name__


def _core(module):
    return "rnn_modrelu" if hasattr(module, "rebase_") else "indrnn"


def _make(cls, *args, seed=0, dtype=F64, backend="torch", **kw):
    """A module with every parameter away from its initial special values: the modReLU bias large enough
    to open the dead zone, IndRNN's w in (-1.2, 1.2) and nonzero biases (both initialise them near zero)."""
    torch.manual_seed(seed)
    module = cls(*args, **kw, **HYPER[cls.dynamics], dtype=dtype, backend=backend)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name in module._flat_weights_names:
            if parametrize.is_parametrized(module, name):
                continue
            p = getattr(module, name)
            if name.startswith("bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=F64))
            elif name.startswith("weight_hh"):  # IndRNN's w
                p.copy_(2.4 * torch.rand(p.shape, generator=g, dtype=F64) - 1.2)
    return module


def _params(module):
    return {name: getattr(module, name) for name in module._flat_weights_names}


def _reference(module, x, h0=None, state=None, step_offset=0, params=None):
    """recurrent_network on time-major batched x with the module's materialised parameters."""
    return recurrent_network(x, params or _params(module), num_layers=module.num_layers,
                             bidirectional=module.bidirectional, core=_core(module), dynamics=module.dynamics,
                             **module.hyper_parameters(), h0=h0, state=state, step_offset=step_offset)


def _random_state(module, B, dtype=F64, gen=None):
    LD = module.num_layers * (2 if module.bidirectional else 1)
    H = module.hidden_size
    gen = gen or torch.Generator().manual_seed(7)
    h0 = 0.5 * torch.randn(LD, B, H, generator=gen, dtype=F64).to(dtype)
    if _core(module) == "indrnn":
        h0 = h0.abs()  # a relu state
    sdt = torch.promote_types(dtype, torch.float32)
    state = {n: torch.rand(LD, B, H, generator=gen, dtype=F64).to(sdt) for n in STATE_NAMES[module.dynamics]}
    return h0, state


def _loss(tensors, seed=1):
    g = torch.Generator().manual_seed(seed)
    return sum((t * torch.randn(t.shape, generator=g, dtype=F64).to(t.dtype)).sum() for t in tensors)


def _steps(module, T, n_in):
    return T * (n_in + module.hidden_size) * module.num_layers


# --- against the reference, float64, torch backend ---------------------------------------------------------------
LAYOUTS = {
    "2layer-bidir": dict(num_layers=2, bidirectional=True),
    "batch_first": dict(num_layers=2, batch_first=True),
    "unbatched": dict(num_layers=1, bidirectional=True),
    "bias-free": dict(num_layers=2, bias=False),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("entry", ALL, ids=cid)
def test_module_matches_reference(entry, layout):
    """Outputs, h_n, the final momentum state and the gradients of the input, hx, the state and every
    parameter (the orthogonal `original` included), with hx, state and a step offset."""
    cls, dynamics = entry
    kw = LAYOUTS[layout]
    T, B, n_in, H = 5, 1 if layout == "unbatched" else 3, 3, 4
    module = _make(cls, n_in, H, **kw)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(T, B, n_in, generator=gen, dtype=F64).requires_grad_()
    h0, state = _random_state(module, B, gen=gen)
    h0.requires_grad_()
    state = {k: v.requires_grad_() for k, v in state.items()}
    if layout == "unbatched":
        out, h_n, final = module(x[:, 0], h0[:, 0], state={k: v[:, 0] for k, v in state.items()}, step_offset=2,
                                 return_state=True)
        assert out.dim() == 2 and h_n.dim() == 2 and all(v.dim() == 2 for v in final.values())
        out, h_n, final = out[:, None], h_n[:, None], {k: v[:, None] for k, v in final.items()}
    elif module.batch_first:
        out, h_n, final = module(x.transpose(0, 1), h0, state=state, step_offset=2, return_state=True)
        assert out.shape == (B, T, H)
        out = out.transpose(0, 1)
    else:
        out, h_n, final = module(x, h0, state=state, step_offset=2, return_state=True)
    ref_out, ref_h, ref_c, ref_final = _reference(module, x, h0, state, 2)
    assert ref_c is None
    D = 2 if module.bidirectional else 1
    assert out.shape == (T, B, D * H) and h_n.shape == (module.num_layers * D, B, H)
    steps = _steps(module, T, n_in)
    assert_close(out, ref_out, F64, steps, msg="output")
    assert_close(h_n, ref_h, F64, steps, msg="h_n")
    assert set(final) == set(ref_final) == set(STATE_NAMES[dynamics])
    for name in final:
        assert final[name].dtype == F64
        assert_close(final[name], ref_final[name], F64, steps, msg=f"state {name}")
    names = ["input", "h0"] + [f"state[{k}]" for k in state] + [n for n, _ in module.named_parameters()]
    leaves = [x, h0] + list(state.values()) + list(module.parameters())
    assert any("original" in n for n in names) == (_core(module) == "rnn_modrelu")
    got = torch.autograd.grad(_loss([out, h_n] + [final[k] for k in sorted(final)]), leaves)
    want = torch.autograd.grad(_loss([ref_out, ref_h] + [ref_final[k] for k in sorted(ref_final)]), leaves)
    for name, a, b in zip(names, got, want):
        assert a.abs().sum() > 0 or b.abs().sum() == 0, name
        assert_close(a, b, F64, steps, msg=f"gradient of {name}")


@pytest.mark.parametrize("entry", ALL, ids=cid)
def test_module_without_hx_matches_reference(entry):
    cls, _ = entry
    module = _make(cls, 2, 5, num_layers=2, seed=1)
    x = torch.randn(4, 2, 2, dtype=F64)
    out, h_n = module(x)
    ref_out, ref_h, _, _ = _reference(module, x)
    assert_close(out, ref_out, F64, _steps(module, 4, 2))
    assert_close(h_n, ref_h, F64, _steps(module, 4, 2))


@pytest.mark.parametrize("entry", ALL, ids=cid)
def test_two_chunks_with_carried_state_equal_one_call(entry):
    """Truncated BPTT: hx, the momentum state and step_offset carried from one chunk to the next give the
    one-call result (the torch backend runs the same steps either way: bitwise)."""
    cls, _ = entry
    module = _make(cls, 3, 4, num_layers=2, bidirectional=False, batch_first=True, seed=2)
    x = torch.randn(2, 7, 3, dtype=F64)
    h0, state = _random_state(module, 2)
    full, h_full, st_full = module(x, h0, state=state, step_offset=1, return_state=True)
    first, h_mid, st_mid = module(x[:, :3], h0, state=state, step_offset=1, return_state=True)
    second, h_end, st_end = module(x[:, 3:], h_mid, state=st_mid, step_offset=4, return_state=True)
    assert torch.equal(torch.cat([first, second], 1), full)
    assert torch.equal(h_end, h_full)
    assert set(st_end) == set(st_full)
    for name in st_full:
        assert torch.equal(st_end[name], st_full[name]), name


@pytest.mark.parametrize("entry", [ORTHOGONAL[2], ORTHOGONAL[3], INDRNN[1]], ids=cid)
def test_packed_sequence_matches_reference_per_sequence(entry):
    """PackedSequence (unsorted lengths): each sequence's output, h_n and state are those of the reference run
    on that sequence alone, over its own length."""
    cls, _ = entry
    lengths = torch.tensor([3, 5, 1, 4])
    T, B, n_in, H = 5, 4, 2, 3
    module = _make(cls, n_in, H, num_layers=2, bidirectional=True, seed=20)
    h0, state = _random_state(module, B)
    x = torch.randn(T, B, n_in, dtype=F64)
    out, h_n, final = module(pack_padded_sequence(x, lengths, enforce_sorted=False), h0, state=state,
                             step_offset=1, return_state=True)
    padded, out_lengths = pad_packed_sequence(out)
    assert torch.equal(out_lengths, lengths)
    steps = _steps(module, T, n_in)
    for b, n in enumerate(lengths.tolist()):
        ref_out, ref_h, _, ref_final = _reference(module, x[:n, b:b + 1], h0[:, b:b + 1],
                                                  {k: v[:, b:b + 1] for k, v in state.items()}, 1)
        assert_close(padded[:n, b:b + 1], ref_out, F64, steps, msg=f"output of sequence {b}")
        assert torch.equal(padded[n:, b], torch.zeros_like(padded[n:, b])), f"padding of sequence {b}"
        assert_close(h_n[:, b:b + 1], ref_h, F64, steps, msg=f"h_n of sequence {b}")
        for k in final:
            assert_close(final[k][:, b:b + 1], ref_final[k], F64, steps, msg=f"{k} of sequence {b}")


def test_restart_offset_reaches_the_schedule():
    module = _make(tnn.SRIndRNN, 2, 3)
    x = torch.randn(3, 1, 2, dtype=F64)
    state = {"v": torch.ones(1, 1, 3, dtype=F64)}
    a, _ = module(x, state=state, step_offset=0)
    b, _ = module(x, state=state, step_offset=1)
    assert not torch.allclose(a, b)


# --- Triton backend (interpreter), fp32 -------------------------------------------------------------------------
def _run_all(module, x, h0, state, step_offset):
    """Output, h_n, final states and the gradients of input, h0, state and every parameter, as float64."""
    leaves = [x, h0, *state.values(), *module.parameters()]
    out, h_n, final = module(x, h0, state=state, step_offset=step_offset, return_state=True)
    results = [out, h_n, *(final[k] for k in sorted(final))]
    grads = torch.autograd.grad(_loss([r.double() for r in results]), leaves)
    return [r.detach().double() for r in results + list(grads)]


def _exact(cls, kwargs, state_dict, x, h0, state, perturb=None):
    """The torch backend in float64 on the same (fp32) values; with `perturb`, every input and parameter is
    first scaled by (1 ± eps32), the size of one fp32 rounding (tests/nn/test_triton_modules.py's bound)."""
    def cast(t):
        t = t.detach().double()
        if perturb is not None:
            t = t * (1 + EPS32 * (torch.randint(0, 2, t.shape, generator=perturb) * 2 - 1).to(t))
        return t
    mod = cls(**kwargs, backend="torch", dtype=F64)
    mod.load_state_dict({k: cast(v) if v.is_floating_point() else v for k, v in state_dict.items()})
    leaf = lambda t: cast(t).requires_grad_()  # noqa: E731
    return _run_all(mod, leaf(x), leaf(h0), {k: leaf(v) for k, v in state.items()}, 3)


@pytest.mark.parametrize("entry", ALL, ids=cid)
def test_triton_backend_matches_torch_backend(entry, device):
    """Two layers (bidirectional but for Adam / RMSProp), hx, state and step offset, fp32 on the kernels
    (the interpreter on CPU) against the torch backend in float64 on the same values, for every output and
    gradient. The bound is the derived one of tests/nn/test_triton_modules.py: steps × (the change an eps32
    perturbation of every input and parameter makes in the exact result), ×4, plus the fp32 absolute
    tolerance; it follows the conditioning of the Adam / RMSProp normalisation and of the relu / modReLU kinks."""
    cls, dynamics = entry
    T, B, n_in, H = 5, 2, 3, 5
    bidirectional = dynamics not in ("adam", "rmsprop")  # their interpreted scans are slow; 3 families cover it
    kwargs = dict(input_size=n_in, hidden_size=H, num_layers=2, bidirectional=bidirectional, **HYPER[dynamics])
    module = _make(cls, n_in, H, num_layers=2, bidirectional=bidirectional, dtype=torch.float32,
                   backend="triton", seed=4).to(device)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(T, B, n_in, generator=gen).to(device).requires_grad_()
    h0, state = _random_state(module, B, torch.float32, gen)
    h0 = h0.to(device).requires_grad_()
    state = {k: v.to(device).requires_grad_() for k, v in state.items()}
    got = _run_all(module, x, h0, state, 3)
    sd = {k: v.cpu() for k, v in module.state_dict().items()}
    exact = _exact(cls, kwargs, sd, x.cpu(), h0.cpu(), {k: v.cpu() for k, v in state.items()})
    sens = [torch.zeros((), dtype=F64) for _ in exact]
    for seed in (11, 12):
        pert = _exact(cls, kwargs, sd, x.cpu(), h0.cpu(), {k: v.cpu() for k, v in state.items()},
                      torch.Generator().manual_seed(seed))
        sens = [torch.maximum(s, (p - e).abs().max()) for s, p, e in zip(sens, pert, exact)]
    steps = T * 2
    assert len(got) == len(exact)
    for i, (a, e, s) in enumerate(zip(got, exact, sens)):
        _, atol = tolerance(torch.float32, steps, scale=max(1.0, float(e.abs().max())))
        err = float((a.cpu() - e).abs().max())
        assert err <= 4 * steps * float(s) + atol, f"result {i}: max error {err:.3e}, sensitivity {float(s):.3e}"


@pytest.mark.parametrize("entry", [ORTHOGONAL[2], INDRNN[1]], ids=cid)
def test_triton_two_chunks_equal_one_call(entry, device):
    """Truncated BPTT on the kernels: the chunked run follows the one-call run within the fp32 tolerance."""
    cls, _ = entry
    module = _make(cls, 3, 4, dtype=torch.float32, backend="triton", seed=6).to(device)
    x = torch.randn(6, 2, 3).to(device)
    with torch.no_grad():
        full, h_full, st_full = module(x, return_state=True)
        first, h_mid, st_mid = module(x[:2], return_state=True)
        second, h_end, st_end = module(x[2:], h_mid, state=st_mid, step_offset=2, return_state=True)
    steps = 6 * (3 + 4)
    assert_close(torch.cat([first, second]), full, torch.float32, steps, scale=float(full.abs().max()))
    assert_close(h_end, h_full, torch.float32, steps, scale=float(full.abs().max()))
    for name in st_full:
        assert_close(st_end[name], st_full[name], torch.float32, steps, scale=float(st_full[name].abs().max()))


# --- the orthogonal parametrization -----------------------------------------------------------------------------
def _orthogonality_error(U):
    eye = torch.eye(U.shape[0], dtype=U.dtype)
    return float((U @ U.T - eye).abs().max())


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley", "householder"])
@pytest.mark.parametrize("optimizer", ["SGD", "SRSGD"])
def test_weight_hh_stays_orthogonal_under_optimizer_steps(optimizer, orthogonal_map):
    torch.manual_seed(8)
    H = 6
    module = tnn.MomentumOrthogonalRNN(3, H, num_layers=2, bidirectional=True, orthogonal_map=orthogonal_map,
                                       backend="torch")
    before = {n: getattr(module, n).detach().clone() for n in module._flat_weights_names if "weight_hh" in n}
    opt = (torch.optim.SGD(module.parameters(), lr=0.05) if optimizer == "SGD"
           else tritonrnn.optim.SRSGD(module.parameters(), lr=0.05, restart=3))
    x = torch.randn(5, 2, 3)
    target = torch.randn(5, 2, 2 * H)
    for _ in range(4):
        opt.zero_grad()
        out, h = module(x)
        ((out.tanh() - target).square().sum() + h.tanh().sum()).backward()
        opt.step()
    # U U^T = I to fp32 accuracy: H products summed per entry, a few roundings in the map itself
    rtol, _ = tolerance(torch.float32, steps=H)
    for name, old in before.items():
        U = getattr(module, name).detach()
        assert _orthogonality_error(U) <= 4 * rtol, name
        assert (U - old).abs().max() > 1e-3, f"{name} did not move: the test would prove nothing"


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley", "householder"])
def test_orthogonal_map_is_used_and_initial_U_is_orthogonal(orthogonal_map):
    torch.manual_seed(9)
    module = tnn.OrthogonalRNN(3, 7, orthogonal_map=orthogonal_map)
    assert module.orthogonal_map == orthogonal_map
    assert parametrize.is_parametrized(module, "weight_hh_l0")
    assert _orthogonality_error(module.weight_hh_l0.detach()) <= 4 * tolerance(torch.float32, steps=7)[0]
    assert (orthogonal_map != "matrix_exp") == ("orthogonal_map" in repr(module))


def test_orthogonal_initialisation():
    torch.manual_seed(10)
    H = 32
    module = tnn.OrthogonalRNN(16, H)
    b = module.bias_hh_l0.detach()
    assert b.abs().max() <= 0.01 and b.abs().max() > 0.005  # uniform in ±0.01
    w = module.weight_ih_l0.detach()
    assert abs(w.std().item() - math.sqrt(2 / 16)) < 0.25 * math.sqrt(2 / 16)  # Kaiming-normal, relu gain
    assert not hasattr(module, "bias_ih_l0")


@pytest.mark.parametrize("entry", ALL, ids=cid)
def test_state_dict_round_trip_into_a_fresh_module(entry):
    """After optimizer steps and a rebase_ (orthogonal: a new base buffer), a fresh module loaded with the
    state dict (strict) computes bitwise the same forward."""
    cls, _ = entry
    module = _make(cls, 3, 4, num_layers=2, bidirectional=True, dtype=torch.float32, seed=11)
    # lr small enough that the trained weights stay finite: at lr 0.1 the gradients (~10^3 for the orthogonal
    # core's out.square().sum()) overflow it to NaN on some roundings, and NaN != NaN fails the bitwise check.
    opt = torch.optim.SGD(module.parameters(), lr=1e-3)
    x = torch.randn(5, 2, 3)
    out, _ = module(x)
    out.square().sum().backward()
    opt.step()
    if hasattr(module, "rebase_"):
        module.rebase_()
        out, _ = module(x)
        out.square().sum().backward()
        opt.step()
    torch.manual_seed(99)
    fresh = cls(3, 4, num_layers=2, bidirectional=True, **HYPER[cls.dynamics], backend="torch")
    fresh.load_state_dict(module.state_dict(), strict=True)
    a, ha = module(x)
    b, hb = fresh(x)
    assert a.isfinite().all() and torch.equal(a, b) and torch.equal(ha, hb)
    for name in module._flat_weights_names:
        assert torch.equal(getattr(module, name), getattr(fresh, name)), name


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley", "householder"])
def test_rebase_keeps_U_and_the_output(orthogonal_map):
    torch.manual_seed(12)
    H = 5
    module = tnn.AdamOrthogonalRNN(3, H, num_layers=2, orthogonal_map=orthogonal_map, backend="torch")
    opt = torch.optim.SGD(module.parameters(), lr=0.3)
    x = torch.randn(6, 2, 3)
    for _ in range(3):  # move `original` away from its rebased value
        opt.zero_grad()
        module(x)[0].tanh().sum().backward()
        opt.step()
    names = [n for n in module._flat_weights_names if "weight_hh" in n]
    originals = [module.parametrizations[n].original for n in names]
    before_U = [getattr(module, n).detach().clone() for n in names]
    before_orig = [o.detach().clone() for o in originals]
    with torch.no_grad():
        before_out, before_h = module(x)
    module.rebase_()
    for n, old_U, old_o in zip(names, before_U, before_orig):
        param = module.parametrizations[n].original
        assert param is module.parametrizations[n].original and isinstance(param, torch.nn.Parameter)
        assert not torch.equal(param.detach(), old_o), f"{n}: rebase_ did not restart the trivialization"
        if orthogonal_map != "householder":  # the skew-symmetric generator A = tril(X) - tril(X)ᵀ is zero
            X = param.detach().tril()
            assert torch.equal(X - X.T, torch.zeros_like(X)), n
        assert_close(getattr(module, n).detach(), old_U, torch.float32, steps=H, msg=n)
    with torch.no_grad():
        out, h = module(x)
    steps = 6 * (3 + H) * 2
    assert_close(out, before_out, torch.float32, steps)
    assert_close(h, before_h, torch.float32, steps)
    # the parameter objects survive, so an optimizer built before rebase_ keeps working
    assert all(a is b for a, b in zip(originals, [module.parametrizations[n].original for n in names]))


def test_rebase_of_a_fresh_module_is_the_identity_on_U():
    torch.manual_seed(13)
    module = tnn.OrthogonalRNN(2, 4)
    U = module.weight_hh_l0.detach().clone()
    module.rebase_()
    assert_close(module.weight_hh_l0.detach(), U, torch.float32, steps=4)


# --- IndRNN: recurrent_max, batch norm ----------------------------------------------------------------------------
@pytest.mark.parametrize("entry", INDRNN, ids=cid)
def test_recurrent_max_clamps_w_in_forward(entry):
    cls, _ = entry
    module = _make(cls, 3, 6, num_layers=2, bidirectional=True, recurrent_max=0.5, seed=14)
    plain = _make(cls, 3, 6, num_layers=2, bidirectional=True, seed=14)
    with torch.no_grad():
        plain.bias_hh_l0.fill_(2.0)  # every unit of layer 0 active, so every w_l0 has a gradient
        for name in module._flat_weights_names:
            getattr(module, name).copy_(getattr(plain, name))
        module.weight_hh_l0.copy_(torch.tensor([-2.0, -0.5, -0.2, 0.3, 0.5, 1.7], dtype=F64))
        for name in module._flat_weights_names:  # the other w's lie in (-1.2, 1.2): clipped too
            if name.startswith("weight_hh"):
                getattr(plain, name).copy_(getattr(module, name).clamp(-0.5, 0.5))
    assert module.recurrent_max == 0.5 and "recurrent_max=0.5" in repr(module)
    x = torch.randn(5, 2, 3, dtype=F64)
    out, h = module(x)
    ref_out, ref_h = plain(x)
    assert torch.equal(out, ref_out) and torch.equal(h, ref_h)
    assert module.weight_hh_l0.abs().max() == 2.0, "the forward must not modify the parameter"
    # the clamp's gradient: zero beyond the bound, passed through at and inside it (so after
    # clip_recurrent_weights_ the gradient is never cut)
    (g,) = torch.autograd.grad(_loss([out, h]), [module.weight_hh_l0])
    (g_ref,) = torch.autograd.grad(_loss([ref_out, ref_h]), [plain.weight_hh_l0])
    inside = torch.tensor([False, True, True, True, True, False])
    assert torch.equal(g[~inside], torch.zeros(2, dtype=F64))
    assert torch.equal(g[inside], g_ref[inside]) and bool((g[inside] != 0).all())


@pytest.mark.parametrize("entry", INDRNN, ids=cid)
def test_clip_recurrent_weights_projects_every_w(entry):
    cls, _ = entry
    module = _make(cls, 3, 5, num_layers=2, bidirectional=True, recurrent_max=0.75, seed=15)
    with torch.no_grad():
        for name in module._flat_weights_names:
            if name.startswith("weight_hh"):
                getattr(module, name).copy_(torch.tensor([-3.0, -0.75, 0.1, 0.9, 2.0], dtype=F64))
    others = {n: p.detach().clone() for n, p in module.named_parameters() if not n.startswith("weight_hh")}
    params_before = {n: p for n, p in module.named_parameters()}
    module.clip_recurrent_weights_()
    for name in module._flat_weights_names:
        if name.startswith("weight_hh"):
            assert torch.equal(getattr(module, name).detach(), torch.tensor([-0.75, -0.75, 0.1, 0.75, 0.75],
                                                                            dtype=F64)), name
    for n, p in module.named_parameters():
        assert p is params_before[n], "projected in place"
        if n in others:
            assert torch.equal(p.detach(), others[n]), n
    # without recurrent_max it is a no-op
    free = _make(cls, 3, 5, seed=15)
    with torch.no_grad():
        free.weight_hh_l0.fill_(5.0)
    free.clip_recurrent_weights_()
    assert bool((free.weight_hh_l0 == 5.0).all())


def test_indrnn_initialisation_respects_recurrent_max():
    torch.manual_seed(16)
    module = tnn.IndRNN(4, 64, num_layers=2, recurrent_max=0.3)
    for name in module._flat_weights_names:
        p = getattr(module, name).detach()
        if name.startswith("weight_hh"):
            assert p.min() >= 0 and p.max() <= 0.3 and (p == 0.3).sum() > 10, name  # uniform [0, 1) clipped
        elif name.startswith("bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
        else:
            assert p.abs().max() <= 1 / 8, name  # ±1/√H


def _split_layers(module, cls, n_in, H, D):
    """Two single-layer modules carrying layer 0 and layer 1 of `module`."""
    kw = dict(bidirectional=D == 2, **HYPER[cls.dynamics], backend="torch", dtype=F64)
    first, second = cls(n_in, H, **kw), cls(D * H, H, **kw)
    with torch.no_grad():
        for name in module._flat_weights_names:
            target = first if "_l0" in name else second
            getattr(target, name.replace("_l1", "_l0")).copy_(getattr(module, name))
    return first, second


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("entry", [INDRNN[0], INDRNN[3]], ids=cid)
def test_batch_norm_between_layers(entry, bidirectional):
    """batch_norm=True is layer 0, BatchNorm1d over the features (statistics over time and batch), layer 1:
    in train mode (batch statistics, running stats updated) and in eval mode (running stats)."""
    cls, _ = entry
    T, B, n_in, H = 5, 3, 2, 4
    D = 2 if bidirectional else 1
    module = _make(cls, n_in, H, num_layers=2, bidirectional=bidirectional, batch_norm=True, seed=17)
    assert len(module.bn) == 1 and module.bn[0].num_features == D * H
    with torch.no_grad():
        module.bn[0].weight.uniform_(0.5, 1.5)
        module.bn[0].bias.uniform_(-0.5, 0.5)
    first, second = _split_layers(module, cls, n_in, H, D)
    bn = torch.nn.BatchNorm1d(D * H, dtype=F64)
    bn.load_state_dict(module.bn[0].state_dict())
    h0, state = _random_state(module, B)
    x = torch.randn(T, B, n_in, dtype=F64)

    def manual(x):
        o0, h_0, s_0 = first(x, h0[:D], state={k: v[:D] for k, v in state.items()}, return_state=True)
        y = bn(o0.reshape(T * B, D * H)).reshape(T, B, D * H)
        o1, h_1, s_1 = second(y, h0[D:], state={k: v[D:] for k, v in state.items()}, return_state=True)
        return o1, torch.cat([h_0, h_1]), {k: torch.cat([s_0[k], s_1[k]]) for k in s_0}

    steps = _steps(module, T, n_in) + T * B  # the batch statistics sum over T·B rows
    for mode in ("train", "eval"):
        module.train(mode == "train")
        bn.train(mode == "train")
        out, h_n, final = module(x, h0, state=state, return_state=True)
        ref_out, ref_h, ref_final = manual(x)
        assert_close(out, ref_out, F64, steps, msg=mode)
        assert_close(h_n, ref_h, F64, steps, msg=mode)
        for k in final:
            assert_close(final[k], ref_final[k], F64, steps, msg=f"{mode} {k}")
        assert_close(module.bn[0].running_mean, bn.running_mean, F64, steps, msg=mode)
        assert_close(module.bn[0].running_var, bn.running_var, F64, steps, msg=mode)
        assert int(module.bn[0].num_batches_tracked) == int(bn.num_batches_tracked)
    # the normalisation matters (else the comparison above would not see the BN)
    plain = _make(cls, n_in, H, num_layers=2, bidirectional=bidirectional, seed=17)
    with torch.no_grad():
        for name in plain._flat_weights_names:
            getattr(plain, name).copy_(getattr(module, name))
    module.train()
    assert not torch.allclose(plain(x, h0)[0], module(x, h0)[0])
    # gradients reach the BatchNorm affine parameters
    out, _ = module(x, h0)
    gw, gb = torch.autograd.grad(_loss([out]), [module.bn[0].weight, module.bn[0].bias])
    assert gw.abs().sum() > 0 and gb.abs().sum() > 0


def test_batch_norm_with_packed_sequence_excludes_padding():
    """PackedSequence input: the batch statistics come from the valid steps only, padding stays zero;
    the result equals layer 0, BatchNorm1d on the valid rows, layer 1, sequence by sequence."""
    cls = tnn.MomentumIndRNN
    T, B, n_in, H = 6, 4, 3, 4
    lengths = torch.tensor([6, 2, 4, 1])
    module = _make(cls, n_in, H, num_layers=2, bidirectional=True, batch_norm=True, seed=18)
    with torch.no_grad():
        module.bn[0].weight.uniform_(0.5, 1.5)
        module.bn[0].bias.uniform_(-0.5, 0.5)
    first, second = _split_layers(module, cls, n_in, H, 2)
    bn = torch.nn.BatchNorm1d(2 * H, dtype=F64)
    bn.load_state_dict(module.bn[0].state_dict())
    x = torch.randn(T, B, n_in, dtype=F64)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    module.train()
    out, h_n = module(packed)
    padded, out_lengths = pad_packed_sequence(out)
    assert torch.equal(out_lengths, lengths)

    o0, h_0 = first(packed)
    p0, _ = pad_packed_sequence(o0)
    valid = torch.arange(T)[:, None] < lengths[None, :]
    normed = bn(p0[valid])  # [Σ lengths, 2H]: padding excluded from the statistics
    assert_close(module.bn[0].running_mean, bn.running_mean, F64, T * B)
    assert_close(module.bn[0].running_var, bn.running_var, F64, T * B)
    y = torch.zeros_like(p0)
    y[valid] = normed
    o1, h_1 = second(pack_padded_sequence(y, lengths, enforce_sorted=False))
    p1, _ = pad_packed_sequence(o1)
    steps = _steps(module, T, n_in) + T * B
    assert_close(padded, p1, F64, steps)
    assert_close(h_n, torch.cat([h_0, h_1]), F64, steps)
    # the statistics over padded zeros would differ
    all_mean = p0.reshape(T * B, -1).mean(0)
    assert not torch.allclose(bn.running_mean, 0.1 * all_mean)


def test_batch_norm_single_layer_has_no_norm():
    module = tnn.IndRNN(3, 4, batch_norm=True)
    assert len(module.bn) == 0
    assert "batch_norm=True" in repr(module)


@pytest.mark.parametrize("entry", [INDRNN[0], INDRNN[2]], ids=cid)
def test_triton_packed_batch_norm_matches_torch(entry, device):
    cls, _ = entry
    T, B, n_in, H = 5, 3, 2, 4
    lengths = torch.tensor([5, 2, 3])
    mod = _make(cls, n_in, H, num_layers=2, batch_norm=True, dtype=torch.float32, backend="triton", seed=19)
    ref = _make(cls, n_in, H, num_layers=2, batch_norm=True, dtype=torch.float32, backend="torch", seed=19)
    ref.load_state_dict(mod.state_dict())
    mod, ref = mod.to(device), ref.to(device)
    x = torch.randn(T, B, n_in).to(device)
    out, h = mod(pack_padded_sequence(x, lengths, enforce_sorted=False))
    ref_out, ref_h = ref(pack_padded_sequence(x, lengths, enforce_sorted=False))
    steps = _steps(mod, T, n_in) + T * B
    scale = float(ref_out.data.detach().abs().max())
    assert_close(out.data, ref_out.data, torch.float32, steps, scale=scale)
    assert_close(h, ref_h, torch.float32, steps, scale=scale)
    got = torch.autograd.grad(_loss([out.data.double(), h.double()]), list(mod.parameters()))
    want = torch.autograd.grad(_loss([ref_out.data.double(), ref_h.double()]), list(ref.parameters()))
    for (name, _), a, b in zip(mod.named_parameters(), got, want):
        assert_close(a, b, torch.float32, steps * B, scale=max(1.0, float(b.abs().max())), msg=name)


# --- bad arguments -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, 0.0, -1.0, float("nan"), float("inf"), True, "1"])
@pytest.mark.parametrize("cls", [tnn.IndRNN, tnn.AdamIndRNN])
def test_bad_recurrent_max(cls, value):
    with pytest.raises(ValueError, match="^recurrent_max"):
        cls(3, 4, recurrent_max=value)


@pytest.mark.parametrize("cls", [tnn.OrthogonalRNN, tnn.SROrthogonalRNN])
def test_bad_orthogonal_map(cls):
    for value in ("exp", "", None, 3):
        with pytest.raises(ValueError, match="^orthogonal_map"):
            cls(3, 4, orthogonal_map=value)


@pytest.mark.parametrize("cls", [tnn.OrthogonalRNN, tnn.MomentumOrthogonalRNN, tnn.IndRNN, tnn.RMSPropIndRNN])
def test_nonlinearity_is_not_an_argument(cls):
    """The cores fix their nonlinearity (modReLU, relu); passing one is refused with an error naming it."""
    with pytest.raises(ValueError, match="^nonlinearity"):
        cls(3, 4, nonlinearity="tanh")


def test_cores_reject_the_other_cores_options():
    with pytest.raises((ValueError, TypeError), match="batch_norm"):
        tnn.OrthogonalRNN(3, 4, batch_norm=True)
    with pytest.raises((ValueError, TypeError), match="recurrent_max"):
        tnn.OrthogonalRNN(3, 4, recurrent_max=1.0)
    with pytest.raises((ValueError, TypeError), match="orthogonal_map"):
        tnn.IndRNN(3, 4, orthogonal_map="cayley")
    with pytest.raises(ValueError, match="beta"):
        tnn.MomentumIndRNN(3, 4, beta=0.5)


@pytest.mark.parametrize("entry", [ORTHOGONAL[1], INDRNN[3]], ids=cid)
def test_bad_forward_arguments(entry):
    cls, _ = entry
    module = cls(3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match="^hx"):
        module(x, torch.zeros(2, 3, 4))          # wrong batch
    with pytest.raises(ValueError, match="^hx"):
        module(x, torch.zeros(1, 2, 4))          # wrong number of layers
    with pytest.raises(ValueError, match="^hx"):
        module(x, torch.zeros(2, 2, 5))          # wrong hidden size
    with pytest.raises(ValueError, match="^hx"):
        module(torch.randn(5, 3), torch.zeros(2, 2, 4))  # unbatched input, batched hx
    with pytest.raises(TypeError, match="^hx"):
        module(x, torch.zeros(2, 2, 4, dtype=F64))
    with pytest.raises(ValueError, match="input_size"):
        module(torch.randn(5, 2, 4))
    with pytest.raises(ValueError, match=r"state\['v'\]"):
        module(x, state={"v": torch.zeros(2, 2, 5)})
    with pytest.raises(ValueError, match="step_offset"):
        module(x, step_offset=-1)


def test_exported_from_the_package():
    for name in ("OrthogonalRNN", "MomentumOrthogonalRNN", "SROrthogonalRNN", "AdamOrthogonalRNN",
                 "RMSPropOrthogonalRNN", "IndRNN", "MomentumIndRNN", "SRIndRNN", "AdamIndRNN", "RMSPropIndRNN"):
        assert getattr(tnn, name).__name__ == name
        assert getattr(tritonrnn, name, getattr(tnn, name)) is getattr(tnn, name)


@pytest.mark.parametrize("entry", ALL, ids=cid)
def test_parameter_names_and_shapes(entry):
    cls, dynamics = entry
    module = cls(3, 4, num_layers=2, bidirectional=True)
    assert module.dynamics == dynamics
    assert module.hyper_parameters() == tritonrnn.functional.layers.DEFAULTS[dynamics]
    shapes = {n: tuple(getattr(module, n).shape) for n in module._flat_weights_names}
    for k in ("l0", "l0_reverse", "l1", "l1_reverse"):
        n_in = 3 if k.startswith("l0") else 8
        assert shapes[f"weight_ih_{k}"] == (4, n_in)
        assert shapes[f"bias_hh_{k}"] == (4,)
        if _core(module) == "rnn_modrelu":
            assert shapes[f"weight_hh_{k}"] == (4, 4) and f"bias_ih_{k}" not in shapes
        else:
            assert shapes[f"weight_hh_{k}"] == (4,) and shapes[f"bias_ih_{k}"] == (4,)
    free = cls(3, 4, bias=False)
    assert not any(n.startswith("bias") for n in free._flat_weights_names)
