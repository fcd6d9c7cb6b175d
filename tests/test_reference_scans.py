"""The scan references (tritonrnn.reference.scans) against closed forms of SPEC §1.2, and the decomposed
Adam oracle of tests/test_functional_scan.py against reference.adam_scan."""
from __future__ import annotations

import pytest
import torch

from tests.test_functional_scan import adam_decomposed
from tritonrnn.reference import scans as ref
from tritonrnn.schedules import restart_momentum


def _u(B=2, T=11, C=3, seed=0):
    return torch.randn(B, T, C, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_constant_momentum_is_a_discounted_sum():
    # v_t = μ^{t+1} v_0 + s Σ_{k≤t} μ^{t-k} u_k
    u, v0, mu, s = _u(), torch.randn(2, 3, dtype=torch.float64), 0.7, 0.6
    v, vT = ref.momentum_scan(u, mu, s, v0)
    T = u.shape[1]
    t = torch.arange(T, dtype=torch.float64)
    weights = torch.where(t[:, None] >= t[None, :], mu ** (t[:, None] - t[None, :]), torch.zeros(()))
    expected = s * torch.einsum("tk,bkc->btc", weights, u) + (mu ** (t + 1))[None, :, None] * v0[:, None, :]
    torch.testing.assert_close(v, expected)
    torch.testing.assert_close(vT, expected[:, -1])


@pytest.mark.parametrize("restart,step_offset", [(1, 0), (2, 1), (5, 3)])
def test_restart_momentum_follows_the_schedule(restart, step_offset):
    u = _u()
    v, _ = ref.momentum_scan(u, 0.9, 0.6, restart=restart, step_offset=step_offset)
    prev = torch.zeros(2, 3, dtype=torch.float64)
    for t in range(u.shape[1]):
        lam = restart_momentum(step_offset + t, restart)
        torch.testing.assert_close(v[:, t], lam * prev + 0.6 * u[:, t])
        prev = v[:, t]
    if restart == 1:  # μ_t = 0 for every t: no memory at all
        torch.testing.assert_close(v, 0.6 * u)


def test_adam_output_and_rmsprop_special_case():
    u, v0, m0 = _u(), torch.randn(2, 3, dtype=torch.float64), torch.rand(2, 3, dtype=torch.float64)
    a, vT, mT = ref.adam_scan(u, 0.0, 0.6, 0.9, 1e-8, None, m0)
    m = m0
    for t in range(u.shape[1]):
        m = 0.9 * m + 0.1 * u[:, t] ** 2
        torch.testing.assert_close(a[:, t], 0.6 * u[:, t] / (m.sqrt() + 1e-8))
    torch.testing.assert_close(mT, m)
    torch.testing.assert_close(vT, 0.6 * u[:, -1])
    a2, vT2, mT2 = adam_decomposed(u, u, 0.6, 0.6, 0.1, 1e-8, v0, m0)
    a1, vT1, mT1 = ref.adam_scan(u, 0.6, 0.6, 0.1, 1e-8, v0, m0)
    for x, y in [(a2, a1), (vT2, vT1), (mT2, mT1)]:
        torch.testing.assert_close(x, y)


def test_sqrt0_has_zero_derivative_at_zero():
    m = torch.tensor([0.0, 0.25, 4.0], dtype=torch.float64, requires_grad=True)
    root = ref.sqrt0(m)
    root.sum().backward()
    torch.testing.assert_close(root.detach(), torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64))
    torch.testing.assert_close(m.grad, torch.tensor([0.0, 1.0, 0.25], dtype=torch.float64))


def test_references_keep_dtype_and_fp32_states():
    u = _u().to(torch.bfloat16)
    v, vT = ref.momentum_scan(u, 0.5, 1.0)
    a, vT2, mT = ref.adam_scan(u, 0.5, 1.0, 0.9, 1e-8)
    assert v.dtype == a.dtype == torch.bfloat16
    assert vT.dtype == vT2.dtype == mT.dtype == torch.float32
