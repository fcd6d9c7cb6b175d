"""The torch path of one recurrent layer as one op over the whole sequence, with a hand-written backward
(issue #16: CPU speed; issue #17: one opaque node per layer and direction under torch.compile).

    step_loop(x, w_ih, b_ih, weight_hh, bias_hh, h0, c0, v0, m0, a0, *, core, dynamics, mu, s, beta, eps,
              restart, step_offset) -> (out [T, B, H], h_T, c_T, {name: final state})

x is the layer's input, time-major [T, B, I] with any strides; the op computes the input drive
u_t = W_ih x_t + b_ih itself (with w_ih None, u_t = x_t (+ b_ih): the functional recurrences pass the drive),
then, per SPEC §1.1-1.3: the input dynamics D (plain / momentum / restart / Adam / RMSProp: h-independent;
Nesterov: inside the recurrence, SPEC §1.3), z_t and the core update (LSTM, RNN tanh / relu, the orthogonal
modReLU core, IndRNN; reference.cells names them). States and arithmetic are fp32 (fp64 for fp64 input); out
and the final states come back in that state dtype (the caller casts).

Why an op and not autograd over the reference steps: autograd records ~15 nodes per step and keeps every
intermediate (the issue measured 2-16x nn.LSTM on CPU). Here the forward runs under no grad and saves only
what the backward needs: the activated gates and c_t (LSTM), h_t (the output itself), and for Adam / RMSProp
their drive state every CHUNK steps (v_t, m_t and u_t are recomputed in the backward from x, which autograd
keeps anyway). The backward is one reverse loop of one matrix product and four pointwise ops per step (LSTM;
two for the single-gate cores). Everything that does not need the recurrence (the input GEMM, the drive but
for its scans, the activations' derivatives, tanh c_t, the drive adjoints but for their reverse scans, and
the gradients of W_ih, b_ih, W_hh, b_hh, x) runs as whole-span ops on a few steps at once ("the math" below
says why spans and not whole-sequence passes): no [T, B, G·H] buffer is made but the saved gates.

As torch.library custom ops (tritonrnn::step_loop_fwd / _bwd, fake implementations with the real strides)
the whole recurrence is one node of a torch.compile graph, whatever T is, and T may be symbolic.
Double backward is not supported: the backward op is not itself differentiable (torch raises on a
create_graph=True backward through it, see _backward_rule).
"""
from __future__ import annotations

import torch

from ..schedules import restart_momentum

__all__ = ["step_loop"]

NOTHING = (0,)  # the shape of an absent output (custom ops return no None)
CORES = ("lstm", "rnn_tanh", "rnn_relu", "rnn_modrelu", "indrnn")


def step_loop(x, w_ih, b_ih, weight_hh, bias_hh, h0, c0, v0, m0, a0, *, core, dynamics, mu=0.0, s=1.0, beta=0.0,
              eps=1.0, restart=None, step_offset=0):
    """The layer's recurrence on the input x [T, B, I] (module docstring). h0 [B, H], c0 (the LSTM core),
    v0, m0, a0 (the carried states the family has): None starts from zeros, made inside the op (under
    torch.compile a zeros tensor outside it is a kernel of its own that inductor compiles: seconds).
    Returns (out [T, B, H] contiguous, h_T, c_T or None, {name: final state}) in the state dtype."""
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                           for t in (x, w_ih, b_ih, weight_hh, bias_hh, h0, c0, v0, m0, a0))
    out, h_T, c_T, v_T, m_T, a_T, *_saved = _step_loop_fwd_op(
        x, w_ih, b_ih, weight_hh, bias_hh, h0, c0, v0, m0, a0, core, dynamics, float(mu or 0.0), float(s or 0.0),
        float(beta or 0.0), float(eps or 0.0), int(restart or 0), int(step_offset), save)
    final = {"momentum": {"v": v_T}, "restart": {"v": v_T}, "adam": {"v": v_T, "m": m_T}, "rmsprop": {"m": m_T},
             "nesterov": {"a": a_T}}.get(dynamics, {})
    return out, h_T, (c_T if core == "lstm" else None), final


