"""The torch path of one recurrent layer as one op over the whole sequence, with a hand-written backward
(issue #16: CPU speed; issue #17: one opaque node per layer and direction under torch.compile).

    step_loop(u, weight_hh, bias_hh, h0, c0, v0, m0, a0, *, core, dynamics, mu, s, beta, eps, restart,
              step_offset) -> (out [T, B, H], h_T, c_T, v_T, m_T, a_T)

u is the input drive u_t = W_ih x_t + b_ih, time-major [T, B, G·H] with any strides (the caller computes it
as one GEMM over all steps, so dW_ih, db_ih and dx are single GEMMs of autograd's); then, per SPEC §1.1-1.3:
the input dynamics D (plain / momentum / restart / Adam / RMSProp: h-independent, run as a scan before the
recurrence; Nesterov: inside it, SPEC §1.3), z_t and the core update (LSTM, RNN tanh / relu, the orthogonal
modReLU core, IndRNN; reference.cells names them). States and arithmetic are fp32 (fp64 for fp64 input);
out and the final states come back in that state dtype (the caller casts).

Why an op and not autograd over the reference steps: autograd records ~15 nodes per step and keeps every
intermediate (the issue measured 2-16x nn.LSTM on CPU). Here the forward runs under no grad into
preallocated buffers and saves only what the backward needs: the activated gates and c_t (LSTM), h_t (the
output itself), and u for Adam / RMSProp (their v_t, m_t are recomputed in the backward, two pointwise ops
a step). The backward is one reverse loop of one matrix product and a few fused pointwise ops per step;
dW_hh, db_hh and dh_0 are single reductions / GEMMs after it, and the input-dynamics adjoints are reverse
scans (h-independent) after that. The pointwise factors that do not depend on the loop (the activations'
derivatives, tanh c_t) are computed for all steps at once before it.

As torch.library custom ops (tritonrnn::step_loop_fwd / _bwd, fake implementations with the real strides)
the whole recurrence is one node of a torch.compile graph, whatever T is, and T may be symbolic.
Double backward is not supported: the backward op is not itself differentiable (torch raises on a
create_graph=True backward through it, see _backward).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..schedules import restart_momentum

__all__ = ["step_loop", "input_drive"]

NOTHING = (0,)  # the shape of an absent output (custom ops return no None)
CORES = ("lstm", "rnn_tanh", "rnn_relu", "rnn_modrelu", "indrnn")


def step_loop(u, weight_hh, bias_hh, h0, c0, v0, m0, a0, *, core, dynamics, mu=0.0, s=1.0, beta=0.0, eps=1.0,
              restart=None, step_offset=0):
    """The layer's recurrence on the drive u [T, B, G·H] (module docstring). h0 [B, H], c0 (the LSTM core),
    v0, m0, a0 (the carried states the family has): None starts from zeros, made inside the op (under
    torch.compile a zeros tensor outside it is a kernel of its own that inductor compiles: seconds).
    Returns (out [T, B, H] contiguous, h_T, c_T or None, {name: final state}) in the state dtype."""
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                           for t in (u, weight_hh, bias_hh, h0, c0, v0, m0, a0))
    out, h_T, c_T, v_T, m_T, a_T, *_saved = _step_loop_fwd_op(
        u, weight_hh, bias_hh, h0, c0, v0, m0, a0, core, dynamics, float(mu or 0.0), float(s or 0.0),
        float(beta or 0.0), float(eps or 0.0), int(restart or 0), int(step_offset), save)
    final = {"momentum": {"v": v_T}, "restart": {"v": v_T}, "adam": {"v": v_T, "m": m_T}, "rmsprop": {"m": m_T},
             "nesterov": {"a": a_T}}.get(dynamics, {})
    return out, h_T, (c_T if core == "lstm" else None), final


# ------------------------------------------------------------------------------------------ the math
# Everything runs per step on [B, ·] tensors that stay in cache: whole-sequence pointwise passes over
# [T, B, G·H] cost more than the step loop itself on CPU (measured: ~20 ms each at T 256, B 32, H 128).
CHUNK = 16  # Adam / RMSProp: v_t, m_t are kept at every CHUNK-th step and recomputed chunk-wise in the backward


def _lams(mu, restart, step_offset, T):
    """λ_t of the momentum drive / μ_t of Nesterov for the T steps (SPEC §1.2, §1.3)."""
    if restart:
        return [restart_momentum(step_offset + t, restart) for t in range(T)]
    return [mu] * T


def _has(dynamics):
    """Which drive states the family carries: (v, m)."""
    return dynamics in ("momentum", "restart", "adam"), dynamics in ("adam", "rmsprop")


class _Drive:
    """The h-independent input dynamics of SPEC §1.2 one step at a time, forward and adjoint."""

    def __init__(self, u, v0, m0, dynamics, lams, s, beta, eps, sdt):
        self.u, self.dynamics, self.lams, self.s, self.beta, self.eps = u, dynamics, lams, s, beta, eps
        B, C = u.shape[1:]
        new = (lambda: torch.empty(B, C, dtype=sdt, device=u.device))
        has_v, has_m = _has(dynamics)
        self.v = (v0.to(sdt, copy=True) if v0 is not None else new().zero_()) if has_v else None
        self.m = (m0.to(sdt, copy=True) if m0 is not None else new().zero_()) if has_m else None
        self.a, self.tmp = new(), new()

    def forward(self, t):
        """a_t (a tensor the caller must not keep past the next step)."""
        u_t, v, m = self.u[t], self.v, self.m
        if v is not None:
            v.mul_(self.lams[t]).add_(u_t, alpha=self.s)                 # v_t = λ_t v_{t-1} + s u_t
        if m is None:
            return u_t if v is None else v
        m.mul_(self.beta).addcmul_(u_t, u_t, value=1.0 - self.beta)     # m_t = β m_{t-1} + (1-β) u_t²
        den = torch.sqrt(m, out=self.a).add_(self.eps)                   # eq. 15: v_t / (√m_t + ε)
        num = v if v is not None else torch.mul(u_t, self.s, out=self.tmp)
        return torch.div(num, den, out=self.a)


def _forward(u, w, b, h0, c0, v0, m0, a0, core, dynamics, mu, s, beta, eps, restart, step_offset, save):
    T, B, C = u.shape
    sdt = torch.promote_types(u.dtype, torch.float32)
    H = w.shape[-1]
    u, w, b = u.to(sdt), w.to(sdt), (None if b is None else b.to(sdt))
    wT = w.t() if w.dim() == 2 else w
    lams = _lams(mu, restart, step_offset, T)
    drive = _Drive(u, v0, m0, dynamics, lams, s, beta, eps, sdt)
    nothing = (lambda: u.new_empty(NOTHING))   # one per absent output: outputs may not alias
    has_v, has_m = _has(dynamics)
    adam_like = has_m and save
    n_ck = (T + CHUNK - 1) // CHUNK
    ck_v = u.new_empty((n_ck, B, C)) if adam_like and has_v else nothing()
    ck_m = u.new_empty((n_ck, B, C)) if adam_like else nothing()
    out = torch.empty(T, B, H, dtype=sdt, device=u.device)
    h = h0.to(sdt) if h0 is not None else torch.zeros(B, H, dtype=sdt, device=u.device)
    gates, cs, a_T, c_T = nothing(), nothing(), nothing(), nothing()
    if core == "lstm":
        # without a backward to follow nothing is kept: one step's buffers, reused (no page of a [T, ...]
        # buffer is touched, which costs about what the step does on CPU)
        gates = torch.empty(T if save else 1, B, C, dtype=sdt, device=u.device)
        cs = torch.empty(T, B, H, dtype=sdt, device=u.device) if save else None
        tc = torch.empty(B, H, dtype=sdt, device=u.device)
        c = c0.to(sdt, copy=not save) if c0 is not None else torch.zeros(B, H, dtype=sdt, device=u.device)
        if dynamics == "nesterov":
            a_prev = a0.to(sdt, copy=True) if a0 is not None else torch.zeros(B, C, dtype=sdt, device=u.device)
            a_cur = torch.empty_like(a_prev)
    elif core == "rnn_modrelu":
        mag = torch.empty(B, H, dtype=sdt, device=u.device)
    for t in range(T):
        if adam_like and t % CHUNK == 0:   # the drive state entering step t, for the backward's recomputation
            ck_m[t // CHUNK].copy_(drive.m)
            if has_v:
                ck_v[t // CHUNK].copy_(drive.v)
        z = gates[t if save else 0] if core == "lstm" else out[t]
        if dynamics == "nesterov":  # SPEC §1.3: a_t = W_hh h + b_hh − s u_t; z_t = a_t + μ_t (a_t − a_{t-1})
            torch.addmm(b, h, wT, out=a_cur) if b is not None else torch.mm(h, wT, out=a_cur)
            a_cur.sub_(u[t], alpha=s)
            torch.sub(a_cur, a_prev, out=z)
            torch.add(a_cur, z, alpha=lams[t], out=z)
            a_prev, a_cur = a_cur, a_prev
        else:
            a_t = drive.forward(t)
            if core == "indrnn":
                torch.addcmul(a_t, h, w, out=z)                          # a_t + w ⊙ h_{t-1}
            else:
                torch.addmm(a_t, h, wT, out=z)
            if b is not None and core != "rnn_modrelu":  # modReLU's b is not additive
                z.add_(b)
        if core == "lstm":
            z[:, :2 * H].sigmoid_()         # i, f (nn.LSTM gate order i, f, g, o)
            z[:, 2 * H:3 * H].tanh_()
            z[:, 3 * H:].sigmoid_()
            c = torch.mul(z[:, H:2 * H], c, out=cs[t] if save else c).addcmul_(z[:, :H], z[:, 2 * H:3 * H])
            h = torch.mul(z[:, 3 * H:], torch.tanh(c, out=tc), out=out[t])
        elif core == "rnn_tanh":
            h = z.tanh_()
        elif core == "rnn_modrelu":         # sign(z)·relu(|z| + b)
            torch.abs(z, out=mag)
            if b is not None:
                mag.add_(b)
            h = z.sign_().mul_(mag.relu_())
        else:
            h = z.relu_()
    if core == "lstm":
        c_T = c.clone() if save else c
        if dynamics == "nesterov":
            a_T = a_prev
        if not save:
            gates, cs = nothing(), nothing()
    v_T = drive.v if has_v else nothing()
    m_T = drive.m if has_m else nothing()
    return out, h.clone(), c_T, v_T, m_T, a_T, gates, cs, ck_v, ck_m


def _backward(dout, dh_T, dc_T, dv_T, dm_T, da_T, u, w, b, h0, c0, v0, out, gates, cs, ck_v, ck_m, core, dynamics,
              mu, s, beta, eps, restart, step_offset):
    T, B, C = u.shape
    sdt = out.dtype
    H = w.shape[-1]
    w32, h0 = w.to(sdt), (None if h0 is None else h0.to(sdt))  # None: zeros (no term in dW_hh)
    lams = _lams(mu, restart, step_offset, T)
    dev = u.device
    new = (lambda *shape: torch.empty(*shape, dtype=sdt, device=dev))
    dout = torch.zeros(T, B, H, dtype=sdt, device=dev) if dout is None else dout.to(sdt)
    has_v, has_m = _has(dynamics)
    nesterov = dynamics == "nesterov"
    # dr_t: the gradient of the recurrent term's output (dz_t; Nesterov: da_t, SPEC §1.3), for dW_hh after the loop
    dr_all = new(T, B, C)
    du_all = dr_all if dynamics == "plain" else new(T, B, C)
    dz = new(B, C)
    dz_next = new(B, C) if nesterov else None
    if has_v or has_m:
        u = u.to(sdt)
        dv = (dv_T.to(sdt, copy=True) if dv_T is not None else new(B, C).zero_()) if has_v else None
        dm = (dm_T.to(sdt, copy=True) if dm_T is not None else new(B, C).zero_()) if has_m else None
        if has_m:
            vbuf, mbuf = (new(CHUNK, B, C) if has_v else None), new(CHUNK, B, C)
            root, den, t1, t2 = new(B, C), new(B, C), new(B, C), new(B, C)
    if core == "lstm":
        c0 = c0.to(sdt) if c0 is not None else torch.zeros(B, H, dtype=sdt, device=dev)
        dc = dc_T.to(sdt, copy=True) if dc_T is not None else new(B, H).zero_()
        tc, k, deriv = new(B, H), new(B, H), new(B, C)
    else:
        deriv = new(B, H)
    for t in range(T - 1, -1, -1):
        dh = dout[t]
        if t == T - 1:
            if dh_T is not None:
                dh = dh + dh_T.to(sdt)
        elif core == "indrnn":
            dh = torch.addcmul(dh, dr_all[t + 1], w32)
        else:
            dh = torch.addmm(dh, dr_all[t + 1], w32)
        dz_t = dz if nesterov else dr_all[t]
        if core == "lstm":
            g = gates[t]
            torch.tanh(cs[t], out=tc)
            torch.mul(tc, tc, out=k).neg_().add_(1.0).mul_(g[:, 3 * H:])   # o_t (1 − tanh² c_t)
            dc.addcmul_(dh, k)
            torch.mul(dc, g[:, 2 * H:3 * H], out=dz_t[:, :H])
            torch.mul(dc, cs[t - 1] if t else c0, out=dz_t[:, H:2 * H])
            torch.mul(dc, g[:, :H], out=dz_t[:, 2 * H:3 * H])
            torch.mul(dh, tc, out=dz_t[:, 3 * H:])
            torch.mul(g, g, out=deriv)
            deriv[:, 2 * H:3 * H].neg_().add_(1.0)                          # tanh' = 1 − y²
            torch.sub(g[:, :2 * H], deriv[:, :2 * H], out=deriv[:, :2 * H])  # σ' = y − y²
            torch.sub(g[:, 3 * H:], deriv[:, 3 * H:], out=deriv[:, 3 * H:])
            dz_t.mul_(deriv)
            dc.mul_(g[:, H:2 * H])
        else:
            h = out[t]
            if core == "rnn_tanh":
                torch.mul(h, h, out=deriv).neg_().add_(1.0)
            elif core == "rnn_modrelu":
                torch.ne(h, 0, out=deriv)  # d h/d z = 1 where h ≠ 0, else 0 (relu'(0) = 0, sign(0) = 0)
            else:
                torch.gt(h, 0, out=deriv)
            torch.mul(dh, deriv, out=dz_t)
        if nesterov:    # da_t = (1 + μ_t) dz_t − μ_{t+1} dz_{t+1} (+ the a_T cotangent at the last step)
            dr = torch.mul(dz, 1.0 + lams[t], out=dr_all[t])
            if t < T - 1:
                dr.sub_(dz_next, alpha=lams[t + 1])
            elif da_T is not None:
                dr.add_(da_T.to(sdt))
            torch.mul(dr, -s, out=du_all[t])                                 # a_t = ... − s u_t
            dz, dz_next = dz_next, dz
        elif has_m:
            _adam_adjoint(t, dr_all[t], du_all[t], u, dv, dm, ck_v, ck_m, vbuf, mbuf, root, den, t1, t2, lams, s,
                          beta, eps, T)
        elif has_v:     # dv_t = da_t + λ_{t+1} dv_{t+1}; du_t = s dv_t
            (dv.add_(dr_all[t]) if t == T - 1 else dv.mul_(lams[t + 1]).add_(dr_all[t]))
            torch.mul(dv, s, out=du_all[t])
    # after the loop: the parameter gradients as single reductions / GEMMs over all steps
    if core == "indrnn":
        dw = (dr_all[1:] * out[:-1]).sum((0, 1))
        if h0 is not None:
            dw += (dr_all[0] * h0).sum(0)
        dh0 = dr_all[0] * w32
    else:
        dw = torch.mm(dr_all[1:].reshape(-1, C).t(), out[:-1].reshape(-1, H))
        if h0 is not None:
            dw.addmm_(dr_all[0].t(), h0)
        dh0 = torch.mm(dr_all[0], w32)
    if b is None:
        db = None
    elif core == "rnn_modrelu":
        db = (dr_all * out.sign()).sum((0, 1))   # ∂h/∂b = sign(z) = sign(h) where h ≠ 0
    else:
        db = dr_all.sum((0, 1))
    dc0 = dc if core == "lstm" else None
    dv0 = dv * lams[0] if has_v else None
    dm0 = dm * beta if has_m else None
    da0 = dz_next * -lams[0] if nesterov else None   # z_0 = a_0 + μ_0 (a_0 − a_{-1}); dz_next holds dz_0
    return du_all, dw, db, dh0, dc0, dv0, dm0, da0


def _adam_adjoint(t, da, du, u, dv, dm, ck_v, ck_m, vbuf, mbuf, root, den, t1, t2, lams, s, beta, eps, T):
    """One reverse step of the Adam / RMSProp drive (SPEC §1.2, eq. 15): dv, dm (the totals of v_t, m_t)
    updated in place, du_t written. v_t, m_t come from the chunk recomputed at the chunk's last step."""
    j, i = divmod(t, CHUNK)
    if t == T - 1 or i == CHUNK - 1:  # recompute this chunk's v_t, m_t from its checkpoint, as the forward did
        v, m = (ck_v[j] if vbuf is not None else None), ck_m[j]
        for k in range(i + 1):
            u_k = u[j * CHUNK + k]
            if vbuf is not None:
                v = torch.mul(v, lams[j * CHUNK + k], out=vbuf[k]).add_(u_k, alpha=s)
            m = torch.mul(m, beta, out=mbuf[k]).addcmul_(u_k, u_k, value=1.0 - beta)
    torch.sqrt(mbuf[i], out=root)
    torch.add(root, eps, out=den)
    num = vbuf[i] if vbuf is not None else torch.mul(u[t], s, out=t2)
    a = torch.div(num, den, out=t2)                       # a_t
    g_in = torch.div(da, den, out=t1)                     # ∂/∂num
    a.mul_(g_in).neg_()                                   # ∂/∂den = −da·num/den²
    # d√m/dm as reference.sqrt0: √m/(2m) with m clamped at the smallest normal (0 at m = 0)
    a.mul_(root).div_(root.mul_(root).clamp_min_(torch.finfo(root.dtype).tiny)).mul_(0.5)
    (dm.add_(a) if t == T - 1 else dm.mul_(beta).add_(a))
    torch.mul(u[t], dm, out=du).mul_(2.0 * (1.0 - beta))  # ∂m_t/∂u_t = 2(1-β) u_t
    if vbuf is None:        # RMSProp: a_t = s u_t / den
        du.add_(g_in, alpha=s)
    else:
        (dv.add_(g_in) if t == T - 1 else dv.mul_(lams[t + 1]).add_(g_in))
        du.add_(dv, alpha=s)


