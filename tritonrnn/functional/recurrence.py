"""The nonlinear recurrence of the LSTM and RNN cores (SPEC §1.1) on a precomputed drive, and two LSTM
cores whose input dynamics run inside the same loop: NesterovLSTM (SPEC §1.3) and the momentum / restart
drive of SPEC §1.2 (fused instead of a separate scan).

    z_t = a_t + W_hh h_{t-1} + b_hh
    LSTM: i, f, g, o = σ(z_i), σ(z_f), tanh(z_g), σ(z_o) (nn.LSTM row order of W_hh);
          c_t = f⊙c_{t-1} + i⊙g;  h_t = o⊙tanh(c_t)
    RNN:  h_t = tanh(z_t) or relu(z_t)

a is the output of the input dynamics (SPEC §1.2: u, or the momentum/Adam scan of u), [B, T, G·H] in
logical order with any strides; a transposed time-major view ([T, B, G·H] contiguous, .transpose(0, 1))
is read in place, and the output h then is time-major too, so `h.transpose(0, 1)` is contiguous.

Backends (tritonrnn._backend.resolve_backend):
- "triton": the fused persistent kernels of tritonrnn.kernels.recurrence (forward and backward, fp32 state
  and accumulation for fp32/bf16/fp16 inputs, bitwise deterministic).
- "torch": a differentiable step loop below, the correctness fallback; also the only path for float64.
Final states h_T, c_T come back in a's dtype, as nn.LSTM returns h_n, c_n (the kernels keep them fp32
inside); the carried drive states (a_T of NesterovLSTM, v_T of the momentum drive) are momentum states and
come back fp32 like the scans' states (tritonrnn.functional.scan).
"""
from __future__ import annotations

import torch

from .._backend import kernel_module, resolve_backend
from .._validate import FLOAT_DTYPES, check_float, check_int, check_shape, check_tensor
from . import steploop as _steploop

__all__ = ["lstm_recurrence", "rnn_recurrence", "indrnn_recurrence", "nesterov_lstm_recurrence",
           "momentum_lstm_recurrence"]

# float64 runs on the torch path only (the kernels accumulate in fp32); it exists for gradcheck.
_DTYPES = FLOAT_DTYPES + (torch.float64,)
NONLINEARITIES = ("tanh", "relu", "modrelu")


def lstm_recurrence(a, weight_hh, bias_hh=None, h0=None, c0=None, *, backend="auto"):
    """SPEC §1.1 LSTM core. a: [B, T, 4H]; weight_hh: [4H, H]; bias_hh: [4H] or None; h0, c0: [B, H] or
    None (zeros). Returns (h [B, T, H] in a's dtype and memory layout, h_T [B, H], c_T [B, H] in a's dtype).
    """
    H = _check_core(a, "a", weight_hh, bias_hh, 4)
    h0 = _check_state(h0, "h0", a, H)
    c0 = _check_state(c0, "c0", a, H)
    path = _backend(backend, a, "a")
    B, T, _ = a.shape
    if T * H == 0:
        return _empty_output(a, H), _initial(h0, a, H, a.dtype), _initial(c0, a, H, a.dtype)
    if path == "triton":
        return _kernels().lstm_recurrence(a, weight_hh, bias_hh, h0, c0, _time_major(a))
    return _step_loop(a, weight_hh, bias_hh, h0, c0, None, core="lstm", dynamics="plain")


def rnn_recurrence(a, weight_hh, bias_hh=None, h0=None, *, nonlinearity="tanh", backend="auto"):
    """SPEC §1.1 RNN core (nn.RNN's `nonlinearity`). a: [B, T, H]; weight_hh: [H, H]; bias_hh: [H] or
    None; h0: [B, H] or None. Returns (h [B, T, H] in a's dtype and memory layout, h_T [B, H] in a's dtype).
    nonlinearity="modrelu" is the orthogonal RNN core (DTRIV; weight_hh = U orthogonal): z_t = a_t + U h_{t-1},
    h_t = sign(z_t)·relu(|z_t| + b) with b = bias_hh the modReLU bias (None: b = 0, h_t = z_t).
    """
    if not isinstance(nonlinearity, str) or nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
    H = _check_core(a, "a", weight_hh, bias_hh, 1)
    return _single_state_core(a, weight_hh, bias_hh, h0, H, backend, f"rnn_{nonlinearity}",
                              lambda h0_: _kernels().rnn_recurrence(a, weight_hh, bias_hh, h0_, nonlinearity,
                                                                    _time_major(a)))


def indrnn_recurrence(a, weight_hh, bias_hh=None, h0=None, *, backend="auto"):
    """IndRNN core (Li et al. 2018): h_t = relu(a_t + w ⊙ h_{t-1} + b_hh), every unit its own recurrence.
    a: [B, T, H]; weight_hh: w [H]; bias_hh: [H] or None; h0: [B, H] or None. Returns (h [B, T, H] in a's
    dtype and memory layout, h_T [B, H] in a's dtype). Clipping |w| ≤ w_max is the caller's (the module's)."""
    H = _check_core(a, "a", weight_hh, bias_hh, 1, per_unit=True)
    return _single_state_core(a, weight_hh, bias_hh, h0, H, backend, "indrnn",
                              lambda h0_: kernel_module("indrnn").indrnn_recurrence(a, weight_hh, bias_hh, h0_,
                                                                                    _time_major(a)))


