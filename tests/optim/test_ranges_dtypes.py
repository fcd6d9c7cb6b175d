"""Issue 14, the optimizers: number ranges, and the inputs torch.optim accepts.

- Frank-Wolfe's p = 2 norms are scale-safe (kernels/multi_tensor.py, tritonrnn.optim._scales): scaling the
  gradient by 2^±80 (exact in binary floating point) scales the norm pair's m by the same power and leaves
  the LMO step bitwise unchanged, where Σ g² used to overflow / underflow fp32 into a zero step.
- float64 parameters step in float64 (state and arithmetic) on the foreach path, "auto" falling back there.
- complex parameters: SRSGD and NAG update their real view (elementwise), as torch.optim.SGD does.
- a 0-dim tensor `lr` gives the trajectory of the number, and changing it in place reaches the optimizer.
(eps below the compute dtype's range and the Triton backend's dtype errors: test_behaviour's validation.)
"""
from __future__ import annotations

import math

import pytest
import torch

from tritonrnn.optim import NAG, SRSGD, FrankWolfe, _grad_norm_foreach

from . import reference as ref
from .common import QuadraticGrads, make_params, run
from tests.tolerance import assert_close, tolerance

pytest.importorskip("triton")

BACKENDS = ["foreach", "triton"]
SCALES = [2.0 ** 80, 2.0 ** -80]


# ---------------------------------------------------------------------------------------------------
# Scale-safe norms and LMO steps
# ---------------------------------------------------------------------------------------------------
def _lmo(backend, p, norm, params, grads, scale):
    """Δ after the first inner iteration of a window: Δ = s_1 = LMO(g) (SPEC §2.3)."""
    ps = [torch.nn.Parameter(x.clone()) for x in params]
    opt = FrankWolfe(ps, lr=0.1, radius=0.5, inner_steps=2, p=p, norm=norm, outer="sgd", backend=backend)
    for q, g in zip(ps, grads):
        q.grad = g * scale  # a power of two: exact
    opt.step()
    return [opt.state[q]["delta"] for q in ps]


@pytest.mark.parametrize("norm", ["tensor", "global"])
@pytest.mark.parametrize("p", [2, math.inf])
@pytest.mark.parametrize("backend", BACKENDS)
def test_lmo_step_is_invariant_to_the_gradient_scale(backend, p, norm):
    specs = [(7, torch.float32), (1500, torch.bfloat16), (0, torch.float32), (33, torch.float32)]
    params, grads = make_params(specs, 30), make_params(specs, 31)
    grads[3].zero_()  # a zero gradient keeps its zero step
    want = _lmo(backend, p, norm, params, grads, 1.0)
    assert all(bool((d != 0).all()) for d in want[:2]) and not want[3].any()
    for scale in SCALES:
        got = _lmo(backend, p, norm, params, grads, scale)
        for i, (a, b) in enumerate(zip(got, want)):
            assert torch.equal(a, b), (scale, i)


@pytest.mark.parametrize("backend", BACKENDS)
def test_norm_pairs_scale_exactly(backend):
    """(m, s) with ‖g‖ = m·√s: m scales with the gradient, s does not change (bitwise)."""
    from tritonrnn.kernels.multi_tensor import MultiTensorPlan, grad_norm

    specs = [(3000, torch.float32), (0, torch.float32), (5, torch.bfloat16)]
    for dtype_specs in (specs[:2], specs[2:]):
        params, grads = make_params(dtype_specs, 32), make_params(dtype_specs, 33)
        if backend == "triton":
            norms = lambda gs: grad_norm(MultiTensorPlan(torch.device("cpu")), params, gs, weight_decay=0.0)  # noqa: E731
        else:
            norms = lambda gs: _grad_norm_foreach(params, gs, weight_decay=0.0)  # noqa: E731
        m, s = norms(grads)
        assert bool((s[m > 0] >= 1).all())
        for scale in SCALES:
            m2, s2 = norms([g * scale for g in grads])
            assert torch.equal(m2, m * scale) and torch.equal(s2, s)


@pytest.mark.parametrize("backend", BACKENDS)
def test_smallest_eps_allowed_gives_finite_steps_at_a_zero_gradient(backend):
    """eps = the smallest normal fp32 (the validation bound): Adam's m/(√v·c + eps) is 0/eps, not 0/0."""
    params = make_params([(9, torch.float32), (4, torch.bfloat16)], 34)
    eps = torch.finfo(torch.float32).tiny
    got, opt = run(lambda ps: FrankWolfe(ps, lr=0.1, radius=0.5, eps=eps, backend=backend), params,
                   QuadraticGrads(params, zero=True), 2)
    for a, b in zip(got, params):
        assert torch.equal(a, b)
    assert all(bool(torch.isfinite(v).all()) for st in opt.state.values() for v in st.values())