# ------------------------------------------------------------------------------------------ the math
# On CPU a step's cost is its elementwise passes over [B, G·H] and a few μs of dispatch per op, and a
# whole-sequence [T, B, ·] buffer costs more than either: its first touch page-faults (measured ~2 μs per
# 4 KB page on the 2-core machine: at the paper's shape the old whole-sequence input drive u and its bias
# copy were a third of an IndRNN forward), and out of cache an elementwise pass costs 3x more per element
# (0.38 against 0.12 ns at B 32, H 128). So time runs in spans of K steps, and everything that does not need
# h_{t-1} or dh_t runs as whole-span ops on [K, B, ·] scratch buffers reused span after span; a step is left
# with the matrix product and the few pointwise ops of the recurrence, on views made once per call. K is the
# largest power of two ≤ CHUNK whose [K, B, G·H] buffer stays near 256 KB (a span's few buffers stay in a
# core's L2). Adam / RMSProp's v_t, m_t are checkpointed at every CHUNK-th step and recomputed chunk by chunk
# in the backward, span by span as the forward made them (the same ops, so bitwise the same values).
CHUNK = 16
SUB_ELEMS = 65536


def _sub_len(B, C):
    """K: steps per span, a power of two dividing CHUNK (spans never straddle a checkpoint)."""
    k = CHUNK
    while k > 1 and k * B * C > SUB_ELEMS:
        k //= 2
    return k


def _spans(t0, t1, K):
    return [(a, min(a + K, t1)) for a in range(t0, t1, K)]


def _lams(mu, restart, step_offset, T):
    """λ_t of the momentum drive / μ_t of Nesterov for the T steps (SPEC §1.2, §1.3)."""
    if restart:
        return [restart_momentum(step_offset + t, restart) for t in range(T)]
    return [mu] * T


def _has(dynamics):
    """Which drive states the family carries: (v, m)."""
    return dynamics in ("momentum", "restart", "adam"), dynamics in ("adam", "rmsprop")


class _Input:
    """u_t = W_ih x_t + b_ih (SPEC §1.1) a span at a time, and its adjoint (dx, dW_ih, db_ih accumulated)."""

    def __init__(self, x, w_ih, b_ih, sdt):
        self.x, self.sdt = x, sdt
        self.w = None if w_ih is None else w_ih.to(sdt)
        self.wT = None if w_ih is None else self.w.t().contiguous()   # [I, G·H]: the fast GEMM layout
        self.b = None if b_ih is None else b_ih.to(sdt)

    def span(self, t0, t1, out, extra_bias=None):
        """u_t (+ extra_bias) for t in [t0, t1), into out[:t1-t0] (or x's own slice where nothing is added)."""
        n, B = t1 - t0, self.x.shape[1]
        x = self.x[t0:t1].to(self.sdt)
        bias = self.b if extra_bias is None else (extra_bias if self.b is None else self.b + extra_bias)
        if self.w is None:
            return x if bias is None else torch.add(x, bias, out=out[:n])
        x2, o2 = x.reshape(n * B, x.shape[2]), out[:n].view(n * B, self.wT.shape[1])
        (torch.mm(x2, self.wT, out=o2) if bias is None else torch.addmm(bias, x2, self.wT, out=o2))
        return out[:n]

    def adjoint(self, t0, t1, du, dx, dw, db):
        """du [n, B, G·H] of steps [t0, t1) into dx[t0:t1] and the sums dw (dW_ih), db (db_ih)."""
        n, B, C = du.shape
        du2 = du.reshape(n * B, C)
        if self.w is None:
            dx[t0:t1].copy_(du)
        else:
            I = self.w.shape[1]
            torch.mm(du2, self.w, out=dx[t0:t1].view(n * B, I))
            dw.addmm_(du2.t(), self.x[t0:t1].to(self.sdt).reshape(n * B, I))
        if db is not None:
            db.add_(du2.sum(0))


