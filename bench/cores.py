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
from dataclasses import dataclass


@dataclass(frozen=True)
class Pinning:
    """The core for the clients and the core for the servers (None: wherever the scheduler likes)."""

    client: int | None = None
    server: int | None = None

    @property
    def config(self) -> dict | None:
        """What a result's `config.cores` records (None: not pinned)."""
        return {"client": self.client, "server": self.server} if self.client is not None else None


def pinning() -> Pinning:
    """Clients on the first core this process may use, servers on the second; not pinned
    where it has one core, or no taskset."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) < 2 or shutil.which("taskset") is None:
        return Pinning()
    return Pinning(client=cores[0], server=cores[1])


def on_core(core: int | None) -> list[str]:
    """The command prefix that runs a program on `core` ([]: wherever the scheduler likes)."""
    return ["taskset", "-c", str(core)] if core is not None else []


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
