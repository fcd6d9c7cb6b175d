"""Optimizer contract of SPEC §2 beyond the per-step math: schedules and counters, param groups,
state_dict resume, LR schedulers, closures, skipped/sparse/zero gradients, validation, GradScaler, the
NAG look-ahead against the direct equations, and the multi-tensor tables."""
from __future__ import annotations

import copy
import io
import math

import pytest
import torch

from tritonrnn.optim import NAG, SRSGD, FrankWolfe

from . import reference as ref
from .common import QuadraticGrads, assert_trajectory_close, make_params, run
from tests.tolerance import assert_close

pytest.importorskip("triton")

BACKENDS = ["foreach", "triton"]
MIXED = [(7, torch.float32), (1500, torch.bfloat16), (0, torch.float16), (33, torch.float16)]


# ---------------------------------------------------------------------------------------------------
# Schedules and counters
# ---------------------------------------------------------------------------------------------------
def observed_srsgd_mus(restart, steps, backend):
    """μ_k of each SRSGD step, read back from the update: with lr = 1 and grad = 1,
    w_{t+1} = v_t + μ_t (v_t − v_{t−1}) where v_t = state['v_prev'] after step t and v_{−1} = w_0."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = SRSGD([p], lr=1.0, restart=restart, backend=backend)
    v_before = p.detach().clone()
    mus = []
    for _ in range(steps):
        p.grad = torch.ones(1)
        opt.step()
        v = opt.state[p]["v_prev"].clone()
        mus.append(float((p.detach() - v) / (v - v_before)) if float(v - v_before) != 0 else 0.0)
        v_before = v
    return mus


@pytest.mark.parametrize("backend", BACKENDS)
def test_srsgd_mu_sequence_period_5(backend):
    mus = observed_srsgd_mus(5, 11, backend)
    expected = [0, .25, .4, .5, 4 / 7, 0, .25, .4, .5, 4 / 7, 0]
    assert mus == pytest.approx(expected, abs=1e-5)


def test_srsgd_stage_schedule_and_counters():
    # F = 2 while step < 4, then F = 3 (and it stays 3 after the last stage ends at step 10).
    stages = [(4, 2), (10, 3)]
    mus = observed_srsgd_mus(stages, 12, "foreach")
    expected = [0, .25, 0, .25, .4, 0, .25, .4, 0, .25, .4, 0]
    assert mus == pytest.approx(expected, abs=1e-5)
    assert ref.restart_mus(stages, 12) == pytest.approx(expected)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = SRSGD([p], lr=0.1, restart=stages)
    for _ in range(12):
        p.grad = torch.ones(1)
        opt.step()
    group = opt.param_groups[0]
    assert (group["step"], group["k"], group["F"]) == (12, 1, 3)


def test_nag_restart_group_mu():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = NAG([p], lr=0.1, schedule="restart", restart=5)
    seen = [opt.param_groups[0]["mu"]]
    for _ in range(10):
        p.grad = torch.ones(3)
        opt.step()
        seen.append(opt.param_groups[0]["mu"])
    assert seen == pytest.approx([0, .25, .4, .5, 4 / 7] * 2 + [0])


def test_sutskever_schedule_values():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = NAG([p], lr=0.0, momentum=0.99, schedule="sutskever", nesterov=False, backend="foreach")
    mus = []
    for _ in range(1001):
        mus.append(NAG._scheduled_mu(opt.param_groups[0]))
        p.grad = torch.zeros(1)
        opt.step()
    assert mus[0] == mus[249] == 0.5 and mus[250] == 0.75 and mus[750] == pytest.approx(0.875)
    assert mus[1000] == pytest.approx(1 - 2 ** (-1 - math.log2(5)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_groups_have_their_own_hyperparameters_and_counters(backend):
    a, b = make_params([(40, torch.float32), (1100, torch.bfloat16)], 1), make_params([(25, torch.float16)], 2)
    ga, gb = QuadraticGrads(a, 3), QuadraticGrads(b, 4)
    pa, pb = [torch.nn.Parameter(x.clone()) for x in a], [torch.nn.Parameter(x.clone()) for x in b]
    opt = SRSGD([{"params": pa}, {"params": pb, "lr": 0.02, "restart": [(5, 2), (9, 4)]}], lr=0.1, restart=3,
                backend=backend)
    steps = 12
    for t in range(steps):
        for ps, gf in ((pa, ga), (pb, gb)):
            for p, g in zip(ps, gf(t, [p.detach() for p in ps])):
                p.grad = g
        opt.step()
    assert_trajectory_close([p.detach() for p in pa], ref.srsgd(a, ga, steps, lr=0.1, restart=3), steps)
    assert_trajectory_close([p.detach() for p in pb],
                            ref.srsgd(b, gb, steps, lr=0.02, restart=[(5, 2), (9, 4)]), steps)
    g0, g1 = opt.param_groups
    assert (g0["step"], g0["k"], g0["F"]) == (12, 3, 3)
    assert (g1["step"], g1["k"], g1["F"]) == (12, 4, 4)


def test_frank_wolfe_groups_with_different_inner_steps():
    p1, p2 = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(4))
    opt = FrankWolfe([{"params": [p1]}, {"params": [p2], "inner_steps": 2}], lr=0.1, radius=1.0, inner_steps=3)
    for _ in range(4):
        p1.grad, p2.grad = torch.ones(4), torch.ones(4)
        opt.step()
    g1, g2 = opt.param_groups
    assert (g1["step"], g1["k"], g1["outer_step"]) == (4, 1, 1)
    assert (g2["step"], g2["k"], g2["outer_step"]) == (4, 0, 2)


# ---------------------------------------------------------------------------------------------------
# NAG: the look-ahead parameters against the equations of SPEC §2.2
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("schedule", ["constant", "sutskever", "restart"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_nag_matches_the_direct_equations(backend, schedule, nesterov):
    steps = 300 if backend == "foreach" else 260  # crosses the Sutskever change at t = 250
    theta0 = make_params([(50, torch.float32), (9, torch.float32)], 7)
    gen = torch.Generator().manual_seed(8)
    a = [0.5 * torch.rand(x.shape, generator=gen) for x in theta0]
    b = [torch.randn(steps, *x.shape, generator=gen) for x in theta0]

    def grad_at(t, points):  # f = Σ a x²/2 + b_t x
        return [ai * x + bi[t] for ai, x, bi in zip(a, points, b)]

    restart = 6 if schedule == "restart" else None
    mus = ([0.9] * (steps + 1) if schedule == "constant" else ref.sutskever_mus(0.9, steps + 1)
           if schedule == "sutskever" else ref.restart_mus(6, steps + 1))
    theta, vel = ref.nag_direct(theta0, grad_at, steps, lr=0.05, mus=mus, nesterov=nesterov)
    got, opt = run(lambda ps: NAG(ps, lr=0.05, momentum=0.9, schedule=schedule, nesterov=nesterov,
                                  restart=restart, backend=backend),
                   theta0, lambda t, ps: [g.float() for g in grad_at(t, ps)], steps)
    # The parameters hold φ_T = θ_T + μ_T v_T under NAG, θ_T under CM.
    for p, x, v in zip(opt.param_groups[0]["params"], theta, vel):
        point = x + mus[steps] * v if nesterov else x
        scale = 1.0 + float(point.abs().max())
        assert_close(p.detach(), point.float(), torch.float32, steps=steps, scale=scale)
        assert_close(opt.state[p]["velocity"], v.float(), torch.float32, steps=steps, scale=scale)
        if nesterov:  # θ_T is recovered from the look-ahead parameters as documented
            theta_from_state = p.detach() - opt.param_groups[0]["mu"] * opt.state[p]["velocity"]
            assert_close(theta_from_state, x.float(), torch.float32, steps=steps, scale=scale)


# ---------------------------------------------------------------------------------------------------
# state_dict resume, LR schedulers, closures
# ---------------------------------------------------------------------------------------------------
RESUME_CASES = [
    (SRSGD, dict(lr=0.05, restart=[(3, 2), (20, 5)], weight_decay=0.01)),
    (NAG, dict(lr=0.05, momentum=0.9, schedule="restart", restart=4)),
    (NAG, dict(lr=0.05, momentum=0.9, schedule="sutskever", nesterov=True)),
    (FrankWolfe, dict(lr=0.05, radius=0.5, inner_steps=3, outer="adam")),
    (FrankWolfe, dict(lr=0.05, radius=0.5, inner_steps=3, p=math.inf, norm="global", outer="sgd")),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls,kwargs", RESUME_CASES)
def test_state_dict_resume_continues_identically(backend, cls, kwargs):
    """Stop after 8 steps (Frank-Wolfe: inner step 2 of window 3), save, rebuild, load, continue."""
    params = make_params(MIXED, 11)
    grads = QuadraticGrads(params, 12)
    total, cut = 13, 8
    straight, _ = run(lambda ps: cls(ps, backend=backend, **kwargs), params, grads, total)

    first, opt = run(lambda ps: cls(ps, backend=backend, **kwargs), params, grads, cut)
    if cls is FrankWolfe:
        assert opt.param_groups[0]["k"] == 2  # mid-window
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    resumed = [torch.nn.Parameter(p.clone()) for p in first]
    opt2 = cls(resumed, backend=backend, **kwargs)
    opt2.load_state_dict(torch.load(buffer))
    assert all(s.dtype == torch.float32 for st in opt2.state.values() for s in st.values()
               if isinstance(s, torch.Tensor))
    shifted = lambda t, ps: grads(t + cut, ps)  # noqa: E731
    for t in range(total - cut):
        for p, g in zip(resumed, shifted(t, [p.detach() for p in resumed])):
            p.grad = g
        opt2.step()
    for a, b in zip(resumed, straight):
        assert torch.equal(a.detach(), b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_srsgd_with_lr_scheduler(backend):
    params = make_params(MIXED[:2], 13)
    grads = QuadraticGrads(params, 14)
    steps = 40
    ps = [torch.nn.Parameter(p.clone()) for p in params]
    opt = SRSGD(ps, lr=0.1, restart=7, backend=backend)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
    for t in range(steps):
        for p, g in zip(ps, grads(t, [p.detach() for p in ps])):
            p.grad = g
        opt.step()
        sched.step()
    want = ref.srsgd(params, grads, steps, lr=lambda t: 0.1 * 0.5 ** (t // 10), restart=7)
    assert_trajectory_close([p.detach() for p in ps], want, steps)


@pytest.mark.parametrize("backend", BACKENDS)
def test_frank_wolfe_lr_scheduler_and_radius_schedule(backend):
    params = make_params(MIXED[:2], 15)
    grads = QuadraticGrads(params, 16)
    steps = 24
    ps = [torch.nn.Parameter(p.clone()) for p in params]
    opt = FrankWolfe(ps, lr=0.1, radius=1.0, inner_steps=3, backend=backend)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.9 ** e)
    radius = lambda t: 1.0 / (1 + t // 5)  # noqa: E731
    for t in range(steps):
        opt.param_groups[0]["radius"] = radius(t)
        for p, g in zip(ps, grads(t, [p.detach() for p in ps])):
            p.grad = g
        opt.step()
        sched.step()
    want = ref.frank_wolfe(params, grads, steps, lr=lambda t: 0.1 * 0.9 ** t, radius=radius, inner_steps=3)
    assert_trajectory_close([p.detach() for p in ps], want, steps)


def _fit_problem(seed=0):
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    batches = [(torch.randn(16, 5, generator=gen), torch.randn(16, 1, generator=gen)) for _ in range(12)]
    return model, batches


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("inner_steps", [1, 3])
def test_frank_wolfe_closure_equals_streaming(backend, inner_steps):
    """step(closure) calls the closure K times and is the same as K streaming steps."""
    results, losses = [], []
    for mode in ("stream", "closure"):
        model, batches = _fit_problem()
        opt = FrankWolfe(model.parameters(), lr=0.05, radius=0.3, inner_steps=inner_steps, backend=backend)
        it = iter(batches)
        calls = []

        def closure():
            x, y = next(it)
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            calls.append(loss.item())
            return loss

        if mode == "stream":
            for _ in range(len(batches)):
                closure()
                opt.step()
        else:
            for _ in range(len(batches) // inner_steps):
                n = len(calls)
                loss = opt.step(closure)
                assert len(calls) - n == inner_steps
                assert loss.item() == calls[n]
        results.append([p.detach().clone() for p in model.parameters()])
        losses.append(calls)
    assert losses[0] == losses[1]
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cls,kwargs", [(SRSGD, dict(lr=0.1)), (NAG, dict(lr=0.1))])
def test_closure_called_once_and_loss_returned(cls, kwargs):
    model, batches = _fit_problem(1)
    opt = cls(model.parameters(), backend="foreach", **kwargs)
    count = []

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(batches[0][0]), batches[0][1])
        loss.backward()
        count.append(1)
        return loss

    loss = opt.step(closure)
    assert len(count) == 1 and loss.requires_grad is True


# ---------------------------------------------------------------------------------------------------
# Gradients: missing, sparse, zero; in-place updates; grads untouched
# ---------------------------------------------------------------------------------------------------
ALL = [(SRSGD, dict(lr=0.1, weight_decay=0.1)), (NAG, dict(lr=0.1, weight_decay=0.1)),
       (FrankWolfe, dict(lr=0.1, radius=0.5, weight_decay=0.1))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls,kwargs", ALL)
def test_in_place_skips_params_without_grad_and_keeps_grads(backend, cls, kwargs):
    a = torch.nn.Parameter(torch.randn(20).to(torch.bfloat16))
    b = torch.nn.Parameter(torch.randn(5))
    opt = cls([a, b], backend=backend, **kwargs)
    a.grad = torch.randn(20).to(torch.bfloat16)
    grad_before = a.grad.clone()
    ptr, b_before = a.data_ptr(), b.detach().clone()
    a_before = a.detach().clone()
    opt.step()
    assert a.data_ptr() == ptr and not torch.equal(a.detach(), a_before)
    assert torch.equal(a.grad, grad_before)
    assert torch.equal(b.detach(), b_before) and len(opt.state[b]) == 0


@pytest.mark.parametrize("cls,kwargs", ALL)
def test_sparse_gradients_are_rejected(cls, kwargs):
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = cls(emb.parameters(), backend="foreach", **kwargs)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p,norm,outer", [(2, "tensor", "adam"), (2, "global", "sgd"), (math.inf, "tensor", "sgd")])
def test_frank_wolfe_zero_gradient_gives_no_nan(backend, p, norm, outer):
    params = make_params(MIXED, 17)
    got, opt = run(lambda ps: FrankWolfe(ps, lr=0.1, radius=0.5, inner_steps=2, p=p, norm=norm, outer=outer,
                                         backend=backend),
                   params, QuadraticGrads(params, zero=True), 4)
    for a, b in zip(got, params):
        assert torch.equal(a, b)
    for state in opt.state.values():
        for value in state.values():
            assert torch.isfinite(value).all()


# ---------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------
def _p():
    return [torch.nn.Parameter(torch.zeros(2))]


@pytest.mark.parametrize("make,exc,name", [
    (lambda: SRSGD(_p(), lr=-0.1), ValueError, "lr"),
    (lambda: SRSGD(_p(), lr=0.1, restart=0), ValueError, "restart"),
    (lambda: SRSGD(_p(), lr=0.1, restart=2.5), TypeError, "restart"),
    (lambda: SRSGD(_p(), lr=0.1, restart=[(5, 2), (3, 4)]), ValueError, "restart"),
    (lambda: SRSGD(_p(), lr=0.1, restart=[(5, 0)]), ValueError, "restart"),
    (lambda: SRSGD(_p(), lr=0.1, restart=[5]), TypeError, "restart"),
    (lambda: SRSGD(_p(), lr=0.1, weight_decay=-1.0), ValueError, "weight_decay"),
    (lambda: SRSGD(_p(), lr=0.1, backend="cuda"), ValueError, "backend"),
    (lambda: SRSGD([{"params": _p(), "lr": -1.0}], lr=0.1), ValueError, "lr"),
    (lambda: SRSGD([torch.nn.Parameter(torch.zeros(2, dtype=torch.int32), requires_grad=False)], lr=0.1), TypeError,
     "params"),
    (lambda: FrankWolfe([torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))], lr=0.1, radius=1.0), TypeError,
     "params"),
    (lambda: SRSGD([torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))], lr=0.1, backend="triton"), TypeError,
     "torch.float64"),
    (lambda: NAG([torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))], lr=0.1, backend="triton"), TypeError,
     "torch.complex64"),
    (lambda: SRSGD(_p(), lr=torch.tensor([0.1, 0.2])), TypeError, "lr"),
    (lambda: SRSGD(_p(), lr=torch.tensor(0.1, device="meta")), ValueError, "lr"),
    (lambda: SRSGD(_p(), lr=torch.tensor(-0.1)), ValueError, "lr"),
    (lambda: FrankWolfe(_p(), lr=0.1, radius=1.0, eps=1e-50), ValueError, "eps"),
    (lambda: FrankWolfe(_p(), lr=0.1, radius=1.0, eps=0.0), ValueError, "eps"),
    (lambda: NAG(_p(), lr=0.1, momentum=1.0), ValueError, "momentum"),
    (lambda: NAG(_p(), lr=0.1, momentum=-0.1), ValueError, "momentum"),
    (lambda: NAG(_p(), lr=0.1, schedule="cosine"), ValueError, "schedule"),
    (lambda: NAG(_p(), lr=0.1, schedule="restart"), ValueError, "restart"),
    (lambda: NAG(_p(), lr=0.1, schedule="restart", restart=0), ValueError, "restart"),
    (lambda: NAG(_p(), lr=0.1, restart=3), ValueError, "restart"),
    (lambda: NAG(_p(), lr=0.1, nesterov="yes"), TypeError, "nesterov"),
    (lambda: FrankWolfe(_p(), lr=0.1, radius=0.0), ValueError, "radius"),
    (lambda: FrankWolfe(_p(), lr=0.1, radius=-1.0), ValueError, "radius"),
    (lambda: FrankWolfe(_p(), lr=0.1, radius=1.0, inner_steps=0), ValueError, "inner_steps"),
    (lambda: FrankWolfe(_p(), lr=0.1, radius=1.0, inner_steps=2.0), TypeError, "inner_steps"),
    (lambda: FrankWolfe(_p(), lr=0.1, radius=1.0, p=1), ValueError, "p"),
    (lambda: FrankWolfe(_p(), lr=0.1, radius=1.0, p="fro"), ValueError, "p"),
    (lambda: FrankWolfe(_p(), lr=0.1, radius=1.0, norm="layer"), ValueError, "norm"),
    (lambda: FrankWolfe(_p(), lr=0.1, radius=1.0, outer="lbfgs"), ValueError, "outer"),
    (lambda: FrankWolfe(_p(), lr=0.1, radius=1.0, betas=(0.9, 1.0)), ValueError, "betas"),
    (lambda: FrankWolfe(_p(), lr=-0.1, radius=1.0), ValueError, "lr"),
])
def test_bad_arguments_raise_naming_the_argument(make, exc, name):
    with pytest.raises(exc, match=name):
        make()


def test_rejected_param_group_is_not_added():
    opt = SRSGD(_p(), lr=0.1)
    with pytest.raises(ValueError, match="restart"):
        opt.add_param_group({"params": _p(), "restart": 0})
    assert len(opt.param_groups) == 1


def test_frank_wolfe_accepts_inf_spellings():
    for p in (math.inf, "inf", float("inf")):
        assert FrankWolfe(_p(), lr=0.1, radius=1.0, p=p).param_groups[0]["p"] == math.inf


# ---------------------------------------------------------------------------------------------------
# GradScaler recipe (tritonrnn.optim docstring)
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls,kwargs", ALL)
def test_grad_scaler_skips_non_finite_steps(backend, cls, kwargs):
    model, batches = _fit_problem(2)
    plain, _ = _fit_problem(2)
    opt = cls(model.parameters(), backend=backend, **kwargs)
    opt_plain = cls(plain.parameters(), backend=backend, **kwargs)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    for i, (x, y) in enumerate(batches[:4]):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        if i == 2:
            loss = loss * float("inf")  # an overflowing step: must be skipped entirely
            before = copy.deepcopy(opt.state_dict())
            params_before = [p.detach().clone() for p in model.parameters()]
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if i == 2:
            assert all(torch.equal(a, b.detach()) for a, b in zip(params_before, model.parameters()))
            after = opt.state_dict()
            assert after["param_groups"] == before["param_groups"]
            for k, st in before["state"].items():
                assert all(torch.equal(v, after["state"][k][n]) for n, v in st.items())
        else:
            opt_plain.zero_grad()
            torch.nn.functional.mse_loss(plain(x), y).backward()
            opt_plain.step()
    for a, b in zip(model.parameters(), plain.parameters()):
        assert_close(a.detach(), b.detach(), torch.float32, steps=4, scale=1.0)


# ---------------------------------------------------------------------------------------------------
# Multi-tensor tables
# ---------------------------------------------------------------------------------------------------
def test_plan_tables_are_cached_and_rebuilt_when_storage_changes():
    from tritonrnn.kernels.multi_tensor import BLOCK, MultiTensorPlan

    plan = MultiTensorPlan(torch.device("cpu"))
    xs = [torch.zeros(3), torch.zeros(BLOCK + 1), torch.zeros(0)]
    table = plan.pointers("x", xs)
    assert plan.pointers("x", xs) is table
    assert table.tolist() == [x.data_ptr() for x in xs]
    xs[1] = torch.zeros(BLOCK + 1)
    rebuilt = plan.pointers("x", xs)
    assert rebuilt is not table and rebuilt.tolist() == [x.data_ptr() for x in xs]
    numels, tensor_index, start, begin, chunks = plan.chunks(xs)
    assert chunks == 3 and tensor_index.tolist() == [0, 1, 1] and start.tolist() == [0, 0, BLOCK]
    assert begin.tolist() == [0, 1, 3, 3] and numels.tolist() == [3, BLOCK + 1, 0]
    assert plan.chunks(xs)[0] is numels
    xs[0] = torch.zeros(BLOCK * 2)
    assert plan.chunks(xs)[4] == 4


def test_grad_norm_is_deterministic_and_exact_enough():
    """The kernels' per-tensor (m, s), ‖g‖ = m·√s: m is max|g| exactly, m·√s the fp64 norm within an fp32
    sum of n terms, and the foreach path's pair agrees."""
    from tritonrnn.kernels.multi_tensor import MultiTensorPlan, grad_norm
    from tritonrnn.optim import _grad_norm_foreach

    specs = [(5000, torch.float32), (0, torch.float32), (2049, torch.float32)]
    params, grads = make_params(specs, 20), make_params(specs, 21)
    plan = MultiTensorPlan(torch.device("cpu"))
    m, s = grad_norm(plan, params, grads, weight_decay=0.1)
    m2, s2 = grad_norm(plan, params, grads, weight_decay=0.1)
    assert torch.equal(m, m2) and torch.equal(s, s2)
    g = [(gr.double() + 0.1 * p.double()) for p, gr in zip(params, grads)]
    assert torch.equal(m, torch.stack([(x.abs().max() if x.numel() else x.new_zeros(())).float() for x in g]))
    want = torch.stack([x.norm() for x in g])
    assert_close(m * s.sqrt(), want.float(), torch.float32, steps=5000, scale=1.0)
    mf, sf = _grad_norm_foreach(params, grads, weight_decay=0.1)
    assert torch.equal(mf, m)
    assert_close(sf, s, torch.float32, steps=5000, scale=1.0)


@pytest.mark.gpu
def test_no_host_synchronisation_inside_step():
    params = [torch.nn.Parameter(torch.randn(n, device="cuda")) for n in (10, 5000, 3)]
    for cls, kwargs in ALL + [(FrankWolfe, dict(lr=0.1, radius=0.5, norm="global", inner_steps=2))]:
        opt = cls(params, backend="triton", **kwargs)
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()  # builds state and tables
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(3):
                opt.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