class _Drive:
    """The input dynamics of SPEC §1.2 (and Nesterov's h-independent part, §1.3) a span at a time: the
    carried v, m (h-independent linear scans, one op a step each) and the additive drive of the span's steps
    (whole-span ops), from the span's u."""

    def __init__(self, v0, m0, dynamics, lams, s, beta, eps, sdt, K, B, C, device):
        self.dynamics, self.lams, self.s, self.beta, self.eps = dynamics, lams, s, beta, eps
        new = (lambda *shape: torch.empty(*shape, B, C, dtype=sdt, device=device))
        has_v, has_m = _has(dynamics)
        self.v = (v0.to(sdt, copy=True) if v0 is not None else new().zero_()) if has_v else None
        self.m = (m0.to(sdt, copy=True) if m0 is not None else new().zero_()) if has_m else None
        # v_t, m_t of a span (momentum / restart scan v straight into the drive buffer)
        self.V = new(K) if has_v and has_m else None
        self.M = new(K) if has_m else None

    def states(self, u, t0, V=None, M=None):
        """v_t, m_t of the steps t0, t0 + 1, ... of u [n, B, C] into V, M (default self.V, self.M) from the
        carries, which then hold the last step's."""
        n = u.shape[0]
        if self.v is not None:
            V = torch.mul(u, self.s, out=(self.V if V is None else V)[:n])
            prev = self.v
            for k in range(n):                                       # v_t = λ_t v_{t-1} + s u_t
                prev = V[k].add_(prev, alpha=self.lams[t0 + k])
            self.v.copy_(prev)
        if self.m is not None:
            M = torch.mul(u, u, out=(self.M if M is None else M)[:n]).mul_(1.0 - self.beta)
            prev = self.m
            for k in range(n):                                       # m_t = β m_{t-1} + (1-β) u_t²
                prev = M[k].add_(prev, alpha=self.beta)
            self.m.copy_(prev)

    def forward(self, u, t0, b, D):
        """The additive drive of the steps of u into D[:n] (b_hh added where it is additive, b None otherwise):
        a_t (§1.2, eq. 15 for Adam / RMSProp), or b_hh − s u_t for Nesterov (§1.3). Not for plain (u + b_hh
        is made by _Input.span straight into D)."""
        n, dyn = u.shape[0], self.dynamics
        D = D[:n]
        if dyn == "nesterov":
            return torch.sub(b, u, alpha=self.s, out=D) if b is not None else torch.mul(u, -self.s, out=D)
        if dyn in ("adam", "rmsprop"):
            self.states(u, t0)
            den = torch.sqrt(self.M[:n], out=D).add_(self.eps)             # eq. 15: v_t / (√m_t + ε)
            num, s = (self.V[:n], 1.0) if dyn == "adam" else (u, self.s)
            return (torch.addcdiv(b, num, den, value=s, out=D) if b is not None else
                    torch.div(num, den, out=D).mul_(s))
        self.states(u, t0, V=D)   # momentum / restart
        return D if b is None else D.add_(b)


