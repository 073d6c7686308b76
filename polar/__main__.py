"""``python -m polar``: the command line (see polar.cli)."""
import sys

from .cli import main

sys.exit(main())
