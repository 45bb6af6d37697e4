"""Entry point: python -m bench (see bench/cli.py and docs/bench.md)."""

import os
import sys

try:
    from .cli import main

    sys.exit(main())
except KeyboardInterrupt:  # Ctrl-C outside the run itself (cli.main handles it there and keeps the figures)
    print("\ninterrupted (Ctrl-C)", file=sys.stderr)
    sys.exit(130)
except BrokenPipeError:
    # Whoever read the output has gone (`python -m bench --list | head`): stop quietly, as Unix
    # tools do (the servers of a run are stopped by its own `finally` blocks on the way here).
    # Python would try stdout once more as it exits, so point it at /dev/null.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(1)
