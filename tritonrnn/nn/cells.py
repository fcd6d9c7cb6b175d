"""Single-step cells mirroring nn.LSTMCell / nn.RNNCell (SPEC §1.5): parameters weight_ih, weight_hh,
bias_ih, bias_hh with nn.LSTMCell's names, shapes, gate order and initialisation.

`LSTMCell` and `RNNCell` are exact drop-ins: `forward(input, hx=None)` returns (h', c') or h'.
The momentum-family cells take and return their momentum state explicitly:

    (h1, c1), state1 = cell(x_t, (h0, c0), state0, step=t)        LSTM family
    h1, state1 = cell(x_t, h0, state0, step=t)                     RNN family

`state` is a dict from the family's names ("v", "m" or "a", see tritonrnn.nn.modules) to (B, G·H)
tensors ((G·H,) for unbatched input), fp32; None or a missing name means zeros. `step` is the global
time index t of this step; the restart families (SRLSTMCell, SRRNNCell, NesterovLSTMCell) read μ_t from it.
Each call is one step of tritonrnn.functional.layers.
"""
from __future__ import annotations

import math

import torch

from .._validate import check_int, check_tensor
from ..functional.layers import DEFAULTS, check_hyper, lstm_layer, rnn_layer
from ..reference.cells import HYPER_NAMES
from .modules import _check_backend, check_hidden, check_momentum_state

__all__ = ["LSTMCell", "MomentumLSTMCell", "SRLSTMCell", "AdamLSTMCell", "RMSPropLSTMCell", "NesterovLSTMCell",
           "RNNCell", "MomentumRNNCell", "SRRNNCell", "AdamRNNCell", "RMSPropRNNCell"]


class _CellBase(torch.nn.Module):
    dynamics = "plain"
    _is_lstm = True

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None, *,
                 backend="auto", **hyper):
        super().__init__()
        self.input_size = check_int(input_size, "input_size", low=1)
        self.hidden_size = check_int(hidden_size, "hidden_size", low=1)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.bias, self.nonlinearity = bool(bias), nonlinearity
        self.backend = _check_backend(backend)
        for name, value in check_hyper(self.dynamics, **hyper).items():
            setattr(self, name, value)
        G = 4 if self._is_lstm else 1
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = torch.nn.Parameter(torch.empty(G * hidden_size, input_size, **factory))
        self.weight_hh = torch.nn.Parameter(torch.empty(G * hidden_size, hidden_size, **factory))
        if bias:
            self.bias_ih = torch.nn.Parameter(torch.empty(G * hidden_size, **factory))
            self.bias_hh = torch.nn.Parameter(torch.empty(G * hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            torch.nn.init.uniform_(weight, -bound, bound)

    def hyper_parameters(self) -> dict:
        return {name: getattr(self, name) for name in HYPER_NAMES[self.dynamics]}

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if not self._is_lstm and self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        for name, value in self.hyper_parameters().items():
            s += f", {name}={value}"
        return s + f", backend={self.backend!r}"

    def _step(self, input, hx, state, step):
        """One step through the functional layer (T = 1): returns (h, c or None, state dict)."""
        check_tensor(input, "input", ndim=(1, 2), dtypes=None)
        if input.dtype != self.weight_ih.dtype:
            raise TypeError(f"input must have the parameters' dtype {self.weight_ih.dtype}, got {input.dtype}")
        if input.device != self.weight_ih.device:
            raise ValueError(f"input is on {input.device} but the parameters are on {self.weight_ih.device}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"input must have {self.input_size} features (input_size), got {input.shape[-1]}")
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        B = x.shape[0]
        H, G = self.hidden_size, 4 if self._is_lstm else 1

        def lead(width):
            return (B, width) if batched else (width,)

        h0 = c0 = None
        if hx is not None:
            if self._is_lstm:
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise TypeError("hx must be a tuple (h_0, c_0) for the LSTM family")
                h0 = check_hidden(hx[0], "hx[0] (h_0)", lead(H), x)
                c0 = check_hidden(hx[1], "hx[1] (c_0)", lead(H), x)
            else:
                h0 = check_hidden(hx, "hx", lead(H), x)
            if not batched:
                h0, c0 = h0.unsqueeze(0), (None if c0 is None else c0.unsqueeze(0))
        state = check_momentum_state(state, self.dynamics, lead(G * H), x)
        if not batched:
            state = {k: v.unsqueeze(0) for k, v in state.items()}
        common = dict(dynamics=self.dynamics, **self.hyper_parameters(), h0=h0, state=state,
                      step_offset=check_int(step, "step", low=0), backend=self.backend)
        params = (x[:, None], self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        if self._is_lstm:
            _, h, c, st = lstm_layer(*params, c0=c0, **common)
        else:
            _, h, st = rnn_layer(*params, nonlinearity=self.nonlinearity, **common)
            c = None
        if not batched:
            h, c = h[0], (None if c is None else c[0])
            st = {k: v[0] for k, v in st.items()}
        return h, c, st

    def forward(self, input, hx=None, state=None, *, step=0):
        """One step; see the module docstring for the return value."""
        h, c, st = self._step(input, hx, state, step)
        return ((h, c) if self._is_lstm else h), st


class _PlainCellMixin:
    def forward(self, input, hx=None):
        """Exactly nn.LSTMCell / nn.RNNCell: returns (h', c') or h'."""
        h, c, _ = self._step(input, hx, None, 0)
        return (h, c) if self._is_lstm else h


_D = DEFAULTS


class LSTMCell(_PlainCellMixin, _CellBase):
    """torch.nn.LSTMCell on tritonrnn's backends."""
    dynamics = "plain"

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *, backend="auto"):
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype, backend=backend)


class MomentumLSTMCell(_CellBase):
    """One step of MomentumLSTM (SPEC §1.2)."""
    dynamics = "momentum"

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *, mu=_D["momentum"]["mu"],
                 s=_D["momentum"]["s"], backend="auto"):
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype, backend=backend, mu=mu, s=s)


