"""The launch forms of the step body (kernels/recurrence/step.py; KERNELS.md §2.3) and their buffers.

A Plan (kernels/recurrence/dispatch.py) names the tier and tile sizes; `forward` / `backward` allocate the
buffers, run the plan, and return what the custom ops of kernels/recurrence/__init__.py return:
- Tier A / C: one launch walks all T steps. Tier C launches cooperatively (the driver rejects a grid that
  cannot be co-resident instead of letting the barrier hang) and only with a grid ≤ the device's SM count
  (checked here, whatever the plan says); the launcher raises if a barrier was missed (error flag).
- Tier B: one launch per step. On CUDA the T launches are captured once in a CUDA graph and replayed
  (StepGraphs); elsewhere, under stream capture or with TRITONRNN_RECURRENCE_GRAPHS=0, a plain loop.
"""
from __future__ import annotations

import collections
import os

import torch
import triton

from .._ops import device_guard
from . import dispatch
from .step import CARRIED, GATES, MOMENTUM_LSTM, _barrier_probe_kernel, _recurrence_bwd_kernel, _recurrence_fwd_kernel

# Polls before a barrier counts as missed (~1 μs each on an H100/H200: seconds, far above any step; the
# Baidu persistent RNN uses ~32 μs, but a preempted co-resident program must not be reported as a bug).
MAX_SPIN = 1 << 21
_INT32_MAX = 2**31 - 1


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def precision(dtype: torch.dtype, device: torch.device) -> str:
    """The fp32 dot mode, following the flag nn.LSTM obeys (issue 12 item 4): TF32 when
    torch.backends.cudnn.allow_tf32 (PyTorch's default True), an fp32-exact tf32x3 otherwise. The CPU
    interpreter computes in fp32 ("ieee"); half weights use half tensor cores whatever the mode."""
    if device.type != "cuda" or interpreting() or dtype != torch.float32:
        return "ieee"
    return "tf32" if torch.backends.cudnn.allow_tf32 else "tf32x3"


def _check_plan(plan: dispatch.Plan, H: int, B: int, device: torch.device) -> tuple[int, int]:
    """(P, nb) of a plan, refusing what must never launch."""
    P, nb = triton.cdiv(H, plan.HS), triton.cdiv(B, plan.BB)
    if plan.tier == "A" and P != 1:
        raise ValueError(f"Tier A needs HS >= H (one program owns every unit), got HS={plan.HS}, H={H}")
    if plan.tier == "C" and P > 1:
        if device.type != "cuda" or interpreting():
            # the interpreter runs programs one after another: a peer's arrival never comes
            raise RuntimeError(f"Tier C with P={P} > 1 needs co-resident programs on a CUDA device; the "
                               "interpreter runs programs one at a time (use Tier B, or Tier C at P = 1)")
        sms = dispatch.device_facts(device).sm_count
        if P * nb > sms:
            raise RuntimeError(f"Tier C grid {P}x{nb} = {P * nb} programs exceeds the {sms} SMs of "
                               f"{torch.cuda.get_device_name(device)}: not co-resident, never launched")
    return P, nb


def _meta(plan: dispatch.Plan, H: int, w: torch.Tensor, a: torch.Tensor) -> dict:
    if w.numel() > _INT32_MAX:
        raise ValueError(f"weight_hh has {w.numel()} elements; the recurrence kernels index W_hh with int32 "
                         "offsets (numel < 2^31)")
    return dict(BB=plan.BB, HS=plan.HS, HK=max(16, triton.next_power_of_2(H)), KC=plan.KC,
                RESIDENT=plan.tier in ("A", "C"), LOCAL=plan.tier == "A", COOP=plan.tier == "C",
                PRECISION=precision(w.dtype, a.device), WIDEN=interpreting(),
                num_warps=plan.num_warps, num_stages=plan.num_stages)


def _launch_kwargs(plan: dispatch.Plan, device: torch.device) -> dict:
    # cooperative launch (triton >= 3.3 launch option) on CUDA only: the interpreter knows no such option
    if plan.tier == "C" and device.type == "cuda" and not interpreting():
        return {"launch_cooperative_grid": True}
    return {}


def _check_barrier(err: torch.Tensor, what: str) -> None:
    if err.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return  # no host sync inside a capture; the flag stays set for whoever inspects it
    if int(err.item()) != 0:
        raise RuntimeError(f"recurrence {what}: a program missed the Tier C barrier within {MAX_SPIN} polls "
                           "(its peers were not co-resident or a peer faulted); results are invalid. "
                           "Set TRITONRNN_RECURRENCE_TIER=B to run without cross-program waits.")


