"""The recurrence-tier benchmark (tritonrnn.perf.recurrence_tiers, issue 12 item 7) cannot rot between GPU sessions:
its dry run (tiny shapes on the CPU, the kernels under Triton's interpreter) runs every section end to end here and
writes the CSV, the Markdown and the dispatcher's table; the table generation is checked on rows whose verdict is
known (coop_verified only from a passed Tier C check at P > 1, cuDNN kept where it was faster)."""
import csv
import os
import runpy
import subprocess
import sys

import pytest

from tritonrnn.perf import recurrence_tiers as rt

pytest.importorskip("triton")


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiers")
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-m", "tritonrnn.perf.recurrence_tiers", "--out-dir", str(out), "--dry-run",
                           "--budget-s", "300"], env=env, capture_output=True, text=True, timeout=600,
                          cwd=str(out))  # not the checkout's root: it would shadow the installed mapping
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_every_section_writes_its_rows(dry_run):
    rows = _rows(dry_run / "tiers.csv")
    assert not [r for r in rows if r["note"].startswith("error")], [r["note"] for r in rows]
    assert (dry_run / "tiers-not-run.txt").read_text() == ""
    checks = [r for r in rows if r["section"] == "check"]
    assert {(r["model"], r["tier"], r["P"], r["dtype"]) for r in checks} == {
        (cell, tier, str(P), dtype) for cell, tier, P, dtype, *_ in rt.DRY_CHECKS}
    assert all(r["ok"] == "yes" and 0 <= float(r["worst"]) <= 1 for r in checks)
    assert {r["pass"] for r in checks} == {"forward", "backward"}
    assert all(r["plan_fwd"].startswith(r["tier"]) and r["plan_bwd"].startswith(r["tier"]) for r in checks)
    barrier = [r for r in rows if r["section"] == "barrier"]
    assert [r["P"] for r in barrier] == ["1"] and float(barrier[0]["p50_us_per_step"]) > 0
    timed = [r for r in rows if r["section"] == "time"]
    for dtype in rt.DTYPES:
        for kind in ("forward", "forward+backward"):
            got = {r["provider"]: r for r in timed if r["dtype"] == dtype and r["pass"] == kind}
            assert set(got) == {rt.CUDNN} | {f"tritonrnn:tier-{t}" for t in "ABC"}, (dtype, kind, sorted(got))
            assert all(float(r["p50_us_per_step"]) > 0 for r in got.values())
            assert all(float(got[f"tritonrnn:tier-{t}"]["ratio"]) > 0 for t in "ABC")
            assert got["tritonrnn:tier-C"]["P"] == "1"  # the interpreter: Tier C at P = 1 only
    family = [r for r in rows if r["section"] == "family"]
    assert [r["model"] for r in family] == rt.DRY_FAMILY * 2
    assert all(float(r["ratio"]) > 0 for r in family if r["model"] != "LSTM")


def test_the_markdown_has_one_line_per_row(dry_run):
    rows = _rows(dry_run / "tiers.csv")
    lines = (dry_run / "tiers.md").read_text().splitlines()
    table = [line for line in lines if line.startswith("| ") and not line.startswith("| section")]
    assert len(table) == len(rows)
    assert lines[0].startswith("# Recurrence tiers") and "dry run" in lines[0]


def test_the_dry_run_writes_a_table_that_keeps_tier_c_off(dry_run):
    """Tier C ran at P = 1 only: not verified. Every timed shape has a fwd and a bwd plan, of A or B."""
    table = runpy.run_path(str(dry_run / "measured.py"))["MEASURED"]
    assert set(table) == {"cpu-interpreter"}
    entry = table["cpu-interpreter"]
    assert entry["coop_verified"] is False
    H, B = rt.DRY_SHAPE["hidden_size"], rt.DRY_SHAPE["batch"]
    assert set(entry["plans"]) == {(H, B, d, direction) for d in rt.DTYPES for direction in ("fwd", "bwd")}
    for plan in entry["plans"].values():
        assert plan["tier"] in ("A", "B") and isinstance(plan["cudnn_faster"], bool)
    # --write-table from the same CSV gives the same table; the package's default reads GPU rows only
    out = dry_run / "again.py"
    assert rt.main(["--write-table", str(dry_run / "tiers.csv"), "--table-out", str(out)]) == 0
    assert runpy.run_path(str(out))["MEASURED"] == table
    assert rt.write_table([str(dry_run / "tiers.csv")], str(out), gpu_only=True) == {}
    assert runpy.run_path(str(out))["MEASURED"] == {}


