"""Long-term dependency problems of the seed papers, generated on the fly.

Sources: the "pathological" problems of Hochreiter & Schmidhuber (1997) as used by Martens & Sutskever
(2011) and Sutskever, Martens, Dahl & Hinton (ICML 2013, appendix A.4: addition, multiplication, 5-bit and
20-bit memorisation), the copying problem, and a small stand-in for the pixel-by-pixel (permuted) MNIST
benchmark of the MomentumRNN paper built on scikit-learn's bundled 8x8 digits.

Every task has the same small interface::

    task = make_task("adding", seq_len=100)
    x, y = task.sample(batch=32, generator=0)    # x: (T, B, input_size), time-major like nn.LSTM
    out, _ = lstm(x)                              # (T, B, H)
    pred = head(task.readout(out))                # (B, output_size) or (k, B, output_size)
    loss = task.loss(pred, y); acc_or_mse = task.metric(pred, y)
    print(f"{task.metric_name}={acc_or_mse:.4f} (chance {task.chance:.4f})")

Layout. Inputs are (T, B, input_size) time-major, or (B, T, input_size) with ``batch_first=True``.
Targets come in two kinds, told apart by ``task.target_steps``:

* ``target_steps is None``: one prediction per sequence, read from the last step. ``outputs`` for
  ``loss``/``metric`` is (B, output_size); targets are (B, 1) floats (regression) or (B,) int64 labels
  (classification).
* ``target_steps == k``: one prediction at each of the last k steps (copying, memorisation). ``outputs`` is
  (k, B, output_size) time-major or (B, k, output_size) batch_first; targets are (k, B) / (B, k) int64.

``task.readout(seq_outputs)`` cuts the part ``loss``/``metric`` expect out of a full per-step output.

Randomness. ``generator`` is a ``torch.Generator``, an int seed, or None (torch's global CPU generator, so
``torch.manual_seed`` governs it). Draws happen on the generator's device (the CPU for an int seed or None)
and the batch is then moved to ``device``, so one int seed gives the same batch on every device.
Continuous values are drawn in float64 and rounded once to ``dtype``; targets are computed from the rounded
inputs the model actually sees, so a target never disagrees with its inputs by a rounding.

Chance levels. ``task.chance`` is the value of ``task.metric`` reached by the best predictor that ignores
the inputs (the constant mean target for regression, the most frequent class for classification) and
``task.chance_loss`` is its ``task.loss``; ``task.chance_note`` says how each was obtained. Regression tasks
also expose ``target_mean`` (Sutskever et al. 2013 start the output bias at the mean target, table 4).
"""
from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F

from ._validate import check_float, check_int

__all__ = ["TASKS", "make_task", "Task", "AddingTask", "MultiplicationTask", "CopyingTask",
           "MemorizationTask", "DigitsTask"]

_TASK_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Sutskever et al. (2013) score addition/multiplication by the fraction of sequences whose absolute error
# exceeds 0.04 (sec. 4.2); ``Task.zero_one`` uses the same threshold.
ZERO_ONE_THRESHOLD = 0.04


def _resolve_generator(generator):
    """(torch.Generator or None, device the draws are made on)."""
    if generator is None:
        return None, torch.device("cpu")
    if isinstance(generator, torch.Generator):
        return generator, generator.device
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        seed = int(generator)
        if seed < 0:
            raise ValueError(f"generator: an int seed must be >= 0, got {seed}")
        g = torch.Generator(device="cpu")
        g.manual_seed(seed)
        return g, torch.device("cpu")
    raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")


