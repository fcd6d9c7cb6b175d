"""Smoke tests of the command line (`python -m tritonrnn ...`) and the perf scripts, with tiny sizes."""
import csv
import importlib.util
import os
import subprocess
import sys

import pytest

HAS_MPL = importlib.util.find_spec("matplotlib") is not None


def _run(args, tmp_path, timeout=600):
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-m", "tritonrnn", *args], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_train_writes_curves_and_a_comparison_table(tmp_path):
    stdout = _run(["train", "--steps", "4", "--eval-every", "2", "--seq-len", "6", "--batch", "4", "--hidden", "4",
                   "--cells", "lstm,adam_lstm", "--backend", "torch", "--out", "run"], tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "run" / "curves.csv")))
    assert {r["cell"] for r in rows} == {"lstm", "adam_lstm"}
    assert [int(r["step"]) for r in rows if r["cell"] == "lstm"] == [2, 4]
    assert all(float(r["train_loss"]) >= 0 for r in rows)
    assert "| lstm |" in stdout and "| adam_lstm |" in stdout
    assert (tmp_path / "run" / "curves.png").exists() == HAS_MPL


def test_train_rejects_an_unknown_cell(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tritonrnn", "train", "--cells", "gru"], capture_output=True,
                         text=True, cwd=tmp_path, timeout=120)
    assert out.returncode != 0 and "--cells" in out.stderr


def test_bench_writes_the_papers_table(tmp_path):
    stdout = _run(["bench", "--models", "LSTM,MomentumLSTM", "--providers", "tritonrnn:torch,torch.nn,eager",
                   "--seq-len", "5", "--batch", "4", "--hidden-size", "8", "--iters", "2", "--warmup", "1",
                   "--out-dir", str(tmp_path)], tmp_path)
    csvs = [p for p in os.listdir(tmp_path) if p.startswith("papers_table-") and p.endswith(".csv")]
    assert len(csvs) == 1
    rows = list(csv.DictReader(open(tmp_path / csvs[0])))
    measured = {(r["model"], r["provider"], r["mode"]) for r in rows}
    # torch.nn (nn.LSTM) is the peer on every LSTM row: every pair is measured in train and eval
    assert measured == {(m, p, mode) for m in ("LSTM", "MomentumLSTM") for p in ("tritonrnn:torch", "eager", "torch.nn")
                        for mode in ("train", "eval")}
    assert all(float(r["p50_us_per_sample"]) > 0 and r["device"] and r["torch"] for r in rows)
    assert all(float(r["saved_mb"]) > 0 for r in rows if r["mode"] == "train")  # memory kept for the backward
    assert "| MomentumLSTM |" in stdout and "7.43 / 3.16" in stdout   # the paper's figures beside ours


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
def test_check_runs_every_kernel_against_the_torch_paths(tmp_path, monkeypatch):
    import re

    import tritonrnn.kernels
    from tritonrnn.selfcheck import KERNEL_CASES

    # every kernel module (a module or subpackage of tritonrnn.kernels with a @triton.jit kernel) has its cases
    kernel_dir = tritonrnn.kernels.__path__[0]

    def has_kernel(path):
        files = [path] if path.endswith(".py") else [os.path.join(path, f) for f in os.listdir(path) if f.endswith(".py")]
        return any(re.search(r"^@triton\.jit", open(f).read(), re.M) for f in files)

    modules = {name[:-3] if name.endswith(".py") else name for name in os.listdir(kernel_dir)
               if (name.endswith(".py") or os.path.isdir(os.path.join(kernel_dir, name)))
               and has_kernel(os.path.join(kernel_dir, name))}
    assert modules == set(KERNEL_CASES), (modules, set(KERNEL_CASES))
    # as a user runs it: a fresh process without TRITON_INTERPRET (check switches the interpreter on itself
    # on a CPU-only machine)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    stdout = _run(["check", "--quick"], tmp_path, timeout=900)
    assert "verdict: all kernels agree" in stdout
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^(\S.*?)\s+(PASS|FAIL)\s", stdout, re.M)}
    for module, prefixes in KERNEL_CASES.items():
        for prefix in prefixes:
            hits = [verdict for name, verdict in rows.items() if name.startswith(prefix + " ")]
            assert hits and set(hits) == {"PASS"}, (module, prefix, stdout)