# ------------------------------------------------------------------------------------------ the table's rules
def _time(provider, kind, us, tier="", plan="", H=256, B=128, dtype="float32", run="r1", dc="nvidia-h200"):
    return dict(run=run, device_class=dc, section="time", model="LSTM", provider=provider, tier=tier, P="",
                plan_fwd=plan, plan_bwd=plan if kind == "forward+backward" else "", precision="tf32", dtype=dtype,
                batch=str(B), hidden_size=str(H), **{"pass": kind}, p50_us_per_step=str(us), note="")


def _check(tier, P, ok, run="r1"):
    return dict(run=run, device_class="nvidia-h200", section="check", tier=tier, P=str(P), ok=ok)


def _timed_tiers(c_fwd=2.0, c_fb=5.0):
    b = "B HS32 BB16 KC64 w4 s1"
    c = "C HS32 BB16 KC64 w8 s1"
    return [_time(rt.CUDNN, "forward", 8.0), _time(rt.CUDNN, "forward+backward", 20.0),
            _time("tritonrnn:tier-B", "forward", 4.0, "B", b), _time("tritonrnn:tier-B", "forward+backward", 12.0, "B", b),
            _time("tritonrnn:tier-C", "forward", c_fwd, "C", c), _time("tritonrnn:tier-C", "forward+backward", c_fb, "C", c)]


def test_tier_c_enters_the_table_only_when_its_checks_passed():
    rows = _timed_tiers() + [_check("C", 8, "yes"), _check("C", 2, "yes"), _check("B", 8, "yes")]
    table = rt.table_from_rows(rows)["nvidia-h200"]
    assert table["coop_verified"] is True
    assert table["plans"][(256, 128, "float32", "fwd")]["tier"] == "C"
    assert table["plans"][(256, 128, "float32", "bwd")]["tier"] == "C"  # 5 − 2 < 12 − 4
    # one P failed; none run; only P = 1 (the interpreter's)
    for checks in ([_check("C", 2, "yes"), _check("C", 8, "no")], [], [_check("C", 1, "yes")]):
        table = rt.table_from_rows(_timed_tiers() + checks)
        assert table["nvidia-h200"]["coop_verified"] is False
        assert {p["tier"] for p in table["nvidia-h200"]["plans"].values()} == {"B"}


def test_the_table_keeps_cudnn_where_it_was_faster():
    plans = rt.table_from_rows(_timed_tiers(c_fwd=9.0, c_fb=25.0) + [_check("C", 8, "yes")])["nvidia-h200"]["plans"]
    fwd, bwd = plans[(256, 128, "float32", "fwd")], plans[(256, 128, "float32", "bwd")]
    assert fwd["tier"] == "B" and fwd["cudnn_faster"] is False  # B 4.0 < cuDNN 8.0
    assert bwd["tier"] == "B" and bwd["cudnn_faster"] is False  # B's backward 12 − 4 = 8 < C's 16; 12 < 20
    slow = [dict(r, p50_us_per_step=str(float(r["p50_us_per_step"]) * 3)) if "tier" in r["provider"] else r
            for r in _timed_tiers()]
    plans = rt.table_from_rows(slow)["nvidia-h200"]["plans"]
    assert plans[(256, 128, "float32", "fwd")]["cudnn_faster"] is True  # 3 × 4.0 > 8.0
    assert plans[(256, 128, "float32", "bwd")]["cudnn_faster"] is True  # 3 × 12 > 20


def test_only_the_newest_run_of_a_device_class_counts():
    old = [dict(r, run="2026-01-01") for r in _timed_tiers()]
    new = [dict(r, run="2026-02-01", p50_us_per_step="1.0") for r in _timed_tiers() if r["provider"] == rt.CUDNN]
    rows = rt.newest_runs(old + new)
    assert {r["run"] for r in rows} == {"2026-02-01"}
