"""Test harness: kernels run under Triton's interpreter on CPU, or compiled on a GPU when one is present.

TRITON_INTERPRET must be set before any kernel module is imported (triton.jit reads it when a kernel is
defined), hence at the very top of conftest. TRITON_F32_DEFAULT=ieee keeps fp32 dots exact for parity.
"""
import os
import random
import sys
import zlib

import numpy
import torch

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITONRNN_TEST_DEVICE", "cuda") == "cuda"
if not ON_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_F32_DEFAULT", "ieee")

import pytest  # noqa: E402

from tests import profiles  # noqa: E402,F401  (registers and loads the hypothesis profile)
from tests.stack_chunk import call_in_large_chunk  # noqa: E402

DEVICE = torch.device("cuda" if ON_GPU else "cpu")


# One intra-op thread for the suite: the tests run many tiny torch ops (T = 100 000 native LSTM steps, the
# modules' small-shape property tests, the CLI's training), and with two threads each op pays OpenMP's fork
# and join. Measured on the shared 2-core machine: MomentumLSTM(1, 4) over T = 20 000, forward + backward,
# 0.5 s of CPU on one thread against 4.6 s on two; tests/nn/test_modules.py 8.3 s against 24.5 s. The values
# a test checks do not depend on it (tolerances hold for any reduction order). The tests about threads and
# determinism run on the machine's own count (the `machine_threads` fixture).
MACHINE_THREADS = torch.get_num_threads()
torch.set_num_threads(1)
# and in the processes the tests start (the CLI, the GPU session's dry run: 43 s of CPU instead of 56 s, DDP
# workers, the installed-wheel suite); torch reads it when it is imported there
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture
def machine_threads():
    """The test runs on the machine's default number of intra-op threads, as a user's process would."""
    torch.set_num_threads(MACHINE_THREADS)
    yield
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_global_generators(request):
    """Each test starts from global generators seeded by its own id, so its draws do not depend on which tests
    ran before it in the same process: pytest-xdist hands tests to its two workers in an order that varies from
    run to run, and a test that draws from torch's (or random's, numpy's) global generator without seeding it
    would otherwise see a different input on every run, and could pass on one machine and fail on the next."""
    seed = zlib.crc32(request.node.nodeid.encode())
    torch.manual_seed(seed)
    random.seed(seed)
    numpy.random.seed(seed)


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
