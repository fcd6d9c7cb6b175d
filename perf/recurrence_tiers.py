"""The recurrence tiers on a GPU (issue 12 item 7): correctness, a barrier micro-benchmark, per-step timings
against cuDNN in the same process, and the dispatcher's measured table (kernels/recurrence/measured.py).

    python -m tritonrnn.perf.recurrence_tiers --out-dir DIR [--budget-s S] [--dry-run] [--write-table]
    python -m tritonrnn.perf.recurrence_tiers --write-table [CSV ...] [--table-out PATH]

A run (perf/gpu_session.sh's `tiers` section calls it) has five sections, in this order, each row isolated (an
exception becomes a row whose note holds the error text) and appended to DIR/tiers.csv and DIR/tiers.md as it
finishes, so an early stop loses at most the row in flight; rows the budget did not reach are listed in
DIR/tiers-not-run.txt.
  check   every tier against the float64 torch path (tritonrnn.functional.recurrence, backend="torch") on the
          same device, forward (h, h_T, c_T) and backward (the gradients of a, W_hh, b_hh, h0, c0 and the carried
          state), with the tolerance model of tritonrnn.testing: Tier C at P > 1 (the cross-program barrier, only a
          GPU can run it), Tier A, Tier B at P > 1. fp32 runs with TF32 off (the fp32-exact tf32x3 dots the model
          is written for); bf16 as is. A check row is "ok" when every element is within the bound.
  barrier launch.barrier_probe: seconds per barrier of P = 2, 8, 32 cooperating programs.
  time    per-step forward (no_grad) and forward + backward of each tier through tritonrnn.nn.LSTM (the tier
          forced with TRITONRNN_RECURRENCE_TIER / _P) against cuDNN torch.nn.LSTM in the same process, at the
          papers' shape (B 128, H 256, T 784, input 1) and at (B 16, H 128), (B 64, H 512), (B 256, H 1024), in
          fp32 with TF32 on for both sides (torch.backends.cudnn / cuda.matmul.allow_tf32, cuDNN's default) and
          in bf16; a tier that cannot run a shape (Tier A beyond its shared memory, Tier C without a co-resident
          grid) gets a row saying why.
  family  the momentum family (MomentumLSTM, SRLSTM, AdamLSTM, RMSPropLSTM, NesterovLSTM) on the tier with the
          fastest forward + backward at the papers' fp32 shape, as a ratio to tritonrnn's plain LSTM on that tier.
  table   DIR/measured.py, the dispatcher's table from this run's CSV (see write_table).
Timings: perf.timing.measure (CUDA events after a synchronise, p20/p50/p80 of the repetitions; the first call,
which compiles and captures, is timed apart).

--dry-run: tiny shapes on the CPU, the kernels under Triton's interpreter (which runs programs one after
another, so Tier C only at P = 1 and the barrier probe at P = 1; the family without the scan-only Adam / RMSProp
rows); every section runs, so CI keeps this command working (tests/test_recurrence_tiers_dry_run.py).

--write-table (no run): kernels/recurrence/measured.py from the given CSVs, or from the newest run of every GPU
device class under perf/results (*/tiers.csv).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import glob
import math
import os
import pprint
import sys

import torch

from .gpu_session import Section
from .results_io import RESULTS_DIR, environment
from .timing import _quantile, measure

FIELDS = ["run", "timestamp", "commit", "device", "device_class", "torch", "triton", "section", "model", "provider",
          "tier", "P", "plan_fwd", "plan_bwd", "precision", "pass", "dtype", "batch", "hidden_size", "seq_len",
          "iters", "p20_us_per_step", "p50_us_per_step", "p80_us_per_step", "first_call_ms", "ratio", "ratio_to",
          "worst", "max_abs_err", "ok", "note"]
PAPER = dict(batch=128, hidden_size=256, seq_len=784, input_size=1)
# (B, H, dtype) of the timed shapes (issue 12 item 7), in the order they run, all at the papers' T 784 and input 1:
# per-step figures then carry the same share of fixed per-call costs (graph launch, input projection).
TIME_ORDER = [(128, 256, "float32"), (128, 256, "bfloat16"), (16, 128, "bfloat16"), (16, 128, "float32"),
              (64, 512, "float32"), (64, 512, "bfloat16"), (256, 1024, "float32"), (256, 1024, "bfloat16")]
FAMILY_AFTER = 2  # the family's rows run after this many + 1 groups of TIME_ORDER (the targets first)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
FAMILY = ["LSTM", "MomentumLSTM", "SRLSTM", "AdamLSTM", "RMSPropLSTM", "NesterovLSTM"]
# The dry run's family: one per kernel cell (plain, fused momentum, Nesterov); Adam / RMSProp add only scans,
# which take seconds each under the interpreter, and run the plain cell.
DRY_FAMILY = ["LSTM", "MomentumLSTM", "NesterovLSTM"]
CUDNN = "torch.nn.LSTM"  # the peer: cuDNN on CUDA, torch's native kernel on the CPU (a dry run)
# Check cases: (cell, tier, P, dtype, B, H, T), Tier C first (what only a GPU can check: coop_verified), then the
# tiers the GPU test section also runs; plans the dispatcher can pick (kernels/recurrence/dispatch.py). B not a
# multiple of BB (several batch tiles: several barrier groups), T odd, H 120 not a multiple of the slice. fp32 runs
# fp32-exact (tf32x3, whose resident W takes 8 bytes an element: its Tier C slices fit at H <= 128); bf16 reaches
# P 16 over 3 batch tiles (48 programs).
GPU_CHECKS = [("lstm", "C", 4, "float32", 20, 120, 9), ("lstm", "C", 8, "bfloat16", 20, 256, 9),
              ("lstm", "C", 16, "bfloat16", 40, 256, 9), ("lstm", "C", 8, "float32", 20, 128, 9),
              ("momentum_lstm", "C", 8, "float32", 20, 128, 9), ("nesterov_lstm", "C", 4, "float32", 20, 128, 9),
              ("rnn_tanh", "C", 8, "float32", 20, 128, 9), ("lstm", "A", 1, "float32", 20, 64, 9),
              ("lstm", "A", 1, "bfloat16", 20, 64, 9), ("lstm", "B", 8, "float32", 20, 256, 9),
              ("lstm", "B", 16, "bfloat16", 20, 512, 9)]
DRY_CHECKS = [("lstm", "A", 1, "float32", 3, 32, 3), ("lstm", "B", 2, "float32", 3, 32, 3),
              ("lstm", "C", 1, "float32", 3, 32, 3), ("lstm", "C", 1, "bfloat16", 3, 32, 3),
              ("rnn_tanh", "B", 2, "float32", 3, 32, 3), ("momentum_lstm", "C", 1, "float32", 3, 32, 3)]
DRY_SHAPE = dict(batch=3, hidden_size=32, seq_len=3, input_size=2)
BARRIER_P = {False: (2, 8, 32), True: (1,)}
BARRIER_STEPS = {False: 20000, True: 4}
ROW_SECONDS = 0.4  # timed repetitions per row (at least 3): the budget goes to coverage, not to long runs


@contextlib.contextmanager
def forced(tier=None, programs=None):
    """TRITONRNN_RECURRENCE_TIER / _P set for the block (None: unset), restored after: the dispatcher reads them
    at every call (kernels/recurrence/dispatch.py)."""
    dispatch = _rec().dispatch
    saved = {k: os.environ.get(k) for k in (dispatch.ENV_TIER, dispatch.ENV_P)}
    try:
        for key, value in zip(saved, (tier, programs)):
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = str(value)
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def tf32(enabled: bool):
    """fp32 dots and GEMMs in TF32 (cuDNN's default) or not, for both sides, restored after."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _rec():
    from tritonrnn.kernels import recurrence

    return recurrence


def plan_text(plan) -> str:
    """A Plan as one CSV cell, read back by _plan_dict: "C HS32 BB16 KC64 w8 s1"."""
    return f"{plan.tier} HS{plan.HS} BB{plan.BB} KC{plan.KC} w{plan.num_warps} s{plan.num_stages}"


def plans(H, B, dtype, device, directions=("fwd", "bwd")):
    """{direction: Plan} the dispatcher gives this call under the current environment (what the launch runs)."""
    dispatch = _rec().dispatch
    return {d: dispatch.plan_for(H, B, dtype, device, d) for d in directions}


def _plan_fields(found, H):
    fwd, bwd = found.get("fwd"), found.get("bwd")
    lead = fwd or bwd
    return {"tier": lead.tier, "P": lead.programs(H), "plan_fwd": plan_text(fwd) if fwd else "",
            "plan_bwd": plan_text(bwd) if bwd else ""}


def precision_of(dtype, device) -> str:
    return _rec().launch.precision(dtype, device)


# ------------------------------------------------------------------------------------------ check
def _cell_call(cell, inputs, backend):
    """(outputs, names) of one cell's functional call on (a, W, b, h0, c0, n0)."""
    from tritonrnn.functional import recurrence as F

    a, w, b, h0, c0, n0 = inputs
    if cell == "lstm":
        return F.lstm_recurrence(a, w, b, h0, c0, backend=backend), ("h", "h_T", "c_T")
    if cell == "rnn_tanh":
        return F.rnn_recurrence(a, w, b, h0, nonlinearity="tanh", backend=backend), ("h", "h_T")
    if cell == "momentum_lstm":
        return (F.momentum_lstm_recurrence(a, w, b, h0, c0, n0, mu=0.6, s=0.6, backend=backend),
                ("h", "h_T", "c_T", "v_T"))
    if cell == "nesterov_lstm":
        return (F.nesterov_lstm_recurrence(a, w, b, h0, c0, n0, s=0.6, restart=3, backend=backend),
                ("h", "h_T", "c_T", "a_T"))
    raise ValueError(f"unknown cell {cell!r}")


def _inputs(cell, B, H, T, dtype, device, seed):
    """(a, W_hh, b_hh, h0, c0, n0) in `dtype` on `device` (None where the cell has no such input)."""
    G = 1 if cell == "rnn_tanh" else 4
    lstm = G == 4
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen)).to(device=device, dtype=dtype)
    a = rnd(B, T, G * H)
    w = rnd(G * H, H, scale=H ** -0.5)
    b = rnd(G * H, scale=0.5)
    h0, c0 = rnd(B, H, scale=0.5), (rnd(B, H, scale=0.5) if lstm else None)
    carried = cell in ("momentum_lstm", "nesterov_lstm")
    n0 = (0.5 * torch.randn(B, G * H, generator=gen)).to(device) if carried else None  # fp32 momentum state
    return [a, w, b, h0, c0, n0]


