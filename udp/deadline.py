"""One asyncio timer, kept set for a sans-I/O object's next deadline.

The reliability layer and the relay never sleep; they say when they next need
to be called (`next_deadline()`). The UDP glue keeps exactly one timer armed
for that moment, moving it only when the deadline comes sooner.
"""

from __future__ import annotations

import asyncio
from typing import Callable


class DeadlineTimer:
    def __init__(self, on_deadline: Callable[[], None]):
        self.on_deadline = on_deadline
        # The armed handle and its deadline. The deadline is kept here because uvloop
        # returns a plain Handle, without when(), for a moment already past.
        self._handle: asyncio.Handle | None = None
        self._deadline = 0.0

    def set(self, deadline: float | None) -> None:
        """Fire at `deadline` (event-loop time), or never if None.

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
            self._handle = asyncio.get_running_loop().call_at(deadline, self._fire)

    def cancel(self) -> None:
        self.set(None)

    def _fire(self) -> None:
        self._handle = None
        self.on_deadline()