class Task:
    """Common interface. Subclasses set the class attributes and implement ``_draw``."""

    name: str = ""
    kind: str = ""                 # "regression" or "classification"
    metric_name: str = ""          # "mse" or "accuracy"
    higher_is_better: bool = False

    def __init__(self, *, batch_first=False, dtype=torch.float32, device=None):
        if not isinstance(batch_first, bool):
            raise TypeError(f"batch_first must be a bool, got {type(batch_first).__name__}")
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype, got {type(dtype).__name__}")
        if dtype not in _TASK_DTYPES:
            raise TypeError(f"dtype must be one of {[str(d) for d in _TASK_DTYPES]}, got {dtype}")
        try:
            device = torch.device("cpu" if device is None else device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device: not a valid torch device: {device!r}") from exc
        self.batch_first = batch_first
        self.dtype = dtype
        self.device = device
        # Set by subclasses.
        self.input_size: int = 0
        self.output_size: int = 0
        self.seq_len: int = 0
        self.target_steps: int | None = None
        self.chance: float = float("nan")
        self.chance_loss: float = float("nan")
        self.chance_note: str = ""

    def __repr__(self):
        return (f"{type(self).__name__}(name={self.name!r}, seq_len={self.seq_len}, input_size={self.input_size}, "
                f"output_size={self.output_size}, target_steps={self.target_steps}, batch_first={self.batch_first}, "
                f"dtype={self.dtype}, device={self.device})")

    # -- sampling -----------------------------------------------------------------------------------------
    def sample(self, batch, generator=None):
        """A fresh batch ``(inputs, targets)``; see the module docstring for layouts and seeding."""
        batch = check_int(batch, "batch", low=1)
        g, draw_device = _resolve_generator(generator)
        inputs, targets = self._draw(batch, g, draw_device)          # batch-major: (B, T, C), (B, ...)
        return self._finish(inputs, targets)

    def _draw(self, batch, g, draw_device):
        raise NotImplementedError

    def _finish(self, inputs, targets):
        """Batch-major tensors -> the task's layout, dtype and device."""
        inputs = inputs.to(device=self.device)
        targets = targets.to(device=self.device)
        if not self.batch_first:
            inputs = inputs.transpose(0, 1).contiguous()
            if targets.dim() == 2 and self.target_steps is not None:
                targets = targets.transpose(0, 1).contiguous()
        return inputs, targets

    # -- reading model outputs ----------------------------------------------------------------------------
    def readout(self, seq_outputs):
        """The part of a per-step output (T, B, C) (or (B, T, C) when batch_first) that ``loss`` expects:
        the last step (B, C) when ``target_steps`` is None, else the last ``target_steps`` steps."""
        if not isinstance(seq_outputs, torch.Tensor):
            raise TypeError(f"seq_outputs must be a torch.Tensor, got {type(seq_outputs).__name__}")
        if seq_outputs.dim() != 3:
            raise ValueError(f"seq_outputs must be 3-d ({'B, T, C' if self.batch_first else 'T, B, C'}), "
                             f"got shape {tuple(seq_outputs.shape)}")
        tdim = 1 if self.batch_first else 0
        steps = seq_outputs.shape[tdim]
        k = 1 if self.target_steps is None else self.target_steps
        if steps < k:
            raise ValueError(f"seq_outputs has {steps} steps, fewer than the {k} this task reads")
        if self.target_steps is None:
            return seq_outputs.select(tdim, steps - 1)
        return seq_outputs.narrow(tdim, steps - k, k)

    # -- loss and metric ----------------------------------------------------------------------------------
    def _check_pair(self, outputs, targets):
        if not isinstance(outputs, torch.Tensor):
            raise TypeError(f"outputs must be a torch.Tensor, got {type(outputs).__name__}")
        if not isinstance(targets, torch.Tensor):
            raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
        if not outputs.is_floating_point():
            raise TypeError(f"outputs must be a floating-point tensor, got {outputs.dtype}")
        if self.kind == "regression":
            # (B, 1) as a head with output_size 1 gives it; a squeezed (B,) is accepted too.
            if outputs.dim() == 1:
                outputs = outputs.unsqueeze(-1)
            if tuple(outputs.shape) != tuple(targets.shape):
                raise ValueError(f"outputs must have shape {tuple(targets.shape)} (or {tuple(targets.shape[:1])}) "
                                 f"to match targets, got {tuple(outputs.shape)}")
            return outputs, targets
        if targets.dtype != torch.int64:
            raise TypeError(f"targets must be int64 class labels, got {targets.dtype}")
        expected = tuple(targets.shape) + (self.output_size,)
        if tuple(outputs.shape) != expected:
            raise ValueError(f"outputs must be logits of shape {expected} to match targets, "
                             f"got {tuple(outputs.shape)}")
        return outputs.reshape(-1, self.output_size), targets.reshape(-1)

    @staticmethod
    def _compute_dtype(outputs):
        # Losses of half-precision outputs are taken in float32: a bf16 mean over a batch loses the digits
        # that tell two close losses apart.
        return torch.promote_types(outputs.dtype, torch.float32)

    def loss(self, outputs, targets):
        """Differentiable scalar: mean squared error (regression) or mean cross-entropy (classification)."""
        outputs, targets = self._check_pair(outputs, targets)
        ct = self._compute_dtype(outputs)
        if self.kind == "regression":
            return F.mse_loss(outputs.to(ct), targets.to(ct))
        return F.cross_entropy(outputs.to(ct), targets)

    def metric(self, outputs, targets):
        """Python float: MSE (regression, lower is better) or accuracy in [0, 1] (classification)."""
        with torch.no_grad():
            outputs, targets = self._check_pair(outputs, targets)
            if self.kind == "regression":
                ct = self._compute_dtype(outputs)
                return float(F.mse_loss(outputs.to(ct), targets.to(ct)))
            return float((outputs.argmax(dim=-1) == targets).to(torch.float64).mean())

    def zero_one(self, outputs, targets):
        """Python float: the zero-one error of Sutskever et al. (2013), sec. 4.2: the fraction of sequences
        whose absolute error exceeds 0.04 (regression) or the fraction of wrong predictions (classification)."""
        with torch.no_grad():
            outputs, targets = self._check_pair(outputs, targets)
            if self.kind == "regression":
                err = (outputs.to(torch.float64) - targets.to(torch.float64)).abs()
                return float((err > ZERO_ONE_THRESHOLD).to(torch.float64).mean())
            return 1.0 - float((outputs.argmax(dim=-1) == targets).to(torch.float64).mean())


# ------------------------------------------------------------------------------------------------------------
# Addition and multiplication
# ------------------------------------------------------------------------------------------------------------
class _TwoMarkerTask(Task):
    """Two input channels per step: a value drawn from U[0, 1] and a 0/1 marker. Exactly two steps are
    marked, one drawn uniformly from the first half [0, T//2) and one from the second half [T//2, T);
    the target (B, 1) is a function of the two marked values, read at the last step."""

    kind = "regression"
    metric_name = "mse"
    higher_is_better = False

    def __init__(self, seq_len=100, **common):
        super().__init__(**common)
        self.seq_len = check_int(seq_len, "seq_len", low=2)
        self.input_size = 2
        self.output_size = 1
        self.target_steps = None

    def _combine(self, a, b):
        raise NotImplementedError

    def _draw(self, batch, g, draw_device):
        T, half = self.seq_len, self.seq_len // 2
        # Fixed draw order (values, first marker, second marker) keeps a seed's batch stable.
        values = torch.rand(batch, T, generator=g, device=draw_device, dtype=torch.float64).to(self.dtype)
        first = torch.randint(0, half, (batch,), generator=g, device=draw_device)
        second = torch.randint(half, T, (batch,), generator=g, device=draw_device)
        markers = torch.zeros(batch, T, device=draw_device, dtype=self.dtype)
        rows = torch.arange(batch, device=draw_device)
        markers[rows, first] = 1
        markers[rows, second] = 1
        inputs = torch.stack([values, markers], dim=-1)                                   # (B, T, 2)
        # Target from the rounded values the model sees, combined in float64, rounded once.
        v64 = values.to(torch.float64)
        targets = self._combine(v64[rows, first], v64[rows, second]).to(self.dtype).unsqueeze(-1)
        return inputs, targets


class AddingTask(_TwoMarkerTask):
    """Addition problem: target = sum of the two marked values, in [0, 2].

    Chance: the constant 1.0 (the mean target) has MSE Var(X + Y) = 2/12 = 1/6 ~ 0.1667."""

    name = "adding"

    def __init__(self, seq_len=100, **common):
        super().__init__(seq_len, **common)
        self.target_mean = 1.0
        self.chance = 1.0 / 6.0
        self.chance_loss = 1.0 / 6.0
        self.chance_note = "MSE of always predicting the mean target 1.0: Var(X+Y) = 1/6"

    def _combine(self, a, b):
        return a + b


class MultiplicationTask(_TwoMarkerTask):
    """Multiplication problem: target = product of the two marked values, in [0, 1].

    Chance: the constant 1/4 (the mean target) has MSE Var(XY) = E[X^2]E[Y^2] - 1/16 = 1/9 - 1/16 = 7/144
    ~ 0.0486. Sutskever et al. (2013) centre the inputs for this problem (appendix A.5); that is left to the
    caller (subtract 0.5 from the value channel)."""

    name = "multiplication"

    def __init__(self, seq_len=100, **common):
        super().__init__(seq_len, **common)
        self.target_mean = 0.25
        self.chance = 7.0 / 144.0
        self.chance_loss = 7.0 / 144.0
        self.chance_note = "MSE of always predicting the mean target 1/4: Var(XY) = 7/144"

    def _combine(self, a, b):
        return a * b


# ------------------------------------------------------------------------------------------------------------
# Copying and bit memorisation
# ------------------------------------------------------------------------------------------------------------
class _RecallTask(Task):
    kind = "classification"
    metric_name = "accuracy"
    higher_is_better = True

    def _one_hot(self, idx, channels):
        return F.one_hot(idx, channels).to(self.dtype)


class CopyingTask(_RecallTask):
    """Copying problem.

    Sequence of length ``T = 2 * n_copy + delay + 1``, one-hot inputs over ``n_symbols + 2`` channels:
    channels ``0 .. n_symbols-1`` are the data symbols, channel ``n_symbols`` is the blank, channel
    ``n_symbols + 1`` the delimiter::

        steps [0, n_copy)                      n_copy symbols drawn uniformly from the alphabet
        steps [n_copy, n_copy + delay)         blank
        step  n_copy + delay                   delimiter ("start recalling")
        steps [n_copy + delay + 1, T)          blank; the model must output the n_copy symbols in order

    Targets: (n_copy, B) int64 symbol indices in [0, n_symbols) for the last n_copy steps only (time-major;
    (B, n_copy) when batch_first). ``output_size = n_symbols`` (no blank class: only the recall steps are
    scored). With ``n_symbols=5, n_copy=10`` this is the "20-bit memorisation" problem of Sutskever et al.
    (2013) (ten 5-ary symbols) with an explicit delimiter.

    Chance: accuracy 1/n_symbols; cross-entropy log(n_symbols) (uniform logits)."""

    name = "copying"

    def __init__(self, n_symbols=8, n_copy=10, delay=100, **common):
        super().__init__(**common)
        self.n_symbols = check_int(n_symbols, "n_symbols", low=2)
        self.n_copy = check_int(n_copy, "n_copy", low=1)
        self.delay = check_int(delay, "delay", low=0)
        self.seq_len = 2 * self.n_copy + self.delay + 1
        self.input_size = self.n_symbols + 2
        self.output_size = self.n_symbols
        self.target_steps = self.n_copy
        self.chance = 1.0 / self.n_symbols
        self.chance_loss = math.log(self.n_symbols)
        self.chance_note = "uniform guess over the alphabet at each recall step"

    def _draw(self, batch, g, draw_device):
        n, k = self.n_symbols, self.n_copy
        symbols = torch.randint(0, n, (batch, k), generator=g, device=draw_device)
        idx = torch.full((batch, self.seq_len), n, dtype=torch.int64, device=draw_device)    # blank
        idx[:, :k] = symbols
        idx[:, k + self.delay] = n + 1                                                        # delimiter
        return self._one_hot(idx, n + 2), symbols


class MemorizationTask(_RecallTask):
    """Noiseless bit memorisation (the "5-bit memorization problem" of Sutskever et al. 2013, A.4).

    Exact variant used here: a sequence of length ``seq_len`` (the paper's T; 200 for its mem-5 rows) with
    one-hot inputs over 4 channels ``[bit = 0, bit = 1, blank, recall]``::

        steps [0, n_bits)                      the n_bits bits, one per step (channel 0 or 1)
        steps [n_bits, seq_len - n_bits)       blank (channel 2); no distractors, no noise
        steps [seq_len - n_bits, seq_len)      recall cue (channel 3) at every step; the model outputs the
                                               bits in the order they were shown, one per step

    The recall cue on every recall step (rather than a single delimiter, as in ``copying``) tells the model
    when to answer without it having to count ``seq_len`` steps. Targets: (n_bits, B) int64 bits (time-major;
    (B, n_bits) when batch_first); ``output_size = 2`` (logits for 0 and 1).

    Chance: accuracy 0.5 per bit; cross-entropy log 2."""

    name = "memorization"

    def __init__(self, n_bits=5, seq_len=200, **common):
        super().__init__(**common)
        self.n_bits = check_int(n_bits, "n_bits", low=1)
        self.seq_len = check_int(seq_len, "seq_len", low=1)
        if self.seq_len < 2 * self.n_bits:
            raise ValueError(f"seq_len must be >= 2 * n_bits = {2 * self.n_bits} (bits shown, then recalled), "
                             f"got {self.seq_len}")
        self.delay = self.seq_len - 2 * self.n_bits
        self.input_size = 4
        self.output_size = 2
        self.target_steps = self.n_bits
        self.chance = 0.5
        self.chance_loss = math.log(2.0)
        self.chance_note = "coin flip at each recall step"

    def _draw(self, batch, g, draw_device):
        k, T = self.n_bits, self.seq_len
        bits = torch.randint(0, 2, (batch, k), generator=g, device=draw_device)
        idx = torch.full((batch, T), 2, dtype=torch.int64, device=draw_device)                # blank
        idx[:, :k] = bits
        idx[:, T - k:] = 3                                                                    # recall cue
        return self._one_hot(idx, 4), bits


# ------------------------------------------------------------------------------------------------------------
# Pixel-by-pixel digits (scikit-learn's bundled 8x8 digits; nothing is downloaded)
# ------------------------------------------------------------------------------------------------------------
_SKLEARN_HINT = ("the 'digits' and 'permuted_digits' tasks need scikit-learn (an optional extra): "
                 "pip install 'tritonrnn[digits]'   (or: pip install 'scikit-learn>=1.3')")


def _require_sklearn_digits():
    # Imported on use so that `import tritonrnn.tasks` works without the optional extra.
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(_SKLEARN_HINT) from exc
    return load_digits


@functools.lru_cache(maxsize=1)
def _digits_arrays(load_digits):
    bunch = load_digits()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)


