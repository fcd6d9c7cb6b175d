"""Fused nonlinear recurrence of the LSTM and RNN cores (SPEC §1.1, §1.3; KERNELS.md §2-3).

Given the precomputed drive a [B, T, G·H] (the input dynamics of SPEC §1.2 run as a scan elsewhere):

    z_t = a_t + W_hh h_{t-1} + b_hh
    LSTM (G = 4, rows i, f, g, o of W_hh as nn.LSTM): c_t = σ(z_f)⊙c_{t-1} + σ(z_i)⊙tanh(z_g),
                                                     h_t = σ(z_o)⊙tanh(c_t)
    RNN  (G = 1): h_t = tanh(z_t) or relu(z_t)
    orthogonal RNN (G = 1, DTRIV core):  z_t = a_t + U h_{t-1} (no additive bias), h_t = modReLU(z_t) =
                                       sign(z_t)·relu(|z_t| + b), b [H] passed in the bias slot.
    NesterovLSTM (SPEC §1.3, drive u): a_t = (W_hh h_{t-1} + b_hh) − s u_t,
                                       z_t = a_t + μ_t (a_t − a_{t-1}), LSTM update on z_t.
    fused momentum LSTM (SPEC §1.2 momentum / restart, drive u): v_t = λ_t v_{t-1} + s u_t,
                                       z_t = v_t + W_hh h_{t-1} + b_hh (the scan folded into the loop).
The two carried drive states (a_t, v_t; fp32 [B, 4H]) are column-local: each hidden block updates its own
columns in place, so they need no exchange between threads.

Design (the persistent "Tier B in one program" form of KERNELS.md §2, valid for every H):
- one program per batch tile of BB rows walks all T steps; inside a step it loops over hidden blocks of
  BH units, computing the G gate tiles [BB, BH] with a K-loop over h_{t-1} (fp32, in a global scratch
  the same program wrote at the previous step) times W_hh blocks (small, L2-resident), then finishes the
  pointwise update of those units. `tl.debug_barrier()` ends each step so that every thread of the
  program sees the whole h_t before step t+1 reads it (bar.sync orders a block's global writes).
- state and accumulation are fp32 whatever the input dtype; the output is cast explicitly on store.
- the hidden state lives in `hs`, an fp32 buffer of NSLOT slots [NSLOT, B, H]; step t reads slot
  t % NSLOT and writes slot (t+1) % NSLOT. Inference uses NSLOT = 2 (ping-pong: a step never overwrites
  the h_{t-1} that later hidden blocks of the same step still read); training uses NSLOT = T + 1, which
  keeps every h_t (fp32) for the weight gradient without a second store. The cell state `cs` uses the same
  slots (the LSTM backward needs c_{t-1} and c_t).
- Tier A (W_hh on chip for H ≤ 128) would hoist the W tiles out of the time loop when H ≤ BH = BK; the
  loop structure keeps that a local change.
- Measured once (perf/results/gpu-h200-20261126T0022Z, H200, batch 128, T 784, H 256): 1565.6 μs/sample
  training, 623.1 evaluation, i.e. ~100 μs per step in evaluation — far slower than cuDNN. Each step is a
  serial chain (4 hidden blocks × 16 K-chunks × 4 gate dots, W_hh re-read from L2) in one program per 16 rows,
  so only 8 programs run at batch 128: latency bound by construction. Spreading the hidden blocks over
  programs with W_hh resident on chip and a grid-wide step barrier (KERNELS.md) is the fix, not yet built.

Backward (reverse-time loop, KERNELS.md §3): for t = T-1 … 0, per hidden block,
    dh_t = dz_{t+1} W_hh[:, block] (dh_T from the caller at t = T-1) + dout_t,
then the pointwise adjoints give dz_t (stored for all t, fp32, [T, B, G·H]) and dc_{t-1} (carried in a
scratch). dz_{t+1} is read back from the dz buffer written at the previous (later) step, so, like the
forward, one barrier per step suffices. Activations are saved, not recomputed: the activated gates
(fp32, [T, B, 4H]) and the hs/cs slots, O(T·B·4H) like cuDNN; recomputing z would cost a second
[B, H] × [H, 4H] product per step on the latency-bound critical path. After the loop the weight gradients
are plain GEMMs in torch: dW_hh = Σ_t dz_tᵀ h_{t-1}, db_hh = Σ_t dz_t, dh_0 = dz_0 W_hh, da = dz.
No atomics anywhere: two runs are bitwise identical.

Precision: fp32 tl.dot follows triton's default input precision (tf32 on tensor cores unless
TRITON_F32_DEFAULT=ieee, which the test suite sets; cuDNN's LSTM likewise uses TF32 under torch's default
allow_tf32 for cuDNN). bf16/fp16 weights are widened to fp32 per tile so h_{t-1} is never rounded.

Internal buffers (hs, cs, gates, dz, dv, the carried states) are time-major contiguous; a, the output h and
its gradient take arbitrary strides.
"""
from __future__ import annotations


import torch
import triton
import triton.language as tl

from ._aot import AotConfig
from ._ops import NOTHING, backward_follows, device_guard, nothing, refuse_double_backward

# Cell codes (constexpr CELL): one kernel body serves every core so the time loop is written once.
LSTM = 0
RNN_TANH = 1
RNN_RELU = 2
NESTEROV_LSTM = 3  # SPEC §1.3, drive u, carried state a_t
MOMENTUM_LSTM = 4  # SPEC §1.2 momentum / restart drive fused into the loop, drive u, carried state v_t
RNN_MODRELU = 5  # orthogonal RNN (DTRIV): h_t = modReLU(a_t + U h_{t-1}), b_ptr holds the modReLU bias

