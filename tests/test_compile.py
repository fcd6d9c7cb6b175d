"""torch.compile (issue #7): modules and optimizers under torch.compile(fullgraph=True), without graph breaks,
equal to eager; the Triton kernels as torch custom ops (tritonrnn::*) with fake implementations and autograd.

On CPU the compiled graphs use backend="aot_eager" (AOTAutograd traces forward and backward through the
fake implementations, the ops run eagerly): the Triton path runs under the interpreter, which inductor
cannot fuse anyway, and inductor's C++ compile costs ~30 s per graph on this CI. One inductor test covers
the torch path; on a GPU the `gpu` tests compile the Triton path with inductor.
fullgraph=True turns any graph break into an error, so every compiled call here also checks "no breaks".
"""
import pytest
import torch

import tritonrnn.nn as tnn
import tritonrnn.optim as tro
from tests.conftest import DEVICE
from tests.optim.common import twin_step
from tests.tolerance import tolerance

pytest.importorskip("triton")

T, B, N_IN, H = 4, 2, 3, 8
MODULES = ["LSTM", "MomentumLSTM", "SRLSTM", "AdamLSTM", "RMSPropLSTM", "NesterovLSTM", "RNN", "MomentumRNN",
           "MomentumOrthogonalRNN", "MomentumIndRNN"]
KERNEL_OPS = ("tritonrnn.recurrence_fwd", "tritonrnn.indrnn_fwd")
NATIVE_OP, STEP_LOOP_OP = "tritonrnn.native_layer_fwd", "tritonrnn.step_loop_fwd"
TORCH_PATH_OPS = (NATIVE_OP, STEP_LOOP_OP)
ORTHOGONAL_OP = "tritonrnn.orthogonal_weight_fwd"
# the families whose eager torch path is the native oneDNN / cuDNN call (SPEC §1.4); compiled, they run it as
# one op (layers.COMPILED_NATIVE), the others run the step-loop op
NATIVE_FAMILIES = ("LSTM", "MomentumLSTM", "SRLSTM", "RNN", "MomentumRNN")


def _recording(backend, seen):
    """A dynamo backend that records the ops of each captured graph, then compiles with `backend`."""
    inner = torch._dynamo.lookup_backend(backend)

    def compile_fn(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return inner(gm, example_inputs)
    return compile_fn


def _run(model, x, seed=1):
    """Outputs (output, h_n[, c_n]) and the gradients of x and every parameter for a random cotangent."""
    out, hn = model(x)
    results = [out, *(hn if isinstance(hn, tuple) else (hn,))]
    g = torch.Generator().manual_seed(seed)
    loss = sum((r * torch.randn(r.shape, generator=g).to(r.device)).sum() for r in results)
    grads = torch.autograd.grad(loss, [x, *model.parameters()])
    return [r.detach() for r in results], list(grads)


def _check_module(name, backend, compiler, device, exact=False, **kwargs):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = getattr(tnn, name)(N_IN, H, backend=backend, **kwargs).to(device)
    x = torch.randn(T, B, N_IN, device=device, requires_grad=True)
    seen = []
    compiled = torch.compile(model, backend=_recording(compiler, seen), fullgraph=True)
    got_out, got_grads = _run(compiled, x)
    want_out, want_grads = _run(model, x)
    # Derived bound: the compiled step-loop op (_fused) and the eager native cell round differently in fp32
    # over T steps, and a weight gradient sums T·B terms; the Triton path runs the same kernels. `exact`: the
    # compiled call runs eager's own code (the native-layer op), so the same arithmetic.
    rtol, atol = (0.0, 0.0) if exact else tolerance(torch.float32, steps=T * B)
    for got, want in zip(got_out + got_grads, want_out + want_grads):
        assert got.shape == want.shape and got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol)
    return seen


