"""One step body of the nonlinear recurrence, forward and backward, for every cell (SPEC §1.1-§1.3;
KERNELS.md §2.3, §3). The three launch forms of kernels/recurrence/launch.py run these two kernels:

- Tier A (LOCAL, RESIDENT, P = 1): one program per batch tile owns every hidden unit; W_hhᵀ is loaded once,
  before the time loop (the compiler keeps it in shared memory), and h_{t-1} (backward: dz_{t+1}) stays in
  registers: no exchange through global memory, no barrier.
- Tier C (COOP, RESIDENT, P >= 1): program (p, b) owns HS hidden units with all G gate columns, so the
  pointwise update is local; its W slice is loaded once; h_t goes to a two-slot exchange buffer xs read back
  with L2-only (.cg) loads, and only the P programs of batch tile b meet at a barrier each step.
- Tier B (neither): the same sliced body with W and h streamed in K-chunks, one launch per step (the
  kernel boundary is the barrier), so any (H, B) runs without co-residency.

Buffers (allocated by launch.py): hs, cs [NSLOT, B, H] fp32 (NSLOT = T + 1 when a backward follows: every
h_t, c_t for the weight gradient and the pointwise adjoints; 2 in evaluation), xs [2, B, H] in the weight's
dtype (the exchange: h_{t-1} enters the product in the weight's dtype in every tier, so the tiers agree),
gates [T, B, 4H] fp32 (the activated LSTM gates), dz [T, B, G·H] fp32 (the backward's exchange and the
weight-gradient GEMM input), cnt [⌈B/BB⌉] int32 barrier counters (zeroed per launch), err [1] int32.

State and accumulation are fp32 whatever the weight dtype. Offsets into W are int32 (the launcher checks
numel(W) < 2^31: int64 tile offsets cost the streamed form ~100 registers, KERNELS.md §4); everything
indexed by B or T is int64.
"""
from __future__ import annotations

import triton
import triton.language as tl

# Cell codes (constexpr CELL): one kernel body serves every core so the time loop is written once.
LSTM = 0
RNN_TANH = 1
RNN_RELU = 2
NESTEROV_LSTM = 3  # SPEC §1.3, drive u, carried state a_t
MOMENTUM_LSTM = 4  # SPEC §1.2 momentum / restart drive fused into the loop, drive u, carried state v_t
RNN_MODRELU = 5  # orthogonal RNN (DTRIV): h_t = modReLU(a_t + U h_{t-1}), b_ptr holds the modReLU bias

GATES = {LSTM: 4, RNN_TANH: 1, RNN_RELU: 1, NESTEROV_LSTM: 4, MOMENTUM_LSTM: 4, RNN_MODRELU: 1}
CARRIED = (NESTEROV_LSTM, MOMENTUM_LSTM)


@triton.jit
def _tanh(x):
    # tanh(x) = 2σ(2x) − 1: tl.sigmoid exists on every triton and in the interpreter (no libdevice).
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _momentum(step, mu, restart):
    """λ_t: the restart schedule (t mod F)/((t mod F)+3) of SPEC §1.2 when restart = F > 0, else the
    constant mu. Runtime values: a changing schedule never recompiles."""
    k = tl.cast(step % tl.maximum(restart, 1), tl.float32)
    return tl.where(restart > 0, k / (k + 3.0), mu)


@triton.jit
def _dot(x, w, PRECISION: tl.constexpr, WIDEN: tl.constexpr):
    """x @ w with fp32 accumulation; x is rounded to w's dtype first (bf16/fp16 weights: the product runs
    on half tensor cores, as cuDNN's half LSTM does). PRECISION is the fp32 mode (tf32 / tf32x3 / ieee).
    WIDEN (interpreter only): triton's interpreter computes half tl.dot wrongly, so the already rounded
    operands are widened to fp32, which is exact for products of half values."""
    x = x.to(w.dtype)
    if WIDEN:
        acc = tl.dot(x.to(tl.float32), w.to(tl.float32), input_precision="ieee")
    else:
        acc = tl.dot(x, w, input_precision=PRECISION)
    return acc


