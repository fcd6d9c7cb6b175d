"""The issue #8 cores on the Triton kernels (the interpreter on CPU) against the torch path of the same
functional API, which is the reference's own step loop (tritonrnn.reference.cells.drive_step / core_step):

    rnn_recurrence(a, U, b, h0, nonlinearity="modrelu")   h_t = modReLU(a_t + U h_{t-1}), b the modReLU bias
    indrnn_recurrence(a, w, b, h0)                         h_t = relu(a_t + w ⊙ h_{t-1} + b)

Outputs, final states and the gradients of a, weight_hh, bias_hh and h0 are compared, over T = 1, H not a
power of two, H = 70 (more than one hidden block), B > 4 (more than one IndRNN batch tile), bias / h0
absent, fp32 / bf16 / fp16 inputs and time-major transposed views; plus the exact cases (the modReLU kinks,
IndRNN's per-unit independence, inference = training path, two runs bitwise equal).

Tolerances: tests.tolerance from the dtype and the number of fp32 operations accumulated into a value:
a modReLU step sums H products (steps = T·(H+1)); an IndRNN step is elementwise (steps = T), but an
error made at step t is multiplied by |w| at each later step, so the step count is weighted by
Σ_k max(1, |w|)^k (the IndRNN's own amplification, not a tuned factor). Gradients of the weights also
sum over the batch.
"""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tolerance import assert_close
from tritonrnn.functional.recurrence import indrnn_recurrence, rnn_recurrence

pytest.importorskip("triton")

FIXTURE_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                             HealthCheck.data_too_large])
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
HIDDEN = [1, 5, 17, 70]  # 70 > 64: two hidden blocks in both kernels


