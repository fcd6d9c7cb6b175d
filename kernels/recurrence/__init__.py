"""Fused nonlinear recurrence of the LSTM and RNN cores (SPEC §1.1-§1.3; KERNELS.md §2-3; issue 12).

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

The rooms of this package:
- step.py     one step body, forward and backward, for every cell; Tier A / B / C are constexpr forms of it;
- launch.py   buffers and the three launch forms (cooperative launch, per-step launches in a CUDA graph);
- dispatch.py which form and tiles serve a (H, B, dtype, device) — fit rule, measured table, env override;
- here        the custom ops (torch.compile sees one opaque node per call), the autograd formula and the
              weight gradients as single GEMMs after the loop (dW_hh = Σ_t dz_tᵀ h_{t-1}, db_hh = Σ_t dz_t).
No value atomics anywhere (the only atomics are Tier C's barrier counters): two runs are bitwise identical.

The previous single-form kernel (one program per 16 batch rows walking every hidden block with W_hh
re-read from L2 each step) measured ~100 μs per step on an H200 at B 128, H 256 fp32
(perf/results/gpu-h200-20261126T0022Z); it is replaced, not kept.
"""
from __future__ import annotations

import torch

from .._aot import AotConfig
from .._ops import NOTHING, backward_follows, nothing, refuse_double_backward
from . import dispatch, launch
from .step import (CARRIED, GATES, LSTM, MOMENTUM_LSTM, NESTEROV_LSTM, RNN_MODRELU, RNN_RELU, RNN_TANH,
                   _barrier_probe_kernel, _recurrence_bwd_kernel, _recurrence_fwd_kernel)

__all__ = ["lstm_recurrence", "rnn_recurrence", "nesterov_lstm_recurrence", "momentum_lstm_recurrence",
           "recurrence_fwd", "recurrence_bwd", "restart_lambda", "LSTM", "RNN_TANH", "RNN_RELU",
           "NESTEROV_LSTM", "MOMENTUM_LSTM", "RNN_MODRELU", "GATES"]


def recurrence_fwd(a, weight_hh, bias_hh, h0, c0, *, cell, save, time_major=False, ns0=None, s=0.0, mu=0.0,
                   restart=0, step_offset=0, plan=None):
    """Run the forward. Returns (out [B,T,H] in a's dtype, hs, cs, ns, gates) — see launch.forward.
    restart = F > 0 selects the restart schedule for λ_t, restart = 0 the constant mu; plan None: the
    dispatcher's (dispatch.plan_for)."""
    return launch.forward(a, weight_hh, bias_hh, h0, c0, ns0, cell=cell, save=save, time_major=time_major,
                          s=s, mu=mu, restart=restart, step_offset=step_offset, plan=plan)


def recurrence_bwd(dout, dhT, dcT, dnT, weight_hh, hs, cs, gates, *, cell, mu=0.0, restart=0, step_offset=0,
                   plan=None):
    """Run the backward over saved activations. Returns (dz, dc0, dn, dv) — see launch.backward."""
    return launch.backward(dout, dhT, dcT, dnT, weight_hh, hs, cs, gates, cell=cell, mu=mu, restart=restart,
                           step_offset=step_offset, plan=plan)


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


# ----------------------------------------------------------------------------------------------------
# AOT compile configurations (kernels/_aot.py): every plan the dispatcher can pick for H ∈ {32 … 1024},
# B ∈ {1 … 256} (issue 12 item 6), for both cores' gate counts and every dot mode, plus the other cells at one
# plan each. The fit rule is evaluated per architecture with that architecture's facts — sm_80: an A100's 108
# SMs and 163 KiB per block, sm_90: an H100/H200's 132 SMs and 227 KiB — once with Tier C allowed (a forced or
# measured choice) and once without (`auto` before a verified GPU run); a plan is compiled for the
# architectures that can pick it.
AOT_H = (32, 64, 128, 256, 512, 1024)
AOT_B = (1, 16, 64, 128, 256)
ARCH_FACTS = {80: (108, 163 * 1024), 90: (132, 227 * 1024)}
_CELL_NAMES = {LSTM: "lstm", RNN_TANH: "rnn_tanh", RNN_RELU: "rnn_relu", NESTEROV_LSTM: "nesterov_lstm",
               MOMENTUM_LSTM: "momentum_lstm", RNN_MODRELU: "rnn_modrelu"}