@triton.jit
def _w_t_tile(w_ptr, row0, H, ks, cols, kmask, cmask):
    """[K, N] tile of W_hhᵀ: element (k, n) = W_hh[row0 + cols[n], ks[k]] (the forward product)."""
    offs = (row0 + cols[None, :]) * H + ks[:, None]
    return tl.load(w_ptr + offs, mask=kmask[:, None] & cmask[None, :], other=0.0)


@triton.jit
def _w_tile(w_ptr, row0, H, ks, cols, kmask, cmask):
    """[K, N] tile of W_hh: element (k, n) = W_hh[row0 + ks[k], cols[n]] (the backward product dz W_hh)."""
    offs = (row0 + ks[:, None]) * H + cols[None, :]
    return tl.load(w_ptr + offs, mask=kmask[:, None] & cmask[None, :], other=0.0)


@triton.jit
def _program_tile(B, H, BB: tl.constexpr, HS: tl.constexpr):
    """Program (p, bt) of the grid (P, ⌈B/BB⌉): its batch tile (rows) and hidden units (cols), with masks."""
    p = tl.program_id(0)
    bt = tl.program_id(1)
    rows = bt * BB + tl.arange(0, BB)
    rmask = rows < B
    cols = p * HS + tl.arange(0, HS)
    cmask = cols < H
    return bt, tl.num_programs(0), rows, rmask, rows.to(tl.int64), cols, cmask, rmask[:, None] & cmask[None, :]


@triton.jit
def _barrier(cnt_ptr, err_ptr, target, budget):
    """Meet the other programs of this batch tile: monotonic counter (never reset within a launch), one
    release arrival, an acquire poll, bar.sync on both sides so every thread's h_t stores precede the
    arrival and every thread's reads follow the acquire. The poll is bounded: a barrier missed within
    `budget` polls sets the error flag (the launcher raises) and later barriers stop waiting (budget 0),
    so a missed barrier ends the launch instead of hanging the device. Returns the budget left."""
    tl.debug_barrier()
    tl.atomic_add(cnt_ptr, 1, sem="release", scope="gpu")
    seen = tl.atomic_add(cnt_ptr, 0, sem="acquire", scope="gpu")
    spin = 0
    while (seen < target) & (spin < budget):
        seen = tl.atomic_add(cnt_ptr, 0, sem="acquire", scope="gpu")
        spin += 1
    missed = seen < target
    if missed:
        tl.store(err_ptr, 1)
    tl.debug_barrier()
    return tl.where(missed, 0, budget)


@triton.jit
def _drive(acc, x, n, s, lam, CELL: tl.constexpr):
    """(z, n'): the pre-activation of one gate tile from acc = W_hh h_{t-1} + b_hh and the drive x, and the
    column-local carried state n (fp32, in registers) after this step."""
    if CELL == 3:
        # NesterovLSTM, SPEC §1.3: a_t = acc − s u_t; z_t = a_t + μ_t (a_t − a_{t-1}); carried a_t.
        a = acc - s * x
        z = a + lam * (a - n)
        n = a
    elif CELL == 4:
        # fused momentum / restart drive, SPEC §1.2: v_t = λ_t v_{t-1} + s u_t; z_t = v_t + acc.
        n = lam * n + s * x
        z = acc + n
    else:
        z = acc + x
    return z, n


@triton.jit
def _drive_adjoint(dz, q, dv_ptr, v_off, m2, lam, coef, CELL: tl.constexpr):
    """(r, q'): from the pointwise dz_t of one gate tile, the adjoint r of W_hh h_{t-1} + b_hh (what the
    recurrent product and the dz buffer carry) and the column-local carried adjoint q. At t = T-1, q holds
    the final carried state's cotangent and coef = 1; otherwise coef is the next step's factor."""
    if CELL == 3:
        # z_t = (1+μ_t) a_t − μ_t a_{t-1}: da_t = (1+μ_t) dz_t − μ_{t+1} dz_{t+1}; q carries dz_{t+1}.
        r = (1.0 + lam) * dz + coef * q
        q = dz
    elif CELL == 4:
        # dv_t = dz_t + λ_{t+1} dv_{t+1}; q carries dv_{t+1}; du_t = s dv_t is formed by the launcher.
        q = dz + coef * q
        tl.store(dv_ptr + v_off, q, mask=m2)
        r = dz
    else:
        r = dz
    return r, q


