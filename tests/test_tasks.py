"""tritonrnn.tasks: layouts, seeding, and every label checked against an oracle written here in plain
Python/numpy loops (not the vectorised torch code of the module)."""
import math
import sys

import numpy as np
import pytest
import torch

from tritonrnn import tasks

SYNTHETIC = ["adding", "multiplication", "copying", "memorization"]
SMALL = {"adding": dict(seq_len=12), "multiplication": dict(seq_len=12),
         "copying": dict(n_symbols=5, n_copy=4, delay=7), "memorization": dict(n_bits=3, seq_len=15),
         "digits": {}, "permuted_digits": {}}


def _needs_sklearn(name):
    if "digits" in name:
        pytest.importorskip("sklearn")


def _task(name, **kw):
    _needs_sklearn(name)
    return tasks.make_task(name, **{**SMALL[name], **kw})


# ------------------------------------------------------------------------------------------------ layout
@pytest.mark.parametrize("name", list(tasks.TASKS))
@pytest.mark.parametrize("batch_first", [False, True])
def test_shapes_dtype_device(name, batch_first):
    task = _task(name, batch_first=batch_first)
    B = 6
    x, y = task.sample(B, generator=0)
    T = task.seq_len
    assert x.shape == ((B, T, task.input_size) if batch_first else (T, B, task.input_size))
    assert x.dtype == torch.float32 and x.device.type == "cpu" and x.is_contiguous()
    if task.target_steps is None:
        assert y.shape == ((B, 1) if task.kind == "regression" else (B,))
    else:
        k = task.target_steps
        assert y.shape == ((B, k) if batch_first else (k, B))
    assert y.dtype == (torch.float32 if task.kind == "regression" else torch.int64)
    # The whole pipeline an RNN trainer runs: nn.LSTM, readout, a linear head, loss, backward.
    lstm = torch.nn.LSTM(task.input_size, 8, batch_first=batch_first)
    head = torch.nn.Linear(8, task.output_size)
    out, _ = lstm(x)
    pred = head(task.readout(out))
    loss = task.loss(pred, y)
    loss.backward()
    assert loss.dim() == 0 and math.isfinite(loss.item())
    assert isinstance(task.metric(pred, y), float)


@pytest.mark.parametrize("name", SYNTHETIC)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_dtype_selectable(name, dtype):
    task = _task(name, dtype=dtype)
    x, y = task.sample(3, generator=1)
    assert x.dtype == dtype
    if task.kind == "regression":
        assert y.dtype == dtype


def test_task_attributes():
    assert tasks.make_task("copying", n_symbols=8, n_copy=10, delay=100).seq_len == 121
    assert tasks.make_task("copying", n_symbols=8).input_size == 10
    assert tasks.make_task("copying", n_symbols=8).output_size == 8
    assert tasks.make_task("memorization").seq_len == 200        # the paper's mem-5 T
    assert tasks.make_task("memorisation", n_bits=5, seq_len=30).delay == 20
    add = tasks.make_task("adding", seq_len=80)
    assert (add.seq_len, add.input_size, add.output_size, add.target_steps) == (80, 2, 1, None)
    assert "seq_len=80" in repr(add)


# ------------------------------------------------------------------------------------------------ seeding
@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_same_seed_same_batch_and_different_seeds_differ(name):
    task = _task(name)
    x1, y1 = task.sample(16, generator=123)
    x2, y2 = task.sample(16, generator=123)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    # A torch.Generator seeded alike gives the same batch as the int seed.
    g = torch.Generator().manual_seed(123)
    x3, y3 = task.sample(16, generator=g)
    assert torch.equal(x1, x3) and torch.equal(y1, y3)
    # ... and it advances: the next batch from it is a different one.
    x4, _ = task.sample(16, generator=g)
    assert not torch.equal(x3, x4)
    x5, _ = task.sample(16, generator=124)
    assert not torch.equal(x1, x5)
    # A new task object with the same arguments gives the same batch (no hidden state in the task).
    x6, y6 = _task(name).sample(16, generator=123)
    assert torch.equal(x1, x6) and torch.equal(y1, y6)


