"""Where the two ends of a ping-pong run: every client on one core, every server on another.

On a 2-vCPU VM a loopback round trip between two cores took 45-61 us with
sockperf, and 11-14 us with both ends on one core, where a wake-up needs no
interrupt to the other core. Left to itself the scheduler sometimes puts the two
ends on one core and sometimes not, so a ping-pong measured unpinned may be
either; two figures compare only if both were pinned the same way. Two cores are
also the honest model of a client and a server on two computers.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager


def two_cores() -> tuple[int, int] | None:
    """(client core, server core): two cores this process may use, if it has two and taskset."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) < 2 or shutil.which("taskset") is None:
        return None
    return cores[0], cores[1]


def on_core(core: int | None) -> list[str] | None:
    """The command prefix that runs a program on `core` (None: wherever the scheduler likes)."""
    return ["taskset", "-c", str(core)] if core is not None else None


@contextmanager
def running_on(core: int | None):
    """This thread (and the threads it starts) on `core` only, for the block."""
    if core is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