class DigitsTask(Task):
    """Pixel-by-pixel (optionally permuted) classification of scikit-learn's 8x8 digits (1797 images).

    Each image is a sequence of 64 steps, one pixel per step in row-major order (input_size 1), scaled from
    0..16 to [0, 1]. With ``permuted=True`` the pixel order is a fixed permutation drawn from ``perm_seed``.
    Targets: (B,) int64 labels 0..9; ``output_size = 10``; read at the last step.

    Split: ``round(test_fraction * 1797)`` images form the test split, chosen by
    ``numpy.random.RandomState(split_seed).permutation`` (RandomState's stream is frozen by NumPy, so the
    split and the pixel permutation are the same on every platform and version); both splits keep the
    dataset's order. ``sample`` draws ``batch`` distinct images from ``split`` (train by default);
    ``dataset(split)`` returns a whole split for evaluation.

    Chance: accuracy of always predicting the test split's most frequent class; cross-entropy of predicting
    the test split's class frequencies (their entropy). Both are ~0.10 and ~log 10."""

    kind = "classification"
    metric_name = "accuracy"
    higher_is_better = True

    def __init__(self, permuted=False, perm_seed=0, split_seed=0, test_fraction=0.2, **common):
        super().__init__(**common)
        if not isinstance(permuted, bool):
            raise TypeError(f"permuted must be a bool, got {type(permuted).__name__}")
        self.permuted = permuted
        self.perm_seed = check_int(perm_seed, "perm_seed", low=0)
        self.split_seed = check_int(split_seed, "split_seed", low=0)
        self.test_fraction = check_float(test_fraction, "test_fraction", low=0.0, high=1.0,
                                         low_open=True, high_open=True)
        self.name = "permuted_digits" if permuted else "digits"
        data, labels = _digits_arrays(_require_sklearn_digits())
        n = data.shape[0]
        n_test = int(round(self.test_fraction * n))
        if not 1 <= n_test <= n - 1:
            raise ValueError(f"test_fraction={self.test_fraction} leaves an empty split of the {n} images")
        order = np.random.RandomState(self.split_seed).permutation(n)
        test_idx, train_idx = np.sort(order[:n_test]), np.sort(order[n_test:])
        self.permutation = (np.random.RandomState(self.perm_seed).permutation(64) if permuted
                            else np.arange(64))
        pixels = data[:, self.permutation] / 16.0
        self.seq_len = 64
        self.input_size = 1
        self.output_size = 10
        self.target_steps = None
        self._splits = {}
        for split, idx in (("train", train_idx), ("test", test_idx)):
            x = torch.from_numpy(pixels[idx]).to(device=self.device, dtype=self.dtype).unsqueeze(-1)  # (N, 64, 1)
            y = torch.from_numpy(labels[idx]).to(device=self.device)
            self._splits[split] = (x, y)
        test_labels = labels[test_idx]
        freq = np.bincount(test_labels, minlength=10) / len(test_labels)
        self.chance = float(freq.max())
        self.chance_loss = float(-(freq[freq > 0] * np.log(freq[freq > 0])).sum())
        self.chance_note = ("accuracy of the test split's majority class; loss = entropy of the test split's "
                            "class frequencies")

    def _split(self, split):
        if split not in self._splits:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return self._splits[split]

    def split_size(self, split="train"):
        return self._split(split)[0].shape[0]

    def sample(self, batch, generator=None, split="train"):
        """``batch`` distinct images drawn uniformly from ``split``."""
        batch = check_int(batch, "batch", low=1)
        x, y = self._split(split)
        if batch > x.shape[0]:
            raise ValueError(f"batch ({batch}) must be <= the {x.shape[0]} images of the {split!r} split")
        g, draw_device = _resolve_generator(generator)
        idx = torch.randperm(x.shape[0], generator=g, device=draw_device)[:batch].to(self.device)
        return self._finish(x[idx], y[idx])

    def dataset(self, split="test"):
        """The whole split as ``(inputs, targets)``, in the split's fixed order."""
        x, y = self._split(split)
        return self._finish(x, y)


# ------------------------------------------------------------------------------------------------------------
_FACTORIES = {
    "adding": AddingTask,
    "multiplication": MultiplicationTask,
    "copying": CopyingTask,
    "memorization": MemorizationTask,
    "memorisation": MemorizationTask,
    "digits": functools.partial(DigitsTask, permuted=False),
    "permuted_digits": functools.partial(DigitsTask, permuted=True),
    "pdigits": functools.partial(DigitsTask, permuted=True),
}
TASKS = ("adding", "multiplication", "copying", "memorization", "digits", "permuted_digits")


def make_task(name, **kwargs):
    """Build a task by name (one of ``TASKS``; "memorisation" and "pdigits" (= permuted_digits) are accepted
    too). ``kwargs`` go to the task's constructor: its own parameters plus ``batch_first``, ``dtype`` and
    ``device``."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = name.lower().replace("-", "_")
    if key not in _FACTORIES:
        raise ValueError(f"name must be one of {list(TASKS)}, got {name!r}")
    return _FACTORIES[key](**kwargs)
