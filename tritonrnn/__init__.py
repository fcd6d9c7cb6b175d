"""tritonrnn: Triton kernels for momentum-family recurrent networks and the optimizers that train them.

`import tritonrnn` works without a GPU and without triton; the kernels (`tritonrnn.kernels`) are imported
only when a Triton backend is chosen. Modules and optimizers are loaded on first access.
"""
from __future__ import annotations

import importlib

from ._version import __version__

_NN = ["LSTM", "MomentumLSTM", "SRLSTM", "AdamLSTM", "RMSPropLSTM", "NesterovLSTM",
       "RNN", "MomentumRNN", "SRRNN", "AdamRNN", "RMSPropRNN"]
_CELLS = [name + "Cell" for name in _NN]
_CORES = [prefix + core for core in ("OrthogonalRNN", "IndRNN") for prefix in ("", "Momentum", "SR", "Adam", "RMSProp")]
_OPTIM = ["SRSGD", "NAG", "FrankWolfe"]
_LAZY = {**{n: "tritonrnn.nn" for n in _NN + _CELLS + _CORES}, **{n: "tritonrnn.optim" for n in _OPTIM}}
_SUBMODULES = {"functional", "reference", "schedules", "nn", "optim", "tasks", "init"}

__all__ = ["__version__", *_NN, *_CELLS, *_CORES, *_OPTIM, *sorted(_SUBMODULES)]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"tritonrnn.{name}")
    raise AttributeError(f"module 'tritonrnn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
