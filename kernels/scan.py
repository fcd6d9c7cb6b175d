"""Chunked scans for the input dynamics of SPEC §1.2 (momentum, restart, Adam, RMSProp) on [B, T, C].

Layout and parallelism (KERNELS.md §1): one program per (batch row, C-block); C is the vectorised axis and
time is walked inside the program in chunks of BLOCK_T steps. Inside a chunk the first-order recurrence
y_t = λ_t y_{t-1} + x_t is a parallel `tl.associative_scan` over (λ, x) pairs; the chunk's last value is
the carry into the next chunk. Every state and accumulator is fp32 whatever the input dtype; outputs are
cast explicitly on store. Tensors are addressed through their strides, so transposed (time-major) views
need no copy; the small [B, C] states are made contiguous fp32 by the launchers.

Backward (reverse-mode of the same recurrences) is a reverse-time scan of the adjoints with the same
chunking (`associative_scan(..., reverse=True)`, whose combine order equals flip → scan → flip in both the
interpreter and the compiler). For Adam the backward needs v_t and m_t: the forward saves the two states at
every chunk boundary ([B, ceil(T/BLOCK_T), C] fp32, 2/BLOCK_T of the bytes of u) and the backward recomputes
the chunk from them. That adds no HBM traffic beyond the carries (the backward reads u anyway, for
du = s·gv + 2(1−β)·u·gm), where saving v and m in fp32 would write 8 bytes per element in the forward and
read them again in the backward: twice what a bf16 forward moves in all (read u, write a: 4 bytes).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ._aot import AotConfig
from ._ops import NOTHING, backward_follows, device_guard, nothing, refuse_double_backward

# Default tiles, picked by the AOT compile report (KERNELS.md §1: BT=32, BC=64 at 4 warps builds without
# spills for one scan; BT=64, BC=128 spills). The backward kernels hold more live tiles (momentum: the
# reverse scan plus its coefficients; Adam: four scans) and use 32-wide C-blocks: at BC=64 the momentum
# backward spilled 8 bytes on sm_90 (bf16) and on sm_80 with 8 warps. The Adam forward (two scans) runs 8
# warps: compiled as the JIT sees a contiguous launch (unit channel stride a constexpr, KERNELS.md §4), its
# bf16 form spilled 8 bytes on sm_80 at 4 warps (96 registers); at 8 warps both dtypes build at 64 registers
# without spills on sm_80 and sm_90.
BLOCK_T = 32
MOMENTUM_BLOCK_C = 64
MOMENTUM_BWD_BLOCK_C = 32
ADAM_FWD_BLOCK_C = 64
ADAM_BWD_BLOCK_C = 32
NUM_WARPS = 4
ADAM_FWD_WARPS = 8


# --------------------------------------------------------------------------------------------- helpers
@triton.jit
def _first_order_combine(a_l, y_l, a_r, y_r):
    # Composition of two steps y -> a_l*y + y_l, then y -> a_r*y + y_r (l comes first in scan order).
    return a_l * a_r, a_r * y_l + y_r


@triton.jit
def _chunk_scan(coef, x, carry, REVERSE: tl.constexpr):
    """y_i = coef_i * y_{i∓1} + x_i over the rows of a [BLOCK_T, BLOCK_C] tile, entering with `carry`
    (the state before the first row, or after the last one when REVERSE)."""
    a, y = tl.associative_scan((coef, x), axis=0, combine_fn=_first_order_combine, reverse=REVERSE)
    return a * carry[None, :] + y


@triton.jit
def _row(x, offs_t, row):
    # One row of a tile as a [BLOCK_C] vector (the carry between chunks).
    return tl.sum(tl.where(offs_t[:, None] == row, x, 0.0), axis=0)


@triton.jit
def _restart_coef(k, restart):
    # SPEC §1.2 restart family: μ_k = (k mod F)/((k mod F)+3) (schedules.restart_momentum).
    r = (k % restart).to(tl.float32)
    return tl.div_rn(r, r + 3.0)


@triton.jit
def _step_coef(t, mu, restart, phase, RESTART: tl.constexpr):
    # λ_t for the local steps t; `phase` = step_offset mod F, reduced on the host so it fits i32.
    if RESTART:
        lam = _restart_coef(phase + t, restart)
    else:
        lam = tl.zeros(t.shape, tl.float32) + mu
    return lam


# ------------------------------------------------------------------------------ momentum and restart
@triton.jit(do_not_specialize=["T"])
def _momentum_scan_fwd_kernel(
    U, V0, V, VT,
    T, C,
    stride_ub, stride_ut, stride_uc,
    stride_vb, stride_vt, stride_vc,
    mu, s, restart, phase,
    HAS_V0: tl.constexpr, STORE_VT: tl.constexpr, RESTART: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """SPEC §1.2 momentum / restart: v_t = λ_t v_{t-1} + s u_t, λ_t = mu or the restart schedule."""
    pid_b = tl.program_id(0).to(tl.int64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    offs_t = tl.arange(0, BLOCK_T)
    offs_c64 = offs_c.to(tl.int64)
    u_ptrs = U + pid_b * stride_ub + offs_c64[None, :] * stride_uc
    v_ptrs = V + pid_b * stride_vb + offs_c64[None, :] * stride_vc
    state = pid_b * C + offs_c64  # states are contiguous [B, C] fp32

    if HAS_V0:
        carry = tl.load(V0 + state, mask=mask_c, other=0.0)
    else:
        carry = tl.zeros([BLOCK_C], tl.float32)
    for t0 in range(0, T, BLOCK_T):
        t = t0 + offs_t
        mask_t = t < T
        mask = mask_t[:, None] & mask_c[None, :]
        t64 = t.to(tl.int64)[:, None]
        u = tl.load(u_ptrs + t64 * stride_ut, mask=mask, other=0.0).to(tl.float32)
        # Rows past T pass the carry through unchanged (λ = 1, input 0), so the last row is v_{T-1}.
        lam = tl.where(mask_t, _step_coef(t, mu, restart, phase, RESTART), 1.0)
        coef = tl.broadcast_to(lam[:, None], (BLOCK_T, BLOCK_C))
        v = _chunk_scan(coef, s * u, carry, False)
        tl.store(v_ptrs + t64 * stride_vt, v.to(V.dtype.element_ty), mask=mask)
        carry = _row(v, offs_t, BLOCK_T - 1)
    if STORE_VT:
        tl.store(VT + state, carry, mask=mask_c)


@triton.jit(do_not_specialize=["T"])
def _momentum_scan_bwd_kernel(
    DV, DVT, DU, DV0,
    T, C,
    stride_gb, stride_gt, stride_gc,
    stride_db, stride_dt, stride_dc,
    mu, s, restart, phase,
    HAS_DVT: tl.constexpr, STORE_DV0: tl.constexpr, RESTART: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Adjoint of the momentum scan: g_t = dv_t + λ_{t+1} g_{t+1}, g_{T-1} also receives dv_T;
    du_t = s g_t; dv_0 = λ_0 g_0."""
    pid_b = tl.program_id(0).to(tl.int64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    offs_t = tl.arange(0, BLOCK_T)
    offs_c64 = offs_c.to(tl.int64)
    g_ptrs = DV + pid_b * stride_gb + offs_c64[None, :] * stride_gc
    d_ptrs = DU + pid_b * stride_db + offs_c64[None, :] * stride_dc
    state = pid_b * C + offs_c64

    if HAS_DVT:
        carry = tl.load(DVT + state, mask=mask_c, other=0.0)
    else:
        carry = tl.zeros([BLOCK_C], tl.float32)
    n_chunks = tl.cdiv(T, BLOCK_T)
    for i in range(0, n_chunks):
        t = (n_chunks - 1 - i) * BLOCK_T + offs_t
        mask_t = t < T
        mask = mask_t[:, None] & mask_c[None, :]
        t64 = t.to(tl.int64)[:, None]
        dv = tl.load(g_ptrs + t64 * stride_gt, mask=mask, other=0.0).to(tl.float32)
        # Coefficient of g_{t+1} in g_t is λ_{t+1}; at t = T-1 the "next" value is dv_T itself (coef 1),
        # and rows past T pass it through.
        lam = tl.where(t + 1 < T, _step_coef(t + 1, mu, restart, phase, RESTART), 1.0)
        coef = tl.broadcast_to(lam[:, None], (BLOCK_T, BLOCK_C))
        g = _chunk_scan(coef, dv, carry, True)
        tl.store(d_ptrs + t64 * stride_dt, (s * g).to(DU.dtype.element_ty), mask=mask)
        carry = _row(g, offs_t, 0)
    if STORE_DV0:
        lam0 = _step_coef(tl.zeros([BLOCK_C], tl.int32), mu, restart, phase, RESTART)
        tl.store(DV0 + state, lam0 * carry, mask=mask_c)


# ----------------------------------------------------------------------------------- Adam / RMSProp
@triton.jit(do_not_specialize=["T"])
def _adam_scan_fwd_kernel(
    U, V0, M0, A, VT, MT, CARRY_V, CARRY_M,
    T, C,
    stride_ub, stride_ut, stride_uc,
    stride_ab, stride_at, stride_ac,
    mu, s, beta, eps,
    HAS_V0: tl.constexpr, HAS_M0: tl.constexpr, STORE_VT: tl.constexpr, STORE_MT: tl.constexpr,
    STORE_CARRY: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """SPEC §1.2 Adam (RMSProp: mu = 0), paper eq. 15, from one read of u:
    v_t = μ v_{t-1} + s u_t;  m_t = β m_{t-1} + (1-β) u_t²;  a_t = v_t / (√m_t + ε)."""
    pid_b = tl.program_id(0).to(tl.int64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    offs_t = tl.arange(0, BLOCK_T)
    offs_c64 = offs_c.to(tl.int64)
    u_ptrs = U + pid_b * stride_ub + offs_c64[None, :] * stride_uc
    a_ptrs = A + pid_b * stride_ab + offs_c64[None, :] * stride_ac
    state = pid_b * C + offs_c64
    n_chunks = tl.cdiv(T, BLOCK_T)
    # [B, n_chunks, C] fp32: the states entering each chunk; a 64-bit pointer stepped by C per chunk.
    carries = pid_b * n_chunks * C + offs_c64
    cv_ptrs = CARRY_V + carries
    cm_ptrs = CARRY_M + carries

    if HAS_V0:
        v_carry = tl.load(V0 + state, mask=mask_c, other=0.0)
    else:
        v_carry = tl.zeros([BLOCK_C], tl.float32)
    if HAS_M0:
        m_carry = tl.load(M0 + state, mask=mask_c, other=0.0)
    else:
        m_carry = tl.zeros([BLOCK_C], tl.float32)
    for k in range(0, n_chunks):
        if STORE_CARRY:
            tl.store(cv_ptrs, v_carry, mask=mask_c)
            tl.store(cm_ptrs, m_carry, mask=mask_c)
        cv_ptrs += C
        cm_ptrs += C
        t = k * BLOCK_T + offs_t
        mask_t = t < T
        mask = mask_t[:, None] & mask_c[None, :]
        t64 = t.to(tl.int64)[:, None]
        u = tl.load(u_ptrs + t64 * stride_ut, mask=mask, other=0.0).to(tl.float32)
        v, m = _adam_chunk_states(u, mask_t, v_carry, m_carry, mu, s, beta, BLOCK_T, BLOCK_C)
        a = tl.div_rn(v, tl.sqrt_rn(m) + eps)
        tl.store(a_ptrs + t64 * stride_at, a.to(A.dtype.element_ty), mask=mask)
        v_carry = _row(v, offs_t, BLOCK_T - 1)
        m_carry = _row(m, offs_t, BLOCK_T - 1)
    if STORE_VT:
        tl.store(VT + state, v_carry, mask=mask_c)
    if STORE_MT:
        tl.store(MT + state, m_carry, mask=mask_c)


@triton.jit
def _adam_chunk_states(u, mask_t, v_carry, m_carry, mu, s, beta, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    # v and m over one chunk; shared by the forward and the backward's recompute so both see the same bits.
    # Rows past T keep the state (coefficient 1, input 0).
    mu_t = tl.broadcast_to(tl.where(mask_t, mu, 1.0)[:, None], (BLOCK_T, BLOCK_C))
    beta_t = tl.broadcast_to(tl.where(mask_t, beta, 1.0)[:, None], (BLOCK_T, BLOCK_C))
    v = _chunk_scan(mu_t, s * u, v_carry, False)
    m = _chunk_scan(beta_t, (1.0 - beta) * (u * u), m_carry, False)
    return v, m


@triton.jit(do_not_specialize=["T"])
def _adam_scan_bwd_kernel(
    U, DA, DVT, DMT, CARRY_V, CARRY_M, DU, DV0, DM0,
    T, C,
    stride_ub, stride_ut, stride_uc,
    stride_gb, stride_gt, stride_gc,
    stride_db, stride_dt, stride_dc,
    mu, s, beta, eps,
    HAS_DVT: tl.constexpr, HAS_DMT: tl.constexpr, STORE_DV0: tl.constexpr, STORE_DM0: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Adjoint of the Adam scan, chunks in reverse, v and m recomputed from the saved chunk carries:
    gv_t = da_t/(√m_t+ε) + μ gv_{t+1};  gm_t = −da_t v_t / ((√m_t+ε)² 2√m_t) + β gm_{t+1}  (0 at m_t = 0,
    reference sqrt0);  du_t = s gv_t + 2(1−β) u_t gm_t;  dv_0 = μ gv_0, dm_0 = β gm_0."""
    pid_b = tl.program_id(0).to(tl.int64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    offs_t = tl.arange(0, BLOCK_T)
    offs_c64 = offs_c.to(tl.int64)
    u_ptrs = U + pid_b * stride_ub + offs_c64[None, :] * stride_uc
    g_ptrs = DA + pid_b * stride_gb + offs_c64[None, :] * stride_gc
    d_ptrs = DU + pid_b * stride_db + offs_c64[None, :] * stride_dc
    state = pid_b * C + offs_c64
    n_chunks = tl.cdiv(T, BLOCK_T)
    # The saved carries of the last chunk; a 64-bit pointer stepped back by C per chunk.
    carries = (pid_b + 1) * n_chunks * C - C + offs_c64
    cv_ptrs = CARRY_V + carries
    cm_ptrs = CARRY_M + carries

    if HAS_DVT:
        gv_carry = tl.load(DVT + state, mask=mask_c, other=0.0)
    else:
        gv_carry = tl.zeros([BLOCK_C], tl.float32)
    if HAS_DMT:
        gm_carry = tl.load(DMT + state, mask=mask_c, other=0.0)
    else:
        gm_carry = tl.zeros([BLOCK_C], tl.float32)
    for i in range(0, n_chunks):
        k = n_chunks - 1 - i
        t = k * BLOCK_T + offs_t
        mask_t = t < T
        mask = mask_t[:, None] & mask_c[None, :]
        t64 = t.to(tl.int64)[:, None]
        u = tl.load(u_ptrs + t64 * stride_ut, mask=mask, other=0.0).to(tl.float32)
        da = tl.load(g_ptrs + t64 * stride_gt, mask=mask, other=0.0).to(tl.float32)
        v_in = tl.load(cv_ptrs, mask=mask_c, other=0.0)
        m_in = tl.load(cm_ptrs, mask=mask_c, other=0.0)
        cv_ptrs -= C
        cm_ptrs -= C
        v, m = _adam_chunk_states(u, mask_t, v_in, m_in, mu, s, beta, BLOCK_T, BLOCK_C)
        positive = m > 0.0
        root = tl.sqrt_rn(tl.where(positive, m, 1.0))
        den = root + eps
        dv = tl.div_rn(da, tl.where(positive, den, eps))
        dm = tl.where(positive, -tl.div_rn(da * v, den * den * (2.0 * root)), 0.0)
        # Coefficient of the t+1 adjoint; at t = T-1 it is the final-state gradient itself (coef 1).
        nxt = (t + 1 < T)[:, None]
        gv = _chunk_scan(tl.broadcast_to(tl.where(nxt, mu, 1.0), (BLOCK_T, BLOCK_C)), dv, gv_carry, True)
        gm = _chunk_scan(tl.broadcast_to(tl.where(nxt, beta, 1.0), (BLOCK_T, BLOCK_C)), dm, gm_carry, True)
        du = s * gv + (2.0 * (1.0 - beta)) * u * gm
        tl.store(d_ptrs + t64 * stride_dt, du.to(DU.dtype.element_ty), mask=mask)
        gv_carry = _row(gv, offs_t, 0)
        gm_carry = _row(gm, offs_t, 0)
    if STORE_DV0:
        tl.store(DV0 + state, mu * gv_carry, mask=mask_c)
    if STORE_DM0:
        tl.store(DM0 + state, beta * gm_carry, mask=mask_c)


# ------------------------------------------------------------------------------------------ launchers
def _empty_like(x: torch.Tensor) -> torch.Tensor:
    """Every sequence output is allocated here (keeps x's memory layout); tests poison it with NaN."""
    return torch.empty_like(x)


def _empty_state(shape, device) -> torch.Tensor:
    """Every fp32 state and chunk-carry output is allocated here; tests poison it with NaN."""
    return torch.empty(shape, dtype=torch.float32, device=device)


def _state_in(x):
    return None if x is None else x.detach().to(torch.float32).contiguous()


def _block_c(C: int, cap: int) -> int:
    # Narrow sequences (e.g. the width-2 commuted scan of SPEC §1.4) should not pay for a 64-wide tile.
    return max(16, min(cap, triton.next_power_of_2(C)))


def _restart_args(mu, restart, step_offset):
    if restart is None:
        return float(mu), 1, 0, False
    # (step_offset + t) mod F == ((step_offset mod F) + t) mod F, and the reduced phase fits i32.
    return 0.0, int(restart), int(step_offset) % int(restart), True


def momentum_scan_fwd(u, v0, mu, s, restart=None, step_offset=0):
    """(v [B,T,C] in u's dtype and layout, v_T [B,C] fp32). Arguments are validated by the caller."""
    B, T, C = u.shape
    v = _empty_like(u)
    vT = _empty_state((B, C), u.device)
    v0 = _state_in(v0)
    mu, restart, phase, is_restart = _restart_args(mu, restart, step_offset)
    BC = _block_c(C, MOMENTUM_BLOCK_C)
    with device_guard(u.device):
        _momentum_scan_fwd_kernel[(B, triton.cdiv(C, BC))](
            u, v0 if v0 is not None else vT, v, vT, T, C,
            *u.stride(), *v.stride(), mu, float(s), restart, phase,
            HAS_V0=v0 is not None, STORE_VT=True, RESTART=is_restart,
            BLOCK_T=BLOCK_T, BLOCK_C=BC, num_warps=NUM_WARPS)
    return v, vT


def momentum_scan_bwd(dv, dvT, mu, s, restart=None, step_offset=0, *, need_dv0=True):
    """(du [B,T,C] in dv's dtype and layout, dv0 [B,C] fp32 or None)."""
    B, T, C = dv.shape
    du = _empty_like(dv)
    dv0 = _empty_state((B, C), dv.device) if need_dv0 else None
    dvT = _state_in(dvT)
    mu, restart, phase, is_restart = _restart_args(mu, restart, step_offset)
    BC = _block_c(C, MOMENTUM_BWD_BLOCK_C)
    dummy = du
    with device_guard(dv.device):
        _momentum_scan_bwd_kernel[(B, triton.cdiv(C, BC))](
            dv, dvT if dvT is not None else dummy, du, dv0 if dv0 is not None else dummy, T, C,
            *dv.stride(), *du.stride(), mu, float(s), restart, phase,
            HAS_DVT=dvT is not None, STORE_DV0=need_dv0, RESTART=is_restart,
            BLOCK_T=BLOCK_T, BLOCK_C=BC, num_warps=NUM_WARPS)
    return du, dv0


def adam_scan_fwd(u, v0, m0, mu, s, beta, eps, *, save_carries=False):
    """(a [B,T,C] in u's dtype and layout, v_T, m_T [B,C] fp32, carries): carries is None or the pair of
    [B, ceil(T/BLOCK_T), C] fp32 states entering each chunk, for adam_scan_bwd."""
    B, T, C = u.shape
    a = _empty_like(u)
    vT = _empty_state((B, C), u.device)
    mT = _empty_state((B, C), u.device)
    v0, m0 = _state_in(v0), _state_in(m0)
    n_chunks = triton.cdiv(T, BLOCK_T)
    if save_carries:
        carries = (_empty_state((B, n_chunks, C), u.device), _empty_state((B, n_chunks, C), u.device))
    else:
        carries = None
    BC = _block_c(C, ADAM_FWD_BLOCK_C)
    with device_guard(u.device):
        _adam_scan_fwd_kernel[(B, triton.cdiv(C, BC))](
            u, v0 if v0 is not None else vT, m0 if m0 is not None else mT, a, vT, mT,
            *(carries if carries is not None else (vT, mT)), T, C,
            *u.stride(), *a.stride(), float(mu), float(s), float(beta), float(eps),
            HAS_V0=v0 is not None, HAS_M0=m0 is not None, STORE_VT=True, STORE_MT=True,
            STORE_CARRY=carries is not None, BLOCK_T=BLOCK_T, BLOCK_C=BC, num_warps=ADAM_FWD_WARPS)
    return a, vT, mT, carries


def adam_scan_bwd(u, da, dvT, dmT, carries, mu, s, beta, eps, *, need_dv0=True, need_dm0=True):
    """(du [B,T,C] in u's dtype and layout, dv0, dm0 [B,C] fp32 or None) from adam_scan_fwd's carries."""
    B, T, C = u.shape
    du = _empty_like(u)
    dv0 = _empty_state((B, C), u.device) if need_dv0 else None
    dm0 = _empty_state((B, C), u.device) if need_dm0 else None
    dvT, dmT = _state_in(dvT), _state_in(dmT)
    BC = _block_c(C, ADAM_BWD_BLOCK_C)
    dummy = du
    with device_guard(u.device):
        _adam_scan_bwd_kernel[(B, triton.cdiv(C, BC))](
            u, da, dvT if dvT is not None else dummy, dmT if dmT is not None else dummy, *carries, du,
            dv0 if dv0 is not None else dummy, dm0 if dm0 is not None else dummy, T, C,
            *u.stride(), *da.stride(), *du.stride(), float(mu), float(s), float(beta), float(eps),
            HAS_DVT=dvT is not None, HAS_DMT=dmT is not None, STORE_DV0=need_dv0, STORE_DM0=need_dm0,
            BLOCK_T=BLOCK_T, BLOCK_C=BC, num_warps=NUM_WARPS)
    return du, dv0, dm0


# ------------------------------------------------------------------------------ custom ops + autograd
# The launchers as torch custom ops (torch.library, torch >= 2.4) so torch.compile(fullgraph=True) traces
# them as opaque nodes: fake implementations give the output shapes/strides, register_autograd the backward.
# Ops return no None and no input alias: an absent output is an empty tensor, `restart` 0 means "constant mu".
@torch.library.custom_op("tritonrnn::momentum_scan_fwd", mutates_args=(), schema=(
    "(Tensor u, Tensor? v0, float mu, float s, int restart, int step_offset) -> (Tensor, Tensor)"))
def _momentum_scan_fwd_op(u: torch.Tensor, v0: Optional[torch.Tensor], mu: float, s: float, restart: int,
                          step_offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    return momentum_scan_fwd(u, v0, mu, s, restart or None, step_offset)


@_momentum_scan_fwd_op.register_fake
def _(u, v0, mu, s, restart, step_offset):
    B, _, C = u.shape
    return torch.empty_like(u), u.new_empty((B, C), dtype=torch.float32)


@torch.library.custom_op("tritonrnn::momentum_scan_bwd", mutates_args=(), schema=(
    "(Tensor dv, Tensor? dvT, float mu, float s, int restart, int step_offset, bool need_dv0) -> (Tensor, Tensor)"))
def _momentum_scan_bwd_op(dv: torch.Tensor, dvT: Optional[torch.Tensor], mu: float, s: float, restart: int,
                          step_offset: int, need_dv0: bool) -> tuple[torch.Tensor, torch.Tensor]:
    du, dv0 = momentum_scan_bwd(dv, dvT, mu, s, restart or None, step_offset, need_dv0=need_dv0)
    return du, (dv0 if dv0 is not None else nothing(dv))


@_momentum_scan_bwd_op.register_fake
def _(dv, dvT, mu, s, restart, step_offset, need_dv0):
    B, _, C = dv.shape
    return torch.empty_like(dv), dv.new_empty((B, C) if need_dv0 else NOTHING, dtype=torch.float32)


def _momentum_setup(ctx, inputs, output):
    u, v0, mu, s, restart, step_offset = inputs
    ctx.set_materialize_grads(False)
    ctx.hyper = (mu, s, restart, step_offset)
    ctx.v0_dtype = v0.dtype if v0 is not None else None
    ctx.u_meta = (u.shape, u.dtype, u.device)


def _momentum_backward(ctx, dv, dvT):
    refuse_double_backward("momentum_scan")
    # Cotangents of unused outputs arrive as None (eager) or zeros (compiled); both give the same grads.
    mu, s, restart, step_offset = ctx.hyper
    need_du, need_v0 = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if dv is None and dvT is None:
        return None, None, None, None, None, None
    if dv is None:  # only v_T was used
        shape, dtype, device = ctx.u_meta
        dv = torch.zeros(shape, dtype=dtype, device=device)
    du, dv0 = _momentum_scan_bwd_op(dv, dvT, mu, s, restart, step_offset, need_v0)
    dv0 = dv0.to(ctx.v0_dtype) if need_v0 else None
    return (du if need_du else None), dv0, None, None, None, None


_momentum_scan_fwd_op.register_autograd(_momentum_backward, setup_context=_momentum_setup)


@torch.library.custom_op("tritonrnn::adam_scan_fwd", mutates_args=(), schema=(
    "(Tensor u, Tensor? v0, Tensor? m0, float mu, float s, float beta, float eps, bool save_carries) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor)"))
def _adam_scan_fwd_op(u: torch.Tensor, v0: Optional[torch.Tensor], m0: Optional[torch.Tensor], mu: float,
                      s: float, beta: float, eps: float, save_carries: bool
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    a, vT, mT, carries = adam_scan_fwd(u, v0, m0, mu, s, beta, eps, save_carries=save_carries)
    if carries is None:
        carries = (nothing(u), nothing(u))
    return a, vT, mT, *carries


@_adam_scan_fwd_op.register_fake
def _(u, v0, m0, mu, s, beta, eps, save_carries):
    B, T, C = u.shape
    carry = (B, triton.cdiv(T, BLOCK_T), C) if save_carries else NOTHING
    state = u.new_empty((B, C), dtype=torch.float32)
    return (torch.empty_like(u), state, torch.empty_like(state), u.new_empty(carry, dtype=torch.float32),
            u.new_empty(carry, dtype=torch.float32))


@torch.library.custom_op("tritonrnn::adam_scan_bwd", mutates_args=(), schema=(
    "(Tensor u, Tensor da, Tensor? dvT, Tensor? dmT, Tensor carry_v, Tensor carry_m, float mu, float s, "
    "float beta, float eps, bool need_dv0, bool need_dm0) -> (Tensor, Tensor, Tensor)"))
def _adam_scan_bwd_op(u: torch.Tensor, da: torch.Tensor, dvT: Optional[torch.Tensor], dmT: Optional[torch.Tensor],
                      carry_v: torch.Tensor, carry_m: torch.Tensor, mu: float, s: float, beta: float, eps: float,
                      need_dv0: bool, need_dm0: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    du, dv0, dm0 = adam_scan_bwd(u, da, dvT, dmT, (carry_v, carry_m), mu, s, beta, eps,
                                 need_dv0=need_dv0, need_dm0=need_dm0)
    return du, (dv0 if dv0 is not None else nothing(u)), (dm0 if dm0 is not None else nothing(u))


@_adam_scan_bwd_op.register_fake
def _(u, da, dvT, dmT, carry_v, carry_m, mu, s, beta, eps, need_dv0, need_dm0):
    B, _, C = u.shape
    return (torch.empty_like(u), u.new_empty((B, C) if need_dv0 else NOTHING, dtype=torch.float32),
            u.new_empty((B, C) if need_dm0 else NOTHING, dtype=torch.float32))


def _adam_setup(ctx, inputs, output):
    u, v0, m0, mu, s, beta, eps, save_carries = inputs
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(*output[3:])  # the chunk carries are saved state, not results
    ctx.hyper = (mu, s, beta, eps)
    ctx.state_dtypes = (v0.dtype if v0 is not None else None, m0.dtype if m0 is not None else None)
    if save_carries:
        ctx.save_for_backward(u, *output[3:])


def _adam_backward(ctx, da, dvT, dmT, *_carries):
    refuse_double_backward("adam_scan")
    if da is None and dvT is None and dmT is None:
        return (None,) * 8
    u, carry_v, carry_m = ctx.saved_tensors
    if da is None:  # only the final states were used
        da = torch.zeros_like(u)
    need_v0, need_m0 = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
    du, dv0, dm0 = _adam_scan_bwd_op(u, da, dvT, dmT, carry_v, carry_m, *ctx.hyper, need_v0, need_m0)
    v_dtype, m_dtype = ctx.state_dtypes
    dv0 = dv0.to(v_dtype) if need_v0 else None
    dm0 = dm0.to(m_dtype) if need_m0 else None
    return (du if ctx.needs_input_grad[0] else None), dv0, dm0, None, None, None, None, None


_adam_scan_fwd_op.register_autograd(_adam_backward, setup_context=_adam_setup)


def momentum_scan(u, v0, mu, s, restart=None, step_offset=0):
    """(v, v_T) of the momentum / restart scan, differentiable (the entry point tritonrnn.functional calls)."""
    return _momentum_scan_fwd_op(u, v0, float(mu), float(s), int(restart or 0), int(step_offset))


def adam_scan(u, v0, m0, mu, s, beta, eps):
    """(a, v_T, m_T) of the Adam / RMSProp scan, differentiable; the chunk carries are saved only when a
    backward can follow."""
    save = backward_follows(u, v0, m0)
    a, vT, mT, _, _ = _adam_scan_fwd_op(u, v0, m0, float(mu), float(s), float(beta), float(eps), save)
    return a, vT, mT


# ----------------------------------------------------------------------------- AOT compile proof
def _signature(names, pointers, dtype, constexpr):
    sig = {}
    for name in names:
        if name in constexpr:
            sig[name] = "constexpr"
        elif name in pointers:
            sig[name] = pointers[name].replace("{dtype}", dtype)
        elif name in ("mu", "s", "beta", "eps"):
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


def _arg_names(kernel):
    import inspect

    fn = kernel
    while not hasattr(fn, "arg_names") and hasattr(fn, "fn"):
        fn = fn.fn
    if hasattr(fn, "arg_names"):
        return list(fn.arg_names)
    return list(inspect.signature(fn).parameters)  # the interpreter's wrapper


def _aot_configs():
    seq = "*{dtype}"
    specs = [
        ("momentum_scan_fwd", _momentum_scan_fwd_kernel,
         {"U": seq, "V": seq, "V0": "*fp32", "VT": "*fp32"}, MOMENTUM_BLOCK_C,
         [dict(HAS_V0=True, STORE_VT=True, RESTART=False), dict(HAS_V0=False, STORE_VT=True, RESTART=True)]),
        ("momentum_scan_bwd", _momentum_scan_bwd_kernel,
         {"DV": seq, "DU": seq, "DVT": "*fp32", "DV0": "*fp32"}, MOMENTUM_BWD_BLOCK_C,
         [dict(HAS_DVT=True, STORE_DV0=True, RESTART=False), dict(HAS_DVT=True, STORE_DV0=True, RESTART=True)]),
        ("adam_scan_fwd", _adam_scan_fwd_kernel,
         {"U": seq, "A": seq, "V0": "*fp32", "M0": "*fp32", "VT": "*fp32", "MT": "*fp32",
          "CARRY_V": "*fp32", "CARRY_M": "*fp32"}, ADAM_FWD_BLOCK_C,
         [dict(HAS_V0=True, HAS_M0=True, STORE_VT=True, STORE_MT=True, STORE_CARRY=True)], ADAM_FWD_WARPS),
        ("adam_scan_bwd", _adam_scan_bwd_kernel,
         {"U": seq, "DA": seq, "DU": seq, "DVT": "*fp32", "DMT": "*fp32", "CARRY_V": "*fp32",
          "CARRY_M": "*fp32", "DV0": "*fp32", "DM0": "*fp32"}, ADAM_BWD_BLOCK_C,
         [dict(HAS_DVT=True, HAS_DMT=True, STORE_DV0=True, STORE_DM0=True)]),
    ]
    configs = []
    for name, kernel, pointers, block_c, flag_sets, *warps in specs:
        names = _arg_names(kernel)
        for dtype in ("fp32", "bf16"):
            for flags in flag_sets:
                constexprs = dict(flags, BLOCK_T=BLOCK_T, BLOCK_C=block_c)
                # As the JIT sees a launch on contiguous sequences: the channel strides are 1 (constexprs).
                ones = {n: 1 for n in names if n.startswith("stride_") and n.endswith("c")}
                divisible = None
                if "RESTART" in flags and not flags["RESTART"]:
                    # Constant mu: _restart_args passes restart = 1 (a constexpr) and phase = 0 (a multiple of 16).
                    ones["restart"] = 1
                    divisible = tuple(n for n in pointers) + ("phase",)
                tag = ",".join(k for k, v in flags.items() if v)
                configs.append(AotConfig(
                    f"scan.{name}[{dtype},BT={BLOCK_T},BC={block_c},{tag}]", kernel,
                    _signature(names, pointers, dtype, constexprs), dict(constexprs, **ones),
                    num_warps=warps[0] if warps else NUM_WARPS, num_stages=2, default=True, divisible=divisible))
    return configs


AOT_CONFIGS = _aot_configs()