# ------------------------------------------------------------------------------------------ custom ops
def _empty(t):
    return t.new_empty(NOTHING)


@torch.library.custom_op("tritonrnn::step_loop_fwd", mutates_args=(), schema=(
    "(Tensor u, Tensor w_hh, Tensor? b_hh, Tensor? h0, Tensor? c0, Tensor? v0, Tensor? m0, Tensor? a0, str core, "
    "str dynamics, float mu, float s, float beta, float eps, int restart, int step_offset, bool save) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"))
def _step_loop_fwd_op(u, w_hh, b_hh, h0, c0, v0, m0, a0, core, dynamics, mu, s, beta, eps, restart, step_offset,
                      save):
    with torch.no_grad():
        return _forward(u, w_hh, b_hh, h0, c0, v0, m0, a0, core, dynamics, mu, s, beta, eps, restart, step_offset,
                        save)


@_step_loop_fwd_op.register_fake
def _(u, w_hh, b_hh, h0, c0, v0, m0, a0, core, dynamics, mu, s, beta, eps, restart, step_offset, save):
    T, B, C = u.shape
    H = w_hh.shape[-1]
    lstm = core == "lstm" and save
    has_v, has_m = _has(dynamics)
    n_ck = (T + CHUNK - 1) // CHUNK
    shapes = [(T, B, H), (B, H), (B, H) if core == "lstm" else NOTHING, (B, C) if has_v else NOTHING,
              (B, C) if has_m else NOTHING, (B, C) if dynamics == "nesterov" else NOTHING,
              (T, B, C) if lstm else NOTHING, (T, B, H) if lstm else NOTHING,
              (n_ck, B, C) if has_m and has_v and save else NOTHING, (n_ck, B, C) if has_m and save else NOTHING]
    sdt = torch.promote_types(u.dtype, torch.float32)
    return tuple(u.new_empty(shape, dtype=sdt) for shape in shapes)


