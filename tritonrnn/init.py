"""In-place initialisers of the seed papers, for any module with torch.nn.LSTM / nn.RNN parameter names.

A module qualifies when it (or any submodule) has parameters named like ``torch.nn.LSTM``/``nn.RNN`` (SPEC
§1.1): ``weight_ih_l{k}[_reverse]`` (G·H × in), ``weight_hh_l{k}[_reverse]`` (G·H × H),
``bias_ih_l{k}[_reverse]``, ``bias_hh_l{k}[_reverse]`` (G·H), optionally ``weight_hr_l{k}[_reverse]``
(proj_size), or the un-suffixed names of ``nn.LSTMCell``/``nn.RNNCell``. G = 4 (gate order i, f, g, o) or
G = 1; anything else (a GRU's G = 3) is refused. The tritonrnn modules use the same names, so both
initialisers work on them and on torch's modules alike.

Determinism. ``generator`` is a CPU ``torch.Generator``, an int seed, or None (torch's global CPU
generator). Every value is drawn on the CPU in float64, in a fixed order (by submodule, then layer, then
direction; within one layer/direction: input weights, recurrent weights, projection), and then rounded once
into the parameter's dtype and device. One seed therefore gives the same weights on every device and for
every module class that carries the same parameter names, whatever order it registers them in.
"""
from __future__ import annotations

import numbers
import re

import torch

from ._validate import check_float, check_int

__all__ = ["momentumrnn_init_", "sutskever_init_"]

_HH = re.compile(r"^(?P<prefix>(?:.*\.)?)weight_hh(?P<suffix>_l(?P<layer>\d+)(?P<rev>_reverse)?)?$")


def _cpu_generator(generator):
    if generator is None:
        return None
    if isinstance(generator, torch.Generator):
        if generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU torch.Generator (draws are made on the CPU so that a seed "
                             f"gives the same weights on every device), got one on {generator.device}")
        return generator
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        if int(generator) < 0:
            raise ValueError(f"generator: an int seed must be >= 0, got {int(generator)}")
        g = torch.Generator(device="cpu")
        g.manual_seed(int(generator))
        return g
    raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")


class _Group:
    """The parameters of one layer and direction."""

    def __init__(self, params, prefix, suffix):
        def get(kind):
            return params.get(f"{prefix}{kind}{suffix}")

        self.label = f"{prefix}weight_hh{suffix}"
        self.w_ih, self.w_hh, self.w_hr = get("weight_ih"), get("weight_hh"), get("weight_hr")
        self.b_ih, self.b_hh = get("bias_ih"), get("bias_hh")
        if self.w_ih is None:
            raise ValueError(f"module: {self.label} has no matching {prefix}weight_ih{suffix}")
        rows, cols = self.w_hh.shape
        # With a projection, W_hh is G·H × P and W_hr is P × H; otherwise W_hh is G·H × H.
        self.hidden = self.w_hr.shape[1] if self.w_hr is not None else cols
        if self.hidden == 0 or rows % self.hidden:
            raise ValueError(f"module: {self.label} has shape {tuple(self.w_hh.shape)}, not G·H × H")
        self.gates = rows // self.hidden
        if self.gates not in (1, 4):
            raise ValueError(f"module: {self.label} has {self.gates} gate blocks; only LSTM (4: i, f, g, o) and "
                             f"RNN (1) layouts are supported")
        if self.w_ih.dim() != 2 or self.w_ih.shape[0] != rows:
            raise ValueError(f"module: {prefix}weight_ih{suffix} has shape {tuple(self.w_ih.shape)}, "
                             f"expected ({rows}, input_size)")
        for name, b in (("bias_ih", self.b_ih), ("bias_hh", self.b_hh)):
            if b is not None and tuple(b.shape) != (rows,):
                raise ValueError(f"module: {prefix}{name}{suffix} has shape {tuple(b.shape)}, expected ({rows},)")

    def biases(self):
        return [b for b in (self.b_ih, self.b_hh) if b is not None]


