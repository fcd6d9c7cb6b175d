"""Multi-tensor apply for the optimizers of SPEC §2 (SRSGD, NAG, Frank-Wolfe): one launch per step per
(param group, device, dtype) for any number and sizes of tensors (SPEC §2.4).

How one launch reaches many tensors (the recipe of apex `multi_tensor_apply`, written for Triton):
- each role (params, grads, each state) has a *pointer table*: an int64 device tensor of `data_ptr()`s,
  cast in-kernel with `.to(tl.pointer_type(DTYPE))`;
- a *chunk map* lists (tensor index, chunk start) pairs; program `pid` owns one BLOCK-element chunk of one
  tensor, so the grid is the total number of chunks and tensors of any size (0 included) mix freely;
- the tables live in a `MultiTensorPlan` owned by the optimizer and are rebuilt only when a tensor's
  storage changes (data_ptr or numel), e.g. after `zero_grad(set_to_none=True)` reallocates a gradient
  or `load_state_dict` replaces a state tensor. A rebuild is a pinned, non-blocking host→device copy:
  no host synchronisation (`.item()`) ever happens inside a step;
- every hyper-parameter (lr, μ_k, 1/k, δ, bias corrections) is an ordinary runtime argument, never a
  constexpr, and the integer flags are `do_not_specialize`: a changing schedule never recompiles.

Arithmetic is fp32 whatever the parameter dtype (fp32 / bf16 / fp16); optimizer state is fp32. Stores to
bf16 round to nearest-even explicitly (`_round_store`): the GPU's default conversion does that too, but
Triton's interpreter truncates, which would bias a long CPU-tested trajectory by half an ulp per step.

Frank-Wolfe's norms (SPEC §2.3, p = 2) come from a fused, scale-safe reduction (issue 14): Σ g² itself
under/overflows fp32 for a finite gradient scaled by 1e-24 or 1e20 (a zero LMO step), so each norm is held
as (m, s) with m = max|g| and s = Σ (g/m)², ‖g‖ = m·√s, the scaling of LAPACK's nrm2. `_fw_norm_kernel`
writes one (m, s) per chunk, then `_segment_norm_kernel` combines each tensor's chunks in a fixed order
(M = max m_c, S = Σ s_c (m_c/M)²: a deterministic segment reduction, no atomics); the global norm
combines the per-tensor pairs the same way in torch (tritonrnn.optim).

Under torch.compile the launchers are reached through custom ops whose step scalars arrive as one fp64
CPU tensor (`SCALARS` names its entries): the optimizers' counters are tensors there (issue 17), and a
CPU tensor is read on the host without synchronising the device, then passed as runtime arguments.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._aot import AotConfig
from ._ops import device_guard

BLOCK = 1024         # elements per chunk = per program
NUM_WARPS = 8        # 4 fp32 per thread (one 16-byte access); 4 warps doubles the registers (158 on sm_90)
SEGMENT_BLOCK = 256  # partial sums read per iteration of the segment sum
SEGMENT_WARPS = 4

TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


# ----------------------------------------------------------------------------------------------------
# Device helpers
# ----------------------------------------------------------------------------------------------------
@triton.jit
def _chunk(numels, chunk_tensor, chunk_start, BLOCK: tl.constexpr):
    """(tensor index, int64 element offsets, mask) of the chunk this program owns."""
    pid = tl.program_id(0)
    t = tl.load(chunk_tensor + pid)
    start = tl.load(chunk_start + pid)
    n = tl.load(numels + t)
    offs = start + tl.arange(0, BLOCK).to(tl.int64)
    return t, offs, offs < n


@triton.jit
def _table_ptr(table, t, DTYPE: tl.constexpr):
    """Entry t of a data_ptr() table as a typed pointer."""
    return tl.load(table + t).to(tl.pointer_type(DTYPE))


@triton.jit
def _round_store(ptr, x, mask, DTYPE: tl.constexpr):
    """Store fp32 x as DTYPE, rounding to nearest-even (bf16 by hand: the interpreter truncates)."""
    if DTYPE == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        y = (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
        tl.store(ptr, tl.where(x == x, y, x.to(tl.bfloat16)), mask=mask)  # keep NaN a NaN
    else:
        tl.store(ptr, x.to(DTYPE), mask=mask)


@triton.jit
def _load_param_grad(param_ptrs, grad_ptrs, t, offs, mask, weight_decay,
                     P_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr):
    """w and the coupled-L2 gradient g = grad + weight_decay·w (SPEC §2.1), both fp32."""
    p = _table_ptr(param_ptrs, t, P_DTYPE)
    gp = _table_ptr(grad_ptrs, t, G_DTYPE)
    w = tl.load(p + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(gp + offs, mask=mask, other=0.0).to(tl.float32) + weight_decay * w
    return p, w, g


# ----------------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------------
@triton.jit
def _srsgd_kernel(param_ptrs, grad_ptrs, buf_ptrs, numels, chunk_tensor, chunk_start,
                  lr, momentum, weight_decay,
                  P_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, BLOCK: tl.constexpr):
    # SPEC §2.1: v = w − lr·g;  w ← v + μ_k (v − v_prev);  v_prev ← v
    t, offs, mask = _chunk(numels, chunk_tensor, chunk_start, BLOCK)
    p, w, g = _load_param_grad(param_ptrs, grad_ptrs, t, offs, mask, weight_decay, P_DTYPE, G_DTYPE)
    bp = _table_ptr(buf_ptrs, t, tl.float32)
    v_prev = tl.load(bp + offs, mask=mask, other=0.0)
    v = w - lr * g
    _round_store(p + offs, v + momentum * (v - v_prev), mask, P_DTYPE)
    tl.store(bp + offs, v, mask=mask)


@triton.jit
def _nag_kernel(param_ptrs, grad_ptrs, vel_ptrs, numels, chunk_tensor, chunk_start,
                lr, momentum, c_new, c_old, weight_decay,
                P_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, BLOCK: tl.constexpr):
    # SPEC §2.2: v' = μ_t v − lr·g;  w ← w + c_new·v' − c_old·v
    # CM: (c_new, c_old) = (1, 0).  NAG on look-ahead parameters φ = θ + μ_t v: (1 + μ_{t+1}, μ_t).
    t, offs, mask = _chunk(numels, chunk_tensor, chunk_start, BLOCK)
    p, w, g = _load_param_grad(param_ptrs, grad_ptrs, t, offs, mask, weight_decay, P_DTYPE, G_DTYPE)
    vp = _table_ptr(vel_ptrs, t, tl.float32)
    v = tl.load(vp + offs, mask=mask, other=0.0)
    v_new = momentum * v - lr * g
    _round_store(p + offs, w + c_new * v_new - c_old * v, mask, P_DTYPE)
    tl.store(vp + offs, v_new, mask=mask)


@triton.jit
def _fw_norm_kernel(param_ptrs, grad_ptrs, numels, chunk_tensor, chunk_start, partial_max, partial_ssq,
                    weight_decay, P_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, BLOCK: tl.constexpr):
    # One (m, s) = (max|g|, Σ (g/m)²) per chunk (SPEC §2.3 LMO, p = 2; g includes the coupled L2 term).
    # Dividing by m before squaring keeps s in [1, BLOCK] whatever the gradient's scale (no under/overflow).
    t, offs, mask = _chunk(numels, chunk_tensor, chunk_start, BLOCK)
    p, w, g = _load_param_grad(param_ptrs, grad_ptrs, t, offs, mask, weight_decay, P_DTYPE, G_DTYPE)
    m = tl.max(tl.abs(g), axis=0)
    q = g / tl.where(m > 0, m, 1.0)  # an all-zero chunk gives (0, 0), not 0/0
    tl.store(partial_max + tl.program_id(0), m)
    tl.store(partial_ssq + tl.program_id(0), tl.sum(q * q, axis=0))


@triton.jit
def _segment_norm_kernel(partial_max, partial_ssq, segment_begin, max_out, ssq_out, BLOCK: tl.constexpr):
    # Tensor t's chunks c in [segment_begin[t], segment_begin[t+1]): M = max m_c, S = Σ s_c (m_c/M)²,
    # always reduced in the same order (deterministic).
    t = tl.program_id(0)
    lo = tl.load(segment_begin + t)
    hi = tl.load(segment_begin + t + 1)
    mx = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(lo, hi, BLOCK):
        offs = i + tl.arange(0, BLOCK).to(tl.int64)
        mx = tl.maximum(mx, tl.load(partial_max + offs, mask=offs < hi, other=0.0))
    big = tl.max(mx, axis=0)
    safe = tl.where(big > 0, big, 1.0)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(lo, hi, BLOCK):
        offs = i + tl.arange(0, BLOCK).to(tl.int64)
        r = tl.load(partial_max + offs, mask=offs < hi, other=0.0) / safe
        acc += tl.load(partial_ssq + offs, mask=offs < hi, other=0.0) * r * r
    tl.store(max_out + t, big)
    tl.store(ssq_out + t, tl.sum(acc, axis=0))


@triton.jit(do_not_specialize=["first", "last"])
def _fw_kernel(param_ptrs, grad_ptrs, anchor_ptrs, delta_ptrs, exp_avg_ptrs, exp_avg_sq_ptrs, scales,
               numels, chunk_tensor, chunk_start,
               inv_k, radius, lr, neg_inv_radius, beta1, beta2, eps, step_size, inv_sqrt_bc2, weight_decay,
               first, last,
               P_INF: tl.constexpr, OUTER_ADAM: tl.constexpr,
               P_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, BLOCK: tl.constexpr):
    # SPEC §2.3, one inner iteration k (first: k = 1, last: k = K):
    #   s = LMO(g);  Δ ← (1 − 1/k) Δ + (1/k) s;  w ← anchor + Δ, or the outer update at k = K.
    t, offs, mask = _chunk(numels, chunk_tensor, chunk_start, BLOCK)
    p, w, g = _load_param_grad(param_ptrs, grad_ptrs, t, offs, mask, weight_decay, P_DTYPE, G_DTYPE)
    if P_INF:
        s = -radius * tl.where(g > 0, 1.0, tl.where(g < 0, -1.0, 0.0))
    else:
        s = -tl.load(scales + t) * g          # scale = δ/‖g‖, or 0 where ‖g‖ = 0 (never NaN)
    # The flags as per-element masks: the interpreter rejects a block mask combined with a scalar.
    is_first = (tl.zeros_like(offs) + first) != 0
    is_last = (tl.zeros_like(offs) + last) != 0
    ap = _table_ptr(anchor_ptrs, t, tl.float32)
    dp = _table_ptr(delta_ptrs, t, tl.float32)
    # At k = 1 the stored anchor and Δ are stale: masked off, so a stale NaN cannot leak through 0·NaN.
    anchor = tl.where(is_first, w, tl.load(ap + offs, mask=mask & ~is_first, other=0.0))
    delta = (1.0 - inv_k) * tl.load(dp + offs, mask=mask & ~is_first, other=0.0) + inv_k * s
    w_inner = anchor + delta
    if OUTER_ADAM:
        # w ← anchor, then one Adam step (torch.optim.Adam's formula) on the gradient −Δ/δ.
        mp = _table_ptr(exp_avg_ptrs, t, tl.float32)
        vp = _table_ptr(exp_avg_sq_ptrs, t, tl.float32)
        gh = neg_inv_radius * delta
        m = beta1 * tl.load(mp + offs, mask=mask & is_last, other=0.0) + (1.0 - beta1) * gh
        v = beta2 * tl.load(vp + offs, mask=mask & is_last, other=0.0) + (1.0 - beta2) * gh * gh
        w_outer = anchor - step_size * m / (tl.sqrt(v) * inv_sqrt_bc2 + eps)
        tl.store(mp + offs, m, mask=mask & is_last)
        tl.store(vp + offs, v, mask=mask & is_last)
    else:
        w_outer = anchor + lr * delta
    _round_store(p + offs, tl.where(is_last, w_outer, w_inner), mask, P_DTYPE)
    tl.store(ap + offs, anchor, mask=mask & is_first)
    tl.store(dp + offs, delta, mask=mask)


# ----------------------------------------------------------------------------------------------------
# Host side: cached tables and launchers
# ----------------------------------------------------------------------------------------------------
def _device_int64(values, device: torch.device) -> torch.Tensor:
    host = torch.tensor(values, dtype=torch.int64)
    if device.type == "cuda":
        # Pinned + non_blocking: the copy is queued on the stream, the host never waits for the GPU.
        return host.pin_memory().to(device, non_blocking=True)
    return host


class MultiTensorPlan:
    """Chunk map and pointer tables for one bucket of tensors (same device, same dtypes).

    `chunks(numels)` and `pointers(role, tensors)` return cached device tensors and rebuild them only
    when the numels or the data_ptr()s they were built from change."""

    def __init__(self, device: torch.device, block: int = BLOCK):
        self.device = torch.device(device)
        self.block = block
        self._chunk_key = None
        self._chunk_tables = None
        self._pointer_tables = {}

    def chunks(self, tensors):
        """(numels [n], chunk_tensor [c], chunk_start [c], segment_begin [n+1], c), all int64."""
        key = tuple(x.numel() for x in tensors)
        if key != self._chunk_key:
            tensor_index, start, begin = [], [], [0]
            for i, n in enumerate(key):
                for s in range(0, n, self.block):
                    tensor_index.append(i)
                    start.append(s)
                begin.append(len(start))
            c = len(start)
            table = _device_int64(list(key) + tensor_index + start + begin, self.device)
            n = len(key)
            self._chunk_tables = (table[:n], table[n:n + c], table[n + c:n + 2 * c], table[n + 2 * c:], c)
            self._chunk_key = key
        return self._chunk_tables

    def pointers(self, role: str, tensors) -> torch.Tensor:
        key = tuple(x.data_ptr() for x in tensors)
        cached = self._pointer_tables.get(role)
        if cached is None or cached[0] != key:
            cached = (key, _device_int64(list(key), self.device))
            self._pointer_tables[role] = cached
        return cached[1]


def _dtype_args(params, grads):
    return dict(P_DTYPE=TL_DTYPES[params[0].dtype], G_DTYPE=TL_DTYPES[grads[0].dtype], BLOCK=BLOCK)


def srsgd_step(plan: MultiTensorPlan, params, grads, bufs, *, lr: float, momentum: float, weight_decay: float):
    """SPEC §2.1 on lists of contiguous tensors (params/grads one dtype each, bufs fp32), in place."""
    numels, ct, cs, _, c = plan.chunks(params)
    if c == 0:
        return
    with device_guard(plan.device):
        _srsgd_kernel[(c,)](plan.pointers("param", params), plan.pointers("grad", grads),
                            plan.pointers("buf", bufs), numels, ct, cs,
                            float(lr), float(momentum), float(weight_decay),
                            **_dtype_args(params, grads), num_warps=NUM_WARPS)


def nag_step(plan: MultiTensorPlan, params, grads, velocities, *, lr: float, momentum: float,
             c_new: float, c_old: float, weight_decay: float):
    """SPEC §2.2 (see `_nag_kernel` for c_new, c_old) on lists of contiguous tensors, in place."""
    numels, ct, cs, _, c = plan.chunks(params)
    if c == 0:
        return
    with device_guard(plan.device):
        _nag_kernel[(c,)](plan.pointers("param", params), plan.pointers("grad", grads),
                          plan.pointers("velocity", velocities), numels, ct, cs,
                          float(lr), float(momentum), float(c_new), float(c_old), float(weight_decay),
                          **_dtype_args(params, grads), num_warps=NUM_WARPS)


def grad_norm(plan: MultiTensorPlan, params, grads, *, weight_decay: float):
    """Per-tensor (m, s) with m = max|grad + weight_decay·w| and s = Σ ((grad + weight_decay·w)/m)², so that
    ‖·‖₂ = m·√s (scale-safe; (0, 0) for a zero or empty tensor): two fp32 device tensors [n], deterministic."""
    numels, ct, cs, begin, c = plan.chunks(params)
    maxabs = torch.empty(len(params), dtype=torch.float32, device=plan.device)
    ssq = torch.empty(len(params), dtype=torch.float32, device=plan.device)
    partial_max = torch.empty(max(c, 1), dtype=torch.float32, device=plan.device)
    partial_ssq = torch.empty(max(c, 1), dtype=torch.float32, device=plan.device)
    with device_guard(plan.device):
        if c > 0:
            _fw_norm_kernel[(c,)](plan.pointers("param", params), plan.pointers("grad", grads), numels, ct, cs,
                                  partial_max, partial_ssq, float(weight_decay), **_dtype_args(params, grads),
                                  num_warps=NUM_WARPS)
        _segment_norm_kernel[(len(params),)](partial_max, partial_ssq, begin, maxabs, ssq, BLOCK=SEGMENT_BLOCK,
                                             num_warps=SEGMENT_WARPS)
    return maxabs, ssq


def fw_step(plan: MultiTensorPlan, params, grads, anchors, deltas, exp_avgs, exp_avg_sqs, scales, *,
            inv_k: float, first: float, last: float, radius: float, lr: float, beta1: float, beta2: float,
            eps: float, step_size: float, inv_sqrt_bc2: float, weight_decay: float, p_inf: bool, outer_adam: bool):
    """One inner iteration k of SPEC §2.3 (the outer update when `last`), in place.

    `scales` is an fp32 device tensor [n] of δ/‖g‖ per tensor (ignored when p_inf); `first`/`last` (0 or 1)
    say k = 1 / k = K; `step_size` = lr/(1 − β1^t) and `inv_sqrt_bc2` = 1/√(1 − β2^t) are Adam's bias
    corrections for the outer step t this window ends with (tritonrnn.optim derives them)."""
    numels, ct, cs, _, c = plan.chunks(params)
    if c == 0:
        return
    anchor_table = plan.pointers("anchor", anchors)
    if outer_adam:
        m_table, v_table = plan.pointers("exp_avg", exp_avgs), plan.pointers("exp_avg_sq", exp_avg_sqs)
    else:
        m_table = v_table = anchor_table  # never dereferenced: OUTER_ADAM is False
    with device_guard(plan.device):
        _fw_kernel[(c,)](plan.pointers("param", params), plan.pointers("grad", grads), anchor_table,
                         plan.pointers("delta", deltas), m_table, v_table, scales, numels, ct, cs,
                         float(inv_k), float(radius), float(lr), -1.0 / float(radius), float(beta1), float(beta2),
                         float(eps), float(step_size), float(inv_sqrt_bc2), float(weight_decay),
                         int(first), int(last),
                         P_INF=bool(p_inf), OUTER_ADAM=bool(outer_adam), **_dtype_args(params, grads),
                         num_warps=NUM_WARPS)


# ----------------------------------------------------------------------------------------------------
# Custom ops for torch.compile: a step traced by dynamo cannot read data_ptr()s (fake tensors have none),
# so the compiled graph calls these opaque ops, which build (and cache) the plan from the real tensors.
# Eager steps keep the optimizer-owned plans above. Tensor lists declared mutated: functionalization
# then knows the parameters and states change in place.
# ----------------------------------------------------------------------------------------------------
_OP_PLANS: dict = {}
_OP_PLANS_MAX = 64  # distinct buckets before the cache is dropped (a plan is a few small tables)


def _op_plan(params) -> MultiTensorPlan:
    key = (params[0].device, tuple(p.data_ptr() for p in params))
    plan = _OP_PLANS.get(key)
    if plan is None:
        if len(_OP_PLANS) >= _OP_PLANS_MAX:
            _OP_PLANS.clear()
        plan = _OP_PLANS[key] = MultiTensorPlan(params[0].device)
    return plan


# The runtime scalars of each launcher, in the order of the `scalars` tensor its op takes.
SCALARS = {
    "srsgd_step": ("lr", "momentum", "weight_decay"),
    "nag_step": ("lr", "momentum", "c_new", "c_old", "weight_decay"),
    "fw_step": ("inv_k", "first", "last", "radius", "lr", "beta1", "beta2", "eps", "step_size", "inv_sqrt_bc2",
                "weight_decay"),
}


def _host_scalars(name, scalars):
    """The scalars tensor as keyword arguments. It is a CPU tensor (tritonrnn.optim builds it from CPU
    counters), so this read never synchronises a device."""
    return dict(zip(SCALARS[name], scalars.tolist()))


@torch.library.custom_op("tritonrnn::srsgd_step", mutates_args=("params", "bufs"), schema=(
    "(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] bufs, Tensor scalars) -> ()"))
def srsgd_step_op(params, grads, bufs, scalars):
    if params:
        srsgd_step(_op_plan(params), params, grads, bufs, **_host_scalars("srsgd_step", scalars))


@srsgd_step_op.register_fake
def _(params, grads, bufs, scalars):
    return None


@torch.library.custom_op("tritonrnn::nag_step", mutates_args=("params", "velocities"), schema=(
    "(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] velocities, Tensor scalars) -> ()"))
def nag_step_op(params, grads, velocities, scalars):
    if params:
        nag_step(_op_plan(params), params, grads, velocities, **_host_scalars("nag_step", scalars))


@nag_step_op.register_fake
def _(params, grads, velocities, scalars):
    return None


@torch.library.custom_op("tritonrnn::grad_norm", mutates_args=(), schema=(
    "(Tensor[] params, Tensor[] grads, float weight_decay) -> (Tensor, Tensor)"))
def grad_norm_op(params, grads, weight_decay):
    return grad_norm(_op_plan(params), params, grads, weight_decay=weight_decay)


@grad_norm_op.register_fake
def _(params, grads, weight_decay):
    return (params[0].new_empty((len(params),), dtype=torch.float32),
            params[0].new_empty((len(params),), dtype=torch.float32))


@torch.library.custom_op("tritonrnn::fw_step", mutates_args=("params", "anchors", "deltas", "exp_avgs", "exp_avg_sqs"),
                         schema=(
    "(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] anchors, Tensor(c!)[] deltas, Tensor(d!)[] exp_avgs, "
    "Tensor(e!)[] exp_avg_sqs, Tensor? scales, Tensor scalars, bool p_inf, bool outer_adam) -> ()"))
def fw_step_op(params, grads, anchors, deltas, exp_avgs, exp_avg_sqs, scales, scalars, p_inf, outer_adam):
    """fw_step; exp_avgs / exp_avg_sqs empty lists for outer="sgd", scales None for p = inf."""
    if not params:
        return
    fw_step(_op_plan(params), params, grads, anchors, deltas, exp_avgs or None, exp_avg_sqs or None,
            scales if scales is not None else anchors[0],  # a placeholder pointer: P_INF never reads it
            p_inf=p_inf, outer_adam=outer_adam, **_host_scalars("fw_step", scalars))


@fw_step_op.register_fake
def _(params, grads, anchors, deltas, exp_avgs, exp_avg_sqs, scales, scalars, p_inf, outer_adam):
    return None


# ----------------------------------------------------------------------------------------------------
# Ahead-of-time compile proof (kernels/_aot.py)
# ----------------------------------------------------------------------------------------------------
_TABLE = "*i64"
_CHUNK_SIG = {"numels": _TABLE, "chunk_tensor": _TABLE, "chunk_start": _TABLE}
_AOT_DTYPES = (("fp32", tl.float32), ("bf16", tl.bfloat16), ("fp16", tl.float16))


def _aot_configs():
    configs = []
    for name, dt in _AOT_DTYPES:
        dtypes = {"P_DTYPE": dt, "G_DTYPE": dt, "BLOCK": BLOCK}
        configs.append(AotConfig(
            f"multi_tensor._srsgd_kernel[{name}]", _srsgd_kernel,
            {"param_ptrs": _TABLE, "grad_ptrs": _TABLE, "buf_ptrs": _TABLE, **_CHUNK_SIG,
             "lr": "fp32", "momentum": "fp32", "weight_decay": "fp32",
             "P_DTYPE": "constexpr", "G_DTYPE": "constexpr", "BLOCK": "constexpr"},
            dtypes, num_warps=NUM_WARPS))
        configs.append(AotConfig(
            f"multi_tensor._nag_kernel[{name}]", _nag_kernel,
            {"param_ptrs": _TABLE, "grad_ptrs": _TABLE, "vel_ptrs": _TABLE, **_CHUNK_SIG,
             "lr": "fp32", "momentum": "fp32", "c_new": "fp32", "c_old": "fp32", "weight_decay": "fp32",
             "P_DTYPE": "constexpr", "G_DTYPE": "constexpr", "BLOCK": "constexpr"},
            dtypes, num_warps=NUM_WARPS))
        configs.append(AotConfig(
            f"multi_tensor._fw_norm_kernel[{name}]", _fw_norm_kernel,
            {"param_ptrs": _TABLE, "grad_ptrs": _TABLE, **_CHUNK_SIG, "partial_max": "*fp32", "partial_ssq": "*fp32",
             "weight_decay": "fp32", "P_DTYPE": "constexpr", "G_DTYPE": "constexpr", "BLOCK": "constexpr"},
            dtypes, num_warps=NUM_WARPS))
        for p_inf, outer_adam in ((False, True), (True, False)):
            configs.append(AotConfig(
                f"multi_tensor._fw_kernel[{name},{'inf' if p_inf else 'l2'},{'adam' if outer_adam else 'sgd'}]",
                _fw_kernel,
                {"param_ptrs": _TABLE, "grad_ptrs": _TABLE, "anchor_ptrs": _TABLE, "delta_ptrs": _TABLE,
                 "exp_avg_ptrs": _TABLE, "exp_avg_sq_ptrs": _TABLE, "scales": "*fp32", **_CHUNK_SIG,
                 **{s: "fp32" for s in ("inv_k", "radius", "lr", "neg_inv_radius", "beta1", "beta2", "eps",
                                        "step_size", "inv_sqrt_bc2", "weight_decay")},
                 "first": "i32", "last": "i32", "P_INF": "constexpr", "OUTER_ADAM": "constexpr",
                 "P_DTYPE": "constexpr", "G_DTYPE": "constexpr", "BLOCK": "constexpr"},
                {"P_INF": p_inf, "OUTER_ADAM": outer_adam, **dtypes}, num_warps=NUM_WARPS))
    configs.append(AotConfig(
        "multi_tensor._segment_norm_kernel", _segment_norm_kernel,
        {"partial_max": "*fp32", "partial_ssq": "*fp32", "segment_begin": _TABLE, "max_out": "*fp32",
         "ssq_out": "*fp32", "BLOCK": "constexpr"},
        {"BLOCK": SEGMENT_BLOCK}, num_warps=SEGMENT_WARPS))
    return configs


AOT_CONFIGS = _aot_configs()
