"""`import tritonrnn` works without triton: the torch paths run, and asking for Triton raises a clear error."""
import subprocess
import sys

SCRIPT = r'''
import sys
sys.modules["triton"] = None          # `import triton` now raises ImportError, as on a machine without it
import torch, tritonrnn
assert "triton" not in [m for m in sys.modules if sys.modules[m] is not None and m.split(".")[0] == "triton"]
lstm = tritonrnn.AdamLSTM(3, 4)       # backend="auto": the torch path
out, (h, c) = lstm(torch.randn(5, 2, 3))
assert out.shape == (5, 2, 4)
opt = tritonrnn.SRSGD(lstm.parameters(), lr=0.1)
out.sum().backward(); opt.step()
def optimizer_step():
    p = torch.zeros(2, requires_grad=True)
    p.grad = torch.ones(2)
    tritonrnn.SRSGD([p], lr=0.1, backend="triton").step()
for make in (lambda: tritonrnn.AdamLSTM(3, 4, backend="triton")(torch.randn(5, 2, 3)), optimizer_step):
    try:
        make()
    except RuntimeError as exc:
        assert "triton" in str(exc) and "not installed" in str(exc), exc
    else:
        raise AssertionError("backend='triton' ran without triton")
print("ok")
'''


def test_import_and_torch_paths_without_triton():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")