def worst_ratio(actual, expected, dtype, steps, scale, depth, roundings):
    """(max |actual − expected| / (atol + rtol·|expected|), max |actual − expected|) with tritonrnn.testing's
    derived rtol, atol; a non-finite value is an infinite ratio."""
    from tritonrnn.testing import tolerance

    rtol, atol = tolerance(dtype, steps, scale, depth, roundings)
    a, e = actual.double(), expected.double()
    err = (a - e).abs()
    if not torch.isfinite(a).all():
        return math.inf, math.inf
    return (err / (atol + rtol * e.abs())).max().item(), err.max().item()


def check_rows(case, device, env):
    """Forward and backward of one (cell, tier, P, dtype, shape) against float64, as two rows."""
    from tritonrnn.testing import LSTM_STEP_DEPTH, RNN_STEP_DEPTH

    cell, tier, P, dtype_name, B, H, T = case
    dtype = DTYPES[dtype_name]
    depth = RNN_STEP_DEPTH if cell == "rnn_tanh" else LSTM_STEP_DEPTH
    inputs = [x.requires_grad_() if x is not None else None for x in _inputs(cell, B, H, T, dtype, device, seed=T)]
    oracle = [x.detach().double().requires_grad_() if x is not None else None for x in inputs]
    with forced(tier, P), tf32(False):
        found = plans(H, B, dtype, device)
        prec = precision_of(dtype, device)
        out, names = _cell_call(cell, inputs, "triton")
        gen = torch.Generator().manual_seed(1)
        cot = [torch.randn(o.shape, generator=gen).to(device) for o in out]
        used = [x for x in inputs if x is not None]
        grads = torch.autograd.grad(sum((o.float() * c).sum() for o, c in zip(out, cot)), used)
    ref, _ = _cell_call(cell, oracle, "torch")
    ref_grads = torch.autograd.grad(sum((o * c.double()).sum() for o, c in zip(ref, cot)),
                                    [x for x in oracle if x is not None])
    base = dict(env, section="check", model=cell, provider=f"tritonrnn:tier-{tier}", precision=prec,
                dtype=dtype_name, batch=B, hidden_size=H, seq_len=T, **_plan_fields(found, H))
    got = (found["fwd"].tier, found["fwd"].programs(H), found["bwd"].tier, found["bwd"].programs(H))
    mismatch = "" if got[0] == got[2] == tier and got[1] == got[3] == P else \
        f"the dispatcher ran fwd {got[0]} P{got[1]}, bwd {got[2]} P{got[3]}, not {tier} P{P}; "
    rows = []
    # The tolerance model of the kernel tests (tests/kernels): outputs are T steps deep, weight gradients sum T·B
    # terms; a half cell rounds h_{t-1} (forward) and dz_{t+1} (backward) to its dtype at every step: T, 2T
    # roundings. Each result is compared in its own dtype (a half cell's carried momentum state is fp32).
    half = dtype != torch.float32
    grad_names = [n for n, x in zip(["a", "W_hh", "b_hh", "h0", "c0", "n0"], inputs) if x is not None]
    for kind, pairs, roundings in (("forward", [(n, o, r, T) for n, o, r in zip(names, out, ref)], T * half),
                                   ("backward", [(n, g, r, T * B) for n, g, r in zip(grad_names, grads, ref_grads)],
                                    2 * T * half)):
        worst, err, notes = 0.0, 0.0, []
        for name, o, r, steps in pairs:
            ratio, e = worst_ratio(o.detach(), r.detach(), o.dtype, steps, max(1.0, r.abs().max().item()), depth,
                                   roundings)
            if ratio > worst:
                worst, err = ratio, e
            if not ratio <= 1.0:
                notes.append(f"{name} off by {ratio:.3g}x the bound")
        ok = worst <= 1.0 and not mismatch
        rows.append(dict(base, **{"pass": kind}, worst=f"{worst:.3g}", max_abs_err=f"{err:.3g}",
                         ok="yes" if ok else "no", note=mismatch + "; ".join(notes)))
    return rows


