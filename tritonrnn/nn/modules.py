"""Drop-in multi-layer modules of SPEC §1.5: nn.LSTM / nn.RNN's constructor, parameters and forward contract,
with the input dynamics of SPEC §1.2-1.3. Every layer and direction is one call of
tritonrnn.functional.layers (module → functional → kernels).

Momentum states (SPEC §1.5: not part of hx, so `output, (h_n, c_n) = lstm(x)` keeps working):

    output, (h_n, c_n), state = lstm(x, hx, state=state, step_offset=k, return_state=True)

`state` is a dict from the family's state names to tensors shaped like h_n but G·H wide:
(num_layers * num_directions, B, G·H), or (num_layers * num_directions, G·H) for unbatched input,
dtype float32 (float64 for float64 input):
    MomentumLSTM/SRLSTM/...RNN: {"v"}  the momentum of the input drive (pre-activation space, b_ih inside)
    AdamLSTM/AdamRNN:           {"v", "m"}
    RMSPropLSTM/RMSPropRNN:     {"m"}
    NesterovLSTM:               {"a"}  the a_t of SPEC §1.3
    LSTM/RNN:                   {}     (nothing to carry)
A missing name starts at zero, as does `state=None`. `step_offset` is the global index of the first
step, so restart schedules (SRLSTM, NesterovLSTM) continue where the previous chunk stopped. Truncated
BPTT is therefore: keep `hx` and `state` from one chunk (detached), pass them with
`step_offset = steps seen so far` to the next. The layout is that of the layers: entry
`layer * num_directions + direction`, the reverse direction's state being that of its own (reversed) time.
"""
from __future__ import annotations

import math
import numbers
import warnings

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .._validate import check_int, check_tensor
from ..functional.layers import DEFAULTS, STATE_NAMES, check_hyper, lstm_layer, rnn_layer
from ..reference.cells import HYPER_NAMES

__all__ = ["LSTM", "MomentumLSTM", "SRLSTM", "AdamLSTM", "RMSPropLSTM", "NesterovLSTM",
           "RNN", "MomentumRNN", "SRRNN", "AdamRNN", "RMSPropRNN"]

BACKENDS = ("auto", "triton", "torch")


def _check_backend(backend):
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def check_hidden(t, name, shape, like):
    """hx entries: the input's dtype and device (as nn.LSTM requires), the given shape."""
    check_tensor(t, name, dtypes=None, dtype=like.dtype, device=like.device)
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    return t


def _stack(tensors):
    """torch.stack, as a view for one tensor (one layer, one direction): under torch.compile a stack is a copy
    kernel that inductor compiles in C++, seconds of the first call (issue #17); the view costs nothing."""
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


def check_momentum_state(state, dynamics, shape, like):
    """The `state` dict of the module docstring: known names, fp32 (fp64 for fp64 input), the given shape."""
    if state is None:
        return {}
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict from {STATE_NAMES[dynamics]} to tensors, got {type(state).__name__}")
    sdt = torch.promote_types(like.dtype, torch.float32)
    for name, t in state.items():
        if name not in STATE_NAMES[dynamics]:
            raise ValueError(f"state has the key {name!r}; this module carries {STATE_NAMES[dynamics] or 'no state'}")
        check_tensor(t, f"state[{name!r}]", dtypes=None, dtype=sdt, device=like.device)
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"state[{name!r}] must have shape {tuple(shape)}, got {tuple(t.shape)}")
    return dict(state)


