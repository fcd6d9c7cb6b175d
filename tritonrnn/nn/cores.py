"""Two more recurrent cores with the input dynamics of SPEC §1.2 (issue #8), as nn.RNN-shaped modules.

Orthogonal RNN (DTRIV, Lezcano-Casado 2019; MomentumDTRIV in the MomentumRNN paper):

    u_t = W_ih x_t (no input bias);  a_t = D(u_t, state) (SPEC §1.2);  z_t = a_t + U h_{t-1};
    h_t = modReLU(z_t) = sign(z_t)·relu(|z_t| + b)

    OrthogonalRNN, MomentumOrthogonalRNN, SROrthogonalRNN, AdamOrthogonalRNN, RMSPropOrthogonalRNN
    parameters per layer/direction: weight_ih_l{k} [H, in], weight_hh_l{k} = U [H, H], bias_hh_l{k} = b [H]
    (the modReLU bias, present when bias=True; bias=False makes modReLU the identity).

U is kept orthogonal by torch's own parametrization (torch.nn.utils.parametrizations.orthogonal, map
`orthogonal_map` = "matrix_exp" (default, DTRIV's exponential map), "cayley" or "householder"), so any
optimizer works on the unconstrained parameter; the state_dict holds `parametrizations.weight_hh_l{k}.original`
(and `.base`, the current base point of the trivialization). `rebase_()` moves the base to the current U and
resets the unconstrained parameter so that its skew-symmetric generator is zero: DTRIV's change of base, to be called every K optimizer steps (its K
hyper-parameter; K = ∞, never, is expRNN). Each forward materialises U once per layer and direction and
the kernels read it as a plain matrix (wrap several forwards in torch.nn.utils.parametrize.cached() to
share one materialisation). Under torch.compile that materialisation is one opaque custom op per layer and
direction (tritonrnn::orthogonal_weight_fwd/_bwd, issue #17) running the parametrization's own forward, so
inductor does not compile the map's matrix_exp / solve / Householder product itself (17-38 s of the first call).
Initialisation as DTRIV: weight_ih Kaiming-normal (relu gain), b uniform in ±0.01, U Haar-random orthogonal
(torch.nn.init.orthogonal_; DTRIV's Henaff/Cayley initialisations of the skew-symmetric base are not built).

IndRNN (Li et al., CVPR 2018; the deep IndRNN of the Frank-Wolfe paper):

    u_t = W_ih x_t + b_ih;  a_t = D(u_t, state);  h_t = relu(a_t + w ⊙ h_{t-1} + b_hh)

    IndRNN, MomentumIndRNN, SRIndRNN, AdamIndRNN, RMSPropIndRNN
    parameters per layer/direction: weight_ih_l{k} [H, in], weight_hh_l{k} = w [H], bias_ih_l{k}, bias_hh_l{k}
    [H] (two biases as nn.RNN, b_ih inside the dynamics as SPEC §1.1; the IndRNN paper's single b is their sum
    for the plain family).

`recurrent_max` (the IndRNN paper's bound on |w|, e.g. 2^(1/T) for relu) clips w in every forward, and
`clip_recurrent_weights_()` projects the parameter itself back into [−recurrent_max, recurrent_max] — call it
after each optimizer step, as the IndRNN reference code does, so the gradient is never cut by the clip.
`batch_norm=True` puts a BatchNorm1d over the features between consecutive layers (statistics over time and
batch, padding excluded for PackedSequence input), as the Frank-Wolfe paper's six-layer IndRNN; the norms are
`bn.{k}` submodules. Initialisation: weight_ih uniform in ±1/√H (nn.RNN's), w uniform in [0, 1) (the IndRNN
paper's range for relu, clipped to recurrent_max), biases zero.

Both families keep the nn.RNN forward contract of tritonrnn.nn.modules (hx, batch_first, unbatched input,
PackedSequence, bidirectional, dropout between layers, `state` / `step_offset` / `return_state` for truncated
BPTT). Hyper-parameters (`mu`, `s`, `beta`, `eps`, `restart`) take the SPEC §1.2 defaults of the family.
Both run on the Triton kernels on CUDA (no cuDNN form exists); on CPU backend="auto" takes the torch step loop
(unless TRITON_INTERPRET=1 asks for the interpreter, as for every module).
"""
from __future__ import annotations

import math
import numbers

import torch
from torch.nn.utils import parametrizations, parametrize

