"""The client library's event inbox: next_event(timeout) gives up on time, and one timer serves every read."""

from __future__ import annotations

import asyncio
import time

import pytest

from hellohi import eventloop
from hellohi.chat_client import EventInbox

LOOPS = ["asyncio", "uvloop"]


def run(coroutine, loop_name: str):
    return eventloop.run(asyncio.wait_for(coroutine, 10), loop_name)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_read_with_nothing_to_read_gives_up_after_its_timeout(loop_name):
    async def scenario():
        inbox = EventInbox()
        start = time.monotonic()
        event = await inbox.get(0.05)
        return event, time.monotonic() - start

    event, waited = run(scenario(), loop_name)
    assert event is None
    # uvloop's clock counts whole milliseconds; the upper bound only says "gave up", with room
    # for a busy machine.
    assert 0.045 <= waited < 30.0


@pytest.mark.parametrize("loop_name", LOOPS)
def test_an_event_that_comes_in_time_is_returned(loop_name):
    async def scenario():
        inbox = EventInbox()
        asyncio.get_running_loop().call_later(0.02, inbox.put, "HI")
        return await inbox.get(5.0)

    assert run(scenario(), loop_name) == "HI"


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_short_timeout_after_a_long_one_still_gives_up_on_time(loop_name):
    async def scenario():
        inbox = EventInbox()
        asyncio.get_running_loop().call_soon(inbox.put, "first")
        first = await inbox.get(60.0)  # leaves the timer armed for a minute from now
        start = time.monotonic()
        second = await inbox.get(0.05)
        return first, second, time.monotonic() - start

    first, second, waited = run(scenario(), loop_name)
    assert (first, second) == ("first", None)
    assert waited < 30.0  # not the first read's 60 s


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_long_timeout_after_a_short_one_does_not_give_up_early(loop_name):
    async def scenario():
        inbox = EventInbox()
        loop = asyncio.get_running_loop()
        loop.call_soon(inbox.put, "first")
        first = await inbox.get(0.05)  # the timer stays armed for 50 ms from now
        loop.call_later(0.3, inbox.put, "second")  # long after that timer fires
        second = await inbox.get(10.0)
        return first, second

    assert run(scenario(), loop_name) == ("first", "second")


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_cancelled_reader_leaves_the_inbox_usable(loop_name):
    async def scenario():
        inbox = EventInbox()
        reader = asyncio.create_task(inbox.get(0.05))
        await asyncio.sleep(0)  # one turn: the reader is now waiting, its timer armed
        reader.cancel()
        await asyncio.sleep(0.1)  # its timer fires with nobody waiting
        nothing = await inbox.get(0.05)
        inbox.put("later")
        return reader.cancelled(), nothing, await inbox.get(0.05)

    assert run(scenario(), loop_name) == (True, None, "later")


def test_a_ping_pong_of_reads_arms_one_timer_not_one_per_read():
    # The reason the inbox keeps its timer: a ping-pong reads with a fresh
    # timeout every round trip. (asyncio's own loop: uvloop's methods cannot be wrapped.)
    async def scenario():
        loop = asyncio.get_running_loop()
        timers = []
        call_at = loop.call_at
        loop.call_at = lambda when, callback, *args, **kw: timers.append(when) or call_at(when, callback, *args, **kw)
        inbox = EventInbox()
        answers = []
        for round_trip in range(50):
            loop.call_soon(inbox.put, round_trip)  # the answer comes after the read has started waiting
            answers.append(await inbox.get(5.0))
        return answers, timers

    answers, timers = run(scenario(), "asyncio")
    assert answers == list(range(50))
    assert len(timers) == 1


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("timeout", [0.0104, 0.05, 0.3])
def test_the_timer_fires_once_per_timeout_not_again_and_again(loop_name, timeout, monkeypatch):
    # uvloop's clock counts whole milliseconds: a timer set for the exact give-up
    # time may fire just before it, and one set again for the little that is left
    # would fire at once, again and again, until the clock ticked over.
    checks = []
    time_check = EventInbox._time_check
    monkeypatch.setattr(EventInbox, "_time_check", lambda inbox: checks.append(1) or time_check(inbox))

    async def scenario():
        inbox = EventInbox()
        return [await inbox.get(timeout) for _ in range(3)]

    assert run(scenario(), loop_name) == [None] * 3
    assert len(checks) <= 6
