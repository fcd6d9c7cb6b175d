"""Every module on the Triton backend (the interpreter on CPU, the compiled kernels on a GPU) against the
same module on the torch backend and against the step-by-step reference: outputs, h_n, c_n, final momentum
states, and the gradients of the input, every parameter, hx and the momentum states. Small shapes: the
interpreter is ~1000x slower than a GPU."""
import pytest
import torch

from tests.nn.common import FAMILIES, family_id, gates, random_state, reference
from tritonrnn.reference import STATE_NAMES
from tests.tolerance import EPS32, assert_close, tolerance


def _run(module, x, hx, state, step_offset=0):
    leaves = [x, *(t for t in hx if t is not None), *state.values(), *module.parameters()]
    hx_arg = hx[0] if gates(module) == 1 else hx
    out, hn, final = module(x, hx_arg, state=state, step_offset=step_offset, return_state=True)
    hn = (hn,) if gates(module) == 1 else hn
    results = [out, *hn, *(final[k] for k in sorted(final))]
    g = torch.Generator().manual_seed(1)
    loss = sum((r.double() * torch.randn(r.shape, generator=g, dtype=torch.float64)).sum() for r in results)
    grads = torch.autograd.grad(loss, leaves)
    return [r.detach().double() for r in results + list(grads)]


def _exact(cls, kwargs, state_dict, x, hx, state, device, perturb=None):
    """The torch backend in float64 on the same (fp32-rounded) values; with `perturb`, every input and
    weight is first scaled by (1 ± eps32), the size of one fp32 rounding."""
    def cast(t):
        t = t.detach().double()
        if perturb is not None:
            t = t * (1 + EPS32 * (torch.randint(0, 2, t.shape, generator=perturb) * 2 - 1).to(t))
        return t
    mod = cls(**kwargs, backend="torch").to(device).double()
    mod.load_state_dict({k: cast(v) for k, v in state_dict.items()})
    leaf = lambda t: None if t is None else cast(t).requires_grad_()  # noqa: E731
    return _run(mod, leaf(x), tuple(leaf(t) for t in hx), {k: leaf(v) for k, v in state.items()}, step_offset=3)


@pytest.mark.parametrize("entry", FAMILIES, ids=family_id)
@pytest.mark.parametrize("layout", ["one layer", "two layers, bidirectional"])
def test_triton_backend_matches_torch_backend(entry, layout, device):
    """Outputs, final states and all gradients of the Triton backend (fp32) against the torch backend run in
    float64 on the same values. The bound is derived, not tuned: each fp32 rounding inside a kernel acts like a
    relative perturbation of size eps32 of the operands, so the error is at most (number of steps) x the change
    that an eps32 perturbation of every input and weight causes in the exact result (measured, max over two
    draws), x4 for safety, plus the dtype's absolute tolerance. The Adam/RMSProp normalisation v/(√m+ε) is
    ill-conditioned where m is small, and this bound follows that conditioning instead of ignoring it."""
    cls, dynamics, hyper = entry
    num_layers, bidirectional = (1, False) if layout == "one layer" else (2, True)
    torch.manual_seed(0)
    T, B, n_in, H = 7, 2, 3, 5
    kwargs = dict(input_size=n_in, hidden_size=H, num_layers=num_layers, bidirectional=bidirectional, **hyper)
    mod = cls(**kwargs, backend="triton").to(device)
    x = torch.randn(T, B, n_in, device=device, requires_grad=True)
    h0, c0, state = random_state(mod, B, torch.float32)
    h0 = h0.to(device).requires_grad_()
    c0 = c0.to(device).requires_grad_() if c0 is not None else None
    state = {k: v.to(device).requires_grad_() for k, v in state.items()}
    got = _run(mod, x, (h0, c0), state, step_offset=3)
    exact = _exact(cls, kwargs, mod.state_dict(), x, (h0, c0), state, device)
    sensitivity = [torch.zeros(()) for _ in exact]
    for seed in (11, 12):
        pert = _exact(cls, kwargs, mod.state_dict(), x, (h0, c0), state, device, torch.Generator().manual_seed(seed))
        sensitivity = [torch.maximum(s, (p - e).abs().max().cpu()) for s, p, e in zip(sensitivity, pert, exact)]
    steps = T * num_layers
    assert len(got) == len(exact)
    for i, (a, e, sens) in enumerate(zip(got, exact, sensitivity)):
        _, atol = tolerance(torch.float32, steps, scale=max(1.0, float(e.abs().max())))
        err = float((a - e).abs().max())
        assert err <= 4 * steps * float(sens) + atol, f"result {i}: max error {err:.3e}, sensitivity {float(sens):.3e}"