# ---------------------------------------------------------------------------------------------------
# float64 parameters
# ---------------------------------------------------------------------------------------------------
F64_STEPS = 30


def _assert_close_f64(actual, expected, steps, msg=""):
    """fp64 arithmetic on both sides: the fp32 tolerance's derivation with eps(fp64) (an fp32 step, ~1e-7
    relative, fails it by orders of magnitude)."""
    rtol = 4 * torch.finfo(torch.float64).eps * steps
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.dtype == e.dtype == torch.float64
        scale = 1.0 + (float(e.abs().max()) if e.numel() else 0.0)
        torch.testing.assert_close(a, e, rtol=rtol, atol=rtol * scale, msg=f"{msg} tensor {i}")


F64_CASES = [
    ("SRSGD", lambda ps, b: SRSGD(ps, lr=0.05, restart=[(10, 3), (20, 5)], weight_decay=0.01, backend=b),
     lambda params, grads: ref.srsgd(params, grads, F64_STEPS, lr=0.05, restart=[(10, 3), (20, 5)],
                                     weight_decay=0.01)),
    ("NAG", lambda ps, b: NAG(ps, lr=0.05, momentum=0.9, schedule="restart", restart=4, backend=b),
     lambda params, grads: ref.nag_lookahead(params, grads, F64_STEPS, lr=0.05,
                                             mus=ref.restart_mus(4, F64_STEPS + 1))[0]),
    ("FrankWolfe", lambda ps, b: FrankWolfe(ps, lr=0.05, radius=0.5, inner_steps=3, norm="global", eps=1e-300,
                                            weight_decay=0.01, backend=b),
     lambda params, grads: ref.frank_wolfe(params, grads, F64_STEPS, lr=0.05, radius=0.5, inner_steps=3,
                                           norm="global", eps=1e-300, weight_decay=0.01)),
]


@pytest.mark.parametrize("backend", ["auto", "foreach"])
@pytest.mark.parametrize("name,make,reference", F64_CASES, ids=[c[0] for c in F64_CASES])
def test_float64_parameters_step_in_float64(backend, name, make, reference):
    params = make_params([(200, torch.float64), (0, torch.float64), (17, torch.float64)], 35)
    grads = QuadraticGrads(params, 36)
    got, opt = run(lambda ps: make(ps, backend), params, grads, F64_STEPS)
    _assert_close_f64(got, reference(params, grads), F64_STEPS, name)
    assert all(v.dtype == torch.float64 for st in opt.state.values() for v in st.values())


def test_auto_serves_a_mixed_float32_float64_group():
    """Under "auto" (the interpreter here) the fp32 tensors take the Triton kernel and the fp64 ones foreach;
    each matches the reference in its own precision."""
    params = make_params([(300, torch.float32), (40, torch.float64), (1100, torch.bfloat16)], 37)
    grads = QuadraticGrads(params, 38)
    cfg = dict(lr=0.05, restart=4, weight_decay=0.01)
    got, opt = run(lambda ps: SRSGD(ps, backend="auto", **cfg), params, grads, F64_STEPS)
    want = ref.srsgd(params, grads, F64_STEPS, **cfg)
    _assert_close_f64(got[1:2], want[1:2], F64_STEPS)
    for i in (0, 2):
        assert_close(got[i], want[i], got[i].dtype, steps=F64_STEPS, scale=1.0 + float(want[i].float().abs().max()))
    assert sorted(b.backend for b in opt._buckets(opt.param_groups[0])) == ["foreach", "triton", "triton"]


# ---------------------------------------------------------------------------------------------------
# complex parameters (SRSGD, NAG)
# ---------------------------------------------------------------------------------------------------
C_STEPS = 20


