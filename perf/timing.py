"""Timing protocol of SPEC §3: warm-up, then device-synchronised repetitions, reported as p20/p50/p80.

On CUDA each repetition is bracketed by CUDA events after a synchronise (the spirit of
triton.testing.do_bench); on CPU by time.perf_counter. The first call (compilation, autotuning, caches)
is timed separately and never mixed into the steady-state quantiles.
"""
from __future__ import annotations

import dataclasses
import statistics
import time

import torch


@dataclasses.dataclass
class Timing:
    p20_ms: float
    p50_ms: float
    p80_ms: float
    first_call_ms: float
    iters: int
    warmup: int
    peak_mem_mb: float

    def per_sample_us(self, batch: int) -> dict:
        return {q: getattr(self, f"{q}_ms") * 1e3 / batch for q in ("p20", "p50", "p80")}


def _quantile(values, q):
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, device: torch.device, *, warmup: int, iters: int) -> Timing:
    """Time `fn()` (one training or evaluation iteration) on `device`."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    first = (time.perf_counter() - t0) * 1e3
    for _ in range(max(warmup - 1, 0)):
        fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            _sync(device)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return Timing(_quantile(times, 0.2), statistics.median(times), _quantile(times, 0.8), first, iters, warmup, peak)
