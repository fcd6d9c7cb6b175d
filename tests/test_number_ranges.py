"""Number ranges (issue 14): fp16 / bf16 inputs whose fp32-state reference is finite give finite outputs,
final states and gradients; an ε that the fp32 state cannot hold is refused with a ValueError naming `eps`."""
import pytest
import torch

import tritonrnn
import tritonrnn.functional as F
import tritonrnn.nn as tnn
from tests.entry_points import MODULES
from tests.nn.common import core_of
from tritonrnn.reference import STATE_NAMES, recurrent_network

T, B, IN, H = 6, 2, 2, 3
AMPLITUDE = 3e4  # within fp16 (max 65504); the scanned raw input x̃ = Σ μ^k s x passes it by step 3 at μ = 0.999
HYPER = {"momentum": dict(mu=0.999, s=1.0), "restart": dict(s=1.0, restart=8), "adam": dict(mu=0.999),
         "rmsprop": {}, "nesterov": {}, "plain": {}}
LSTM_RNN = [c for c in MODULES if "Orthogonal" not in c.__name__ and "Ind" not in c.__name__]
# Triton: the families whose drive passes through a momentum scan of the raw input (the overflow), and plain
TRITON = [tnn.LSTM, tnn.MomentumLSTM, tnn.SRLSTM, tnn.MomentumRNN, tnn.SRRNN, tnn.NesterovLSTM]


def _case(cls, dtype, backend):
    torch.manual_seed(0)
    module = cls(IN, H, backend=backend, **HYPER[cls.dynamics]).to(dtype)
    x = ((torch.rand(T, B, IN) * 2 - 1) * AMPLITUDE).to(dtype).requires_grad_()
    return module, x


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend, cls", [("torch", c) for c in LSTM_RNN] + [("triton", c) for c in TRITON],
                         ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_half_precision_is_finite_where_the_fp32_state_reference_is(cls, dtype, backend):
    module, x = _case(cls, dtype, backend)
    params = {k: v.detach().float() for k, v in module.named_parameters()}
    ref_out, ref_h, ref_c, ref_state = recurrent_network(x.detach().float(), params, core=core_of(module),
                                                         dynamics=module.dynamics, **module.hyper_parameters())
    assert all(torch.isfinite(t).all() for t in (ref_out, ref_h, *ref_state.values())), "precondition: finite reference"
    out, hidden, state = module(x, return_state=True)
    hidden = hidden if isinstance(hidden, tuple) else (hidden,)
    for name, t in [("output", out), *zip(("h_n", "c_n"), hidden), *state.items()]:
        assert torch.isfinite(t).all(), f"{name} is not finite"
    (out.float().sum() + sum(h.float().sum() for h in hidden)).backward()
    assert torch.isfinite(x.grad).all(), "the input gradient is not finite"
    for name, p in module.named_parameters():
        assert torch.isfinite(p.grad).all(), f"the gradient of {name} is not finite"


@pytest.mark.parametrize("eps", [1e-39, 1e-45, 1e-300])
def test_eps_below_the_fp32_range_is_refused(eps):
    with pytest.raises(ValueError, match=r"^eps must be >= 1\.17"):
        tnn.AdamLSTM(IN, H, eps=eps)
    with pytest.raises(ValueError, match=r"^eps must be >= 1\.17"):
        tnn.RMSPropRNNCell(IN, H, eps=eps)
    module = tnn.AdamRNN(IN, H)
    module.eps = eps  # hyper-parameters may change between calls (SPEC §1.2): checked at the call
    with pytest.raises(ValueError, match=r"^eps must be >= 1\.17"):
        module(torch.zeros(T, B, IN))
    with pytest.raises(ValueError, match=r"^eps must be >= 1\.17"):
        F.adam_scan(torch.zeros(B, T, H), 0.6, 0.6, 0.1, eps)
    with pytest.raises(ValueError, match=r"^eps must be >= 1\.17"):
        F.rmsprop_scan(torch.zeros(B, T, H), 0.6, 0.1, eps)


def test_smallest_eps_gives_zero_not_nan_for_a_zero_input():
    """At ε = float32's smallest normal a blank input with no history is 0/(0 + ε) = 0 on both backends."""
    eps = torch.finfo(torch.float32).tiny
    for backend in ("torch", "triton"):
        a, _, _ = F.adam_scan(torch.zeros(B, T, H), 0.6, 0.6, 0.1, eps, backend=backend)
        assert torch.equal(a, torch.zeros_like(a)), backend
    assert tritonrnn.AdamLSTM(IN, H, eps=eps).eps == eps
