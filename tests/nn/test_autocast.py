"""Modules under torch.autocast (CPU, bfloat16): they run, backpropagate, and stay within bfloat16's
tolerance of the fp32 result (the state and the recurrence's accumulation stay fp32)."""
import pytest
import torch

from tests.nn.common import FAMILIES, family_id
from tests.tolerance import tolerance


@pytest.mark.parametrize("entry", FAMILIES, ids=family_id)
def test_autocast_bfloat16_follows_fp32(entry):
    cls, _, hyper = entry
    torch.manual_seed(0)
    T = 6
    mod = cls(3, 4, **hyper, backend="torch")
    x = torch.randn(T, 2, 3)
    ref, _ = mod(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = mod(x)
    out.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in mod.parameters())
    rtol, atol = tolerance(torch.bfloat16, T, scale=1.0)
    torch.testing.assert_close(out.float(), ref, rtol=rtol, atol=atol)