@torch.library.custom_op("tritonrnn::step_loop_bwd", mutates_args=(), schema=(
    "(Tensor? dout, Tensor? dh_T, Tensor? dc_T, Tensor? dv_T, Tensor? dm_T, Tensor? da_T, Tensor? u, "
    "SymInt[] u_shape, ScalarType u_dtype, Tensor w_hh, "
    "Tensor? b_hh, Tensor? h0, Tensor? c0, Tensor? v0, Tensor? m0, Tensor? a0, Tensor out, Tensor gates, "
    "Tensor cs, Tensor ck_v, Tensor ck_m, str core, str dynamics, float mu, float s, float beta, float eps, "
    "int restart, int step_offset) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"))
def _step_loop_bwd_op(dout, dh_T, dc_T, dv_T, dm_T, da_T, u, u_shape, u_dtype, w_hh, b_hh, h0, c0, v0, m0, a0, out,
                      gates, cs, ck_v, ck_m, core, dynamics, mu, s, beta, eps, restart, step_offset):
    u = _u_carrier(u, u_shape, u_dtype, w_hh)
    with torch.no_grad():
        grads = _backward(dout, dh_T, dc_T, dv_T, dm_T, da_T, u, w_hh, b_hh, h0, c0, v0, out, gates, cs, ck_v, ck_m,
                          core, dynamics, mu, s, beta, eps, restart, step_offset)
    # in the dtypes of the inputs they belong to; absent ones as empty tensors
    return tuple(_empty(u) if g is None or x is None else g.to(x.dtype) for g, x in zip(grads, _grad_like(
        u, w_hh, b_hh, h0, c0, v0, m0, a0, core, dynamics)))


