"""One recurrent layer, one direction, of SPEC §1: the functional core of every tritonrnn.nn module.

    lstm_layer(x, weight_ih, weight_hh, bias_ih=None, bias_hh=None, weight_hr=None, *, dynamics="plain",
               mu=None, s=None, beta=None, eps=None, restart=None, h0=None, c0=None, state=None,
               step_offset=0, lengths=None, reverse=False, backend="auto") -> (output, h_T, c_T, state_T)
    rnn_layer(x, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, nonlinearity="tanh", ...)
        -> (output, h_T, state_T)
    indrnn_layer(x, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, ...) -> (output, h_T, state_T)

The RNN layer's nonlinearity="modrelu" is the orthogonal core of DTRIV (issue #8): z_t = a_t + U h_{t-1}
with U = weight_hh (the caller keeps it orthogonal) and h_t = sign(z_t)·relu(|z_t| + b), b = bias_hh (the
modReLU bias, not an additive one; bias_ih may be None on its own, as DTRIV's input map has no bias).
indrnn_layer is the IndRNN core, h_t = relu(a_t + w ⊙ h_{t-1} + b_hh) with weight_hh = w [H].

x is [B, T, in] in logical order with any strides, the convention of tritonrnn.functional (a transposed
time-major tensor, as the modules pass, is read in place); the output [B, T, P] is a transposed view of
time-major memory, so `output.transpose(0, 1)` is contiguous. Hyper-parameters left None take
the family's SPEC §1.2 defaults (DEFAULTS); the ones a family does not read must stay None.
`state` maps the family's state names (reference.STATE_NAMES: "v" momentum, "m" second moment, "a"
Nesterov) to [B, G·H] tensors in the state dtype (fp32; fp64 for fp64 input); missing names start at
zero. `state_T` holds all of them after the last step. `step_offset` is the global index of the first
step (restart schedules, SPEC §1.2), for truncated-BPTT continuation.
`lengths` (int [B], values in 1..T) makes row b stop after lengths[b] steps, as a PackedSequence does:
its output is zero beyond, its final states are those of its own last step. `reverse=True` runs each row
backwards over its own valid steps (the reverse direction of a bidirectional module, SPEC §1.5); the
output is returned in forward time.

Paths (data flow module → functional → kernels):
- backend "torch", families plain / momentum / restart: the commuted form of SPEC §1.4. The scan runs on
  the raw input plus a bias channel c_t (width in+1), then torch's native LSTM/RNN (oneDNN on CPU, cuDNN on
  GPU) runs with W' = [W_ih, b_ih] and b_ih := 0, so a MomentumLSTM costs about what nn.LSTM does.
  A carried v_0 makes the drive a_t = W' [x̃_t, c_t] + Λ_t v_0 (Λ_t = Π_{k≤t} μ_k), formed row by row
  and run by the identity-native core below (each row reads only its own v_0: a NaN in one row of v_0
  stays in that row, and the memory saved for backward is linear in B).
  Under torch.compile the same code runs inside one custom op per layer and direction
  (tritonrnn::native_layer_fwd/_bwd, below; the native RNN ops do not trace), or _fused where
  COMPILED_NATIVE is False.
- the identity-native core (_identity_native, KERNELS.md §2.6): when the drive a_t [T, B, G·H] does not
  depend on h, the recurrence is a plain LSTM/RNN on a_t, which torch's native cell runs exactly with
  W_ih = I (a constant) and b_ih = 0; the gradient flows to a_t. Adam / RMSProp on it (_drive_native: the
  scan, then this core) is a candidate path ("identity-native"), chosen on CUDA by the dispatcher
  (tritonrnn.dispatch) where a measurement says it is fastest, or forced with `forced_path`; on CPU it is
  not the default (measured slower than the step loop there, KERNELS.md §2.6).
- backend "torch" for the cores without a native form (modReLU, IndRNN), and Adam / RMSProp / Nesterov (under
  torch.compile too): _fused, u = x W_ihᵀ + b_ih as one GEMM, then the whole recurrence with
  its input dynamics as one op with a hand-written backward (functional.steploop, issue #16), so a compiled
  graph holds one node per layer and direction whatever T is (issue #17).
- otherwise (the Triton backend): per time segment, the input
  dynamics via tritonrnn.functional.scan, then the recurrence via tritonrnn.functional.recurrence
  (NesterovLSTM, whose momentum holds the recurrent term, SPEC §1.3, through nesterov_lstm_recurrence).
  Momentum / restart scan the raw input plus the bias channel there too and project afterwards; the
  others scan u = x W_ihᵀ + b_ih, one GEMM over all steps. The recurrence API has no projection, so
  proj_size > 0 outside the native path runs the torch loops at the end of this file.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import warnings

import torch
from torch import _VF

from .. import dispatch as _dispatch
from .._backend import ENV_OVERRIDE, has_triton, resolve_backend
from .._validate import FLOAT_DTYPES, check_eps, check_float, check_int, check_shape, check_tensor
from ..reference.cells import DYNAMICS, HYPER_NAMES, STATE_NAMES, cell_step
from ..schedules import restart_momentum
from . import recurrence as _recurrence
from . import scan as _scan
from . import steploop as _steploop

__all__ = ["lstm_layer", "rnn_layer", "indrnn_layer", "check_hyper", "forced_path", "DEFAULTS", "STATE_NAMES",
           "PATHS"]

# SPEC §1.2 table, "defaults (reference recipes)"; the modules read their keyword defaults from here.
DEFAULTS = {
    "plain": {},
    "momentum": {"mu": 0.6, "s": 0.6},
    "restart": {"s": 0.6, "restart": 2},
    "adam": {"mu": 0.6, "s": 0.6, "beta": 0.1, "eps": 1e-8},
    "rmsprop": {"s": 0.6, "beta": 0.9, "eps": 1e-8},
    "nesterov": {"s": 1.0, "restart": 2},
}

# The dispatcher of backend="auto" on CUDA (KERNELS.md §4: never assume a Triton path is faster). The families
# with an exact cuDNN form (SPEC §1.4: a plain LSTM/RNN on the scanned raw input) stay on cuDNN: the one GPU
# measurement (perf/results/gpu-h200-20261126T0022Z: the Triton LSTM recurrence at 1565.6 μs/sample training on
# an H200 at the paper's shape) is far from any cuDNN figure. Adam / RMSProp / Nesterov (and the orthogonal and
# IndRNN cores, which bypass this table) have no cuDNN form; their torch path is a Python step loop, and they
# use the fused kernels until a measurement of both on a GPU says otherwise.
# A measured dispatch table (tritonrnn.dispatch, generated from perf/results by tritonrnn.perf.dispatch_table)
# overrides these per device class and shape class; without one these are the choices.
AUTO_ON_CUDA = {"plain": "torch", "momentum": "torch", "restart": "torch",
                "adam": "triton", "rmsprop": "triton", "nesterov": "triton"}
# The paths a layer can take: the Triton kernels, the torch backend (native commuted cell or step loop), and
# the identity-native core for the families whose drive does not depend on h (Adam / RMSProp).
PATHS = ("triton", "torch", "identity-native")
_IDENTITY_NATIVE = ("adam", "rmsprop")
# Per context (thread-safe, unlike a module global): a path forced by `forced_path` for benchmarks and tests.
_FORCED = contextvars.ContextVar("tritonrnn_forced_path", default=None)

_DTYPES = FLOAT_DTYPES + (torch.float64,)  # float64 (torch backend) exists for gradcheck
_NATIVE = {"lstm": _VF.lstm, "rnn_tanh": _VF.rnn_tanh, "rnn_relu": _VF.rnn_relu}
# cuDNN warns on every native call that its weight list is not one flattened buffer: here it never can be (the
# weights are built per call, W' = [W_ih, b_ih] or the identity), so the warning says nothing to the user. The
# filter is installed once, at import, for that message raised from this module only (torch attributes a C++
# warning to the Python frame that made the call, _native_call below): a per-call warnings.catch_warnings would
# change process-global state from every forward, which is not thread-safe (issue 14), and a user's own
# nn.LSTM keeps its warning.
warnings.filterwarnings("ignore", message=".*not part of single contiguous chunk of memory",
                        module=r"tritonrnn\.functional\.layers$")


@contextlib.contextmanager
def forced_path(path: str):
    """Within the block, layers of this context run `path` (one of PATHS) wherever it can run them, whatever
    their `backend` says: how perf measures every candidate of the dispatcher through the modules, and how
    tests run the identity-native path on CPU. "identity-native" applies to Adam / RMSProp on the LSTM / RNN
    cores (the others keep their torch path); "triton" needs the kernels to exist for the device."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    token = _FORCED.set(path)
    try:
        yield
    finally:
        _FORCED.reset(token)


