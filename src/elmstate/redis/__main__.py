"""The command line: ``python -m elmstate.redis worker MODULE:PROGRAM --redis URL ...``.

See ``python -m elmstate.redis worker --help`` and docs/redis.md.
"""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
