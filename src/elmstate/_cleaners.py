"""Retention policies for :class:`~elmstate.Buffer`, shared by both cores.

A cleaner is called as ``cleaner(size, offsets) -> n``: the buffer's size and each
open consumer's committed position relative to the buffer's start; the buffer
then drops its ``n`` oldest messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable, NamedTuple

from . import _validate as check
from .typing import Cleaner


def default_cleaner(size: int, offsets: Sequence[int]) -> int:
    """Drop what every open consumer has committed past; nothing without consumers."""
    if not offsets:
        return 0
    return max(0, min(min(offsets), size))


class CleanerNotification(NamedTuple):
    """What :func:`fixed_buffer_cleaner` passes to its callback when it trims."""

    max_size: int
    target_size: int
    size: int
    offsets: Sequence[int]
    trim: int


def fixed_buffer_cleaner(
    max_size: int,
    target_size: int,
    callback: Callable[[CleanerNotification], object] | None = None,
) -> Cleaner:
    """A cleaner that trims the buffer back to ``target_size`` whenever it exceeds ``max_size``.

    Consumers whose unread messages are trimmed get :class:`Lagged` on their next get.
    """
    for name, value in (("max_size", max_size), ("target_size", target_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if target_size < 0 or max_size < target_size:
        raise ValueError(
            "need 0 <= target_size <= max_size, "
            f"got max_size={max_size!r}, target_size={target_size!r}"
        )
    check.optional_callable_arg("callback", callback)

    def cleaner(size: int, offsets: Sequence[int]) -> int:
        if size <= max_size:
            return 0
        trim = size - target_size
        if callback is not None:
            callback(CleanerNotification(max_size, target_size, size, list(offsets), trim))
        return trim

    return cleaner


def trim_count(n: Any, size: int) -> int:
    """A cleaner's answer as a count in ``0..size``, whatever the size of the int."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"cleaner must return an int, got {type(n).__name__}")
    if n <= 0:
        return 0
    return n if n < size else size
