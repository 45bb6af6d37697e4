"""Entry point: python -m bench (see bench/cli.py and docs/bench.md)."""

import sys

try:
    from .cli import main

    sys.exit(main())
except KeyboardInterrupt:  # Ctrl-C outside the run itself (cli.main handles it there and keeps the figures)
    print("\ninterrupted (Ctrl-C)", file=sys.stderr)
    sys.exit(130)