# ---------------------------------------------------------------------------------------------------------
# The orthogonal (DTRIV) and IndRNN cores of issue #8 on the command line and in the papers' table.
def _train_in_process(args, tmp_path):
    from tritonrnn.cli import main

    out = tmp_path / "run"
    # --backend torch: under the test harness TRITON_INTERPRET=1 makes "auto" pick the (slow) interpreter;
    # it also puts the tritonrnn optimizers on their foreach path
    assert main(["train", *args, "--backend", "torch", "--out", str(out), "--no-plot"]) == 0
    return list(csv.DictReader(open(out / "curves.csv")))


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="the digits tasks need scikit-learn")
def test_momentum_orthogonal_rnn_learns_permuted_digits(tmp_path, capsys):
    # `--model <class name>` and the `pdigits` alias; 30 steps of batch 32 reach well above chance (0.12)
    rows = _train_in_process(["--task", "pdigits", "--model", "MomentumOrthogonalRNN", "--steps", "30",
                              "--eval-every", "10", "--batch", "32", "--hidden", "32", "--lr", "0.003"], tmp_path)
    assert {r["cell"] for r in rows} == {"momentum_orthogonal_rnn"}
    acc = [float(r["accuracy"]) for r in rows]
    loss = [float(r["train_loss"]) for r in rows]
    assert acc[-1] >= 0.35, acc           # chance 0.1226 (the test split's majority class); this run: 0.54
    assert loss[-1] < loss[0] - 0.2, loss
    assert "U at lr 0.0003" in capsys.readouterr().out   # DTRIV's 10x smaller lr for the orthogonal parameter


def test_indrnn_learns_adding_with_frank_wolfe(tmp_path, capsys):
    # `--optimizer frankwolfe` alias, recurrent_max = 2^(1/T) clipped after every step
    rows = _train_in_process(["--task", "adding", "--model", "IndRNN", "--optimizer", "frankwolfe", "--lr", "0.003",
                              "--seq-len", "10", "--steps", "400", "--eval-every", "100", "--batch", "64",
                              "--hidden", "32"], tmp_path)
    mse = [float(r["mse"]) for r in rows]
    # chance (always 1.0) is 1/6. The curve's last points move by ±0.01 with the training trajectory (seeds 0-3,
    # measured: final 0.119 / 0.111 / 0.109 / 0.130, and a rounding-level change of the gradients' summation
    # order moved seed 0 from 0.108 to 0.119), so the claim is on the mean of the last two evaluations, with a
    # margin over that spread: measured 0.115 / 0.115 / 0.117 / 0.131, first evaluation 0.138 / 0.147 / 0.138
    # / 0.161
    late = sum(mse[-2:]) / 2
    assert late < 0.8 * (1 / 6), mse
    assert late < mse[0] - 0.015, mse
    assert f"recurrent_max {2 ** (1 / 10):.6g}" in capsys.readouterr().out


def test_param_groups_and_after_step_hooks():
    import torch
    from torch import nn

    import tritonrnn
    from tritonrnn.cli import _after_step, cell_key, param_groups

    assert cell_key("MomentumOrthogonalRNN") == "momentum_orthogonal_rnn" and cell_key("indrnn") == "indrnn"
    assert cell_key("SRIndRNN") == "sr_indrnn" and cell_key("gru") is None
    torch.manual_seed(0)
    orth = tritonrnn.OrthogonalRNN(2, 4, backend="torch")
    model = nn.ModuleDict({"body": orth, "head": nn.Linear(4, 1)})
    groups = param_groups(model, 1e-4)
    assert len(groups) == 2 and groups[1]["lr"] == 1e-4
    assert [p is orth.parametrizations.weight_hh_l0.original for p in groups[1]["params"]] == [True]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert len(param_groups(nn.ModuleDict({"body": tritonrnn.IndRNN(2, 4)}), 1e-4)) == 1

    # DTRIV change of base every 2 steps: U is unchanged by it, the trivialization restarts at exp(0)
    # (torch stores the restarted unconstrained parameter as -I, whose skew-symmetric part is 0)
    after = _after_step(orth, rebase_every=2)
    original = orth.parametrizations.weight_hh_l0.original
    with torch.no_grad():
        original.add_(0.1 * torch.randn(4, 4))

    def skew():
        a = orth.parametrizations.weight_hh_l0.original
        return (a - a.T).abs().max().item()

    u = orth.weight_hh_l0.detach().clone()
    after(1)
    assert skew() > 1e-3
    after(2)
    torch.testing.assert_close(orth.weight_hh_l0, u, atol=1e-5, rtol=0)
    assert skew() < 1e-6

    ind = tritonrnn.IndRNN(2, 4, recurrent_max=0.5)
    with torch.no_grad():
        ind.weight_hh_l0.copy_(torch.tensor([2.0, -3.0, 0.25, 0.5]))
    _after_step(ind, rebase_every=0)(1)
    assert ind.weight_hh_l0.tolist() == [0.5, -0.5, 0.25, 0.5]


