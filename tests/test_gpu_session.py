"""The GPU session command (perf/gpu_session.sh, issue #13) cannot rot between GPU sessions: its dry run (tiny
shapes on the CPU, the kernels under Triton's interpreter) runs every section end to end here, and the row
isolation / budget logic it relies on is checked directly."""
import csv
import importlib.util
import os
import subprocess
import sys

import pytest

from tritonrnn.perf import gpu_session

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_dry_run_of_the_whole_session(tmp_path):
    out = tmp_path / "session"
    env = dict(os.environ, DRY_RUN="1", OUT=str(out), PYTHON=sys.executable)
    proc = subprocess.run(["bash", "perf/gpu_session.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = dict(line.split() for line in (out / "status.txt").read_text().splitlines())
    tiers_exist = importlib.util.find_spec("tritonrnn.perf.recurrence_tiers") is not None
    for section in ("tests", "table", "scan", "optim", "report"):
        assert status[section] == "0", (section, (out / f"{section}-log.txt").read_text()[-3000:])
    # the recurrence-tier section fails alone while its module does not exist; the others ran regardless
    assert (status["tiers"] == "0") == tiers_exist, (out / "tiers-log.txt").read_text()[-3000:]

    table = _rows(out / "table.csv")
    assert not [r for r in table if r["note"].startswith("error")]
    measured = {(r["model"], r["provider"], r["dtype"]) for r in table}
    for model in gpu_session.DRY_MODELS:
        for provider in ("tritonrnn:auto", "tritonrnn:torch", "tritonrnn:triton"):
            assert (model, provider, "float32") in measured
    assert ("AdamRNN", "tritonrnn:identity-native", "float32") in measured
    assert ("AdamRNN", "tritonrnn:identity-native", "autocast-bfloat16") in measured
    assert ("MomentumLSTM", "eager", "float32") in measured
    assert all(float(r["p50_us_per_sample"]) > 0 for r in table)

    scan = _rows(out / "scan.csv")
    got = {(r["op"], r["pass"], r["dtype"]) for r in scan}
    for op in ("momentum_scan", "restart_scan", "adam_scan", "rmsprop_scan"):
        for kind in ("forward", "forward+backward"):
            assert {(op, kind, "float32"), (op, kind, "bfloat16")} <= got
    assert all(float(r["fraction_of_copy"]) > 0 for r in scan)

    optim = _rows(out / "optim.csv")
    names = {r["optimizer"] for r in optim}
    assert set(gpu_session.optimizer_makers()) | {"copy_"} == names
    assert all(float(r["gbps"]) > 0 for r in optim)

    for section in ("table", "scan", "optim"):
        assert (out / f"{section}-not-run.txt").read_text() == ""
    assert (out / "tests-not-run.txt").read_text().count("::") > 0  # collected, not run, and listed
    summary = (out / "summary.md").read_text()
    assert "float32" in summary and "autocast-bfloat16" in summary and "fraction of a device-to-device copy" in summary


def test_a_failing_row_never_stops_the_section(tmp_path):
    sec = gpu_session.Section("demo", str(tmp_path), budget_s=60, fields=["model", "note"])

    def boom():
        raise RuntimeError("CUDA error: an illegal memory access")
    sec.run("bad row", boom)
    sec.run("good row", lambda: [{"model": "ok"}])
    rows = _rows(tmp_path / "demo.csv")
    assert rows[0]["note"].startswith("error: bad row: RuntimeError") and rows[1]["model"] == "ok"
    assert sec.errors == 1


def test_rows_past_the_budget_are_listed_not_run(tmp_path):
    sec = gpu_session.Section("demo", str(tmp_path), budget_s=5, fields=["model", "note"])
    sec.run("fits", lambda: [{"model": "a"}], reserve_s=0)
    sec.run("too long", lambda: pytest.fail("started past the budget"), reserve_s=10)
    sec.finish()
    assert (tmp_path / "demo-not-run.txt").read_text() == "too long\n"
    assert [r["model"] for r in _rows(tmp_path / "demo.csv")] == ["a"]


# ------------------------------------------------------------------------------------------ the README's GPU table
def test_readme_gpu_table_is_generated_from_the_results():
    from tritonrnn.perf import readme_gpu

    assert readme_gpu.main(["--readme", os.path.join(ROOT, "README.md"), "--check"]) == 0


def test_readme_gpu_table_renders_the_newest_gpu_run(tmp_path):
    from tritonrnn.perf import readme_gpu
    from tritonrnn.perf.results_io import FIELDS, append_rows

    def row(device, ts, provider, mode, us, dtype="float32"):
        return dict(timestamp=ts, commit="abc1234", device=device, torch="2.x", triton="3.x", suite="papers_table",
                    model="AdamLSTM", provider=provider, mode=mode, dtype=dtype, batch=128, seq_len=784, input_size=1,
                    hidden_size=256, iters=50, warmup=10, p50_us_per_sample=us)

    old, new = "2027-01-01T00:00:00+00:00", "2027-02-01T00:00:00+00:00"
    append_rows(str(tmp_path / "results" / "a" / "table.csv"),
                [row("NVIDIA H100", old, "tritonrnn:triton", "train", 99.0), row("NVIDIA H100", old, "tritonrnn:triton",
                                                                                  "eval", 98.0)])
    append_rows(str(tmp_path / "results" / "b" / "table.csv"),
                [row("NVIDIA H100", new, p, m, v) for p, m, v in (("tritonrnn:triton", "train", 12.345),
                                                                   ("tritonrnn:triton", "eval", 5.0),
                                                                   ("tritonrnn:identity-native", "train", 11.0))]
                + [row("NVIDIA H100", new, "torch.nn", "train", 7.0, dtype="autocast-bfloat16"),
                   row("NVIDIA H100", new, "torch.nn", "eval", 3.0, dtype="autocast-bfloat16"),
                   row("CPU x86_64 (2 cores, 2 threads)", new, "tritonrnn:torch", "train", 1.0)])
    assert FIELDS  # the files are the results_io format the benchmarks write
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{readme_gpu.BEGIN}\nstale 1.00\n{readme_gpu.END}\noutro\n")
    readme_gpu.main(["--readme", str(readme), "--results-dir", str(tmp_path / "results")])
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "stale" not in text
    assert "`results/b/table.csv`" in text and "99.00" not in text and "CPU" not in text
    assert "| float32 | tritonrnn:triton | tritonrnn:identity-native |" in text
    assert "| AdamLSTM | 12.35 / 5.00 | 11.00 (train) |" in text
    assert "| autocast-bfloat16 | torch.nn |" in text and "| AdamLSTM | 7.00 / 3.00 |" in text
    assert readme_gpu.main(["--readme", str(readme), "--results-dir", str(tmp_path / "results"), "--check"]) == 0
    (tmp_path / "results" / "b" / "table.csv").unlink()
    assert readme_gpu.main(["--readme", str(readme), "--results-dir", str(tmp_path / "results"), "--check"]) == 1
