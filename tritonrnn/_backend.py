"""Backend selection shared by the functional API, the modules and the optimizers.

One place decides where a call runs (STYLE.md: "the functional layer chooses the backend"):
- "triton": the Triton kernels. On CUDA tensors they compile for the device; on CPU tensors they run
  only under Triton's interpreter, which must be switched on (TRITON_INTERPRET=1) before
  `tritonrnn.kernels` is first imported, because `triton.jit` reads it when a kernel is defined.
- "torch" (called "foreach" by the optimizers): plain torch ops, any device.
- "auto": Triton on CUDA tensors, the interpreter on CPU tensors when TRITON_INTERPRET=1, else torch.
The environment variable TRITONRNN_BACKEND overrides "auto" (never an explicit choice).
"""
from __future__ import annotations

import functools
import importlib
import os

import torch

from . import kernels as _kernels  # the package only (no triton): its modules load on first use

ENV_OVERRIDE = "TRITONRNN_BACKEND"


# torch.compile cannot trace importlib: functions marked with assume_constant_result run eagerly while
# dynamo traces and their (bool) result enters the graph as a constant.
_constant_result = getattr(getattr(torch, "compiler", None), "assume_constant_result", lambda fn: fn)


@_constant_result
def has_triton() -> bool:
    """True when the `triton` package imports (it is absent on macOS/Windows CPU installs). Asked only when
    a Triton backend could be chosen, so `import tritonrnn` never imports triton."""
    return _has_triton()


@functools.lru_cache(maxsize=None)
def _has_triton() -> bool:
    try:
        importlib.import_module("triton")
    except ImportError:
        return False
    return True


@_constant_result
def _import(name: str) -> bool:
    importlib.import_module(name)
    return True


def kernel_module(name: str):
    """The module tritonrnn.kernels.`name` (e.g. "scan"), imported on first use, also under torch.compile.
    Read as an attribute of the package: dynamo snapshots sys.modules at its first read in a trace."""
    _import(f"tritonrnn.kernels.{name}")
    return getattr(_kernels, name)


def interpreting() -> bool:
    """True when Triton's interpreter is switched on for this process."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(backend: str, device: torch.device, *, torch_name: str = "torch", name: str = "backend") -> str:
    """Map a user's backend choice to "triton" or `torch_name` for tensors on `device`.

    Raises ValueError for an unknown choice and RuntimeError when "triton" is asked for but cannot run.
    """
    choices = ("auto", "triton", torch_name)
    if not isinstance(backend, str) or backend not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {backend!r}")
    if backend == "auto":
        override = os.environ.get(ENV_OVERRIDE, "").strip()
        if override:
            if override not in choices:
                raise ValueError(f"environment variable {ENV_OVERRIDE} must be one of {choices}, got {override!r}")
            backend = override
    if backend == "auto":
        if has_triton() and (device.type == "cuda" or (device.type == "cpu" and interpreting())):
            return "triton"
        return torch_name
    if backend == "triton":
        if not has_triton():
            raise RuntimeError(f"{name}='triton' needs the `triton` package, which is not installed; use {name}='{torch_name}'")
        if device.type == "cpu" and not interpreting():
            raise RuntimeError(
                f"{name}='triton' on CPU tensors runs Triton's interpreter: set TRITON_INTERPRET=1 before "
                f"tritonrnn.kernels is imported, or use {name}='{torch_name}'"
            )
        if device.type not in ("cpu", "cuda"):
            raise RuntimeError(f"{name}='triton' supports CUDA tensors (and CPU under the interpreter), got device {device}")
    return backend