def _single_state_core(a, weight_hh, bias_hh, h0, H, backend, core, launch):
    """The body of the cores that carry h only (RNN, orthogonal, IndRNN) on checked a and weights: the h0
    check, the empty case, then `launch(h0)` (the kernel) or the torch step loop. Returns (h, h_T)."""
    h0 = _check_state(h0, "h0", a, H)
    path = _backend(backend, a, "a")
    B, T, _ = a.shape
    if T * H == 0:
        return _empty_output(a, H), _initial(h0, a, H, a.dtype)
    if path == "triton":
        return launch(h0)
    out, h_T, _ = _step_loop(a, weight_hh, bias_hh, h0, None, None, core=core, dynamics="plain")
    return out, h_T


def nesterov_lstm_recurrence(u, weight_hh, bias_hh=None, h0=None, c0=None, a0=None, *, s=1.0, restart=2,
                             step_offset=0, backend="auto"):
    """SPEC §1.3 NesterovLSTM core, with the momentum inside the recurrence:

        a_t = (W_hh h_{t-1} + b_hh) − s u_t;  z_t = a_t + μ_t (a_t − a_{t-1});  LSTM update on z_t,
        μ_t = (k mod F)/((k mod F)+3), k = step_offset + t, F = `restart`; a_{-1} = a0 (zeros if None).

    u: [B, T, 4H] the input drive W_ih x_t + b_ih; h0, c0: [B, H]; a0: [B, 4H]. Returns
    (h [B, T, H] in u's dtype and memory layout, h_T, c_T [B, H] in u's dtype, a_T [B, 4H] fp32)."""
    restart = check_int(restart, "restart", low=1)
    return _carried_lstm("nesterov", u, weight_hh, bias_hh, h0, c0, a0, "a0", mu=None, s=s, restart=restart,
                         step_offset=step_offset, backend=backend)


def momentum_lstm_recurrence(u, weight_hh, bias_hh=None, h0=None, c0=None, v0=None, *, mu=0.6, s=0.6, restart=None,
                             step_offset=0, backend="auto"):
    """The LSTM core with the momentum / restart input dynamics of SPEC §1.2 computed inside the loop
    (the same result as momentum_scan followed by lstm_recurrence, without the [B, T, 4H] round trip):

        v_t = λ_t v_{t-1} + s u_t;  z_t = v_t + W_hh h_{t-1} + b_hh;  LSTM update on z_t,
        λ_t = `mu`, or with `restart` = F the schedule (k mod F)/((k mod F)+3), k = step_offset + t.

    u: [B, T, 4H] the input drive W_ih x_t + b_ih; h0, c0: [B, H]; v0: [B, 4H]. Returns
    (h [B, T, H] in u's dtype and memory layout, h_T, c_T [B, H] in u's dtype, v_T [B, 4H] fp32)."""
    mu = check_float(mu, "mu", low=0.0, high=1.0, high_open=True)
    if restart is not None:
        restart = check_int(restart, "restart", low=1)
    return _carried_lstm("momentum", u, weight_hh, bias_hh, h0, c0, v0, "v0", mu=mu, s=s, restart=restart,
                         step_offset=step_offset, backend=backend)


def _carried_lstm(dynamics, u, weight_hh, bias_hh, h0, c0, carried0, carried_name, *, mu, s, restart, step_offset,
                  backend):
    """The shared body of the LSTM recurrences that carry a drive state (a for Nesterov, v for momentum):
    checks, the empty case, then the fused kernel or the torch step loop. λ_t is `mu`, or the restart
    schedule of step step_offset + t when `restart` is given."""
    H = _check_core(u, "u", weight_hh, bias_hh, 4)
    h0 = _check_state(h0, "h0", u, H)
    c0 = _check_state(c0, "c0", u, H)
    carried0 = _check_state(carried0, carried_name, u, 4 * H)
    s = check_float(s, "s")
    step_offset = check_int(step_offset, "step_offset", low=0)
    path = _backend(backend, u, "u")
    B, T, _ = u.shape
    if T * H == 0:
        return (_empty_output(u, H), _initial(h0, u, H, u.dtype), _initial(c0, u, H, u.dtype),
                _initial(carried0, u, 4 * H, _state_dtype(u)))
    if path == "triton":
        kernels = _kernels()
        if dynamics == "nesterov":
            return kernels.nesterov_lstm_recurrence(u, weight_hh, bias_hh, h0, c0, carried0, s, restart, step_offset,
                                                    _time_major(u))
        return kernels.momentum_lstm_recurrence(u, weight_hh, bias_hh, h0, c0, carried0, mu, s, restart, step_offset,
                                                _time_major(u))
    return _step_loop(u, weight_hh, bias_hh, h0, c0, carried0, core="lstm", dynamics=dynamics, mu=mu, s=s,
                      restart=restart, step_offset=step_offset)


