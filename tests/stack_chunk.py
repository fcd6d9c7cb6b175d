"""Run the test session inside one large frame-stack chunk, so that no test pays CPython's chunk thrash.

Since 3.11, CPython keeps the frames of Python calls on a per-thread data stack made of chunks (16 KiB by
default) and frees a chunk as soon as the frame that opened it returns. A loop whose calls cross a chunk
boundary therefore maps and unmaps a fresh chunk (and takes its page faults) on every call: CPython
gh-142183, fixed by a one-chunk cache in the 3.13 / 3.14 maintenance releases, not in 3.11 / 3.12. Where
the boundary falls depends on how deep the loop runs, which under pytest and hypothesis is arbitrary: on the
2-core CI machine (Python 3.11) tests/kernels/test_scan.py spent 115 s of its 185 s of CPU time in the kernel
(mmap / munmap of 16 KiB chunks, about 7 000 a second, from the Triton interpreter's inner loop), and moving
the same test three frames deeper or shallower changed its system time from 5 s to 31 s and back.

`call_in_large_chunk(fn)` calls fn from a frame that declares `PAD_SLOTS` unused local variables: the
interpreter puts that frame at the start of a new chunk of twice its size (chunks grow in powers of two), so
every deeper frame finds room in the same chunk, up to PAD_SLOTS slots (8 MiB, thousands of frames), and
no chunk is mapped or unmapped until fn returns. Costs: one 16 MiB mapping and one pass zeroing the locals
per call (milliseconds). On Python versions without the chunked stack (≤ 3.10) it is an ordinary call.
"""
from __future__ import annotations

PAD_SLOTS = 1 << 20   # 8 MiB of frame slots: the chunk is 16 MiB, the half above the frame is free


def _call(fn):
    return fn()


# The same function with PAD_SLOTS extra (never bound) local variables: its frame is PAD_SLOTS slots long.
_call_padded = type(_call)(
    _call.__code__.replace(co_varnames=_call.__code__.co_varnames + tuple(f"_slot{i}" for i in range(PAD_SLOTS)),
                           co_nlocals=_call.__code__.co_nlocals + PAD_SLOTS),
    _call.__globals__, "call_in_large_chunk")


def call_in_large_chunk(fn):
    """fn() called from a frame that opens a frame-stack chunk with PAD_SLOTS free slots above it."""
    return _call_padded(fn)
