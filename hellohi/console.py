"""What the project's command-line programs do when whoever reads their output leaves."""

from __future__ import annotations

import os
import sys


def reader_went_away() -> None:
    """Call on BrokenPipeError: the reader of our output has gone (`... | head -1`).

    The program then stops quietly, as Unix tools do, with the exit status its caller
    chooses. Python would try to flush stdout once more as it exits and print a second
    error, so stdout is pointed at /dev/null first.
    """
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