# ------------------------------------------------------------------------------------------ barrier
def barrier_rows(P, device, env, dry_run):
    launch = _rec().launch
    steps = BARRIER_STEPS[dry_run]
    launch.barrier_probe(P, steps, device)  # compile, first launch
    us = [launch.barrier_probe(P, steps, device) * 1e6 for _ in range(3 if dry_run else 7)]
    return [dict(env, section="barrier", model="barrier", provider="tritonrnn:tier-C", tier="C", P=P,
                 **{"pass": "barrier"}, iters=len(us), seq_len=steps,
                 **{f"{q}_us_per_step": f"{_quantile(us, f):.4g}" for q, f in (("p20", 0.2), ("p50", 0.5), ("p80", 0.8))},
                 note=f"μs per barrier of P programs (one launch of {steps} barriers per probe; quantiles over probes)")]


# ------------------------------------------------------------------------------------------ time
class Bench:
    """Modules and inputs of one (shape, dtype), built once and shared by its rows."""

    def __init__(self, shape, dtype, device):
        self.shape, self.dtype, self.device = shape, dtype, device
        self.modules = {}
        gen = torch.Generator().manual_seed(0)
        T, B, I = shape["seq_len"], shape["batch"], shape["input_size"]
        self.x = torch.randn(T, B, I, generator=gen).to(device=device, dtype=dtype)
        self.dout = torch.randn(T, B, shape["hidden_size"], generator=gen).to(device=device, dtype=dtype)

    def module(self, name):
        if name not in self.modules:
            import tritonrnn

            torch.manual_seed(0)
            I, H = self.shape["input_size"], self.shape["hidden_size"]
            factory = dict(device=self.device, dtype=self.dtype)
            self.modules[name] = (torch.nn.LSTM(I, H, **factory) if name == CUDNN
                                  else getattr(tritonrnn, name)(I, H, backend="triton", **factory))
        return self.modules[name]

    def fn(self, name, kind):
        module = self.module(name)
        params = [p for p in module.parameters()]
        if kind == "forward":
            def run():
                with torch.no_grad():
                    module(self.x)
        else:
            def run():
                out, _ = module(self.x)
                torch.autograd.grad(out, params, self.dout)
        return run


