"""Printing for the narrated demos (`make demo-tcp`, `make demo-udp`): who says what, step by step."""

from __future__ import annotations

import asyncio

from .codec import Frame, encode


def say(actor: str, text: str) -> None:
    print(f"[{actor}] {text}", flush=True)


def step(number: int, text: str) -> None:
    print(f"\n=== {number}. {text}", flush=True)


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
