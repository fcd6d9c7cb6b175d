"""Shared helpers of tests/optim: deterministic gradients, running an optimizer, comparing trajectories."""
from __future__ import annotations

import torch

from tests.tolerance import assert_close

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def make_params(specs, seed=0):
    """specs: [(numel, dtype)] -> list of plain tensors (values ~ N(0, 1), rounded to dtype)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g).to(dt) for n, dt in specs]


class QuadraticGrads:
    """grad_t = a ⊙ w + b_t (a ∈ [0, 1), b_t ~ N(0, 1) fresh each step), in the parameter's dtype:
    a contracting feedback so the trajectories stay bounded and the rounding differences do not grow.
    `zero=True` gives all-zero gradients; `feedback=False` drops the a ⊙ w term (a = 0)."""

    def __init__(self, params, seed=1, zero=False, feedback=True):
        g = torch.Generator().manual_seed(seed)
        self.a = [torch.rand(p.shape, generator=g) * float(feedback) for p in params]
        self.seed, self.zero = seed, zero

    def __call__(self, t, params):
        if self.zero:
            return [torch.zeros_like(p) for p in params]
        g = torch.Generator().manual_seed(self.seed * 100003 + t)
        return [(a * p.float() + torch.randn(p.shape, generator=g)).to(p.dtype) for a, p in zip(self.a, params)]


def twin_step(eager, eager_ps, compiled_step, comp_ps, init, generator, device="cpu"):
    """One step of an eager optimizer and its compiled twin on the same fresh gradients N(0, 1), shaped like
    `init`; the third parameter gets none (a parameter without a gradient is skipped by the step)."""
    grads = [torch.randn(x.shape, generator=generator).to(device) for x in init]
    grads[2] = None
    for ps in (eager_ps, comp_ps):
        for p, grad in zip(ps, grads):
            p.grad = None if grad is None else grad.clone()
    eager.step()
    compiled_step()


def run(make_opt, params, grad_fn, steps, *, opt=None):
    """Train copies of `params` (as nn.Parameters) with make_opt(list) for `steps` steps; returns
    (parameters, optimizer)."""
    ps = [torch.nn.Parameter(p.clone()) for p in params]
    opt = make_opt(ps) if opt is None else opt
    for t in range(steps):
        for p, g in zip(ps, grad_fn(t, [p.detach() for p in ps])):
            p.grad = g
        opt.step()
    return [p.detach() for p in ps], opt


def assert_trajectory_close(actual, expected, steps, msg=""):
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.dtype == e.dtype and a.shape == e.shape
        scale = 1.0 + (float(e.float().abs().max()) if e.numel() else 0.0)
        assert_close(a, e, a.dtype, steps=steps, scale=scale, msg=f"{msg} tensor {i} ({a.dtype}, {a.numel()})")
