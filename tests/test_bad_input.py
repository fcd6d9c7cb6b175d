"""Bad input to the modules and optimizers: each case raises the exact exception type (ValueError or
TypeError) with a message that starts with (or names) the offending argument. Plus the two non-error edge
cases: T = 0 (a well-defined empty result, where nn.LSTM raises) and NaN in the input (propagates like
nn.LSTM, no error).

Modules run on backend="torch" (the argument checks are shared by every backend: they run before dispatch).
"""
import pytest
import torch

import tritonrnn
from tritonrnn.optim import NAG, SRSGD, FrankWolfe

IN, H, T, B = 3, 4, 5, 2
MODULES = [tritonrnn.MomentumLSTM, tritonrnn.AdamRNN]
IS_LSTM = {tritonrnn.MomentumLSTM: True, tritonrnn.AdamRNN: False, tritonrnn.AdamLSTM: True}


@pytest.fixture(params=MODULES, ids=lambda cls: cls.__name__)
def cls(request):
    return request.param


def _module(cls, **kw):
    torch.manual_seed(0)
    return cls(IN, H, backend="torch", **kw)


def _hx(cls, h, c=None):
    """hx as the family takes it: (h_0, c_0) for the LSTM family, h_0 for the RNN family."""
    if IS_LSTM[cls]:
        return (h, torch.zeros(1, B, H) if c is None else c)
    return h


def _hx_name(cls):
    return r"^hx\[0\] \(h_0\)" if IS_LSTM[cls] else r"^hx\b"


# ------------------------------------------------------------------------------------------ forward input
def test_input_rank_4d(cls):
    with pytest.raises(ValueError, match=r"^input must have 2 or 3 dimensions"):
        _module(cls)(torch.randn(T, B, 1, IN))


def test_input_rank_1d(cls):
    with pytest.raises(ValueError, match=r"^input must have 2 or 3 dimensions"):
        _module(cls)(torch.randn(IN))


def test_input_not_a_tensor(cls):
    with pytest.raises(TypeError, match=r"^input must be a torch\.Tensor"):
        _module(cls)(torch.randn(T, B, IN).tolist())


def test_input_size_mismatch(cls):
    with pytest.raises(ValueError, match=r"^input must have 3 features \(input_size\), got 4"):
        _module(cls)(torch.randn(T, B, IN + 1))


def test_input_size_mismatch_batch_first(cls):
    with pytest.raises(ValueError, match=r"^input must have 3 features \(input_size\), got 2"):
        _module(cls, batch_first=True)(torch.randn(B, T, IN - 1))


def test_hx_wrong_shape(cls):
    with pytest.raises(ValueError, match=_hx_name(cls) + r" must have shape \(1, 2, 4\), got \(1, 3, 4\)"):
        _module(cls)(torch.randn(T, B, IN), _hx(cls, torch.zeros(1, B + 1, H)))


def test_hx_wrong_shape_c0():
    with pytest.raises(ValueError, match=r"^hx\[1\] \(c_0\) must have shape \(1, 2, 4\), got \(1, 2, 5\)"):
        _module(tritonrnn.MomentumLSTM)(torch.randn(T, B, IN), (torch.zeros(1, B, H), torch.zeros(1, B, H + 1)))


def test_hx_wrong_dtype(cls):
    with pytest.raises(TypeError, match=_hx_name(cls) + r" must have dtype torch\.float32, got torch\.float64"):
        _module(cls)(torch.randn(T, B, IN), _hx(cls, torch.zeros(1, B, H, dtype=torch.float64)))


def test_hx_not_a_pair_for_lstm():
    with pytest.raises(TypeError, match=r"^hx must be a tuple \(h_0, c_0\)"):
        _module(tritonrnn.MomentumLSTM)(torch.randn(T, B, IN), torch.zeros(1, B, H))


def test_input_and_parameters_dtype_differ(cls):
    with pytest.raises(TypeError, match=r"^input must have the parameters' dtype torch\.float32, got torch\.float64"):
        _module(cls)(torch.randn(T, B, IN, dtype=torch.float64))