@pytest.mark.parametrize("compiled_native", [True, False], ids=["native-op", "step-loop"])
@pytest.mark.parametrize("name", MODULES)
def test_module_torch_backend_compiles_fullgraph(name, compiled_native, monkeypatch):
    """Both ops a native family can compile to (layers.COMPILED_NATIVE) equal eager; the native-layer op
    bitwise, since it runs eager's own call."""
    from tritonrnn.functional import layers

    monkeypatch.setattr(layers, "COMPILED_NATIVE", compiled_native)
    native = compiled_native and name in NATIVE_FAMILIES
    seen = _check_module(name, "torch", "aot_eager", torch.device("cpu"), exact=native)
    # issue #17: the layer's recurrence is one opaque torch-path op (one layer, one direction here), no kernel
    assert not any(s.startswith(KERNEL_OPS) for s in seen), seen
    assert sum(s.startswith(NATIVE_OP if native else STEP_LOOP_OP) for s in seen) == 1, seen
    assert sum(s.startswith(TORCH_PATH_OPS) for s in seen) == 1, seen


@pytest.mark.parametrize("name,kwargs", [
    ("MomentumLSTM", dict(num_layers=2, bidirectional=True)),
    ("LSTM", dict(proj_size=3, bidirectional=True)),
    ("SRLSTM", dict(num_layers=2, bias=False)),
    ("MomentumRNN", dict(nonlinearity="relu", bidirectional=True)),
])
def test_native_op_layers_and_directions(name, kwargs):
    """The native-layer op per layer and direction (projection, no bias, relu included): bitwise eager."""
    seen = _check_module(name, "torch", "aot_eager", torch.device("cpu"), exact=True, **kwargs)
    layers_ = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    assert sum(s.startswith(NATIVE_OP) for s in seen) == layers_, seen
    assert not any(s.startswith(STEP_LOOP_OP) for s in seen), seen


