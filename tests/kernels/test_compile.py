"""Compile proof (issue: every kernel AOT-compiles for sm_80 and sm_90 on a CPU machine, zero spills at
default configurations, shared memory within the architecture's limit)."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")


@pytest.fixture(scope="module")
def aot():
    # A fresh interpreter without TRITON_INTERPRET: compiling needs real JIT functions.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-m", "tritonrnn.kernels._aot", "--json"],
                         capture_output=True, text=True, env=env, timeout=1800)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_kernel_has_an_aot_config(aot):
    assert aot["uncovered"] == []


@pytest.mark.parametrize("arch", [80, 90])
def test_kernels_compile_without_spills(aot, arch):
    from tritonrnn.kernels._aot import SHARED_LIMIT

    reports = [r for r in aot["reports"] if r["arch"] == arch]
    assert reports, "no kernel configuration was compiled"
    spilling = [r["name"] for r in reports if r["default"] and r["spill_stores"] + r["spill_loads"] > 0]
    assert spilling == []
    too_big = [(r["name"], r["shared"]) for r in reports if r["shared"] > SHARED_LIMIT[arch]]
    assert too_big == []
