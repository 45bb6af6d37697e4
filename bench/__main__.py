"""Entry point: python -m bench (see bench/cli.py and docs/bench.md)."""

import sys

from .cli import main

sys.exit(main())