def _complex_problem(dtype, seed):
    """grad_t = a·p + b_t, a real in [0, 1) (a contraction), b_t complex N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    p0 = torch.randn(23, dtype=dtype, generator=g)
    a = torch.rand(23, generator=g).to(p0.real.dtype)
    bs = [torch.randn(23, dtype=dtype, generator=g) for _ in range(C_STEPS)]
    return p0, (lambda t, p: a * p + bs[t])


def _complex_tolerance(dtype, steps, expected):
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    rtol = 4 * torch.finfo(real).eps * steps if real == torch.float64 else tolerance(real, steps)[0]
    return dict(rtol=rtol, atol=rtol * (1.0 + float(expected.abs().max())))


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("backend", ["auto", "foreach"])
def test_complex_nag_matches_torch_sgd(backend, dtype, nesterov):
    """Constant μ and lr: CM is SGD(momentum), and the look-ahead NAG is SGD(nesterov=True) (the NAG
    docstring), with v = −lr·buf."""
    p0, grad = _complex_problem(dtype, 40)
    ours, theirs = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(p0.clone())
    opt = NAG([ours], lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=0.01, backend=backend)
    sgd = torch.optim.SGD([theirs], lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=0.01)
    for t in range(C_STEPS):
        for q, o in ((ours, opt), (theirs, sgd)):
            q.grad = grad(t, q.detach())
            o.step()
    assert opt.state[ours]["velocity"].dtype == dtype
    torch.testing.assert_close(ours.detach(), theirs.detach(), **_complex_tolerance(dtype, C_STEPS, theirs.detach()))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("backend", ["auto", "foreach"])
def test_complex_srsgd_is_srsgd_of_the_real_view(backend, dtype):
    p0, grad = _complex_problem(dtype, 41)
    p = torch.nn.Parameter(p0.clone())
    opt = SRSGD([p], lr=0.05, restart=4, weight_decay=0.01, backend=backend)
    for t in range(C_STEPS):
        p.grad = grad(t, p.detach())
        opt.step()
    want = ref.srsgd([torch.view_as_real(p0)], lambda t, ps: [torch.view_as_real(grad(t, torch.view_as_complex(ps[0])))],
                     C_STEPS, lr=0.05, restart=4, weight_decay=0.01)[0]
    torch.testing.assert_close(torch.view_as_real(p.detach()), want, **_complex_tolerance(dtype, C_STEPS, want))


# ---------------------------------------------------------------------------------------------------
# tensor lr
# ---------------------------------------------------------------------------------------------------
LR_CASES = [(SRSGD, dict(restart=3, weight_decay=0.01)), (NAG, dict(schedule="sutskever")),
            (FrankWolfe, dict(radius=0.5, inner_steps=2))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls,kwargs", LR_CASES, ids=[c[0].__name__ for c in LR_CASES])
def test_tensor_lr_equals_the_number_and_follows_in_place_changes(backend, cls, kwargs):
    """lr values exact in fp32, so the tensor and the number are the same lr; the tensor is halved in
    place after 3 steps, the number by assignment."""
    params = make_params([(50, torch.float32), (9, torch.bfloat16)], 42)
    grads = QuadraticGrads(params, 43)
    lr = torch.tensor(0.125)
    ps_number = [torch.nn.Parameter(x.clone()) for x in params]
    ps_tensor = [torch.nn.Parameter(x.clone()) for x in params]
    opt_number = cls(ps_number, lr=0.125, backend=backend, **kwargs)
    opt_tensor = cls(ps_tensor, lr=lr, backend=backend, **kwargs)
    assert opt_tensor.param_groups[0]["lr"] is lr
    for t in range(6):
        if t == 3:
            opt_number.param_groups[0]["lr"] = 0.0625
            lr.fill_(0.0625)
        for ps, opt in ((ps_number, opt_number), (ps_tensor, opt_tensor)):
            for p, g in zip(ps, grads(t, [p.detach() for p in ps])):
                p.grad = g
            opt.step()
    for a, b in zip(ps_tensor, ps_number):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------------
# state_dict with Python-number counters (saved before the counters were tensors, issue 17)
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls,kwargs", [(SRSGD, dict(restart=[(3, 2), (20, 5)])),
                                        (NAG, dict(schedule="restart", restart=4)),
                                        (FrankWolfe, dict(radius=0.5, inner_steps=3))],
                         ids=["SRSGD", "NAG", "FrankWolfe"])
def test_state_dict_with_python_number_counters_loads(cls, kwargs):
    params = make_params([(30, torch.float32), (5, torch.bfloat16)], 44)
    grads = QuadraticGrads(params, 45)
    straight, _ = run(lambda ps: cls(ps, lr=0.05, backend="foreach", **kwargs), params, grads, 8)
    first, opt = run(lambda ps: cls(ps, lr=0.05, backend="foreach", **kwargs), params, grads, 5)
    saved = opt.state_dict()
    for group in saved["param_groups"]:
        group.pop("capturable")
        for key in ("step", "k", "F", "outer_step", "mu"):
            if isinstance(group.get(key), torch.Tensor):
                group[key] = group[key].item()
    resumed = [torch.nn.Parameter(p.clone()) for p in first]
    opt2 = cls(resumed, lr=0.05, backend="foreach", **kwargs)
    opt2.load_state_dict(saved)
    assert all(isinstance(opt2.param_groups[0][k], torch.Tensor) for k in ("step", "k"))
    for t in range(5, 8):
        for p, g in zip(resumed, grads(t, [p.detach() for p in resumed])):
            p.grad = g
        opt2.step()
    for a, b in zip(resumed, straight):
        assert torch.equal(a.detach(), b)
