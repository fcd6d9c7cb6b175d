"""Argument checks shared by every public entry point. Each error names the argument it is about."""
from __future__ import annotations

import math
import numbers

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_tensor(x, name: str, *, ndim=None, dtypes=FLOAT_DTYPES, device=None, dtype=None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in allowed:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimensions, got shape {tuple(x.shape)}")
    if dtypes is not None and x.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in {[str(d) for d in dtypes]}, got {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {x.dtype}")
    if device is not None and x.device != torch.device(device):
        raise ValueError(f"{name} is on {x.device} but must be on {device}")
    return x


def check_shape(x: torch.Tensor, name: str, shape) -> torch.Tensor:
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")
    return x


def check_float(value, name: str, *, low=None, high=None, low_open=False, high_open=False) -> float:
    """A finite real number in [low, high] (open ends where asked)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return value


def check_int(value, name: str, *, low=None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def check_eps(value, name: str = "eps") -> float:
    """The ε of v/(√m + ε) (SPEC §1.2 Adam / RMSProp): a finite number no smaller than float32's smallest normal.
    The states are fp32 (and GPUs flush subnormals to zero), so a smaller ε rounds to 0 and a zero input with no
    history gives 0/0 = NaN instead of 0."""
    tiny = torch.finfo(torch.float32).tiny
    value = check_float(value, name, low=0.0, low_open=True)
    if value < tiny:
        raise ValueError(f"{name} must be >= {tiny} (float32's smallest normal: a smaller {name} is 0 in the fp32 "
                         f"state and 0/(0 + {name}) is NaN), got {value}")
    return value
