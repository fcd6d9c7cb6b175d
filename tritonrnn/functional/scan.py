"""Input dynamics of SPEC §1.2 as functions on [B, T, C] sequences: momentum / restart, Adam, RMSProp.

Same signatures as the step-by-step references (tritonrnn.reference.scans) plus `backend`:
- "triton": the chunked-scan kernels of tritonrnn.kernels.scan (CUDA, or the interpreter on CPU); they
  read u through its strides (a transposed time-major view needs no copy) and their outputs keep u's
  memory layout.
- "torch": the step-by-step references themselves (STYLE.md: the reference is the CPU fallback of last
  resort), differentiable by autograd; the CPU default and the only path for float64 (gradcheck). Their
  outputs are copied into u's layout when u is a permuted view.
Final states are fp32 (fp64 for fp64 input), outputs have u's dtype.
"""
from __future__ import annotations

import torch

from .._backend import kernel_module, resolve_backend
from .._validate import FLOAT_DTYPES, check_eps, check_float, check_int, check_shape, check_tensor
from ..reference import scans as reference

__all__ = ["momentum_scan", "adam_scan", "rmsprop_scan"]

# float64 runs on the torch path only (the kernels accumulate in fp32); it exists for gradcheck.
_DTYPES = FLOAT_DTYPES + (torch.float64,)


def momentum_scan(u, mu, s, v0=None, *, restart=None, step_offset=0, backend="auto"):
    """SPEC §1.2 momentum / restart: v_t = λ_t v_{t-1} + s u_t with λ_t = `mu`, or, when `restart` = F is
    given, λ_t = (k mod F)/((k mod F)+3) with k = step_offset + t (`mu` is then unused).

    u: [B, T, C]; v0: [B, C] or None (zeros). Returns (v [B, T, C] in u's dtype, v_T [B, C] fp32)."""
    u = _check_sequence(u)
    v0 = _check_state(v0, "v0", u)
    mu = check_float(mu, "mu", low=0.0, high=1.0, high_open=True)
    s = check_float(s, "s")
    if restart is not None:
        restart = check_int(restart, "restart", low=1)
    step_offset = check_int(step_offset, "step_offset", low=0)
    path = _backend(backend, u)
    if u.numel() == 0:
        return _no_steps(u), _initial(v0, u)
    if path == "triton":
        return _kernels().momentum_scan(u, v0, mu, s, restart, step_offset)
    v, vT = reference.momentum_scan(u, mu, s, v0, restart=restart, step_offset=step_offset)
    return _like(v, u), vT


def adam_scan(u, mu, s, beta, eps, v0=None, m0=None, *, backend="auto"):
    """SPEC §1.2 Adam, paper eq. 15: v_t = μ v_{t-1} + s u_t; m_t = β m_{t-1} + (1-β) u_t²;
    a_t = v_t / (√m_t + ε), with d√m/dm taken as 0 at m = 0 (reference.sqrt0).

    u: [B, T, C]; v0, m0: [B, C] or None (zeros). Returns (a [B, T, C] in u's dtype, v_T, m_T fp32)."""
    u = _check_sequence(u)
    v0 = _check_state(v0, "v0", u)
    m0 = _check_state(m0, "m0", u)
    mu = check_float(mu, "mu", low=0.0, high=1.0, high_open=True)
    s = check_float(s, "s")
    beta = check_float(beta, "beta", low=0.0, high=1.0, high_open=True)
    eps = check_eps(eps)
    return _adam(u, mu, s, beta, eps, v0, m0, _backend(backend, u))


def rmsprop_scan(u, s, beta, eps, m0=None, *, backend="auto"):
    """SPEC §1.2 RMSProp (Adam with μ = 0): m_t = β m_{t-1} + (1-β) u_t²; a_t = s u_t / (√m_t + ε).

    u: [B, T, C]; m0: [B, C] or None (zeros). Returns (a [B, T, C] in u's dtype, m_T fp32)."""
    u = _check_sequence(u)
    m0 = _check_state(m0, "m0", u)
    s = check_float(s, "s")
    beta = check_float(beta, "beta", low=0.0, high=1.0, high_open=True)
    eps = check_eps(eps)
    a, _, mT = _adam(u, 0.0, s, beta, eps, None, m0, _backend(backend, u))
    return a, mT


def _adam(u, mu, s, beta, eps, v0, m0, path):
    if u.numel() == 0:
        return _no_steps(u), _initial(v0, u), _initial(m0, u)
    if path == "triton":
        return _kernels().adam_scan(u, v0, m0, mu, s, beta, eps)
    a, vT, mT = reference.adam_scan(u, mu, s, beta, eps, v0, m0)
    return _like(a, u), vT, mT


# ------------------------------------------------------------------------------------------ checks
def _check_sequence(u):
    return check_tensor(u, "u", ndim=3, dtypes=_DTYPES)


def _check_state(x, name, u):
    if x is None:
        return None
    check_tensor(x, name, ndim=2, dtypes=_DTYPES, device=u.device)
    return check_shape(x, name, (u.shape[0], u.shape[2]))


def _backend(backend, u):
    path = resolve_backend(backend, u.device)
    if u.dtype == torch.float64 and path == "triton":
        if backend == "triton":
            raise TypeError("u must have dtype in [torch.float32, torch.bfloat16, torch.float16] for "
                            "backend='triton' (the kernels accumulate in fp32); float64 runs with backend='torch'")
        return "torch"  # "auto" picks the path that supports the dtype
    return path


def _like(x, u):
    """x in u's dtype and memory layout (functional/__init__: outputs keep the input's layout)."""
    x = x.to(u.dtype)
    if x.stride() == u.stride():
        return x
    return torch.empty_like(u).copy_(x)


def _state_dtype(u):
    return torch.promote_types(u.dtype, torch.float32)


def _no_steps(u):
    # B, T or C is 0: nothing to launch. A clone of the empty u keeps the output on u's autograd graph.
    return u.clone()


def _initial(state, u):
    """The state entering the scan (a copy, so a T = 0 call never aliases its argument)."""
    B, _, C = u.shape
    if state is None:
        return torch.zeros(B, C, dtype=_state_dtype(u), device=u.device)
    return state.to(_state_dtype(u), copy=True)


def _kernels():
    # Imported on first use: tritonrnn imports without triton (_backend.resolve_backend checked it exists).
    return kernel_module("scan")  # importlib is untraceable under torch.compile