@pytest.mark.parametrize("entry", FAMILIES[:6], ids=family_id)
def test_triton_backend_matches_reference(entry, device):
    cls, dynamics, hyper = entry
    torch.manual_seed(1)
    T, B, n_in, H = 6, 3, 2, 4
    mod = cls(n_in, H, **hyper, backend="triton").to(device)
    x = torch.randn(T, B, n_in, device=device)
    out, hn = mod(x)
    ref_out, ref_h, ref_c, _ = reference(mod, x)
    assert_close(out, ref_out, torch.float32, T)
    assert_close(hn[0], ref_h, torch.float32, T)
    assert_close(hn[1], ref_c, torch.float32, T)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_half_precision_follows_fp32_within_dtype_tolerance(dtype, device):
    """fp32 state and accumulation inside: a half-precision run equals the fp32 run on the same rounded
    inputs and weights up to the output rounding (plus the drive's rounding before the recurrence)."""
    from tritonrnn import MomentumLSTM

    torch.manual_seed(2)
    T, B, n_in, H = 6, 2, 3, 4
    mod = MomentumLSTM(n_in, H, backend="triton").to(device)
    x = torch.randn(T, B, n_in, device=device)
    half = MomentumLSTM(n_in, H, backend="triton").to(device=device, dtype=dtype)
    half.load_state_dict({k: v.to(dtype) for k, v in mod.state_dict().items()})
    mod.load_state_dict({k: v.to(dtype).float() for k, v in mod.state_dict().items()})
    out_half, _ = half(x.to(dtype))
    out_fp32, _ = mod(x.to(dtype).float())
    # each intermediate handed between kernels (the scanned drive, the layer output) is rounded to dtype once
    rtol, _ = (4 * torch.finfo(dtype).eps, None)
    torch.testing.assert_close(out_half.float(), out_fp32, rtol=rtol, atol=rtol)


def test_triton_packed_sequence_matches_torch(device):
    from torch.nn.utils.rnn import pack_padded_sequence

    from tritonrnn import AdamLSTM

    torch.manual_seed(3)
    mod = AdamLSTM(3, 4, backend="triton").to(device)
    ref_mod = AdamLSTM(3, 4, backend="torch").to(device)
    ref_mod.load_state_dict(mod.state_dict())
    x = torch.randn(6, 3, 3, device=device)
    lengths = torch.tensor([6, 4, 1])
    out, (h, c) = mod(pack_padded_sequence(x, lengths))
    ref_out, (ref_h, ref_c) = ref_mod(pack_padded_sequence(x, lengths))
    assert_close(out.data, ref_out.data, torch.float32, 6)
    assert_close(h, ref_h, torch.float32, 6)
    assert_close(c, ref_c, torch.float32, 6)


@pytest.mark.parametrize("entry", FAMILIES, ids=family_id)
def test_triton_cells_match_torch_cells(entry, device):
    """One step of every ...Cell on the Triton backend against the same cell on the torch backend: the new
    hidden (and cell) state, the momentum states, and the gradients of the input, hx, state and parameters."""
    from tests.nn.common import CELLS

    cls, dynamics, hyper = entry
    torch.manual_seed(4)
    B, n_in, H = 3, 2, 5
    cell = CELLS[cls](n_in, H, **hyper, backend="triton").to(device)
    ref = CELLS[cls](n_in, H, **hyper, backend="torch").to(device)
    ref.load_state_dict(cell.state_dict())
    G = gates(cell)

    def run(c):
        x = torch.randn(B, n_in, generator=torch.Generator().manual_seed(5)).to(device).requires_grad_()
        g = torch.Generator().manual_seed(6)
        h0 = torch.randn(B, H, generator=g).to(device).requires_grad_()
        c0 = torch.randn(B, H, generator=g).to(device).requires_grad_() if G == 4 else None
        names = sorted(STATE_NAMES[dynamics])
        state = {n: torch.rand(B, G * H, generator=g).to(device).requires_grad_() for n in names}
        if cls.__name__ in ("LSTM", "RNN"):
            new = c(x, h0 if c0 is None else (h0, c0))
            new_state = {}
        else:
            new, new_state = c(x, h0 if c0 is None else (h0, c0), state, step=1)
        outs = list(new) if isinstance(new, tuple) else [new]
        outs += [new_state[n] for n in names]
        leaves = [x, h0, *([c0] if c0 is not None else []), *state.values(), *c.parameters()]
        loss = sum((o * (k + 1)).sum() for k, o in enumerate(outs))
        return [o.detach() for o in outs] + list(torch.autograd.grad(loss, leaves))

    for a, b in zip(run(cell), run(ref)):
        assert_close(a, b, torch.float32, steps=2, scale=max(1.0, float(b.abs().max())))