class _RecurrentBase(torch.nn.Module):
    """nn.LSTM / nn.RNN's structure; subclasses fix `dynamics` and the core ("lstm" or "rnn")."""

    dynamics = "plain"
    _is_lstm = True
    _nonlinearities = ("tanh", "relu")

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, nonlinearity="tanh", device=None, dtype=None, *,
                 backend="auto", **hyper):
        super().__init__()
        input_size = check_int(input_size, "input_size", low=1)
        hidden_size = check_int(hidden_size, "hidden_size", low=1)
        num_layers = check_int(num_layers, "num_layers", low=1)
        proj_size = check_int(proj_size, "proj_size", low=0)
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout={dropout} and num_layers=1: dropout applies between layers only (as nn.LSTM), "
                          "so it has no effect here")
        if proj_size and not self._is_lstm:
            raise ValueError("proj_size is only supported by the LSTM family")
        if proj_size >= hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size ({hidden_size}), got {proj_size}")
        if nonlinearity not in self._nonlinearities:
            raise ValueError(f"nonlinearity must be one of {self._nonlinearities}, got {nonlinearity!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bool(bias), bool(batch_first), float(dropout)
        self.bidirectional, self.proj_size, self.nonlinearity = bool(bidirectional), proj_size, nonlinearity
        self.backend = _check_backend(backend)
        for name, value in check_hyper(self.dynamics, **hyper).items():
            setattr(self, name, value)  # plain attributes: they may be changed between calls (SPEC §1.2)

        G = 4 if self._is_lstm else 1
        out_size = proj_size or hidden_size
        D = 2 if bidirectional else 1
        factory = {"device": device, "dtype": dtype}
        self._flat_weights_names = []
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else out_size * D
            for suffix in ("", "_reverse")[:D]:
                for kind, shape in self._parameter_shapes(layer_in, G * hidden_size, out_size):
                    name = f"{kind}_l{layer}{suffix}"
                    self.register_parameter(name, torch.nn.Parameter(torch.empty(shape, **factory)))
                    self._flat_weights_names.append(name)
        self.reset_parameters()

    def _parameter_shapes(self, layer_in, gate_width, out_size):
        """(kind, shape) of one layer and direction's parameters, in nn.LSTM's order."""
        shapes = [("weight_ih", (gate_width, layer_in)), ("weight_hh", (gate_width, out_size))]
        if self.bias:
            shapes += [("bias_ih", (gate_width,)), ("bias_hh", (gate_width,))]
        if self.proj_size:
            shapes.append(("weight_hr", (self.proj_size, self.hidden_size)))
        return shapes

    def _run_layer(self, seq, key, c0, common):
        """One layer and direction through tritonrnn.functional: (out [B, T, ·], h_T, c_T or None, state_T)."""
        params = [getattr(self, f"weight_ih_{key}"), self._recurrent_weight(key), getattr(self, f"bias_ih_{key}", None),
                  getattr(self, f"bias_hh_{key}", None)]
        if self._is_lstm:
            return lstm_layer(seq, *params, getattr(self, f"weight_hr_{key}", None), c0=c0, **common)
        out, h, st = rnn_layer(seq, *params, nonlinearity=self.nonlinearity, **common)
        return out, h, None, st

    def _recurrent_weight(self, key):
        """The recurrent weight one layer and direction's forward reads (the cores transform their parameter)."""
        return getattr(self, f"weight_hh_{key}")

    def _between_layers(self, layer, layer_input, lengths):
        """What happens to a layer's output [T, B, ·] before the next layer reads it (training mode aware)."""
        if self.dropout > 0 and self.training:
            layer_input = F.dropout(layer_input, self.dropout, training=True)  # between layers only
        return layer_input

    def reset_parameters(self) -> None:
        """nn.LSTM's initialisation: every parameter uniform in ±1/√hidden_size."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            torch.nn.init.uniform_(weight, -bound, bound)

    def flatten_parameters(self) -> None:
        """A no-op kept for nn.LSTM compatibility: parameters are passed to each call as they are, so
        there is no cuDNN weight buffer to compact."""

    @property
    def all_weights(self):
        """Per layer and direction, the parameters in nn.LSTM's order (as nn.LSTM.all_weights)."""
        D = 2 if self.bidirectional else 1
        per = len(self._flat_weights_names) // (self.num_layers * D)
        names = self._flat_weights_names
        return [[getattr(self, n) for n in names[i:i + per]] for i in range(0, len(names), per)]

    def hyper_parameters(self) -> dict:
        """The family's hyper-parameters as currently set (SPEC §1.2 keyword names)."""
        return {name: getattr(self, name) for name in HYPER_NAMES[self.dynamics]}

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self._is_lstm and self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        for key, default in (("bias", True), ("batch_first", False), ("dropout", 0.0), ("bidirectional", False),
                             ("proj_size", 0)):
            if getattr(self, key) != default:
                s += f", {key}={getattr(self, key)}"
        for name, value in self.hyper_parameters().items():
            s += f", {name}={value}"
        return s + f", backend={self.backend!r}"

    def forward(self, input, hx=None, *, state=None, step_offset=0, return_state=False):
        """nn.LSTM's forward (SPEC §1.5); `state`, `step_offset`, `return_state`: the module docstring.

        Returns (output, (h_n, c_n)) for the LSTM family, (output, h_n) for the RNN family, with the final
        momentum state dict appended when return_state=True."""
        packed = isinstance(input, PackedSequence)
        if packed:
            x, lengths = pad_packed_sequence(input)  # time-major, the caller's batch order
            batched = True
        else:
            check_tensor(input, "input", ndim=(2, 3), dtypes=None)
            batched = input.dim() == 3
            x = input if batched else input.unsqueeze(1)
            if batched and self.batch_first:
                x = x.transpose(0, 1)
            lengths = None
        w = self.weight_ih_l0
        if x.dtype != w.dtype:
            raise TypeError(f"input must have the parameters' dtype {w.dtype}, got {x.dtype}")
        if x.device != w.device:
            raise ValueError(f"input is on {x.device} but the parameters are on {w.device}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input must have {self.input_size} features (input_size), got {x.shape[-1]}")
        T, B = x.shape[:2]
        D = 2 if self.bidirectional else 1
        LD = self.num_layers * D
        G = 4 if self._is_lstm else 1
        out_size = self.proj_size or self.hidden_size

        def lead(width):  # the shape of one hx / state entry as the caller sees it
            return (LD, B, width) if batched else (LD, width)

        h0 = c0 = None
        if hx is not None:
            if self._is_lstm:
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise TypeError("hx must be a tuple (h_0, c_0) for the LSTM family")
                h0 = check_hidden(hx[0], "hx[0] (h_0)", lead(out_size), x)
                c0 = check_hidden(hx[1], "hx[1] (c_0)", lead(self.hidden_size), x)
            else:
                h0 = check_hidden(hx, "hx", lead(out_size), x)
            if not batched:
                h0, c0 = h0.unsqueeze(1), (None if c0 is None else c0.unsqueeze(1))
        state = check_momentum_state(state, self.dynamics, lead(G * self.hidden_size), x)
        if not batched:
            state = {k: v.unsqueeze(1) for k, v in state.items()}
        step_offset = check_int(step_offset, "step_offset", low=0)
        hyper = self.hyper_parameters()

        h_n, c_n, final = [], [], {name: [] for name in STATE_NAMES[self.dynamics]}
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            seq = layer_input.transpose(0, 1)  # [B, T, ·] view, tritonrnn.functional's convention
            for d in range(D):
                index = layer * D + d
                key = f"l{layer}{'_reverse' if d else ''}"
                common = dict(dynamics=self.dynamics, **hyper, h0=None if h0 is None else h0[index],
                              state={k: v[index] for k, v in state.items()}, step_offset=step_offset,
                              lengths=lengths, reverse=d == 1, backend=self.backend)
                out, h, c, st = self._run_layer(seq, key, None if c0 is None else c0[index], common)
                if self._is_lstm:
                    c_n.append(c)
                outputs.append(out.transpose(0, 1))  # back to time-major (contiguous) memory
                h_n.append(h)
                for name in final:
                    final[name].append(st[name])
            layer_input = torch.cat(outputs, dim=2) if D > 1 else outputs[0]
            if layer < self.num_layers - 1:
                layer_input = self._between_layers(layer, layer_input, lengths)

        output, h_n = layer_input, _stack(h_n)
        c_n = _stack(c_n) if self._is_lstm else None
        final = {name: _stack(values) for name, values in final.items()}
        if packed:
            output = _repack(output, lengths, input)
        elif not batched:
            output, h_n = output.squeeze(1), h_n.squeeze(1)
            c_n = None if c_n is None else c_n.squeeze(1)
            final = {k: v.squeeze(1) for k, v in final.items()}
        elif self.batch_first:
            output = output.transpose(0, 1)
        hidden = (h_n, c_n) if self._is_lstm else h_n
        return (output, hidden, final) if return_state else (output, hidden)


def _repack(output, lengths, like: PackedSequence) -> PackedSequence:
    """Pack a padded time-major output in the input PackedSequence's own order (nn.LSTM returns that)."""
    order = like.sorted_indices
    if order is not None:
        output = output.index_select(1, order.to(output.device))
        lengths = lengths.index_select(0, order.to(lengths.device))
    data = pack_padded_sequence(output, lengths, enforce_sorted=True).data
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


# ------------------------------------------------------------------------------------------ LSTM family
_D = DEFAULTS


class LSTM(_RecurrentBase):
    """torch.nn.LSTM on tritonrnn's backends (SPEC §1.2, plain family)."""
    dynamics = "plain"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None, *, backend="auto"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size,
                         device=device, dtype=dtype, backend=backend)


