"""What the project's command-line programs do when whoever reads their output leaves,
and when a signal asks them to stop."""

from __future__ import annotations

import os
import signal
import sys


def reader_went_away() -> None:
    """Call on BrokenPipeError: the reader of our output has gone (`... | head -1`).

    The program then stops quietly, as Unix tools do, with the exit status its caller
    chooses. Python would try to flush stdout once more as it exits and print a second
    error, so stdout is pointed at /dev/null first.
    """
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class StopSignal(KeyboardInterrupt):
    """SIGTERM or SIGHUP, taken as Ctrl-C is: the program's own `finally` blocks run (the
    client says BYE, so the server frees its name at once instead of after --timeout)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_status = 128 + signum  # what a shell reports for a program a signal ended


def stop_on_terminate_or_hangup() -> None:
    """`kill PID` and a closed terminal window end the program as Ctrl-C does."""

    def stop(signum, frame):
        raise StopSignal(signum)

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):  # Windows has no SIGHUP
            signal.signal(getattr(signal, name), stop)


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return interrupt.exit_status if isinstance(interrupt, StopSignal) else 130
