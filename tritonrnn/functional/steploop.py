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
output itself), and u for Adam / RMSProp (their v_t, m_t are recomputed in the backward, chunk by chunk
from checkpoints). The backward is one reverse loop of one matrix product and four pointwise ops per step
(LSTM; two for the single-gate cores); dW_hh, db_hh and dh_0 are single reductions / GEMMs after it, and the
input-dynamics adjoints are reverse scans (h-independent) after that. Everything that does not need the
recurrence (the drive but for its scans, the activations' derivatives, tanh c_t) runs as whole-span ops on
a few steps at once (see "the math" below for why spans and not whole-sequence passes).

As torch.library custom ops (tritonrnn::step_loop_fwd / _bwd, fake implementations with the real strides)
the whole recurrence is one node of a torch.compile graph, whatever T is, and T may be symbolic.
Double backward is not supported: the backward op is not itself differentiable (torch raises on a
create_graph=True backward through it, see _backward).
"""
from __future__ import annotations


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
# On CPU every torch op costs a few μs of dispatch whatever its size, and at B ≤ 32 that, not arithmetic, is
# most of what a step costs. So time runs in sub-chunks of K steps, and everything that does not need h_{t-1}
# or dh_t runs as whole-sub-chunk ops on [K, B, ·] scratch buffers: the drive of SPEC §1.2 (but for its scans),
# b_hh, the backward's activation derivatives, the drive adjoints (but for their reverse scans). A step is left
# with the matrix product and the few pointwise ops that need the recurrence, on views made once per call (a
# view costs about what a small op does). K is the largest power of two ≤ CHUNK whose [K, B, G·H] buffer
# stays near 256 KB, so a sub-chunk's few buffers stay in a core's L2: out of cache an elementwise pass costs
# 3x more per element (measured 0.38 against 0.12 ns at B 32, H 128), and a whole-sequence [T, B, G·H] pass
# costs more than the step loop itself. Adam / RMSProp's v_t, m_t are checkpointed at every CHUNK-th step and
# recomputed chunk by chunk in the backward (the same ops as the forward, so bitwise the same values).
CHUNK = 16
SUB_ELEMS = 65536


def _sub_len(B, C):
    """K: steps per sub-chunk, a power of two dividing CHUNK (sub-chunks never straddle a checkpoint)."""
    k = CHUNK
    while k > 1 and k * B * C > SUB_ELEMS:
        k //= 2
    return k


def _spans(T, K):
    return [(t0, min(t0 + K, T)) for t0 in range(0, T, K)]


def _lams(mu, restart, step_offset, T):
    """λ_t of the momentum drive / μ_t of Nesterov for the T steps (SPEC §1.2, §1.3)."""
    if restart:
        return [restart_momentum(step_offset + t, restart) for t in range(T)]
    return [mu] * T


def _has(dynamics):
    """Which drive states the family carries: (v, m)."""
    return dynamics in ("momentum", "restart", "adam"), dynamics in ("adam", "rmsprop")


class _Drive:
    """The input dynamics of SPEC §1.2 (and Nesterov's h-independent part, §1.3) a span of steps at a time:
    the carried v, m (h-independent linear scans, one op a step each) and the additive drive of the span's
    steps (whole-span ops)."""

    def __init__(self, u, v0, m0, dynamics, lams, s, beta, eps, sdt, K):
        self.u, self.dynamics, self.lams, self.s, self.beta, self.eps = u, dynamics, lams, s, beta, eps
        B, C = u.shape[1:]
        new = (lambda *shape: torch.empty(*shape, B, C, dtype=sdt, device=u.device))
        has_v, has_m = _has(dynamics)
        self.v = (v0.to(sdt, copy=True) if v0 is not None else new().zero_()) if has_v else None
        self.m = (m0.to(sdt, copy=True) if m0 is not None else new().zero_()) if has_m else None
        # v_t, m_t of a span (momentum / restart scan v straight into the drive buffer)
        self.V = new(K) if has_v and has_m else None
        self.M = new(K) if has_m else None

    def states(self, t0, t1, V=None, M=None):
        """v_t, m_t for t in [t0, t1) into V, M (default self.V, self.M) from the carries, which then hold
        v_{t1-1}, m_{t1-1}."""
        K, u = t1 - t0, self.u[t0:t1]
        if self.v is not None:
            V = torch.mul(u, self.s, out=(self.V if V is None else V)[:K])
            prev = self.v
            for k in range(K):                                       # v_t = λ_t v_{t-1} + s u_t
                prev = V[k].add_(prev, alpha=self.lams[t0 + k])
            self.v.copy_(prev)
        if self.m is not None:
            M = torch.mul(u, u, out=(self.M if M is None else M)[:K]).mul_(1.0 - self.beta)
            prev = self.m
            for k in range(K):                                       # m_t = β m_{t-1} + (1-β) u_t²
                prev = M[k].add_(prev, alpha=self.beta)
            self.m.copy_(prev)

    def forward(self, t0, t1, b, D):
        """The additive drive of steps [t0, t1) into D[:t1-t0] (b_hh added where it is additive, b None
        otherwise): a_t (§1.2, eq. 15 for Adam / RMSProp), or b_hh − s u_t for Nesterov (§1.3)."""
        K, u, dyn = t1 - t0, self.u[t0:t1], self.dynamics
        D = D[:K]
        if dyn == "nesterov":
            return torch.sub(b, u, alpha=self.s, out=D) if b is not None else torch.mul(u, -self.s, out=D)
        if dyn in ("adam", "rmsprop"):
            self.states(t0, t1)
            den = torch.sqrt(self.M[:K], out=D).add_(self.eps)             # eq. 15: v_t / (√m_t + ε)
            num, s = (self.V[:K], 1.0) if dyn == "adam" else (u, self.s)
            return (torch.addcdiv(b, num, den, value=s, out=D) if b is not None else
                    torch.div(num, den, out=D).mul_(s))
        if dyn in ("momentum", "restart"):
            self.states(t0, t1, V=D)
        elif b is not None:
            return torch.add(u, b, out=D)
        else:
            D.copy_(u)
        return D if b is None else D.add_(b)


def _forward(u, w, b, h0, c0, v0, m0, a0, core, dynamics, mu, s, beta, eps, restart, step_offset, save):
    T, B, C = u.shape
    sdt = torch.promote_types(u.dtype, torch.float32)
    H = w.shape[-1]
    dev = u.device
    new = (lambda *shape: torch.empty(*shape, dtype=sdt, device=dev))
    u, b = u.to(sdt), (None if b is None else b.to(sdt))
    # W_hhᵀ made contiguous once: the [B, H] x [H, G·H] product in that layout is 1.4-1.7x faster on CPU
    # (measured at B 32, H 128 / 256) than through the transposed view
    w = w.to(sdt)
    wT = w if core == "indrnn" else w.t().contiguous()
    lams = _lams(mu, restart, step_offset, T)
    K = _sub_len(B, C)
    drive = _Drive(u, v0, m0, dynamics, lams, s, beta, eps, sdt, K)
    nothing = (lambda: u.new_empty(NOTHING))   # one per absent output: outputs may not alias
    has_v, has_m = _has(dynamics)
    adam_like = has_m and save
    n_ck = (T + CHUNK - 1) // CHUNK
    ck_v = u.new_empty((n_ck, B, C)) if adam_like and has_v else nothing()
    ck_m = u.new_empty((n_ck, B, C)) if adam_like else nothing()
    out = new(T, B, H)
    h = h0.to(sdt) if h0 is not None else torch.zeros(B, H, dtype=sdt, device=dev)
    b_add = None if core == "rnn_modrelu" else b   # modReLU's b is not additive
    lstm, nesterov = core == "lstm", dynamics == "nesterov"
    # the sub-chunk's z_t (the drive first, then the activated gates / h_t), c_t, h_t: copied into the saved
    # [T, ...] buffers once per sub-chunk; without a backward to follow nothing is kept
    Z = new(K, B, C)
    gates, cs, a_T, c_T = nothing(), nothing(), nothing(), nothing()
    if lstm:
        Cb, Hb, tc = new(K, B, H), new(K, B, H), new(B, H)
        views = [(Z[k], Z[k, :, :2 * H], Z[k, :, 2 * H:3 * H], Z[k, :, 3 * H:], Z[k, :, :H], Z[k, :, H:2 * H], Cb[k],
                  Hb[k]) for k in range(K)]   # gate order i, f, g, o (nn.LSTM's)
        gates = new(T, B, C) if save else None
        cs = new(T, B, H) if save else None
        c = c0.to(sdt) if c0 is not None else torch.zeros(B, H, dtype=sdt, device=dev)
    else:
        Hb, views = Z, [Z[k] for k in range(K)]
        if core == "rnn_modrelu":
            mag = new(B, H)
    if nesterov:
        a_prev = a0.to(sdt, copy=True) if a0 is not None else torch.zeros(B, C, dtype=sdt, device=dev)
        a_cur = torch.empty_like(a_prev)
    for t0, t1 in _spans(T, K):
        if adam_like and t0 % CHUNK == 0:   # the drive state entering the chunk, for the backward
            ck_m[t0 // CHUNK].copy_(drive.m)
            if has_v:
                ck_v[t0 // CHUNK].copy_(drive.v)
        drive.forward(t0, t1, b_add, Z)
        for k in range(t1 - t0):
            if lstm:
                z, z_if, z_g, z_o, z_i, z_f, c_k, h_k = views[k]
            else:
                z = views[k]
            if nesterov:  # SPEC §1.3: a_t = W_hh h + b_hh − s u_t; z_t = a_t + μ_t (a_t − a_{t-1})
                torch.addmm(z, h, wT, out=a_cur)
                torch.lerp(a_prev, a_cur, 1.0 + lams[t0 + k], out=z)   # weight ≥ 0.5: a_t − (a_t − a_{t-1})(−μ_t)
                a_prev, a_cur = a_cur, a_prev
            elif core == "indrnn":
                z.addcmul_(h, wT)                                        # a_t + w ⊙ h_{t-1}
            else:
                z.addmm_(h, wT)
            if lstm:
                z_if.sigmoid_()
                z_g.tanh_()
                z_o.sigmoid_()
                c = torch.mul(z_f, c, out=c_k).addcmul_(z_i, z_g)
                h = torch.mul(z_o, torch.tanh(c, out=tc), out=h_k)
            elif core == "rnn_tanh":
                h = z.tanh_()
            elif core == "rnn_modrelu":         # sign(z)·relu(|z| + b)
                torch.abs(z, out=mag)
                if b is not None:
                    mag.add_(b)
                h = z.sign_().mul_(mag.relu_())
            else:
                h = z.relu_()
        out[t0:t1].copy_(Hb[:t1 - t0])
        if not lstm:   # h_{t1-1} lives in Z, which the next span's drive overwrites
            h = out[t1 - 1]
        if lstm and save:
            gates[t0:t1].copy_(Z[:t1 - t0])
            cs[t0:t1].copy_(Cb[:t1 - t0])
    if lstm:
        c_T = c.clone()
        if not save:
            gates, cs = nothing(), nothing()
    if nesterov:
        a_T = a_prev
    v_T = drive.v if has_v else nothing()
    m_T = drive.m if has_m else nothing()
    return out, h.clone(), c_T, v_T, m_T, a_T, gates, cs, ck_v, ck_m


def _backward(dout, dh_T, dc_T, dv_T, dm_T, da_T, u, w, b, h0, c0, v0, out, gates, cs, ck_v, ck_m, core, dynamics,
              mu, s, beta, eps, restart, step_offset):
    T, B, C = u.shape
    sdt = out.dtype
    H = w.shape[-1]
    w32 = w.to(sdt).contiguous()  # [G·H, H]: dh = dz W_hh in the fast GEMM layout
    h0 = None if h0 is None else h0.to(sdt)  # None: zeros (no term in dW_hh)
    lams = _lams(mu, restart, step_offset, T)
    dev = u.device
    new = (lambda *shape: torch.empty(*shape, dtype=sdt, device=dev))
    lstm, nesterov = core == "lstm", dynamics == "nesterov"
    K = _sub_len(B, C)
    one = torch.ones((), dtype=sdt, device=dev)
    # dr_t: the gradient of the recurrent term's output (dz_t; Nesterov: da_t, SPEC §1.3), kept for all t for
    # dW_hh; then the input-dynamics adjoints turn it into du_t in place. A sub-chunk's dr_t is made in the
    # scratch DR and copied out once; dh_t reads dr_{t+1} there (DR[0] still holds the later sub-chunk's first)
    dr = new(T, B, C)
    DR, dh, DO = new(K, B, C), new(B, H), (None if dout is None else new(K, B, H))
    nxt = [DR[k + 1] if k < K - 1 else DR[0] for k in range(K)]
    if dh_T is not None:
        dh_T = dh_T.to(sdt)
    if nesterov:     # dz_t, dz_{t+1} of the gates, apart from dr_t = da_t
        dz_pair = [new(B, C), new(B, C)]
    if lstm:
        c0 = c0.to(sdt) if c0 is not None else torch.zeros(B, H, dtype=sdt, device=dev)
        dc = dc_T.to(sdt, copy=True) if dc_T is not None else new(B, H).zero_()
        dc_u = dc.unsqueeze(1)
        # per sub-chunk: P = [g σ'(i), c_{t-1} σ'(f), i tanh'(g)] (the factors of dc in dz_i, dz_f, dz_g),
        # Q = tanh(c_t) σ'(o) (of dh in dz_o), Kc = o (1 − tanh² c_t) (of dh in dc), F = f (of dc in dc_{t-1});
        # σ' = y − y², tanh' = 1 − y²
        P, Q, Kc, F, S = new(K, B, 3, H), new(K, B, H), new(K, B, H), new(K, B, H), new(K, B, C)
        lviews = [(P[k], Q[k], Kc[k], F[k]) for k in range(K)]
    else:
        deriv = new(K, B, H)
    for t0, t1 in reversed(_spans(T, K)):
        n = t1 - t0
        if dout is not None:
            DO[:n].copy_(dout[t0:t1])
        if lstm:
            G, Sk, Pk, Qk, Kk = gates[t0:t1], S[:n], P[:n], Q[:n], Kc[:n]
            torch.addcmul(G, G, G, value=-1.0, out=Sk)                                  # σ' for i, f, o
            torch.addcmul(one, G[..., 2 * H:3 * H], G[..., 2 * H:3 * H], value=-1.0, out=Sk[..., 2 * H:3 * H])
            torch.mul(G[..., 2 * H:3 * H], Sk[..., :H], out=Pk[:, :, 0])
            if t0:
                torch.mul(cs[t0 - 1:t1 - 1], Sk[..., H:2 * H], out=Pk[:, :, 1])
            else:
                torch.mul(c0, Sk[0, :, H:2 * H], out=Pk[0, :, 1])
                torch.mul(cs[:n - 1], Sk[1:, :, H:2 * H], out=Pk[1:, :, 1])
            torch.mul(G[..., :H], Sk[..., 2 * H:3 * H], out=Pk[:, :, 2])
            tanh_c = torch.tanh(cs[t0:t1], out=Qk)
            torch.addcmul(G[..., 3 * H:], torch.mul(G[..., 3 * H:], tanh_c, out=Kk), tanh_c, value=-1.0, out=Kk)
            tanh_c.mul_(Sk[..., 3 * H:])
            F[:n].copy_(G[..., H:2 * H])
        else:
            h, d = out[t0:t1], deriv[:n]
            if core == "rnn_tanh":
                torch.addcmul(one, h, h, value=-1.0, out=d)
            elif core == "rnn_modrelu":
                torch.ne(h, 0, out=d)  # d h/d z = 1 where h ≠ 0, else 0 (relu'(0) = 0, sign(0) = 0)
            else:
                torch.gt(h, 0, out=d)
        for k in range(n - 1, -1, -1):
            t = t0 + k
            if t == T - 1:    # dh_t = dout_t + dr_{t+1} W_hh (IndRNN: ⊙ w); the last step's from h_T
                if dout is None:
                    dh.copy_(dh_T) if dh_T is not None else dh.zero_()
                else:
                    torch.add(DO[k], dh_T, out=dh) if dh_T is not None else dh.copy_(DO[k])
            elif core == "indrnn":
                torch.mul(nxt[k], w32, out=dh) if dout is None else torch.addcmul(DO[k], nxt[k], w32, out=dh)
            else:
                torch.mm(nxt[k], w32, out=dh) if dout is None else torch.addmm(DO[k], nxt[k], w32, out=dh)
            dz = dz_pair[0] if nesterov else DR[k]
            if lstm:
                p, q, kc, f = lviews[k]
                dc.addcmul_(dh, kc)
                torch.mul(dc_u, p, out=dz[:, :3 * H].view(B, 3, H))
                torch.mul(dh, q, out=dz[:, 3 * H:])
                dc.mul_(f)
            else:
                torch.mul(dh, deriv[k], out=dz)
            if nesterov:    # da_t = (1 + μ_t) dz_t − μ_{t+1} dz_{t+1} (+ the a_T cotangent at the last step)
                da = torch.mul(dz, 1.0 + lams[t], out=DR[k])
                if t < T - 1:
                    da.sub_(dz_pair[1], alpha=lams[t + 1])
                elif da_T is not None:
                    da.add_(da_T.to(sdt))
                dz_pair.reverse()
        dr[t0:t1].copy_(DR[:n])
    # after the loop: the parameter gradients as single reductions / GEMMs over all steps
    if core == "indrnn":
        dw = (dr[1:] * out[:-1]).sum((0, 1))
        if h0 is not None:
            dw += (dr[0] * h0).sum(0)
        dh0 = dr[0] * w32
    else:
        dw = torch.mm(dr[1:].reshape(-1, C).t(), out[:-1].reshape(-1, H))
        if h0 is not None:
            dw.addmm_(dr[0].t(), h0)
        dh0 = torch.mm(dr[0], w32)
    if b is None:
        db = None
    elif core == "rnn_modrelu":
        db = (dr * out.sign()).sum((0, 1))   # ∂h/∂b = sign(z) = sign(h) where h ≠ 0
    else:
        db = dr.sum((0, 1))
    dc0 = dc if lstm else None
    da0 = dz_pair[1] * -lams[0] if nesterov else None   # z_0 = a_0 + μ_0 (a_0 − a_{-1}); dz_pair[1] holds dz_0
    dv0, dm0 = _drive_adjoint(dr, dv_T, dm_T, u, ck_v, ck_m, dynamics, lams, s, beta, eps, sdt)
    return dr, dw, db, dh0, dc0, dv0, dm0, da0


def _drive_adjoint(dr, dv_T, dm_T, u, ck_v, ck_m, dynamics, lams, s, beta, eps, sdt):
    """The input dynamics' adjoint (SPEC §1.2, §1.3), in place: dr holds da_t on entry and du_t on return.
    Their h-independent reverse scans, one op a step each (Adam: two, and two to recompute v_t, m_t), the rest
    whole-span. Returns the gradients of v_0, m_0 (None for a state the family lacks)."""
    T, B, C = dr.shape
    has_v, has_m = _has(dynamics)
    if dynamics == "nesterov":     # a_t = ... − s u_t
        dr.mul_(-s)
    if not (has_v or has_m):
        return None, None
    K = _sub_len(B, C)
    if not has_m:   # momentum / restart: dv_t = da_t + λ_{t+1} dv_{t+1}, in place; du_t = s dv_t
        for t0, t1 in reversed(_spans(T, K)):
            for t in range(t1 - 1, t0 - 1, -1):
                if t < T - 1:
                    dr[t].add_(dr[t + 1], alpha=lams[t + 1])
                elif dv_T is not None:
                    dr[t].add_(dv_T.to(sdt))
            dr[t0 + 1:t1 + 1].mul_(s)   # dv_{t1} was read by step t1 − 1 above: scaled now
        dv0 = dr[0] * lams[0]
        dr[0].mul_(s)
        return dv0, None
    # Adam / RMSProp (eq. 15): a_t = num_t / den_t, num_t = v_t (Adam) or s u_t, den_t = √m_t + ε. v_t, m_t of a
    # checkpoint chunk are recomputed (as the forward did, in its spans), then its spans run in reverse
    u = u.to(sdt)
    drive = _Drive(u, None, None, dynamics, lams, s, beta, eps, sdt, 0)  # its V, M: the chunk's below
    new = (lambda *shape: torch.empty(*shape, B, C, dtype=sdt, device=dr.device))
    Vc, Mc = (new(CHUNK) if has_v else None), new(CHUNK)
    root, den, g_in = new(K), new(K), new(K)
    dv = (dv_T.to(sdt, copy=True) if dv_T is not None else new().zero_()) if has_v else None
    dm = dm_T.to(sdt, copy=True) if dm_T is not None else new().zero_()
    for c0 in range((T - 1) // CHUNK * CHUNK, -1, -CHUNK):
        c1 = min(c0 + CHUNK, T)
        drive.m.copy_(ck_m[c0 // CHUNK])
        if has_v:
            drive.v.copy_(ck_v[c0 // CHUNK])
        spans = _spans(c1 - c0, K)
        for s0, s1 in spans:
            drive.states(c0 + s0, c0 + s1, V=(Vc[s0:s1] if has_v else None), M=Mc[s0:s1])
        for s0, s1 in reversed(spans):
            n, t0, t1 = s1 - s0, c0 + s0, c0 + s1
            M, u_k, da = Mc[s0:s1], u[t0:t1], dr[t0:t1]
            r = torch.sqrt(M, out=root[:n])
            d = torch.add(r, eps, out=den[:n])
            gi = torch.div(da, d, out=g_in[:n])                             # ∂/∂num
            dm_loc = torch.div(Vc[s0:s1], d, out=M) if has_v else torch.div(u_k, d, out=M).mul_(s)  # a_t (M spent)
            dm_loc.mul_(gi).neg_()                                          # ∂/∂den = −da·num/den²
            # d√m/dm as reference.sqrt0: √m/(2m) with m clamped at the smallest normal (0 at m = 0)
            dm_loc.mul_(r).div_(r.mul_(r).clamp_min_(torch.finfo(sdt).tiny)).mul_(0.5)
            for k in range(n - 1, -1, -1):   # dm_t = ∂_t + β dm_{t+1} (the m_T cotangent as is at the last step)
                dm_loc[k].add_(dm_loc[k + 1] if k < n - 1 else dm, alpha=1.0 if t0 + k == T - 1 else beta)
            dm.copy_(dm_loc[0])
            torch.mul(u_k, dm_loc, out=da).mul_(2.0 * (1.0 - beta))           # ∂m_t/∂u_t = 2(1-β) u_t
            if not has_v:       # RMSProp: a_t = s u_t / den
                da.add_(gi, alpha=s)
                continue
            for k in range(n - 1, -1, -1):   # dv_t = ∂_t + λ_{t+1} dv_{t+1}
                t = t0 + k
                gi[k].add_(gi[k + 1] if k < n - 1 else dv, alpha=1.0 if t == T - 1 else lams[t + 1])
            dv.copy_(gi[0])
            da.add_(gi, alpha=s)
    return (dv * lams[0] if has_v else None), dm * beta


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
