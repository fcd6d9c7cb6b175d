"""Concurrent use is safe (issue 14, "threads"): modules called from several threads at once, on the Triton
backend (the interpreter on CPU) and on the torch backend (the native commuted cell, whose call used to change
the process-global warning filters), give each thread exactly the result of the same call made alone, and
leave the process's warning filters as they were.

Under the interpreter every launch goes through kernels/_ops.device_guard, which serialises them: Triton's
interpreter keeps the grid index in one process-global builder and patches triton.language for the duration
of a launch, so two launches at once read each other's program ids or find the language unpatched halfway.
"""
import copy
import threading
import warnings

import pytest
import torch

import tritonrnn.nn as tnn
from tests.conftest import ON_GPU
from tritonrnn.reference import STATE_NAMES

# Concurrency as a user's process has it: the machine's intra-op thread count, not the suite's one (conftest.py)
pytestmark = pytest.mark.usefixtures("machine_threads")

T, B, IN, H = 3, 2, 2, 4
THREADS = 4
# One case per launch family on the Triton backend (recurrence, scan + recurrence, Nesterov in the loop,
# IndRNN) and the torch backend's native path (plain and with a carried momentum state).
CASES = [(tnn.MomentumLSTM, "triton"), (tnn.AdamRNN, "triton"), (tnn.NesterovLSTM, "triton"),
         (tnn.MomentumIndRNN, "triton"), (tnn.LSTM, "torch"), (tnn.MomentumLSTM, "torch")]


def _build(cls, backend, seed):
    torch.manual_seed(seed)  # in the main thread: the global generator is shared state too
    module = cls(IN, H, backend=backend)
    x = torch.randn(T, B, IN)
    G = 4 if "LSTM" in cls.__name__ else 1
    state = {n: torch.randn(1, B, G * H).abs() for n in STATE_NAMES[cls.dynamics]}  # m >= 0: a second moment
    cot = torch.randn(T, B, H)
    return module, x, state, cot


def _call(module, x, state, cot):
    """Outputs and the gradients of x, the states and every parameter (autograd.grad: nothing is written into
    .grad, so calls on copies of one module share no mutable tensor)."""
    x = x.clone().requires_grad_()
    state = {k: v.clone().requires_grad_() for k, v in state.items()}
    out, hidden, final = module(x, state=state, step_offset=1, return_state=True)
    leaves = [x, *state.values(), *module.parameters()]
    grads = torch.autograd.grad((out * cot).sum(), leaves)
    hidden = hidden if isinstance(hidden, tuple) else (hidden,)
    return [out.detach(), *(h.detach() for h in hidden), *(v.detach() for v in final.values()), *grads]


@pytest.mark.skipif(ON_GPU, reason="the interpreter's launch path (CPU); on a GPU the compiled kernels launch")
def test_concurrent_calls_equal_single_threaded_calls():
    jobs = [(_build(cls, backend, seed), f"{cls.__name__}[{backend}] #{seed}")
            for seed in range(2) for cls, backend in CASES]
    alone = [_call(*built) for built, _ in jobs]
    filters_before = list(warnings.filters)

    results, errors = [None] * len(jobs), []
    start = threading.Barrier(THREADS)

    def worker(k):
        start.wait()  # every thread starts its first call at the same moment
        for i in range(k, len(jobs), THREADS):
            module, x, state, cot = jobs[i][0]
            try:
                results[i] = _call(copy.deepcopy(module), x, state, cot)
            except Exception as e:  # noqa: BLE001 (reported below with the job's name, then the test fails)
                errors.append(f"{jobs[i][1]}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, "concurrent calls failed:\n" + "\n".join(errors)
    for (_, name), want, got in zip(jobs, alone, results):
        for j, (w, g) in enumerate(zip(want, got)):
            # the same deterministic computation on the same values: bitwise equal, or a launch read another's state
            assert torch.equal(g, w), f"{name}: result {j} differs from the single-threaded call"
    assert list(warnings.filters) == filters_before, "a forward left the process's warning filters changed"


def test_concurrent_native_calls_leave_warning_filters_alone():
    """The torch backend's native path, many calls from several threads (fast, so the threads overlap often):
    every result equals the single-threaded one and the process's warning filters end as they began. A per-call
    warnings.catch_warnings (what the native call used to do) races here: a thread that enters while another
    holds a modified filter list restores that list on exit, and its filter stays for good."""
    calls = 150
    jobs = [_build(cls, "torch", seed) for seed in range(THREADS) for cls in (tnn.LSTM, tnn.MomentumLSTM)]
    with torch.no_grad():
        alone = [m(x, state=st, return_state=True)[0] for m, x, st, _ in jobs]
    filters_before = list(warnings.filters)
    mismatches = []
    start = threading.Barrier(THREADS)

    def worker(k):
        start.wait()
        with torch.no_grad():
            for _ in range(calls):
                for i in range(k, len(jobs), THREADS):
                    module, x, state, _ = jobs[i]
                    if not torch.equal(module(x, state=state, return_state=True)[0], alone[i]):
                        mismatches.append(i)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not mismatches, f"concurrent native calls differ from single-threaded ones (jobs {sorted(set(mismatches))})"
    assert list(warnings.filters) == filters_before, "concurrent forwards left the process's warning filters changed"
