"""tritonrnn.init: the MomentumRNN and Sutskever et al. (2013) initialisers, checked property by property."""
import pytest
import torch

from tritonrnn import init

EPS32 = torch.finfo(torch.float32).eps


def _radius_and_tol(w, dtype=torch.float32):
    """The spectral radius of ``w`` and a first-order bound on |that radius - the requested radius| for a
    block the initialiser drew in float64, rescaled to the requested radius and stored in ``dtype``, from the
    block's measured conditioning (one eigen-solve gives both).

    Each perturbation of the float64 draw is bounded in Frobenius norm (which bounds the 2-norm) relative to
    ||W||_F: the rescale ``w * (radius / r0)`` rounds twice (eps64 per entry); the two eigen-solves (the
    initialiser's r0 and this test's) are backward stable with backward error a modest multiple of n x eps64
    (LAPACK's Householder-based QR iteration; n x eps64 each is taken); storing in ``dtype`` rounds each
    entry by eps/2 relative (nothing for float64). Eigenvalue i moves by at most kappa_i x ||E||_2 to first
    order, kappa_i = ||x_i|| ||y_i|| / |y_i^H x_i| from its right and left eigenvectors, and the radius by at
    most the largest such move among the eigenvalues that can reach the top modulus. The bound scales with
    the measured kappa (a nearly defective top eigenvalue gets a wide bound, a well-conditioned one a tight
    one) instead of assuming one."""
    w64 = w.detach().double()
    n = w64.shape[0]
    eps64 = torch.finfo(torch.float64).eps
    store = 0.0 if dtype == torch.float64 else torch.finfo(dtype).eps / 2
    delta = (store + eps64 + 2 * n * eps64) * torch.linalg.matrix_norm(w64).item()
    lam, x = torch.linalg.eig(w64)
    y = torch.linalg.inv(x)                       # row i is y_i^H, scaled so that y_i^H x_i = 1
    kappa = torch.linalg.vector_norm(x, dim=0) * torch.linalg.vector_norm(y, dim=1)
    bound, mod = kappa * delta, lam.abs()
    top = mod.argmax()
    can_reach_top = mod + bound >= mod[top] - bound[top]
    return mod[top].item(), bound[can_reach_top].max().item()


def _suffixes(num_layers, bidirectional):
    return [f"_l{k}{d}" for k in range(num_layers) for d in ([""] + (["_reverse"] if bidirectional else []))]


# ------------------------------------------------------------------------------------------------ Sutskever
@pytest.mark.parametrize("cls,gates", [(torch.nn.RNN, 1), (torch.nn.LSTM, 4)])
def test_sutskever_structure(cls, gates):
    H, n_in = 40, 3
    m = cls(n_in, H, num_layers=2, bidirectional=True)
    init.sutskever_init_(m, generator=0)
    for sfx in _suffixes(2, True):
        w_hh = getattr(m, "weight_hh" + sfx)
        assert w_hh.shape == (gates * H, H)
        # Exactly 15 nonzero incoming recurrent weights per unit, in every gate block.
        assert torch.equal((w_hh != 0).sum(dim=1), torch.full((gates * H,), 15))
        blocks = w_hh.detach().chunk(gates, dim=0)
        for block in blocks:
            radius, tol = _radius_and_tol(block)
            assert abs(radius - 1.1) <= tol
        # Each gate block is its own draw (different sparsity patterns).
        patterns = {tuple((b != 0).flatten().tolist()) for b in blocks}
        assert len(patterns) == gates
        # Biases zero; input weights dense at the default scale 0.001.
        assert torch.count_nonzero(getattr(m, "bias_ih" + sfx)) == 0
        assert torch.count_nonzero(getattr(m, "bias_hh" + sfx)) == 0
        w_ih = getattr(m, "weight_ih" + sfx)
        assert torch.count_nonzero(w_ih) == w_ih.numel()
        assert 0.0007 < w_ih.std().item() < 0.0013


def test_sutskever_options_and_float64():
    H = 24
    m = torch.nn.LSTM(4, H, dtype=torch.float64)
    init.sutskever_init_(m, spectral_radius=0.9, nonzero=5, input_scale=0.1, forget_bias=2.0, generator=1)
    assert torch.equal((m.weight_hh_l0 != 0).sum(dim=1), torch.full((4 * H,), 5))
    for block in m.weight_hh_l0.chunk(4, dim=0):
        radius, tol = _radius_and_tol(block, torch.float64)
        assert abs(radius - 0.9) <= tol
    # 384 entries drawn from N(0, 0.1^2): the sample std is within ~4 standard errors (~15%) of 0.1.
    assert 0.085 < m.weight_ih_l0.std().item() < 0.115
    b = m.bias_hh_l0.detach()
    assert torch.all(b[H:2 * H] == 2.0) and torch.count_nonzero(b[:H]) == 0 and torch.count_nonzero(b[2 * H:]) == 0
    assert torch.count_nonzero(m.bias_ih_l0) == 0


