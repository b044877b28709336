"""The snapshot envelope: what a keyed worker saves around the program's own bytes.

Besides the dehydrator's bytes it holds the id of the last entry applied to the
key (so a re-delivered entry is recognised and skipped) and the key's outbox
(the messages its last save emitted, published before the page is
acknowledged). The hydrator and dehydrator never see it.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ._common import EntryId

# Chosen so that no snapshot a program writes starts with it by accident: a NUL,
# the package and format version, a NUL. A value without it is a plain
# aggregate's snapshot, read as one with nothing applied yet.
MAGIC = b"\x00elmstate.redis:1\x00"
_HEAD = struct.Struct(">QQI")  # applied id (ms, seq), outbox length
_LEN = struct.Struct(">I")


class Outgoing(NamedTuple):
    """One message of an outbox, encoded, with the id downstream dedupes by."""

    dedupe: str
    key: str
    payload: bytes


class Envelope(NamedTuple):
    applied: EntryId | None  # None: nothing applied yet (absent, or a plain snapshot)
    outbox: tuple[Outgoing, ...]
    inner: bytes | None  # the program's bytes; None when the key is absent


ABSENT = Envelope(None, (), None)


def wrap(applied: EntryId, outbox: tuple[Outgoing, ...], inner: bytes) -> bytes:
    parts = [MAGIC, _HEAD.pack(applied[0], applied[1], len(outbox))]
    for item in outbox:
        for field in (item.dedupe.encode(), item.key.encode(), item.payload):
            parts.append(_LEN.pack(len(field)))
            parts.append(field)
    parts.append(inner)
    return b"".join(parts)


def unwrap(value: bytes | None) -> Envelope:
    """The envelope in ``value``; ValueError if it is one but damaged."""
    if value is None:
        return ABSENT
    if not value.startswith(MAGIC):
        return Envelope(None, (), value)
    view = memoryview(value)
    try:
        ms, seq, count = _HEAD.unpack_from(view, len(MAGIC))
        at = len(MAGIC) + _HEAD.size
        outbox = []
        for _ in range(count):
            fields = []
            for _ in range(3):
                (size,) = _LEN.unpack_from(view, at)
                at += _LEN.size
                if at + size > len(view):
                    raise ValueError("a field runs past the end")
                fields.append(bytes(view[at : at + size]))
                at += size
            outbox.append(Outgoing(fields[0].decode(), fields[1].decode(), fields[2]))
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"damaged elmstate.redis snapshot envelope: {exc}") from None
    applied = None if (ms, seq) == (0, 0) else (ms, seq)
    return Envelope(applied, tuple(outbox), bytes(view[at:]))