def test_native_op_carried_state_and_offset():
    """A carried momentum state v_0 (the identity-native core inside the op) and a step offset: compiled =
    eager bitwise, the final state and the gradient of v_0 included."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = tnn.SRLSTM(N_IN, H, backend="torch")
    x = torch.randn(T, B, N_IN, requires_grad=True)
    v0 = torch.randn(1, B, 4 * H, requires_grad=True)

    def run(m):
        out, (h, c), state = m(x, state={"v": v0}, step_offset=3, return_state=True)
        results = [out, h, c, state["v"]]
        g = torch.Generator().manual_seed(2)
        loss = sum((r * torch.randn(r.shape, generator=g)).sum() for r in results)
        return results + list(torch.autograd.grad(loss, [x, v0, *model.parameters()]))

    got = run(torch.compile(model, backend="aot_eager", fullgraph=True))
    for a, b in zip(got, run(model)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", MODULES)
def test_module_triton_backend_compiles_fullgraph(name, device):
    seen = _check_module(name, "triton", "aot_eager", device)
    # The kernels are in the graph as custom ops (not traced through, not run outside the graph).
    assert any(s.startswith(KERNEL_OPS) for s in seen), seen


def test_module_torch_backend_inductor():
    _check_module("MomentumRNN", "torch", "inductor", torch.device("cpu"))


@pytest.mark.gpu
@pytest.mark.parametrize("name", MODULES)
def test_module_triton_backend_inductor_gpu(name):
    seen = _check_module(name, "triton", "inductor", torch.device("cuda"))
    assert any(s.startswith(KERNEL_OPS) for s in seen), seen


def test_no_graph_breaks_counted():
    """explain() reports what fullgraph=True would reject, for one module per path."""
    torch._dynamo.reset()
    for backend in ("torch", "triton"):
        model = tnn.AdamLSTM(N_IN, H, backend=backend).to(DEVICE)
        x = torch.randn(T, B, N_IN, device=DEVICE)
        explanation = torch._dynamo.explain(model)(x)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        assert explanation.graph_count == 1


# ----------------------------------------------------------------------------------------- the custom ops
def _op_cases(device, opcheck=False):
    from tritonrnn.kernels import recurrence as rec
    from tritonrnn.kernels import scan

    g = torch.Generator().manual_seed(3)

    def rand(*shape, grad=True, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device).requires_grad_(grad)

    u = rand(B, T, 3)
    u_tm = rand(T, B, 3).transpose(0, 1)  # a time-major view: outputs keep its layout
    v0, m0 = rand(B, 3), rand(B, 3).abs()
    cases = [
        ("momentum_scan_fwd", scan._momentum_scan_fwd_op, (u, v0, 0.6, 0.6, 0, 0)),
        ("momentum_scan_fwd restart time-major", scan._momentum_scan_fwd_op, (u_tm, None, 0.0, 0.6, 2, 3)),
        ("momentum_scan_bwd", scan._momentum_scan_bwd_op, (u.detach(), v0.detach(), 0.6, 0.6, 0, 0, True)),
        ("adam_scan_fwd", scan._adam_scan_fwd_op, (u, v0, m0, 0.6, 0.6, 0.1, 1e-8, True)),
        ("adam_scan_fwd time-major", scan._adam_scan_fwd_op, (u_tm, None, None, 0.0, 0.6, 0.9, 1e-8, True)),
        ("adam_scan_bwd", scan._adam_scan_bwd_op,
         (u.detach(), u.detach(), None, v0.detach(), rand(B, 1, 3, grad=False), rand(B, 1, 3, grad=False).abs(),
          0.6, 0.6, 0.1, 1e-8, True, True)),
    ]
    w = rand(4 * H, H, scale=0.3)
    b = rand(4 * H)
    h0, c0, n0 = rand(B, H), rand(B, H), rand(B, 4 * H)
    cells = [("lstm", rec.LSTM, rand(B, T, 4 * H), w, b, c0, None),
             ("momentum_lstm", rec.MOMENTUM_LSTM, rand(B, T, 4 * H), w, b, c0, n0),
             ("nesterov_lstm", rec.NESTEROV_LSTM, rand(B, T, 4 * H), w, b, c0, n0),
             ("rnn_tanh", rec.RNN_TANH, rand(B, T, H), w[:H].detach().requires_grad_(), b[:H].detach(), None, None),
             ("rnn_modrelu", rec.RNN_MODRELU, rand(T, B, H).transpose(0, 1), w[:H].detach().requires_grad_(),
              b[:H].detach().requires_grad_(), None, None)]
    for i, (label, cell, a, w_, b_, c0_, n0_) in enumerate(cells):
        time_major = (i % 2 == 1) if opcheck else (False, True)  # opcheck is slow: one layout per cell
        for tm in (time_major if isinstance(time_major, tuple) else (time_major,)):
            cases.append((f"recurrence_fwd {label} time_major={tm}", rec._recurrence_fwd_op,
                          (a, w_, b_, h0, c0_, n0_, cell, 0.6, 0.6, 2 if cell == rec.NESTEROV_LSTM else 0, 1, tm,
                           True)))
    from tritonrnn.functional import layers

    # the native-layer op (issue #17): momentum LSTM with a carried v_0 and a step offset, plain RNN with a
    # projection-free relu core, LSTM with a projection, Adam on the identity-native core; its backward op
    x_tm, w_ih4, w_ih1 = rand(T, B, 3), rand(4 * H, 3, scale=0.3), rand(H, 3, scale=0.3)
    w_hr = rand(2, H, scale=0.3)
    native = [("momentum lstm", (x_tm, w_ih4, w, b, b.detach().requires_grad_(), None, h0, c0, n0, None, None,
                                 "lstm", "restart", "native", 0.0, 0.6, 0.0, 0.0, 2, 3, True)),
              ("plain rnn_relu", (x_tm, w_ih1, w[:H, :H].detach().requires_grad_(), None, None, None, h0, None,
                                  None, None, None, "rnn_relu", "plain", "native", 0.0, 0.0, 0.0, 0.0, 0, 0, True)),
              ("projected lstm", (x_tm, w_ih4, w[:, :2].detach().requires_grad_(), b, b.detach(), w_hr,
                                  h0[:, :2].detach(), c0, None, None, None, "lstm", "plain", "native", 0.0, 0.0, 0.0,
                                  0.0, 0, 0, True)),
              ("adam identity-native", (x_tm, w_ih4, w, b, b.detach(), None, h0, c0, n0, n0.detach().abs(), None,
                                        "lstm", "adam", "identity-native", 0.6, 0.6, 0.1, 1e-8, 0, 0, True))]
    for label, args in native:
        cases.append((f"native_layer_fwd {label}", layers._native_layer_fwd_op, args))
    with torch.no_grad():
        outs = layers._native_layer_fwd_op(*native[0][1])
    grads_out = tuple(rand(*o.shape, grad=False) if o.numel() else None for o in outs)
    needs = [t is not None and t.requires_grad for t in native[0][1][:10]]
    cases.append(("native_layer_bwd momentum lstm", layers._native_layer_bwd_op,
                  (*grads_out, *(t.detach() if isinstance(t, torch.Tensor) else t for t in native[0][1][:11]), needs,
                   *native[0][1][11:20])))
    from tritonrnn.functional import steploop

    # the step-loop op (issues #16, #17): Adam LSTM with W_ih, b_ih and carried states; the single-gate modReLU
    # core on a given drive (w_ih None, as the functional recurrences call it); and the backward op
    adam = (x_tm, w_ih4, b, w, b.detach().requires_grad_(), h0, c0, n0, n0.detach().abs(), None, "lstm", "adam",
            0.6, 0.6, 0.1, 1e-8, 0, 2, True)
    cases += [("step_loop_fwd adam lstm", steploop._step_loop_fwd_op, adam),
              ("step_loop_fwd modrelu drive", steploop._step_loop_fwd_op,
               (rand(T, B, H), None, None, w[:H].detach().requires_grad_(), b[:H].detach().requires_grad_(), h0,
                None, None, None, None, "rnn_modrelu", "plain", 0.0, 0.0, 0.0, 0.0, 0, 0, True))]
    with torch.no_grad():
        outs = steploop._step_loop_fwd_op(*adam)
    cot = tuple(rand(*o.shape, grad=False) for o in outs[:6])
    cases.append(("step_loop_bwd adam lstm", steploop._step_loop_bwd_op,
                  (*cot, *(t.detach() if isinstance(t, torch.Tensor) else t for t in adam[:10]), outs[0], *outs[6:],
                   *adam[10:18])))
    from tritonrnn.kernels import indrnn

    w_ind = rand(H).detach().uniform_(-1.0, 1.0).requires_grad_()
    for tm in ((True,) if opcheck else (False, True)):
        a = rand(T, B, H).transpose(0, 1) if tm else rand(B, T, H)
        cases.append((f"indrnn_fwd time_major={tm}", indrnn._indrnn_fwd_op, (a, w_ind, rand(H), h0, tm, True)))
    with torch.no_grad():
        hs = indrnn._indrnn_fwd_op(rand(B, T, H), w_ind, None, None, False, True)[2]
    cases.append(("indrnn_bwd", indrnn._indrnn_bwd_op, (rand(B, T, H, grad=False), None, w_ind.detach(), hs)))
    with torch.no_grad():  # saved activations of the LSTM cell with a carried state
        outs = rec._recurrence_fwd_op(cells[2][2], w, b, h0, c0, n0, rec.NESTEROV_LSTM, 0.6, 0.0, 2, 1, False, True)
    cases.append(("recurrence_bwd nesterov_lstm", rec._recurrence_bwd_op,
                  (rand(B, T, H, grad=False), rand(B, H, grad=False), None, rand(B, 4 * H, grad=False),
                   w.detach(), outs[4], outs[5], outs[6], rec.NESTEROV_LSTM, 0.0, 2, 1)))
    return cases


def test_custom_ops_pass_opcheck(device):
    """Schema, fake tensor (shapes, strides, dtypes), autograd registration and AOT dispatch of every op."""
    for label, op, args in _op_cases(device, opcheck=True):
        result = torch.library.opcheck(op, args)
        assert all(v == "SUCCESS" for v in result.values()), (label, result)


def test_fake_outputs_have_the_real_strides(device):
    """Compile plans memory from the fake outputs: a time-major output must be time-major there too."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    for label, op, args in _op_cases(device):
        with torch.no_grad():
            real = op(*args)
        with FakeTensorMode() as mode:
            fake = op(*(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args))
        assert [(r.shape, r.stride(), r.dtype) for r in real] == [(f.shape, f.stride(), f.dtype) for f in fake], label


