"""``elmstate.aio`` bound to each core, in one process: what compare.py's aio rows run.

``elmstate.aio`` takes its core from ``elmstate._backend`` when it is imported,
so the compiled and the pure ``aio`` cannot both come from one import. The
compiled one is the ordinary ``elmstate.aio`` (when the compiled core is the one
``elmstate`` picked); the pure one is a second generation of the package,
imported with ``ELMSTATE_NO_EXTENSIONS=1`` (as tests/conftest.py does), after
which ``sys.modules`` is put back as it was, so that ``import elmstate``
elsewhere still sees the first generation.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

import elmstate
import elmstate.aio

_PURE: list[ModuleType] = []


def _elmstate_modules() -> dict[str, ModuleType]:
    return {
        name: module
        for name, module in sys.modules.items()
        if name == "elmstate" or name.startswith("elmstate.")
    }


def compiled_aio() -> ModuleType | None:
    """``elmstate.aio`` on the compiled core, or None in a pure build."""
    return elmstate.aio if elmstate.compiled else None


def pure_aio() -> ModuleType:
    """``elmstate.aio`` on the pure core (imported once, then cached)."""
    if not elmstate.compiled:
        return elmstate.aio
    if not _PURE:
        saved = _elmstate_modules()
        for name in saved:
            if name != "elmstate._core":  # a C extension is initialised once per process
                del sys.modules[name]
        env = os.environ.get("ELMSTATE_NO_EXTENSIONS")
        os.environ["ELMSTATE_NO_EXTENSIONS"] = "1"
        try:
            aio = importlib.import_module("elmstate.aio")
            if importlib.import_module("elmstate").compiled:
                raise RuntimeError("asked for the pure core, elmstate loaded the compiled one")
            _PURE.append(aio)
        finally:
            if env is None:
                del os.environ["ELMSTATE_NO_EXTENSIONS"]
            else:
                os.environ["ELMSTATE_NO_EXTENSIONS"] = env
            for name in _elmstate_modules():
                del sys.modules[name]
            sys.modules.update(saved)
    return _PURE[0]
