"""Messages the library itself hands to ``update``."""

from __future__ import annotations

from typing import Any


class Dropped:
    """``count`` messages were dropped before this consumer read them.

    A bounded ``Buffer(maxsize, overflow="drop_oldest")`` drops its oldest
    messages to make room; the next ``get`` of a consumer that had not read them
    returns one ``Dropped`` (an ordinary message: ``update`` decides what it
    means), then the oldest message still held.
    """

    __slots__ = ("count",)

    def __init__(self, count: int) -> None:
        self.count = count

    def __eq__(self, other: Any) -> bool:
        return type(other) is Dropped and other.count == self.count

    def __hash__(self) -> int:
        return hash((Dropped, self.count))

    def __repr__(self) -> str:
        return f"Dropped({self.count})"

    def __reduce__(self) -> tuple[type[Dropped], tuple[int]]:
        return Dropped, (self.count,)