def test_time_major_output_is_time_major(device):
    """The guard on the test above: the recurrence really returns a transposed time-major output."""
    from tritonrnn.kernels import recurrence as rec

    a = torch.randn(T, B, H, device=device).transpose(0, 1)
    w = torch.randn(H, H, device=device) * 0.3
    out = rec._recurrence_fwd_op(a, w, None, None, None, None, rec.RNN_TANH, 0.0, 0.0, 0, 0, True, False)[0]
    assert out.transpose(0, 1).is_contiguous() and not out.is_contiguous()


# ------------------------------------------------------------------------------------------- optimizers
OPTIMIZERS = {
    "SRSGD": lambda ps, backend: tro.SRSGD(ps, lr=0.1, restart=2, weight_decay=0.01, backend=backend),
    "NAG-restart": lambda ps, backend: tro.NAG(ps, lr=0.1, schedule="restart", restart=2, backend=backend),
    "CM-sutskever": lambda ps, backend: tro.NAG(ps, lr=0.1, schedule="sutskever", nesterov=False, backend=backend),
    "FrankWolfe-adam": lambda ps, backend: tro.FrankWolfe(ps, lr=0.1, radius=0.5, inner_steps=2, backend=backend),
    "FrankWolfe-inf-sgd": lambda ps, backend: tro.FrankWolfe(ps, lr=0.1, radius=0.5, inner_steps=2, p="inf",
                                                                    outer="sgd", backend=backend),
    "FrankWolfe-global": lambda ps, backend: tro.FrankWolfe(ps, lr=0.1, radius=0.5, norm="global", backend=backend),
}
# k = 0, 1 and one Frank-Wolfe outer update (the counters are tensors, so the loop compiles once: a 100-step
# loop and its compile count are in tests/optim/test_compile_once.py).
STEPS = 2