def check_hyper(dynamics: str, **hyper) -> dict:
    """Fill a family's SPEC §1.2 defaults and validate: mu, beta in [0, 1), eps > 0, restart an int >= 1.
    A hyper-parameter the family does not read must be None (passing one is a mistake worth reporting)."""
    if dynamics not in DYNAMICS:
        raise ValueError(f"dynamics must be one of {DYNAMICS}, got {dynamics!r}")
    out = {}
    for name, value in hyper.items():
        if name not in HYPER_NAMES[dynamics]:
            if value is not None:
                raise ValueError(f"{name} is not a hyper-parameter of dynamics={dynamics!r} "
                                 f"(it takes {HYPER_NAMES[dynamics] or 'none'})")
            continue
        value = DEFAULTS[dynamics][name] if value is None else value
        if name in ("mu", "beta"):
            value = check_float(value, name, low=0.0, high=1.0, high_open=True)
        elif name == "eps":
            value = check_eps(value, name)
        elif name == "restart":
            value = check_int(value, name, low=1)
        else:
            value = check_float(value, name)
        out[name] = value
    for name in HYPER_NAMES[dynamics]:
        out.setdefault(name, DEFAULTS[dynamics][name])
    return out


def lstm_layer(x, weight_ih, weight_hh, bias_ih=None, bias_hh=None, weight_hr=None, *, dynamics="plain",
               mu=None, s=None, beta=None, eps=None, restart=None, h0=None, c0=None, state=None,
               step_offset=0, lengths=None, reverse=False, backend="auto"):
    """One LSTM-family layer (module docstring). Returns (output [B, T, P], h_T [B, P], c_T [B, H],
    state_T dict), P = weight_hr rows (proj_size) or H."""
    out, h, c, st = _layer("lstm", x, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, dynamics,
                           dict(mu=mu, s=s, beta=beta, eps=eps, restart=restart), h0, c0, state, step_offset,
                           lengths, reverse, backend)
    return out, h, c, st


def rnn_layer(x, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, nonlinearity="tanh", dynamics="plain",
              mu=None, s=None, beta=None, eps=None, restart=None, h0=None, state=None, step_offset=0,
              lengths=None, reverse=False, backend="auto"):
    """One RNN-family layer (module docstring; "modrelu": the orthogonal core, bias_hh its modReLU bias).
    Returns (output [B, T, H], h_T [B, H], state_T dict)."""
    if nonlinearity not in ("tanh", "relu", "modrelu"):
        raise ValueError(f"nonlinearity must be 'tanh', 'relu' or 'modrelu', got {nonlinearity!r}")
    out, h, _, st = _layer(f"rnn_{nonlinearity}", x, weight_ih, weight_hh, bias_ih, bias_hh, None, dynamics,
                           dict(mu=mu, s=s, beta=beta, eps=eps, restart=restart), h0, None, state, step_offset,
                           lengths, reverse, backend)
    return out, h, st