_TORCH_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _aot(direction, cell, dtype, prec, H, plan, save=True, archs=(80, 90)):
    HK = max(16, 1 << (H - 1).bit_length())
    tiles = dict(BB=plan.BB, HS=plan.HS, HK=HK, KC=plan.KC, RESIDENT=plan.tier in ("A", "C"),
                 LOCAL=plan.tier == "A", COOP=plan.tier == "C", PRECISION=prec, WIDEN=False)
    ptr = f"*{dtype}"
    if direction == "fwd":
        xs = "*fp32" if plan.tier == "A" else ptr  # Tier A passes hs as the (unused) exchange pointer
        sig = {"a_ptr": ptr, "w_ptr": ptr, "b_ptr": ptr, "hs_ptr": "*fp32", "cs_ptr": "*fp32",
               "ns_ptr": "*fp32", "gates_ptr": "*fp32", "out_ptr": ptr, "xs_ptr": xs, "cnt_ptr": "*i32",
               "err_ptr": "*i32", "B": "i32", "H": "i32", "t_begin": "i32", "t_end": "i32", "NSLOT": "i32",
               "stride_ab": "i32", "stride_at": "i32", "stride_ac": "constexpr",
               "stride_ob": "i32", "stride_ot": "i32", "stride_oc": "constexpr",
               "s": "fp32", "mu": "fp32", "restart": "i32", "step_offset": "i32", "max_spin": "i32"}
        cons = {"stride_ac": 1, "stride_oc": 1, "CELL": cell, "HAS_BIAS": True, "SAVE": save, **tiles}
        kernel = _recurrence_fwd_kernel
    else:
        sig = {"dout_ptr": ptr, "dhT_ptr": "*fp32", "dc_ptr": "*fp32", "dn_ptr": "*fp32", "dv_ptr": "*fp32",
               "w_ptr": ptr, "hs_ptr": "*fp32", "cs_ptr": "*fp32", "gates_ptr": "*fp32", "dz_ptr": "*fp32",
               "cnt_ptr": "*i32", "err_ptr": "*i32", "B": "i32", "H": "i32", "T": "i32", "r_begin": "i32",
               "r_end": "i32", "stride_db": "i32", "stride_dt": "i32", "stride_dc": "constexpr",
               "mu": "fp32", "restart": "i32", "step_offset": "i32", "max_spin": "i32"}
        cons = {"stride_dc": 1, "CELL": cell, "HAS_DOUT": True, **tiles}
        kernel = _recurrence_bwd_kernel
    for name in cons:
        sig.setdefault(name, "constexpr")
    P = -(-H // plan.HS)
    suffix = "" if save else "_infer"
    name = (f"recurrence_{direction}_{_CELL_NAMES[cell]}_{dtype}_{prec}_H{H}_{plan.tier}{P}_HS{plan.HS}"
            f"_BB{plan.BB}_KC{plan.KC}_w{plan.num_warps}{suffix}")
    return AotConfig(name, kernel, sig, cons, num_warps=plan.num_warps, num_stages=plan.num_stages,
                     archs=tuple(archs))


def _picked(direction, cell, dtype, prec, H, Bs=AOT_B):
    """{plan: archs that can pick it} for one cell / dtype / mode / H over the batch sizes."""
    gates = GATES[cell]
    picked = {}
    for arch, (sms, smem) in ARCH_FACTS.items():
        for B in Bs:
            for cooperative in (True, False):
                plan = dispatch.fit(H, B, _TORCH_DTYPE[dtype], direction, prec, sms, smem, gates,
                                    cooperative=cooperative)
                picked.setdefault(plan, set()).add(arch)
    return picked


def _configs():
    out = []
    for direction in ("fwd", "bwd"):
        for cell in (LSTM, RNN_TANH):
            for dtype, prec in (("fp32", "tf32"), ("fp32", "tf32x3"), ("bf16", "ieee")):
                for H in AOT_H:
                    for plan, archs in _picked(direction, cell, dtype, prec, H).items():
                        out.append(_aot(direction, cell, dtype, prec, H, plan, archs=sorted(archs)))
        for cell in (RNN_RELU, RNN_MODRELU, NESTEROV_LSTM, MOMENTUM_LSTM):
            for dtype, prec, H in (("fp32", "tf32", 256), ("bf16", "ieee", 1024), ("fp16", "ieee", 64)):
                for plan, archs in _picked(direction, cell, dtype, prec, H, Bs=(128,)).items():
                    out.append(_aot(direction, cell, dtype, prec, H, plan, archs=sorted(archs)))
    # evaluation (no saved activations) at the papers' shape
    out.append(_aot("fwd", LSTM, "fp32", "tf32", 256,
                    dispatch.fit(256, 128, torch.float32, "fwd", "tf32", None, None), save=False))
    return out


_PROBE = AotConfig("recurrence_barrier_probe", _barrier_probe_kernel,
                   {"cnt_ptr": "*i32", "err_ptr": "*i32", "steps": "i32", "max_spin": "i32"}, {}, num_warps=4,
                   num_stages=1)

AOT_CONFIGS = _configs() + [_PROBE]