def _optimizer_trajectories(name, backend, compiler, device):
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(5)
    init = [torch.randn(7, generator=g), torch.randn(3, 4, generator=g), torch.randn(2, generator=g)]
    eager_ps = [torch.nn.Parameter(p.clone().to(device)) for p in init]
    comp_ps = [torch.nn.Parameter(p.clone().to(device)) for p in init]
    eager, comp = OPTIMIZERS[name](eager_ps, backend), OPTIMIZERS[name](comp_ps, backend)
    seen = []

    @torch.compile(backend=_recording(compiler, seen), fullgraph=True)
    def step():
        comp.step()

    for _ in range(STEPS):
        twin_step(eager, eager_ps, step, comp_ps, init, g, device)
    return eager, comp, seen


@pytest.mark.parametrize("backend", ["foreach", "triton"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_step_compiles_fullgraph(name, backend, device):
    """A compiled step (torch's documented pattern) follows the eager trajectory bitwise: aot_eager runs the
    same aten ops and kernels, only traced. Counters and state must match too (they drive later steps)."""
    eager, comp, seen = _optimizer_trajectories(name, backend, "aot_eager", device if backend == "triton" else "cpu")
    for a, b in zip(eager.param_groups[0]["params"], comp.param_groups[0]["params"]):
        assert torch.equal(a, b)
    for key in ("step", "k", "outer_step", "F", "mu"):
        assert eager.param_groups[0].get(key) == comp.param_groups[0].get(key), key
    for pa, pb in zip(eager.param_groups[0]["params"], comp.param_groups[0]["params"]):
        assert eager.state[pa].keys() == comp.state[pb].keys()
        for k in eager.state[pa]:
            assert torch.equal(eager.state[pa][k], comp.state[pb][k]), k
    assert any(s.startswith("tritonrnn.") for s in seen) == (backend == "triton"), seen


def test_optimizer_ops_pass_opcheck(device):
    from tritonrnn.kernels import multi_tensor as mt

    g = torch.Generator().manual_seed(6)

    def tensors():
        return [torch.randn(5, generator=g).to(device), torch.randn(3, 2, generator=g).to(device)]

    params, grads = tensors(), tensors()
    f64 = lambda *xs: torch.tensor(xs, dtype=torch.float64)  # noqa: E731  (step scalars: a CPU tensor)
    cases = [(mt.srsgd_step_op, (params, grads, tensors(), f64(0.1, 0.5, 0.01))),
             (mt.nag_step_op, (params, grads, tensors(), f64(0.1, 0.5, 1.4, 0.5, 0.0))),
             (mt.grad_norm_op, (params, grads, 0.01)),
             (mt.fw_step_op, (params, grads, tensors(), tensors(), tensors(), [t.abs() for t in tensors()],
                              torch.rand(2, generator=g).to(device),
                              f64(0.5, 0.0, 1.0, 0.5, 0.1, 0.9, 0.999, 1e-8, 1.0, 31.6, 0.0), False, True)),
             (mt.fw_step_op, (params, grads, tensors(), tensors(), [], [], None,
                              f64(1.0, 1.0, 0.0, 0.5, 0.1, 0.9, 0.999, 1e-8, 1.0, 1.0, 0.0), True, False))]
    for op, args in cases:
        result = torch.library.opcheck(op, args)
        assert all(v == "SUCCESS" for v in result.values()), (op, result)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["foreach", "triton"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_step_inductor_gpu(name, backend, request):
    if backend == "foreach" and name in ("SRSGD", "CM-sutskever"):
        # Seen with torch 2.11 on an H200: from step 2 on these drift by about one momentum term from eager
        # when the group holds a parameter without a gradient. The same steps match exactly with aot_eager on
        # CUDA, with inductor on CPU, and on CUDA without that parameter; the Triton backend matches.
        request.applymarker(pytest.mark.xfail(reason="inductor (CUDA) foreach step with a gradless parameter",
                                              strict=False))
    eager, comp, _ = _optimizer_trajectories(name, backend, "inductor", torch.device("cuda"))
    rtol, atol = tolerance(torch.float32, steps=STEPS)
    for a, b in zip(eager.param_groups[0]["params"], comp.param_groups[0]["params"]):
        torch.testing.assert_close(b, a, rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------ compile cost against T (#17)
@pytest.mark.parametrize("name", ["MomentumLSTM", "SRLSTM", "RNN", "AdamLSTM", "NesterovLSTM", "MomentumOrthogonalRNN",
                                  "IndRNN"])
def test_graph_size_is_independent_of_T(name):
    """Every layer's recurrence is one opaque op: the traced forward graph has the same nodes at T = 10 and
    T = 1000 (dynamo no longer unrolls the time loop), so compile time does not grow with T."""
    sizes = []
    for T_ in (10, 1000):
        torch._dynamo.reset()
        seen = []
        model = getattr(tnn, name)(N_IN, H, num_layers=2, backend="torch")  # two layers: one op each
        torch.compile(model, backend=_recording("eager", seen), fullgraph=True)(torch.randn(T_, B, N_IN))
        sizes.append(len(seen))
        assert sum(s.startswith(TORCH_PATH_OPS) for s in seen) == 2, seen  # one per layer
        # the orthogonal cores' U: one opaque op per layer as well, not the map's own ops
        assert sum(s.startswith(ORTHOGONAL_OP) for s in seen) == (2 if "Orthogonal" in name else 0), seen
        assert not any("matrix_exp" in s or "linalg" in s for s in seen), seen
    assert sizes[0] == sizes[1], sizes


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley", "householder"])
def test_orthogonal_weight_op_equals_eager(orthogonal_map):
    """The orthogonal cores' U under compile is the orthogonal-weight op (one per layer and direction), which runs
    torch's own parametrization: outputs and every gradient bitwise eager's, also after DTRIV's change of base
    (rebase_ gives the op a new base) and a changed unconstrained parameter."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = tnn.MomentumOrthogonalRNN(N_IN, H, num_layers=2, bidirectional=True, backend="torch",
                                      orthogonal_map=orthogonal_map)
    keys = list(model.state_dict())
    seen = []
    compiled = torch.compile(model, backend=_recording("aot_eager", seen), fullgraph=True)
    for call in range(2):
        x = torch.randn(T, B, N_IN, requires_grad=True)
        got_out, got_grads = _run(compiled, x)
        want_out, want_grads = _run(model, x)
        for got, want in zip(got_out + got_grads, want_out + want_grads):
            torch.testing.assert_close(got, want, rtol=0, atol=0)  # the same ops on the same tensors
        with torch.no_grad():  # a trained U, then DTRIV's change of base: the second call sees both
            for p in model.parameters():
                p.add_(torch.randn_like(p), alpha=0.1)
            model.rebase_()
            for p in model.parameters():
                p.add_(torch.randn_like(p), alpha=0.1)
    # 2 layers x 2 directions, compiled once; householder twice: torch's right_inverse stores that map's new base
    # column-major (LAPACK's Q) and dynamo guards on a buffer's strides (as it did before this op existed)
    compiles = 2 if orthogonal_map == "householder" else 1
    assert sum(s.startswith(ORTHOGONAL_OP) for s in seen) == 4 * compiles, seen
    assert not any("matrix_exp" in s or "linalg" in s for s in seen), seen
    assert list(model.state_dict()) == keys  # the parametrization's parameters and buffers as they were


def test_orthogonal_weight_op_passes_opcheck():
    """Schema, fake tensor, autograd registration and AOT dispatch of the orthogonal-weight op, every map, with
    and without a base (use_trivialization=False)."""
    from tritonrnn.nn.cores import _orthogonal_fwd_op

    g = torch.Generator().manual_seed(4)
    base = torch.linalg.qr(torch.randn(H, H, generator=g))[0]
    for orthogonal_map in ("matrix_exp", "cayley", "householder"):
        for b in (base, None):
            original = torch.randn(H, H, generator=g).requires_grad_()
            result = torch.library.opcheck(_orthogonal_fwd_op, (original, b, orthogonal_map))
            assert all(v == "SUCCESS" for v in result.values()), (orthogonal_map, b is None, result)


@pytest.mark.parametrize("name", ["AdamLSTM", "MomentumLSTM", "SRLSTM"])
def test_second_sequence_length_does_not_recompile(name):
    """With T marked dynamic, another T reuses the compiled graph (the ops' fake implementations take a symbolic
    T: the step-loop op for Adam, the native-layer op for momentum / restart) and gradients still equal eager's."""
    torch._dynamo.reset()
    graphs = []
    model = getattr(tnn, name)(N_IN, H, backend="torch")
    compiled = torch.compile(model, backend=_recording("aot_eager", graphs), fullgraph=True)
    for T_ in (5, 9):
        x = torch.randn(T_, B, N_IN, requires_grad=True)
        torch._dynamo.mark_dynamic(x, 0)
        got_out, got_grads = _run(compiled, x)
        want_out, want_grads = _run(model, x)
        for got, want in zip(got_out + got_grads, want_out + want_grads):
            torch.testing.assert_close(got, want, rtol=0, atol=0)  # the same op, the same arithmetic
    n_graphs = sum(s.startswith(TORCH_PATH_OPS) for s in graphs)
    assert n_graphs == 1, graphs


def test_compile_time_benchmark_writes_rows(tmp_path):
    """perf/compile_time.py end to end on a tiny sweep (aot_eager: seconds): a fresh process per point, one CSV
    row per (model, T) with the measured fields, the second T without a recompile, and the Markdown table."""
    import csv

    from tritonrnn.perf.compile_time import main

    assert main(["--models", "nn.LSTM,MomentumLSTM,AdamLSTM", "--seq-lens", "5", "--compiler", "aot_eager",
                 "--steps", "1", "--out-dir", str(tmp_path)]) == 0
    (folder,) = tmp_path.iterdir()
    rows = list(csv.DictReader(open(folder / "compile_time.csv")))
    assert [(r["model"], r["seq_len"], r["note"]) for r in rows] == [
        ("nn.LSTM", "5", ""), ("MomentumLSTM", "5", ""), ("AdamLSTM", "5", "")]
    assert [r["compiled_path"] for r in rows[1:]] == ["native-op", "step-loop"]
    for r in rows:
        assert float(r["first_call_s"]) > 0 and float(r["steady_ms"]) > 0 and r["recompiled"] == "False"
    assert [r["unique_graphs"] for r in rows] == ["0", "1", "1"]  # nn.LSTM: dynamo runs it eagerly
    assert "| MomentumLSTM |" in (folder / "compile_time.md").read_text()
