"""Test harness: kernels run under Triton's interpreter on CPU, or compiled on a GPU when one is present.

TRITON_INTERPRET must be set before any kernel module is imported (triton.jit reads it when a kernel is
defined), hence at the very top of conftest. TRITON_F32_DEFAULT=ieee keeps fp32 dots exact for parity.
"""
import os
import sys

import torch

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITONRNN_TEST_DEVICE", "cuda") == "cuda"
if not ON_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_F32_DEFAULT", "ieee")

import pytest  # noqa: E402

from tests import profiles  # noqa: E402,F401  (registers and loads the hypothesis profile)
from tests.stack_chunk import call_in_large_chunk  # noqa: E402

DEVICE = torch.device("cuda" if ON_GPU else "cpu")


@pytest.fixture
def one_thread():
    """Run the test's torch ops on one intra-op thread: a long loop of tiny ops (the CLI's training, T = 100 000
    native LSTM steps) otherwise spends most of its time in OpenMP's fork / join per op. Measured on the shared
    2-core machine, MomentumLSTM(1, 4) over T = 20 000: 0.5 s of CPU forward + backward on one thread, 4.6 s on
    two. Tests that are about threads set their own count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
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


def pytest_configure(config):
    """explore: one random seed for the session unless --hypothesis-seed gives one (printed in the header)."""
    if profiles.PROFILE == "explore" and config.getoption("hypothesis_seed", None) is None:
        import random

        from hypothesis import core

        config.option.hypothesis_seed = core.global_force_seed = random.SystemRandom().randrange(2**32)


def pytest_report_header(config):
    if profiles.PROFILE == "explore":
        seed = config.getoption("hypothesis_seed", None)
        return [f"hypothesis profile explore, seed {seed}: replay with "
                f"HYPOTHESIS_PROFILE=explore python -m pytest --hypothesis-seed={seed} <test id>"]
    return ["hypothesis profile default (derandomized, no database)"]


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    """The whole test loop (setup, call, teardown of every test) runs inside one large frame-stack chunk:
    CPython 3.11's chunk thrash otherwise cost the interpreter-heavy tests up to 60 % of their CPU time in
    the kernel (tests/stack_chunk.py). The other implementations of the hook (pytest's own loop) run as usual."""
    others = session.config.pluginmanager.subset_hook_caller("pytest_runtestloop", remove_plugins=[sys.modules[__name__]])
    return call_in_large_chunk(lambda: others(session=session))