def test_input_and_parameters_dtype_differ_float64_module(cls):
    with pytest.raises(TypeError, match=r"^input must have the parameters' dtype torch\.float64, got torch\.float32"):
        _module(cls, dtype=torch.float64)(torch.randn(T, B, IN))


# ------------------------------------------------------------------------------------------ T = 0
def test_nn_lstm_rejects_empty_sequence():
    """The behaviour tritonrnn departs from (documented in functional/layers.py): nn.LSTM raises for T = 0."""
    with pytest.raises(RuntimeError, match="sequence length"):
        torch.nn.LSTM(IN, H)(torch.randn(0, B, IN))


@pytest.mark.parametrize("batch_first", [False, True])
def test_empty_sequence_is_an_empty_result(cls, batch_first):
    """T = 0: no error, an empty output of the right shape, h_n (and c_n) = the initial states unchanged,
    and the momentum states returned as given (zeros when none were given)."""
    module = _module(cls, num_layers=2, batch_first=batch_first)
    x = torch.randn(B, 0, IN) if batch_first else torch.randn(0, B, IN)
    g = torch.Generator().manual_seed(3)
    h0, c0 = torch.randn(2, B, H, generator=g), torch.randn(2, B, H, generator=g)
    state = {"v": torch.randn(2, B, (4 if IS_LSTM[cls] else 1) * H, generator=g)}
    output, hidden, final = module(x, _hx(cls, h0, c0), state=state, return_state=True)
    assert output.shape == ((B, 0, H) if batch_first else (0, B, H))
    assert output.dtype == torch.float32
    if IS_LSTM[cls]:
        assert torch.equal(hidden[0], h0) and torch.equal(hidden[1], c0)
    else:
        assert torch.equal(hidden, h0)
    assert set(final) == ({"v"} if cls is tritonrnn.MomentumLSTM else {"v", "m"})
    assert torch.equal(final["v"], state["v"])
    if "m" in final:
        assert torch.equal(final["m"], torch.zeros_like(state["v"]))
    # Without hx: zero initial states.
    _, hidden = module(x)
    for t in (hidden if IS_LSTM[cls] else (hidden,)):
        assert t.shape == (2, B, H) and torch.equal(t, torch.zeros(2, B, H))


def test_empty_sequence_unbatched(cls):
    output, hidden = _module(cls)(torch.randn(0, IN))
    assert output.shape == (0, H)
    for t in (hidden if IS_LSTM[cls] else (hidden,)):
        assert torch.equal(t, torch.zeros(1, H))


# ------------------------------------------------------------------------------------------ hyper-parameters
@pytest.mark.parametrize("mu, match", [(-0.1, r"^mu must be >= 0\.0, got -0\.1"), (1.0, r"^mu must be < 1\.0, got 1\.0")])
def test_mu_outside_unit_interval(cls, mu, match):
    with pytest.raises(ValueError, match=match):
        cls(IN, H, mu=mu, backend="torch")


def test_mu_set_out_of_range_after_construction(cls):
    """The hyper-parameters are plain attributes (README): a bad value set later is caught at the next call."""
    module = _module(cls)
    module.mu = 1.0
    with pytest.raises(ValueError, match=r"^mu must be < 1\.0, got 1\.0"):
        module(torch.randn(T, B, IN))


def test_mu_not_a_number(cls):
    with pytest.raises(TypeError, match=r"^mu must be a real number, got str"):
        cls(IN, H, mu="0.5", backend="torch")


@pytest.mark.parametrize("adam", [tritonrnn.AdamRNN, tritonrnn.AdamLSTM, tritonrnn.RMSPropLSTM],
                         ids=lambda c: c.__name__)
@pytest.mark.parametrize("beta, match", [(-0.1, r"^beta must be >= 0\.0, got -0\.1"),
                                         (1.0, r"^beta must be < 1\.0, got 1\.0")])
def test_beta_outside_unit_interval(adam, beta, match):
    with pytest.raises(ValueError, match=match):
        adam(IN, H, beta=beta, backend="torch")


@pytest.mark.parametrize("adam", [tritonrnn.AdamRNN, tritonrnn.AdamLSTM, tritonrnn.RMSPropRNN],
                         ids=lambda c: c.__name__)
