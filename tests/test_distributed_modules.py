"""Data-parallel training of the modules: a MomentumLSTM (+ Linear head on the last h) trained in two
processes (gloo, localhost), each on half of the global batch, ends with the parameters of one process
trained on the whole batch. DistributedDataParallel averages the gradients before `step()`, and the loss
is a mean, so the averaged gradient is the full-batch gradient up to fp32 summation order.

Tolerance (tests.tolerance, fp32): every gradient entry is an fp32 sum over the batch and time
(B·T terms) whose order differs between one process and two; STEPS optimizer steps carry that error
forward, so n = STEPS·B·T accumulated steps. Training on a rank's half batch without the average (the
failure this test is for) moves the parameters by 2e-2 to 2e-1, far outside rtol = 4·eps32·n ≈ 9e-5
(measured DDP vs one process: <= 6e-7).

FSDP2 (`torch.distributed.fsdp.fully_shard`) runs on CPU with gloo in torch 2.13: forward and backward of the
sharded MomentumLSTM work; its parameters and gradients are DTensors sharded along dim 0, and the optimizers
step each rank's local shard (Frank-Wolfe all-reduces its p=2 norms over the sharded mesh dimensions).
"""
from __future__ import annotations


import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import tritonrnn
from tritonrnn.optim import SRSGD, FrankWolfe

from tests.distributed import free_port
from tests.tolerance import assert_close

IN, H, T, B = 3, 8, 6, 8
STEPS = 4
WORLD = 2
# (optimizer, its arguments, the module's backend); the optimizers keep their default backend ("auto":
# the Triton kernels under the interpreter, which conftest turns on, and which the spawned ranks inherit).
CASES = {
    "srsgd-torch": (SRSGD, dict(lr=0.1, restart=3, weight_decay=0.01), "torch"),
    "frank_wolfe-torch": (FrankWolfe, dict(lr=0.05, radius=0.5, inner_steps=2), "torch"),
    "srsgd-triton": (SRSGD, dict(lr=0.1, restart=3), "triton"),
}

needs_gloo = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


class Net(torch.nn.Module):
    def __init__(self, backend):
        super().__init__()
        torch.manual_seed(0)
        self.rnn = tritonrnn.MomentumLSTM(IN, H, backend=backend)
        self.head = torch.nn.Linear(H, 1)

    def forward(self, x):
        output, _ = self.rnn(x)
        return self.head(output[-1])


def _batches():
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(T, B, IN, generator=gen), torch.randn(B, 1, generator=gen)) for _ in range(STEPS)]


def _train(model, make_opt, rank=0, world=1):
    opt = make_opt(model.parameters())
    n = B // world
    for x, y in _batches():
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x[:, rank * n:(rank + 1) * n]), y[rank * n:(rank + 1) * n]).backward()
        opt.step()
    # full_tensor() gathers an FSDP2 (DTensor) parameter's shards: a collective every rank calls.
    return [(p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone() for p in model.parameters()]


def _single_process(case):
    cls, kwargs, backend = {**CASES, **FSDP_CASES}[case]
    return _train(Net(backend), lambda ps: cls(ps, **kwargs))


def _init(rank, port):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)


def _ddp_worker(rank, port, out_path):
    _init(rank, port)
    try:
        results = {}
        for case, (cls, kwargs, backend) in CASES.items():
            ddp = torch.nn.parallel.DistributedDataParallel(Net(backend))
            results[case] = _train(ddp, lambda ps: cls(ps, **kwargs), rank, WORLD)
        if rank == 0:
            torch.save(results, out_path)
    finally:
        dist.destroy_process_group()


def _check(got, want, label):
    initial = [p.detach() for p in Net("torch").parameters()]
    assert len(got) == len(want) == len(initial)
    assert any(not torch.equal(a, p) for a, p in zip(got, initial)), f"{label}: nothing trained"
    for a, b in zip(got, want):
        assert_close(a, b, torch.float32, steps=STEPS * B * T, scale=1.0, msg=label)


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    pytest.importorskip("triton")
    out = tmp_path_factory.mktemp("ddp") / "ddp.pt"
    mp.spawn(_ddp_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return torch.load(out)


@needs_gloo
@pytest.mark.parametrize("case", list(CASES))
def test_ddp_two_processes_match_one_process(ddp_results, case):
    _check(ddp_results[case], _single_process(case), case)


# ------------------------------------------------------------------------------------------ FSDP2
# The optimizers' Triton step (default here) and their foreach step (the CPU default outside the tests).
FSDP_CASES = {
    "srsgd-torch": CASES["srsgd-torch"],
    "frank_wolfe-torch": CASES["frank_wolfe-torch"],
    "srsgd-foreach-torch": (SRSGD, dict(lr=0.1, restart=3, weight_decay=0.01, backend="foreach"), "torch"),
}


def _fsdp_worker(rank, port, out_path):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    _init(rank, port)
    try:
        mesh = init_device_mesh("cpu", (WORLD,))
        results = {}
        for case, (cls, kwargs, backend) in FSDP_CASES.items():
            model = Net(backend)
            fully_shard(model.rnn, mesh=mesh)
            fully_shard(model, mesh=mesh)
            assert all(isinstance(p, DTensor) for p in model.parameters())  # really sharded
            results[case] = _train(model, lambda ps: cls(ps, **kwargs), rank, WORLD)
        if rank == 0:
            torch.save(results, out_path)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def fsdp_results(tmp_path_factory):
    pytest.importorskip("triton")
    out = tmp_path_factory.mktemp("fsdp") / "fsdp.pt"
    mp.spawn(_fsdp_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return torch.load(out)


@needs_gloo
@pytest.mark.parametrize("case", list(FSDP_CASES))
def test_fsdp2_two_processes_match_one_process(fsdp_results, case):
    """fully_shard (FSDP2) shards every parameter along dim 0 over the two ranks; gradients are
    reduce-scattered (averaged), so the same bound as DDP applies. Frank-Wolfe's p=2 step needs the norm of
    the whole tensor, not of a shard: the case fails if the optimizer normalises per shard."""
    _check(fsdp_results[case], _single_process(case), f"FSDP2 {case}")
