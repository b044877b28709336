"""The behavioural tests of run, batch and aggregate, through elmstate.aio too.

In a test module that sets ``AIO_MODES = True``, each test that takes ``elm``
runs in three modes (tests/conftest.py), ``sync`` (``elm`` itself), ``asyncio``
and ``uvloop``, where ``elm.run``, ``elm.batch`` and ``elm.aggregate`` are the
``elm.aio`` ones, each call run to completion on a fresh event loop of that
kind. After every call the loop must hold no task: nothing the mode started
outlives it. A test that cannot apply to elmstate.aio (it needs a thread-fed
batch to read through a consumer whose get blocks, say) is marked
``@pytest.mark.sync_only``; its other modes are deselected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import ModuleType
from typing import Any

import pytest

try:
    import uvloop
except ImportError:  # not on this platform: the uvloop leg fails, naming it
    uvloop = None

MODES = ["sync", "asyncio", "uvloop"]


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        if uvloop is None:
            pytest.fail("uvloop is not installed (pip install -e '.[test]')")
        return uvloop.new_event_loop()  # type: ignore[no-any-return]
    return asyncio.new_event_loop()


def complete(kind: str, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` on a fresh loop of ``kind``; no task may be left when it ends."""
    loop = new_loop(kind)
    try:
        try:
            return loop.run_until_complete(coro)
        finally:
            left = asyncio.all_tasks(loop)
            assert not left, f"tasks left pending: {left!r}"
    finally:
        loop.close()


class AioElm:
    """``elm``, with its modes replaced by ``elm.aio``'s run to completion."""

    def __init__(self, elm: ModuleType, kind: str) -> None:
        self._elm = elm
        self.mode = kind

    def __getattr__(self, name: str) -> Any:
        return getattr(self._elm, name)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return complete(self.mode, self._elm.aio.run(*args, **kwargs))

    def batch(self, *args: Any, **kwargs: Any) -> Any:
        return complete(self.mode, self._elm.aio.batch(*args, **kwargs))

    def aggregate(self, *args: Any, **kwargs: Any) -> Any:
        return complete(self.mode, self._elm.aio.aggregate(*args, **kwargs))
