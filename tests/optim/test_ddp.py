"""Data parallel training: two processes (gloo, localhost) with DistributedDataParallel, each on half of
the global batch, end with the same parameters as one process on the whole batch (DDP averages the
gradients before `step()`, so every rank applies the same update)."""
from __future__ import annotations


import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tritonrnn.optim import NAG, SRSGD, FrankWolfe

from tests.distributed import free_port
from tests.tolerance import assert_close

STEPS = 6
CASES = [
    (SRSGD, dict(lr=0.1, restart=3, weight_decay=0.01, backend="foreach")),
    (NAG, dict(lr=0.05, momentum=0.9, schedule="restart", restart=4, backend="foreach")),
    (FrankWolfe, dict(lr=0.05, radius=0.5, inner_steps=2, norm="global", backend="triton")),
]


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _batches():
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 5, generator=gen), torch.randn(8, 1, generator=gen)) for _ in range(STEPS)]


def _train(model, make_opt, batches, rank=0, world=1):
    opt = make_opt(model.parameters())
    for x, y in batches:
        n = x.shape[0] // world
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x[rank * n:(rank + 1) * n]), y[rank * n:(rank + 1) * n]).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def _worker(rank, world, port, out_path):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        results = []
        for cls, kwargs in CASES:
            ddp = torch.nn.parallel.DistributedDataParallel(_model())
            results.append(_train(ddp, lambda ps: cls(ps, **kwargs), _batches(), rank, world))
        if rank == 0:
            torch.save(results, out_path)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_two_process_ddp_matches_one_process(tmp_path):
    pytest.importorskip("triton")
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    distributed = torch.load(out)
    for (cls, kwargs), got in zip(CASES, distributed):
        want = _train(_model(), lambda ps: cls(ps, **kwargs), _batches())
        assert any(not torch.equal(a, p.detach()) for a, p in zip(got, _model().parameters()))  # it trained
        for a, b in zip(got, want):
            assert_close(a, b, torch.float32, steps=STEPS, scale=1.0, msg=f"{cls.__name__}")
