"""IndRNN recurrence (Li et al., CVPR 2018; the deep IndRNN of the Frank-Wolfe paper), issue #8:

    h_t = relu(a_t + w ⊙ h_{t-1} + b),   w, b ∈ R^H,   a_t the output of the input dynamics (SPEC §1.2)

Every unit is its own scalar recurrence, so there is no matrix product and no exchange between units:
one program per (batch tile, hidden block) walks all T steps with its [BB, BH] slice of h, w and b in
registers — no barrier, no scratch round trip (unlike kernels/recurrence.py, whose h_{t-1} feeds every
unit). The cost per step is one load of a_t and one store of h_t, so the drive of step t+1 is loaded
before step t is computed (the load latency overlaps the dependent FMA chain).

Backward (reverse time, same tiling): dh_t = dout_t + w ⊙ dz_{t+1} (dh_T from the caller at t = T-1),
dz_t = dh_t ⊙ [h_t > 0], stored fp32 [T, B, H]; after the loop, in torch, dw = Σ_t dz_t ⊙ h_{t-1},
db = Σ_t dz_t (sums over t and b: plain reductions, no atomics, bitwise deterministic), da = dz, and the
kernel writes dh_0 = w ⊙ dz_0. Training saves h_t in fp32 (hs [T+1, B, H], slot 0 = h_0): the output may
be bf16/fp16, and relu's mask and dw need the unrounded state.

State and accumulation are fp32 for every input dtype; offsets are int64.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._aot import AotConfig
from ._ops import backward_follows, device_guard, refuse_double_backward

NUM_STAGES = 1


@triton.jit
def _tile(w_ptr, B, H, BB: tl.constexpr, BH: tl.constexpr):
    """This program's [BB, BH] tile: int64 row and column indices, the column and tile masks, and w [1, BH]."""
    rows = tl.program_id(0) * BB + tl.arange(0, BB)
    cols = tl.program_id(1) * BH + tl.arange(0, BH)
    cmask = cols < H
    m2 = (rows < B)[:, None] & cmask[None, :]
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    return rows.to(tl.int64), cols.to(tl.int64), cmask, m2, w


@triton.jit(do_not_specialize=["T"])
def _indrnn_fwd_kernel(
    a_ptr, w_ptr, b_ptr, hs_ptr, out_ptr,
    B, T, H,
    stride_ab, stride_at, stride_ac,
    stride_ob, stride_ot, stride_oc,
    HAS_BIAS: tl.constexpr, SAVE: tl.constexpr,
    BB: tl.constexpr, BH: tl.constexpr,
):
    rows64, cols64, cmask, m2, w = _tile(w_ptr, B, H, BB, BH)
    b = tl.zeros([1, BH], dtype=tl.float32)
    if HAS_BIAS:
        b = tl.load(b_ptr + cols64, mask=cmask, other=0.0).to(tl.float32)[None, :]
    state_off = rows64[:, None] * H + cols64[None, :]  # [B, H] offsets inside one hs slot
    slot = tl.cast(B, tl.int64) * H
    h = tl.load(hs_ptr + state_off, mask=m2, other=0.0)  # slot 0 = h_0 (fp32)
    a_ptrs = a_ptr + rows64[:, None] * stride_ab + cols64[None, :] * stride_ac
    o_ptrs = out_ptr + rows64[:, None] * stride_ob + cols64[None, :] * stride_oc
    x = tl.load(a_ptrs, mask=m2, other=0.0).to(tl.float32)
    for t in range(T):
        t64 = tl.cast(t, tl.int64)
        # The next step's drive, loaded before this step's dependent math (masked off past T-1).
        has_next = (tl.zeros([BB, BH], dtype=tl.int32) + t + 1) < T  # a tensor: the interpreter rejects a scalar mask
        x_next = tl.load(a_ptrs + (t64 + 1) * stride_at, mask=m2 & has_next, other=0.0).to(tl.float32)
        h = tl.maximum(x + w * h + b, 0.0)
        tl.store(o_ptrs + t64 * stride_ot, h.to(out_ptr.dtype.element_ty), mask=m2)
        if SAVE:
            tl.store(hs_ptr + (t64 + 1) * slot + state_off, h, mask=m2)
        x = x_next
    if not SAVE:
        tl.store(hs_ptr + slot + state_off, h, mask=m2)  # inference keeps 2 slots: h_0, h_T