def _grad_like(u, w_hh, b_hh, h0, c0, v0, m0, a0, core, dynamics):
    """The inputs whose gradients the backward returns (None: returned empty)."""
    has_v, has_m = _has(dynamics)
    return (u, w_hh, b_hh, h0, c0 if core == "lstm" else None, v0 if has_v else None, m0 if has_m else None,
            a0 if dynamics == "nesterov" else None)


def _u_carrier(u, shape, dtype, like):
    """u, or where the forward did not save it (only Adam / RMSProp read u in the backward) a zero-stride shape
    and dtype carrier, never read. Made here, inside the op: passed in, it was a kernel of its own under
    torch.compile (inductor compiles an empty tensor's fill in C++: seconds of the first call, issue #17)."""
    return u if u is not None else like.new_empty((), dtype=dtype).expand(shape)


@_step_loop_bwd_op.register_fake
def _(dout, dh_T, dc_T, dv_T, dm_T, da_T, u, u_shape, u_dtype, w_hh, b_hh, h0, c0, v0, m0, a0, out, gates, cs, ck_v,
      ck_m, core, dynamics, mu, s, beta, eps, restart, step_offset):
    u = _u_carrier(u, u_shape, u_dtype, w_hh)
    return tuple(_empty(u) if x is None else torch.empty_like(x, memory_format=torch.contiguous_format)
                 for x in _grad_like(u, w_hh, b_hh, h0, c0, v0, m0, a0, core, dynamics))


