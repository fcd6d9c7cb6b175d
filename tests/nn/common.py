"""Shared tables and helpers of the module tests: every tritonrnn.nn family with the reference's names."""
import torch

import tritonrnn.nn as tnn
from tritonrnn.reference import STATE_NAMES, recurrent_layer, recurrent_network

# The backends the module tests run on. "triton" joins when the recurrence kernels are wired in
# (interpreter tests of the modules belong to the recurrence work).
BACKENDS = ["torch"]

# (module class, dynamics, non-default hyper-parameters that exercise every term)
LSTM_FAMILY = [
    (tnn.LSTM, "plain", {}),
    (tnn.MomentumLSTM, "momentum", dict(mu=0.7, s=0.5)),
    (tnn.SRLSTM, "restart", dict(s=0.6, restart=3)),
    (tnn.AdamLSTM, "adam", dict(mu=0.6, s=0.6, beta=0.1, eps=1e-8)),
    (tnn.RMSPropLSTM, "rmsprop", dict(s=0.6, beta=0.9, eps=1e-8)),
    (tnn.NesterovLSTM, "nesterov", dict(s=1.0, restart=2)),
]
RNN_FAMILY = [
    (tnn.RNN, "plain", {}),
    (tnn.MomentumRNN, "momentum", dict(mu=0.7, s=0.5)),
    (tnn.SRRNN, "restart", dict(s=0.6, restart=3)),
    (tnn.AdamRNN, "adam", dict(mu=0.6, s=0.6, beta=0.1, eps=1e-8)),
    (tnn.RMSPropRNN, "rmsprop", dict(s=0.6, beta=0.9, eps=1e-8)),
]
FAMILIES = LSTM_FAMILY + RNN_FAMILY
CELLS = {cls: getattr(tnn, cls.__name__ + "Cell") for cls, _, _ in FAMILIES}


def family_id(entry):
    return entry[0].__name__


def gates(module):
    return module.weight_ih_l0.shape[0] // module.hidden_size if hasattr(module, "weight_ih_l0") \
        else module.weight_ih.shape[0] // module.hidden_size


def core_of(module):
    if gates(module) == 4:
        return "lstm"
    return f"rnn_{module.nonlinearity}"


def reference(module, x, h0=None, c0=None, state=None, step_offset=0):
    """recurrent_network with the module's parameters, for time-major batched x."""
    return recurrent_network(x, dict(module.named_parameters()), num_layers=module.num_layers,
                             bidirectional=module.bidirectional, core=core_of(module), dynamics=module.dynamics,
                             **module.hyper_parameters(), h0=h0, c0=c0, state=state, step_offset=step_offset)


def reference_cell(cell, x, h0=None, c0=None, state=None, step=0):
    """One step of recurrent_layer with a cell's parameters; x [B, in]."""
    state = state or {}
    out, states = recurrent_layer(x[None], cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh,
                                  core=core_of(cell), dynamics=cell.dynamics, **cell.hyper_parameters(),
                                  h0=h0, c0=c0, step_offset=step, **{f"{k}0": v for k, v in state.items()})
    return states


def random_state(module, B, dtype):
    """hx and momentum state for a module (m >= 0 as a second moment must be)."""
    LD = module.num_layers * (2 if module.bidirectional else 1)
    H = module.hidden_size
    P = getattr(module, "proj_size", 0) or H
    h0 = torch.randn(LD, B, P, dtype=dtype) * 0.5
    c0 = torch.randn(LD, B, H, dtype=dtype) * 0.5 if gates(module) == 4 else None
    sdt = torch.promote_types(dtype, torch.float32)
    state = {name: torch.rand(LD, B, gates(module) * H, dtype=sdt) for name in STATE_NAMES[module.dynamics]}
    return h0, c0, state