def test_sutskever_keeps_dtype_device_and_parameter_objects():
    m = torch.nn.RNN(2, 16, bias=False, dtype=torch.float16)
    before = {name: p for name, p in m.named_parameters()}
    out = init.sutskever_init_(m, generator=2)
    assert out is m
    for name, p in m.named_parameters():
        assert p is before[name] and p.dtype == torch.float16 and p.requires_grad
    radius, tol = _radius_and_tol(m.weight_hh_l0, torch.float16)
    assert abs(radius - 1.1) <= tol


def test_sutskever_rejects_bad_arguments():
    m = torch.nn.RNN(2, 10)
    with pytest.raises(ValueError, match="nonzero"):
        init.sutskever_init_(m)                                          # 15 > H = 10
    with pytest.raises(ValueError, match="nonzero"):
        init.sutskever_init_(m, nonzero=0)
    with pytest.raises(ValueError, match="spectral_radius"):
        init.sutskever_init_(m, nonzero=5, spectral_radius=0.0)
    with pytest.raises(ValueError, match="input_scale"):
        init.sutskever_init_(m, nonzero=5, input_scale=-1.0)
    with pytest.raises(TypeError, match="nonzero"):
        init.sutskever_init_(m, nonzero=2.0)
    with pytest.raises(ValueError, match="proj"):
        init.sutskever_init_(torch.nn.LSTM(2, 20, proj_size=5))


# ------------------------------------------------------------------------------------------------ MomentumRNN
def _orthonormal_error(w):
    w = w.detach().double()
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    return (gram - torch.eye(gram.shape[0], dtype=torch.float64)).abs().max().item()


def _ortho_tol(w):
    # Each Gram entry is a dot product of unit vectors stored in float32: rounding error <= ~eps x length.
    return 4 * EPS32 * max(w.shape)


@pytest.mark.parametrize("n_in", [3, 200])     # tall W_ih (orthonormal columns) and wide (orthonormal rows)
def test_momentumrnn_lstm(n_in):
    H = 32
    m = torch.nn.LSTM(n_in, H, num_layers=2, bidirectional=True)
    init.momentumrnn_init_(m, generator=0)
    for sfx in _suffixes(2, True):
        w_ih = getattr(m, "weight_ih" + sfx)
        assert _orthonormal_error(w_ih) <= _ortho_tol(w_ih)
        w_hh = getattr(m, "weight_hh" + sfx).detach()
        assert torch.equal(w_hh[:H], torch.eye(H))                     # input-gate block: identity
        assert torch.count_nonzero(w_hh[H:]) == 0                       # f, g, o blocks: zero
        for name in ("bias_ih", "bias_hh"):
            b = getattr(m, name + sfx).detach()
            assert torch.all(b[H:2 * H] == 1.0), name                  # forget bias 1.0 in EACH bias
            assert torch.count_nonzero(b[:H]) == 0 and torch.count_nonzero(b[2 * H:]) == 0
    # Layer 1 reads both directions of layer 0 (input 2H = 64 <= 4H): orthonormal columns.
    assert m.weight_ih_l1.shape == (4 * H, 2 * H)


def test_momentumrnn_rnn_and_forget_bias_option():
    m = torch.nn.RNN(50, 16)                                            # wide W_ih (16 x 50)
    init.momentumrnn_init_(m, forget_bias=3.0, generator=0)
    assert _orthonormal_error(m.weight_ih_l0) <= _ortho_tol(m.weight_ih_l0)
    assert torch.equal(m.weight_hh_l0.detach(), torch.eye(16))
    # No forget gate in an RNN: forget_bias does not apply.
    assert torch.count_nonzero(m.bias_ih_l0) == 0 and torch.count_nonzero(m.bias_hh_l0) == 0
    lstm = torch.nn.LSTM(2, 8)
    init.momentumrnn_init_(lstm, forget_bias=-4.0, generator=0)
    assert torch.all(lstm.bias_ih_l0[8:16] == -4.0) and torch.all(lstm.bias_hh_l0[8:16] == -4.0)


def test_momentumrnn_projection():
    H, P = 20, 6
    m = torch.nn.LSTM(3, H, proj_size=P)
    init.momentumrnn_init_(m, generator=0)
    assert torch.equal(m.weight_hh_l0.detach(), torch.eye(4 * H, P))
    assert _orthonormal_error(m.weight_hr_l0) <= _ortho_tol(m.weight_hr_l0)


def test_cells_and_nested_modules():
    cell = torch.nn.LSTMCell(3, 16)
    init.momentumrnn_init_(cell, generator=0)
    assert torch.equal(cell.weight_hh[:16].detach(), torch.eye(16))
    assert torch.all(cell.bias_hh[16:32] == 1.0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.RNN(3, 16))
    init.sutskever_init_(model, generator=0)
    assert torch.equal((model[1].weight_hh_l0 != 0).sum(dim=1), torch.full((16,), 15))