@pytest.mark.parametrize("eps, match", [(0.0, r"^eps must be > 0\.0, got 0\.0"),
                                        (-1e-8, r"^eps must be > 0\.0, got -1e-08")])
def test_eps_not_positive(adam, eps, match):
    with pytest.raises(ValueError, match=match):
        adam(IN, H, eps=eps, backend="torch")


RESTART_MODULES = [tritonrnn.SRLSTM, tritonrnn.SRRNN, tritonrnn.NesterovLSTM]


@pytest.mark.parametrize("restart_cls", RESTART_MODULES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("restart", [0, -3])
def test_restart_below_one(restart_cls, restart):
    with pytest.raises(ValueError, match=rf"^restart must be >= 1, got {restart}"):
        restart_cls(IN, H, restart=restart, backend="torch")


@pytest.mark.parametrize("restart_cls", RESTART_MODULES, ids=lambda c: c.__name__)
def test_restart_not_an_integer(restart_cls):
    with pytest.raises(TypeError, match=r"^restart must be an int, got float"):
        restart_cls(IN, H, restart=2.5, backend="torch")


def test_hyper_parameter_of_another_family():
    # MomentumLSTM's constructor has no beta keyword at all (as a Python function).
    with pytest.raises(TypeError, match=r"beta"):
        tritonrnn.MomentumLSTM(IN, H, beta=0.1)


def test_cell_mu_outside_unit_interval():
    with pytest.raises(ValueError, match=r"^mu must be < 1\.0, got 1\.0"):
        tritonrnn.MomentumLSTMCell(IN, H, mu=1.0, backend="torch")


# ------------------------------------------------------------------------------------------ NaN input
@pytest.mark.parametrize("nan_cls", [tritonrnn.MomentumLSTM, tritonrnn.AdamLSTM], ids=lambda c: c.__name__)
def test_nan_input_propagates_like_nn_lstm(nan_cls):
    """A NaN at (t=2, b=1) poisons that sequence from t=2 on (output, h_n, c_n) and nothing else, exactly
    where nn.LSTM (same weights) puts NaN; no error is raised."""
    module = _module(nan_cls)
    reference = torch.nn.LSTM(IN, H)
    reference.load_state_dict(module.state_dict())
    x = torch.randn(T, B, IN, generator=torch.Generator().manual_seed(1))
    x[2, 1, 0] = float("nan")
    output, (h_n, c_n) = module(x)
    ref_output, (ref_h, ref_c) = reference(x)
    assert output.isnan()[2:, 1].all() and not output.isnan()[:2].any() and not output[:, 0].isnan().any()
    assert h_n[:, 1].isnan().all() and c_n[:, 1].isnan().all()
    assert h_n[:, 0].isfinite().all() and c_n[:, 0].isfinite().all()
    assert torch.equal(output.isnan(), ref_output.isnan())
    assert torch.equal(h_n.isnan(), ref_h.isnan()) and torch.equal(c_n.isnan(), ref_c.isnan())


# ------------------------------------------------------------------------------------------ optimizers
def _params():
    return [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(2))]


OPTIMIZERS = {
    "SRSGD": lambda params, **kw: SRSGD(params, **{"lr": 0.1, **kw}),
    "NAG": lambda params, **kw: NAG(params, **{"lr": 0.1, **kw}),
    "FrankWolfe": lambda params, **kw: FrankWolfe(params, **{"lr": 0.1, "radius": 1.0, **kw}),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_negative_lr(name):
    with pytest.raises(ValueError, match=r"^lr must be >= 0\.0, got -0\.1"):
        OPTIMIZERS[name](_params(), lr=-0.1)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_negative_lr_in_added_param_group(name):
    """A rejected param group raises and is not left half-added."""
    opt = OPTIMIZERS[name](_params())
    with pytest.raises(ValueError, match=r"^lr must be >= 0\.0, got -1\.0"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.randn(4))], "lr": -1.0})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("inner_steps", [0, -1])
