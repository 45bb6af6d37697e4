"""Waiting with a time limit in asyncio, without ever losing a cancellation.

asyncio.wait_for on Python 3.10 and 3.11 loses a cancellation that arrives in the
very turn of the loop in which what it waits for completes: it returns the result
as if nothing had been asked (bpo-42130, fixed in 3.12). A Ctrl-C, which cancels
the running task, then does nothing. The bench waits once per window of messages,
so there it happened in one run in five; a client's connect is rarer, but the same.

finished_within waits with asyncio.wait, which never cancels what it waits for,
so it has no cancellation of its own to confuse with ours: a cancel of the caller
is raised in the caller, always. event_set_within is built on it.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

T = TypeVar("T")


async def finished_within(work: Awaitable[T], timeout: float) -> T:
    """The result of `work`, which is cancelled if it takes longer than `timeout`
    seconds (asyncio.TimeoutError) or if we are cancelled ourselves."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except BaseException:  # cancelled while it ran: it goes too
        task.cancel()
        raise
    if not done:
        task.cancel()
        try:
            await task  # let it clean up before we report the timeout
        except asyncio.CancelledError:
            pass
        raise asyncio.TimeoutError
    return task.result()


async def event_set_within(event: asyncio.Event, timeout: float) -> bool:
    """True if `event` is set within `timeout` seconds, False if not."""
    if event.is_set():
        return True
    try:
        await finished_within(event.wait(), timeout)
    except asyncio.TimeoutError:
        return False
    return True
