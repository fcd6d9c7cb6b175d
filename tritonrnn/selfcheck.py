"""`python -m tritonrnn check`: the Triton kernels against the torch paths and references, on this machine.

On a GPU the compiled kernels run on CUDA tensors; on a CPU-only machine they run under Triton's
interpreter, which must be switched on before tritonrnn.kernels is imported — so `main` sets
TRITON_INTERPRET=1 when no GPU is present and the kernels are not imported yet. Each case compares outputs,
final states and the gradients of every input with the dtype's tolerance (tritonrnn.testing) and prints a
one-screen verdict; the exit code is non-zero when any case fails. The full property tests live in tests/.

Every kernel module has a case (KERNEL_CASES, tested in tests/test_cli.py): kernels/scan.py (momentum,
restart, Adam, RMSProp scans), kernels/recurrence/ (LSTM, RNN tanh / relu / modReLU — the orthogonal
core —, NesterovLSTM, the momentum-in-loop LSTM), kernels/indrnn.py (IndRNN) and kernels/multi_tensor.py
(SRSGD, NAG, Frank-Wolfe, against their foreach paths after 12 steps).
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


def _compare(fn, inputs, dtype, steps, depth, seed):
    """Run fn(backend, *inputs) on both backends; compare outputs and the gradients of every input.

    Outputs accumulate `steps` steps of `depth` fp32 roundings (tritonrnn.testing); a gradient may also sum
    over the batch (the weights' and biases' gradients sum B·T terms), so gradients get steps × B. Returns
    (ok, the worst error relative to max(1, |reference|), the larger rtol used)."""
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
        results[backend] = ([o.detach() for o in outs], grads)
    batch = inputs[0].shape[0]
    worst, ok, rtols = 0.0, True, []
    for kind, n in ((0, steps), (1, steps * batch)):
        rtol, atol = tolerance(dtype, n, scale=1.0, depth=depth)
        rtols.append(rtol)
        for got, want in zip(results["triton"][kind], results["torch"][kind]):
            got, want = got.double(), want.double()
            scale = max(1.0, float(want.abs().max()) if want.numel() else 1.0)
            err = float((got - want).abs().max()) if want.numel() else 0.0
            worst = max(worst, err / scale)
            ok &= bool(torch.isfinite(got).all()) and bool(torch.allclose(got, want, rtol=rtol, atol=atol * scale))
    return ok, worst, max(rtols)


# The kernel modules and the case-name prefixes that reach them (tests/test_cli.py checks the coverage).
KERNEL_CASES = {
    "scan": ("momentum_scan", "adam_scan", "rmsprop_scan"),
    "recurrence": ("lstm_recurrence", "rnn_recurrence tanh", "rnn_recurrence relu", "rnn_recurrence modrelu",
                   "nesterov_lstm_recurrence", "momentum_lstm_recurrence"),
    "indrnn": ("indrnn_recurrence",),
    "multi_tensor": ("SRSGD", "NAG", "FrankWolfe"),
}


def cases(device, quick: bool):
    """(name, dtype, steps, depth, fn(backend, *inputs), inputs) for every recurrence and scan kernel."""
    import torch

    from . import functional as F
    from .testing import ACCUMULATE_DEPTH, LSTM_STEP_DEPTH, RNN_STEP_DEPTH

    def rand(*shape, dtype, seed):
        g = torch.Generator(device="cpu").manual_seed(seed)
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    B, T, C, H = (2, 37, 24, 8) if quick else (3, 70, 40, 12)
    dtypes = (torch.float32,) if quick else (torch.float32, torch.bfloat16)
    for dtype in dtypes:
        u, v0, m0 = rand(B, T, C, dtype=dtype, seed=1), rand(B, C, dtype=torch.float32, seed=2), rand(B, C, dtype=torch.float32, seed=3).abs()
        yield (f"momentum_scan mu=0.6 {dtype}", dtype, T, ACCUMULATE_DEPTH,
               lambda b, u, v0: F.momentum_scan(u, 0.6, 0.6, v0, backend=b), [u, v0])
        yield (f"momentum_scan restart F=3 {dtype}", dtype, T, ACCUMULATE_DEPTH,
               lambda b, u, v0: F.momentum_scan(u, 0.0, 0.6, v0, restart=3, step_offset=5, backend=b), [u, v0])
        yield (f"adam_scan {dtype}", dtype, T, ACCUMULATE_DEPTH,
               lambda b, u, v0, m0: F.adam_scan(u, 0.6, 0.6, 0.1, 1e-8, v0, m0, backend=b), [u, v0, m0])
        yield (f"rmsprop_scan {dtype}", dtype, T, ACCUMULATE_DEPTH,
               lambda b, u, m0: F.rmsprop_scan(u, 0.6, 0.9, 1e-8, m0, backend=b), [u, m0])
        a4, w4, b4 = rand(B, T, 4 * H, dtype=dtype, seed=4), rand(4 * H, H, dtype=dtype, seed=5) * 0.3, rand(4 * H, dtype=dtype, seed=6)
        h0, c0 = rand(B, H, dtype=dtype, seed=7), rand(B, H, dtype=dtype, seed=8)
        yield (f"lstm_recurrence {dtype}", dtype, T, LSTM_STEP_DEPTH,
               lambda b, a, w, bb, h0, c0: F.lstm_recurrence(a, w, bb, h0, c0, backend=b), [a4, w4, b4, h0, c0])
        a1, w1, b1 = rand(B, T, H, dtype=dtype, seed=9), rand(H, H, dtype=dtype, seed=10) * 0.3, rand(H, dtype=dtype, seed=11)
        for nonlinearity in ("tanh", "relu"):
            yield (f"rnn_recurrence {nonlinearity} {dtype}", dtype, T, RNN_STEP_DEPTH,
                   lambda b, a, w, bb, h0, nl=nonlinearity: F.rnn_recurrence(a, w, bb, h0, nonlinearity=nl, backend=b),
                   [a1, w1, b1, h0])
        # The orthogonal (DTRIV) core: U orthogonal as the module keeps it, a small modReLU bias as DTRIV's
        # initialisation (±0.01 there; ±0.1 here so that some units are switched off by it)
        U = _orthogonal(H, seed=12).to(device=device, dtype=dtype)
        b_mod = (rand(H, dtype=torch.float32, seed=13) * 0.1).to(dtype)
        yield (f"rnn_recurrence modrelu (orthogonal) {dtype}", dtype, T, RNN_STEP_DEPTH,
               lambda b, a, w, bb, h0: F.rnn_recurrence(a, w, bb, h0, nonlinearity="modrelu", backend=b),
               [a1, U, b_mod, h0])
        # IndRNN: w in [0, 1) as the IndRNN paper's initialisation, one multiply-add recurrence per unit
        w_ind = torch.rand(H, generator=torch.Generator(device="cpu").manual_seed(14)).to(device=device, dtype=dtype)
        yield (f"indrnn_recurrence {dtype}", dtype, T, RNN_STEP_DEPTH,
               lambda b, a, w, bb, h0: F.indrnn_recurrence(a, w, bb, h0, backend=b), [a1, w_ind, b1, h0])
        yield (f"nesterov_lstm_recurrence {dtype}", dtype, T, LSTM_STEP_DEPTH,
               lambda b, u, w, bb, h0, c0: F.nesterov_lstm_recurrence(u, w, bb, h0, c0, s=1.0, restart=2, backend=b),
               [a4, w4, b4, h0, c0])
        v4 = rand(B, 4 * H, dtype=torch.float32, seed=15)
        yield (f"momentum_lstm_recurrence {dtype}", dtype, T, LSTM_STEP_DEPTH,
               lambda b, u, w, bb, h0, c0, v0: F.momentum_lstm_recurrence(u, w, bb, h0, c0, v0, mu=0.6, s=0.6,
                                                                           backend=b),
               [a4, w4, b4, h0, c0, v4])


def _orthogonal(H, seed):
    """A Haar-distributed orthogonal [H, H] matrix (QR of a Gaussian, signs fixed by diag(R)), float32 on CPU."""
    import torch

    q, r = torch.linalg.qr(torch.randn(H, H, generator=torch.Generator(device="cpu").manual_seed(seed),
                                       dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()


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
    print(f"{'case':52s} {'result':6s} {'max rel err':>12s} {'rtol':>10s} {'time':>7s}")
    failures = 0
    for name, dtype, steps, depth, fn, inputs in cases(device, quick):
        t0 = time.perf_counter()
        ok, err, rtol = _compare(fn, inputs, dtype, steps, depth, seed=zlib.crc32(name.encode()) % 1000)
        failures += not ok
        print(f"{name:52s} {'PASS' if ok else 'FAIL':6s} {err:12.3e} {rtol:10.2e} {time.perf_counter() - t0:6.1f}s")
    for name, ok, err, rtol in _optimizer_cases(device, quick):
        failures += not ok
        print(f"{name:52s} {'PASS' if ok else 'FAIL':6s} {err:12.3e} {rtol:10.2e}")
    print("verdict: " + ("all kernels agree with the torch paths" if not failures else f"{failures} case(s) FAILED"))
    return 1 if failures else 0