def test_frank_wolfe_inner_steps_below_one(inner_steps):
    with pytest.raises(ValueError, match=rf"^inner_steps must be >= 1, got {inner_steps}"):
        FrankWolfe(_params(), lr=0.1, radius=1.0, inner_steps=inner_steps)


def test_frank_wolfe_inner_steps_not_an_integer():
    with pytest.raises(TypeError, match=r"^inner_steps must be an int, got float"):
        FrankWolfe(_params(), lr=0.1, radius=1.0, inner_steps=2.5)


@pytest.mark.parametrize("radius, match", [(0.0, r"^radius must be > 0\.0, got 0\.0"),
                                           (-0.5, r"^radius must be > 0\.0, got -0\.5")])
def test_frank_wolfe_radius_not_positive(radius, match):
    with pytest.raises(ValueError, match=match):
        FrankWolfe(_params(), lr=0.1, radius=radius)


@pytest.mark.parametrize("restart", [0, -2])
def test_srsgd_restart_below_one(restart):
    with pytest.raises(ValueError, match=rf"^restart must be >= 1, got {restart}"):
        SRSGD(_params(), lr=0.1, restart=restart)


def test_srsgd_restart_not_an_integer():
    with pytest.raises(TypeError, match=r"^restart must be an int, got float"):
        SRSGD(_params(), lr=0.1, restart=2.5)


def test_srsgd_restart_stage_below_one():
    with pytest.raises(ValueError, match=r"^restart\[1\] F must be >= 1, got 0"):
        SRSGD(_params(), lr=0.1, restart=[(10, 4), (20, 0)])


def test_nag_restart_below_one():
    with pytest.raises(ValueError, match=r"^restart must be >= 1, got 0"):
        NAG(_params(), lr=0.1, schedule="restart", restart=0)


# ------------------------------------------------------------------------------------------ devices
# A CPU-only machine has one real device; "meta" (shapes without storage) is the odd one out. The check runs
# before any compute, so the error is the same as for a cuda:0 / cpu mix.
def test_input_on_another_device_than_parameters(cls):
    with pytest.raises(ValueError, match=r"^input is on meta but the parameters are on cpu"):
        _module(cls)(torch.randn(T, B, IN, device="meta"))


def test_parameters_on_another_device_than_input(cls):
    with pytest.raises(ValueError, match=r"^input is on cpu but the parameters are on meta"):
        _module(cls, device="meta")(torch.randn(T, B, IN))


def test_hx_on_another_device_than_input(cls):
    with pytest.raises(ValueError, match=_hx_name(cls) + r" is on meta but must be on cpu"):
        _module(cls)(torch.randn(T, B, IN), _hx(cls, torch.zeros(1, B, H, device="meta")))


def test_c0_on_another_device_than_input():
    with pytest.raises(ValueError, match=r"^hx\[1\] \(c_0\) is on meta but must be on cpu"):
        _module(tritonrnn.MomentumLSTM)(torch.randn(T, B, IN),
                                        (torch.zeros(1, B, H), torch.zeros(1, B, H, device="meta")))


def test_momentum_state_on_another_device_than_input():
    with pytest.raises(ValueError, match=r"^state\['v'\] is on meta but must be on cpu"):
        _module(tritonrnn.MomentumLSTM)(torch.randn(T, B, IN), state={"v": torch.zeros(1, B, 4 * H, device="meta")})


@pytest.mark.parametrize("cell_cls", [tritonrnn.MomentumLSTMCell, tritonrnn.AdamRNNCell], ids=lambda c: c.__name__)
def test_cell_input_on_another_device_than_parameters(cell_cls):
    with pytest.raises(ValueError, match=r"^input is on meta but the parameters are on cpu"):
        cell_cls(IN, H, backend="torch")(torch.randn(B, IN, device="meta"))


def test_cell_hx_on_another_device_than_input():
    with pytest.raises(ValueError, match=r"^hx\[0\] \(h_0\) is on meta but must be on cpu"):
        tritonrnn.MomentumLSTMCell(IN, H, backend="torch")(torch.randn(B, IN),
                                                          (torch.zeros(B, H, device="meta"), torch.zeros(B, H)))
