"""Compile proof (KERNELS.md §4, issue 12 item 6): the committed AOT report perf/results/aot-compile-report.json
is current for every configuration (checked by key, without compiling), covers every launchable kernel,
shows zero spills and shared memory within the per-block limit for every default configuration on sm_80 and
sm_90, and agrees with a live compile of the CI subset (one configuration per kernel, sm_90).

Regenerate with `python -m tritonrnn.kernels._aot --write` (incremental: only rows whose key changed)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

from tritonrnn.kernels._aot import ARCHS, SHARED_LIMIT  # noqa: E402  (the module imports no triton at load)

REPORT = Path(__file__).resolve().parents[2] / "perf" / "results" / "aot-compile-report.json"
REGENERATE = "run `python -m tritonrnn.kernels._aot --write` and commit perf/results/aot-compile-report.*"


def _aot(*flags):
    # A fresh interpreter without TRITON_INTERPRET: keys and compiles need real JIT functions.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-m", "tritonrnn.kernels._aot", *flags, "--json", "--report", str(REPORT)],
                         capture_output=True, text=True, env=env, timeout=900)
    lines = out.stdout.strip().splitlines()
    assert lines, f"_aot {' '.join(flags)} printed nothing (exit {out.returncode}):\n{out.stderr[-4000:]}"
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def aot():
    # --check (keys only) and --ci (the live subset) share one interpreter: torch and triton import once.
    return _aot("--check", "--ci")


@pytest.fixture(scope="module")
def report():
    with open(REPORT) as f:
        return json.load(f)


def test_report_is_current(aot, report):
    import triton

    check = aot["check"]
    assert report["triton"] == triton.__version__, f"report compiled with triton {report['triton']}: {REGENERATE}"
    assert check["missing"] == [], REGENERATE
    assert check["stale"] == [], REGENERATE
    assert check["extra"] == [], REGENERATE
    assert check["text_current"], f"{REPORT.with_suffix('.txt').name} is not rendered from the .json: {REGENERATE}"


def test_every_kernel_has_an_aot_config(aot):
    assert aot["check"]["uncovered"] == []


@pytest.mark.parametrize("arch", ARCHS)
def test_default_configurations_fit(report, arch):
    rows = [r for r in report["rows"] if r["arch"] == arch]
    assert any(r["default"] for r in rows), f"no default configuration reported for sm_{arch}"
    spilling = [(r["name"], r["spill_stores"], r["spill_loads"]) for r in rows
                if r["default"] and r["spill_stores"] + r["spill_loads"] > 0]
    assert spilling == [], f"{len(spilling)} default configurations spill on sm_{arch} (name, store, load bytes):\n" + \
        "\n".join(map(str, spilling))
    too_big = [(r["name"], r["shared"]) for r in rows if r["default"] and r["shared"] > SHARED_LIMIT[arch]]
    assert too_big == [], f"shared memory over sm_{arch}'s {SHARED_LIMIT[arch]} bytes per block:\n" + \
        "\n".join(map(str, too_big))


def test_ci_subset_compiles_and_agrees_with_the_report(aot, report):
    ci = aot["ci"]
    assert ci, "no CI configuration was compiled"
    assert {r["name"] for r in ci} == {r["name"] for r in report["rows"] if r["ci"]}
    disagreeing = {f"{r['name']} sm_{r['arch']}": r["problems"] for r in ci if r["problems"]}
    assert disagreeing == {}


# The machinery, in a fresh interpreter (real JIT functions): the JIT's specialisation of a constant-mu momentum
# scan launch, configurations the JIT cannot see rejected, and an incremental --write on a damaged copy of the
# report recompiling exactly the damaged rows back to the committed values.
_MACHINERY = r"""
import dataclasses, json, shutil, sys
from pathlib import Path
from tritonrnn.kernels import _aot, scan

cfg = next(c for c in scan.AOT_CONFIGS
           if _aot._jit_function(c.kernel) is _aot._jit_function(scan._momentum_scan_fwd_kernel)
           and not c.constexprs["RESTART"])
view = _aot.jit_view(cfg, 90)
names = list(_aot._jit_function(cfg.kernel).arg_names)
out = {"signature": view.signature,
       "divisible": sorted(names[k[0]] for k, v in view.attrs.items() if ["tt.divisibility", 16] in v),
       "errors": {}}
bad = {"restart=2": dataclasses.replace(cfg, constexprs=dict(cfg.constexprs, restart=2)),
       "T divisible": dataclasses.replace(cfg, divisible=("T",)),
       "C missing": dataclasses.replace(cfg, signature={k: v for k, v in cfg.signature.items() if k != "C"})}
for label, wrong in bad.items():
    try:
        _aot.jit_view(wrong, 90)
        out["errors"][label] = None
    except ValueError as exc:
        out["errors"][label] = str(exc)

report, tmp = Path(sys.argv[1]), Path(sys.argv[2])
rows = json.loads(report.read_text())["rows"]
damaged = json.loads(report.read_text())
damaged["rows"][0]["key"] = "0"
damaged["rows"][0]["registers"] = -1
del damaged["rows"][1]
damaged["rows"].append(dict(rows[2], name="a configuration that no longer exists"))
tmp.write_text(json.dumps(damaged))
with _aot.pinned_environment():
    out["failures"] = _aot.write(tmp, log=sys.stderr)
out["rewritten_equal"] = json.loads(tmp.read_text())["rows"] == rows
out["compiled"] = [r["name"] for r in rows[:2]]
print(json.dumps(out))
"""


def test_jit_specialisation_rejection_and_incremental_write(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", _MACHINERY, str(REPORT), str(tmp_path / "report.json")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    sig = out["signature"]
    # _restart_args passes restart = 1 (the JIT's constexpr) and phase = 0; contiguous channel strides are 1.
    assert sig["restart"] == sig["stride_uc"] == sig["stride_vc"] == "constexpr"
    assert sig["T"] == sig["C"] == sig["stride_ub"] == "i32" and sig["mu"] == "fp32"
    assert out["divisible"] == sorted(["U", "V0", "V", "VT", "phase"])
    errors = out["errors"]
    assert "'restart'" in errors["restart=2"] and "'T'" in errors["T divisible"] and "'C'" in errors["C missing"]
    assert out["failures"] == []
    assert out["rewritten_equal"], f"--write did not restore {out['compiled']} and drop the stale row"
