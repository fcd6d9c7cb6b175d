"""Bitwise reproducibility.

(a) Two runs of forward + backward of the same module on the same data give identical outputs, final
    states and gradients (torch.equal), on the torch backend and on the Triton backend (the interpreter on
    CPU, tiny shapes).
(b) Training a MomentumLSTM + Linear head with SRSGD or FrankWolfe, checkpointing module and optimizer
    (torch.save into a BytesIO) part-way, loading into fresh objects and continuing equals the
    uninterrupted run bitwise; for Frank-Wolfe the checkpoint falls inside an inner-step window.
"""
import io

import pytest
import torch

import tritonrnn
from tritonrnn.optim import SRSGD, FrankWolfe

# Determinism as a user's process has it: the machine's intra-op thread count, not the suite's one (conftest.py)
pytestmark = pytest.mark.usefixtures("machine_threads")

T, B, IN, H = 5, 2, 3, 4


def _forward_backward(cls, backend):
    """One forward + backward from a fixed seed; returns every output and every gradient."""
    torch.manual_seed(0)
    module = cls(IN, H, backend=backend)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, IN, generator=g).requires_grad_(True)
    h0 = torch.randn(1, B, H, generator=g).requires_grad_(True)
    c0 = torch.randn(1, B, H, generator=g).requires_grad_(True)
    G = 4 * H
    state = {name: torch.rand(1, B, G, generator=g).requires_grad_(True) for name in ("v", "m")
             if name in (("v",) if cls is tritonrnn.MomentumLSTM else ("v", "m"))}
    output, (h_n, c_n), final = module(x, (h0, c0), state=state, step_offset=0, return_state=True)
    results = [output, h_n, c_n, *final.values()]
    w = torch.Generator().manual_seed(2)
    loss = sum((t * torch.randn(t.shape, generator=w)).sum() for t in results)
    loss.backward()
    grads = [x.grad, h0.grad, c0.grad, *(s.grad for s in state.values())]
    grads += [p.grad for _, p in sorted(module.named_parameters())]
    assert all(t is not None for t in grads)
    return [t.detach() for t in results], grads


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("cls", [tritonrnn.MomentumLSTM, tritonrnn.AdamLSTM], ids=lambda c: c.__name__)
def test_forward_backward_bitwise_deterministic(cls, backend):
    if backend == "triton":
        pytest.importorskip("triton")
    first_out, first_grads = _forward_backward(cls, backend)
    second_out, second_grads = _forward_backward(cls, backend)
    assert len(first_out) == len(second_out) and len(first_grads) == len(second_grads)
    for a, b in zip(first_out + first_grads, second_out + second_grads):
        assert torch.equal(a, b)
    # Not vacuous: the gradients are nonzero.
    assert all(g.abs().sum() > 0 for g in first_grads)


# ------------------------------------------------------------------------------------------ checkpoints
STEPS = 6


class Model(torch.nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.rnn = tritonrnn.MomentumLSTM(IN, H, backend="torch")
        self.head = torch.nn.Linear(H, 1)

    def forward(self, x):
        output, _ = self.rnn(x)
        return self.head(output[-1])


def _data():
    g = torch.Generator().manual_seed(123)
    return [(torch.randn(T, B, IN, generator=g), torch.randn(B, 1, generator=g)) for _ in range(STEPS)]


OPTIMIZERS = {
    # restart = 5: the 6th step restarts (after every checkpoint below; a checkpoint taken exactly at a
    # restart would not need the optimizer state, as μ = 0 there).
    "SRSGD": lambda params: SRSGD(params, lr=0.05, restart=5, weight_decay=1e-3, backend="foreach"),
    "FrankWolfe": lambda params: FrankWolfe(params, lr=0.01, radius=0.5, inner_steps=3, backend="foreach"),
}


def _train(model, opt, batches):
    for x, y in batches:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def _snapshot(model):
    return {name: p.detach().clone() for name, p in model.state_dict().items()}


@pytest.mark.parametrize("save_after", [2, 3, 4])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_resume_from_checkpoint_is_bitwise_identical(name, save_after):
    data = _data()

    model = Model(seed=0)
    opt = OPTIMIZERS[name](model.parameters())
    _train(model, opt, data)
    uninterrupted = _snapshot(model)

    model = Model(seed=0)
    opt = OPTIMIZERS[name](model.parameters())
    _train(model, opt, data[:save_after])
    at_checkpoint = _snapshot(model)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buffer)
    if name == "SRSGD":
        assert opt.param_groups[0]["k"] == save_after  # no restart yet: v_prev carries the momentum
    if name == "FrankWolfe":
        # inner_steps = 3: after 2 or 4 steps the checkpoint is inside a window (k = 2 or 1), after 3 at
        # its end (k = 0, one outer Adam update done).
        assert opt.param_groups[0]["k"] == save_after % 3
        assert opt.param_groups[0]["outer_step"] == save_after // 3
    del model, opt

    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    fresh = Model(seed=99)  # different initial weights: the checkpoint must overwrite them
    assert not torch.equal(fresh.rnn.weight_ih_l0, at_checkpoint["rnn.weight_ih_l0"])
    fresh.load_state_dict(checkpoint["model"])
    fresh_opt = OPTIMIZERS[name](fresh.parameters())
    fresh_opt.load_state_dict(checkpoint["optimizer"])
    _train(fresh, fresh_opt, data[save_after:])
    resumed = _snapshot(fresh)

    assert uninterrupted.keys() == resumed.keys()
    for key in uninterrupted:
        assert torch.equal(uninterrupted[key], resumed[key]), key
    # Not vacuous: training after the checkpoint moved the parameters ...
    assert any(not torch.equal(resumed[k], at_checkpoint[k]) for k in resumed)
    # ... and the optimizer state matters: resuming with a fresh optimizer gives another trajectory.
    control = Model(seed=99)
    control.load_state_dict(checkpoint["model"])
    _train(control, OPTIMIZERS[name](control.parameters()), data[save_after:])
    assert any(not torch.equal(uninterrupted[k], v) for k, v in _snapshot(control).items())