class StepGraphs:
    """Tier B's T launches captured once and replayed. A graph bakes in every pointer and scalar, so it is
    keyed by them: in a training loop the caching allocator hands back the same addresses each iteration,
    and the graph replays; on a new key the first call runs the plain loop (which also JIT-compiles the
    kernel, so no compile happens under capture) and the second captures. A small LRU bounds the graphs."""

    def __init__(self, size: int = 8):
        self.size = size
        self.graphs: collections.OrderedDict = collections.OrderedDict()
        self.seen: collections.OrderedDict = collections.OrderedDict()

    @staticmethod
    def usable(device: torch.device) -> bool:
        return (device.type == "cuda" and not interpreting()
                and os.environ.get("TRITONRNN_RECURRENCE_GRAPHS", "1") != "0"
                and not torch.cuda.is_current_stream_capturing())

    def run(self, key, device: torch.device, steps) -> None:
        """`steps()` issues the T launches. Runs them through a graph when possible."""
        if not self.usable(device):
            steps()
            return
        graph = self.graphs.get(key)
        if graph is None:
            if key not in self.seen:
                self.seen[key] = True
                while len(self.seen) > 4 * self.size:
                    self.seen.popitem(last=False)
                steps()
                return
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                steps()
            self.graphs[key] = graph
            while len(self.graphs) > self.size:
                self.graphs.popitem(last=False)
        self.graphs.move_to_end(key)
        graph.replay()


GRAPHS = StepGraphs()


def _key(*tensors_and_values):
    out = []
    for x in tensors_and_values:
        if isinstance(x, torch.Tensor):
            out.append((x.data_ptr(), tuple(x.shape), tuple(x.stride()), x.dtype))
        else:
            out.append(x)
    return tuple(out)


def _state(x, B, width, ref):
    """A [B, width] state or cotangent as a fresh contiguous fp32 tensor (the kernels index states as
    contiguous [B, width]; callers pass any strides)."""
    if x is None:
        return torch.zeros(B, width, device=ref.device, dtype=torch.float32)
    return x.to(torch.float32, memory_format=torch.contiguous_format, copy=True)


def _output(a: torch.Tensor, width: int, time_major: bool) -> torch.Tensor:
    """An empty [B, T, width] tensor in a's dtype, time-major in memory when the caller says a is."""
    B, T, _ = a.shape
    if time_major:
        return torch.empty(T, B, width, device=a.device, dtype=a.dtype).transpose(0, 1)
    return torch.empty(B, T, width, device=a.device, dtype=a.dtype)


def _run(plan, T, device, key, launch, err, what):
    """Run the T steps of a plan: Tier B one launch per step (through the graph cache), Tiers A / C one launch,
    Tier C's barrier flag checked after it. `launch(begin, end)` runs steps [begin, end)."""
    with device_guard(device):
        if plan.tier == "B":
            GRAPHS.run(_key(*key, T, plan), device, lambda: [launch(i, i + 1) for i in range(T)])
        else:
            launch(0, T)
            if plan.tier == "C":
                _check_barrier(err, what)


def forward(a, weight_hh, bias_hh, h0, c0, ns0, *, cell, save, time_major, s, mu, restart, step_offset,
            plan=None):
    """Returns (out [B,T,H] in a's dtype, hs, cs, ns, gates): hs/cs fp32 slot buffers ([T+1, B, H] when
    `save`, else [2, B, H]; the final state is slot T % NSLOT), ns the final carried state ([B, 4H] fp32,
    NesterovLSTM / fused momentum cell, else None), gates ([T, B, 4H] fp32, LSTM family with `save`)."""
    B, T, GH = a.shape
    H = weight_hh.shape[1]
    lstm = GATES[cell] == 4
    if plan is None:
        plan = dispatch.plan_for(H, B, weight_hh.dtype, a.device, "fwd", gates=GATES[cell])
    P, nb = _check_plan(plan, H, B, a.device)
    w = weight_hh.contiguous()
    meta = _meta(plan, H, w, a)
    b = bias_hh.contiguous() if bias_hh is not None else w
    nslot = T + 1 if save else 2
    hs = torch.empty(nslot, B, H, device=a.device, dtype=torch.float32)
    hs[0] = _state(h0, B, H, a)
    cs = hs  # a placeholder pointer where the cell has no such buffer (never dereferenced)
    if lstm:
        cs = torch.empty(nslot, B, H, device=a.device, dtype=torch.float32)
        cs[0] = _state(c0, B, H, a)
    gates = torch.empty(T, B, GH, device=a.device, dtype=torch.float32) if (save and lstm) else None
    ns = _state(ns0, B, GH, a) if cell in CARRIED else None
    out = _output(a, H, time_major)
    if plan.tier == "A":
        xs = hs  # h stays in registers: no exchange
    else:
        xs = torch.empty(2, B, H, device=a.device, dtype=w.dtype)
        xs[0] = hs[0]
    cnt = torch.zeros(nb, device=a.device, dtype=torch.int32)
    err = torch.zeros(1, device=a.device, dtype=torch.int32)
    args = (a, w, b, hs, cs, ns if ns is not None else hs, gates if gates is not None else hs, out, xs, cnt, err)
    strides = (a.stride(0), a.stride(1), a.stride(2), out.stride(0), out.stride(1), out.stride(2))
    consts = dict(CELL=cell, HAS_BIAS=bias_hh is not None, SAVE=gates is not None, **meta)
    scalars = (float(s), float(mu), int(restart), int(step_offset), MAX_SPIN)

    def launch(t_begin, t_end):
        _recurrence_fwd_kernel[(P, nb)](*args, B, H, t_begin, t_end, nslot, *strides, *scalars, **consts,
                                        **_launch_kwargs(plan, a.device))

    _run(plan, T, a.device, ("fwd", *args, *strides, *scalars, tuple(consts.items())), launch, err, "forward")
    return out, hs, cs if lstm else None, ns, gates


