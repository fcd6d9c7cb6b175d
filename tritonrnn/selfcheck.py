"""`python -m tritonrnn check`: the Triton kernels against the torch paths and references, on this machine.

On a GPU the compiled kernels run on CUDA tensors; on a CPU-only machine they run under Triton's
interpreter, which must be switched on before tritonrnn.kernels is imported — so `main` sets
TRITON_INTERPRET=1 when no GPU is present and the kernels are not imported yet. Each case compares outputs,
final states and the gradients of every input with the dtype's tolerance (tritonrnn.testing) and prints a
one-screen verdict; the exit code is non-zero when any case fails. The full property tests live in tests/.
"""
from __future__ import annotations

import os
import zlib
import sys
import time


def _prepare_device():
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    if "tritonrnn.kernels.scan" in sys.modules and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        raise RuntimeError("tritonrnn.kernels was imported before the interpreter could be switched on: "
                           "run `python -m tritonrnn check` in a fresh process")
    os.environ["TRITON_INTERPRET"] = "1"
    return torch.device("cpu")


def _compare(fn, inputs, dtype, steps, seed):
    """Run fn(backend, *inputs) on both backends; compare outputs and the gradients of every input."""
    import torch

    from .testing import tolerance

    results = {}
    for backend in ("triton", "torch"):
        leaves = [x.detach().clone().requires_grad_(x.is_floating_point()) if x is not None else None for x in inputs]
        outs = [o for o in fn(backend, *leaves) if o is not None]
        g = torch.Generator(device="cpu").manual_seed(seed)
        cotangents = [torch.randn(o.shape, generator=g).to(o.device, o.dtype) for o in outs]
        torch.autograd.backward(outs, cotangents)
        grads = [x.grad for x in leaves if x is not None and x.requires_grad]
        results[backend] = [o.detach() for o in outs] + grads
    worst = 0.0
    rtol, atol = tolerance(dtype, steps, scale=1.0)
    ok = True
    for got, want in zip(results["triton"], results["torch"]):
        got, want = got.double(), want.double()
        scale = max(1.0, float(want.abs().max()) if want.numel() else 1.0)
        err = float((got - want).abs().max()) if want.numel() else 0.0
        worst = max(worst, err / scale)
        ok &= bool(torch.isfinite(got).all()) and bool(torch.allclose(got, want, rtol=rtol, atol=atol * scale))
    return ok, worst, rtol


def cases(device, quick: bool):
    import torch

    from . import functional as F

    def rand(*shape, dtype, seed):
        g = torch.Generator(device="cpu").manual_seed(seed)
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    B, T, C, H = (2, 37, 24, 8) if quick else (3, 70, 40, 12)
    dtypes = (torch.float32,) if quick else (torch.float32, torch.bfloat16)
    for dtype in dtypes:
        u, v0, m0 = rand(B, T, C, dtype=dtype, seed=1), rand(B, C, dtype=torch.float32, seed=2), rand(B, C, dtype=torch.float32, seed=3).abs()
        yield (f"momentum_scan mu=0.6 {dtype}", dtype, T,
               lambda b, u, v0: F.momentum_scan(u, 0.6, 0.6, v0, backend=b), [u, v0])
        yield (f"momentum_scan restart F=3 {dtype}", dtype, T,
               lambda b, u, v0: F.momentum_scan(u, 0.0, 0.6, v0, restart=3, step_offset=5, backend=b), [u, v0])
        yield (f"adam_scan {dtype}", dtype, T,
               lambda b, u, v0, m0: F.adam_scan(u, 0.6, 0.6, 0.1, 1e-8, v0, m0, backend=b), [u, v0, m0])
        yield (f"rmsprop_scan {dtype}", dtype, T,
               lambda b, u, m0: F.rmsprop_scan(u, 0.6, 0.9, 1e-8, m0, backend=b), [u, m0])
        a4, w4, b4 = rand(B, T, 4 * H, dtype=dtype, seed=4), rand(4 * H, H, dtype=dtype, seed=5) * 0.3, rand(4 * H, dtype=dtype, seed=6)
        h0, c0 = rand(B, H, dtype=dtype, seed=7), rand(B, H, dtype=dtype, seed=8)
        yield (f"lstm_recurrence {dtype}", dtype, T,
               lambda b, a, w, bb, h0, c0: F.lstm_recurrence(a, w, bb, h0, c0, backend=b), [a4, w4, b4, h0, c0])
        a1, w1, b1 = rand(B, T, H, dtype=dtype, seed=9), rand(H, H, dtype=dtype, seed=10) * 0.3, rand(H, dtype=dtype, seed=11)
        yield (f"rnn_recurrence tanh {dtype}", dtype, T,
               lambda b, a, w, bb, h0: F.rnn_recurrence(a, w, bb, h0, backend=b), [a1, w1, b1, h0])
        yield (f"nesterov_lstm_recurrence {dtype}", dtype, T,
               lambda b, u, w, bb, h0, c0: F.nesterov_lstm_recurrence(u, w, bb, h0, c0, s=1.0, restart=2, backend=b),
               [a4, w4, b4, h0, c0])


def _optimizer_cases(device, quick):
    import torch

    from . import optim

    sizes = [1, 17, 1000, 4099] if not quick else [3, 1000]
    makers = {
        "SRSGD": lambda ps, b: optim.SRSGD(ps, lr=0.05, restart=5, backend=b),
        "NAG (sutskever)": lambda ps, b: optim.NAG(ps, lr=0.01, momentum=0.99, schedule="sutskever", backend=b),
        "FrankWolfe (K=3)": lambda ps, b: optim.FrankWolfe(ps, lr=1e-3, radius=0.1, inner_steps=3, backend=b),
    }
    for name, make in makers.items():
        finals = {}
        for backend in ("triton", "foreach"):
            g = torch.Generator(device="cpu").manual_seed(0)
            params = [torch.randn(n, generator=g).to(device).requires_grad_() for n in sizes]
            opt = make(params, backend)
            for step in range(12):
                for p in params:
                    p.grad = torch.randn(p.shape, generator=g).to(device)
                opt.step()
            finals[backend] = torch.cat([p.detach().flatten() for p in params])
        from .testing import tolerance

        rtol, atol = tolerance(torch.float32, steps=12)
        err = float((finals["triton"] - finals["foreach"]).abs().max())
        yield f"{name} 12 steps", bool(torch.allclose(finals["triton"], finals["foreach"], rtol=rtol, atol=atol)), err, rtol


def main(quick: bool = False) -> int:
    device = _prepare_device()
    import torch
    import triton

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (Triton interpreter)"
    print(f"tritonrnn self-check on {where}: torch {torch.__version__}, triton {triton.__version__}")
    print(f"{'case':46s} {'result':6s} {'max rel err':>12s} {'rtol':>10s} {'time':>7s}")
    failures = 0
    for name, dtype, steps, fn, inputs in cases(device, quick):
        t0 = time.perf_counter()
        ok, err, rtol = _compare(fn, inputs, dtype, steps, seed=zlib.crc32(name.encode()) % 1000)
        failures += not ok
        print(f"{name:46s} {'PASS' if ok else 'FAIL':6s} {err:12.3e} {rtol:10.2e} {time.perf_counter() - t0:6.1f}s")
    for name, ok, err, rtol in _optimizer_cases(device, quick):
        failures += not ok
        print(f"{name:46s} {'PASS' if ok else 'FAIL':6s} {err:12.3e} {rtol:10.2e}")
    print("verdict: " + ("all kernels agree with the torch paths" if not failures else f"{failures} case(s) FAILED"))
    return 1 if failures else 0