@triton.jit(do_not_specialize=["t_begin", "t_end", "NSLOT", "restart", "step_offset", "max_spin"])
def _recurrence_fwd_kernel(
    a_ptr, w_ptr, b_ptr, hs_ptr, cs_ptr, ns_ptr, gates_ptr, out_ptr, xs_ptr, cnt_ptr, err_ptr,
    B, H, t_begin, t_end, NSLOT,
    stride_ab, stride_at, stride_ac,
    stride_ob, stride_ot, stride_oc,
    s, mu, restart, step_offset, max_spin,
    CELL: tl.constexpr, HAS_BIAS: tl.constexpr, SAVE: tl.constexpr,
    BB: tl.constexpr, HS: tl.constexpr, HK: tl.constexpr, KC: tl.constexpr,
    RESIDENT: tl.constexpr, LOCAL: tl.constexpr, COOP: tl.constexpr,
    PRECISION: tl.constexpr, WIDEN: tl.constexpr,
):
    G: tl.constexpr = 1 if (CELL == 1 or CELL == 2 or CELL == 5) else 4
    HAS_N: tl.constexpr = CELL == 3 or CELL == 4
    bt, P, rows, rmask, rows64, cols, cmask, m2 = _program_tile(B, H, BB, HS)
    GH = G * H
    BH = tl.cast(B, tl.int64) * H  # one slot of hs / cs / xs
    h_off = rows64[:, None] * H + cols[None, :]
    n_off = rows64[:, None] * GH + cols[None, :]
    a_base = a_ptr + rows64[:, None] * stride_ab + cols.to(tl.int64)[None, :] * stride_ac
    a_gate = tl.cast(H, tl.int64) * stride_ac  # from one gate's columns of a to the next
    o_base = out_ptr + rows64[:, None] * stride_ob + cols.to(tl.int64)[None, :] * stride_oc
    ks = tl.arange(0, HK)
    kmask = ks < H

    if HAS_BIAS and CELL != 5:  # the modReLU bias enters the nonlinearity, not z
        b0 = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
        if G == 4:
            b1 = tl.load(b_ptr + H + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
            b2 = tl.load(b_ptr + 2 * H + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
            b3 = tl.load(b_ptr + 3 * H + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    if CELL == 5 and HAS_BIAS:
        bm = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    if RESIDENT:
        # This program's W slice, loaded once for all T steps (hoisted out of the loop on purpose).
        w0 = _w_t_tile(w_ptr, 0, H, ks, cols, kmask, cmask)
        if G == 4:
            w1 = _w_t_tile(w_ptr, H, H, ks, cols, kmask, cmask)
            w2 = _w_t_tile(w_ptr, 2 * H, H, ks, cols, kmask, cmask)
            w3 = _w_t_tile(w_ptr, 3 * H, H, ks, cols, kmask, cmask)
    slot0 = tl.cast(t_begin % NSLOT, tl.int64) * BH
    if LOCAL:  # P = 1 and HS = HK: this program's h is the whole h
        h = tl.load(hs_ptr + slot0 + h_off, mask=m2, other=0.0)
    if G == 4:
        c = tl.load(cs_ptr + slot0 + h_off, mask=m2, other=0.0)
    if HAS_N:
        n0 = tl.load(ns_ptr + n_off, mask=m2, other=0.0)
        n1 = tl.load(ns_ptr + n_off + H, mask=m2, other=0.0)
        n2 = tl.load(ns_ptr + n_off + 2 * H, mask=m2, other=0.0)
        n3 = tl.load(ns_ptr + n_off + 3 * H, mask=m2, other=0.0)
    budget = max_spin
    for t in range(t_begin, t_end):
        t64 = tl.cast(t, tl.int64)
        lam = _momentum(step_offset + t, mu, restart)
        # W_hh h_{t-1}, all G gates of this program's units
        if LOCAL:
            acc0 = _dot(h, w0, PRECISION, WIDEN)
            if G == 4:
                acc1 = _dot(h, w1, PRECISION, WIDEN)
                acc2 = _dot(h, w2, PRECISION, WIDEN)
                acc3 = _dot(h, w3, PRECISION, WIDEN)
        elif RESIDENT:
            hx = tl.load(xs_ptr + (t64 % 2) * BH + rows64[:, None] * H + ks[None, :],
                         mask=rmask[:, None] & kmask[None, :], other=0.0, cache_modifier=".cg")
            acc0 = _dot(hx, w0, PRECISION, WIDEN)
            if G == 4:
                acc1 = _dot(hx, w1, PRECISION, WIDEN)
                acc2 = _dot(hx, w2, PRECISION, WIDEN)
                acc3 = _dot(hx, w3, PRECISION, WIDEN)
        else:
            acc0 = tl.zeros([BB, HS], dtype=tl.float32)
            acc1 = tl.zeros([BB, HS], dtype=tl.float32)
            acc2 = tl.zeros([BB, HS], dtype=tl.float32)
            acc3 = tl.zeros([BB, HS], dtype=tl.float32)
            for k0 in range(0, H, KC):
                kc = k0 + tl.arange(0, KC)
                kcm = kc < H
                hx = tl.load(xs_ptr + (t64 % 2) * BH + rows64[:, None] * H + kc[None, :],
                             mask=rmask[:, None] & kcm[None, :], other=0.0, cache_modifier=".cg")
                acc0 += _dot(hx, _w_t_tile(w_ptr, 0, H, kc, cols, kcm, cmask), PRECISION, WIDEN)
                if G == 4:
                    acc1 += _dot(hx, _w_t_tile(w_ptr, H, H, kc, cols, kcm, cmask), PRECISION, WIDEN)
                    acc2 += _dot(hx, _w_t_tile(w_ptr, 2 * H, H, kc, cols, kcm, cmask), PRECISION, WIDEN)
                    acc3 += _dot(hx, _w_t_tile(w_ptr, 3 * H, H, kc, cols, kcm, cmask), PRECISION, WIDEN)
        if HAS_BIAS and CELL != 5:
            acc0 += b0
            if G == 4:
                acc1 += b1
                acc2 += b2
                acc3 += b3
        x_ptrs = a_base + t64 * stride_at
        x0 = tl.load(x_ptrs, mask=m2, other=0.0).to(tl.float32)
        cur = ((t64 + 1) % NSLOT) * BH
        if G == 4:
            x1 = tl.load(x_ptrs + a_gate, mask=m2, other=0.0).to(tl.float32)
            x2 = tl.load(x_ptrs + 2 * a_gate, mask=m2, other=0.0).to(tl.float32)
            x3 = tl.load(x_ptrs + 3 * a_gate, mask=m2, other=0.0).to(tl.float32)
            if HAS_N:
                z0, n0 = _drive(acc0, x0, n0, s, lam, CELL)
                z1, n1 = _drive(acc1, x1, n1, s, lam, CELL)
                z2, n2 = _drive(acc2, x2, n2, s, lam, CELL)
                z3, n3 = _drive(acc3, x3, n3, s, lam, CELL)
            else:
                z0 = acc0 + x0
                z1 = acc1 + x1
                z2 = acc2 + x2
                z3 = acc3 + x3
            gi = tl.sigmoid(z0)
            gf = tl.sigmoid(z1)
            gg = _tanh(z2)
            go = tl.sigmoid(z3)
            c = gf * c + gi * gg
            h_new = go * _tanh(c)
            tl.store(cs_ptr + cur + h_off, c, mask=m2)
            if SAVE:
                g_off = (t64 * B + rows64[:, None]) * GH + cols[None, :]
                tl.store(gates_ptr + g_off, gi, mask=m2)
                tl.store(gates_ptr + g_off + H, gf, mask=m2)
                tl.store(gates_ptr + g_off + 2 * H, gg, mask=m2)
                tl.store(gates_ptr + g_off + 3 * H, go, mask=m2)
        else:
            z0 = acc0 + x0
            if CELL == 1:
                h_new = _tanh(z0)
            elif CELL == 2:
                h_new = tl.maximum(z0, 0.0)
            else:
                # modReLU(z) = sign(z)·relu(|z| + b) (Arjovsky et al.; DTRIV's modrelu)
                mag = tl.abs(z0)
                if HAS_BIAS:
                    mag += bm
                h_new = tl.where(z0 > 0.0, 1.0, tl.where(z0 < 0.0, -1.0, 0.0)) * tl.maximum(mag, 0.0)
        # padded rows/units stay exactly 0, so they add nothing to the next product
        h_new = tl.where(m2, h_new, 0.0)
        tl.store(hs_ptr + cur + h_off, h_new, mask=m2)
        tl.store(o_base + t64 * stride_ot, h_new.to(out_ptr.dtype.element_ty), mask=m2)
        if LOCAL:
            h = h_new
        else:
            tl.store(xs_ptr + ((t64 + 1) % 2) * BH + h_off, h_new.to(xs_ptr.dtype.element_ty), mask=m2)
        if COOP:
            # Passing barrier t also means every peer finished reading slot t % 2, which step t + 1
            # overwrites: two slots suffice.
            budget = _barrier(cnt_ptr + bt, err_ptr, P * (t - t_begin + 1), budget)
    if HAS_N:
        tl.store(ns_ptr + n_off, n0, mask=m2)
        tl.store(ns_ptr + n_off + H, n1, mask=m2)
        tl.store(ns_ptr + n_off + 2 * H, n2, mask=m2)
        tl.store(ns_ptr + n_off + 3 * H, n3, mask=m2)


@triton.jit(do_not_specialize=["T", "r_begin", "r_end", "restart", "step_offset", "max_spin"])
def _recurrence_bwd_kernel(
    dout_ptr, dhT_ptr, dc_ptr, dn_ptr, dv_ptr, w_ptr, hs_ptr, cs_ptr, gates_ptr, dz_ptr, cnt_ptr, err_ptr,
    B, H, T, r_begin, r_end,
    stride_db, stride_dt, stride_dc,
    mu, restart, step_offset, max_spin,
    CELL: tl.constexpr, HAS_DOUT: tl.constexpr,
    BB: tl.constexpr, HS: tl.constexpr, HK: tl.constexpr, KC: tl.constexpr,
    RESIDENT: tl.constexpr, LOCAL: tl.constexpr, COOP: tl.constexpr,
    PRECISION: tl.constexpr, WIDEN: tl.constexpr,
):
    """Reverse steps t = T-1-r for r in [r_begin, r_end) (KERNELS.md §3): dh_t = dz_{t+1} W_hh[:, units]
    (+ dh_T at t = T-1) + dout_t, the pointwise adjoints of this program's units, dz_t stored for all t
    (fp32) — the exchange for step t-1 and the input of the weight-gradient GEMMs after the loop."""
    G: tl.constexpr = 1 if (CELL == 1 or CELL == 2 or CELL == 5) else 4
    HAS_N: tl.constexpr = CELL == 3 or CELL == 4
    bt, P, rows, rmask, rows64, cols, cmask, m2 = _program_tile(B, H, BB, HS)
    GH = G * H
    BH = tl.cast(B, tl.int64) * H
    h_off = rows64[:, None] * H + cols[None, :]
    n_off = rows64[:, None] * GH + cols[None, :]
    ks = tl.arange(0, HK)
    kmask = ks < H
    if RESIDENT:
        v0 = _w_tile(w_ptr, 0, H, ks, cols, kmask, cmask)
        if G == 4:
            v1 = _w_tile(w_ptr, H, H, ks, cols, kmask, cmask)
            v2 = _w_tile(w_ptr, 2 * H, H, ks, cols, kmask, cmask)
            v3 = _w_tile(w_ptr, 3 * H, H, ks, cols, kmask, cmask)
    if G == 4:
        dc = tl.load(dc_ptr + h_off, mask=m2, other=0.0)
    if HAS_N:
        q0 = tl.load(dn_ptr + n_off, mask=m2, other=0.0)
        q1 = tl.load(dn_ptr + n_off + H, mask=m2, other=0.0)
        q2 = tl.load(dn_ptr + n_off + 2 * H, mask=m2, other=0.0)
        q3 = tl.load(dn_ptr + n_off + 3 * H, mask=m2, other=0.0)
    if LOCAL:  # dz_{t+1} of every unit, in registers (zero before the last step)
        e0 = tl.zeros([BB, HS], dtype=tl.float32)
        e1 = tl.zeros([BB, HS], dtype=tl.float32)
        e2 = tl.zeros([BB, HS], dtype=tl.float32)
        e3 = tl.zeros([BB, HS], dtype=tl.float32)
    budget = max_spin
    for r in range(r_begin, r_end):
        t = T - 1 - r
        t64 = tl.cast(t, tl.int64)
        # step flags as vectors: the interpreter rejects a scalar mask broadcast into a load
        last = (tl.zeros([HS], dtype=tl.int32) + t) == T - 1
        lam = _momentum(step_offset + t, mu, restart)
        lam_next = _momentum(step_offset + t + 1, mu, restart)
        # the factor of the carried adjoint: 1 at t = T-1 (the final state's cotangent enters as is)
        if CELL == 3:
            coef = tl.where(t + 1 < T, -lam_next, 1.0)
        else:
            coef = tl.where(t + 1 < T, lam_next, 1.0)
        dh = tl.load(dhT_ptr + h_off, mask=m2 & last[None, :], other=0.0)
        nxt = (t64 + 1) * B + rows64[:, None]  # row index of dz_{t+1}
        if LOCAL:
            dh += _dot(e0, v0, PRECISION, WIDEN)
            if G == 4:
                dh += _dot(e1, v1, PRECISION, WIDEN)
                dh += _dot(e2, v2, PRECISION, WIDEN)
                dh += _dot(e3, v3, PRECISION, WIDEN)
        elif RESIDENT:
            km = rmask[:, None] & (kmask & ((tl.zeros([HK], dtype=tl.int32) + t + 1) < T))[None, :]
            ek = tl.load(dz_ptr + nxt * GH + ks[None, :], mask=km, other=0.0, cache_modifier=".cg")
            dh += _dot(ek, v0, PRECISION, WIDEN)
            if G == 4:
                ek = tl.load(dz_ptr + nxt * GH + H + ks[None, :], mask=km, other=0.0, cache_modifier=".cg")
                dh += _dot(ek, v1, PRECISION, WIDEN)
                ek = tl.load(dz_ptr + nxt * GH + 2 * H + ks[None, :], mask=km, other=0.0, cache_modifier=".cg")
                dh += _dot(ek, v2, PRECISION, WIDEN)
                ek = tl.load(dz_ptr + nxt * GH + 3 * H + ks[None, :], mask=km, other=0.0, cache_modifier=".cg")
                dh += _dot(ek, v3, PRECISION, WIDEN)
        else:
            # one K-loop over all G·H rows of W_hh (a chunk may straddle two gates: the sum is the same)
            for k0 in range(0, GH, KC):
                kc = k0 + tl.arange(0, KC)
                kcm = kc < GH
                km = rmask[:, None] & (kcm & ((tl.zeros([KC], dtype=tl.int32) + t + 1) < T))[None, :]
                ek = tl.load(dz_ptr + nxt * GH + kc[None, :], mask=km, other=0.0, cache_modifier=".cg")
                dh += _dot(ek, _w_tile(w_ptr, 0, H, kc, cols, kcm, cmask), PRECISION, WIDEN)
        if HAS_DOUT:
            d_off = rows64[:, None] * stride_db + t64 * stride_dt + cols.to(tl.int64)[None, :] * stride_dc
            dh += tl.load(dout_ptr + d_off, mask=m2, other=0.0).to(tl.float32)
        cur = (t64 + 1) * BH
        g_off = (t64 * B + rows64[:, None]) * GH + cols[None, :]
        if G == 4:
            gi = tl.load(gates_ptr + g_off, mask=m2, other=0.0)
            gf = tl.load(gates_ptr + g_off + H, mask=m2, other=0.0)
            gg = tl.load(gates_ptr + g_off + 2 * H, mask=m2, other=0.0)
            go = tl.load(gates_ptr + g_off + 3 * H, mask=m2, other=0.0)
            c = tl.load(cs_ptr + cur + h_off, mask=m2, other=0.0)
            c_prev = tl.load(cs_ptr + t64 * BH + h_off, mask=m2, other=0.0)
            tc = _tanh(c)
            dc = dc + dh * go * (1.0 - tc * tc)
            p0 = dc * gg * gi * (1.0 - gi)
            p1 = dc * c_prev * gf * (1.0 - gf)
            p2 = dc * gi * (1.0 - gg * gg)
            p3 = dh * tc * go * (1.0 - go)
            dc = dc * gf
            if HAS_N:
                dz0, q0 = _drive_adjoint(p0, q0, dv_ptr, g_off, m2, lam, coef, CELL)
                dz1, q1 = _drive_adjoint(p1, q1, dv_ptr, g_off + H, m2, lam, coef, CELL)
                dz2, q2 = _drive_adjoint(p2, q2, dv_ptr, g_off + 2 * H, m2, lam, coef, CELL)
                dz3, q3 = _drive_adjoint(p3, q3, dv_ptr, g_off + 3 * H, m2, lam, coef, CELL)
            else:
                dz0 = p0
                dz1 = p1
                dz2 = p2
                dz3 = p3
            dz0 = tl.where(m2, dz0, 0.0)
            dz1 = tl.where(m2, dz1, 0.0)
            dz2 = tl.where(m2, dz2, 0.0)
            dz3 = tl.where(m2, dz3, 0.0)
            tl.store(dz_ptr + g_off, dz0, mask=m2)
            tl.store(dz_ptr + g_off + H, dz1, mask=m2)
            tl.store(dz_ptr + g_off + 2 * H, dz2, mask=m2)
            tl.store(dz_ptr + g_off + 3 * H, dz3, mask=m2)
            if LOCAL:
                e1 = dz1
                e2 = dz2
                e3 = dz3
        else:
            hv = tl.load(hs_ptr + cur + h_off, mask=m2, other=0.0)
            if CELL == 1:
                dz0 = dh * (1.0 - hv * hv)
            elif CELL == 2:
                dz0 = tl.where(hv > 0.0, dh, 0.0)
            else:
                # modReLU: z + b·sign(z) where |z| + b > 0 (there h != 0, slope 1), else 0; so h alone
                # decides, and db = Σ dz·sign(h) is formed by the launcher.
                dz0 = tl.where(hv != 0.0, dh, 0.0)
            dz0 = tl.where(m2, dz0, 0.0)
            tl.store(dz_ptr + g_off, dz0, mask=m2)
        if LOCAL:
            e0 = dz0
        if COOP:
            budget = _barrier(cnt_ptr + bt, err_ptr, P * (r - r_begin + 1), budget)
    if G == 4:
        tl.store(dc_ptr + h_off, dc, mask=m2)
    if HAS_N:
        tl.store(dn_ptr + n_off, q0, mask=m2)
        tl.store(dn_ptr + n_off + H, q1, mask=m2)
        tl.store(dn_ptr + n_off + 2 * H, q2, mask=m2)
        tl.store(dn_ptr + n_off + 3 * H, q3, mask=m2)


@triton.jit(do_not_specialize=["steps", "max_spin"])
def _barrier_probe_kernel(cnt_ptr, err_ptr, steps, max_spin):
    """`steps` barriers of the P programs of one group and nothing else: the barrier's cost per step
    (perf/recurrence_tiers.py) and a check that it neither hangs nor passes early (err stays 0)."""
    P = tl.num_programs(0)
    budget = max_spin
    for i in range(steps):
        budget = _barrier(cnt_ptr, err_ptr, P * (i + 1), budget)