from ..functional.layers import _autograd_inside_op, indrnn_layer
from ..functional.steploop import NOTHING
from .modules import _RNNBase

__all__ = ["OrthogonalRNN", "MomentumOrthogonalRNN", "SROrthogonalRNN", "AdamOrthogonalRNN", "RMSPropOrthogonalRNN",
           "IndRNN", "MomentumIndRNN", "SRIndRNN", "AdamIndRNN", "RMSPropIndRNN"]

ORTHOGONAL_MAPS = ("matrix_exp", "cayley", "householder")


def _no_nonlinearity(module, hyper, fixed):
    if "nonlinearity" in hyper:
        raise ValueError(f"nonlinearity is fixed ({fixed}) for {type(module).__name__}, got {hyper['nonlinearity']!r}")


# ----------------------------------------------------------------------------- the orthogonal weight, one op
# Under torch.compile U = base · map(original) is one opaque op per layer and direction (issue #17): traced as
# ordinary ops, inductor compiles matrix_exp (a Padé / squaring graph), the Cayley solve or the Householder
# product and their backward, 17-38 s of the first call at every T. The op runs torch's own parametrization
# module (parametrizations._Orthogonal, rebuilt from the map's name and the base it is given) on the detached
# inputs, so the compiled U is eager's bitwise; the backward op recomputes U with autograd on and differentiates
# it (torch.autograd.grad), so the gradients are eager's too. Eager forwards do not use it.
_ORTHOGONAL_GRAD_INPUTS = 2  # original, base


def _orthogonal(original, base, orthogonal_map):
    """torch's orthogonal parametrization of `original` (base · map(original); no base: map(original))."""
    p = parametrizations._Orthogonal(original, parametrizations._OrthMaps[orthogonal_map],
                                     use_trivialization=base is not None)
    if base is not None:
        p.base = base
    return p(original)


@torch.library.custom_op("tritonrnn::orthogonal_weight_fwd", mutates_args=(),
                         schema="(Tensor original, Tensor? base, str orthogonal_map) -> Tensor")
def _orthogonal_fwd_op(original, base, orthogonal_map):
    with torch.no_grad():
        return _orthogonal(original.detach(), None if base is None else base.detach(), orthogonal_map).contiguous()


@_orthogonal_fwd_op.register_fake
def _(original, base, orthogonal_map):
    return torch.empty_like(original, memory_format=torch.contiguous_format)  # U has the parameter's shape


@torch.library.custom_op("tritonrnn::orthogonal_weight_bwd", mutates_args=(),
                         schema="(Tensor dU, Tensor original, Tensor? base, str orthogonal_map, bool[] needs) "
                                "-> (Tensor, Tensor)")
def _orthogonal_bwd_op(dU, original, base, orthogonal_map, needs):
    inputs = [None if t is None else t.detach().requires_grad_(need) for t, need in zip((original, base), needs)]
    with _autograd_inside_op(), torch.enable_grad():  # the eager forward, recorded, then autograd's backward
        U = _orthogonal(*inputs, orthogonal_map)
        wrt = [t for t in inputs if t is not None and t.requires_grad]
        grads = iter(torch.autograd.grad(U, wrt, dU, allow_unused=True) if wrt else ())
        out = []
        for t in inputs:
            g = next(grads) if t is not None and t.requires_grad else None
            out.append(dU.new_empty(NOTHING) if t is None or not t.requires_grad else
                       torch.zeros_like(t, memory_format=torch.contiguous_format) if g is None else g.contiguous())
        return tuple(out)


@_orthogonal_bwd_op.register_fake
def _(dU, original, base, orthogonal_map, needs):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) if t is not None and need else
                 dU.new_empty(NOTHING) for t, need in zip((original, base), needs))


def _orthogonal_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], inputs[1])
    ctx.orthogonal_map = inputs[2]


def _orthogonal_backward(ctx, dU):
    if torch.is_grad_enabled():
        raise RuntimeError("tritonrnn's compiled orthogonal weight: double backward is not supported (its backward "
                           "op is not itself differentiable); run the module eagerly for higher-order gradients")
    needs = [bool(f) for f in ctx.needs_input_grad[:_ORTHOGONAL_GRAD_INPUTS]]
    grads = _orthogonal_bwd_op(dU, *ctx.saved_tensors, ctx.orthogonal_map, needs)
    return tuple(g if need else None for g, need in zip(grads, needs)) + (None,)