def test_bench_measures_the_new_cores_against_the_reference_peers(tmp_path):
    stdout = _run(["bench", "--rows", "orthogonalrnn,IndRNN", "--models", "OrthogonalRNN,MomentumIndRNN,LSTM",
                   "--providers", "tritonrnn:torch,torch.nn,eager", "--seq-len", "5", "--batch", "4",
                   "--hidden-size", "8", "--iters", "2", "--warmup", "1", "--threads", "1",
                   "--out-dir", str(tmp_path)], tmp_path)
    csvs = [p for p in os.listdir(tmp_path) if p.endswith(".csv")]
    assert len(csvs) == 1 and csvs[0].startswith("papers_table-reduced-b4-t5-i1-h8-")   # never the paper's name
    rows = list(csv.DictReader(open(tmp_path / csvs[0])))
    measured = {(r["model"], r["provider"], r["mode"]) for r in rows}
    assert measured == {(m, p, mode) for m in ("OrthogonalRNN", "MomentumIndRNN") for p in ("tritonrnn:torch", "eager")
                        for mode in ("train", "eval")}
    assert "skipped: torch.nn has no orthogonal" in stdout and "skipped: torch.nn has no IndRNN" in stdout
    assert "REDUCED SHAPE" in stdout


def test_papers_table_default_includes_the_new_cores_on_triton():
    import torch

    from tritonrnn.perf import papers_table as pt

    models = pt.select_models()
    for m in ("OrthogonalRNN", "MomentumOrthogonalRNN", "IndRNN", "MomentumIndRNN"):
        assert m in models
    assert pt.default_providers("cuda")[0] == "tritonrnn:triton"
    assert pt.select_models(rows=["indrnn"]) == ["IndRNN", "MomentumIndRNN", "SRIndRNN", "AdamIndRNN", "RMSPropIndRNN"]
    assert pt.file_label(pt.PAPER_SHAPE) == "papers_table" and not pt.is_reduced(pt.PAPER_SHAPE)
    # the eager peer computes what the module computes (same weights: U materialised, w clipped)
    shape = dict(pt.PAPER_SHAPE, batch=3, seq_len=6, hidden_size=5)
    x = torch.rand(6, 3, 1, generator=torch.Generator().manual_seed(0))
    for model in ("MomentumOrthogonalRNN", "MomentumIndRNN"):
        mod = pt.build(model, "tritonrnn:torch", shape, "cpu", torch.float32)
        ref = pt.build(model, "eager", shape, "cpu", torch.float32)
        ref.load_state_dict({k.replace("body.", "body.module.", 1) if k.startswith("body.") else k: v
                             for k, v in mod.state_dict().items()})
        torch.testing.assert_close(ref(x), mod(x), atol=1e-5, rtol=1e-5)
    assert pt.build("IndRNN", "eager", shape, "cpu", torch.float32).body.module.recurrent_max == 2 ** (1 / 6)


@pytest.mark.skipif(not HAS_MPL, reason="needs matplotlib")
def test_learning_curves_that_coincide_stay_distinguishable():
    # The default run's LSTM, MomentumLSTM and SRLSTM sit at chance on the same curve: each model's line
    # needs its own (colour, line style, marker), or one hides the others
    from tritonrnn.cli import _figure
    from tritonrnn.perf.results_io import pyplot
    from tritonrnn.tasks import make_task

    task = make_task("adding", seq_len=6)
    cells = ["lstm", "momentum_lstm", "sr_lstm", "adam_lstm", "rmsprop_lstm"]
    curves = [{"cell": cell, "step": step, "train_loss": 0.17 if i < 3 else 0.1 / step, "mse": 0.17 if i < 3 else 0.1 / step}
              for i, cell in enumerate(cells) for step in range(1, 31)]
    plt = pyplot()
    fig = _figure(plt, curves, task, threshold=task.chance / 2)
    try:
        for ax in fig.axes:
            lines = [line for line in ax.get_lines() if line.get_label() in cells]
            assert [line.get_label() for line in lines] == cells
            styles = [(line.get_color(), line.get_linestyle(), line.get_marker()) for line in lines]
            assert len(set(styles)) == len(cells), styles
            assert all(marker not in (None, "None", "") for _, _, marker in styles)
            # the three coinciding curves put their markers on different points
            offsets = [line.get_markevery() for line in lines[:3]]
            assert len(set(offsets)) == 3, offsets
    finally:
        plt.close(fig)
