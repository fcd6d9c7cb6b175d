"""Step-by-step references for the input dynamics of SPEC §1.2 on [B, T, C] tensors.

These are the oracles of the scan kernels: one Python step per time step, reading like the equations.
State is carried in fp32 (fp64 when the input is fp64, for gradcheck); outputs are cast back to u's dtype.
"""
from __future__ import annotations

import torch

from ..schedules import restart_momentum


def _compute_dtype(u: torch.Tensor) -> torch.dtype:
    return torch.promote_types(u.dtype, torch.float32)


def _initial(state, u: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    B, _, C = u.shape
    if state is None:
        return u.new_zeros(B, C, dtype=dtype)
    return state.to(dtype)


def momentum_scan(u, mu, s, v0=None, *, restart=None, step_offset=0):
    """v_t = μ_t v_{t-1} + s u_t, with μ_t = mu, or the restart schedule (t mod F)/((t mod F)+3) when
    `restart` = F is given (t = step_offset + local step). Returns (v [B,T,C], v_T [B,C] fp32)."""
    dtype = _compute_dtype(u)
    v = _initial(v0, u, dtype)
    out = []
    for t, u_t in enumerate(u.unbind(1)):  # unbind, not u[:, t]: one backward node, not T full-size gradients
        lam = mu if restart is None else restart_momentum(step_offset + t, restart)
        v = lam * v + s * u_t.to(dtype)
        out.append(v)
    return _stack(out, u), v


def adam_scan(u, mu, s, beta, eps, v0=None, m0=None):
    """SPEC §1.2 Adam (RMSProp is mu = 0): v_t = μ v_{t-1} + s u_t; m_t = β m_{t-1} + (1-β) u_t²;
    a_t = v_t / (√m_t + ε) (paper eq. 15). Returns (a [B,T,C], v_T, m_T) with fp32 states."""
    dtype = _compute_dtype(u)
    v = _initial(v0, u, dtype)
    m = _initial(m0, u, dtype)
    out = []
    for u_t in u.unbind(1):
        ut = u_t.to(dtype)
        v = mu * v + s * ut
        m = beta * m + (1.0 - beta) * ut * ut
        out.append(v / (sqrt0(m) + eps))
    return _stack(out, u), v, m


def sqrt0(m: torch.Tensor) -> torch.Tensor:
    """√m whose derivative at m = 0 is taken as 0 instead of ∞.

    At m = 0 (zero input with zero history, e.g. bias=False on a blank pixel) a = v/(√m+ε) behaves like
    |u| and has no derivative; autograd's ∞·0 would give NaN. We take the subgradient 0, and the kernels
    do the same (SPEC §1.2 Adam/RMSProp; the reference code avoids it with sqrt(m + 1e-16))."""
    return _Sqrt0.apply(m)


class _Sqrt0(torch.autograd.Function):
    @staticmethod
    def forward(ctx, m):
        root = m.sqrt()
        ctx.save_for_backward(root)
        return root

    @staticmethod
    def backward(ctx, grad):
        (root,) = ctx.saved_tensors
        # Not once_differentiable: that decorator runs this under no_grad, so a create_graph=True backward
        # treated 1/(2√m) as a constant and Hessian-vector products came out wrong without an error (issue 14).
        return _Sqrt0Backward.apply(grad, root)


class _Sqrt0Backward(torch.autograd.Function):
    """grad · d√m/dm from the saved root, differentiable again (higher-order gradients are correct)."""

    @staticmethod
    def forward(ctx, grad, root):
        ctx.save_for_backward(grad, root)
        # 1/(2√m) written as √m/(2m) with m clamped at the smallest normal: exactly 1/(2√m) for every normal
        # m, and 0 at m = 0, without a mask (boolean masks cost 10-20x an arithmetic op on CPU).
        return grad * 0.5 * root / (root * root).clamp_min(torch.finfo(root.dtype).tiny)

    @staticmethod
    def backward(ctx, gg):
        # Only under create_graph=True (second order), so plain differentiable ops: r(root) = 1/(2 root) for
        # root > 0 and 0 at root = 0 (the subgradient convention of sqrt0); dr/droot = -1/(2 root²) there.
        # `safe` keeps the unused branch of each where() finite, so its gradient is 0, not 0·∞.
        grad, root = ctx.saved_tensors
        positive = root > 0
        safe = torch.where(positive, root, torch.ones_like(root))
        r = torch.where(positive, 0.5 / safe, torch.zeros_like(root))
        dr = torch.where(positive, -0.5 / (safe * safe), torch.zeros_like(root))
        return gg * r, gg * grad * dr


def _stack(steps, u):
    if not steps:
        return u.new_empty(u.shape)
    return torch.stack(steps, dim=1).to(u.dtype)