# ------------------------------------------------------------------------------------------ torch path
def _step_loop(a, weight_hh, bias_hh, h0, c0, carried0, *, core, dynamics, mu=None, s=None, restart=None,
               step_offset=0):
    """The torch path: functional.steploop's one op over the time steps of a [B, T, G·H] (SPEC §1.1-1.3, the
    reference's math with a hand-written backward), fp32 state. `carried0` is the family's carried state (v for
    momentum, a for Nesterov). Returns (h [B, T, H] in a's layout and dtype, h_T, c_T (None for the RNN core)
    in a's dtype), plus the carried state (fp32) when the family has one."""
    H = weight_hh.shape[-1]  # [G·H, H] matrices; IndRNN's w is [H]
    dtype = _state_dtype(a)
    h0 = _initial(h0, a, H, dtype) if h0 is None else h0
    c0 = (_initial(c0, a, H, dtype) if c0 is None else c0) if core == "lstm" else None
    carried = {"momentum": "v", "nesterov": "a"}.get(dynamics)
    out, h_T, c_T, final = _steploop.step_loop(
        a.transpose(0, 1), None, None, weight_hh, bias_hh, h0, c0, carried0 if carried == "v" else None, None,
        carried0 if carried == "a" else None, core=core, dynamics=dynamics, mu=mu, s=s, restart=restart,
        step_offset=step_offset)
    h = out.to(a.dtype).transpose(0, 1)
    result = (h if _time_major(a) else h.contiguous(), h_T.to(a.dtype), None if c_T is None else c_T.to(a.dtype))
    return result + (final[carried],) if carried else result


def _empty_output(a, H):
    B, T, _ = a.shape
    if _time_major(a):
        return a.new_zeros(T, B, H).transpose(0, 1)
    return a.new_zeros(B, T, H)


def _time_major(a) -> bool:
    """Whether a is laid out time-major ([T, B, C] memory order seen through .transpose(0, 1)); the
    outputs then take the same layout. With B = 1 or T = 1 both layouts are the same memory."""
    return a.shape[0] > 1 and a.shape[1] > 1 and a.stride(0) < a.stride(1)


# ------------------------------------------------------------------------------------------ checks
def _check_core(a, name, weight_hh, bias_hh, G, per_unit=False):
    """Validate the drive and the recurrent parameters; returns H. `per_unit`: weight_hh is IndRNN's w [H]."""
    check_tensor(a, name, ndim=3, dtypes=_DTYPES)
    check_tensor(weight_hh, "weight_hh", ndim=1 if per_unit else 2, dtypes=_DTYPES, dtype=a.dtype, device=a.device)
    H = weight_hh.shape[-1]
    check_shape(weight_hh, "weight_hh", (H,) if per_unit else (G * H, H))
    if a.shape[2] != G * H:
        raise ValueError(f"{name} must have {G}·H = {G * H} channels in its last dimension (weight_hh is "
                         f"{tuple(weight_hh.shape)}), got shape {tuple(a.shape)}")
    if bias_hh is not None:
        check_tensor(bias_hh, "bias_hh", ndim=1, dtypes=_DTYPES, dtype=a.dtype, device=a.device)
        check_shape(bias_hh, "bias_hh", (G * H,))
    return H


def _check_state(x, name, a, width):
    if x is None:
        return None
    check_tensor(x, name, ndim=2, dtypes=_DTYPES, device=a.device)
    return check_shape(x, name, (a.shape[0], width))


def _backend(backend, a, name):
    path = resolve_backend(backend, a.device)
    if a.dtype == torch.float64 and path == "triton":
        if backend == "triton":
            raise TypeError(f"{name} must have dtype in {[str(d) for d in FLOAT_DTYPES]} for backend='triton' "
                            "(the kernels accumulate in fp32); float64 runs with backend='torch'")
        return "torch"  # "auto" picks the path that supports the dtype
    if a.shape[0] == 0:
        # An empty batch gives a kernel nothing to launch; the torch step loop runs it (no work) on the autograd
        # graph of every input, so the parameters get their (zero) gradients as nn.LSTM's do for B = 0.
        return "torch"
    return path


def _state_dtype(a):
    return torch.promote_types(a.dtype, torch.float32)


def _initial(state, a, width, dtype):
    """The state entering the loop, as `dtype` (a copy, so a T = 0 call never aliases its argument)."""
    if state is None:
        return torch.zeros(a.shape[0], width, dtype=dtype, device=a.device)
    return state.to(dtype, copy=True)


def _kernels():
    # Imported on first use: tritonrnn imports without triton (_backend.resolve_backend checked it exists).
    return kernel_module("recurrence")  # importlib is untraceable under torch.compile
