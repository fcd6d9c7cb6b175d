"""Peak memory of one training step (forward + backward) against sequence length (issue #7 item 4).

Rows: torch.nn.LSTM, and tritonrnn's LSTM / MomentumLSTM / AdamLSTM on the torch backend (on CUDA also the
triton backend), each plain and through tritonrnn.nn.checkpoint.checkpoint_sequence (recompute in backward).
The step is `module(x)[0].square().mean().backward()` on a fresh module; the figure is the step's peak
memory above what was resident before it (parameters and input included in the baseline, so the number is
what the step adds: saved activations, the output, gradients and transient buffers).

How it is measured:
- CUDA: torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus memory_allocated() before:
  exactly the caching allocator's tensor bytes.
- CPU: torch has no allocator statistics for the CPU, and a profiler that records every allocation costs
  more than the step at long T. Each point runs in a fresh subprocess that resets the kernel's peak
  resident-set counter (writing 5 to /proc/self/clear_refs, Linux >= 4.0) just before the step and reads
  VmHWM from /proc/self/status after it. That is the resident-set high-water mark of the step: tensor
  storage (large blocks are mmap-ed and returned on free, so the peak is not blurred by reuse from earlier
  steps: the subprocess has run none) plus autograd's per-node bookkeeping, which matters for the Python
  step loops. Pages are counted when touched, so the figure is a true peak at a 4 KiB granularity.

Run: `python -m tritonrnn.perf.memory [--seq-lens 100,1000,10000] [--batch 32] [--input-size 32]
[--hidden-size 128] [--segment 100] [--models ...]`; rows go to
./tritonrnn-results/memory-<device>-<time>.csv (--out-dir to choose).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from .results_io import OUT_DIR, OUT_DIR_HELP, append_rows, environment, result_path

MODELS = ("nn.LSTM", "LSTM", "MomentumLSTM", "AdamLSTM")
DEFAULT_SEQ_LENS = (100, 1000, 10000)
DEFAULT_SHAPE = dict(batch=32, input_size=32, hidden_size=128)


def build(model: str, backend: str, input_size: int, hidden_size: int, device, dtype) -> torch.nn.Module:
    if model == "nn.LSTM":
        return torch.nn.LSTM(input_size, hidden_size, device=device, dtype=dtype)
    import tritonrnn.nn as tnn

    return getattr(tnn, model)(input_size, hidden_size, device=device, dtype=dtype, backend=backend)


def train_step(module, x, segment=None):
    if segment:
        from tritonrnn.nn.checkpoint import checkpoint_sequence

        out = checkpoint_sequence(module, x, segment=segment)[0]
    else:
        out = module(x)[0]
    out.square().mean().backward()


def _vm_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def measure_here(model, backend, seq_len, batch, input_size, hidden_size, *, device="cpu", dtype=torch.float32,
                 segment=None, seed=0) -> dict:
    """One point in this process: {"peak_mb": step peak above the pre-step baseline, "seconds": step time}.
    On the CPU call it in a fresh process (measure_point does): earlier steps leave memory behind."""
    device = torch.device(device)
    torch.manual_seed(seed)
    module = build(model, backend, input_size, hidden_size, device, dtype)
    x = torch.randn(seq_len, batch, input_size, device=device, dtype=dtype)
    # A short step first: one-time costs (oneDNN primitives, kernel compilation, lazy imports) stay out.
    train_step(module, x[:2], segment)
    module.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        train_step(module, x, segment)
        torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) - before
        return {"peak_mb": peak / 2**20, "seconds": seconds}
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    before = _vm_kib("VmRSS")
    start = time.perf_counter()
    train_step(module, x, segment)
    seconds = time.perf_counter() - start
    return {"peak_mb": (_vm_kib("VmHWM") - before) / 1024, "seconds": seconds}


def measure_point(model, backend, seq_len, batch, input_size, hidden_size, *, device="cpu", dtype=torch.float32,
                  segment=None, timeout=600) -> dict:
    """measure_here, in a fresh subprocess on the CPU (see the module docstring), in-process on CUDA."""
    if torch.device(device).type == "cuda":
        return measure_here(model, backend, seq_len, batch, input_size, hidden_size, device=device, dtype=dtype,
                            segment=segment)
    spec = dict(model=model, backend=backend, seq_len=seq_len, batch=batch, input_size=input_size,
                hidden_size=hidden_size, dtype=str(dtype).replace("torch.", ""), segment=segment)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    # glibc raises its mmap threshold after large frees and then keeps freed blocks resident; a fixed
    # threshold returns every block above 128 KiB to the OS on free, so the resident peak tracks live bytes.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(128 * 1024))
    proc = subprocess.run([sys.executable, "-m", "tritonrnn.perf.memory", "--point", json.dumps(spec)],
                          capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"memory point {spec} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def analytic_saved_mb(model, backend, seq_len, batch, input_size, hidden_size) -> float | None:
    """Bytes the Triton path saves for the backward (fp32, the recurrence and scan Functions' save lists):
    hs, cs [T+1, B, H], gates [T, B, 4H]; plus x̃ [T, B, in+1] for the commuted momentum projection, or u
    [T, B, 4H] and the chunk carries 2·[B, ceil(T/32), 4H] for the Adam scan. None for the other paths."""
    if backend != "triton":
        return None
    T, B, H, n = seq_len, batch, hidden_size, input_size
    floats = 2 * (T + 1) * B * H + T * B * 4 * H
    if model == "LSTM":
        floats += T * B * n  # x, saved by the input projection's matmul
    elif model == "MomentumLSTM":
        floats += T * B * (n + 1)
    elif model == "AdamLSTM":
        floats += T * B * n + T * B * 4 * H + 2 * B * -(-T // 32) * 4 * H
    else:
        return None
    return 4 * floats / 2**20


def rows_for(models, seq_lens, shape, *, device, dtype, segment, env, csv_path=None, log=print):
    """Measure every point; each row is appended to csv_path as soon as it exists (a long run keeps them)."""
    device = torch.device(device)
    backends = ["torch"] + (["triton"] if device.type == "cuda" else [])
    rows = []
    for T in seq_lens:
        for model in models:
            for backend in (["torch"] if model == "nn.LSTM" else backends):
                for seg in (None, segment):
                    if seg is not None and (model == "nn.LSTM" or seg >= T):
                        continue  # checkpoint_sequence takes tritonrnn modules; one segment is the plain call
                    got = measure_point(model, backend, T, shape["batch"], shape["input_size"],
                                        shape["hidden_size"], device=device, dtype=dtype, segment=seg)
                    provider = "torch.nn" if model == "nn.LSTM" else f"tritonrnn:{backend}"
                    note = f"checkpoint segment={seg}" if seg else "plain"
                    saved = analytic_saved_mb(model, backend, T, **shape) if not seg else None
                    if saved is not None:
                        note += f"; analytic saved activations {saved:.1f} MB"
                    row = {**env, "suite": "memory", "model": model, "provider": provider, "mode": "train",
                           "dtype": str(dtype).replace("torch.", ""), "seq_len": T, "iters": 1, "warmup": 0,
                           "p50_ms": f"{got['seconds'] * 1e3:.1f}", "peak_mem_mb": f"{got['peak_mb']:.1f}",
                           "note": note, **shape}
                    log(f"T={T:>6} {model:>13} {provider:>16} {note:<24} peak {got['peak_mb']:9.1f} MB "
                        f"({got['seconds']:.2f} s)")
                    rows.append(row)
                    if csv_path:
                        append_rows(csv_path, [row])
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tritonrnn.perf.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seq-lens", default=",".join(map(str, DEFAULT_SEQ_LENS)))
    parser.add_argument("--batch", type=int, default=DEFAULT_SHAPE["batch"])
    parser.add_argument("--input-size", type=int, default=DEFAULT_SHAPE["input_size"])
    parser.add_argument("--hidden-size", type=int, default=DEFAULT_SHAPE["hidden_size"])
    parser.add_argument("--segment", type=int, default=100, help="checkpoint_sequence segment length")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out-dir", default=OUT_DIR, help=OUT_DIR_HELP)
    parser.add_argument("--point", help=argparse.SUPPRESS)  # internal: one CPU point, JSON spec
    args = parser.parse_args(argv)
    if args.point:
        spec = json.loads(args.point)
        spec["dtype"] = getattr(torch, spec["dtype"])
        got = measure_here(spec.pop("model"), spec.pop("backend"), spec.pop("seq_len"), spec.pop("batch"),
                           spec.pop("input_size"), spec.pop("hidden_size"), **spec)
        print(json.dumps(got))
        return 0
    device = torch.device(args.device)
    env = environment(device)
    shape = dict(batch=args.batch, input_size=args.input_size, hidden_size=args.hidden_size)
    path = result_path(args.out_dir, "memory", env)
    rows_for(args.models.split(","), [int(t) for t in args.seq_lens.split(",")], shape, device=device,
             dtype=getattr(torch, args.dtype), segment=args.segment, env=env, csv_path=path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