class SRLSTMCell(_CellBase):
    """One step of SRLSTM (SPEC §1.2 restart family); μ_t from `step`."""
    dynamics = "restart"

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *, s=_D["restart"]["s"],
                 restart=_D["restart"]["restart"], backend="auto"):
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype, backend=backend, s=s,
                         restart=restart)


class AdamLSTMCell(_CellBase):
    """One step of AdamLSTM (SPEC §1.2)."""
    dynamics = "adam"

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *, mu=_D["adam"]["mu"],
                 s=_D["adam"]["s"], beta=_D["adam"]["beta"], eps=_D["adam"]["eps"], backend="auto"):
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype, backend=backend, mu=mu, s=s,
                         beta=beta, eps=eps)


class RMSPropLSTMCell(_CellBase):
    """One step of RMSPropLSTM (SPEC §1.2)."""
    dynamics = "rmsprop"

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *, s=_D["rmsprop"]["s"],
                 beta=_D["rmsprop"]["beta"], eps=_D["rmsprop"]["eps"], backend="auto"):
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype, backend=backend, s=s,
                         beta=beta, eps=eps)


class NesterovLSTMCell(_CellBase):
    """One step of NesterovLSTM (SPEC §1.3); μ_t from `step`, carried state "a"."""
    dynamics = "nesterov"

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *, s=_D["nesterov"]["s"],
                 restart=_D["nesterov"]["restart"], backend="auto"):
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype, backend=backend, s=s,
                         restart=restart)


class _RNNCellBase(_CellBase):
    _is_lstm = False


class RNNCell(_PlainCellMixin, _RNNCellBase):
    """torch.nn.RNNCell on tritonrnn's backends."""
    dynamics = "plain"

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None, *,
                 backend="auto"):
        super().__init__(input_size, hidden_size, bias, nonlinearity, device=device, dtype=dtype, backend=backend)


class MomentumRNNCell(_RNNCellBase):
    """One step of MomentumRNN (SPEC §1.2)."""
    dynamics = "momentum"

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None, *,
                 mu=_D["momentum"]["mu"], s=_D["momentum"]["s"], backend="auto"):
        super().__init__(input_size, hidden_size, bias, nonlinearity, device=device, dtype=dtype, backend=backend,
                         mu=mu, s=s)


class SRRNNCell(_RNNCellBase):
    """One step of SRRNN (SPEC §1.2 restart family); μ_t from `step`."""
    dynamics = "restart"

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None, *,
                 s=_D["restart"]["s"], restart=_D["restart"]["restart"], backend="auto"):
        super().__init__(input_size, hidden_size, bias, nonlinearity, device=device, dtype=dtype, backend=backend,
                         s=s, restart=restart)


class AdamRNNCell(_RNNCellBase):
    """One step of AdamRNN (SPEC §1.2)."""
    dynamics = "adam"

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None, *,
                 mu=_D["adam"]["mu"], s=_D["adam"]["s"], beta=_D["adam"]["beta"], eps=_D["adam"]["eps"],
                 backend="auto"):
        super().__init__(input_size, hidden_size, bias, nonlinearity, device=device, dtype=dtype, backend=backend,
                         mu=mu, s=s, beta=beta, eps=eps)


class RMSPropRNNCell(_RNNCellBase):
    """One step of RMSPropRNN (SPEC §1.2)."""
    dynamics = "rmsprop"

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None, *,
                 s=_D["rmsprop"]["s"], beta=_D["rmsprop"]["beta"], eps=_D["rmsprop"]["eps"], backend="auto"):
        super().__init__(input_size, hidden_size, bias, nonlinearity, device=device, dtype=dtype, backend=backend,
                         s=s, beta=beta, eps=eps)