# ------------------------------------------------------------------------------------------------ determinism
class _SameNames(torch.nn.Module):
    """A stand-in for a tritonrnn module: nn.LSTM's names and shapes, registered in another order."""

    def __init__(self, n_in, H, layers):
        super().__init__()
        for k in reversed(range(layers)):
            rows, cols = 4 * H, n_in if k == 0 else H
            self.register_parameter(f"bias_hh_l{k}", torch.nn.Parameter(torch.empty(rows)))
            self.register_parameter(f"weight_hh_l{k}", torch.nn.Parameter(torch.empty(rows, H)))
            self.register_parameter(f"bias_ih_l{k}", torch.nn.Parameter(torch.empty(rows)))
            self.register_parameter(f"weight_ih_l{k}", torch.nn.Parameter(torch.empty(rows, cols)))


@pytest.mark.parametrize("fn", [init.momentumrnn_init_, init.sutskever_init_])
def test_deterministic_by_seed(fn):
    def state(seed, cls=torch.nn.LSTM):
        m = cls(3, 16, 2)
        fn(m, generator=seed)
        return {k: v.detach().clone() for k, v in m.state_dict().items()}

    a, b, c = state(5), state(5), state(6)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    # A torch.Generator seeded alike is the same as the int seed.
    g = torch.Generator().manual_seed(5)
    m = torch.nn.LSTM(3, 16, 2)
    fn(m, generator=g)
    assert all(torch.equal(a[k], v) for k, v in m.state_dict().items())
    # Same names in another registration order: same weights for the same seed.
    other = state(5, _SameNames)
    assert set(other) == set(a) and all(torch.equal(a[k], other[k]) for k in a)
    # None draws from torch's global generator.
    torch.manual_seed(0)
    m1 = torch.nn.LSTM(3, 16)
    fn(m1)
    torch.manual_seed(0)
    m2 = torch.nn.LSTM(3, 16)
    fn(m2)
    assert torch.equal(m1.weight_ih_l0, m2.weight_ih_l0)


def _tritonrnn_pairs():
    """(tritonrnn module, torch module with the same parameter names) pairs, skipped until the modules exist."""
    nn_mod = pytest.importorskip("tritonrnn.nn")
    names = ("MomentumLSTM", "MomentumRNN", "MomentumLSTMCell")
    if not all(hasattr(nn_mod, n) for n in names):
        pytest.skip("tritonrnn.nn modules are not built yet")
    return [(nn_mod.MomentumLSTM(3, 16, num_layers=2, bidirectional=True),
             torch.nn.LSTM(3, 16, num_layers=2, bidirectional=True)),
            (nn_mod.MomentumRNN(3, 16), torch.nn.RNN(3, 16)),
            (nn_mod.MomentumLSTMCell(3, 16), torch.nn.LSTMCell(3, 16))]


@pytest.mark.parametrize("fn", [init.momentumrnn_init_, init.sutskever_init_])
def test_tritonrnn_modules_get_the_same_weights_as_torch(fn):
    for ours, ref in _tritonrnn_pairs():
        fn(ours, generator=1)
        fn(ref, generator=1)
        ours_state = ours.state_dict()
        for k, v in ref.state_dict().items():
            assert torch.equal(ours_state[k], v), (type(ours).__name__, k)


# ------------------------------------------------------------------------------------------------ refusals
def test_refusals_name_the_problem():
    with pytest.raises(TypeError, match="module"):
        init.momentumrnn_init_("lstm")
    with pytest.raises(ValueError, match="weight_hh"):
        init.momentumrnn_init_(torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match="gate"):
        init.momentumrnn_init_(torch.nn.GRU(3, 8))                       # G = 3
    with pytest.raises(TypeError, match="generator"):
        init.momentumrnn_init_(torch.nn.LSTM(3, 8), generator="seed")
    with pytest.raises(ValueError, match="generator"):
        init.sutskever_init_(torch.nn.LSTM(3, 20), generator=-3)
    with pytest.raises(TypeError, match="forget_bias"):
        init.momentumrnn_init_(torch.nn.LSTM(3, 8), forget_bias="1")


@pytest.mark.gpu
@pytest.mark.parametrize("fn", [init.momentumrnn_init_, init.sutskever_init_])
def test_cuda_module_gets_the_cpu_weights(fn):
    cpu, gpu = torch.nn.LSTM(3, 16, 2), torch.nn.LSTM(3, 16, 2).cuda()
    fn(cpu, generator=4)
    fn(gpu, generator=4)
    for k, v in cpu.state_dict().items():
        assert gpu.state_dict()[k].device.type == "cuda"
        assert torch.equal(gpu.state_dict()[k].cpu(), v), k
    with pytest.raises(ValueError, match="generator"):
        fn(gpu, generator=torch.Generator(device="cuda"))