def _setup(ctx, inputs, output):
    u, w_hh, b_hh, h0, c0, v0, m0, a0, core, dynamics, mu, s, beta, eps, restart, step_offset, save = inputs
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(*output[6:])   # the saved gates, c_t and drive checkpoints are state, not results
    ctx.hyper = (core, dynamics, mu, s, beta, eps, restart, step_offset)
    ctx.saved = save
    ctx.save_for_backward(u if _has(dynamics)[1] else None, w_hh, b_hh, h0, c0, v0, m0, a0, output[0],
                          *output[6:])
    ctx.u_meta = (u.shape, u.dtype)


def _backward_rule(ctx, dout, dh_T, dc_T, dv_T, dm_T, da_T, *_saved):
    if all(g is None for g in (dout, dh_T, dc_T, dv_T, dm_T, da_T)):
        return (None,) * 17
    if not ctx.saved:
        raise RuntimeError("tritonrnn's torch step loop ran its forward without keeping what the backward needs "
                           "(no input required grad then); call it again with grad enabled")
    if torch.is_grad_enabled():
        raise RuntimeError("tritonrnn's torch step loop: double backward is not supported (its backward is "
                           "hand-written and not itself differentiable); use the reference cells "
                           "(tritonrnn.reference) for higher-order gradients")
    u, w_hh, b_hh, h0, c0, v0, m0, a0, out, gates, cs, ck_v, ck_m = ctx.saved_tensors
    shape, dtype = ctx.u_meta
    grads = _step_loop_bwd_op(dout, dh_T, dc_T, dv_T, dm_T, da_T, u, shape, dtype, w_hh, b_hh, h0, c0, v0, m0, a0,
                              out, gates, cs, ck_v, ck_m, *ctx.hyper)
    # the op returns an absent gradient as an empty placeholder; which ones are absent follows from the family,
    # not from numel (with an empty batch the gradient of u is a real, zero-size one)
    core, dynamics = ctx.hyper[:2]
    has_v, has_m = _has(dynamics)
    present = (True, True, True, True, core == "lstm", has_v, has_m, dynamics == "nesterov")
    needs = ctx.needs_input_grad
    return tuple(g if needs[i] and present[i] else None for i, g in enumerate(grads)) + (None,) * 9