def backward(dout, dhT, dcT, dnT, weight_hh, hs, cs, gates, *, cell, mu, restart, step_offset, plan=None):
    """Returns (dz, dc0, dn, dv): dz [T, B, G·H] fp32 the adjoint of W_hh h_{t-1} + b_hh at every step (for
    NesterovLSTM that of a_t); dc0 [B, H] fp32 (LSTM family, else None); dn [B, G·H] fp32 the carried adjoint
    after step 0 (NesterovLSTM: the pointwise dz_0; momentum: dv_0), else None; dv [T, B, 4H] fp32 the
    adjoint of v_t (fused momentum cell only), else None. dnT: the cotangent of the final carried state."""
    T = hs.shape[0] - 1
    B, H = hs.shape[1], hs.shape[2]
    G = GATES[cell]
    GH = G * H
    if plan is None:
        plan = dispatch.plan_for(H, B, weight_hh.dtype, hs.device, "bwd", gates=G)
    P, nb = _check_plan(plan, H, B, hs.device)
    w = weight_hh.contiguous()
    meta = _meta(plan, H, w, hs)
    dz = torch.empty(T, B, GH, device=hs.device, dtype=torch.float32)
    dhT = _state(dhT, B, H, hs)
    dc = _state(dcT, B, H, hs) if G == 4 else None
    dn = _state(dnT, B, GH, hs) if cell in CARRIED else None
    dv = torch.empty(T, B, GH, device=hs.device, dtype=torch.float32) if cell == MOMENTUM_LSTM else None
    cnt = torch.zeros(nb, device=hs.device, dtype=torch.int32)
    err = torch.zeros(1, device=hs.device, dtype=torch.int32)
    has_dout = dout is not None
    sd = (dout.stride(0), dout.stride(1), dout.stride(2)) if has_dout else (0, 0, 0)

    def ptr(x):  # a placeholder pointer for a buffer this cell never dereferences
        return x if x is not None else dz

    args = (ptr(dout), dhT, ptr(dc), ptr(dn), ptr(dv), w, hs, cs, ptr(gates), dz, cnt, err)
    scalars = (float(mu), int(restart), int(step_offset), MAX_SPIN)
    consts = dict(CELL=cell, HAS_DOUT=has_dout, **meta)

    def launch(r_begin, r_end):
        _recurrence_bwd_kernel[(P, nb)](*args, B, H, T, r_begin, r_end, *sd, *scalars, **consts,
                                        **_launch_kwargs(plan, hs.device))

    _run(plan, T, hs.device, ("bwd", *args, *sd, *scalars, tuple(consts.items())), launch, err, "backward")
    return dz, dc, dn, dv


def barrier_probe(P: int, steps: int, device: torch.device, num_warps: int = 4) -> float:
    """Seconds per barrier of a group of P programs (one launch of `steps` barriers, CUDA-event timed, the
    launch's own cost amortised over `steps`); raises if a barrier was missed. On CPU (interpreter) only
    P = 1 can run (programs run one at a time) and the figure is the interpreter's, not a GPU's."""
    if P > 1 and (device.type != "cuda" or interpreting()):
        raise RuntimeError("a barrier probe with P > 1 needs co-resident programs on a CUDA device")
    if device.type == "cuda" and P > dispatch.device_facts(device).sm_count:
        raise RuntimeError(f"P={P} exceeds the SM count: not co-resident, never launched")
    cnt = torch.zeros(1, device=device, dtype=torch.int32)
    err = torch.zeros(1, device=device, dtype=torch.int32)
    kwargs = {"launch_cooperative_grid": True} if (device.type == "cuda" and not interpreting()) else {}
    with device_guard(device):
        if device.type == "cuda":
            _barrier_probe_kernel[(P,)](cnt, err, 1, MAX_SPIN, num_warps=num_warps, **kwargs)  # compile
            cnt.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            _barrier_probe_kernel[(P,)](cnt, err, steps, MAX_SPIN, num_warps=num_warps, **kwargs)
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            import time
            t0 = time.perf_counter()
            _barrier_probe_kernel[(P,)](cnt, err, steps, MAX_SPIN, num_warps=num_warps)
            seconds = time.perf_counter() - t0
    _check_barrier(err, f"barrier probe (P={P})")
    if int(cnt.item()) != P * steps:
        raise RuntimeError(f"barrier probe: counter {int(cnt.item())} != P·steps = {P * steps}")
    return seconds / steps
