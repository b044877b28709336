"""The callbacks that stay synchronous under elmstate.aio, refused up front when
they are coroutine functions (docs/asyncio.md#what-stays-synchronous)."""

from __future__ import annotations

import functools
import inspect
from types import FunctionType
from typing import Any

_CO_COROUTINE = inspect.CO_COROUTINE


def is_async(fn: Any) -> bool:
    """Whether calling ``fn`` makes a coroutine: an ``async def`` function or
    method, also behind ``functools.partial``, or an object whose ``__call__`` is one.
    (sync_args answers for a plain function itself, from its code.)"""
    while isinstance(fn, (functools.partial, functools.partialmethod)):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    if inspect.isfunction(fn) or inspect.ismethod(fn) or inspect.isbuiltin(fn):
        return False
    call = getattr(type(fn), "__call__", None)  # noqa: B004 (the class's, not the instance's)
    return call is not None and inspect.iscoroutinefunction(call)


NAMES = ("init", "update", "view", "replay", "hydrator", "dehydrator")


def sync_args(*callbacks: Any) -> None:
    """Refuse a coroutine function given for any of ``callbacks`` (None is skipped),
    in the order of ``NAMES``."""
    for name, fn in zip(NAMES, callbacks):
        if fn is None:
            continue
        if type(fn) is FunctionType and not hasattr(fn, "_is_coroutine_marker"):
            # a plain function, not marked by inspect.markcoroutinefunction: its code
            # says, in a fraction of inspect.iscoroutinefunction's time (every call checks)
            if not fn.__code__.co_flags & _CO_COROUTINE:
                continue
        elif not is_async(fn):
            continue
        raise TypeError(
            f"{name} must be a plain function under elmstate.aio, got the coroutine "
            f"function {getattr(fn, '__qualname__', type(fn).__name__)!s:.100}: only "
            "command entries and protocol methods (get, put, commit, rollback, the "
            "fetcher, store methods) may be async"
        )
