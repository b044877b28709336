"""Building and lifting commands: lists of zero-argument callables returning messages."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable, TypeVar

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