GATES = {LSTM: 4, RNN_TANH: 1, RNN_RELU: 1, NESTEROV_LSTM: 4, MOMENTUM_LSTM: 4, RNN_MODRELU: 1}
# No software pipelining: the launch compiles exactly what AOT_CONFIGS reports (registers, zero spills),
# and prefetching W tiles pays little in a loop whose cost is the per-step latency (KERNELS.md §2).
NUM_STAGES = 1


@triton.jit
def _tanh(x):
    # tanh(x) = 2σ(2x) − 1: tl.sigmoid exists on every triton >= 2.1 and in the interpreter (no libdevice).
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _w_t_tile(w_ptr, gate, H, ks, cols, kmask, cmask):
    """[BK, BH] tile of W_hhᵀ for one gate: element (k, n) = W_hh[gate·H + n, k], as fp32."""
    offs = (gate * H + cols[None, :]).to(tl.int64) * H + ks[:, None]
    return tl.load(w_ptr + offs, mask=kmask[:, None] & cmask[None, :], other=0.0).to(tl.float32)


@triton.jit
def _momentum(step, mu, restart):
    """λ_t: the restart schedule (t mod F)/((t mod F)+3) of SPEC §1.2 (tritonrnn.schedules.restart_momentum)
    when restart = F > 0, else the constant mu. Runtime values: a changing schedule never recompiles."""
    k = tl.cast(step % tl.maximum(restart, 1), tl.float32)
    return tl.where(restart > 0, k / (k + 3.0), mu)


@triton.jit
def _drive(acc, x, ns_ptr, off, m2, s, lam, CELL: tl.constexpr):
    """Pre-activation z of one gate tile from acc = W_hh h_{t-1} + b_hh and the drive x, updating the
    column-local carried state ns [B, G·H] (fp32) in place where the cell has one."""
    if CELL == 3:
        # NesterovLSTM, SPEC §1.3: a_t = acc − s u_t; z_t = a_t + μ_t (a_t − a_{t-1}); carried a_t.
        n = acc - s * x
        p = tl.load(ns_ptr + off, mask=m2, other=0.0)
        tl.store(ns_ptr + off, n, mask=m2)
        z = n + lam * (n - p)
    elif CELL == 4:
        # fused momentum / restart drive, SPEC §1.2: v_t = λ_t v_{t-1} + s u_t; z_t = v_t + acc.
        v = lam * tl.load(ns_ptr + off, mask=m2, other=0.0) + s * x
        tl.store(ns_ptr + off, v, mask=m2)
        z = acc + v
    else:
        z = acc + x
    return z


@triton.jit
def _drive_adjoint(dz, dn_ptr, off, dv_ptr, v_off, m2, lam, coef, CELL: tl.constexpr):
    """From the pointwise dz_t of one gate tile, the adjoint that feeds the recurrent product (and is
    stored in the dz buffer). dn [B, G·H] carries a column-local adjoint between steps; at t = T-1 it
    holds the cotangent of the final carried state and `coef` = 1, else `coef` is the next step's factor."""
    if CELL == 3:
        # z_t = (1+μ_t) a_t − μ_t a_{t-1}: da_t = (1+μ_t) dz_t − μ_{t+1} dz_{t+1}; dn carries dz_{t+1}.
        q = tl.load(dn_ptr + off, mask=m2, other=0.0)
        tl.store(dn_ptr + off, dz, mask=m2)
        r = (1.0 + lam) * dz + coef * q
    elif CELL == 4:
        # dv_t = dz_t + λ_{t+1} dv_{t+1}; dn carries dv_{t+1}; du_t = s dv_t is formed by the launcher.
        dv = dz + coef * tl.load(dn_ptr + off, mask=m2, other=0.0)
        tl.store(dn_ptr + off, dv, mask=m2)
        tl.store(dv_ptr + v_off, dv, mask=m2)
        r = dz
    else:
        r = dz
    return r