def _orthogonal(H, gen):
    q, r = torch.linalg.qr(torch.randn(H, H, generator=gen, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()  # Haar-distributed orthogonal


def _drive(B, T, H, gen, time_major, scale=1.0):
    """a [B, T, H]; time_major: torch.randn(T, B, H).transpose(0, 1), as the modules pass it."""
    if time_major:
        return (scale * torch.randn(T, B, H, generator=gen)).transpose(0, 1)
    return scale * torch.randn(B, T, H, generator=gen)


def _leaves(tensors, dtype, device):
    """Each tensor cast to `dtype`, on `device`, as its own leaf (None stays None); the layout is kept."""
    out = []
    for t in tensors:
        if t is None:
            out.append(None)
            continue
        t = t.to(device=device, dtype=dtype)
        out.append(t.detach().requires_grad_())
    return out


def _grads(outputs, inputs, cotangents):
    loss = sum((o.float() * c).sum() for o, c in zip(outputs, cotangents))
    used = [x for x in inputs if x is not None]
    grads = iter(torch.autograd.grad(loss, used))
    return [next(grads) if x is not None else None for x in inputs]


def _scale(t):
    return max(1.0, t.detach().abs().max().item())


def _indrnn_steps(T, w):
    """Σ_{k<T} max(1, |w|)^k: how an error made at one step can grow through the IndRNN recurrence."""
    g = max(1.0, float(w.detach().abs().max()))
    return sum(g ** k for k in range(max(T, 1)))


def _compare(core, got, want, inputs, cot, dtype, B, T, H, w):
    steps = T * (H + 1) if core == "modrelu" else _indrnn_steps(T, w)
    # The modReLU core runs on the recurrence kernels, which round h_{t-1} to a half weight's dtype for each
    # step's product (issue 12 item 4, as cuDNN's half cells): T more half roundings in the chain. modReLU's
    # slope jumps at |z| + b = 0 (and its value at z = 0 when b > 0), so such a rounding near a kink changes
    # a gradient by O(1): no rounding model bounds it. Half modReLU checks the forward on a continuous
    # (b <= 0, see _modrelu_bias) and 1-Lipschitz map; its gradients are checked in fp32.
    half_modrelu = core == "modrelu" and dtype != torch.float32
    for name, g, r in zip(("h", "h_T"), got, want):
        assert g.dtype == r.dtype == dtype, name
        assert g.shape == r.shape, name
        assert_close(g, r, dtype, steps=steps, scale=_scale(r), msg=f"{core} {name}",
                     roundings=T if half_modrelu else 0)
    if half_modrelu:
        return
    got_g, want_g = _grads(got, inputs, cot), _grads(want, inputs, cot)
    for name, x, g, r in zip(("a", "weight_hh", "bias_hh", "h0"), inputs, got_g, want_g):
        if x is None:
            continue
        assert g is not None and g.dtype == x.dtype and g.shape == x.shape, name
        batch = B if name in ("weight_hh", "bias_hh") else 1  # weight gradients also sum over the batch
        assert_close(g, r, dtype, steps=steps * batch, scale=_scale(r), msg=f"{core} gradient of {name}")


def _modrelu_bias(b, dtype):
    """fp32 keeps both signs of b; half gets b <= 0, where modReLU is continuous (see _compare)."""
    return b if dtype == torch.float32 else -b.abs()


def _run_both(fn, inputs, kwargs):
    got = fn(*inputs, **kwargs, backend="triton")
    want = fn(*inputs, **kwargs, backend="torch")
    return got, want


# ----------------------------------------------------------------------------------- property tests
@FIXTURE_OK
@given(B=st.integers(1, 6), T=st.integers(1, 12), H=st.sampled_from(HIDDEN), dtype=st.sampled_from(DTYPES),
       bias=st.booleans(), initial=st.booleans(), time_major=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_modrelu_triton_matches_torch_path(device, B, T, H, dtype, bias, initial, time_major, seed):
    gen = torch.Generator().manual_seed(seed)
    a = _drive(B, T, H, gen, time_major)
    U = _orthogonal(H, gen)
    b = _modrelu_bias(0.8 * torch.randn(H, generator=gen), dtype) if bias else None  # b < 0: dead zone |z| <= -b
    h0 = torch.randn(B, H, generator=gen) if initial else None
    inputs = _leaves([a, U, b, h0], dtype, device)
    got, want = _run_both(rnn_recurrence, inputs, dict(nonlinearity="modrelu"))
    if time_major and B > 1 and T > 1:
        assert inputs[0].transpose(0, 1).is_contiguous()
        assert got[0].transpose(0, 1).is_contiguous(), "a time-major a gives a time-major h"
    cot = [torch.randn(B, T, H, generator=gen).to(device), torch.randn(B, H, generator=gen).to(device)]
    _compare("modrelu", got, want, inputs, cot, dtype, B, T, H, U)


@FIXTURE_OK
@given(B=st.integers(1, 6), T=st.integers(1, 12), H=st.sampled_from(HIDDEN), dtype=st.sampled_from(DTYPES),
       bias=st.booleans(), initial=st.booleans(), time_major=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_indrnn_triton_matches_torch_path(device, B, T, H, dtype, bias, initial, time_major, seed):
    gen = torch.Generator().manual_seed(seed)
    a = _drive(B, T, H, gen, time_major)
    w = 2.4 * torch.rand(H, generator=gen) - 1.2  # |w| up to 1.2: growing and alternating units
    b = 0.5 * torch.randn(H, generator=gen) if bias else None
    h0 = torch.rand(B, H, generator=gen) if initial else None  # a relu state is >= 0
    inputs = _leaves([a, w, b, h0], dtype, device)
    got, want = _run_both(indrnn_recurrence, inputs, {})
    if time_major and B > 1 and T > 1:
        assert got[0].transpose(0, 1).is_contiguous(), "a time-major a gives a time-major h"
    cot = [torch.randn(B, T, H, generator=gen).to(device), torch.randn(B, H, generator=gen).to(device)]
    _compare("indrnn", got, want, inputs, cot, dtype, B, T, H, w)


# ------------------------------------------------------------------------- fixed shapes and exact cases
@pytest.mark.parametrize("core", ["modrelu", "indrnn"])
@pytest.mark.parametrize("shape", [(6, 12, 70), (5, 1, 70), (1, 7, 3)], ids=["tiles", "T=1", "B=1"])
def test_tiles_and_edges(device, core, shape):
    """The largest shapes of the brief (several hidden blocks and batch tiles) on every output and gradient,
    without hypothesis, so each is run whatever the profile draws."""
    B, T, H = shape
    gen = torch.Generator().manual_seed(sum(shape))
    a = torch.randn(B, T, H, generator=gen)
    if core == "modrelu":
        weight, fn, kw = _orthogonal(H, gen), rnn_recurrence, dict(nonlinearity="modrelu")
    else:
        weight, fn, kw = 2.4 * torch.rand(H, generator=gen) - 1.2, indrnn_recurrence, {}
    b = 0.5 * torch.randn(H, generator=gen)
    h0 = torch.rand(B, H, generator=gen)
    inputs = _leaves([a, weight, b, h0], torch.float32, device)
    got, want = _run_both(fn, inputs, kw)
    cot = [torch.randn(B, T, H, generator=gen).to(device), torch.randn(B, H, generator=gen).to(device)]
    _compare(core, got, want, inputs, cot, torch.float32, B, T, H, weight)


@pytest.mark.parametrize("core", ["modrelu", "indrnn"])
def test_without_bias_and_h0(device, core):
    """bias_hh None and h0 None (zeros) on both paths, with B > 4 and H > 64."""
    B, T, H = 6, 5, 70
    gen = torch.Generator().manual_seed(21)
    a = torch.randn(B, T, H, generator=gen)
    if core == "modrelu":
        weight, fn, kw = _orthogonal(H, gen), rnn_recurrence, dict(nonlinearity="modrelu")
    else:
        weight, fn, kw = 2.4 * torch.rand(H, generator=gen) - 1.2, indrnn_recurrence, {}
    inputs = _leaves([a, weight, None, None], torch.float32, device)
    got, want = _run_both(fn, inputs, kw)
    cot = [torch.randn(B, T, H, generator=gen).to(device), torch.randn(B, H, generator=gen).to(device)]
    _compare(core, got, want, inputs, cot, torch.float32, B, T, H, weight)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("core", ["modrelu", "indrnn"])
def test_half_precision(device, core, dtype):
    """Each low-precision dtype on each core, whatever the hypothesis profile draws: fp32 state and
    accumulation on both paths, so they differ by fp32 summation order and the final rounding."""
    B, T, H = 5, 6, 17
    gen = torch.Generator().manual_seed(20)
    a = _drive(B, T, H, gen, time_major=True)
    if core == "modrelu":
        weight, fn, kw = _orthogonal(H, gen), rnn_recurrence, dict(nonlinearity="modrelu")
    else:
        weight, fn, kw = 2.4 * torch.rand(H, generator=gen) - 1.2, indrnn_recurrence, {}
    b = 0.5 * torch.randn(H, generator=gen)
    if core == "modrelu":
        b = _modrelu_bias(b, dtype)
    h0 = torch.rand(B, H, generator=gen)
    inputs = _leaves([a, weight, b, h0], dtype, device)
    got, want = _run_both(fn, inputs, kw)
    cot = [torch.randn(B, T, H, generator=gen).to(device), torch.randn(B, H, generator=gen).to(device)]
    _compare(core, got, want, inputs, cot, dtype, B, T, H, weight)


def test_modrelu_kinks_are_exact(device):
    """z = 0 gives 0 whatever b; |z| + b = 0 and |z| + b < 0 give 0; elsewhere the slope is exactly 1 and
    ∂h/∂b = sign(z). One step from h0 = 0 (U irrelevant), so kernel and torch path must agree bitwise, values
    and gradients (the kernel derives the slope from h alone)."""
    z = torch.tensor([[0.0, 0.0, 0.5, -0.5, 2.0, -1.0, 1.5, -0.0]])
    b = torch.tensor([0.3, -0.2, -0.5, -0.5, -3.0, 0.25, 0.0, 0.4])
    expected = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, -1.25, 1.5, 0.0]])
    H = z.shape[1]
    a = z[:, None, :].to(device).requires_grad_()
    U = torch.eye(H, device=device).requires_grad_()
    bias = b.to(device).requires_grad_()
    cot = torch.arange(1.0, H + 1)[None, None, :].to(device)
    for backend in ("triton", "torch"):
        h, hT = rnn_recurrence(a, U, bias, None, nonlinearity="modrelu", backend=backend)
        assert torch.equal(h[:, 0].cpu(), expected), backend
        assert torch.equal(hT.cpu(), expected), backend
        da, db = torch.autograd.grad((h * cot).sum(), [a, bias])
        active = torch.tensor([0, 0, 0, 0, 0, 1, 1, 0], dtype=torch.float32)
        assert torch.equal(da[0, 0].cpu(), cot.flatten().cpu() * active), backend
        assert torch.equal(db.cpu(), cot.flatten().cpu() * active * torch.sign(z[0])), backend


def test_modrelu_without_bias_is_the_linear_recurrence(device):
    """b = None: modReLU is the identity, h_t = a_t + U h_{t-1} (exactly a linear RNN)."""
    gen = torch.Generator().manual_seed(11)
    B, T, H = 3, 6, 9
    a = torch.randn(B, T, H, generator=gen, dtype=torch.float64)
    U = _orthogonal(H, gen).double()
    h0 = torch.randn(B, H, generator=gen, dtype=torch.float64)
    h, hs = h0, []
    for t in range(T):
        h = a[:, t] + h @ U.T
        hs.append(h)
    want = torch.stack(hs, 1)
    got, got_T = rnn_recurrence(*(x.float().to(device) for x in (a, U)), None, h0.float().to(device),
                                nonlinearity="modrelu", backend="triton")
    assert_close(got.cpu(), want, torch.float32, steps=T * (H + 1), scale=_scale(want))
    assert_close(got_T.cpu(), want[:, -1], torch.float32, steps=T * (H + 1), scale=_scale(want))


def test_indrnn_units_are_independent(device):
    """Changing unit j's drive (every step) never changes another unit's output, in the kernel: bitwise."""
    gen = torch.Generator().manual_seed(12)
    B, T, H = 5, 6, 70
    a = torch.randn(B, T, H, generator=gen).to(device)
    w = (2.4 * torch.rand(H, generator=gen) - 1.2).to(device)
    b = torch.randn(H, generator=gen).to(device)
    h0 = torch.rand(B, H, generator=gen).to(device)
    base, base_T = indrnn_recurrence(a, w, b, h0, backend="triton")
    for j in (0, 63, 64, 69):  # both sides of the hidden-block edge
        changed = a.clone()
        changed[:, :, j] += 3.0 + torch.randn(B, T, generator=gen).to(device)
        h, hT = indrnn_recurrence(changed, w, b, h0, backend="triton")
        others = torch.arange(H) != j
        assert torch.equal(h[..., others], base[..., others]), j
        assert torch.equal(hT[:, others], base_T[:, others]), j
        assert not torch.equal(h[..., j], base[..., j]), j


@pytest.mark.parametrize("core", ["modrelu", "indrnn"])
def test_inference_path_equals_training_path(device, core):
    """Under no_grad the kernels keep two state slots instead of T+1: the same values, bitwise."""
    gen = torch.Generator().manual_seed(13)
    B, T, H = 6, 9, 70
    a = torch.randn(B, T, H, generator=gen).to(device)
    if core == "modrelu":
        weight, fn, kw = _orthogonal(H, gen).to(device), rnn_recurrence, dict(nonlinearity="modrelu")
    else:
        weight, fn, kw = (2.4 * torch.rand(H, generator=gen) - 1.2).to(device), indrnn_recurrence, {}
    b = (0.5 * torch.randn(H, generator=gen)).to(device)
    h0 = torch.rand(B, H, generator=gen).to(device)
    with torch.no_grad():
        inf = fn(a, weight, b, h0, **kw, backend="triton")
    train = fn(a.requires_grad_(), weight, b, h0, **kw, backend="triton")
    assert train[0].requires_grad and not inf[0].requires_grad
    for x, y in zip(inf, train):
        assert torch.equal(x, y.detach())


@pytest.mark.parametrize("core", ["modrelu", "indrnn"])
def test_time_major_view_is_bitwise_the_contiguous_result(device, core):
    gen = torch.Generator().manual_seed(14)
    B, T, H = 5, 4, 17
    a_tm = torch.randn(T, B, H, generator=gen).to(device).transpose(0, 1)
    if core == "modrelu":
        weight, fn, kw = _orthogonal(H, gen).to(device), rnn_recurrence, dict(nonlinearity="modrelu")
    else:
        weight, fn, kw = (2.4 * torch.rand(H, generator=gen) - 1.2).to(device), indrnn_recurrence, {}
    b = (0.5 * torch.randn(H, generator=gen)).to(device)
    h1, hT1 = fn(a_tm.contiguous(), weight, b, **kw, backend="triton")
    h2, hT2 = fn(a_tm, weight, b, **kw, backend="triton")
    assert h1.is_contiguous() and h2.transpose(0, 1).is_contiguous()
    assert torch.equal(h1, h2) and torch.equal(hT1, hT2)
    h3, _ = fn(a_tm, weight, b, **kw, backend="torch")
    assert h3.transpose(0, 1).is_contiguous(), "the torch path keeps the layout too"
    # the gradient through a time-major view equals the gradient through the contiguous tensor, bitwise
    cot = torch.randn(B, T, H, generator=gen).to(device)
    a_view, a_cont = a_tm.detach().requires_grad_(), a_tm.contiguous().requires_grad_()
    (g,) = torch.autograd.grad((fn(a_view, weight, b, **kw, backend="triton")[0] * cot).sum(), [a_view])
    (r,) = torch.autograd.grad((fn(a_cont, weight, b, **kw, backend="triton")[0] * cot).sum(), [a_cont])
    assert g.shape == (B, T, H) and torch.equal(g, r)


@pytest.mark.parametrize("core", ["modrelu", "indrnn"])
def test_bitwise_deterministic(device, core):
    gen = torch.Generator().manual_seed(15)
    B, T, H = 6, 7, 70
    a = torch.randn(B, T, H, generator=gen).to(device).requires_grad_()
    if core == "modrelu":
        weight, fn, kw = _orthogonal(H, gen).to(device), rnn_recurrence, dict(nonlinearity="modrelu")
    else:
        weight, fn, kw = (2.4 * torch.rand(H, generator=gen) - 1.2).to(device), indrnn_recurrence, {}
    weight.requires_grad_()
    b = (0.5 * torch.randn(H, generator=gen)).to(device).requires_grad_()
    h0 = torch.rand(B, H, generator=gen).to(device).requires_grad_()
    cot = [torch.randn(B, T, H, generator=gen).to(device), torch.randn(B, H, generator=gen).to(device)]
    runs = []
    for _ in range(2):
        out = fn(a, weight, b, h0, **kw, backend="triton")
        runs.append(list(out) + _grads(out, [a, weight, b, h0], cot))
    for x, y in zip(*runs):
        assert torch.equal(x, y)


@pytest.mark.parametrize("pick", [0, 1])
@pytest.mark.parametrize("core", ["modrelu", "indrnn"])
def test_one_output_in_the_loss(device, core, pick):
    """Only h or only h_T reaches the loss: the kernel's backward gets a None cotangent for the other."""
    gen = torch.Generator().manual_seed(16 + pick)
    B, T, H = 3, 5, 6
    a = torch.randn(B, T, H, generator=gen).to(device).requires_grad_()
    if core == "modrelu":
        weight, fn, kw = _orthogonal(H, gen).to(device), rnn_recurrence, dict(nonlinearity="modrelu")
    else:
        weight, fn, kw = (2.4 * torch.rand(H, generator=gen) - 1.2).to(device), indrnn_recurrence, {}
    weight.requires_grad_()
    b = (0.5 * torch.randn(H, generator=gen)).to(device).requires_grad_()
    h0 = torch.rand(B, H, generator=gen).to(device).requires_grad_()
    inputs = [a, weight, b, h0]
    got = fn(*inputs, **kw, backend="triton")[pick]
    want = fn(*inputs, **kw, backend="torch")[pick]
    steps = T * (H + 1) if core == "modrelu" else _indrnn_steps(T, weight)
    for g, r in zip(torch.autograd.grad(got.sum(), inputs), torch.autograd.grad(want.sum(), inputs)):
        assert_close(g, r, torch.float32, steps=steps * B, scale=_scale(r))
