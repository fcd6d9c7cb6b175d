"""Plumbing shared by the kernel launchers (no kernels here, so the AOT scan of kernels/_aot.py skips it)."""
from __future__ import annotations

import contextlib

import torch

# Custom ops return no None (torch.library): an output a call does not produce is this empty fp32 tensor.
NOTHING = (0,)


def nothing(ref: torch.Tensor) -> torch.Tensor:
    return ref.new_empty(NOTHING, dtype=torch.float32)


def backward_follows(*tensors) -> bool:
    """Whether a backward can follow the op about to run, decided by its entry point: below autograd (inside
    a custom op or Function.forward) grad mode is off, so evaluation can skip saving activations."""
    return torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in tensors)


def device_guard(device: torch.device):
    """Launch on `device` (triton launches on the current CUDA device, not on the tensors')."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