_orthogonal_fwd_op.register_autograd(_orthogonal_backward, setup_context=_orthogonal_setup)


class _OrthogonalRNNBase(_RNNBase):
    """The orthogonal core; subclasses fix `dynamics`."""

    _nonlinearities = ("modrelu",)

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, device=None, dtype=None, *, orthogonal_map="matrix_exp", backend="auto",
                 **hyper):
        _no_nonlinearity(self, hyper, "modReLU")
        if orthogonal_map not in ORTHOGONAL_MAPS:
            raise ValueError(f"orthogonal_map must be one of {ORTHOGONAL_MAPS}, got {orthogonal_map!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         nonlinearity="modrelu", device=device, dtype=dtype, backend=backend, **hyper)
        self.orthogonal_map = orthogonal_map
        for name in self._recurrent_names():
            parametrizations.orthogonal(self, name, orthogonal_map=orthogonal_map)

    def _recurrent_names(self):
        return [n for n in self._flat_weights_names if n.startswith("weight_hh")]

    def _recurrent_weight(self, key):
        """U; under torch.compile through the orthogonal-weight op (above) when the parametrization is still the
        one this module registered (a user's extra parametrization, or parametrize.cached(), traces as eager)."""
        name = f"weight_hh_{key}"
        plist = self.parametrizations[name]
        if (torch.compiler.is_compiling() and not parametrize._cache_enabled and len(plist) == 1
                and isinstance(plist[0], parametrizations._Orthogonal)):
            return _orthogonal_fwd_op(plist.original, getattr(plist[0], "base", None), plist[0].orthogonal_map.name)
        return getattr(self, name)

    def _parameter_shapes(self, layer_in, gate_width, out_size):
        shapes = [("weight_ih", (gate_width, layer_in)), ("weight_hh", (gate_width, gate_width))]
        return shapes + ([("bias_hh", (gate_width,))] if self.bias else [])

    def reset_parameters(self) -> None:
        """DTRIV's initialisation (module docstring): U Haar-orthogonal, weight_ih Kaiming-normal, b ±0.01."""
        for name in self._flat_weights_names:
            if name.startswith("weight_ih"):
                torch.nn.init.kaiming_normal_(getattr(self, name), nonlinearity="relu")
            elif name.startswith("bias_hh"):
                torch.nn.init.uniform_(getattr(self, name), -0.01, 0.01)
            elif parametrize.is_parametrized(self, name):
                u = getattr(self, name)
                with torch.no_grad():
                    setattr(self, name, torch.nn.init.orthogonal_(torch.empty_like(u)))  # right_inverse: new base
            else:
                torch.nn.init.orthogonal_(getattr(self, name))

    @torch.no_grad()
    def rebase_(self) -> None:
        """DTRIV's change of base (module docstring): the trivialization restarts at the current U."""
        for name in self._recurrent_names():
            setattr(self, name, getattr(self, name))

    def extra_repr(self) -> str:
        return super().extra_repr().replace(", nonlinearity='modrelu'", "") + (
            f", orthogonal_map={self.orthogonal_map!r}" if self.orthogonal_map != "matrix_exp" else "")


class _IndRNNBase(_RNNBase):
    """The IndRNN core; subclasses fix `dynamics`."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, device=None, dtype=None, *, recurrent_max=None, batch_norm=False,
                 backend="auto", **hyper):
        _no_nonlinearity(self, hyper, "relu")
        if recurrent_max is not None and (isinstance(recurrent_max, bool) or not isinstance(recurrent_max, numbers.Real)
                                          or not math.isfinite(recurrent_max) or recurrent_max <= 0):
            raise ValueError(f"recurrent_max must be a finite number > 0 or None, got {recurrent_max!r}")
        self.recurrent_max = None if recurrent_max is None else float(recurrent_max)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         nonlinearity="relu", device=device, dtype=dtype, backend=backend, **hyper)
        self.batch_norm = bool(batch_norm)
        D = 2 if bidirectional else 1
        self.bn = torch.nn.ModuleList(
            [torch.nn.BatchNorm1d(hidden_size * D, device=device, dtype=dtype) for _ in range(num_layers - 1)]
            if self.batch_norm else [])

    def _parameter_shapes(self, layer_in, gate_width, out_size):
        shapes = [("weight_ih", (gate_width, layer_in)), ("weight_hh", (gate_width,))]
        return shapes + ([("bias_ih", (gate_width,)), ("bias_hh", (gate_width,))] if self.bias else [])

    def _recurrent_weight(self, key):
        w = getattr(self, f"weight_hh_{key}")
        return w if self.recurrent_max is None else w.clamp(-self.recurrent_max, self.recurrent_max)

    def _run_layer(self, seq, key, c0, common):
        params = [getattr(self, f"weight_ih_{key}"), self._recurrent_weight(key), getattr(self, f"bias_ih_{key}", None),
                  getattr(self, f"bias_hh_{key}", None)]
        out, h, st = indrnn_layer(seq, *params, **common)
        return out, h, None, st

    def _between_layers(self, layer, layer_input, lengths):
        if self.batch_norm:
            norm = self.bn[layer]
            if lengths is None:
                T, B, C = layer_input.shape
                layer_input = norm(layer_input.reshape(T * B, C)).reshape(T, B, C)
            else:  # statistics over the valid steps only; padding stays zero
                T = layer_input.shape[0]
                valid = (torch.arange(T)[:, None] < lengths[None, :]).to(layer_input.device)
                layer_input = torch.zeros_like(layer_input).masked_scatter(
                    valid[:, :, None], norm(layer_input[valid]))
        return super()._between_layers(layer, layer_input, lengths)

    def reset_parameters(self) -> None:
        """weight_ih uniform in ±1/√H, w uniform in [0, 1) clipped to recurrent_max, biases zero."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for name in self._flat_weights_names:
            p = getattr(self, name)
            if name.startswith("weight_ih"):
                torch.nn.init.uniform_(p, -bound, bound)
            elif name.startswith("weight_hh"):
                torch.nn.init.uniform_(p, 0.0, 1.0)
            else:
                torch.nn.init.zeros_(p)
        self.clip_recurrent_weights_()
        for norm in getattr(self, "bn", ()):
            norm.reset_parameters()

    @torch.no_grad()
    def clip_recurrent_weights_(self) -> None:
        """Project every w into [−recurrent_max, recurrent_max] (a no-op without recurrent_max)."""
        if self.recurrent_max is not None:
            for name in self._flat_weights_names:
                if name.startswith("weight_hh"):
                    getattr(self, name).clamp_(-self.recurrent_max, self.recurrent_max)

    def extra_repr(self) -> str:
        s = super().extra_repr().replace(", nonlinearity='relu'", "")
        if self.recurrent_max is not None:
            s += f", recurrent_max={self.recurrent_max}"
        return s + (", batch_norm=True" if self.batch_norm else "")


class OrthogonalRNN(_OrthogonalRNNBase):
    """Orthogonal RNN with no input dynamics (the DTRIV / expRNN core); see the module docstring."""
    dynamics = "plain"


class MomentumOrthogonalRNN(_OrthogonalRNNBase):
    """Orthogonal RNN with the momentum input dynamics of SPEC §1.2 (MomentumDTRIV); see the module docstring."""
    dynamics = "momentum"


class SROrthogonalRNN(_OrthogonalRNNBase):
    """Orthogonal RNN with the scheduled-restart momentum of SPEC §1.2; see the module docstring."""
    dynamics = "restart"


class AdamOrthogonalRNN(_OrthogonalRNNBase):
    """Orthogonal RNN with the Adam input dynamics of SPEC §1.2; see the module docstring."""
    dynamics = "adam"


class RMSPropOrthogonalRNN(_OrthogonalRNNBase):
    """Orthogonal RNN with the RMSProp input dynamics of SPEC §1.2; see the module docstring."""
    dynamics = "rmsprop"


class IndRNN(_IndRNNBase):
    """IndRNN with no input dynamics (IndRNN itself); see the module docstring."""
    dynamics = "plain"


class MomentumIndRNN(_IndRNNBase):
    """IndRNN with the momentum input dynamics of SPEC §1.2; see the module docstring."""
    dynamics = "momentum"


class SRIndRNN(_IndRNNBase):
    """IndRNN with the scheduled-restart momentum of SPEC §1.2; see the module docstring."""
    dynamics = "restart"


class AdamIndRNN(_IndRNNBase):
    """IndRNN with the Adam input dynamics of SPEC §1.2; see the module docstring."""
    dynamics = "adam"


class RMSPropIndRNN(_IndRNNBase):
    """IndRNN with the RMSProp input dynamics of SPEC §1.2; see the module docstring."""
    dynamics = "rmsprop"
