"""Momentum schedules from the papers, shared by the cells, the optimizers and the references."""
from __future__ import annotations

import math

import torch


def restart_momentum(t: int, restart: int) -> float:
    """μ_t = (t mod F) / ((t mod F) + 3): scheduled-restart momentum (SPEC §1.2 restart family, §2.1).

    For F = 2: 0, 1/4, 0, 1/4, ...; for F = 5: 0, .25, .4, .5, .571, 0, ...
    Also for a float64 tensor `t` (the optimizers' counters): the result is then a float64 tensor.
    """
    k = t % restart
    return k / (k + 3.0)


def sutskever_momentum(t: int, mu_max: float) -> float:
    """μ_t = min(1 − 2^(−1−log2(⌊t/250⌋+1)), μ_max): Sutskever et al. (2013), eq. 5 (SPEC §2.2).

    `t` may be an integer tensor (the optimizers' counters, issue 17): the result is then a float64 tensor."""
    if isinstance(t, torch.Tensor):
        return torch.clamp(1.0 - 2.0 ** (-1.0 - torch.log2((t // 250 + 1).double())), max=mu_max)
    return min(1.0 - 2.0 ** (-1.0 - math.log2(t // 250 + 1)), mu_max)
