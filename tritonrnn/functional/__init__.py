"""The functional API (STYLE.md layer 2): torch-style functions that validate their inputs once, choose
the backend (tritonrnn._backend) and call the Triton kernels or the torch path.

Data flows one way: tritonrnn.nn → tritonrnn.functional → tritonrnn.kernels.
Layout convention: sequence tensors are [B, T, C] in logical order with arbitrary strides (a transposed
time-major view is fine); outputs keep the input's memory layout (torch.empty_like).
"""
from .layers import indrnn_layer, lstm_layer, rnn_layer
from .recurrence import (indrnn_recurrence, lstm_recurrence, momentum_lstm_recurrence, nesterov_lstm_recurrence,
                         rnn_recurrence)
from .scan import adam_scan, momentum_scan, rmsprop_scan

__all__ = ["momentum_scan", "adam_scan", "rmsprop_scan", "lstm_recurrence", "rnn_recurrence",
           "nesterov_lstm_recurrence", "momentum_lstm_recurrence", "indrnn_recurrence", "lstm_layer", "rnn_layer",
           "indrnn_layer"]