class MomentumLSTM(_RecurrentBase):
    """MomentumLSTM (SPEC §1.2): v_t = μ v_{t-1} + s (W_ih x_t + b_ih) drives the LSTM gates."""
    dynamics = "momentum"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None, *, mu=_D["momentum"]["mu"],
                 s=_D["momentum"]["s"], backend="auto"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size,
                         device=device, dtype=dtype, backend=backend, mu=mu, s=s)


class SRLSTM(_RecurrentBase):
    """SRLSTM (SPEC §1.2 restart family): momentum with μ_t = (t mod F)/((t mod F)+3), F = `restart`."""
    dynamics = "restart"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None, *, s=_D["restart"]["s"],
                 restart=_D["restart"]["restart"], backend="auto"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size,
                         device=device, dtype=dtype, backend=backend, s=s, restart=restart)


class AdamLSTM(_RecurrentBase):
    """AdamLSTM (SPEC §1.2): gates driven by v_t / (√m_t + ε) (paper eq. 15)."""
    dynamics = "adam"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None, *, mu=_D["adam"]["mu"],
                 s=_D["adam"]["s"], beta=_D["adam"]["beta"], eps=_D["adam"]["eps"], backend="auto"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size,
                         device=device, dtype=dtype, backend=backend, mu=mu, s=s, beta=beta, eps=eps)


