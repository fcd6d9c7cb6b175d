"""Plumbing shared by the kernel launchers (no kernels here, so the AOT scan of kernels/_aot.py skips it)."""
from __future__ import annotations

import re
import threading

import torch

# Custom ops return no None (torch.library): an output a call does not produce is this empty fp32 tensor.
NOTHING = (0,)


def slug(name: str) -> str:
    """A device name as a class label: "NVIDIA H200" -> "nvidia-h200" (the results files' device slug). The key
    of both measured dispatch tables: tritonrnn.dispatch (layer paths) and kernels/recurrence/dispatch.py (tiers)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()[:40]


def nothing(ref: torch.Tensor) -> torch.Tensor:
    return ref.new_empty(NOTHING, dtype=torch.float32)


def backward_follows(*tensors) -> bool:
    """Whether a backward can follow the op about to run, decided by its entry point: below autograd (inside
    a custom op or Function.forward) grad mode is off, so evaluation can skip saving activations."""
    return torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in tensors)


# Launches on CPU tensors run in Triton's interpreter, whose state is process-global: one builder holds the grid
# index and dimensions of the launch in progress, and triton.language is patched for its duration and restored
# after. Two launches at once (two threads) read each other's program ids or find the language unpatched
# (issue 14: "x >= grid_dim[0]" from concurrent modules), so interpreted launches take turns. Reentrant: a
# launcher may call another inside its guard. Compiled launches on a GPU keep no such state and are not locked.
_INTERPRETER_LOCK = threading.RLock()


def device_guard(device: torch.device):
    """The context every kernel launch runs in: on CUDA, `device` made current (triton launches on the current
    CUDA device, not on the tensors'); elsewhere (the interpreter) the lock that makes launches take turns."""
    return torch.cuda.device(device) if device.type == "cuda" else _INTERPRETER_LOCK


def refuse_double_backward(op: str) -> None:
    """Called first in every kernel backward. Under create_graph=True the backward runs with grad mode on and
    its result would be differentiated again; the kernel backward is not differentiable (its saved activations
    are non-differentiable outputs), so a second-order gradient would silently miss terms. Say so instead."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"double backward is not supported by the Triton kernel {op}: a backward with create_graph=True "
            "(higher-order gradients, e.g. Hessian-vector products or gradient penalties) needs backend='torch'")