def indrnn_layer(x, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, dynamics="plain", mu=None, s=None,
                 beta=None, eps=None, restart=None, h0=None, state=None, step_offset=0, lengths=None, reverse=False,
                 backend="auto"):
    """One IndRNN layer (module docstring): weight_ih [H, in], weight_hh = w [H], biases [H].
    Returns (output [B, T, H], h_T [B, H], state_T dict)."""
    out, h, _, st = _layer("indrnn", x, weight_ih, weight_hh, bias_ih, bias_hh, None, dynamics,
                           dict(mu=mu, s=s, beta=beta, eps=eps, restart=restart), h0, None, state, step_offset,
                           lengths, reverse, backend)
    return out, h, st


# ------------------------------------------------------------------------------------------ driver
def _layer(core, x, w_ih, w_hh, b_ih, b_hh, w_hr, dynamics, hyper, h0, c0, state, step_offset, lengths,
           reverse, backend):
    if dynamics == "nesterov" and core != "lstm":
        raise ValueError("dynamics='nesterov' is defined for the LSTM core only (SPEC §1.3)")
    hyper = check_hyper(dynamics, **hyper)
    check_tensor(x, "x", ndim=3, dtypes=_DTYPES)
    x = x.transpose(0, 1)  # the paths below walk time-major views [T, B, in]
    T, B, n_in = x.shape
    G = 4 if core == "lstm" else 1
    dev, dt = x.device, x.dtype
    check_tensor(w_ih, "weight_ih", ndim=2, dtypes=None, dtype=dt, device=dev)
    if w_ih.shape[0] % G or w_ih.shape[1] != n_in:
        raise ValueError(f"weight_ih must have shape ({G}*hidden_size, {n_in}), got {tuple(w_ih.shape)}")
    H = w_ih.shape[0] // G
    if w_hr is not None:
        check_tensor(w_hr, "weight_hr", ndim=2, dtypes=None, dtype=dt, device=dev)
        if w_hr.shape[1] != H:
            raise ValueError(f"weight_hr must have shape (proj_size, {H}), got {tuple(w_hr.shape)}")
    P = H if w_hr is None else w_hr.shape[0]
    hh_shape = (H,) if core == "indrnn" else (G * H, P)
    check_shape(check_tensor(w_hh, "weight_hh", ndim=len(hh_shape), dtypes=None, dtype=dt, device=dev), "weight_hh",
                hh_shape)
    if (b_ih is None) != (b_hh is None) and core != "rnn_modrelu":  # modReLU's b stands alone
        raise ValueError("bias_ih and bias_hh must both be given or both be None")
    for name, b in (("bias_ih", b_ih), ("bias_hh", b_hh)):
        if b is not None:
            check_shape(check_tensor(b, name, ndim=1, dtypes=None, dtype=dt, device=dev), name, (G * H,))
    sdt = torch.promote_types(dt, torch.float32)
    h0 = _check_state(h0, "h0", (B, P), dt, dev)
    c0 = _check_state(c0, "c0", (B, H), dt, dev) if core == "lstm" else None
    state = dict(state or {})
    for name in state:
        if name not in STATE_NAMES[dynamics]:
            raise ValueError(f"state has the key {name!r}; dynamics={dynamics!r} carries {STATE_NAMES[dynamics]}")
        state[name] = _check_state(state[name], f"state[{name!r}]", (B, G * H), sdt, dev)
    step_offset = check_int(step_offset, "step_offset", low=0)
    lengths = _check_lengths(lengths, B, T)
    path = resolve_backend(backend, dev)
    if (backend == "auto" and dev.type == "cuda" and not os.environ.get(ENV_OVERRIDE) and path == "triton"
            and core in _NATIVE):  # the cores without a cuDNN form always take the kernels
        path = _dispatch.choose(core, dynamics, dtype=dt, hidden_size=H, device=dev,
                                training=torch.is_grad_enabled()) or AUTO_ON_CUDA[dynamics]
    # dynamo cannot trace ContextVar.get (a graph break, an error under fullgraph=True): a forced path is for
    # eager benchmarks and tests, a compiled call takes the default one
    path = (None if torch.compiler.is_compiling() else _FORCED.get()) or path
    if path == "identity-native" and not (dynamics in _IDENTITY_NATIVE and core in _NATIVE):
        path = "torch"  # no identity-native form here: the torch path (itself native where one exists)
    if path == "triton":
        missing = _triton_gap(w_hr, dt)
        if missing and backend == "triton":
            raise (TypeError if dt == torch.float64 else NotImplementedError)(
                f"backend='triton' cannot run this layer: {missing}; use backend='torch'")
        if missing:
            path = "torch"  # "auto" picks the path that exists

    # Under torch.compile the torch-path ops take h0 = c0 = None (and absent states) and start from zeros inside:
    # a zeros tensor in the graph is a kernel of its own, which inductor compiles in C++ (seconds of the first
    # call each, issue #17). Rows that stop early (lengths) index the carried states, so they get real zeros.
    lazy = torch.compiler.is_compiling() and path != "triton" and lengths is None
    if not lazy or T == 0:
        h0, c0 = _zero_states(core, h0, c0, B, P, H, dt, dev)
    if T == 0:  # nothing to run: the states come back unchanged (nn.LSTM itself rejects T = 0)
        final = {n: state[n] if n in state else torch.zeros(B, G * H, dtype=sdt, device=dev)
                 for n in STATE_NAMES[dynamics]}
        return x.new_zeros(0, B, P).transpose(0, 1), h0, c0, final

    if reverse:
        x = _reverse_time(x, lengths)
    args = (core, x, w_ih, w_hh, b_ih, b_hh, w_hr, dynamics, hyper, h0, c0, state, step_offset, lengths)
    native = dynamics in ("plain", "momentum", "restart") and core in _NATIVE
    if path == "triton":
        out, h, c, final = _general(*args)
    elif torch.compiler.is_compiling() and (path == "identity-native" or native and COMPILED_NATIVE):
        # The native RNN ops do not trace (CPU: mkldnn_rnn_layer's fake/backward fail) and the torch scans
        # would unroll over T: the eager layer runs inside one opaque custom op instead (issue #17).
        out, h, c, final = _native_as_op(*args, path="identity-native" if path == "identity-native" else "native")
    elif path == "identity-native":
        out, h, c, final = _drive_native(*args)
    elif native and not torch.compiler.is_compiling():
        out, h, c, final = _native(*args)
    else:
        out, h, c, final = _fused(*args)
    if reverse:
        out = _reverse_time(out, lengths)
    return out.transpose(0, 1), h, c, final