def _peer_kind(device):
    return "cuDNN" if device.type == "cuda" else "native CPU kernel"


def timed(fn, device, dry_run):
    """perf.timing.measure with as many repetitions as ROW_SECONDS allows (at least 3; 1 in a dry run); the
    first call (compile, CUDA graph capture) is kept apart as first_call_ms."""
    probe = measure(fn, device, warmup=0, iters=1)  # its first call compiles and captures: first_call_ms
    if dry_run:
        return probe
    n = max(3, min(20, int(ROW_SECONDS * 1e3 / max(probe.p50_ms, 1e-3))))
    result = measure(fn, device, warmup=1, iters=n)
    result.first_call_ms = probe.first_call_ms
    return result


def _timing_fields(t, T):
    us = {q: getattr(t, f"{q}_ms") * 1e3 / T for q in ("p20", "p50", "p80")}
    return {"iters": t.iters, "p20_us_per_step": f"{us['p20']:.4g}", "p50_us_per_step": f"{us['p50']:.4g}",
            "p80_us_per_step": f"{us['p80']:.4g}", "first_call_ms": f"{t.first_call_ms:.1f}"}


def time_row(bench, model, tier, kind, env, dry_run, baseline=None, baseline_name="", section="time"):
    """One timed row: `model` (CUDNN, or a tritonrnn module on `tier`; None: the dispatcher's own choice)."""
    shape, dtype, device = bench.shape, bench.dtype, bench.device
    H, B, T = shape["hidden_size"], shape["batch"], shape["seq_len"]
    dname = str(dtype).replace("torch.", "")
    peer = model == CUDNN
    base = dict(env, section=section, model="LSTM" if peer else model,
                provider=CUDNN if peer else f"tritonrnn:tier-{tier or 'auto'}", **{"pass": kind}, dtype=dname,
                batch=B, hidden_size=H, seq_len=T,
                precision=("tf32" if dtype == torch.float32 and device.type == "cuda" else dname) if peer
                else precision_of(dtype, device), note=_peer_kind(device) if peer else "")
    with forced(tier):
        if model != CUDNN:
            try:
                found = plans(H, B, dtype, device, ("fwd",) if kind == "forward" else ("fwd", "bwd"))
            except ValueError as exc:  # the tier cannot run this shape: say why, not an error
                return [dict(base, tier=tier, note=f"not applicable: {exc}")]
            base.update(_plan_fields(found, H))
        t = timed(bench.fn(model, kind), device, dry_run)
    row = dict(base, **_timing_fields(t, T))
    if baseline:
        row.update(ratio=f"{t.p50_ms / baseline:.3g}", ratio_to=baseline_name)
    return [row]


