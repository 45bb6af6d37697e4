"""hellohi/waiting.py: waits with a time limit that never lose a cancellation (Ctrl-C)."""

from __future__ import annotations

import asyncio

import pytest

from hellohi.waiting import event_set_within, finished_within


async def cancel_as_it_finishes(wait) -> str:
    """Run wait(event) in a task, then set the event and cancel the task in the same turn of the loop.

    That is when asyncio.wait_for on Python 3.10 and 3.11 loses the cancel ("went on"):
    what it waits for is done by the time it sees the CancelledError.
    """
    event = asyncio.Event()
    task = asyncio.create_task(wait(event))
    await asyncio.sleep(0)  # the task is now waiting for the event
    event.set()
    task.cancel()  # Ctrl-C
    try:
        await task
    except asyncio.CancelledError:
        return "cancelled"
    return "went on"


async def _done_when_set(event: asyncio.Event) -> str:
    await event.wait()
    return "done"


def test_an_event_wait_is_cancelled_even_as_the_event_is_set():
    assert asyncio.run(cancel_as_it_finishes(lambda event: event_set_within(event, 5.0))) == "cancelled"


def test_a_timed_piece_of_work_is_cancelled_even_as_it_finishes():
    assert asyncio.run(cancel_as_it_finishes(lambda event: finished_within(_done_when_set(event), 5.0))) == "cancelled"


def test_event_set_within_says_whether_the_event_came_in_time():
    async def check():
        event = asyncio.Event()
        assert await event_set_within(event, 0.001) is False
        asyncio.get_running_loop().call_soon(event.set)
        assert await event_set_within(event, 5.0) is True
        assert await event_set_within(event, 0.0) is True  # already set: no wait at all

    asyncio.run(check())


def test_finished_within_returns_the_result_or_times_out_and_cancels_the_work():
    async def check():
        event = asyncio.Event()
        asyncio.get_running_loop().call_soon(event.set)
        assert await finished_within(_done_when_set(event), 5.0) == "done"
        cancelled = []

        async def never_done():
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(True)  # it is told, and may clean up
                raise

        with pytest.raises(asyncio.TimeoutError):
            await finished_within(never_done(), 0.001)
        assert cancelled == [True]

        async def fails():
            raise OSError("refused")

        with pytest.raises(OSError, match="refused"):  # its own errors come through unchanged
            await finished_within(fails(), 5.0)

    asyncio.run(check())
