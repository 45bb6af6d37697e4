"""Printing for the narrated demos (`make demo-tcp`, `make demo-udp`): who says what, step by step."""

from __future__ import annotations

import asyncio

from .codec import Frame, encode


# The server process writes its log lines to the same terminal. print() writes a line
# and its newline in two system calls, and a server line landing between them would
# join the two ("[alice] -> HELLO alice[server] carol left"); one write per line cannot
# be split.
def _line(text: str) -> None:
    print(text + "\n", end="", flush=True)


def say(actor: str, text: str) -> None:
    _line(f"[{actor}] {text}")


def step(number: int, text: str) -> None:
    _line(f"\n=== {number}. {text}")


def frame_tracer(actor: str):
    """A client `trace` hook that prints each frame as it crosses the wire (bodies on one line)."""

    def show(direction: str, frame: Frame) -> None:
        wire = encode(frame).decode("ascii", "replace").rstrip("\n").replace("\n", "\\n")
        say(actor, f"{direction} {wire}")

    return show


async def wait_for(client, kind: type, timeout: float = 5.0, **match):
    """The next event of `kind` whose fields equal `match`; ends the demo if none comes in time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (remaining := deadline - loop.time()) > 0:
        event = await client.next_event(timeout=remaining)
        if isinstance(event, kind) and all(getattr(event, key) == value for key, value in match.items()):
            return event
    raise SystemExit(f"demo failed: {client.name} saw no {kind.__name__} {match} within {timeout} s")
