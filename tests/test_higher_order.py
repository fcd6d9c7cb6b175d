"""Higher-order gradients (issue 14): never a wrong number. On the torch path the native families' second
derivatives are right (gradgradcheck in float64: analytical Hessian-vector products against finite differences of
the gradient); the torch step-loop op's backward (issue 16) and the Triton kernels' backwards are not
differentiable, and a create_graph=True backward through any of them raises a RuntimeError that says so in words."""
import pytest
import torch
from torch.func import functional_call

import tritonrnn.functional as F
import tritonrnn.nn as tnn
from tests.entry_points import MODULES
from tritonrnn.functional.recurrence import indrnn_recurrence
from tritonrnn.reference import STATE_NAMES

T, B, IN, H = 2, 2, 2, 2


@pytest.mark.parametrize("cls", MODULES, ids=lambda c: c.__name__)
def test_second_derivatives_on_the_torch_path(cls):
    """d²/d(input, h0, c0, state, parameters)² of every output, float64, torch backend, on the native commuted
    call (plain / momentum / restart); the step-loop op of the other families refuses double backward."""
    torch.manual_seed(0)
    module = cls(IN, H, backend="torch").double()
    lstm = "LSTM" in cls.__name__
    G = 4 if lstm else 1
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in module.parameters()]
    x = torch.randn(T, B, IN, dtype=torch.float64, requires_grad=True)
    h0 = (torch.randn(1, B, H, dtype=torch.float64) * 0.5).requires_grad_()
    c0 = (torch.randn(1, B, H, dtype=torch.float64) * 0.5).requires_grad_()
    state = [(torch.rand(1, B, G * H, dtype=torch.float64) + (0.1 if n == "m" else 0)).requires_grad_()
             for n in STATE_NAMES[cls.dynamics]]

    def f(x, h0, c0, *rest):
        st = dict(zip(STATE_NAMES[cls.dynamics], rest[:len(state)]))
        weights = dict(zip(names, rest[len(state):]))
        out, hidden, final = functional_call(module, weights, (x, (h0, c0) if lstm else h0),
                                             dict(state=st, step_offset=1, return_state=True))
        hidden = hidden if lstm else (hidden,)
        return (out, *hidden, *final.values())

    if cls.dynamics in ("adam", "rmsprop", "nesterov") or "Orthogonal" in cls.__name__ or "IndRNN" in cls.__name__:
        # the step-loop op (functional.steploop, issue #16): a hand-written backward that refuses in words
        with pytest.raises(RuntimeError, match="double backward is not supported"):
            torch.autograd.gradgradcheck(f, (x, h0, c0, *state, *params), fast_mode=True)
        return
    assert torch.autograd.gradgradcheck(f, (x, h0, c0, *state, *params), fast_mode=True)


@pytest.mark.parametrize("scan", ["adam", "rmsprop", "momentum"])
def test_second_derivatives_of_the_scans_on_the_torch_path(scan):
    torch.manual_seed(0)
    u = torch.randn(B, 3, 4, dtype=torch.float64, requires_grad=True)
    v0 = torch.randn(B, 4, dtype=torch.float64, requires_grad=True)
    m0 = (torch.rand(B, 4, dtype=torch.float64) + 0.1).requires_grad_()
    call = {"adam": lambda u, v0, m0: F.adam_scan(u, 0.6, 0.6, 0.1, 1e-8, v0, m0, backend="torch"),
            "rmsprop": lambda u, v0, m0: F.rmsprop_scan(u, 0.6, 0.9, 1e-8, m0, backend="torch"),
            "momentum": lambda u, v0, m0: F.momentum_scan(u, 0.7, 0.5, v0, restart=3, backend="torch")}[scan]
    assert torch.autograd.gradgradcheck(call, (u, v0, m0), fast_mode=True)


def _triton_calls():
    a4 = lambda: torch.randn(B, 3, 4 * H, requires_grad=True)  # noqa: E731
    a1 = lambda: torch.randn(B, 3, H, requires_grad=True)  # noqa: E731
    w = lambda G: torch.randn(G * H, H, requires_grad=True)  # noqa: E731
    m0 = torch.rand(B, 4 * H)
    return {
        "momentum_scan": lambda: F.momentum_scan(a4(), 0.7, 0.5, backend="triton"),
        "adam_scan": lambda: F.adam_scan(a4(), 0.6, 0.6, 0.1, 1e-8, None, m0, backend="triton"),
        "lstm_recurrence": lambda: F.lstm_recurrence(a4(), w(4), backend="triton"),
        "rnn_recurrence": lambda: F.rnn_recurrence(a1(), w(1), backend="triton"),
        "indrnn_recurrence": lambda: indrnn_recurrence(a1(), torch.rand(H, requires_grad=True), backend="triton"),
        "nesterov_lstm_recurrence": lambda: F.nesterov_lstm_recurrence(a4(), w(4), backend="triton"),
        "momentum_lstm_recurrence": lambda: F.momentum_lstm_recurrence(a4(), w(4), backend="triton"),
        "AdamLSTM": lambda: tnn.AdamLSTM(IN, H, backend="triton")(torch.randn(3, B, IN, requires_grad=True)),
    }


@pytest.mark.parametrize("name", list(_triton_calls()))
def test_triton_double_backward_says_it_is_not_supported(name):
    torch.manual_seed(0)
    outputs = _triton_calls()[name]()
    out = outputs[0]
    inputs = [t for t in out.grad_fn.next_functions if t[0] is not None]
    assert inputs, "the call must be differentiable"
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        leaves = [t for t in _leaves(out)]
        torch.autograd.grad(out.square().sum(), leaves, create_graph=True)


def test_triton_first_order_backward_is_unchanged():
    """The refusal is for create_graph=True only: a plain backward (and retain_graph) still works."""
    a = torch.randn(B, 3, 4 * H, requires_grad=True)
    out, _, _ = F.lstm_recurrence(a, torch.randn(4 * H, H), backend="triton")
    (g,) = torch.autograd.grad(out.square().sum(), a, retain_graph=True)
    assert torch.isfinite(g).all()


def _leaves(t):
    """The leaf tensors requiring grad that t depends on."""
    seen, stack, leaves = set(), [t.grad_fn], []
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):
            leaves.append(fn.variable)
        stack.extend(f for f, _ in fn.next_functions)
    return leaves