def _zero_states(core, h0, c0, B, P, H, dtype, device):
    """h0 [B, P] and (LSTM) c0 [B, H], zeros where not given."""
    h0 = torch.zeros(B, P, dtype=dtype, device=device) if h0 is None else h0
    if core == "lstm" and c0 is None:
        c0 = torch.zeros(B, H, dtype=dtype, device=device)
    return h0, c0


def _check_state(t, name, shape, dtype, device):
    if t is None:
        return None
    check_tensor(t, name, ndim=len(shape), dtypes=None, dtype=dtype, device=device)
    return check_shape(t, name, shape)


def _check_lengths(lengths, B, T):
    if lengths is None:
        return None
    lengths = torch.as_tensor(lengths)
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool or lengths.shape != (B,):
        raise ValueError(f"lengths must be an integer tensor of shape ({B},), "
                         f"got {lengths.dtype} {tuple(lengths.shape)}")
    lengths = lengths.to("cpu", torch.int64)
    if B and (lengths.min() < 1 or lengths.max() > T):
        raise ValueError(f"lengths must lie in [1, {T}], got {lengths.tolist()}")
    if bool((lengths == T).all()):
        return None  # every row runs to the end: the dense paths apply
    return lengths


def _reverse_time(x, lengths):
    """Reverse each row over its own valid steps; padding stays at the end. An involution."""
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T)[:, None]
    n = lengths[None, :]
    index = torch.where(t < n, n - 1 - t, t).to(x.device)
    return x.gather(0, index[:, :, None].expand_as(x))


def _last_step(seq, lengths):
    """seq [T, B, C] -> [B, C] at each row's last valid step."""
    if lengths is None:
        return seq[-1]
    index = (lengths - 1).to(seq.device)[None, :, None].expand(1, seq.shape[1], seq.shape[2])
    return seq.gather(0, index)[0]


# ------------------------------------------------------------------------------------------ torch, commuted
def _native(core, x, w_ih, w_hh, b_ih, b_hh, w_hr, dynamics, hyper, h0, c0, state, step_offset, lengths):
    """SPEC §1.4 on torch's native cell (module docstring)."""
    T, B, _ = x.shape
    sdt = torch.promote_types(x.dtype, torch.float32)
    if dynamics != "plain" and x.dtype != sdt:
        # The scanned raw input x̃ ~ s·x/(1-μ) is a momentum state: the reference keeps it in fp32, and in fp16
        # it overflows (μ near 1, pixel-scale x) where the reference stays finite (issue 14). The native call
        # needs one dtype for drive and weights, so the whole layer runs in the state dtype.
        up = [None if t is None else t.to(sdt) for t in (x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0)]
        out, h, c, final = _native(core, *up[:6], dynamics, hyper, *up[6:], state, step_offset, lengths)
        return out.to(x.dtype), h.to(x.dtype), None if c is None else c.to(x.dtype), final
    weight, drive = w_ih, x
    if dynamics != "plain":
        if b_ih is not None:  # the bias channel: c_t = μ_t c_{t-1} + s, scanned with the input
            drive = torch.cat([x, x.new_ones(T, B, 1)], dim=2)
            weight = torch.cat([w_ih, b_ih[:, None]], dim=1)
        mu = hyper.get("mu", 0.0)
        drive, _ = _scan.momentum_scan(drive.transpose(0, 1), mu, hyper["s"], restart=hyper.get("restart"),
                                       step_offset=step_offset, backend="torch")
        drive = drive.transpose(0, 1)
        # v_T = W' [x̃_T, c_T] (+ Λ_T v_0) at each row's last step, in fp32
        v_T = _last_step(drive, lengths).to(sdt) @ weight.to(sdt).T
        if "v" in state:
            # v_t = W' [x̃_t, c_t] + Λ_t v_0: a per-row term, so the drive is formed here (in fp32, as _general
            # does) and run by the identity-native core. Each row reads its own v_0 only (issue #14: no state
            # in a weight shared by the rows), and what backward saves stays linear in B.
            lam = _decay(dynamics, hyper, step_offset, T, sdt, x.device)
            v_T = v_T + _last_step(lam[:, None, None].expand(T, B, 1), lengths) * state["v"]
            a = (drive.to(sdt) @ weight.to(sdt).T + lam[:, None, None] * state["v"]).to(x.dtype)
            out, h, c = _identity_native(core, a, w_hh, b_hh, w_hr, h0, c0, lengths)
            return out, h, c, {"v": v_T}
    if b_ih is None:
        weights, has_biases = [weight, w_hh], False
    else:
        b_ih_native = b_ih if dynamics == "plain" else torch.zeros_like(b_ih)
        weights, has_biases = [weight, w_hh, b_ih_native, b_hh], True
    out, h, c = _native_core(core, drive, weights, has_biases, w_hr, h0, c0, lengths)
    return out, h, c, ({} if dynamics == "plain" else {"v": v_T})


def _identity_native(core, a, w_hh, b_hh, w_hr, h0, c0, lengths):
    """The recurrence of SPEC §1.1 on a precomputed drive a [T, B, G·H] (z_t = a_t + W_hh h_{t-1} + b_hh) by
    torch's native LSTM/RNN with input size G·H, W_ih = I and b_ih = 0 (KERNELS.md §2.6): exact, since
    I a_t + 0 = a_t. I and 0 are constants (no gradient); the gradient reaches a through the native backward's
    input gradient. Returns (out [T, B, P], h_T, c_T)."""
    GH = a.shape[2]
    eye = torch.eye(GH, dtype=a.dtype, device=a.device)
    if b_hh is None:
        weights, has_biases = [eye, w_hh], False
    else:
        weights, has_biases = [eye, w_hh, torch.zeros_like(b_hh), b_hh], True
    return _native_core(core, a, weights, has_biases, w_hr, h0, c0, lengths)