def _context(shape, dtype, model, tier, kind):
    """What a timed row is, for its error row."""
    return dict(section="time", model=model, tier=tier or "", **{"pass": kind}, dtype=str(dtype)[6:],
                batch=shape["batch"], hidden_size=shape["hidden_size"], seq_len=shape["seq_len"])


def time_group(row, shape, dtype, device, env, dry_run):
    """cuDNN then Tiers A, B, C at one (shape, dtype), forward and forward + backward, TF32 on for fp32 (both
    sides). Returns {tier: forward + backward μs/step} of the tiers that ran."""
    T = shape["seq_len"]
    label = f"B{shape['batch']} H{shape['hidden_size']} T{T} {str(dtype)[6:]}"
    fb = {}
    with tf32(True):
        bench = Bench(shape, dtype, device)
        for kind in ("forward", "forward+backward"):
            cud = row(f"time {CUDNN} {kind} {label}", lambda kind=kind: time_row(bench, CUDNN, None, kind, env,
                                                                                  dry_run),
                      3.0, **_context(shape, dtype, CUDNN, None, kind))
            us = _num(cud[0].get("p50_us_per_step")) if cud else math.nan
            ms = None if math.isnan(us) else us * T / 1e3
            for tier in ("A", "B", "C"):  # a tier that cannot run the shape gets a row saying why
                rows = row(f"time LSTM tier {tier} {kind} {label}",
                           lambda tier=tier, kind=kind: time_row(bench, "LSTM", tier, kind, env, dry_run, ms,
                                                                 f"{CUDNN} ({_peer_kind(device)})"),
                           10.0, **_context(shape, dtype, "LSTM", tier, kind))
                us = _num(rows[0].get("p50_us_per_step")) if rows else math.nan
                if kind == "forward+backward" and not math.isnan(us):
                    fb[tier] = us
    del bench
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return fb


