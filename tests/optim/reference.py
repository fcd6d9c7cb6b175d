"""Plain per-tensor implementations of SPEC §2, written from the equations (one tensor at a time, no
fusion, no shared code with tritonrnn.optim): the oracles of tests/optim.

Parameters are a list of tensors of any float dtype; each step's result is rounded to that dtype (as
the optimizers store it), state and arithmetic are fp32 (fp64 for fp64 parameters). `grad_fn(t, params)
-> grads` supplies the gradient of step t.
"""
from __future__ import annotations

import math

import torch


def _c(x):
    """x in the dtype the step computes in: fp64 for fp64, else fp32."""
    return x.double() if x.dtype == torch.float64 else x.float()


def restart_mus(restart, steps: int):
    """μ of each step under SPEC §2.1: k counts steps since the last restart, and a restart happens when k
    reaches the period F in force; stages [(until_step, F), ...] hold while step < until_step."""
    mus, k = [], 0
    for t in range(steps):
        if isinstance(restart, int):
            F = restart
        else:
            F = next((f for until, f in restart if t < until), restart[-1][1])
        if k >= F:
            k = 0
        mus.append(k / (k + 3.0))
        k += 1
    return mus


def sutskever_mus(mu_max: float, steps: int):
    """Sutskever et al. (2013) eq. 5."""
    return [min(1.0 - 2.0 ** (-1.0 - math.log2(t // 250 + 1)), mu_max) for t in range(steps)]


def srsgd(params, grad_fn, steps, *, lr, restart, weight_decay=0.0):
    """SPEC §2.1. `lr` may be a callable t -> lr (a schedule)."""
    params = [p.clone() for p in params]
    v_prev = [_c(p).clone() for p in params]
    mus = restart_mus(restart, steps)
    for t in range(steps):
        grads = grad_fn(t, params)
        eta = lr(t) if callable(lr) else lr
        for i, w in enumerate(params):
            w32 = _c(w)
            g = _c(grads[i]) + weight_decay * w32
            v = w32 - eta * g
            w.copy_(v + mus[t] * (v - v_prev[i]))
            v_prev[i] = v
    return params


def nag_lookahead(params, grad_fn, steps, *, lr, mus, nesterov=True, weight_decay=0.0):
    """SPEC §2.2 with the parameters held at the gradient point: θ for CM, φ = θ + μ_t v for NAG.
    `mus` has steps + 1 entries (the look-ahead of the last step needs μ_steps)."""
    params = [p.clone() for p in params]
    vel = [torch.zeros(p.shape, dtype=_c(p).dtype) for p in params]
    for t in range(steps):
        grads = grad_fn(t, params)
        for i, w in enumerate(params):
            w32 = _c(w)
            g = _c(grads[i]) + weight_decay * w32
            v_new = mus[t] * vel[i] - lr * g
            if nesterov:   # φ_{t+1} = θ_{t+1} + μ_{t+1} v_{t+1} with θ_t = φ_t − μ_t v_t
                w.copy_((w32 - mus[t] * vel[i]) + v_new + mus[t + 1] * v_new)
            else:
                w.copy_(w32 + v_new)
            vel[i] = v_new
    return params, vel


def nag_direct(theta, grad_at, steps, *, lr, mus, nesterov=True):
    """The equations of SPEC §2.2 as written, in fp64: v ← μ_t v − lr ∇f(θ + μ_t v); θ ← θ + v
    (CM: the gradient at θ). `grad_at(t, points)` gives the gradient at the given points.
    Returns (θ_T, v_T)."""
    theta = [x.double().clone() for x in theta]
    vel = [torch.zeros_like(x) for x in theta]
    for t in range(steps):
        points = [x + mus[t] * v for x, v in zip(theta, vel)] if nesterov else theta
        grads = grad_at(t, points)
        vel = [mus[t] * v - lr * g.double() for v, g in zip(vel, grads)]
        theta = [x + v for x, v in zip(theta, vel)]
    return theta, vel


def frank_wolfe(params, grad_fn, steps, *, lr, radius, inner_steps, p=2, norm="tensor", outer="adam",
                betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    """SPEC §2.3, Algorithm 1. `lr` and `radius` may be callables t -> value (schedules)."""
    params = [q.clone() for q in params]
    anchor = delta = None
    m = [torch.zeros(q.shape, dtype=_c(q).dtype) for q in params]
    v = [torch.zeros(q.shape, dtype=_c(q).dtype) for q in params]
    k, outer_t = 0, 0
    for t in range(steps):
        r = radius(t) if callable(radius) else radius
        eta = lr(t) if callable(lr) else lr
        grads = [_c(g) + weight_decay * _c(w) for g, w in zip(grad_fn(t, params), params)]
        k += 1
        if k == 1:
            anchor = [_c(w).clone() for w in params]
            delta = [torch.zeros(w.shape, dtype=_c(w).dtype) for w in params]
        if p == 2:
            if norm == "global":
                total = math.sqrt(sum(float(g.double().square().sum()) for g in grads))
                norms = [total] * len(grads)
            else:
                norms = [float(g.double().norm()) for g in grads]
            s = [-r * g / n if n > 0 else torch.zeros_like(g) for g, n in zip(grads, norms)]
        else:
            s = [-r * torch.sign(g) for g in grads]
        delta = [(1.0 - 1.0 / k) * d + (1.0 / k) * sk for d, sk in zip(delta, s)]
        if k < inner_steps:
            new = [a + d for a, d in zip(anchor, delta)]
        elif outer == "sgd":
            new = [a + eta * d for a, d in zip(anchor, delta)]
        else:
            outer_t += 1
            b1, b2 = betas
            new = []
            for i, (a, d) in enumerate(zip(anchor, delta)):
                gh = -d / r
                m[i] = b1 * m[i] + (1 - b1) * gh
                v[i] = b2 * v[i] + (1 - b2) * gh * gh
                denom = v[i].sqrt() / math.sqrt(1 - b2 ** outer_t) + eps
                new.append(a - eta / (1 - b1 ** outer_t) * m[i] / denom)
        if k == inner_steps:
            k = 0
        for w, x in zip(params, new):
            w.copy_(x)
    return params
