"""Rooflines (issue 5 item 3): achieved bandwidth of the scans and the optimizer steps against the device's
measured copy bandwidth, and the recurrence's time per step against a measured floor.

- copy bandwidth: `dst.copy_(src)` of a large fp32 tensor, bytes read + written;
- scans: bytes of one read of u and one write of the output (states are negligible) over the time of the
  forward scan, for each backend that runs on the device;
- optimizer steps: bytes each update must move (SRSGD: read w, g, v_prev, write w, v_prev) over the step
  time, for tritonrnn's optimizers and torch's SGD(nesterov, foreach/fused) and Adam(fused) on one large
  tensor and on 200 small tensors;
- recurrence: forward time per step at batch 128, hidden 256 against the floor of one step's dependent work
  measured alone (the [B, H] × [H, 4H] product plus the gate pointwise ops, launched back to back), which is
  what bounds a recurrence whose steps cannot overlap.
"""
from __future__ import annotations

import argparse
import sys

import torch

from .results_io import OUT_DIR, OUT_DIR_HELP, append_rows, environment, result_path
from .timing import measure


def _ms(fn, device, iters, warmup):
    return measure(fn, device, warmup=warmup, iters=iters).p50_ms


def copy_bandwidth(device, numel, iters, warmup):
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    ms = _ms(lambda: dst.copy_(src), device, iters, warmup)
    return 2 * numel * 4 / (ms * 1e-3) / 1e9


def scan_rows(device, backends, shape, dtype, iters, warmup):
    from tritonrnn import functional as F

    B, T, C = shape
    u = torch.randn(B, T, C, device=device, dtype=dtype)
    nbytes = 2 * u.numel() * u.element_size()
    ops = {"momentum_scan": lambda b: F.momentum_scan(u, 0.6, 0.6, backend=b),
           "restart_scan": lambda b: F.momentum_scan(u, 0.0, 0.6, restart=2, backend=b),
           "adam_scan": lambda b: F.adam_scan(u, 0.6, 0.6, 0.1, 1e-8, backend=b)}
    for name, op in ops.items():
        for backend in backends:
            with torch.no_grad():
                ms = _ms(lambda: op(backend), device, iters, warmup)
            yield {"model": name, "provider": f"tritonrnn:{backend}", "gbps": nbytes / (ms * 1e-3) / 1e9, "ms": ms,
                   "note": f"[{B},{T},{C}] {str(dtype)[6:]}"}


def optimizer_rows(device, backends, numels, iters, warmup):
    import tritonrnn.optim as optim

    def params_for(sizes):
        ps = [torch.zeros(n, device=device, requires_grad=True) for n in sizes]
        for p in ps:
            p.grad = torch.randn_like(p) * 1e-3
        return ps

    makers = {f"tritonrnn.SRSGD:{b}": (lambda ps, b=b: optim.SRSGD(ps, lr=1e-3, restart=10, backend=b), 5)
              for b in backends}
    makers.update({f"tritonrnn.NAG:{b}": (lambda ps, b=b: optim.NAG(ps, lr=1e-3, backend=b), 5) for b in backends})
    makers.update({f"tritonrnn.FrankWolfe:{b}": (lambda ps, b=b: optim.FrankWolfe(ps, lr=1e-3, radius=0.1, backend=b), 10)
                   for b in backends})
    makers["torch.SGD(nesterov, foreach)"] = (lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9, nesterov=True, foreach=True), 5)
    makers["torch.SGD(nesterov, fused)"] = (lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9, nesterov=True, fused=True), 5)
    makers["torch.Adam(fused)"] = (lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True), 7)
    for label, sizes in numels.items():
        total = sum(sizes)
        for name, (make, words) in makers.items():
            ps = params_for(sizes)
            try:
                opt = make(ps)
                ms = _ms(opt.step, device, iters, warmup)
            except RuntimeError as exc:   # e.g. fused=True not supported on this device by this torch
                yield {"model": label, "provider": name, "gbps": float("nan"), "ms": float("nan"), "note": str(exc)[:80]}
                continue
            # `words` fp32 words each element must move per step (reads + writes of params, grads, state)
            yield {"model": label, "provider": name, "gbps": words * 4 * total / (ms * 1e-3) / 1e9, "ms": ms,
                   "note": f"{words} words/element"}
            del opt, ps


