"""Entry point: python -m bench (see bench/cli.py and docs/bench.md)."""

import sys

from hellohi.console import reader_went_away

try:
    from .cli import main

    sys.exit(main())
except KeyboardInterrupt:  # Ctrl-C outside the run itself (cli.main handles it there and keeps the figures)
    print("\ninterrupted (Ctrl-C)", file=sys.stderr)
    sys.exit(130)
except BrokenPipeError:
    # `python -m bench --list | head` (the servers of a run are stopped by its own
    # `finally` blocks on the way here)
    reader_went_away()
    sys.exit(1)
