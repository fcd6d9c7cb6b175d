"""Helpers of the multi-process tests (tests/optim/test_ddp.py, tests/test_distributed_modules.py)."""
import socket


def free_port() -> int:
    """A TCP port free on localhost now, for a gloo rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