def time_family(row, shape, tier, device, env, dry_run):
    """The momentum family on `tier` (None: the dispatcher's choice) at `shape`, fp32 with TF32, each as a
    ratio to tritonrnn's plain LSTM on the same tier."""
    with tf32(True):
        bench = Bench(shape, torch.float32, device)
        for kind in ("forward", "forward+backward"):
            lstm_ms = None
            for model in DRY_FAMILY if dry_run else FAMILY:
                rows = row(f"time {model} tier {tier or 'auto'} {kind} family",
                           lambda model=model, kind=kind, lstm_ms=lstm_ms: time_row(
                               bench, model, tier, kind, env, dry_run, lstm_ms,
                               f"tritonrnn LSTM tier {tier or 'auto'}", "family"),
                           8.0, **dict(_context(shape, torch.float32, model, tier, kind), section="family"))
                us = _num(rows[0].get("p50_us_per_step")) if rows else math.nan
                if model == "LSTM" and not math.isnan(us):
                    lstm_ms = us * shape["seq_len"] / 1e3
    del bench


# ------------------------------------------------------------------------------------------ markdown
MD_COLUMNS = ["section", "model", "provider", "tier", "P", "pass", "dtype", "batch", "hidden_size", "seq_len",
              "p50_us_per_step", "ratio", "ratio_to", "worst", "ok", "note"]


def md_header(path, env, dry_run):
    with open(path, "w") as f:
        f.write(f"# Recurrence tiers — {env['device']}{' (dry run: interpreter, tiny shapes)' if dry_run else ''}\n\n"
                f"commit {env['commit']}, torch {env['torch']}, triton {env['triton']}, run {env['run']}. "
                "Times in μs per time step (p50; p20/p80 in tiers.csv); ratio = p50 / p50 of `ratio_to` (same "
                "shape, dtype and pass, same process); check rows: worst = max error / derived bound (ok <= 1).\n\n"
                "| " + " | ".join(MD_COLUMNS) + " |\n|" + "---|" * len(MD_COLUMNS) + "\n")


def md_append(path, rows):
    with open(path, "a") as f:
        for r in rows:
            f.write("| " + " | ".join(str(r.get(c, "")).replace("|", "/") for c in MD_COLUMNS) + " |\n")
        f.flush()