_step_loop_fwd_op.register_autograd(_backward_rule, setup_context=_setup)


# ------------------------------------------------------------------------------------------ the input GEMM
def input_drive(x, w_ih, b_ih):
    """u = x W_ihᵀ + b_ih [T, B, G·H], time-major and contiguous, in the state dtype: one GEMM over all steps
    (b_ih inside the dynamics, SPEC §1.1), as one op with its backward (dx, dW_ih: one GEMM each; db_ih: one
    sum). An op and not autograd's addmm so that under torch.compile nothing around the step-loop op is left
    for inductor to generate: at input size 1 it rewrites the GEMM and its backward as pointwise and reduction
    kernels and compiles each in C++, most of a compiled module's first call (issue #17)."""
    return _input_drive_op(x, w_ih, b_ih)


@torch.library.custom_op("tritonrnn::input_drive", mutates_args=(),
                         schema="(Tensor x, Tensor w_ih, Tensor? b_ih) -> Tensor")
def _input_drive_op(x, w_ih, b_ih):
    T, B, n_in = x.shape
    sdt = torch.promote_types(x.dtype, torch.float32)
    x2, w_t = x.to(sdt).reshape(T * B, n_in), w_ih.to(sdt).T
    u = torch.mm(x2, w_t) if b_ih is None else torch.addmm(b_ih.to(sdt), x2, w_t)
    return u.view(T, B, w_ih.shape[0])  # not -1: B may be 0


