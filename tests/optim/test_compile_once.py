"""Issue 17 item 4: `torch.compile` of an optimizer step loop compiles once.

The group counters (step, k, F, outer_step, NAG's mu) are 0-dim CPU tensors and every scalar a step
derives from them is a tensor op (tritonrnn.optim), so dynamo traces them instead of guarding on their
values; the state is created by `_init_group`, which dynamo runs eagerly while tracing the first step.
Over STEPS steps (SRSGD stages switching F at 30 and 60, NAG restarts, Frank-Wolfe windows of K = 3 with
Adam's bias corrections, a tensor lr halved in place half-way) the step compiles exactly once, with
fullgraph=True (no graph break), and follows an eager twin bitwise (aot_eager runs the same ops and
kernels, only traced), counters included. aot_eager keeps the test to seconds on CPU (inductor's C++
compile costs ~30 s per graph here); what is counted, dynamo's captures, is the same for any backend.
"""
from __future__ import annotations

import pytest
import torch

from torch._dynamo.utils import counters

from tests.optim.common import twin_step
from tritonrnn.optim import NAG, SRSGD, FrankWolfe

pytest.importorskip("triton")

CASES = {
    "SRSGD-stages": lambda ps, lr, b: SRSGD(ps, lr=lr, restart=[(30, 3), (60, 5)], weight_decay=0.01, backend=b),
    "NAG-restart": lambda ps, lr, b: NAG(ps, lr=lr, schedule="restart", restart=4, backend=b),
    "NAG-sutskever": lambda ps, lr, b: NAG(ps, lr=lr, momentum=0.99, schedule="sutskever", backend=b),
    "CM-constant": lambda ps, lr, b: NAG(ps, lr=lr, nesterov=False, backend=b),
    "FrankWolfe-adam": lambda ps, lr, b: FrankWolfe(ps, lr=lr, radius=0.5, inner_steps=3, backend=b),
    "FrankWolfe-inf-sgd": lambda ps, lr, b: FrankWolfe(ps, lr=lr, radius=0.5, inner_steps=2, p="inf", outer="sgd",
                                                       backend=b),
    "FrankWolfe-global": lambda ps, lr, b: FrankWolfe(ps, lr=lr, radius=0.5, inner_steps=2, norm="global", backend=b),
}
COUNTERS = ("step", "k", "F", "outer_step", "mu")


def _loop(name, backend, steps, tensor_lr):
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(7)
    init = [torch.randn(7, generator=g), torch.randn(3, 4, generator=g), torch.randn(2, generator=g)]
    twins = []
    for _ in range(2):
        ps = [torch.nn.Parameter(x.clone()) for x in init]
        lr = torch.tensor(0.125) if tensor_lr else 0.125
        twins.append((ps, lr, CASES[name](ps, lr, backend)))
    (eager_ps, eager_lr, eager), (comp_ps, comp_lr, comp) = twins
    counters.clear()

    @torch.compile(backend="aot_eager", fullgraph=True)
    def step():
        comp.step()

    for t in range(steps):
        if tensor_lr and t == steps // 2:
            eager_lr.fill_(0.0625)
            comp_lr.fill_(0.0625)
        twin_step(eager, eager_ps, step, comp_ps, init, g)
    # Graphs dynamo captured and compiled (a restarted analysis of one frame is not a second compile).
    return eager, comp, counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("backend,steps", [("foreach", 100), ("triton", 12)])
@pytest.mark.parametrize("name", list(CASES))
def test_compiled_step_loop_compiles_once(name, backend, steps):
    """foreach over the target's 100 steps; the Triton path (its custom ops, run by the interpreter at
    ~1000x a GPU's cost) over 12, past the first window restarts and a counter's every guard-relevant
    change but F's stage switch, which the foreach run covers."""
    tensor_lr = name in ("SRSGD-stages", "FrankWolfe-adam")
    eager, comp, compiles = _loop(name, backend, steps, tensor_lr)
    assert compiles == 1
    for a, b in zip(eager.param_groups[0]["params"], comp.param_groups[0]["params"]):
        assert torch.equal(a, b)
    for key in COUNTERS:
        x, y = eager.param_groups[0].get(key), comp.param_groups[0].get(key)
        assert (x is None and y is None) or torch.equal(x, y), key
    for pa, pb in zip(eager.param_groups[0]["params"], comp.param_groups[0]["params"]):
        assert eager.state[pa].keys() == comp.state[pb].keys()
        for k in eager.state[pa]:
            assert torch.equal(eager.state[pa][k], comp.state[pb][k]), k