def test_global_generator_when_none():
    task = tasks.make_task("adding", seq_len=10)
    torch.manual_seed(7)
    a, _ = task.sample(4)
    torch.manual_seed(7)
    b, _ = task.sample(4)
    assert torch.equal(a, b)


def test_same_seed_same_values_across_dtypes():
    # Values are drawn in float64 and rounded once, so a float64 batch rounds to the float32 batch.
    x32, _ = tasks.make_task("adding", seq_len=10).sample(5, generator=3)
    x64, _ = tasks.make_task("adding", seq_len=10, dtype=torch.float64).sample(5, generator=3)
    assert torch.equal(x64.float(), x32)


# ------------------------------------------------------------------------------------------------ oracles
def _two_marker_oracle(x_tm, combine):
    """x_tm: numpy (T, B, 2). Finds the two marked steps with a loop and combines their values in float64."""
    T, B, _ = x_tm.shape
    out = []
    for b in range(B):
        marked = [t for t in range(T) if x_tm[t, b, 1] == 1.0]
        assert len(marked) == 2, f"sequence {b} has markers at {marked}"
        assert marked[0] < T // 2 <= marked[1], f"markers {marked} are not one per half of T={T}"
        for t in range(T):
            assert x_tm[t, b, 1] in (0.0, 1.0)
            assert 0.0 <= x_tm[t, b, 0] <= 1.0
        out.append(combine(float(x_tm[marked[0], b, 0]), float(x_tm[marked[1], b, 0])))
    return out


