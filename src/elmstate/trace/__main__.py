"""The command line: ``python -m elmstate.trace show FILE`` and
``python -m elmstate.trace replay FILE --program MODULE:NAME``. See docs/trace.md."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
