"""Helpers shared by the test modules (one copy each)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import ModuleType
from typing import Callable


def wait_for(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return predicate()
        time.sleep(0.002)
    return True


def subprocess_env(elm: ModuleType) -> dict[str, str]:
    """The environment for a child interpreter that imports this ``elm``, on its core."""
    env = dict(os.environ)
    # Import elmstate from wherever this session did (a src checkout or an install).
    package_parent = str(Path(str(elm.__file__)).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    if elm.compiled:
        env.pop("ELMSTATE_NO_EXTENSIONS", None)
    else:
        env["ELMSTATE_NO_EXTENSIONS"] = "1"
    return env
