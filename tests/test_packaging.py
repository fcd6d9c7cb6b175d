"""The wheel: kernels/ and perf/ ship inside the package as tritonrnn.kernels and tritonrnn.perf (pyproject's
package-dir mapping), never as top-level `kernels` / `perf`, and its version is tritonrnn.__version__.

The wheel is built without build isolation (no network) from a copy of the checkout in a temporary
directory, so the checkout gets no build/ or egg-info from this test. It needs setuptools >= 77 in the
running environment (pyproject uses the PEP 639 `license = "MIT"` string, which older setuptools reject);
otherwise the test skips and says why.
"""
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tritonrnn.perf.gpu_session import SERIAL_PYTEST

import tritonrnn

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 60
SETUPTOOLS_PEP639 = (77, 0)


def _version_tuple(text):
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _require_build_backend():
    # Versions from the installed metadata: importing setuptools here would patch distutils in-process.
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not importable: cannot build a wheel without build isolation")
    setuptools_version = importlib.metadata.version("setuptools")
    if _version_tuple(setuptools_version) < SETUPTOOLS_PEP639:
        pytest.skip(f"setuptools {setuptools_version} is older than 77, which the PEP 639 license field "
                    "in pyproject.toml needs (pip install \"setuptools>=77\" to run this test)")
    if importlib.util.find_spec("wheel") is None and _version_tuple(setuptools_version) < (70, 1):
        pytest.skip("neither the wheel package nor a setuptools with bdist_wheel (>= 70.1) is importable")
    if importlib.util.find_spec("pip") is None:
        pytest.skip("pip is not importable")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    _require_build_backend()
    tmp = tmp_path_factory.mktemp("wheel")
    src, out = tmp / "src", tmp / "out"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis", ".pytest_cache", "runs", ".whl",
        "venv", ".venv"))
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
         "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=BUDGET_S)
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert elapsed < BUDGET_S
    wheels = sorted(out.glob("tritonrnn-*.whl"))
    assert len(wheels) == 1, [p.name for p in out.iterdir()]
    return wheels[0]


def _names(wheel):
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


@pytest.mark.parametrize("path", ["tritonrnn/__init__.py", "tritonrnn/kernels/scan.py",
                                  "tritonrnn/perf/papers_table.py", "tritonrnn/nn/modules.py"])
def test_wheel_contains(wheel, path):
    assert path in _names(wheel)


def test_wheel_has_no_top_level_kernels_or_perf(wheel):
    names = _names(wheel)
    top = {name.split("/", 1)[0] for name in names}
    assert "kernels" not in top and "perf" not in top, sorted(top)
    assert not [n for n in names if n.startswith(("kernels/", "perf/"))]
    # Everything is under the package or its .dist-info.
    assert all(t == "tritonrnn" or t.endswith(".dist-info") for t in top), sorted(top)


def test_wheel_ships_every_source_module(wheel):
    """Every .py under tritonrnn/, kernels/ and perf/ of the checkout is in the wheel, at its mapped path."""
    names = set(_names(wheel))
    expected = {f"tritonrnn/{p.relative_to(ROOT / 'tritonrnn').as_posix()}"
                for p in (ROOT / "tritonrnn").rglob("*.py")}
    expected |= {f"tritonrnn/{d}/{p.relative_to(ROOT / d).as_posix()}"
                 for d in ("kernels", "perf") for p in (ROOT / d).rglob("*.py")}
    assert expected - names == set()


def test_wheel_version_is_package_version(wheel):
    # Wheel filename: {name}-{version}-{python}-{abi}-{platform}.whl
    assert wheel.name.split("-")[1] == tritonrnn.__version__
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(f"tritonrnn-{tritonrnn.__version__}.dist-info/METADATA").decode()
    versions = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Version:")]
    assert versions == [tritonrnn.__version__]


# Fast files that cover the installed reference cells, the modules and optimizers (argument checks, forward)
# and, under the interpreter, the wheel's tritonrnn.kernels; none reads the source tree.
SUITE_SUBSET = ["tests/test_installed_origin.py", "tests/test_reference_cells.py", "tests/test_bad_input.py",
                "tests/kernels/test_scan.py::test_continuation_with_step_offset",
                "tests/kernels/test_scan.py::test_rmsprop_equals_adam_with_zero_momentum"]
# Written into the copied suite, so that the check runs inside the same pytest process as the tests.
ORIGIN_TEST = '''
import os
from pathlib import Path

import tritonrnn
import tritonrnn.kernels


def test_tritonrnn_comes_from_the_installed_wheel():
    site = Path(os.environ["TRITONRNN_EXPECTED_SITE"]).resolve()
    for module in (tritonrnn, tritonrnn.kernels):
        assert Path(module.__file__).resolve().is_relative_to(site), module.__file__
'''


def test_installed_wheel_runs_the_test_suite_outside_the_source_tree(wheel, tmp_path):
    """pip-installs the wheel into a bare target directory and runs a subset of the suite from a copy of
    tests/ that is not under the checkout. PYTHONPATH puts that directory before the venv's site-packages,
    and the editable install's finder is a sys.meta_path hook placed after PathFinder, so the wheel wins;
    the origin test asserts it, in the same process as the suite."""
    site, suite = tmp_path / "site", tmp_path / "suite"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-cache-dir",
         "--disable-pip-version-check", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=BUDGET_S)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    shutil.copytree(ROOT / "tests", suite / "tests",
                    ignore=shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache"))
    shutil.copy(ROOT / "pyproject.toml", suite / "pyproject.toml")  # the pytest configuration (markers)
    (suite / "tests" / "test_installed_origin.py").write_text(ORIGIN_TEST)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(suite)]),
           "TRITONRNN_EXPECTED_SITE": str(site)}

    probe = subprocess.run(
        [sys.executable, "-c", "import tritonrnn, tritonrnn.kernels, tests.tolerance; "
         "print(tritonrnn.__file__); print(tritonrnn.kernels.__file__); print(tests.tolerance.__file__)"],
        capture_output=True, text=True, cwd=suite, env=env, timeout=BUDGET_S)
    assert probe.returncode == 0, probe.stderr[-4000:]
    package, kernels, tolerance_module = (Path(line).resolve() for line in probe.stdout.split())
    assert package == (site / "tritonrnn" / "__init__.py").resolve()
    assert kernels == (site / "tritonrnn" / "kernels" / "__init__.py").resolve()
    assert tolerance_module == (suite / "tests" / "tolerance.py").resolve()

    run = subprocess.run(
        # SERIAL_PYTEST: the subset runs in this one process (pyproject's addopts asks for 2 xdist workers, whose
        # verbose lines are formatted differently; a 7 s subset gains nothing from them)
        [sys.executable, "-m", "pytest", *SERIAL_PYTEST, "-v", "-x", "-p", "no:cacheprovider", *SUITE_SUBSET],
        capture_output=True, text=True, cwd=suite, env=env, timeout=600)
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report  # 5 would mean nothing was collected
    assert "test_installed_origin.py::test_tritonrnn_comes_from_the_installed_wheel PASSED" in run.stdout, report
    passed = re.search(r"(\d+) passed", run.stdout)
    assert passed and int(passed.group(1)) >= 100, report
    # No traceback or path from the checkout. The environment's own paths are not the checkout's even when the
    # virtual environment lives inside it (`python -m venv .venv`: pytest -v prints the interpreter's path).
    stdout = run.stdout
    for prefix in sorted({sys.prefix, str(Path(sys.prefix).resolve())}, key=len, reverse=True):
        stdout = stdout.replace(prefix, "<environment>")
    assert str(ROOT) not in stdout, report