class RMSPropLSTM(_RecurrentBase):
    """RMSPropLSTM (SPEC §1.2): AdamLSTM with μ = 0."""
    dynamics = "rmsprop"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None, *, s=_D["rmsprop"]["s"],
                 beta=_D["rmsprop"]["beta"], eps=_D["rmsprop"]["eps"], backend="auto"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size,
                         device=device, dtype=dtype, backend=backend, s=s, beta=beta, eps=eps)


class NesterovLSTM(_RecurrentBase):
    """The reference code's Nesterov-restart SRLSTM (SPEC §1.3; the paper's MNIST/TIMIT SRLSTM rows)."""
    dynamics = "nesterov"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None, *, s=_D["nesterov"]["s"],
                 restart=_D["nesterov"]["restart"], backend="auto"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size,
                         device=device, dtype=dtype, backend=backend, s=s, restart=restart)


# ------------------------------------------------------------------------------------------ RNN family
class _RNNBase(_RecurrentBase):
    _is_lstm = False


class RNN(_RNNBase):
    """torch.nn.RNN (tanh or relu) on tritonrnn's backends (SPEC §1.2, plain family)."""
    dynamics = "plain"

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None, *, backend="auto"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         nonlinearity=nonlinearity, device=device, dtype=dtype, backend=backend)


class MomentumRNN(_RNNBase):
    """MomentumRNN (SPEC §1.2): h_t = σ(v_t + W_hh h_{t-1} + b_hh), v_t = μ v_{t-1} + s (W_ih x_t + b_ih)."""
    dynamics = "momentum"

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None, *, mu=_D["momentum"]["mu"],
                 s=_D["momentum"]["s"], backend="auto"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         nonlinearity=nonlinearity, device=device, dtype=dtype, backend=backend, mu=mu, s=s)


class SRRNN(_RNNBase):
    """SRRNN (SPEC §1.2 restart family)."""
    dynamics = "restart"

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None, *, s=_D["restart"]["s"],
                 restart=_D["restart"]["restart"], backend="auto"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         nonlinearity=nonlinearity, device=device, dtype=dtype, backend=backend, s=s,
                         restart=restart)


class AdamRNN(_RNNBase):
    """AdamRNN (SPEC §1.2)."""
    dynamics = "adam"

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None, *, mu=_D["adam"]["mu"],
                 s=_D["adam"]["s"], beta=_D["adam"]["beta"], eps=_D["adam"]["eps"], backend="auto"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         nonlinearity=nonlinearity, device=device, dtype=dtype, backend=backend, mu=mu, s=s,
                         beta=beta, eps=eps)


class RMSPropRNN(_RNNBase):
    """RMSPropRNN (SPEC §1.2): AdamRNN with μ = 0."""
    dynamics = "rmsprop"

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None, *, s=_D["rmsprop"]["s"],
                 beta=_D["rmsprop"]["beta"], eps=_D["rmsprop"]["eps"], backend="auto"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         nonlinearity=nonlinearity, device=device, dtype=dtype, backend=backend, s=s, beta=beta,
                         eps=eps)
