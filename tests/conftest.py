"""Test harness: kernels run under Triton's interpreter on CPU, or compiled on a GPU when one is present.

TRITON_INTERPRET must be set before any kernel module is imported (triton.jit reads it when a kernel is
defined), hence at the very top of conftest. TRITON_F32_DEFAULT=ieee keeps fp32 dots exact for parity.
"""
import os

import torch

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITONRNN_TEST_DEVICE", "cuda") == "cuda"
if not ON_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_F32_DEFAULT", "ieee")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# CI: bounded examples, no deadline (the interpreter is ~1000x slower than a GPU and timing varies).
settings.register_profile("ci", max_examples=12, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=30, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

DEVICE = torch.device("cuda" if ON_GPU else "cpu")


@pytest.fixture
def device():
    """Where kernel tests run: the GPU when present, else the CPU under the interpreter."""
    return DEVICE


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
