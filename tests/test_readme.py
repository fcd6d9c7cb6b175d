"""The README's python snippets run as written, in order, in one fresh process (issue #15), and the state_dict
keys the README documents for the orthogonal and IndRNN cores are the modules' real keys.

The snippets build on each other as a reader goes down the page (the truncated-BPTT snippet continues with the
`lstm` and `x` of the one-line swap), so they share one namespace. They run in a subprocess without
TRITON_INTERPRET (which tests/conftest.py sets), as a user runs them on a CPU-only machine: `backend="auto"`
then takes the torch path.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
pytestmark = pytest.mark.skipif(not README.exists(), reason="README.md is not shipped with the installed wheel")


def python_snippets():
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)


# Runs each snippet with exec in one namespace and names the failing one: its index and first line.
RUNNER = """
import sys
snippets = {snippets!r}
namespace = {{"__name__": "__main__"}}
for i, code in enumerate(snippets):
    try:
        exec(compile(code, f"README.md python snippet {{i}}", "exec"), namespace)
    except BaseException:
        print(f"README python snippet {{i}} failed; it starts: {{code.splitlines()[0]!r}}", file=sys.stderr)
        raise
    print(f"snippet {{i}} ok")
"""


def test_readme_python_snippets_run_in_order(tmp_path):
    snippets = python_snippets()
    assert len(snippets) >= 4, "README python snippets not found"
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TRITONRNN_BACKEND")}
    out = subprocess.run([sys.executable, "-c", RUNNER.format(snippets=snippets)], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert [line for line in out.stdout.splitlines() if line.startswith("snippet ")] == [
        f"snippet {i} ok" for i in range(len(snippets))]


def test_readme_documents_the_cores_state_dict_keys():
    import tritonrnn

    text = README.read_text(encoding="utf-8")
    orthogonal = set(tritonrnn.MomentumOrthogonalRNN(1, 4).state_dict())
    assert orthogonal == {"weight_ih_l0", "bias_hh_l0", "parametrizations.weight_hh_l0.original",
                          "parametrizations.weight_hh_l0.0.base"}
    indrnn = set(tritonrnn.IndRNN(1, 4, num_layers=2, batch_norm=True).state_dict())
    assert {k for k in indrnn if not k.startswith("bn.")} == {
        f"{name}_l{k}" for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") for k in (0, 1)}
    assert {k.split(".")[1] for k in indrnn if k.startswith("bn.")} == {"0"}   # between layers 0 and 1 only
    # the README's table names them with {k} for the layer index
    for key in ("weight_ih_l{k}", "bias_hh_l{k}", "parametrizations.weight_hh_l{k}.original",
                "parametrizations.weight_hh_l{k}.0.base", "bias_ih_l{k}", "bn.{k}.*"):
        assert f"`{key}`" in text, key