@triton.jit(do_not_specialize=["T"])
def _indrnn_bwd_kernel(
    dout_ptr, dhT_ptr, w_ptr, hs_ptr, dz_ptr, dh0_ptr,
    B, T, H,
    stride_db, stride_dt, stride_dc,
    HAS_DOUT: tl.constexpr,
    BB: tl.constexpr, BH: tl.constexpr,
):
    rows64, cols64, cmask, m2, w = _tile(w_ptr, B, H, BB, BH)
    state_off = rows64[:, None] * H + cols64[None, :]
    slot = tl.cast(B, tl.int64) * H
    d_ptrs = dout_ptr + rows64[:, None] * stride_db + cols64[None, :] * stride_dc
    carry = tl.load(dhT_ptr + state_off, mask=m2, other=0.0)  # w ⊙ dz_{t+1}, or dh_T at t = T-1
    for tt in range(T):
        t64 = tl.cast(T - 1 - tt, tl.int64)
        dh = carry
        if HAS_DOUT:
            dh += tl.load(d_ptrs + t64 * stride_dt, mask=m2, other=0.0).to(tl.float32)
        h = tl.load(hs_ptr + (t64 + 1) * slot + state_off, mask=m2, other=0.0)
        dz = tl.where(h > 0.0, dh, 0.0)
        tl.store(dz_ptr + t64 * slot + state_off, dz, mask=m2)
        carry = w * dz
    tl.store(dh0_ptr + state_off, carry, mask=m2)


# ----------------------------------------------------------------------------------------------------
# Launchers


def _blocks(B: int, H: int):
    """(BB, BH, num_warps): [4, 64] tiles of 4 warps hold 2 elements a thread, so B = 128, H = 256 gives
    128 programs (about one per SM of an H100); no tl.dot, so no 16-element minimum. 4 warps, not 2: compiled
    as the JIT sees a contiguous launch (unit channel strides are constexprs, KERNELS.md §4), the bf16
    backward at H = 256 spilled 4 bytes on sm_80 with 2 warps; every configuration builds without spills at 4."""
    BH = min(64, triton.next_power_of_2(max(H, 1)))
    BB = min(4, triton.next_power_of_2(max(B, 1)))
    return BB, BH, 4


def indrnn_fwd(a, weight_hh, bias_hh, h0, *, save, time_major=False):
    """Returns (out [B, T, H] in a's dtype, hs fp32 [T+1 or 2, B, H]; the final state is hs[-1])."""
    B, T, H = a.shape
    hs = torch.empty(T + 1 if save else 2, B, H, device=a.device, dtype=torch.float32)
    if h0 is None:
        hs[0].zero_()
    else:
        hs[0].copy_(h0)
    if time_major:
        out = torch.empty(T, B, H, device=a.device, dtype=a.dtype).transpose(0, 1)
    else:
        out = torch.empty(B, T, H, device=a.device, dtype=a.dtype)
    w = weight_hh.contiguous()
    b = bias_hh.contiguous() if bias_hh is not None else w
    BB, BH, warps = _blocks(B, H)
    with device_guard(a.device):
        _indrnn_fwd_kernel[(triton.cdiv(B, BB), triton.cdiv(H, BH))](
            a, w, b, hs, out, B, T, H,
            a.stride(0), a.stride(1), a.stride(2), out.stride(0), out.stride(1), out.stride(2),
            HAS_BIAS=bias_hh is not None, SAVE=save, BB=BB, BH=BH, num_warps=warps, num_stages=NUM_STAGES)
    return out, hs


def indrnn_bwd(dout, dhT, weight_hh, hs):
    """Returns (dz [T, B, H] fp32, dh0 [B, H] fp32)."""
    T = hs.shape[0] - 1
    B, H = hs.shape[1], hs.shape[2]
    dz = torch.empty(T, B, H, device=hs.device, dtype=torch.float32)
    dh0 = torch.empty(B, H, device=hs.device, dtype=torch.float32)
    dhT = torch.zeros(B, H, device=hs.device, dtype=torch.float32) if dhT is None else dhT.float().contiguous()
    has_dout = dout is not None
    sd = (dout.stride(0), dout.stride(1), dout.stride(2)) if has_dout else (0, 0, 0)
    BB, BH, warps = _blocks(B, H)
    with device_guard(hs.device):
        _indrnn_bwd_kernel[(triton.cdiv(B, BB), triton.cdiv(H, BH))](
            dout if has_dout else dz, dhT, weight_hh.contiguous(), hs, dz, dh0, B, T, H, *sd,
            HAS_DOUT=has_dout, BB=BB, BH=BH, num_warps=warps, num_stages=NUM_STAGES)
    return dz, dh0


# Custom ops (torch.library, as kernels/recurrence.py): torch.compile(fullgraph=True) sees opaque nodes with
# fake implementations for shapes/strides; hs is returned (non-differentiable) so the backward can save it.
@torch.library.custom_op("tritonrnn::indrnn_fwd", mutates_args=(), schema=(
    "(Tensor a, Tensor weight_hh, Tensor? bias_hh, Tensor? h0, bool time_major, bool save) -> (Tensor, Tensor, Tensor)"))
def _indrnn_fwd_op(a, weight_hh, bias_hh, h0, time_major, save):
    """(out [B, T, H], h_T [B, H] in a's dtype, hs fp32)."""
    out, hs = indrnn_fwd(a, weight_hh, bias_hh, h0, save=save, time_major=time_major)
    return out, hs[-1].to(a.dtype, copy=True), hs