def _forward(x, w_ih, b_ih, w, b, h0, c0, v0, m0, a0, core, dynamics, mu, s, beta, eps, restart, step_offset, save):
    T, B = x.shape[:2]
    C = w_ih.shape[0] if w_ih is not None else x.shape[2]
    sdt = torch.promote_types(x.dtype, torch.float32)
    H = w.shape[-1]
    dev = x.device
    new = (lambda *shape: torch.empty(*shape, dtype=sdt, device=dev))
    nothing = (lambda: x.new_empty(NOTHING, dtype=sdt))   # one per absent output: outputs may not alias
    inp = _Input(x, w_ih, b_ih, sdt)
    b = None if b is None else b.to(sdt)
    # W_hhᵀ made contiguous once: the [B, H] x [H, G·H] product in that layout is 1.4-1.7x faster on CPU
    # (measured at B 32, H 128 / 256) than through the transposed view
    w = w.to(sdt)
    wT = w if core == "indrnn" else w.t().contiguous()
    lams = _lams(mu, restart, step_offset, T)
    K = _sub_len(B, C)
    drive = _Drive(v0, m0, dynamics, lams, s, beta, eps, sdt, K, B, C, dev)
    has_v, has_m = _has(dynamics)
    adam_like = has_m and save
    n_ck = (T + CHUNK - 1) // CHUNK
    ck_v = new(n_ck, B, C) if adam_like and has_v else nothing()
    ck_m = new(n_ck, B, C) if adam_like else nothing()
    out = new(T, B, H)
    h = h0.to(sdt) if h0 is not None else torch.zeros(B, H, dtype=sdt, device=dev)
    b_add = None if core == "rnn_modrelu" else b   # modReLU's b is not additive
    lstm, nesterov, plain = core == "lstm", dynamics == "nesterov", dynamics == "plain"
    # the span's z_t (the drive first, then the activated gates / h_t), c_t, h_t: copied into the saved
    # [T, ...] buffers once per span; without a backward to follow nothing is kept
    Z, U = new(K, B, C), (None if plain else new(K, B, C))
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
    for t0, t1 in _spans(0, T, K):
        if adam_like and t0 % CHUNK == 0:   # the drive state entering the chunk, for the backward
            ck_m[t0 // CHUNK].copy_(drive.m)
            if has_v:
                ck_v[t0 // CHUNK].copy_(drive.v)
        if plain:
            inp.span(t0, t1, Z, extra_bias=b_add)
            if inp.w is None and b_add is None and inp.b is None:
                Z[:t1 - t0].copy_(x[t0:t1])
        else:
            drive.forward(inp.span(t0, t1, U), t0, b_add, Z)
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


def _backward(dout, dh_T, dc_T, dv_T, dm_T, da_T, x, w_ih, b_ih, w, b, h0, c0, out, gates, cs, ck_v, ck_m, core,
              dynamics, mu, s, beta, eps, restart, step_offset):
    T, B = x.shape[:2]
    C = w_ih.shape[0] if w_ih is not None else x.shape[2]
    sdt = out.dtype
    H = w.shape[-1]
    dev = x.device
    new = (lambda *shape: torch.empty(*shape, dtype=sdt, device=dev))
    w32 = w.to(sdt).contiguous()  # [G·H, H]: dh = dz W_hh in the fast GEMM layout
    h0 = None if h0 is None else h0.to(sdt)  # None: zeros (no term in dW_hh)
    lams = _lams(mu, restart, step_offset, T)
    lstm, nesterov = core == "lstm", dynamics == "nesterov"
    K = _sub_len(B, C)
    one = torch.ones((), dtype=sdt, device=dev)
    inp = _Input(x, w_ih, b_ih, sdt)
    adj = _DriveAdjoint(inp, dv_T, dm_T, ck_v, ck_m, dynamics, lams, s, beta, eps, sdt, K, B, C, T, dev)
    # the gradients the spans add to
    dx = new(*x.shape[:2], x.shape[2])
    dw_ih = None if w_ih is None else new(*w_ih.shape).zero_()
    db_ih = None if b_ih is None else new(C).zero_()
    dw = new(*w.shape).zero_()
    db = None if b is None else new(C).zero_()
    # dr_t: the gradient of the recurrent term's output (dz_t; Nesterov: da_t, SPEC §1.3), a span at a time in
    # DR; dh_t reads dr_{t+1} there (at a span's last step DR[0] still holds the later span's first)
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
        # per span: P = [g σ'(i), c_{t-1} σ'(f), i tanh'(g)] (the factors of dc in dz_i, dz_f, dz_g),
        # Q = tanh(c_t) σ'(o) (of dh in dz_o), Kc = o (1 − tanh² c_t) (of dh in dc), F = f (of dc in dc_{t-1});
        # σ' = y − y², tanh' = 1 − y²
        P, Q, Kc, F, S = new(K, B, 3, H), new(K, B, H), new(K, B, H), new(K, B, H), new(K, B, C)
        lviews = [(P[k], Q[k], Kc[k], F[k]) for k in range(K)]
    else:
        deriv = new(K, B, H)
    for t0, t1 in reversed(_spans(0, T, K)):
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
            hs, d = out[t0:t1], deriv[:n]
            if core == "rnn_tanh":
                torch.addcmul(one, hs, hs, value=-1.0, out=d)
            elif core == "rnn_modrelu":
                torch.ne(hs, 0, out=d)  # d h/d z = 1 where h ≠ 0, else 0 (relu'(0) = 0, sign(0) = 0)
            else:
                torch.gt(hs, 0, out=d)
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
        # the span's share of dW_hh = Σ_t dr_tᵀ h_{t-1} and db_hh (h_{-1} = h0; None: zeros, no term)
        dr = DR[:n]
        if core == "indrnn":
            if t0:
                dw.add_(torch.mul(dr, out[t0 - 1:t1 - 1]).sum((0, 1)))
            else:
                if h0 is not None:
                    dw.add_(torch.mul(dr[0], h0).sum(0))
                dw.add_(torch.mul(dr[1:], out[:n - 1]).sum((0, 1)))
        elif t0:
            dw.addmm_(dr.reshape(n * B, C).t(), out[t0 - 1:t1 - 1].reshape(n * B, H))
        else:
            if h0 is not None:
                dw.addmm_(dr[0].t(), h0)
            dw.addmm_(dr[1:].reshape((n - 1) * B, C).t(), out[:n - 1].reshape((n - 1) * B, H))
        if db is not None:   # modReLU: ∂h/∂b = sign(z) = sign(h) where h ≠ 0
            db.add_((torch.mul(dr, out[t0:t1].sign()) if core == "rnn_modrelu" else dr).reshape(n * B, C).sum(0))
        if t0 == 0:
            dh0 = dr[0] * w32 if core == "indrnn" else torch.mm(dr[0], w32)
        # the input dynamics' adjoint (du_t from dr_t), then dx, dW_ih, db_ih
        inp.adjoint(t0, t1, adj.span(dr, t0, t1), dx, dw_ih, db_ih)
    dc0 = dc if lstm else None
    da0 = dz_pair[1] * -lams[0] if nesterov else None   # z_0 = a_0 + μ_0 (a_0 − a_{-1}); dz_pair[1] holds dz_0
    dv0, dm0 = adj.initial()
    return dx, dw_ih, db_ih, dw, db, dh0, dc0, dv0, dm0, da0


class _DriveAdjoint:
    """The input dynamics' adjoint (SPEC §1.2, §1.3) a span at a time, in reverse time: du_t from da_t (dr_t).
    Its reverse scans carry dv, dm from span to span, one op a step each; the rest is whole-span. Adam /
    RMSProp recompute u_t, v_t, m_t of a checkpoint chunk when the backward enters it (span by span, the
    forward's ops)."""

    def __init__(self, inp, dv_T, dm_T, ck_v, ck_m, dynamics, lams, s, beta, eps, sdt, K, B, C, T, device):
        self.inp, self.ck_v, self.ck_m, self.dynamics = inp, ck_v, ck_m, dynamics
        self.lams, self.s, self.beta, self.eps, self.sdt, self.K, self.T = lams, s, beta, eps, sdt, K, T
        new = (lambda *shape: torch.empty(*shape, B, C, dtype=sdt, device=device))
        self.has_v, self.has_m = _has(dynamics)
        self.DU = None if dynamics == "plain" else new(K)
        self.dv = (dv_T.to(sdt, copy=True) if dv_T is not None else new().zero_()) if self.has_v else None
        self.dm = (dm_T.to(sdt, copy=True) if dm_T is not None else new().zero_()) if self.has_m else None
        self.last = True   # the next span processed is the sequence's last (the cotangents of v_T, m_T as is)
        if self.has_m:
            self.drive = _Drive(None, None, dynamics, lams, s, beta, eps, sdt, 0, B, C, device)
            self.Uc, self.Mc = new(CHUNK), new(CHUNK)
            self.Vc = new(CHUNK) if self.has_v else None
            self.root, self.den, self.g_in = new(K), new(K), new(K)

    def span(self, da, t0, t1):
        """du of steps [t0, t1) (a buffer valid until the next call) from their da [n, B, C]."""
        n, dyn, s, lams, T = t1 - t0, self.dynamics, self.s, self.lams, self.T
        last, self.last = self.last, False
        if dyn == "plain":
            return da
        DU = self.DU[:n]
        if dyn == "nesterov":     # a_t = ... − s u_t
            return torch.mul(da, -s, out=DU)
        if not self.has_m:        # momentum / restart: dv_t = da_t + λ_{t+1} dv_{t+1}; du_t = s dv_t
            prev, alpha = self.dv, (1.0 if last else lams[t1] if t1 < T else 1.0)
            for k in range(n - 1, -1, -1):
                prev = torch.add(da[k], prev, alpha=alpha, out=DU[k])
                alpha = lams[t0 + k]
            self.dv.copy_(DU[0])
            return DU.mul_(s)
        return self._adam_like(da, t0, t1, DU, last)

    def _adam_like(self, da, t0, t1, du, last):
        """Adam / RMSProp (eq. 15): a_t = num_t / den_t, num_t = v_t (Adam) or s u_t, den_t = √m_t + ε."""
        n, s, beta, lams, T = t1 - t0, self.s, self.beta, self.lams, self.T
        c0 = t0 // CHUNK * CHUNK
        if last or t1 % CHUNK == 0:   # entering a checkpoint chunk (from its end): recompute it
            d = self.drive
            d.m.copy_(self.ck_m[c0 // CHUNK])
            if self.has_v:
                d.v.copy_(self.ck_v[c0 // CHUNK])
            for a, e in _spans(c0, min(c0 + CHUNK, T), self.K):
                u = self.inp.span(a, e, self.Uc[a - c0:])
                if u.data_ptr() != self.Uc[a - c0].data_ptr():   # x's own slice (no input GEMM): keep a copy
                    u = self.Uc[a - c0:e - c0].copy_(u)
                d.states(u, a, V=(self.Vc[a - c0:e - c0] if self.has_v else None), M=self.Mc[a - c0:e - c0])
        i0, i1 = t0 - c0, t1 - c0
        M, u = self.Mc[i0:i1], self.Uc[i0:i1]
        r = torch.sqrt(M, out=self.root[:n])
        den = torch.add(r, self.eps, out=self.den[:n])
        gi = torch.div(da, den, out=self.g_in[:n])                             # ∂/∂num
        dm_loc = torch.div(self.Vc[i0:i1], den, out=M) if self.has_v else torch.div(u, den, out=M).mul_(s)  # a_t
        dm_loc.mul_(gi).neg_()                                          # ∂/∂den = −da·num/den²
        # d√m/dm as reference.sqrt0: √m/(2m) with m clamped at the smallest normal (0 at m = 0)
        dm_loc.mul_(r).div_(r.mul_(r).clamp_min_(torch.finfo(self.sdt).tiny)).mul_(0.5)
        prev, alpha = self.dm, (1.0 if last else beta)   # dm_t = ∂_t + β dm_{t+1} (m_T's cotangent as is)
        for k in range(n - 1, -1, -1):
            prev = dm_loc[k].add_(prev, alpha=alpha)
            alpha = beta
        self.dm.copy_(prev)
        torch.mul(u, dm_loc, out=du).mul_(2.0 * (1.0 - beta))           # ∂m_t/∂u_t = 2(1-β) u_t
        if not self.has_v:       # RMSProp: a_t = s u_t / den
            return du.add_(gi, alpha=s)
        prev, alpha = self.dv, (1.0 if last else lams[t1])   # dv_t = ∂_t + λ_{t+1} dv_{t+1}
        for k in range(n - 1, -1, -1):
            prev = gi[k].add_(prev, alpha=alpha)
            alpha = lams[t0 + k]
        self.dv.copy_(prev)
        return du.add_(gi, alpha=s)

    def initial(self):
        """The gradients of v_0, m_0 (None for a state the family lacks), after the span at t = 0."""
        return (self.dv * self.lams[0] if self.has_v else None), (self.dm * self.beta if self.has_m else None)


# ------------------------------------------------------------------------------------------ custom ops
def _empty(t):
    return t.new_empty(NOTHING)


@torch.library.custom_op("tritonrnn::step_loop_fwd", mutates_args=(), schema=(
    "(Tensor x, Tensor? w_ih, Tensor? b_ih, Tensor w_hh, Tensor? b_hh, Tensor? h0, Tensor? c0, Tensor? v0, "
    "Tensor? m0, Tensor? a0, str core, str dynamics, float mu, float s, float beta, float eps, int restart, "
    "int step_offset, bool save) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"))
def _step_loop_fwd_op(x, w_ih, b_ih, w_hh, b_hh, h0, c0, v0, m0, a0, core, dynamics, mu, s, beta, eps, restart,
                      step_offset, save):
    with torch.no_grad():
        return _forward(x, w_ih, b_ih, w_hh, b_hh, h0, c0, v0, m0, a0, core, dynamics, mu, s, beta, eps, restart,
                        step_offset, save)


@_step_loop_fwd_op.register_fake
def _(x, w_ih, b_ih, w_hh, b_hh, h0, c0, v0, m0, a0, core, dynamics, mu, s, beta, eps, restart, step_offset, save):
    T, B = x.shape[:2]
    C = w_ih.shape[0] if w_ih is not None else x.shape[2]
    H = w_hh.shape[-1]
    lstm = core == "lstm" and save
    has_v, has_m = _has(dynamics)
    n_ck = (T + CHUNK - 1) // CHUNK
    shapes = [(T, B, H), (B, H), (B, H) if core == "lstm" else NOTHING, (B, C) if has_v else NOTHING,
              (B, C) if has_m else NOTHING, (B, C) if dynamics == "nesterov" else NOTHING,
              (T, B, C) if lstm else NOTHING, (T, B, H) if lstm else NOTHING,
              (n_ck, B, C) if has_m and has_v and save else NOTHING, (n_ck, B, C) if has_m and save else NOTHING]
    sdt = torch.promote_types(x.dtype, torch.float32)
    return tuple(x.new_empty(shape, dtype=sdt) for shape in shapes)


@torch.library.custom_op("tritonrnn::step_loop_bwd", mutates_args=(), schema=(
    "(Tensor? dout, Tensor? dh_T, Tensor? dc_T, Tensor? dv_T, Tensor? dm_T, Tensor? da_T, Tensor x, Tensor? w_ih, "
    "Tensor? b_ih, Tensor w_hh, Tensor? b_hh, Tensor? h0, Tensor? c0, Tensor? v0, Tensor? m0, Tensor? a0, "
    "Tensor out, Tensor gates, Tensor cs, Tensor ck_v, Tensor ck_m, str core, str dynamics, float mu, float s, "
    "float beta, float eps, int restart, int step_offset) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"))
def _step_loop_bwd_op(dout, dh_T, dc_T, dv_T, dm_T, da_T, x, w_ih, b_ih, w_hh, b_hh, h0, c0, v0, m0, a0, out, gates,
                      cs, ck_v, ck_m, core, dynamics, mu, s, beta, eps, restart, step_offset):
    with torch.no_grad():
        grads = _backward(dout, dh_T, dc_T, dv_T, dm_T, da_T, x, w_ih, b_ih, w_hh, b_hh, h0, c0, out, gates, cs,
                          ck_v, ck_m, core, dynamics, mu, s, beta, eps, restart, step_offset)
    # in the dtypes of the inputs they belong to; absent ones as empty tensors
    return tuple(_empty(x) if g is None or t is None else g.to(t.dtype) for g, t in zip(grads, _grad_like(
        x, w_ih, b_ih, w_hh, b_hh, h0, c0, v0, m0, a0, core, dynamics)))


def _grad_like(x, w_ih, b_ih, w_hh, b_hh, h0, c0, v0, m0, a0, core, dynamics):
    """The inputs whose gradients the backward returns (None: returned empty)."""
    has_v, has_m = _has(dynamics)
    return (x, w_ih, b_ih, w_hh, b_hh, h0, c0 if core == "lstm" else None, v0 if has_v else None,
            m0 if has_m else None, a0 if dynamics == "nesterov" else None)


@_step_loop_bwd_op.register_fake
def _(dout, dh_T, dc_T, dv_T, dm_T, da_T, x, w_ih, b_ih, w_hh, b_hh, h0, c0, v0, m0, a0, out, gates, cs, ck_v,
      ck_m, core, dynamics, mu, s, beta, eps, restart, step_offset):
    return tuple(_empty(x) if t is None else torch.empty_like(t, memory_format=torch.contiguous_format)
                 for t in _grad_like(x, w_ih, b_ih, w_hh, b_hh, h0, c0, v0, m0, a0, core, dynamics))


N_TENSORS = 10   # x, w_ih, b_ih, w_hh, b_hh, h0, c0, v0, m0, a0; then 9 non-tensor arguments


def _setup(ctx, inputs, output):
    tensors, hyper = inputs[:N_TENSORS], inputs[N_TENSORS:]
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(*output[6:])   # the saved gates, c_t and drive checkpoints are state, not results
    ctx.hyper = hyper[:-1]                     # (core, dynamics, mu, s, beta, eps, restart, step_offset)
    ctx.saved = hyper[-1]
    ctx.save_for_backward(*tensors, output[0], *output[6:])


def _backward_rule(ctx, dout, dh_T, dc_T, dv_T, dm_T, da_T, *_saved):
    n_args = N_TENSORS + 9
    if all(g is None for g in (dout, dh_T, dc_T, dv_T, dm_T, da_T)):
        return (None,) * n_args
    if not ctx.saved:
        raise RuntimeError("tritonrnn's torch step loop ran its forward without keeping what the backward needs "
                           "(no input required grad then); call it again with grad enabled")
    if torch.is_grad_enabled():
        raise RuntimeError("tritonrnn's torch step loop: double backward is not supported (its backward is "
                           "hand-written and not itself differentiable); use the reference cells "
                           "(tritonrnn.reference) for higher-order gradients")
    saved = ctx.saved_tensors
    grads = _step_loop_bwd_op(dout, dh_T, dc_T, dv_T, dm_T, da_T, *saved, *ctx.hyper)
    # the op returns an absent gradient as an empty placeholder; which ones are absent follows from the inputs
    # and the family, not from numel (with an empty batch the gradient of x is a real, zero-size one)
    present = [t is not None for t in _grad_like(*saved[:N_TENSORS], *ctx.hyper[:2])]
    needs = ctx.needs_input_grad
    return tuple(g if needs[i] and present[i] else None for i, g in enumerate(grads)) + (None,) * (n_args - N_TENSORS)


_step_loop_fwd_op.register_autograd(_backward_rule, setup_context=_setup)
