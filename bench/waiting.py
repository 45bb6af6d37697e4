"""Waiting for an asyncio.Event with a time limit, without ever losing a cancellation.

The bench waits like this once per window of messages, so a Ctrl-C (which cancels
the running workload) often arrives just as the event is set. asyncio.wait_for on
Python 3.10 and 3.11 then returns normally and the cancellation is lost
(bpo-42130, fixed in 3.12): the run goes on as if nothing had been asked.
"""

from __future__ import annotations

import asyncio


async def event_set_within(event: asyncio.Event, timeout: float) -> bool:
    """True if `event` is set within `timeout` seconds, False if not; a cancellation always propagates."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        # asyncio.wait never cancels what it waits for, so it has no cancellation of
        # its own to confuse with ours: a cancel of this task is raised here, always.
        done, _ = await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
    return bool(done)