# ------------------------------------------------------------------------------------------ table
def _num(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _plan_dict(text, precision):
    """A plan_text string back into Plan fields (+ the precision it was measured at)."""
    tier, *parts = text.split()
    fields = {"tier": tier}
    for part, name in zip(parts, ("HS", "BB", "KC", "num_warps", "num_stages")):
        fields[name] = int(part.lstrip("HSBKCws"))
    fields["precision"] = precision
    return fields


def coop_verified(rows) -> bool:
    """Tier C at P > 1 checked on the device, and every such check within its bound (none erred)."""
    coop = [r for r in rows if r.get("section") == "check" and r.get("tier") == "C" and _num(r.get("P")) > 1]
    return bool(coop) and all(r.get("ok") == "yes" for r in coop)


def table_from_rows(rows) -> dict:
    """{device_class: {"coop_verified", "run", "plans": {(H, B, dtype, direction): plan fields}}} from one run's
    rows. fwd: the tier with the fastest forward; bwd: the tier with the fastest backward, read as forward +
    backward minus forward of the same tier (Tier C only when coop_verified). An entry notes cuDNN's time and
    "cudnn_faster" where cuDNN beat it (forward; forward + backward for bwd): the caller keeps cuDNN there."""
    out = {}
    for device_class in sorted({r["device_class"] for r in rows if r.get("device_class")}):
        sel = [r for r in rows if r.get("device_class") == device_class]
        verified = coop_verified(sel)
        timed_rows = [r for r in sel if r.get("section") == "time" and not math.isnan(_num(r.get("p50_us_per_step")))]
        keys = sorted({(int(r["hidden_size"]), int(r["batch"]), r["dtype"]) for r in timed_rows})
        plans_out = {}
        for H, B, dname in keys:
            group = [r for r in timed_rows if (int(r["hidden_size"]), int(r["batch"]), r["dtype"]) == (H, B, dname)
                     and r["model"] in ("LSTM",)]
            by = {}
            for r in group:
                by.setdefault((r["provider"], r["pass"]), r)
            tiers = {r["provider"] for r in group if r["provider"].startswith("tritonrnn:tier-")
                     and r.get("plan_fwd") and (verified or r.get("tier") != "C")}
            cudnn = {k[1]: _num(v["p50_us_per_step"]) for k, v in by.items() if k[0] == CUDNN}
            fwd = {p: by[(p, "forward")] for p in tiers if (p, "forward") in by}
            bwd = {p: _num(by[(p, "forward+backward")]["p50_us_per_step"]) - _num(by[(p, "forward")]["p50_us_per_step"])
                   for p in tiers if (p, "forward+backward") in by and (p, "forward") in by
                   and by[(p, "forward+backward")].get("plan_bwd")}
            if fwd:
                best = min(fwd, key=lambda p: _num(fwd[p]["p50_us_per_step"]))
                us = _num(fwd[best]["p50_us_per_step"])
                entry = _plan_dict(fwd[best]["plan_fwd"], fwd[best]["precision"])
                entry.update(p50_us_per_step=us)
                if "forward" in cudnn:
                    entry.update(cudnn_us_per_step=cudnn["forward"], cudnn_faster=cudnn["forward"] < us)
                plans_out[(H, B, dname, "fwd")] = entry
            if bwd:
                best = min(bwd, key=bwd.get)
                row = by[(best, "forward+backward")]
                entry = _plan_dict(row["plan_bwd"], row["precision"])
                total = _num(row["p50_us_per_step"])
                entry.update(p50_us_per_step=round(bwd[best], 4), forward_backward_us_per_step=total)
                if "forward+backward" in cudnn:
                    entry.update(cudnn_forward_backward_us_per_step=cudnn["forward+backward"],
                                 cudnn_faster=cudnn["forward+backward"] < total)
                plans_out[(H, B, dname, "bwd")] = entry
        out[device_class] = {"coop_verified": verified, "run": sel[0].get("run", ""), "plans": plans_out}
    return out


def newest_runs(rows):
    """Per device class, the rows of its newest run only (one run = one process: every tier beside cuDNN)."""
    newest = {}
    for r in rows:
        dc = r.get("device_class")
        if dc and r.get("run", "") > newest.get(dc, ""):
            newest[dc] = r.get("run", "")
    return [r for r in rows if r.get("device_class") and r.get("run", "") == newest[r["device_class"]]]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def default_table_path() -> str:
    import tritonrnn.kernels

    return os.path.join(os.path.dirname(os.path.abspath(tritonrnn.kernels.__file__)), "recurrence", "measured.py")


def write_table(csv_paths, out_path, *, gpu_only) -> dict:
    """Write the measured table (kernels/recurrence/measured.py's format) from the newest run per device class in
    `csv_paths`; gpu_only drops CPU rows (a dry run never reaches the package's table)."""
    rows = [r for p in csv_paths for r in read_csv(p)]
    if gpu_only:  # dispatch.device_facts names every device without a GPU "<type>-interpreter"
        rows = [r for r in rows if r.get("device_class") and not r["device_class"].endswith("-interpreter")]
    table = table_from_rows(newest_runs(rows))
    sources = sorted(os.path.relpath(p, os.path.dirname(RESULTS_DIR)) if os.path.abspath(p).startswith(
        os.path.dirname(RESULTS_DIR)) else p for p in csv_paths)
    text = ("# Generated by `python -m tritonrnn.perf.recurrence_tiers --write-table`; do not edit by hand\n"
            "# (kernels/recurrence/dispatch.py reads it). Per device class: coop_verified (Tier C at P > 1 passed the\n"
            "# run's float64 checks: only then may `auto` pick Tier C) and, per (H, B, dtype, direction), the fastest\n"
            "# measured plan with its time, and cuDNN's where measured (cudnn_faster: the caller keeps cuDNN).\n"
            f"SOURCES = {pprint.pformat(sources, width=116)}\n"
            f"MEASURED = {pprint.pformat(table, width=116, sort_dicts=True)}\n")
    if not table:
        text = text.replace("MEASURED = {}", "# No GPU run of the recurrence tiers in the sources: every device class "
                            "uses the fit rule, Tier C stays opt-in.\nMEASURED = {}")
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        f.write(text)
    return table


# ------------------------------------------------------------------------------------------ the run
def run(out_dir, budget_s, dry_run, write_package_table=False) -> int:
    device = torch.device("cpu" if dry_run else "cuda")
    env = environment(device)
    dispatch = _rec().dispatch
    env.update(run=env["timestamp"], device_class=dispatch.device_facts(device).device_class)
    sec = Section("tiers", out_dir, budget_s, FIELDS)
    md = os.path.join(out_dir, "tiers.md")
    md_header(md, env, dry_run)

    def row(label, fn, reserve=0.0, **context):
        # an error row keeps the environment and what the row was (context) beside the error text
        rows = sec.run(label, fn, 0.0 if dry_run else reserve, context=dict(env, **context))
        md_append(md, rows)
        return rows

    # (a) check
    checked = []
    for case in (DRY_CHECKS if dry_run else GPU_CHECKS):
        cell, tier, P, dname, B, H, T = case
        label = f"check {cell} tier {tier} P{P} {dname} B{B} H{H} T{T}"
        checked += row(label, lambda case=case: check_rows(case, device, env), 8.0, section="check", model=cell,
                       provider=f"tritonrnn:tier-{tier}", tier=tier, P=P, dtype=dname, batch=B, hidden_size=H,
                       seq_len=T, ok="no")
    # (b) barrier
    for P in BARRIER_P[dry_run]:
        row(f"barrier P{P}", lambda P=P: barrier_rows(P, device, env, dry_run), 5.0, section="barrier",
            model="barrier", tier="C", P=P)
    # (c) time: per (shape, dtype), cuDNN first (the tiers' ratio), then every tier; the issue's targets first (the
    # papers' shape in fp32 and bf16, B 16 / H 128 in bf16), then (d) the family, then the other shapes
    groups = [(DRY_SHAPE, d) for d in DTYPES] if dry_run else [
        (dict(PAPER, batch=B, hidden_size=H), d) for B, H, d in TIME_ORDER]
    tier = None  # the family's: the fastest forward + backward tier at the papers' shape in fp32
    for i, (shape, dname) in enumerate(groups):
        fb = time_group(row, shape, DTYPES[dname], device, env, dry_run)
        if i == 0 and fb:
            tier = min(fb, key=fb.get)
        if i == min(FAMILY_AFTER, len(groups) - 1):
            time_family(row, groups[0][0], tier, device, env, dry_run)
    sec.finish()
    # (d) the dispatcher's table from this run
    csv_path = os.path.join(out_dir, "tiers.csv")
    table = write_table([csv_path], os.path.join(out_dir, "measured.py"), gpu_only=False)
    if write_package_table:
        write_table([csv_path], default_table_path(), gpu_only=True)
    failed = [r for r in checked if r.get("ok") != "yes"]
    verified = table.get(env["device_class"], {}).get("coop_verified", False)
    print(f"[tiers] {len(checked)} check rows, {len(failed)} failed; coop_verified={verified}; "
          f"{sec.errors} error row(s); table: {os.path.join(out_dir, 'measured.py')}", flush=True)
    return 1 if failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tritonrnn.perf.recurrence_tiers",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="*", help="with --write-table and no --out-dir: the tiers.csv files to read "
                        "(default: every perf/results/*/tiers.csv, GPU rows, newest run per device class)")
    parser.add_argument("--out-dir", help="run the benchmark, writing DIR/tiers.csv, tiers.md, measured.py")
    parser.add_argument("--budget-s", type=float, default=60.0,
                        help="stop starting rows after this many seconds (the driver's `timeout` is the hard stop)")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU (interpreter): CI")
    parser.add_argument("--write-table", action="store_true",
                        help="regenerate kernels/recurrence/measured.py (after the run, from its CSV)")
    parser.add_argument("--table-out", help="where --write-table writes (default: the package's measured.py)")
    args = parser.parse_args(argv)
    if args.out_dir is None and not args.write_table:
        parser.error("give --out-dir DIR (a run) or --write-table")
    if args.out_dir is None:
        paths = args.csv or sorted(glob.glob(os.path.join(RESULTS_DIR, "*", "tiers.csv")))
        table = write_table(paths, args.table_out or default_table_path(), gpu_only=not args.csv)
        print(f"measured table for {sorted(table) or 'no device class'} from {len(paths)} file(s)")
        return 0
    if args.csv:
        parser.error("CSV arguments go with --write-table alone (a run reads its own)")
    if args.dry_run:
        # before the kernels' first import: triton.jit reads it when a kernel is defined
        os.environ.setdefault("TRITON_INTERPRET", "1")
    elif not torch.cuda.is_available():
        parser.error("no CUDA device: run with --dry-run on a CPU")
    os.makedirs(args.out_dir, exist_ok=True)
    return run(args.out_dir, args.budget_s, args.dry_run, args.write_table and args.table_out is None)


if __name__ == "__main__":
    sys.exit(main())