def _groups(module):
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    params = dict(module.named_parameters())
    prefixes, found = [], []
    for name in params:
        m = _HH.match(name)
        if m is None:
            continue
        prefix = m.group("prefix")
        if prefix not in prefixes:
            prefixes.append(prefix)
        layer = int(m.group("layer")) if m.group("layer") is not None else 0
        key = (prefixes.index(prefix), layer, m.group("rev") is not None)
        found.append((key, _Group(params, prefix, m.group("suffix") or "")))
    if not found:
        raise ValueError("module has no weight_hh_l{k} / weight_hh parameter (torch.nn.LSTM / nn.RNN names)")
    # Registration order of layers/directions differs between module classes; a fixed order keeps a seed's
    # weights identical across them.
    found.sort(key=lambda kv: kv[0])
    return [g for _, g in found]


def _orthogonal(rows, cols, g):
    """A Haar-distributed matrix with orthonormal columns (rows >= cols) or rows (rows < cols)."""
    tall = rows >= cols
    a = torch.randn((rows, cols) if tall else (cols, rows), generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    # Fixing the signs of diag(R) makes Q uniformly (Haar) distributed rather than biased by QR's convention.
    d = torch.sign(torch.diagonal(r))
    q = q * torch.where(d == 0, torch.ones_like(d), d)
    return q if tall else q.T


def _assign(param, value):
    param.copy_(value.to(device=param.device, dtype=param.dtype))


def _spectral_radius(w):
    return float(torch.linalg.eigvals(w).abs().max())


def _sparse_block(n, nonzero, radius, g, label):
    """n × n matrix, exactly ``nonzero`` N(0, 1) entries in each row at distinct random columns, scaled to
    spectral radius ``radius``."""
    for _ in range(16):
        # Column choice first, then values: a fixed draw order per attempt.
        cols = torch.rand(n, n, generator=g, dtype=torch.float64).argsort(dim=1)[:, :nonzero]
        vals = torch.randn(n, nonzero, generator=g, dtype=torch.float64)
        w = torch.zeros(n, n, dtype=torch.float64).scatter_(1, cols, vals)
        rho = _spectral_radius(w)
        # A sparse draw can be (nearly) nilpotent when n is small; its radius then cannot be rescaled
        # reliably, so it is redrawn (from the same generator, so still deterministic).
        if rho > 1e-6:
            return w * (radius / rho)
    raise RuntimeError(f"could not draw a recurrent block for {label} with a nonzero spectral radius "
                       f"(n={n}, nonzero={nonzero}); use a larger nonzero")


@torch.no_grad()
def momentumrnn_init_(module, *, forget_bias=1.0, generator=None):
    """The initialisation of the MomentumRNN reference code: the ``reset_parameters`` of every LSTM-family
    cell in minhtannguyen/MomentumRNN (mnist-timit/momentumnet.py, ptb/momentumnet.py), which calls
    ``orthogonal_`` on the input weights, ``eye_`` on the recurrent weights and fills the forget slices.
    The orthogonal draw here is this module's own (QR of a Gaussian with the signs of diag(R) fixed, the
    same distribution), so a seed does not reproduce ``torch.nn.init.orthogonal_``'s values.

    For each layer and direction:

    * ``weight_ih``: orthogonal (Haar), gain 1: orthonormal columns when G·H >= input size
      (Wᵀ W = I), orthonormal rows otherwise (W Wᵀ = I);
    * ``weight_hh``: the identity on the first H rows (the input-gate block ``i`` of an LSTM, the whole
      matrix of an RNN) and zero elsewhere; with a projection (W_hh is 4H × P), ones on the diagonal of
      the first P rows. This is ``eye_`` applied to the whole G·H × H matrix, as in the reference;
    * ``bias_ih`` and ``bias_hh``: zero, except the forget-gate block ``f`` (rows H..2H) of EACH of the two
      biases, set to ``forget_bias`` (reference: 1.0, so the summed forget bias is 2.0 at initialisation;
      for the momentum family b_ih also passes through the momentum, SPEC §1.1, so its steady-state
      contribution under a constant input is s/(1-μ)·b_ih). RNN layouts have no forget gate: biases are 0;
    * ``weight_hr`` (projection; the reference has none): orthogonal, our choice.

    Returns ``module``."""
    forget_bias = check_float(forget_bias, "forget_bias")
    g = _cpu_generator(generator)
    groups = _groups(module)
    for grp in groups:
        rows, H = grp.w_hh.shape[0], grp.hidden
        _assign(grp.w_ih, _orthogonal(rows, grp.w_ih.shape[1], g))
        _assign(grp.w_hh, torch.eye(rows, grp.w_hh.shape[1], dtype=torch.float64))
        if grp.w_hr is not None:
            _assign(grp.w_hr, _orthogonal(*grp.w_hr.shape, g))
        for b in grp.biases():
            value = torch.zeros(rows, dtype=torch.float64)
            if grp.gates == 4:
                value[H:2 * H] = forget_bias
            _assign(b, value)
    return module


@torch.no_grad()
def sutskever_init_(module, *, spectral_radius=1.1, nonzero=15, input_scale=1e-3, forget_bias=0.0,
                    generator=None):
    """ESN-inspired initialisation of Sutskever, Martens, Dahl & Hinton (2013), sec. 4.1 and table 4.

    * recurrent weights: each unit has exactly ``nonzero`` (paper: 15) incoming recurrent weights, at
      distinct columns chosen uniformly, drawn from N(0, 1); the matrix is then rescaled to spectral radius
      ``spectral_radius`` (paper: 1.1). The paper's networks are tanh RNNs (G = 1). For an LSTM (G = 4) the
      4H × H matrix has no spectral radius, so each H × H gate block (i, f, g, o) gets its own independent
      sparse draw rescaled to ``spectral_radius``: every gate then sees the paper's recurrent dynamics, and
      each row of W_hh has exactly ``nonzero`` nonzeros;
    * input weights: dense N(0, input_scale²). The paper found the scale problem dependent: 0.001 for the
      addition and multiplication problems (many distractor inputs; the default here) and 0.1 for the
      memorisation problems;
    * biases: zero (paper: hidden biases 0), except that an LSTM's forget-gate block of ``bias_hh`` is set
      to ``forget_bias`` (default 0, i.e. all zero, as in the paper). The paper's output bias ("average of
      the outputs") belongs to the readout layer, outside these modules: use the task's ``target_mean``.

    Modules with a projection (``weight_hr``) are refused: their recurrent blocks are not square.
    Raises ValueError when ``nonzero`` exceeds the hidden size. Returns ``module``."""
    spectral_radius = check_float(spectral_radius, "spectral_radius", low=0.0, low_open=True)
    nonzero = check_int(nonzero, "nonzero", low=1)
    input_scale = check_float(input_scale, "input_scale", low=0.0)
    forget_bias = check_float(forget_bias, "forget_bias")
    g = _cpu_generator(generator)
    groups = _groups(module)
    for grp in groups:
        if grp.w_hr is not None:
            raise ValueError(f"module: {grp.label} belongs to a projected LSTM (proj_size > 0); its recurrent "
                             f"blocks are not square, so they have no spectral radius")
        if nonzero > grp.hidden:
            raise ValueError(f"nonzero ({nonzero}) must be <= the hidden size ({grp.hidden}) of {grp.label}")
    for grp in groups:
        rows, H = grp.w_hh.shape[0], grp.hidden
        w_ih = torch.randn(grp.w_ih.shape, generator=g, dtype=torch.float64) * input_scale
        _assign(grp.w_ih, w_ih)
        blocks = [_sparse_block(H, nonzero, spectral_radius, g, grp.label) for _ in range(grp.gates)]
        _assign(grp.w_hh, torch.cat(blocks, dim=0))
        if grp.b_ih is not None:
            _assign(grp.b_ih, torch.zeros(rows, dtype=torch.float64))
        if grp.b_hh is not None:
            value = torch.zeros(rows, dtype=torch.float64)
            if grp.gates == 4:
                value[H:2 * H] = forget_bias
            _assign(grp.b_hh, value)
    return module