def _native_core(core, drive, weights, has_biases, w_hr, h0, c0, lengths):
    """One native call on a time-major drive with the given weight list: (out, h_T, c_T)."""
    T = drive.shape[0]
    if w_hr is not None:
        weights = weights + [w_hr]
    drive = drive.contiguous()
    hx = (h0[None], c0[None]) if core == "lstm" else h0[None]
    out, result = _native_call(core, drive, hx, weights, has_biases, lengths, T)
    h = result[1][0]
    c = result[2][0] if core == "lstm" else None
    return out, h, c


def _drive_native(core, x, w_ih, w_hh, b_ih, b_hh, w_hr, dynamics, hyper, h0, c0, state, step_offset, lengths):
    """Adam / RMSProp on the identity-native core (KERNELS.md §2.6): their drive a_t (SPEC §1.2) does not
    depend on h, so u = x W_ihᵀ + b_ih is one GEMM, the scan (tritonrnn.functional.scan; the kernels on CUDA)
    gives a, and the recurrence is a plain native LSTM/RNN on a. Rows that stop early (lengths) scan per
    segment, so the final v, m are those of each row's last step; the native call packs by lengths."""
    T, B, _ = x.shape
    GH = w_ih.shape[0]
    sdt = torch.promote_types(x.dtype, torch.float32)
    u = x @ w_ih.T
    if b_ih is not None:
        u = u + b_ih  # SPEC §1.1: b_ih inside the dynamics
    scan_path = "triton" if x.device.type == "cuda" and x.dtype != torch.float64 and has_triton() else "torch"
    names = STATE_NAMES[dynamics]
    carry = {n: state[n] if n in state else torch.zeros(B, GH, dtype=sdt, device=x.device) for n in names}

    def segment(u_seg, carry, t0):
        u_bt = u_seg.transpose(0, 1)
        if dynamics == "adam":
            a, v, m = _scan.adam_scan(u_bt, hyper["mu"], hyper["s"], hyper["beta"], hyper["eps"], carry["v"],
                                      carry["m"], backend=scan_path)
            return a.transpose(0, 1), {"v": v, "m": m}
        a, m = _scan.rmsprop_scan(u_bt, hyper["s"], hyper["beta"], hyper["eps"], carry["m"], backend=scan_path)
        return a.transpose(0, 1), {"m": m}

    a, carry = _segments(segment, u, carry, lengths)
    out, h, c = _identity_native(core, a, w_hh, b_hh, w_hr, h0, c0, lengths)
    return out, h, c, {n: carry[n] for n in names}


def _native_call(core, drive, hx, weights, has_biases, lengths, T):
    """torch's native LSTM/RNN on one layer (packed by `lengths` when rows stop early): (out, result)."""
    # `train` must be True whenever a backward may follow: cuDNN keeps its reserve space only then (its RNN
    # backward refuses otherwise); dropout is 0 here, so the flag changes nothing else.
    train = torch.is_grad_enabled()
    if lengths is None:
        result = _NATIVE[core](drive, hx, weights, has_biases, 1, 0.0, train, False, False)
        return result[0], result
    packed = torch.nn.utils.rnn.pack_padded_sequence(drive, lengths, enforce_sorted=False)
    order = packed.sorted_indices.to(drive.device)
    hx = tuple(h.index_select(1, order) for h in hx) if core == "lstm" else hx.index_select(1, order)
    result = _NATIVE[core](packed.data, packed.batch_sizes, hx, weights, has_biases, 1, 0.0, train, False)
    out_packed = torch.nn.utils.rnn.PackedSequence(result[0], packed.batch_sizes, packed.sorted_indices,
                                                   packed.unsorted_indices)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out_packed, total_length=T)
    unorder = packed.unsorted_indices.to(drive.device)
    return out, (out,) + tuple(r.index_select(1, unorder) for r in result[1:])


# ------------------------------------------------------------------------------------------ native, one op
# Under torch.compile the native families (and the identity-native core) run their eager layer inside one
# opaque custom op per layer and direction (issue #17): the graph holds one node whatever T is, the fake
# implementation takes a symbolic T, and the compiled module runs the same oneDNN / cuDNN call as eager, so
# outputs equal eager's bitwise. The backward op recomputes the layer with autograd on and differentiates it
# (torch.autograd.grad): the native backward needs the forward's workspace (cuDNN's reserve space, oneDNN's
# workspace), which no custom op can hand across the op boundary, so the forward runs twice per training step.
# COMPILED_NATIVE chooses this op (True) or the step-loop op (_fused, False) for the native families under
# compile; `perf/compile_time.py --compiled-path` measures either. Measured on the 2-core CPU (MomentumLSTM(1, 64),
# batch 8, inductor; perf/results/compile_time-cpu-x86-64-2-cores-1-threads-20261205T075433Z and ...T075511Z):
# the same first call within noise (6.5 s vs 7.0 s at T 784), a training step 142.5 ms vs 268.8 ms: this op.
COMPILED_NATIVE = True
_NATIVE_GRAD_INPUTS = ("x", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "h0", "c0", "v0", "m0")


def _native_as_op(core, x, w_ih, w_hh, b_ih, b_hh, w_hr, dynamics, hyper, h0, c0, state, step_offset, lengths, *,
                  path):
    """_native (path "native") or _drive_native ("identity-native") as the tritonrnn::native_layer op."""
    out, h, c, v_T, m_T = _native_layer_fwd_op(
        x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, state.get("v"), state.get("m"), lengths, core, dynamics, path,
        float(hyper.get("mu", 0.0)), float(hyper.get("s", 0.0)), float(hyper.get("beta", 0.0)),
        float(hyper.get("eps", 0.0)), int(hyper.get("restart", 0)), int(step_offset), torch.is_grad_enabled())
    final = {"v": v_T, "m": m_T}
    return out, h, (c if core == "lstm" else None), {n: final[n] for n in STATE_NAMES[dynamics]}


