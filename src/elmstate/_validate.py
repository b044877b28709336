"""Argument checks shared by every entry point, so errors read the same everywhere."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any


def callable_arg(name: str, value: Any) -> None:
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")


def optional_callable_arg(name: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")


def has_methods(name: str, value: Any, *methods: str) -> None:
    for method in methods:
        if not callable(getattr(value, method, None)):
            raise TypeError(
                f"{name} must have a callable {method}() method, got {type(value).__name__}"
            )


# The library's own classes, which have the methods each role needs: looking
# those up again (a bound method made and dropped per name) was a third of what
# aggregate costs beyond the user's own work. Each core and store registers its own.
# Keyed by id(): a user's class may be unhashable (a metaclass with __eq__ and
# no __hash__), and a registered class lives as long as its module.
PRODUCERS: dict[int, type] = {}
CONSUMERS: dict[int, type] = {}
STORES: dict[int, type] = {}


def register(role: dict[int, type], cls: type) -> None:
    role[id(cls)] = cls


def producer_arg(value: Any) -> None:
    if id(type(value)) not in PRODUCERS:
        has_methods("producer", value, "put")


def consumer_arg(value: Any) -> None:
    if id(type(value)) not in CONSUMERS:
        has_methods("consumer", value, "get", "commit", "rollback")


def program_args(init: Any, update: Any, view: Any, producer: Any, consumer: Any) -> None:
    """The five arguments every mode and wrapper takes, in order: the first wrong one is named."""
    callable_arg("init", init)
    callable_arg("update", update)
    callable_arg("view", view)
    producer_arg(producer)
    consumer_arg(consumer)


def store_arg(value: Any) -> None:
    if id(type(value)) not in STORES:
        has_methods("store", value, "load", "store")


def key_arg(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")


# Strings and bytes are iterables, but never of callables or messages: as a
# command, a page of messages or a list of references they are surely a mistake.
TEXT = (str, bytes, bytearray, memoryview)


def not_context(name: str, value: Any) -> TypeError:
    return TypeError(f"{name} must be an elmstate.Context or None, got {type(value).__name__}")


def bytes_value(value: Any, rule: str) -> bytes:
    """``value`` as ``bytes`` (a bytearray or memoryview is copied), else a TypeError
    stating ``rule`` ("value must be bytes", say)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{rule}, got {type(value).__name__}")


def marker_copied() -> TypeError:
    # A copy is another object: the batch would skip it as foreign and wait forever.
    return TypeError(
        "a batch's marker cannot be copied or pickled: a consumer must hand back "
        "the very objects that were put"
    )


def not_copyable(value: Any) -> TypeError:
    # A copy of a queue position or a cancellation scope would silently break both.
    return TypeError(f"elmstate.{type(value).__name__} objects cannot be copied or pickled")


def seconds_arg(name: str, value: Any) -> float:
    """A non-negative, finite number of seconds (bool is rejected: it is surely a mistake)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float: no finite number of seconds
        raise ValueError(
            f"{name} must be a finite number of seconds >= 0, got {value!r:.40}"
        ) from None
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def pair(name: str, value: Any, shape: str) -> tuple[Any, Any]:
    """Unpack a callback's ``(a, b)`` result, naming the callback when it is not a pair."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0], value[1]
    if awaitable(value):
        raise refused_awaitable(name, value)
    raise TypeError(f"{name} must return a {shape} pair, got {value!r:.200}")


def not_iterable(value: Any) -> TypeError:
    return TypeError(
        f"a command must be None or an iterable of callables, got {type(value).__name__}"
    )


def not_callable_entry(value: Any) -> TypeError:
    return TypeError(f"command entries must be callables or None, got {type(value).__name__}")


def not_transform(value: Any) -> TypeError:
    if awaitable(value):
        return refused_awaitable("update", value)
    return TypeError(
        f"update must return a transform (a callable) or None, got {type(value).__name__}"
    )


def messages(name: str, value: Any) -> tuple[Any, ...]:
    """A returned batch of messages as a tuple; ``None`` is an empty batch."""
    if value is None:
        return ()
    if type(value) is tuple:
        return value
    if isinstance(value, TEXT) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must return an iterable of messages, got {type(value).__name__}")
    return tuple(value)


FEEDS = ("thread", "inline")


def feed_arg(feed: Any) -> None:
    """batch/aggregate's ``feed``: where the fetcher runs (docs/contract.md#batch)."""
    if not (type(feed) is str and feed in FEEDS):
        raise ValueError(f"feed must be 'thread' or 'inline', got {feed!r:.100}")


OVERFLOWS = ("wait", "drop_oldest")


def buffer_bounds(maxsize: Any, overflow: Any) -> tuple[int, bool]:
    """Buffer's ``maxsize`` and ``overflow`` as (maxsize or -1 for none, drops oldest)."""
    if not (type(overflow) is str and overflow in OVERFLOWS):
        raise ValueError(f"overflow must be 'wait' or 'drop_oldest', got {overflow!r:.100}")
    if maxsize is None:
        if overflow == "drop_oldest":
            raise ValueError(
                "overflow='drop_oldest' needs a maxsize (unbounded, nothing is dropped)"
            )
        return -1, False
    if isinstance(maxsize, bool) or not isinstance(maxsize, int):
        raise TypeError(f"maxsize must be None or an int, got {type(maxsize).__name__}")
    if not 1 <= maxsize <= 1 << 62:
        raise ValueError(f"maxsize must be between 1 and 2**62, got {maxsize!r:.40}")
    return int(maxsize), overflow == "drop_oldest"


# Callbacks that must stay synchronous, in every mode (docs/asyncio.md#what-stays-synchronous).


def awaitable(value: Any) -> bool:
    """Whether ``await value`` would work: its type has ``__await__`` (a coroutine,
    a future, a task). The compiled core reads the same from the type's slot
    (``_is_awaitable``). The ABC caches its answer per type: looking the method up
    on a type that lacks it would build an AttributeError's message each time."""
    return isinstance(value, Awaitable)


def refused_awaitable(name: str, value: Any) -> TypeError:
    """The error for a synchronous callback that returned an awaitable; the
    awaitable is closed first, so it is never left un-awaited."""
    close = getattr(value, "close", None)
    if callable(close):
        close()
    else:
        cancel = getattr(value, "cancel", None)
        if callable(cancel):
            cancel()
    return TypeError(
        f"{name} returned an awaitable ({type(value).__name__}), which is not awaited here: it "
        "must be a plain function (elmstate.aio awaits only command entries and protocol "
        "methods: get, put, commit, rollback, the fetcher, store methods)"
    )


def close_awaitables(values: Any) -> None:
    """A tick failed before awaiting: close what its entries returned."""
    for value in values:
        if awaitable(value):
            refused_awaitable("", value)