@_indrnn_fwd_op.register_fake
def _(a, weight_hh, bias_hh, h0, time_major, save):
    B, T, H = a.shape
    out = a.new_empty(T, B, H).transpose(0, 1) if time_major else a.new_empty(B, T, H)  # as indrnn_fwd
    return out, a.new_empty(B, H), a.new_empty(T + 1 if save else 2, B, H, dtype=torch.float32)


@torch.library.custom_op("tritonrnn::indrnn_bwd", mutates_args=(), schema=(
    "(Tensor? dout, Tensor? dhT, Tensor weight_hh, Tensor hs) -> (Tensor, Tensor)"))
def _indrnn_bwd_op(dout, dhT, weight_hh, hs):
    """(dz [T, B, H], dh0 [B, H]), fp32."""
    return indrnn_bwd(dout, dhT, weight_hh, hs)


@_indrnn_bwd_op.register_fake
def _(dout, dhT, weight_hh, hs):
    T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    return hs.new_empty(T, B, H), hs.new_empty(B, H)


def _indrnn_setup(ctx, inputs, output):
    a, weight_hh, bias_hh, h0, time_major, save = inputs
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(output[2])  # hs: saved activations, not a result
    ctx.a_dtype = a.dtype
    if save:
        ctx.save_for_backward(weight_hh, bias_hh, h0, output[2])


def _indrnn_backward(ctx, dout, dhT, _hs):
    refuse_double_backward("indrnn_recurrence")
    if dout is None and dhT is None:  # cotangents of unused outputs arrive as None (eager)
        return (None,) * 6
    weight_hh, bias_hh, h0, hs = ctx.saved_tensors
    dz, dh0 = _indrnn_bwd_op(dout, dhT, weight_hh, hs)
    needs = ctx.needs_input_grad
    da = dz.transpose(0, 1).to(ctx.a_dtype) if needs[0] else None
    dw = (dz * hs[:-1]).sum((0, 1)).to(weight_hh.dtype) if needs[1] else None
    db = dz.sum((0, 1)).to(bias_hh.dtype) if (bias_hh is not None and needs[2]) else None
    dh0 = dh0.to(h0.dtype) if (h0 is not None and needs[3]) else None
    return da, dw, db, dh0, None, None


_indrnn_fwd_op.register_autograd(_indrnn_backward, setup_context=_indrnn_setup)


def indrnn_recurrence(a, weight_hh, bias_hh=None, h0=None, time_major=False):
    """Triton IndRNN core on validated inputs (tritonrnn.functional.recurrence validates): (h, h_T)."""
    out, hT, _ = _indrnn_fwd_op(a, weight_hh, bias_hh, h0, bool(time_major),
                                backward_follows(a, weight_hh, bias_hh, h0))
    return out, hT


def _aot(name, dtype, H, *, save=True, default=True):
    BB, BH, warps = _blocks(128, H)
    ptr = f"*{dtype}"
    if name == "fwd":
        sig = {"a_ptr": ptr, "w_ptr": ptr, "b_ptr": ptr, "hs_ptr": "*fp32", "out_ptr": ptr,
               "B": "i32", "T": "i32", "H": "i32",
               "stride_ab": "i32", "stride_at": "i32", "stride_ac": "i32",
               "stride_ob": "i32", "stride_ot": "i32", "stride_oc": "i32",
               "HAS_BIAS": "constexpr", "SAVE": "constexpr", "BB": "constexpr", "BH": "constexpr"}
        # The JIT makes ints equal to 1 constexprs: the output's channel stride always is, the drive's is on
        # the contiguous layout the functional layer produces.
        cons = {"HAS_BIAS": True, "SAVE": save, "BB": BB, "BH": BH, "stride_ac": 1, "stride_oc": 1}
        kernel = _indrnn_fwd_kernel
    else:
        sig = {"dout_ptr": ptr, "dhT_ptr": "*fp32", "w_ptr": ptr, "hs_ptr": "*fp32", "dz_ptr": "*fp32",
               "dh0_ptr": "*fp32", "B": "i32", "T": "i32", "H": "i32",
               "stride_db": "i32", "stride_dt": "i32", "stride_dc": "i32",
               "HAS_DOUT": "constexpr", "BB": "constexpr", "BH": "constexpr"}
        cons = {"HAS_DOUT": True, "BB": BB, "BH": BH, "stride_dc": 1}  # a contiguous output gradient
        kernel = _indrnn_bwd_kernel
    suffix = "" if save else "_infer"
    return AotConfig(f"indrnn_{name}_{dtype}_H{H}{suffix}", kernel, sig, cons, num_warps=warps,
                     num_stages=NUM_STAGES, default=default)


AOT_CONFIGS = [_aot(name, dtype, H) for name in ("fwd", "bwd") for dtype in ("fp32", "bf16") for H in (32, 256)] + [
    _aot("fwd", "fp16", 256, save=False),
]
