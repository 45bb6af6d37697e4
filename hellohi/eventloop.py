"""The event loop under hellohi's asyncio glue: uvloop when installed, else asyncio's own.

The servers and clients in tcp/ and udp/ use nothing but the asyncio API, so
any event loop that implements it runs them unchanged. asyncio's own loop
moves bytes through transports written in Python; uvloop (built on libuv, the
loop under Node.js) implements the same transports in C. On the 2-core machine
this project is built on, that took about a quarter off a Hello/HI round trip
through the client library (README, "Dependencies and why").

    --loop auto      uvloop if it is installed, else asyncio (the default)
    --loop uvloop    uvloop, or a clear error if it is missing
    --loop asyncio   asyncio's own loop, to compare, or where uvloop does not
                     exist (Windows)

The environment variable HELLOHI_LOOP gives the default, and a program that
starts others (the demos, the bench) passes its choice on to them through it.

One difference matters: uvloop's clock, `loop.time()`, counts whole milliseconds
(asyncio's counts fractions of a microsecond). A round trip on loopback or a LAN
takes less than one, so the UDP programs do not give that clock to the
reliability layer: they read time.monotonic() (udp/deadline.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any, Coroutine

CHOICES = ("auto", "uvloop", "asyncio")
ENVIRONMENT = "HELLOHI_LOOP"

# Timers are armed in the loop's clock. uvloop's, in whole milliseconds, can fire
# up to a millisecond before the moment asked for; this much later, they never do.
# Without it a timer that fires early and is set again for the rest of the time
# fires at once, again and again, until the clock ticks over.
TIMER_SLACK = 0.001


class LoopUnavailable(RuntimeError):
    pass


def _uvloop_module():
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


def resolve(choice: str | None = None) -> str:
    """"uvloop" or "asyncio": what `choice` (default: $HELLOHI_LOOP, else auto) means here."""
    choice = choice or os.environ.get(ENVIRONMENT) or "auto"
    if choice not in CHOICES:
        raise LoopUnavailable(f"event loop {choice!r} is not one of {', '.join(CHOICES)} (from --loop or ${ENVIRONMENT})")
    if choice == "asyncio":
        return "asyncio"
    if _uvloop_module() is not None:
        return "uvloop"
    if choice == "uvloop":
        raise LoopUnavailable("uvloop is not installed: run `make venv` (it installs requirements.txt), "
                              "or use --loop asyncio")
    return "asyncio"


def run(main: Coroutine[Any, Any, Any], choice: str | None = None) -> Any:
    """asyncio.run(main) on the chosen loop."""
    try:
        name = resolve(choice)
    except LoopUnavailable:
        main.close()  # never awaited: close it so Python does not warn about that
        raise
    if name == "uvloop":
        return _uvloop_module().run(main)
    if sys.platform == "win32":
        # Windows' default loop (Proactor) has no add_reader(), which udp/server.py
        # watches its socket with; the selector loop has it for sockets.
        asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())  # type: ignore[attr-defined]
    return asyncio.run(main)


def add_loop_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--loop", choices=CHOICES, default=None,
                        help=f"event loop: auto (uvloop if installed), uvloop or asyncio (default: ${ENVIRONMENT} or auto)")


def apply_choice(choice: str | None) -> str:
    """Resolve `choice` and hand it down to the processes this one starts; exits with a clear message if impossible."""
    try:
        name = resolve(choice)
    except LoopUnavailable as error:
        raise SystemExit(f"error: {error}") from None
    os.environ[ENVIRONMENT] = name
    return name