@pytest.mark.parametrize("name,combine", [("adding", lambda a, b: a + b), ("multiplication", lambda a, b: a * b)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_two_marker_targets_against_oracle(name, combine, dtype):
    task = tasks.make_task(name, seq_len=9, dtype=dtype)
    x, y = task.sample(64, generator=5)
    expected = _two_marker_oracle(x.double().numpy(), combine)
    # The target is the float64 combination of the values as rounded into `dtype`, rounded once more.
    expected = torch.tensor(expected, dtype=torch.float64).to(dtype)
    assert torch.equal(y[:, 0], expected)


def test_markers_cover_both_halves():
    # Over many draws every position of each half is used (the draw is uniform over the half, not fixed).
    task = tasks.make_task("adding", seq_len=8)
    x, _ = task.sample(2000, generator=0)
    counts = x[:, :, 1].sum(dim=1)
    assert torch.all(counts > 0)
    assert counts[:4].sum() == 2000 and counts[4:].sum() == 2000


def _decode_one_hot(x_tm):
    """numpy (T, B, C) one-hot -> (T, B) int indices, checking one-hotness with a loop."""
    T, B, C = x_tm.shape
    idx = np.empty((T, B), dtype=np.int64)
    for t in range(T):
        for b in range(B):
            row = x_tm[t, b]
            hot = [c for c in range(C) if row[c] != 0.0]
            assert len(hot) == 1 and row[hot[0]] == 1.0, f"step {t} of sequence {b} is not one-hot: {row}"
            idx[t, b] = hot[0]
    return idx


def test_copying_against_oracle():
    n, k, delay = 5, 4, 7
    task = tasks.make_task("copying", n_symbols=n, n_copy=k, delay=delay)
    x, y = task.sample(32, generator=9)
    idx = _decode_one_hot(x.numpy())
    blank, delim = n, n + 1
    T = 2 * k + delay + 1
    assert idx.shape[0] == T
    for b in range(32):
        seq = list(idx[:, b])
        assert all(s < n for s in seq[:k])
        assert seq[k:k + delay] == [blank] * delay
        assert seq[k + delay] == delim
        assert seq[k + delay + 1:] == [blank] * k
        assert list(y[:, b].numpy()) == seq[:k]
    assert y.min() >= 0 and y.max() < n


def test_memorization_against_oracle():
    K, T = 3, 15
    task = tasks.make_task("memorization", n_bits=K, seq_len=T)
    x, y = task.sample(32, generator=2)
    idx = _decode_one_hot(x.numpy())
    for b in range(32):
        seq = list(idx[:, b])
        assert all(s in (0, 1) for s in seq[:K])
        assert seq[K:T - K] == [2] * (T - 2 * K)
        assert seq[T - K:] == [3] * K
        assert list(y[:, b].numpy()) == seq[:K]


def test_batch_first_is_the_transpose():
    for name in SYNTHETIC:
        xt, yt = _task(name).sample(4, generator=11)
        xb, yb = _task(name, batch_first=True).sample(4, generator=11)
        assert torch.equal(xb, xt.transpose(0, 1))
        assert torch.equal(yb, yt if _task(name).target_steps is None else yt.transpose(0, 1))


# ------------------------------------------------------------------------------------------------ digits
@pytest.fixture(scope="module")
def digits_oracle():
    datasets = pytest.importorskip("sklearn.datasets")
    bunch = datasets.load_digits()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)


def _lookup(data, labels, perm):
    table = {}
    for img, lab in zip(data, labels):
        table.setdefault(tuple(img[perm]), set()).add(int(lab))
    return table


@pytest.mark.parametrize("permuted", [False, True])
def test_digits_samples_are_dataset_images(digits_oracle, permuted):
    data, labels = digits_oracle
    task = tasks.make_task("permuted_digits" if permuted else "digits")
    perm = task.permutation
    assert sorted(perm.tolist()) == list(range(64))
    assert (perm.tolist() != list(range(64))) == permuted
    table = _lookup(data, labels, perm)
    x, y = task.sample(40, generator=4)
    assert x.shape == (64, 40, 1)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    for b in range(40):
        key = tuple(float(v) * 16.0 for v in x[:, b, 0].tolist())
        assert key in table, f"sample {b} is not a (permuted) dataset image"
        assert int(y[b]) in table[key]
    # Drawn without replacement: the 1797 images are all distinct, so 40 draws give 40 distinct images.
    assert len(table) == len(data)
    assert len({tuple(x[:, b, 0].tolist()) for b in range(40)}) == 40


def test_digits_split_deterministic_and_disjoint(digits_oracle):
    data, _ = digits_oracle
    n = data.shape[0]
    a, b = tasks.make_task("digits"), tasks.make_task("digits")
    assert a.split_size("train") + a.split_size("test") == n
    assert a.split_size("test") == round(0.2 * n)
    xa, ya = a.dataset("test")
    xb, yb = b.dataset("test")
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # Every image lands in exactly one split: compare the multisets of (image, label) rows.
    def rows(x, y):
        return [tuple(x[:, i, 0].tolist()) + (int(y[i]),) for i in range(x.shape[1])]

    xtr, ytr = a.dataset("train")
    split_rows = sorted(rows(xtr, ytr) + rows(xa, ya))
    all_rows = sorted(tuple((img / 16.0).tolist()) + (int(lab),) for img, lab in zip(*digits_oracle))
    assert split_rows == all_rows
    # Another split_seed gives another split; the permutation follows perm_seed only.
    c = tasks.make_task("digits", split_seed=1)
    assert not torch.equal(c.dataset("test")[1], ya)
    p0, p0b, p1 = (tasks.make_task("permuted_digits", perm_seed=s).permutation for s in (0, 0, 1))
    assert np.array_equal(p0, p0b) and not np.array_equal(p0, p1)


def test_digits_chance_and_sampling_rules(digits_oracle):
    task = tasks.make_task("digits")
    _, y = task.dataset("test")
    counts = np.bincount(y.numpy(), minlength=10)
    assert task.chance == pytest.approx(counts.max() / counts.sum())
    assert 0.05 < task.chance < 0.2 and task.chance_loss == pytest.approx(math.log(10), abs=0.05)
    xs, ys = task.sample(8, generator=0, split="test")
    assert xs.shape == (64, 8, 1) and ys.shape == (8,)
    with pytest.raises(ValueError, match="split"):
        task.sample(8, split="valid")
    with pytest.raises(ValueError, match="batch"):
        task.sample(task.split_size("train") + 1)
    xb, _ = tasks.make_task("digits", batch_first=True).dataset("test")
    assert xb.shape == (task.split_size("test"), 64, 1)


def test_digits_without_sklearn_says_what_to_install(monkeypatch):
    # A None entry in sys.modules makes `import sklearn...` raise ImportError, as if it were not installed.
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    for name in ("digits", "permuted_digits"):
        with pytest.raises(ImportError, match=r"pip install 'tritonrnn\[digits\]'"):
            tasks.make_task(name)


# ------------------------------------------------------------------------------------------------ loss, metric
def test_chance_levels_of_regression_tasks():
    for name, const, value in (("adding", 1.0, 1 / 6), ("multiplication", 0.25, 7 / 144)):
        task = tasks.make_task(name, seq_len=6)
        assert task.chance == pytest.approx(value) and task.target_mean == const
        _, y = task.sample(40000, generator=0)
        mse = task.metric(torch.full_like(y, const), y)
        # Standard error of the MSE estimate is < 0.0015 for 40000 draws; 0.006 is 4+ standard errors.
        assert mse == pytest.approx(value, abs=0.006)
        # Predicting the mean is the best constant: shifting it costs.
        assert task.metric(torch.full_like(y, const + 0.2), y) > mse


def test_chance_levels_of_recall_tasks():
    for name in ("copying", "memorization"):
        task = _task(name)
        _, y = task.sample(64, generator=0)
        uniform = torch.zeros(*y.shape, task.output_size)
        assert task.loss(uniform, y).item() == pytest.approx(task.chance_loss, rel=1e-6)
        assert task.chance == pytest.approx(1 / task.output_size)


def test_metric_and_zero_one_on_known_predictions():
    task = tasks.make_task("adding", seq_len=10)
    _, y = task.sample(50, generator=0)
    assert task.metric(y.clone(), y) == 0.0 and task.zero_one(y.clone(), y) == 0.0
    assert task.metric(y + 0.5, y) == pytest.approx(0.25)
    assert task.zero_one(y + 0.05, y) == 1.0 and task.zero_one(y + 0.03, y) == 0.0
    assert task.metric(y[:, 0], y) == 0.0                                  # squeezed (B,) outputs accepted

    cp = tasks.make_task("copying", n_symbols=4, n_copy=3, delay=2)
    _, labels = cp.sample(10, generator=0)
    perfect = 10.0 * torch.nn.functional.one_hot(labels, 4).float()
    assert cp.metric(perfect, labels) == 1.0 and cp.zero_one(perfect, labels) == 0.0
    wrong = 10.0 * torch.nn.functional.one_hot((labels + 1) % 4, 4).float()
    assert cp.metric(wrong, labels) == 0.0
    half = perfect.clone()
    half[:, :5] = wrong[:, :5]
    assert cp.metric(half, labels) == pytest.approx(0.5)
    assert cp.loss(perfect, labels).item() < 1e-3 < cp.loss(wrong, labels).item()


def test_loss_is_differentiable_and_float32_for_half_outputs():
    task = tasks.make_task("copying", n_symbols=4, n_copy=3, delay=2)
    _, y = task.sample(5, generator=0)
    logits = torch.randn(3, 5, 4, dtype=torch.bfloat16, requires_grad=True)
    loss = task.loss(logits, y)
    assert loss.dtype == torch.float32
    loss.backward()
    assert logits.grad is not None and logits.grad.shape == logits.shape


@pytest.mark.parametrize("batch_first", [False, True])
def test_readout(batch_first):
    seq = torch.arange(7 * 2 * 3, dtype=torch.float32).reshape(7, 2, 3)        # (T, B, C)
    given = seq.transpose(0, 1) if batch_first else seq
    last = tasks.make_task("adding", seq_len=7, batch_first=batch_first).readout(given)
    assert torch.equal(last, seq[-1])
    recall = tasks.make_task("memorization", n_bits=2, seq_len=7, batch_first=batch_first).readout(given)
    assert torch.equal(recall, seq[-2:].transpose(0, 1) if batch_first else seq[-2:])
    with pytest.raises(ValueError, match="seq_outputs"):
        tasks.make_task("adding", seq_len=7).readout(seq[0])


# ------------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("call,exc,word", [
    (lambda: tasks.make_task("nope"), ValueError, "name"),
    (lambda: tasks.make_task(3), TypeError, "name"),
    (lambda: tasks.make_task("adding", seq_len=1), ValueError, "seq_len"),
    (lambda: tasks.make_task("adding", seq_len=2.5), TypeError, "seq_len"),
    (lambda: tasks.make_task("adding", dtype=torch.int32), TypeError, "dtype"),
    (lambda: tasks.make_task("adding", dtype="float32"), TypeError, "dtype"),
    (lambda: tasks.make_task("adding", batch_first=1), TypeError, "batch_first"),
    (lambda: tasks.make_task("adding", device="not-a-device"), ValueError, "device"),
    (lambda: tasks.make_task("adding", bogus=1), TypeError, "bogus"),
    (lambda: tasks.make_task("copying", n_symbols=1), ValueError, "n_symbols"),
    (lambda: tasks.make_task("copying", n_copy=0), ValueError, "n_copy"),
    (lambda: tasks.make_task("copying", delay=-1), ValueError, "delay"),
    (lambda: tasks.make_task("memorization", n_bits=5, seq_len=9), ValueError, "seq_len"),
    (lambda: tasks.make_task("memorization", n_bits=0), ValueError, "n_bits"),
    (lambda: tasks.make_task("adding").sample(0), ValueError, "batch"),
    (lambda: tasks.make_task("adding").sample(True), TypeError, "batch"),
    (lambda: tasks.make_task("adding").sample(2, generator="seed"), TypeError, "generator"),
    (lambda: tasks.make_task("adding").sample(2, generator=-1), ValueError, "generator"),
])
def test_argument_errors_name_the_argument(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


def test_digits_argument_errors():
    pytest.importorskip("sklearn")
    with pytest.raises(ValueError, match="test_fraction"):
        tasks.make_task("digits", test_fraction=1.0)
    with pytest.raises(TypeError, match="permuted"):
        tasks.DigitsTask(permuted="yes")
    with pytest.raises(ValueError, match="perm_seed"):
        tasks.make_task("permuted_digits", perm_seed=-1)


def test_loss_shape_errors():
    add = tasks.make_task("adding", seq_len=5)
    _, y = add.sample(4, generator=0)
    with pytest.raises(ValueError, match="outputs"):
        add.loss(torch.zeros(4, 2), y)
    with pytest.raises(TypeError, match="outputs"):
        add.loss(y.numpy(), y)
    cp = tasks.make_task("copying", n_symbols=4, n_copy=3, delay=2)
    _, labels = cp.sample(4, generator=0)
    with pytest.raises(ValueError, match="outputs"):
        cp.loss(torch.zeros(3, 4, 5), labels)
    with pytest.raises(TypeError, match="targets"):
        cp.loss(torch.zeros(3, 4, 4), labels.float())


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_cuda_batch_equals_cpu_batch(name):
    # Draws happen on the CPU for an int seed, so the device only changes where the batch lives.
    x_cpu, y_cpu = _task(name).sample(8, generator=3)
    x_gpu, y_gpu = _task(name, device="cuda").sample(8, generator=3)
    assert x_gpu.device.type == "cuda" and y_gpu.device.type == "cuda"
    assert torch.equal(x_gpu.cpu(), x_cpu) and torch.equal(y_gpu.cpu(), y_cpu)
    # A CUDA generator draws on the GPU: deterministic too.
    g1, g2 = (torch.Generator(device="cuda").manual_seed(5) for _ in range(2))
    a, b = _task(name, device="cuda").sample(8, generator=g1), _task(name, device="cuda").sample(8, generator=g2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_pdigits_is_an_alias_of_permuted_digits():
    pytest.importorskip("sklearn")
    a, b = tasks.make_task("pdigits"), tasks.make_task("permuted_digits")
    assert a.name == b.name == "permuted_digits" and a.permuted
    assert np.array_equal(a.permutation, b.permutation) and not np.array_equal(a.permutation, np.arange(64))
    xa, ya = a.sample(8, generator=3)
    xb, yb = b.sample(8, generator=3)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