@_input_drive_op.register_fake
def _(x, w_ih, b_ih):
    T, B, _ = x.shape
    return x.new_empty((T, B, w_ih.shape[0]), dtype=torch.promote_types(x.dtype, torch.float32))


@torch.library.custom_op("tritonrnn::input_drive_bwd", mutates_args=(),
                         schema="(Tensor du, Tensor x, Tensor w_ih, bool[] needs) -> (Tensor, Tensor, Tensor)")
def _input_drive_bwd_op(du, x, w_ih, needs):
    T, B, n_in = x.shape
    sdt = torch.promote_types(x.dtype, torch.float32)
    du2 = du.to(sdt).reshape(T * B, w_ih.shape[0])
    dx = torch.mm(du2, w_ih.to(sdt)).view(T, B, n_in).to(x.dtype) if needs[0] else _empty(x)
    dw = torch.mm(du2.t(), x.to(sdt).reshape(T * B, n_in)).to(w_ih.dtype) if needs[1] else _empty(x)
    db = du2.sum(0).to(w_ih.dtype) if needs[2] else _empty(x)
    return dx, dw, db


@_input_drive_bwd_op.register_fake
def _(du, x, w_ih, needs):
    return (torch.empty_like(x, memory_format=torch.contiguous_format) if needs[0] else _empty(x),
            torch.empty_like(w_ih, memory_format=torch.contiguous_format) if needs[1] else _empty(x),
            x.new_empty(w_ih.shape[:1]) if needs[2] else _empty(x))


def _input_drive_setup(ctx, inputs, output):
    x, w_ih, b_ih = inputs
    ctx.save_for_backward(x, w_ih)


def _input_drive_backward(ctx, du):
    if torch.is_grad_enabled():  # as the step-loop op it feeds: not differentiable twice
        raise RuntimeError("tritonrnn's torch step loop: double backward is not supported (its backward is "
                           "hand-written and not itself differentiable); use the reference cells "
                           "(tritonrnn.reference) for higher-order gradients")
    x, w_ih = ctx.saved_tensors
    needs = [bool(n) for n in ctx.needs_input_grad[:3]]
    dx, dw, db = _input_drive_bwd_op(du, x, w_ih, needs)
    return tuple(g if need else None for g, need in zip((dx, dw, db), needs))


_input_drive_op.register_autograd(_input_drive_backward, setup_context=_input_drive_setup)
