"""Pick the core: compiled unless told otherwise or unavailable (propcache's pattern)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

NO_EXTENSIONS = bool(os.environ.get("ELMSTATE_NO_EXTENSIONS")) or (
    sys.implementation.name != "cpython"
)

if TYPE_CHECKING:
    from . import _core_py as core

    compiled = False
elif NO_EXTENSIONS:
    from . import _core_py as core

    compiled = False
else:
    try:
        from . import _core as core

        compiled = True
    except ImportError:
        from . import _core_py as core

        compiled = False

__all__ = ["compiled", "core"]