def recurrence_rows(device, backends, B, H, T, iters, warmup):
    """Forward time per step of the LSTM recurrence against a floor: the step's [B, H] x [H, 4H] product
    alone (contiguous operands, preallocated output). Every step needs that product of the previous h, so
    no implementation of the recurrence can take less per step on this device."""
    from tritonrnn import functional as F

    a = torch.randn(B, T, 4 * H, device=device)
    w = torch.randn(4 * H, H, device=device) / H ** 0.5
    b = torch.zeros(4 * H, device=device)
    h = torch.randn(B, H, device=device)
    w_t = w.t().contiguous()
    buf = torch.empty(B, 4 * H, device=device)
    native = torch.nn.LSTM(4 * H, H).to(device)   # cuDNN / oneDNN, as a peer: its time includes its input GEMM
    x_native = torch.randn(T, B, 4 * H, device=device)
    with torch.no_grad():
        floor_us = _ms(lambda: torch.mm(h, w_t, out=buf), device, iters * 10, warmup) * 1e3
        yield {"model": f"lstm step B={B} H={H}", "provider": "floor: the step's GEMM alone", "us_per_step": floor_us}
        peers = {f"tritonrnn:{bk}": (lambda bk=bk: F.lstm_recurrence(a, w, b, backend=bk)) for bk in backends}
        peers["torch.nn.LSTM (incl. input GEMM)"] = lambda: native(x_native)
        for name, fn in peers.items():
            ms = _ms(fn, device, iters, warmup)
            yield {"model": f"lstm step B={B} H={H}", "provider": name, "us_per_step": ms * 1e3 / T,
                   "note": f"{ms * 1e3 / T / floor_us:.2f}x floor"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tritonrnn.perf.roofline", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out-dir", default=OUT_DIR, help=OUT_DIR_HELP)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    backends = ["triton", "torch"] if on_gpu else ["torch"]
    iters, warmup = (50, 10) if on_gpu else (5, 1)
    env = environment(device)
    path = result_path(args.out_dir, "roofline", env)
    copy_gbps = copy_bandwidth(device, 2**28 if on_gpu else 2**25, iters, warmup)
    print(f"roofline on {env['device']}: copy bandwidth {copy_gbps:.1f} GB/s (read + write)")
    rows = []

    def emit(suite, r):
        frac = r.get("gbps", float("nan")) / copy_gbps
        rows.append(dict(env, suite=suite, model=r["model"], provider=r["provider"], mode="fwd" if suite != "optimizer" else "step",
                         p50_ms=f"{r.get('ms', float('nan')):.4f}",
                         note=(f"{r['gbps']:.1f} GB/s = {100 * frac:.0f}% of copy; " if "gbps" in r else
                               f"{r['us_per_step']:.2f} us/step; ") + r.get("note", "")))
        print(f"{suite:10s} {r['model']:24s} {r['provider']:32s} {rows[-1]['note']}")

    shape = (128, 784, 1024) if on_gpu else (32, 256, 512)
    for dtype in (torch.float32, torch.bfloat16):
        for r in scan_rows(device, backends, shape, dtype, iters, warmup):
            emit("scan", r)
    numels = {"1 tensor of 100M": [100_000_000], "200 small tensors": [2_000 + 37 * i for i in range(200)]}
    for r in optimizer_rows(device, ["triton", "foreach"] if on_gpu else ["foreach"], numels, iters, warmup):
        emit("optimizer", r)
    for r in recurrence_rows(device, backends, 128, 256, 784 if on_gpu else 64, iters, warmup):
        emit("recurrence", r)
    append_rows(path, [dict(env, suite="copy", model="copy_", provider="torch", mode="copy",
                            note=f"{copy_gbps:.1f} GB/s")] + rows)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
