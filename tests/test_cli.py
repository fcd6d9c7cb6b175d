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
    # torch.nn has no MomentumLSTM: that pair is skipped, everything else is measured in train and eval
    assert measured == {(m, p, mode) for m in ("LSTM", "MomentumLSTM") for p in ("tritonrnn:torch", "eager")
                        for mode in ("train", "eval")} | {("LSTM", "torch.nn", "train"), ("LSTM", "torch.nn", "eval")}
    assert all(float(r["p50_us_per_sample"]) > 0 and r["device"] and r["torch"] for r in rows)
    assert "| MomentumLSTM |" in stdout and "7.43 / 3.16" in stdout   # the paper's figures beside ours


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
def test_check_runs_the_kernels_against_the_torch_paths(tmp_path):
    stdout = _run(["check", "--quick"], tmp_path, timeout=900)
    assert "verdict: all kernels agree" in stdout
    assert stdout.count("PASS") >= 10