def _native_layer(inputs, core, dynamics, path, mu, s, beta, eps, restart, step_offset):
    """The eager layer on the op's flat inputs: (out, h_T, c_T, v_T, m_T), absent ones None."""
    x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, v0, m0, lengths = inputs
    T, B, _ = x.shape
    h0, c0 = _zero_states(core, h0, c0, B, w_hh.shape[1], w_hh.shape[0] // 4, x.dtype, x.device)
    given = {"mu": mu, "s": s, "beta": beta, "eps": eps, "restart": restart}
    hyper = {n: given[n] for n in HYPER_NAMES[dynamics]}
    state = {n: t for n, t in (("v", v0), ("m", m0)) if t is not None}
    run = _native if path == "native" else _drive_native
    out, h, c, final = run(core, x, w_ih, w_hh, b_ih, b_hh, w_hr, dynamics, hyper, h0, c0, state, step_offset,
                           lengths)
    return out, h, c, final.get("v"), final.get("m")


@torch.library.custom_op("tritonrnn::native_layer_fwd", mutates_args=(), schema=(
    "(Tensor x, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, Tensor? h0, Tensor? c0, "
    "Tensor? v0, Tensor? m0, Tensor? lengths, str core, str dynamics, str path, float mu, float s, float beta, "
    "float eps, int restart, int step_offset, bool train) -> (Tensor, Tensor, Tensor, Tensor, Tensor)"))
def _native_layer_fwd_op(x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, v0, m0, lengths, core, dynamics, path, mu, s,
                         beta, eps, restart, step_offset, train):
    inputs = [None if t is None else t.detach() for t in (x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, v0, m0)]
    # the grad mode of the caller, as eager sees it: _native_call's `train` flag (cuDNN keeps its reserve space
    # only then) reads it. Detached inputs: nothing is recorded.
    with torch.set_grad_enabled(train):
        results = _native_layer(inputs + [lengths], core, dynamics, path, mu, s, beta, eps, restart, step_offset)
    # contiguous (what the fake implementation promises), absent ones empty: custom ops return no None
    return tuple(x.new_empty(_steploop.NOTHING) if r is None else r.contiguous() for r in results)


@_native_layer_fwd_op.register_fake
def _(x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, v0, m0, lengths, core, dynamics, path, mu, s, beta, eps, restart,
      step_offset, train):
    T, B, _ = x.shape
    GH, P = w_ih.shape[0], w_hh.shape[1]
    sdt = torch.promote_types(x.dtype, torch.float32)
    has_v, has_m = dynamics in ("momentum", "restart", "adam"), dynamics in ("adam", "rmsprop")
    return (x.new_empty(T, B, P), x.new_empty(B, P),
            x.new_empty((B, GH // 4) if core == "lstm" else _steploop.NOTHING),
            x.new_empty((B, GH) if has_v else _steploop.NOTHING, dtype=sdt),
            x.new_empty((B, GH) if has_m else _steploop.NOTHING, dtype=sdt))


@torch.library.custom_op("tritonrnn::native_layer_bwd", mutates_args=(), schema=(
    "(Tensor? dout, Tensor? dh_T, Tensor? dc_T, Tensor? dv_T, Tensor? dm_T, Tensor x, Tensor w_ih, Tensor w_hh, "
    "Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, Tensor? h0, Tensor? c0, Tensor? v0, Tensor? m0, Tensor? lengths, "
    "bool[] needs, str core, str dynamics, str path, float mu, float s, float beta, float eps, int restart, "
    "int step_offset) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"))
def _native_layer_bwd_op(dout, dh_T, dc_T, dv_T, dm_T, x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, v0, m0, lengths,
                         needs, core, dynamics, path, mu, s, beta, eps, restart, step_offset):
    inputs = [None if t is None else t.detach().requires_grad_(need and t.dtype.is_floating_point)
              for t, need in zip((x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, v0, m0), needs)]
    with _autograd_inside_op(), torch.enable_grad():  # eager's forward (train=True), then autograd's backward
        results = _native_layer(inputs + [lengths], core, dynamics, path, mu, s, beta, eps, restart, step_offset)
        pairs = [(r, g) for r, g in zip(results, (dout, dh_T, dc_T, dv_T, dm_T))
                 if r is not None and g is not None and r.requires_grad]
        wrt = [t for t in inputs if t is not None and t.requires_grad]
        grads = iter(torch.autograd.grad([r for r, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True)
                     if pairs and wrt else [None] * len(wrt))
        out = []
        for t in inputs:
            g = next(grads) if t is not None and t.requires_grad else None
            out.append(x.new_empty(_steploop.NOTHING) if t is None or not t.requires_grad else
                       torch.zeros_like(t, memory_format=torch.contiguous_format) if g is None else g.contiguous())
        return tuple(out)


@_native_layer_bwd_op.register_fake
def _(dout, dh_T, dc_T, dv_T, dm_T, x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, v0, m0, lengths, needs, core,
      dynamics, path, mu, s, beta, eps, restart, step_offset):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) if t is not None and need else
                 x.new_empty(_steploop.NOTHING) for t, need in zip((x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, v0, m0),
                                                                   needs))


@contextlib.contextmanager
def _autograd_inside_op():
    """Autograd on again inside a custom op's implementation: the dispatcher runs it below the autograd keys
    (torch._C._AutoDispatchBelowAutograd), where no operation records a graph, so torch.autograd.grad of the
    recomputed layer would find none. Re-enabling the two functionality keys for the block records it."""
    keys = (torch._C.DispatchKey.AutogradFunctionality, torch._C.DispatchKey.ADInplaceOrView)
    with contextlib.ExitStack() as stack:
        for key in keys:
            stack.enter_context(torch._C._SetExcludeDispatchKeyGuard(key, False))
        yield


def _native_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(*inputs[:11])
    ctx.hyper = inputs[11:20]


def _native_backward(ctx, dout, dh_T, dc_T, dv_T, dm_T):
    n = len(_NATIVE_GRAD_INPUTS)
    if all(g is None for g in (dout, dh_T, dc_T, dv_T, dm_T)):
        return (None,) * 21
    if torch.is_grad_enabled():
        raise RuntimeError("tritonrnn's compiled native layer: double backward is not supported (its backward op "
                           "is not itself differentiable); run the module eagerly for higher-order gradients")
    needs = [bool(f) for f in ctx.needs_input_grad[:n]]
    grads = _native_layer_bwd_op(dout, dh_T, dc_T, dv_T, dm_T, *ctx.saved_tensors, needs, *ctx.hyper)
    return tuple(g if need else None for g, need in zip(grads, needs)) + (None,) * (21 - n)


_native_layer_fwd_op.register_autograd(_native_backward, setup_context=_native_setup)


def _decay(dynamics, hyper, step0, T, dtype, device):
    """Λ_t = Π_{k≤t} μ_k over the steps step0 … step0+T-1: what is left of a carried v_0 after step t."""
    lam, decay = [], 1.0
    for t in range(T):
        decay *= hyper["mu"] if dynamics == "momentum" else restart_momentum(step0 + t, hyper["restart"])
        lam.append(decay)
    return torch.tensor(lam, dtype=dtype, device=device)


# ------------------------------------------------------------------------------------------ general path
def _triton_gap(w_hr, dtype):
    """Why the Triton path cannot run a layer ('' when it can)."""
    if dtype == torch.float64:
        return "x is float64 (the kernels accumulate in fp32; float64 exists for gradcheck on the torch path)"
    if w_hr is not None:
        return "proj_size > 0 has no recurrence kernel"
    return ""


def _general(core, x, w_ih, w_hh, b_ih, b_hh, w_hr, dynamics, hyper, h0, c0, state, step_offset, lengths,
             path="triton"):
    """The Triton path, per time segment (all rows still running): scan, then recurrence (no projection:
    _triton_gap sends proj_size > 0 to the torch path). `path="torch"` runs the same wiring on the torch
    paths of the scans and recurrences (tests/nn/test_layers.py checks it in float64 that way).

    Momentum / restart scan the raw input plus the bias channel (SPEC §1.4: width in+1 instead of G·H) and
    project afterwards, a = W' x̃ + Λ_t v_0 (the carried state enters through its decay, see _native);
    the other families take u = x W_ihᵀ + b_ih as one GEMM over all steps and scan it."""
    T, B, _ = x.shape
    if w_hr is not None:
        raise NotImplementedError("the scan + recurrence path has no projection (proj_size > 0)")
    commuted = dynamics in ("momentum", "restart")
    sdt = torch.promote_types(x.dtype, torch.float32)
    # The drive of the commuted families (x̃ and a = W' x̃ + Λ_t v_0) is a momentum state, held in the state
    # dtype as the reference holds it: in fp16 x̃ ~ s·x/(1-μ) overflows where the reference stays finite
    # (issue 14). The recurrence then runs on that drive, with W_hh, b_hh cast to it (the kernels take one dtype).
    rdt = sdt if commuted else x.dtype
    w_hh_r, b_hh_r = w_hh.to(rdt), (None if b_hh is None else b_hh.to(rdt))
    if commuted:
        weight = w_ih if b_ih is None else torch.cat([w_ih, b_ih[:, None]], dim=1)
        weight = weight.to(sdt)
        u = (x if b_ih is None else torch.cat([x, x.new_ones(T, B, 1)], dim=2)).to(sdt)
    else:
        u = x @ w_ih.T
        if b_ih is not None:
            u = u + b_ih  # SPEC §1.1: b_ih inside the dynamics
    v_is_zero = "v" not in state  # until the first segment has run
    names = STATE_NAMES[dynamics]
    GH = w_ih.shape[0]
    carry = {"h": h0, **({"c": c0} if core == "lstm" else {})}
    for n in names:
        carry[n] = state[n] if n in state else torch.zeros(B, GH, dtype=sdt, device=x.device)

    def segment(u_seg, carry, t0):
        u_bt = u_seg.transpose(0, 1)  # the scans and the recurrence take [B, T, C] views
        carry = dict(carry)
        if dynamics == "nesterov":
            h, carry["h"], carry["c"], carry["a"] = _recurrence.nesterov_lstm_recurrence(
                u_bt, w_hh, b_hh, carry["h"], carry["c"], carry["a"], s=hyper["s"], restart=hyper["restart"],
                step_offset=step_offset + t0, backend=path)
            return h.transpose(0, 1), carry
        if dynamics == "plain":
            a = u_bt
        elif commuted:
            x_tilde, _ = _scan.momentum_scan(u_bt, hyper.get("mu", 0.0), hyper["s"], restart=hyper.get("restart"),
                                             step_offset=step_offset + t0, backend=path)
            a = torch.matmul(x_tilde, weight.T)
            v_T = x_tilde[:, -1].to(sdt) @ weight.to(sdt).T  # in fp32, not from the rounded a
            if not (v_is_zero and t0 == 0):
                lam = _decay(dynamics, hyper, step_offset + t0, a.shape[1], sdt, a.device)
                a = a + lam[None, :, None] * carry["v"][:, None, :]
                v_T = v_T + lam[-1] * carry["v"]
            carry["v"] = v_T
        elif dynamics == "adam":
            a, carry["v"], carry["m"] = _scan.adam_scan(u_bt, hyper["mu"], hyper["s"], hyper["beta"],
                                                        hyper["eps"], carry["v"], carry["m"], backend=path)
        else:
            a, carry["m"] = _scan.rmsprop_scan(u_bt, hyper["s"], hyper["beta"], hyper["eps"], carry["m"],
                                               backend=path)
        if core == "lstm":
            h, carry["h"], carry["c"] = _recurrence.lstm_recurrence(a, w_hh_r, b_hh_r, carry["h"], carry["c"],
                                                                    backend=path)
        elif core == "indrnn":
            h, carry["h"] = _recurrence.indrnn_recurrence(a, w_hh_r, b_hh_r, carry["h"], backend=path)
        else:
            h, carry["h"] = _recurrence.rnn_recurrence(a, w_hh_r, b_hh_r, carry["h"], nonlinearity=core[4:],
                                                       backend=path)
        carry["h"] = carry["h"].to(x.dtype)
        if "c" in carry:
            carry["c"] = carry["c"].to(x.dtype)
        return h.transpose(0, 1).to(x.dtype), carry

    out, carry = _segments(segment, u, carry, lengths)
    return out, carry["h"], carry.get("c"), {n: carry[n] for n in names}


def _segments(run, inputs, carry, lengths):
    """Run `run(inputs[t0:t1, rows], carry[rows], t0) -> (out, carry)` over time segments in which the
    set of running rows is fixed (rows drop out at their length, as in a PackedSequence)."""
    if lengths is None:
        return run(inputs, carry, 0)
    T, B = inputs.shape[:2]
    outs, t0 = [], 0
    for t1 in sorted(set(lengths.tolist())):
        rows = torch.nonzero(lengths >= t1).flatten().to(inputs.device)
        seg_carry = {k: v.index_select(0, rows) for k, v in carry.items()}
        seg_out, seg_carry = run(inputs[t0:t1].index_select(1, rows), seg_carry, t0)
        outs.append(seg_out.new_zeros(t1 - t0, B, seg_out.shape[2]).index_copy(1, rows, seg_out))
        carry = {k: v.index_copy(0, rows, seg_carry[k].to(v.dtype)) for k, v in carry.items()}
        t0 = t1
    out = torch.cat(outs)
    if t0 < T:
        out = torch.cat([out, out.new_zeros(T - t0, B, out.shape[2])])
    return out, carry


# ------------------------------------------------------------------------------------------ torch, fused
def _fused(core, x, w_ih, w_hh, b_ih, b_hh, w_hr, dynamics, hyper, h0, c0, state, step_offset, lengths):
    """The torch path of the families without a native form (Adam, RMSProp, Nesterov, the orthogonal and
    IndRNN cores; SPEC §1.4 does not apply) and of the step-loop op under torch.compile: per time segment the
    layer as one op with a hand-written backward (steploop: the input GEMM, the input dynamics and the
    recurrence, span by span). It computes every family, which tests/nn/test_layers.py uses. proj_size > 0
    takes _projected_loop."""
    B = x.shape[1]
    if w_hr is not None:
        h0, c0 = _zero_states(core, h0, c0, B, w_hr.shape[0], w_hr.shape[1], x.dtype, x.device)
        return _projected_loop(core, x, w_ih, w_hh, b_ih, b_hh, w_hr, dynamics, hyper, h0, c0, state, step_offset,
                               lengths)
    sdt = torch.promote_types(x.dtype, torch.float32)
    names = STATE_NAMES[dynamics]
    # None (zeros inside the op) only without lengths, as _layer passes them: _segments indexes the carry
    carry = {"h": None if h0 is None else h0.to(sdt), "c": None if c0 is None else c0.to(sdt)}
    for n in names:
        carry[n] = (state.get(n) if n in state or lengths is None else
                    torch.zeros(B, w_ih.shape[0], dtype=sdt, device=x.device))
    carry = {k: v for k, v in carry.items() if v is not None}

    def segment(x_seg, carry, t0):
        out, h, c, final = _steploop.step_loop(
            x_seg, w_ih, b_ih, w_hh, b_hh, carry.get("h"), carry.get("c"), carry.get("v"), carry.get("m"),
            carry.get("a"), core=core, dynamics=dynamics, **hyper, step_offset=step_offset + t0)
        return out.to(x.dtype), {"h": h, **({"c": c} if c is not None else {}), **final}

    out, carry = _segments(segment, x, carry, lengths)
    c = carry.get("c")
    return out, carry["h"].to(x.dtype), None if c is None else c.to(x.dtype), {n: carry[n] for n in names}


def _projected_loop(core, x, w_ih, w_hh, b_ih, b_hh, w_hr, dynamics, hyper, h0, c0, state, step_offset, lengths):
    """proj_size > 0 off the native path (the step-loop op has no projection): one loop whose every step is
    the reference's own (reference.cell_step), differentiated by autograd; STYLE.md makes the reference the
    CPU fallback of last resort, and this is it."""
    sdt = torch.promote_types(x.dtype, torch.float32)
    B, GH = x.shape[1], w_ih.shape[0]
    weights = [0.0 if t is None else t.to(sdt) for t in (w_ih, w_hh, b_ih, b_hh)] + [
        None if w_hr is None else w_hr.to(sdt)]
    carry = {"h": h0.to(sdt), **({"c": c0.to(sdt)} if c0 is not None else {})}
    for n in ("v", "m", "a"):
        carry[n] = state[n] if n in state else torch.zeros(B, GH, dtype=sdt, device=x.device)
    names = STATE_NAMES[dynamics]

    def segment(x_seg, carry, t0):
        carry, outs = dict(carry), []
        for t, x_t in enumerate(x_seg.unbind(0)):  # unbind, not x[t]: one backward node for all steps
            step = step_offset + t0 + t
            lam = restart_momentum(step, hyper["restart"]) if "restart" in hyper else hyper.get("mu", 0.0)
            h, c, carry["v"], carry["m"], carry["a"] = cell_step(
                x_t.to(sdt), carry["h"], carry.get("c"), carry["v"], carry["m"], carry["a"], *weights, core=core,
                dynamics=dynamics, lam=lam, s=hyper.get("s"), beta=hyper.get("beta"), eps=hyper.get("eps"))
            carry["h"] = h
            if c is not None:
                carry["c"] = c
            outs.append(h)
        return torch.stack(outs).to(x.dtype), carry

    out, carry = _segments(segment, x, carry, lengths)
    c = carry.get("c")
    return out, carry["h"].to(x.dtype), None if c is None else c.to(x.dtype), {n: carry[n] for n in names}