@triton.jit(do_not_specialize=["T", "NSLOT", "step_offset"])
def _recurrence_fwd_kernel(
    a_ptr, w_ptr, b_ptr, hs_ptr, cs_ptr, ns_ptr, gates_ptr, out_ptr,
    B, T, H, NSLOT,
    stride_ab, stride_at, stride_ac,
    stride_ob, stride_ot, stride_oc,
    s, mu, restart, step_offset,
    CELL: tl.constexpr, HAS_BIAS: tl.constexpr, SAVE: tl.constexpr,
    BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BB + tl.arange(0, BB)
    rmask = rows < B
    rows64 = rows.to(tl.int64)
    G: tl.constexpr = 1 if (CELL == 1 or CELL == 2 or CELL == 5) else 4
    GH = G * H
    a_gate = tl.cast(H, tl.int64) * stride_ac  # from one gate's columns of a to the next
    for t in range(T):
        t64 = tl.cast(t, tl.int64)
        prev = (t64 % NSLOT) * B * H
        cur = ((t64 + 1) % NSLOT) * B * H
        lam = _momentum(step_offset + t, mu, restart)
        for j0 in range(0, H, BH):
            cols = j0 + tl.arange(0, BH)
            cmask = cols < H
            m2 = rmask[:, None] & cmask[None, :]
            acc0 = tl.zeros([BB, BH], dtype=tl.float32)
            acc1 = tl.zeros([BB, BH], dtype=tl.float32)
            acc2 = tl.zeros([BB, BH], dtype=tl.float32)
            acc3 = tl.zeros([BB, BH], dtype=tl.float32)
            # W_hh h_{t-1}: K-loop over the previous hidden state, all G gates per h tile.
            for k0 in range(0, H, BK):
                ks = k0 + tl.arange(0, BK)
                kmask = ks < H
                hk = tl.load(hs_ptr + prev + rows64[:, None] * H + ks[None, :],
                             mask=rmask[:, None] & kmask[None, :], other=0.0)
                acc0 += tl.dot(hk, _w_t_tile(w_ptr, 0, H, ks, cols, kmask, cmask))
                if G == 4:
                    acc1 += tl.dot(hk, _w_t_tile(w_ptr, 1, H, ks, cols, kmask, cmask))
                    acc2 += tl.dot(hk, _w_t_tile(w_ptr, 2, H, ks, cols, kmask, cmask))
                    acc3 += tl.dot(hk, _w_t_tile(w_ptr, 3, H, ks, cols, kmask, cmask))
            if HAS_BIAS and CELL != 5:  # the modReLU bias enters the nonlinearity, not z
                acc0 += tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
                if G == 4:
                    acc1 += tl.load(b_ptr + H + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
                    acc2 += tl.load(b_ptr + 2 * H + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
                    acc3 += tl.load(b_ptr + 3 * H + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
            x_ptrs = a_ptr + rows64[:, None] * stride_ab + t64 * stride_at + cols.to(tl.int64)[None, :] * stride_ac
            n_off = rows64[:, None] * GH + cols[None, :]
            h_base = rows64[:, None] * H + cols[None, :]
            x0 = tl.load(x_ptrs, mask=m2, other=0.0).to(tl.float32)
            z0 = _drive(acc0, x0, ns_ptr, n_off, m2, s, lam, CELL)
            if G == 4:
                x1 = tl.load(x_ptrs + a_gate, mask=m2, other=0.0).to(tl.float32)
                x2 = tl.load(x_ptrs + 2 * a_gate, mask=m2, other=0.0).to(tl.float32)
                x3 = tl.load(x_ptrs + 3 * a_gate, mask=m2, other=0.0).to(tl.float32)
                z1 = _drive(acc1, x1, ns_ptr, n_off + H, m2, s, lam, CELL)
                z2 = _drive(acc2, x2, ns_ptr, n_off + 2 * H, m2, s, lam, CELL)
                z3 = _drive(acc3, x3, ns_ptr, n_off + 3 * H, m2, s, lam, CELL)
                gi = tl.sigmoid(z0)
                gf = tl.sigmoid(z1)
                gg = _tanh(z2)
                go = tl.sigmoid(z3)
                c_prev = tl.load(cs_ptr + prev + h_base, mask=m2, other=0.0)
                c = gf * c_prev + gi * gg
                h = go * _tanh(c)
                tl.store(cs_ptr + cur + h_base, c, mask=m2)
                if SAVE:
                    g_off = (t64 * B + rows64[:, None]) * GH + cols[None, :]
                    tl.store(gates_ptr + g_off, gi, mask=m2)
                    tl.store(gates_ptr + g_off + H, gf, mask=m2)
                    tl.store(gates_ptr + g_off + 2 * H, gg, mask=m2)
                    tl.store(gates_ptr + g_off + 3 * H, go, mask=m2)
            else:
                if CELL == 1:
                    h = _tanh(z0)
                elif CELL == 2:
                    h = tl.maximum(z0, 0.0)
                else:
                    # modReLU(z) = sign(z)·relu(|z| + b) (Arjovsky et al.; DTRIV's modrelu)
                    h = tl.abs(z0)
                    if HAS_BIAS:
                        h += tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
                    h = tl.where(z0 > 0.0, 1.0, tl.where(z0 < 0.0, -1.0, 0.0)) * tl.maximum(h, 0.0)
            tl.store(hs_ptr + cur + h_base, h, mask=m2)
            o_off = rows64[:, None] * stride_ob + t64 * stride_ot + cols.to(tl.int64)[None, :] * stride_oc
            tl.store(out_ptr + o_off, h.to(out_ptr.dtype.element_ty), mask=m2)
        # Step t+1 reads all of h_t, written by other threads of this program.
        tl.debug_barrier()


@triton.jit(do_not_specialize=["T", "step_offset"])
def _recurrence_bwd_kernel(
    dout_ptr, dhT_ptr, dc_ptr, dn_ptr, dv_ptr, w_ptr, hs_ptr, cs_ptr, gates_ptr, dz_ptr,
    B, T, H,
    stride_db, stride_dt, stride_dc,
    mu, restart, step_offset,
    CELL: tl.constexpr, HAS_DOUT: tl.constexpr,
    BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BB + tl.arange(0, BB)
    rmask = rows < B
    rows64 = rows.to(tl.int64)
    G: tl.constexpr = 1 if (CELL == 1 or CELL == 2 or CELL == 5) else 4
    GH = G * H
    for tt in range(T):
        t = T - 1 - tt
        t64 = tl.cast(t, tl.int64)
        has_next = t + 1 < T
        # The step flags as vectors: the interpreter rejects a scalar mask broadcast into a load.
        last_col = (tl.zeros([BH], dtype=tl.int32) + t) == T - 1
        next_k = (tl.zeros([BK], dtype=tl.int32) + t + 1) < T
        lam = _momentum(step_offset + t, mu, restart)
        lam_next = _momentum(step_offset + t + 1, mu, restart)
        # the factor of the carried adjoint: 1 at t = T-1 (the final state's cotangent enters as is)
        if CELL == 3:
            coef = tl.where(has_next, -lam_next, 1.0)
        else:
            coef = tl.where(has_next, lam_next, 1.0)
        for j0 in range(0, H, BH):
            cols = j0 + tl.arange(0, BH)
            cmask = cols < H
            m2 = rmask[:, None] & cmask[None, :]
            h_base = rows64[:, None] * H + cols[None, :]
            # dh_t = dz_{t+1} W_hh[:, block] (dz: the adjoint of W_hh h_t + b_hh, which for NesterovLSTM
            # is that of a_{t+1}) + dout_t, or dh_T at the last step.
            dh = tl.load(dhT_ptr + h_base, mask=m2 & last_col[None, :], other=0.0)
            for k0 in range(0, GH, BK):
                ks = k0 + tl.arange(0, BK)
                kmask = ks < GH
                dzk = tl.load(dz_ptr + ((t64 + 1) * B + rows64[:, None]) * GH + ks[None, :],
                              mask=rmask[:, None] & (kmask & next_k)[None, :], other=0.0)
                wk = tl.load(w_ptr + ks.to(tl.int64)[:, None] * H + cols[None, :],
                             mask=kmask[:, None] & cmask[None, :], other=0.0).to(tl.float32)
                dh += tl.dot(dzk, wk)
            if HAS_DOUT:
                d_off = rows64[:, None] * stride_db + t64 * stride_dt + cols.to(tl.int64)[None, :] * stride_dc
                dh += tl.load(dout_ptr + d_off, mask=m2, other=0.0).to(tl.float32)
            cur = (t64 + 1) * B * H
            g_off = (t64 * B + rows64[:, None]) * GH + cols[None, :]
            if G == 4:
                gi = tl.load(gates_ptr + g_off, mask=m2, other=0.0)
                gf = tl.load(gates_ptr + g_off + H, mask=m2, other=0.0)
                gg = tl.load(gates_ptr + g_off + 2 * H, mask=m2, other=0.0)
                go = tl.load(gates_ptr + g_off + 3 * H, mask=m2, other=0.0)
                c = tl.load(cs_ptr + cur + h_base, mask=m2, other=0.0)
                c_prev = tl.load(cs_ptr + t64 * B * H + h_base, mask=m2, other=0.0)
                tc = _tanh(c)
                dc = tl.load(dc_ptr + h_base, mask=m2, other=0.0) + dh * go * (1.0 - tc * tc)
                tl.store(dc_ptr + h_base, dc * gf, mask=m2)
                n_off = rows64[:, None] * GH + cols[None, :]
                dz0 = _drive_adjoint(dc * gg * gi * (1.0 - gi), dn_ptr, n_off, dv_ptr, g_off, m2, lam, coef, CELL)
                dz1 = _drive_adjoint(dc * c_prev * gf * (1.0 - gf), dn_ptr, n_off + H, dv_ptr, g_off + H, m2,
                                     lam, coef, CELL)
                dz2 = _drive_adjoint(dc * gi * (1.0 - gg * gg), dn_ptr, n_off + 2 * H, dv_ptr, g_off + 2 * H, m2,
                                     lam, coef, CELL)
                dz3 = _drive_adjoint(dh * tc * go * (1.0 - go), dn_ptr, n_off + 3 * H, dv_ptr, g_off + 3 * H, m2,
                                     lam, coef, CELL)
                tl.store(dz_ptr + g_off, dz0, mask=m2)
                tl.store(dz_ptr + g_off + H, dz1, mask=m2)
                tl.store(dz_ptr + g_off + 2 * H, dz2, mask=m2)
                tl.store(dz_ptr + g_off + 3 * H, dz3, mask=m2)
            else:
                h = tl.load(hs_ptr + cur + h_base, mask=m2, other=0.0)
                if CELL == 1:
                    dz0 = dh * (1.0 - h * h)
                elif CELL == 2:
                    dz0 = tl.where(h > 0.0, dh, 0.0)
                else:
                    # modReLU: z + b·sign(z) where |z| + b > 0 (there h != 0, slope 1), else 0; so h alone
                    # decides, and db = Σ dz·sign(h) is formed by the launcher.
                    dz0 = tl.where(h != 0.0, dh, 0.0)
                tl.store(dz_ptr + g_off, dz0, mask=m2)
        # Step t-1 reads all of dz_t, written by other threads of this program.
        tl.debug_barrier()


# ----------------------------------------------------------------------------------------------------
# Launchers


def _blocks(H: int, direction: str, gates: int):
    """(BB, BH, BK, num_warps). tl.dot needs every tile dimension >= 16. Chosen from the AOT compile report
    (AOT_CONFIGS) under both fp32 dot precisions (tf32, and ieee as the tests compile), not by habit: every
    W tile element costs a 64-bit address, so wide W tiles blow up the register count, and ptxas settles on
    a register budget of its own (64, 80, 128) that spills for some tile/warp combinations.
    Forward: [16, 64] gate tiles, BK = 16, 8 warps: 125-210 registers, no spills (BK = 32 spills on sm_80).
    Backward (one K-loop over G·H): [16, 32] tiles, BK = 32, 75-120 registers; 8 warps for the LSTM family,
    4 for the RNN (the swap spills: RNN at 64 registers with 8 warps/ieee, fused momentum at 128 with
    4 warps/tf32)."""
    p = max(16, triton.next_power_of_2(max(H, 1)))
    if direction == "fwd":
        BH = min(p, 64)
        return 16, BH, 16, 8 if BH == 64 else 4
    BH = min(p, 32)
    return 16, BH, BH, 8 if (BH == 32 and gates == 4) else 4


def _output(a: torch.Tensor, width: int, time_major: bool) -> torch.Tensor:
    """An empty [B, T, width] tensor in a's dtype, time-major in memory when the caller says a is
    (tritonrnn.functional.recurrence decides the layout; a time-major caller transposes back for free)."""
    B, T, _ = a.shape
    if time_major:
        return torch.empty(T, B, width, device=a.device, dtype=a.dtype).transpose(0, 1)
    return torch.empty(B, T, width, device=a.device, dtype=a.dtype)


def _state(x, B, H, ref):
    """A [B, H] state or cotangent as a fresh contiguous fp32 tensor (the kernels index states as contiguous
    [B, H]; callers pass any strides: transposed initial states, a cotangent read through a transpose)."""
    if x is None:
        return torch.zeros(B, H, device=ref.device, dtype=torch.float32)
    return x.to(torch.float32, memory_format=torch.contiguous_format, copy=True)


def recurrence_fwd(a, weight_hh, bias_hh, h0, c0, *, cell, save, time_major=False, ns0=None, s=0.0, mu=0.0,
                   restart=0, step_offset=0):
    """Run the forward kernel. Returns (out [B,T,H] in a's dtype, hs, cs, ns, gates): hs/cs the fp32 slot
    buffers ([T+1, B, H] when `save`, else [2, B, H]; the final state is slot T % NSLOT), ns the final
    carried state of NesterovLSTM (a_T) or the fused momentum cell (v_T), [B, 4H] fp32, else None;
    gates the saved activations ([T, B, 4H] fp32, LSTM family with `save` only, else None).
    restart = F > 0 selects the restart schedule for λ_t, restart = 0 the constant mu."""
    B, T, GH = a.shape
    H = weight_hh.shape[1]
    G = GATES[cell]
    lstm = G == 4
    carried = cell in (NESTEROV_LSTM, MOMENTUM_LSTM)
    nslot = T + 1 if save else 2
    w = weight_hh.contiguous()
    b = bias_hh.contiguous() if bias_hh is not None else w
    hs = torch.empty(nslot, B, H, device=a.device, dtype=torch.float32)
    hs[0] = _state(h0, B, H, a)
    cs = hs  # a placeholder pointer where the cell has no such buffer (never dereferenced)
    if lstm:
        cs = torch.empty(nslot, B, H, device=a.device, dtype=torch.float32)
        cs[0] = _state(c0, B, H, a)
    gates = torch.empty(T, B, GH, device=a.device, dtype=torch.float32) if (save and lstm) else None
    ns = _state(ns0, B, GH, a) if carried else None
    out = _output(a, H, time_major)
    BB, BH, BK, warps = _blocks(H, "fwd", G)
    with device_guard(a.device):
        _recurrence_fwd_kernel[(triton.cdiv(B, BB),)](
            a, w, b, hs, cs, ns if carried else hs, gates if gates is not None else hs, out,
            B, T, H, nslot,
            a.stride(0), a.stride(1), a.stride(2),
            out.stride(0), out.stride(1), out.stride(2),
            float(s), float(mu), int(restart), int(step_offset),
            CELL=cell, HAS_BIAS=bias_hh is not None, SAVE=gates is not None,
            BB=BB, BH=BH, BK=BK, num_warps=warps, num_stages=NUM_STAGES,
        )
    return out, hs, cs, ns, gates


def recurrence_bwd(dout, dhT, dcT, dnT, weight_hh, hs, cs, gates, *, cell, mu=0.0, restart=0, step_offset=0):
    """Run the backward kernel over saved activations. Returns (dz, dc0, dn, dv):
    dz [T, B, G·H] fp32 the adjoint of W_hh h_{t-1} + b_hh at every step (for NesterovLSTM that of a_t);
    dc0 [B, H] fp32 (LSTM family, else None); dn [B, G·H] fp32 the carried adjoint after step 0 (NesterovLSTM:
    the pointwise dz_0, so da_{-1} = −μ_0 dz_0; momentum: dv_0, so dv_{-1} = λ_0 dv_0), else None;
    dv [T, B, 4H] fp32 the adjoint of v_t (fused momentum cell only, du_t = s dv_t), else None.
    dnT is the cotangent of the final carried state (a_T or v_T)."""
    T = hs.shape[0] - 1
    B, H = hs.shape[1], hs.shape[2]
    G = GATES[cell]
    GH = G * H
    carried = cell in (NESTEROV_LSTM, MOMENTUM_LSTM)
    w = weight_hh.contiguous()
    dz = torch.empty(T, B, GH, device=hs.device, dtype=torch.float32)
    dhT = _state(dhT, B, H, hs)
    dc = _state(dcT, B, H, hs) if G == 4 else None
    # At t = T-1 the kernel adds dn with factor 1: the cotangent of the final carried state enters as is.
    dn = _state(dnT, B, GH, hs) if carried else None
    dv = torch.empty(T, B, GH, device=hs.device, dtype=torch.float32) if cell == MOMENTUM_LSTM else None
    has_dout = dout is not None
    sd = (dout.stride(0), dout.stride(1), dout.stride(2)) if has_dout else (0, 0, 0)
    BB, BH, BK, warps = _blocks(H, "bwd", G)

    def ptr(x):  # a placeholder pointer for a buffer this cell never dereferences
        return x if x is not None else dz

    with device_guard(hs.device):
        _recurrence_bwd_kernel[(triton.cdiv(B, BB),)](
            ptr(dout), dhT, ptr(dc), ptr(dn), ptr(dv), w, hs, cs, ptr(gates), dz,
            B, T, H,
            *sd,
            float(mu), int(restart), int(step_offset),
            CELL=cell, HAS_DOUT=has_dout,
            BB=BB, BH=BH, BK=BK, num_warps=warps, num_stages=NUM_STAGES,
        )
    return dz, dc, dn, dv


def _weight_grads(dz, hs, weight_hh, bias_hh, h0, needs):
    """dW_hh = Σ_t dz_tᵀ h_{t-1}, db_hh = Σ_t dz_t, dh_0 = dz_0 W_hh: single GEMMs after the loop."""
    T, B, GH = dz.shape
    H = hs.shape[2]
    dw = db = dh0 = None
    if needs[0]:
        dw = (dz.reshape(T * B, GH).t() @ hs[:T].reshape(T * B, H)).to(weight_hh.dtype)
    if needs[1] and bias_hh is not None:
        db = dz.sum((0, 1)).to(bias_hh.dtype)
    if needs[2] and h0 is not None:
        dh0 = (dz[0] @ weight_hh.to(torch.float32)).to(h0.dtype)
    return dw, db, dh0


def _final(buf, T, dtype):
    """The final state, slot T % NSLOT of a slot buffer, as a fresh tensor (never a view of saved state)."""
    return buf[T % buf.shape[0]].to(dtype, copy=True)


# Custom ops (torch.library, torch >= 2.4): torch.compile(fullgraph=True) traces the launchers as opaque
# nodes, the fake implementations give shapes/strides, register_autograd the backward. One forward op and
# one backward op serve every cell (CELL codes); an output a cell does not have is an empty tensor (custom
# ops return no None and no input alias). hs, cs, gates are returned so the backward can save them.
@torch.library.custom_op("tritonrnn::recurrence_fwd", mutates_args=(), schema=(
    "(Tensor a, Tensor weight_hh, Tensor? bias_hh, Tensor? h0, Tensor? c0, Tensor? n0, int cell, float s, "
    "float mu, int restart, int step_offset, bool time_major, bool save) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"))
def _recurrence_fwd_op(a, weight_hh, bias_hh, h0, c0, n0, cell, s, mu, restart, step_offset, time_major, save):
    """(out [B,T,H], h_T, c_T in a's dtype, n_T fp32, hs, cs, gates); see recurrence_fwd."""
    out, hs, cs, ns, gates = recurrence_fwd(a, weight_hh, bias_hh, h0, c0, cell=cell, save=save,
                                            time_major=time_major, ns0=n0, s=s, mu=mu, restart=restart,
                                            step_offset=step_offset)
    T = a.shape[1]
    lstm = GATES[cell] == 4
    return (out, _final(hs, T, a.dtype), _final(cs, T, a.dtype) if lstm else nothing(a),
            ns if ns is not None else nothing(a), hs, cs if lstm else nothing(a),
            gates if gates is not None else nothing(a))


@_recurrence_fwd_op.register_fake
def _(a, weight_hh, bias_hh, h0, c0, n0, cell, s, mu, restart, step_offset, time_major, save):
    B, T, GH = a.shape
    H = weight_hh.shape[1]
    lstm = GATES[cell] == 4
    nslot = T + 1 if save else 2

    def f32(*shape):
        return a.new_empty(shape, dtype=torch.float32)

    out = a.new_empty(T, B, H).transpose(0, 1) if time_major else a.new_empty(B, T, H)  # as _output
    return (out, a.new_empty(B, H), a.new_empty(B, H) if lstm else f32(*NOTHING),
            f32(B, GH) if cell in (NESTEROV_LSTM, MOMENTUM_LSTM) else f32(*NOTHING),
            f32(nslot, B, H), f32(nslot, B, H) if lstm else f32(*NOTHING),
            f32(T, B, GH) if (save and lstm) else f32(*NOTHING))


@torch.library.custom_op("tritonrnn::recurrence_bwd", mutates_args=(), schema=(
    "(Tensor? dout, Tensor? dhT, Tensor? dcT, Tensor? dnT, Tensor weight_hh, Tensor hs, Tensor cs, "
    "Tensor gates, int cell, float mu, int restart, int step_offset) -> (Tensor, Tensor, Tensor, Tensor)"))
def _recurrence_bwd_op(dout, dhT, dcT, dnT, weight_hh, hs, cs, gates, cell, mu, restart, step_offset):
    """(dz, dc0, dn0, dv); see recurrence_bwd (absent ones empty)."""
    lstm = GATES[cell] == 4
    dz, dc0, dn0, dv = recurrence_bwd(dout, dhT, dcT, dnT, weight_hh, hs, cs if lstm else hs,
                                      gates if lstm else None, cell=cell, mu=mu, restart=restart,
                                      step_offset=step_offset)
    return tuple(x if x is not None else nothing(hs) for x in (dz, dc0, dn0, dv))


@_recurrence_bwd_op.register_fake
def _(dout, dhT, dcT, dnT, weight_hh, hs, cs, gates, cell, mu, restart, step_offset):
    T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    GH = GATES[cell] * H

    def f32(*shape):
        return hs.new_empty(shape, dtype=torch.float32)

    return (f32(T, B, GH), f32(B, H) if GATES[cell] == 4 else f32(*NOTHING),
            f32(B, GH) if cell in (NESTEROV_LSTM, MOMENTUM_LSTM) else f32(*NOTHING),
            f32(T, B, GH) if cell == MOMENTUM_LSTM else f32(*NOTHING))


def _recurrence_setup(ctx, inputs, output):
    a, weight_hh, bias_hh, h0, c0, n0, cell, s, mu, restart, step_offset, time_major, save = inputs
    out, hT, cT, nT, hs, cs, gates = output
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(hs, cs, gates)  # saved activations, not results
    ctx.hyper = (cell, s, mu, restart, step_offset)
    ctx.a_dtype = a.dtype
    if save:
        ctx.save_for_backward(weight_hh, bias_hh, h0, c0, n0, hs, cs, gates)


def _recurrence_backward(ctx, dout, dhT, dcT, dnT, *_saved):
    """Cotangents of unused outputs arrive as None (eager) or zeros (compiled); both give the same grads.
    A cell's absent outputs (c_T of an RNN, n_T of an uncarried cell) never pass their cotangent on."""
    refuse_double_backward("recurrence")
    cell, s, mu, restart, step_offset = ctx.hyper
    lstm, carried = GATES[cell] == 4, cell in (NESTEROV_LSTM, MOMENTUM_LSTM)
    dcT = dcT if lstm else None
    dnT = dnT if carried else None
    if dout is None and dhT is None and dcT is None and dnT is None:
        return (None,) * 13
    weight_hh, bias_hh, h0, c0, n0, hs, cs, gates = ctx.saved_tensors
    dz, dc0, dn0, dv = _recurrence_bwd_op(dout, dhT, dcT, dnT, weight_hh, hs, cs, gates, cell, mu, restart,
                                          step_offset)
    needs = ctx.needs_input_grad
    da = dn0_grad = None
    if cell == NESTEROV_LSTM:
        # a_t = W_hh h_{t-1} + b_hh − s u_t: du_t = −s da_t; z_0 = (1+μ_0) a_0 − μ_0 a_{-1}.
        if needs[0]:
            da = (dz.transpose(0, 1) * (-s)).to(ctx.a_dtype)
        if n0 is not None and needs[5]:
            dn0_grad = (dn0 * (-restart_lambda(step_offset, mu, restart))).to(n0.dtype)
    elif cell == MOMENTUM_LSTM:
        # v_t = λ_t v_{t-1} + s u_t: du_t = s dv_t, dv_{-1} = λ_0 dv_0.
        if needs[0]:
            da = (dv.transpose(0, 1) * s).to(ctx.a_dtype)
        if n0 is not None and needs[5]:
            dn0_grad = (dn0 * restart_lambda(step_offset, mu, restart)).to(n0.dtype)
    elif needs[0]:
        da = dz.transpose(0, 1).to(ctx.a_dtype)  # da_t = dz_t
    dw, db, dh0 = _weight_grads(dz, hs, weight_hh, bias_hh, h0, needs[1:4])
    if cell == RNN_MODRELU and db is not None:  # ∂h/∂b = sign(z) = sign(h) where the slope is 1
        db = (dz * torch.sign(hs[1:])).sum((0, 1)).to(bias_hh.dtype)
    dc0 = dc0.to(c0.dtype) if (lstm and c0 is not None and needs[4]) else None
    return (da, dw, db, dh0, dc0, dn0_grad) + (None,) * 7


_recurrence_fwd_op.register_autograd(_recurrence_backward, setup_context=_recurrence_setup)


def _recurrence(a, weight_hh, bias_hh, h0, c0, n0, cell, s=0.0, mu=0.0, restart=0, step_offset=0,
                time_major=False):
    save = backward_follows(a, weight_hh, bias_hh, h0, c0, n0)  # evaluation keeps 2 slots and no gates
    return _recurrence_fwd_op(a, weight_hh, bias_hh, h0, c0, n0, cell, float(s), float(mu), int(restart),
                              int(step_offset), bool(time_major), save)


def restart_lambda(step: int, mu: float, restart: int) -> float:
    """λ at `step` as the kernels compute it (_momentum): restart schedule when restart > 0, else mu."""
    if restart > 0:
        k = step % restart
        return k / (k + 3.0)
    return mu


def lstm_recurrence(a, weight_hh, bias_hh=None, h0=None, c0=None, time_major=False):
    """Triton LSTM core on validated inputs (tritonrnn.functional.recurrence validates): (h, h_T, c_T)."""
    out, hT, cT = _recurrence(a, weight_hh, bias_hh, h0, c0, None, LSTM, time_major=time_major)[:3]
    return out, hT, cT


def rnn_recurrence(a, weight_hh, bias_hh=None, h0=None, nonlinearity="tanh", time_major=False):
    """Triton RNN core on validated inputs: (h, h_T). nonlinearity "modrelu": bias_hh is the modReLU bias."""
    cell = {"tanh": RNN_TANH, "relu": RNN_RELU, "modrelu": RNN_MODRELU}[nonlinearity]
    out, hT = _recurrence(a, weight_hh, bias_hh, h0, None, None, cell, time_major=time_major)[:2]
    return out, hT


def nesterov_lstm_recurrence(u, weight_hh, bias_hh, h0, c0, a0, s, restart, step_offset, time_major=False):
    """Triton NesterovLSTM core (SPEC §1.3) on validated inputs: (h, h_T, c_T, a_T fp32)."""
    out, hT, cT, aT = _recurrence(u, weight_hh, bias_hh, h0, c0, a0, NESTEROV_LSTM, s=s, restart=restart,
                                  step_offset=step_offset, time_major=time_major)[:4]
    return out, hT, cT, aT


def momentum_lstm_recurrence(u, weight_hh, bias_hh, h0, c0, v0, mu, s, restart, step_offset, time_major=False):
    """Triton LSTM core with the momentum / restart drive of SPEC §1.2 fused into the loop (restart None:
    constant mu) on validated inputs: (h, h_T, c_T, v_T fp32)."""
    out, hT, cT, vT = _recurrence(u, weight_hh, bias_hh, h0, c0, v0, MOMENTUM_LSTM, s=s, mu=mu,
                                  restart=restart or 0, step_offset=step_offset, time_major=time_major)[:4]
    return out, hT, cT, vT


def _aot(name, cell, dtype, H, save=True, has_bias=True, has_dout=True, default=True):
    BB, BH, BK, warps = _blocks(H, name, GATES[cell])
    blocks = {"BB": BB, "BH": BH, "BK": BK}
    ptr = f"*{dtype}"
    if name == "fwd":
        sig = {"a_ptr": ptr, "w_ptr": ptr, "b_ptr": ptr, "hs_ptr": "*fp32", "cs_ptr": "*fp32",
               "ns_ptr": "*fp32", "gates_ptr": "*fp32", "out_ptr": ptr,
               "B": "i32", "T": "i32", "H": "i32", "NSLOT": "i32",
               "stride_ab": "i32", "stride_at": "i32", "stride_ac": "i32",
               "stride_ob": "i32", "stride_ot": "i32", "stride_oc": "i32",
               "s": "fp32", "mu": "fp32", "restart": "i32", "step_offset": "i32",
               "CELL": "constexpr", "HAS_BIAS": "constexpr", "SAVE": "constexpr",
               "BB": "constexpr", "BH": "constexpr", "BK": "constexpr"}
        cons = {"CELL": cell, "HAS_BIAS": has_bias, "SAVE": save, **blocks}
        kernel = _recurrence_fwd_kernel
    else:
        sig = {"dout_ptr": ptr, "dhT_ptr": "*fp32", "dc_ptr": "*fp32", "dn_ptr": "*fp32", "dv_ptr": "*fp32",
               "w_ptr": ptr,
               "hs_ptr": "*fp32", "cs_ptr": "*fp32", "gates_ptr": "*fp32", "dz_ptr": "*fp32",
               "B": "i32", "T": "i32", "H": "i32",
               "stride_db": "i32", "stride_dt": "i32", "stride_dc": "i32",
               "mu": "fp32", "restart": "i32", "step_offset": "i32",
               "CELL": "constexpr", "HAS_DOUT": "constexpr",
               "BB": "constexpr", "BH": "constexpr", "BK": "constexpr"}
        cons = {"CELL": cell, "HAS_DOUT": has_dout, **blocks}
        kernel = _recurrence_bwd_kernel
    cell_name = {LSTM: "lstm", RNN_TANH: "rnn_tanh", RNN_RELU: "rnn_relu", NESTEROV_LSTM: "nesterov_lstm",
                 MOMENTUM_LSTM: "momentum_lstm", RNN_MODRELU: "rnn_modrelu"}[cell]
    suffix = "" if save else "_infer"
    return AotConfig(f"recurrence_{name}_{cell_name}_{dtype}_H{H}{suffix}", kernel, sig, cons,
                     num_warps=warps, num_stages=NUM_STAGES, default=default)


AOT_CONFIGS = [
    _aot(direction, cell, dtype, H)
    for direction in ("fwd", "bwd")
    for cell in (LSTM, RNN_TANH)
    for dtype in ("fp32", "bf16")
    for H in (32, 256, 1024)
] + [
    _aot("fwd", RNN_RELU, "fp16", 256),
    _aot("bwd", RNN_RELU, "fp16", 256),
    _aot("fwd", RNN_MODRELU, "fp32", 256),
    _aot("bwd", RNN_MODRELU, "fp32", 256),
    _aot("fwd", RNN_MODRELU, "bf16", 1024),
    _aot("bwd", RNN_MODRELU, "bf16", 1024),
    _aot("fwd", LSTM, "bf16", 256, save=False),
    _aot("fwd", NESTEROV_LSTM, "fp32", 256),
    _aot("bwd", NESTEROV_LSTM, "fp32", 256),
    _aot("fwd", NESTEROV_LSTM, "bf16", 1024),
    _aot("bwd", NESTEROV_LSTM, "bf16", 1024),
    _aot("fwd", MOMENTUM_LSTM, "fp32", 256),
    _aot("bwd", MOMENTUM_LSTM, "fp32", 256),
    _aot("fwd", MOMENTUM_LSTM, "bf16", 1024),
    _aot("bwd", MOMENTUM_LSTM, "bf16", 1024),
]
