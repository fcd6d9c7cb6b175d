"""Recompute-in-backward for long sequences (issue #7 item 4): a module's call split into time segments,
each under torch.utils.checkpoint, carrying hx, the momentum `state` and `step_offset` across segments.

    output, hidden = checkpoint_sequence(lstm, x, segment=1000)
    output, hidden, state = checkpoint_sequence(lstm, x, hx, segment=1000, state=state, step_offset=k,
                                                return_state=True)

A training step then keeps, besides the output itself, one segment's activations at a time plus the
per-segment boundary states (hx and `state`, O(B·G·H) each): O(T/segment · state + segment · activations)
instead of O(T · activations), for one extra forward pass. The segments are the truncated-BPTT split of
tritonrnn.nn.modules (hx, `state`, `step_offset` carried), with the gradient flowing across the boundaries,
so outputs and gradients equal one full call (to float64 rounding on the torch path; within the dtype's
tolerance elsewhere, where the Triton scans' chunking sees different boundaries). Dropout between layers
draws its masks per segment (the recompute replays each segment's RNG state), so in training with
dropout > 0 the result is an equally distributed but different draw from the full call's. Bidirectional
modules cannot be split (the reverse direction starts from the end of the whole sequence).

Measured on the CPU (perf/memory.py; B=16, H=64, T=2000, segments of 100): a training step of LSTM /
MomentumLSTM on the torch backend peaks 123 / 129 MB plain and 39 / 41 MB segmented (what is left is
O(T) in the output, its gradient and the loss); AdamLSTM's Python step loop 358 MB and 216 MB: the
non-reentrant checkpoint drops the saved tensors but keeps autograd's graph, and that loop's graph holds
~90 KB per step of other state.
"""
from __future__ import annotations

import torch
from torch.nn.utils.rnn import PackedSequence
from torch.utils.checkpoint import checkpoint

from .._validate import check_int

__all__ = ["checkpoint_sequence"]


def _segment(module, x, hx, state, step_offset):
    return module(x, hx, state=state, step_offset=step_offset, return_state=True)


def checkpoint_sequence(module, input, hx=None, *, segment, state=None, step_offset=0, return_state=False):
    """`module(input, hx, state=state, step_offset=step_offset, return_state=return_state)` for any
    tritonrnn.nn recurrent module (LSTM or RNN family, batch_first or not, batched or unbatched input),
    run `segment` steps at a time with activations recomputed in the backward pass."""
    if isinstance(input, PackedSequence):
        raise TypeError("checkpoint_sequence takes a padded tensor, not a PackedSequence (its rows end at "
                        "different steps, which the segment boundaries would have to follow)")
    if getattr(module, "bidirectional", False):
        raise ValueError("checkpoint_sequence cannot split a bidirectional module: its reverse direction "
                         "starts from the end of the whole sequence")
    segment = check_int(segment, "segment", low=1)
    step_offset = check_int(step_offset, "step_offset", low=0)
    if not isinstance(input, torch.Tensor) or input.dim() not in (2, 3):
        raise ValueError("input must be a tensor (T, in), (T, B, in) or, with batch_first, (B, T, in)")
    time_dim = 1 if (input.dim() == 3 and module.batch_first) else 0
    T = input.shape[time_dim]
    if T <= segment:  # one segment: nothing to gain from recomputation
        return module(input, hx, state=state, step_offset=step_offset, return_state=return_state)
    outputs = []
    for t0 in range(0, T, segment):
        chunk = input.narrow(time_dim, t0, min(segment, T - t0))
        # Non-reentrant checkpoint: nested hx / state structures pass through, and gradients reach
        # parameters, input, hx and state without the inputs having to require grad.
        out, hx, state = checkpoint(_segment, module, chunk, hx, state, step_offset + t0, use_reentrant=False)
        outputs.append(out)
    output = torch.cat(outputs, dim=time_dim)
    return (output, hx, state) if return_state else (output, hx)
