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

from hellohi.eventloop import TIMER_SLACK
from hellohi.reliable import Impairment


def lossy_path(impairment: Impairment | None, deliver: Callable[..., None]) -> Callable[..., None]:
    """`deliver`, through `impairment` if there is one; without, `deliver` itself,
    so a datagram on an unimpaired path costs no extra call."""
    return deliver if impairment is None else LossyPath(impairment, deliver)


class LossyPath:
    def __init__(self, impairment: Impairment, deliver: Callable[..., None]):
        self.impairment = impairment
        self.deliver = deliver
        self.last_release = 0.0  # loop time at which the last datagram held back is passed on

    def __call__(self, datagram: bytes, *args) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for arrival, copy in self.impairment.apply(datagram, now):
            if arrival <= now:
                self.deliver(copy, *args)
            else:
                loop.call_at(arrival, self.deliver, copy, *args)
                self.last_release = max(self.last_release, arrival)

    async def drained(self, limit: float) -> None:
        """Return once every datagram held back (delay, jitter, reorder) has been passed
        on, or after `limit` seconds: a program that closes its socket at once would
        lose them, its last words (a BYE) among them."""
        loop = asyncio.get_running_loop()
        wait = min(self.last_release - loop.time(), limit)
        if wait > 0:
            await asyncio.sleep(wait + TIMER_SLACK)  # (timers may fire a little early: see TIMER_SLACK)


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
