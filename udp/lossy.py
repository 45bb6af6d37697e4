"""Loss injected inside the process: no root, no netem, any OS.

Wraps one direction of a UDP socket (sending or receiving) in a seeded
hellohi.reliable.Impairment, on the event loop's clock: a dropped datagram is
never passed on, a delayed one is passed on later with loop.call_at, a
duplicated one twice.
"""

from __future__ import annotations

import asyncio
import argparse
from typing import Callable

from hellohi.reliable import Impairment


def lossy_path(impairment: Impairment | None, deliver: Callable[..., None]) -> Callable[..., None]:
    """`deliver`, through `impairment` if there is one; without, `deliver` itself,
    so a datagram on an unimpaired path costs no extra call."""
    return deliver if impairment is None else LossyPath(impairment, deliver)


class LossyPath:
    def __init__(self, impairment: Impairment, deliver: Callable[..., None]):
        self.impairment = impairment
        self.deliver = deliver

    def __call__(self, datagram: bytes, *args) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for arrival, copy in self.impairment.apply(datagram, now):
            if arrival <= now:
                self.deliver(copy, *args)
            else:
                loop.call_at(arrival, self.deliver, copy, *args)


def impairments_from(args: argparse.Namespace, trace=None) -> tuple[Impairment | None, Impairment | None]:
    """(on send, on receive) from the --loss/--duplicate/... flags; None where nothing is injected."""
    spec = dict(
        loss=args.loss,
        duplicate=args.duplicate,
        reorder=args.reorder,
        delay=args.delay / 1000,
        jitter=args.jitter / 1000,
    )
    if not any(spec.values()):
        return None, None
    send = Impairment(**spec, seed=args.seed, trace=trace) if args.impair in ("send", "both") else None
    # The other direction gets its own random stream, so the two are independent.
    receive = Impairment(**spec, seed=args.seed + 1, trace=trace) if args.impair in ("receive", "both") else None
    return send, receive
