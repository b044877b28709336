"""Building and lifting commands (lists of zero-argument callables returning
messages), and ``pages``, a fetcher over an iterable."""

from __future__ import annotations

import sys
import threading
from collections.abc import Coroutine, Generator, Iterable, Iterator
from itertools import islice
from typing import Any, Callable, Generic, TypeVar

from . import _validate as check

A = TypeVar("A")
B = TypeVar("B")


class _Return:
    """A command entry that returns a fixed message (a class, so it pickles and reprs)."""

    __slots__ = ("message",)

    def __init__(self, message: Any) -> None:
        self.message = message

    def __call__(self) -> Any:
        return self.message

    def __repr__(self) -> str:
        return f"<command returning {self.message!r:.80}>"


class _Tagged:
    __slots__ = ("entry", "target")

    def __init__(self, entry: Callable[[], Any], target: Callable[[Any], Any]) -> None:
        self.entry = entry
        self.target = target

    def __call__(self) -> Any:
        return self.target(self.entry())


def new_command(*messages: A) -> list[Callable[[], A]]:
    """One callable per message, each returning its message (``None`` included)."""
    return [_Return(message) for message in messages]


def tag(
    command: Iterable[Callable[[], A] | None] | None, target: Callable[[A], B] | None
) -> list[Callable[[], B] | None] | None:
    """Lift a child's command into the parent's message type: ``f`` -> ``target(f())``.

    ``None`` entries stay ``None``; returns ``None`` when either argument is ``None``.
    ``target`` is called for every entry, also when ``f()`` returned ``None``: for a
    ``Command[Child]`` (entries return ``Child | None``) it takes ``Child | None``.
    The result is a ``Command[B]``.
    """
    if command is None or target is None:
        return None
    check.callable_arg("target", target)
    if isinstance(command, check.TEXT):
        raise check.not_iterable(command)
    try:
        entries = list(command)
    except TypeError:
        raise check.not_iterable(command) from None
    lifted: list[Callable[[], B] | None] = []
    for entry in entries:
        if entry is None:
            lifted.append(None)
        elif not callable(entry):
            raise check.not_callable_entry(entry)
        else:
            lifted.append(_Tagged(entry, target))
    return lifted


class _AttemptLater(Coroutine[Any, Any, Any]):
    """An async entry's awaitable, its ``Exception`` turned into ``on_error(exc)``
    (cancellation, a BaseException, passes through).

    A coroutine of its own rather than an ``async def``: closed, or thrown into,
    before it started (a tick that failed before awaiting it), it closes the
    entry's awaitable too, which an ``async def`` could not: that one would be
    left never awaited.
    """

    __slots__ = ("awaitable", "on_error", "_steps")

    def __init__(self, awaitable: Any, on_error: Callable[[Exception], Any]) -> None:
        self.awaitable = awaitable
        self.on_error = on_error
        self._steps: Generator[Any, Any, Any] | None = None

    def _run(self) -> Generator[Any, Any, Any]:
        try:
            return (yield from self.awaitable.__await__())
        except Exception as exc:
            return self.on_error(exc)

    def _unstarted(self) -> Generator[Any, Any, Any]:
        """The steps, for a throw or a close before any send: the entry's awaitable closed."""
        check.close_awaitables((self.awaitable,))
        self._steps = steps = self._run()
        return steps

    def send(self, value: Any) -> Any:
        steps = self._steps
        if steps is None:
            self._steps = steps = self._run()
        return steps.send(value)

    def throw(self, *args: Any) -> Any:
        steps = self._steps
        if steps is None:
            steps = self._unstarted()
        return steps.throw(*args)

    def close(self) -> None:
        steps = self._steps
        if steps is None:
            steps = self._unstarted()
        steps.close()

    def __await__(self) -> Generator[Any, Any, Any]:
        if self._steps is None:
            self._steps = self._run()
        return self._steps


class _Attempt:
    """A command entry that turns an ``Exception`` from ``entry`` into ``on_error(exc)``."""

    __slots__ = ("entry", "on_error")

    def __init__(self, entry: Callable[[], Any], on_error: Callable[[Exception], Any]) -> None:
        self.entry = entry
        self.on_error = on_error

    def __call__(self) -> Any:
        try:
            message = self.entry()
        except Exception as exc:  # a BaseException (Ctrl-C, SystemExit) passes through
            return self.on_error(exc)
        if message is not None and check.awaitable(message):
            return _AttemptLater(message, self.on_error)  # an async entry (elmstate.aio)
        return message

    def __repr__(self) -> str:
        return f"<command attempting {self.entry!r:.80}>"


def attempt(entry: Callable[[], A], on_error: Callable[[Exception], B]) -> Callable[[], A | B]:
    """A command entry that calls ``entry()``, or ``on_error(exc)`` if it raises.

    Elm's ``Task.attempt``: a failing side effect becomes a message the program
    handles, and the tick succeeds. Only ``Exception`` is caught; a
    ``BaseException`` such as ``KeyboardInterrupt`` passes through, and so does
    whatever ``on_error`` itself raises. An ``entry`` that returns an awaitable
    (an ``async def`` under ``elmstate.aio``) gives an awaitable that catches
    what awaiting it raises the same way.
    """
    check.callable_arg("entry", entry)
    check.callable_arg("on_error", on_error)
    return _Attempt(entry, on_error)


class _Pages(Generic[A]):
    """A fetcher over an iterator: pages of at most ``size``, one item read ahead
    so that the last page already says ``more=False``."""

    __slots__ = ("items", "size", "ahead", "lock")

    def __init__(self, items: Iterator[A], size: int) -> None:
        self.items = items
        self.size = size
        self.ahead: list[A] = []  # at most one item: read to learn whether more follow
        # A generator called from two threads at once raises ValueError; the lock
        # makes overlapping calls safe (a batch's feeder never overlaps its own).
        self.lock = threading.Lock()

    def __call__(self, ctx: object = None) -> tuple[list[A], bool]:
        with self.lock:
            page = self.ahead
            page.extend(islice(self.items, self.size - len(page)))
            self.ahead = list(islice(self.items, 1))
            return page, bool(self.ahead)

    def __repr__(self) -> str:
        return f"<elmstate.pages of {self.size} from {self.items!r:.80}>"


def pages(iterable: Iterable[A], size: int) -> Callable[[Any], tuple[list[A], bool]]:
    """A fetcher (``(ctx) -> (messages, more)``) handing out ``iterable``'s items
    in lists of at most ``size``, with ``more=False`` on the last.

    An empty iterable gives one empty page with ``more=False``. To know that a
    page is the last, one item beyond it is read ahead. Once the items are
    exhausted, every further call returns ``([], False)`` again. The iterable is
    consumed lazily, one page per call; calls may come from any thread and are
    serialised by a lock. An exception from the iterable propagates from the
    call (and ends the batch).
    """
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"size must be an int, got {type(size).__name__}")
    if not 1 <= size <= sys.maxsize:  # islice takes no more
        raise ValueError(f"size must be between 1 and sys.maxsize, got {size}")
    if isinstance(iterable, check.TEXT):
        raise TypeError(f"iterable must be an iterable of messages, got {type(iterable).__name__}")
    try:
        items = iter(iterable)
    except TypeError:
        raise TypeError(
            f"iterable must be an iterable of messages, got {type(iterable).__name__}"
        ) from None
    return _Pages(items, size)
