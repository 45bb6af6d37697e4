"""The UDP glue's clock, and one asyncio timer kept set for a sans-I/O object's next deadline.

The reliability layer and the relay never sleep and never read a clock: the
glue passes `now` into every call, and they say when they next need to be
called (`next_deadline()`). Every `now` the glue passes comes from `clock()`,
and the glue keeps exactly one timer armed for the next deadline, moving it
only when the deadline comes sooner.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from hellohi.eventloop import TIMER_SLACK

# Not the event loop's own clock: uvloop's loop.time() counts whole milliseconds,
# which would make every RTT sample on a LAN or loopback read 0 or 1 ms.
clock = time.monotonic


class DeadlineTimer:
    def __init__(self, on_deadline: Callable[[], None]):
        self.on_deadline = on_deadline
        self._handle: asyncio.TimerHandle | None = None
        self._deadline = 0.0  # in clock() time, while armed

    def set(self, deadline: float | None) -> None:
        """Fire at `deadline` (clock() time) or soon after, or never if None.

        A timer already armed for an earlier moment is left alone: firing early
        costs one call that finds nothing due and sets the timer again, while
        moving it costs a cancel and a new heap entry every time. That matters
        because most datagrams push the deadline a little later (each new packet
        sent restarts its retransmission timer).
        """
        if self._handle is not None:
            if deadline is not None and self._deadline <= deadline:
                return
            self._handle.cancel()
            self._handle = None
        if deadline is not None:
            self._deadline = deadline
            # TIMER_SLACK late rather than early (hellohi/eventloop.py): small beside the
            # timers it delays, the shortest of which, a repeated ack, waits 5 ms.
            delay = max(deadline - clock(), 0.0) + TIMER_SLACK
            self._handle = asyncio.get_running_loop().call_later(delay, self._fire)

    def cancel(self) -> None:
        self.set(None)

    def _fire(self) -> None:
        self._handle = None
        self.on_deadline()
