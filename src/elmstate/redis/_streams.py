"""One Redis stream as a §1 producer and, through a consumer group, a §1 consumer,
over a redis-py client or a ``redis.asyncio`` one.

``run`` and ``batch`` work over them as over a ``Buffer``: see docs/redis.md.
The synchronous and the asynchronous classes share everything but the round
trips: the state of a consumer, the codecs, the markers, the checks.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import uuid
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, Union

import redis
import redis.asyncio

from .. import _validate as check
from .._backend import core
from .._errors import NothingUncommitted
from ._common import (
    PAYLOAD,
    Decode,
    Encode,
    async_client_arg,
    client_arg,
    codec_arg,
    count_arg,
    create_group,
    create_group_async,
    json_decode,
    json_encode,
    name_arg,
    socket_timeout,
)

if TYPE_CHECKING:
    from .._core_py import Context

__all__ = ["AsyncStreamConsumer", "AsyncStreamProducer", "StreamConsumer", "StreamProducer"]

T = TypeVar("T")

# An entry as redis-py hands it over: its id and its fields (empty when the
# entry was deleted or trimmed while it was pending).
Entry = tuple[bytes, Union[dict[bytes, bytes], None]]

PAGE = 100  # entries per XREADGROUP: one round trip serves this many gets
FIRST = b"0-0"  # a cursor at the start of a consumer's pending entries

# A batch's private markers (docs/contract.md#end-markers) must come back out of
# the stream as the very objects that were put: a batch knows its own by
# identity, and no codec can carry one. So a marker travels as a token, in a
# field of its own, and this process keeps the object until the entry that
# carries it is committed. A token no one here knows (put by another process,
# or before a restart) reads as a marker of no batch, which batches skip.
MARKER = b"marker"
_PROCESS = uuid.uuid4().hex[:12]
_tokens = itertools.count()  # next() is atomic
_markers: dict[bytes, Any] = {}


def _marker_token(marker: Any) -> bytes:
    token = f"{os.getpid()}:{_PROCESS}:{next(_tokens)}".encode()
    _markers[token] = marker
    return token


def _live(ctx: Any) -> Context | None:
    """``ctx`` checked as the core checks it: a Context or None, and not ended
    (then its error, with the traceback of an earlier raise dropped)."""
    if ctx is not None:
        if type(ctx) is not core.Context:
            raise check.not_context("ctx", ctx)
        err = ctx.err
        if err is not None:
            raise err.with_traceback(None)
    return ctx  # type: ignore[no-any-return]


class _Producer:
    """What both producers share: the arguments and the entries' fields."""

    _name: ClassVar[str]
    _client: Any

    def _setup(self, stream: Any, encode: Any, maxlen: Any) -> None:
        self._stream = name_arg("stream", stream)
        self._encode: Encode = codec_arg("encode", encode, json_encode)
        self._maxlen = None if maxlen is None else count_arg("maxlen", maxlen)

    def _fields(self, values: tuple[Any, ...]) -> list[dict[Any, Any]]:
        """Each value's entry, every one encoded before anything is sent."""
        encode, marker_type = self._encode, core._End
        return [
            {MARKER: _marker_token(v)}
            if type(v) is marker_type
            else {PAYLOAD: check.bytes_value(encode(v), "encode must return bytes")}
            for v in values
        ]

    def __repr__(self) -> str:
        return f"<elmstate.redis.{self._name} stream={self._stream!r}>"


class StreamProducer(_Producer):
    """A producer (``put(ctx, *values)``) that appends to the Redis stream ``stream``.

    Each value is encoded (``encode``, JSON by default, must return bytes) and
    appended as one entry with the field ``payload``. ``client`` is a
    ``redis.Redis`` made with ``decode_responses=False``; it stays the caller's.
    ``maxlen`` (an int >= 1) trims the stream to about that many entries on
    every append (``XADD MAXLEN ~``): entries that no consumer has read yet
    are trimmed too, so it bounds memory at the price of losing them.

    A batch's private markers travel too, so ``batch`` works over a stream: each
    as an entry with the field ``marker`` holding a token, which a
    :class:`StreamConsumer` in this process turns back into the marker itself
    (elsewhere, it reads as a marker of no batch, which batches skip).
    """

    _name = "StreamProducer"

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        *,
        encode: Encode | None = None,
        maxlen: int | None = None,
    ) -> None:
        self._client: redis.Redis = client_arg(client)
        self._setup(stream, encode, maxlen)

    def put(self, ctx: Context | None, *values: Any) -> None:
        """Append ``values`` in order, in one round trip; nothing is sent for none.

        Every value is encoded before anything is sent, so a value that cannot
        be encoded appends nothing. The appends run as one MULTI/EXEC: a
        connection lost on the way appends all or none of them (a lost reply
        leaves you not knowing which, as with any write), never a prefix that a
        retried tick would append again.
        """
        _live(ctx)
        if not values:
            return
        fields = self._fields(values)
        stream, maxlen = self._stream, self._maxlen
        if len(fields) == 1:
            self._client.xadd(stream, fields[0], maxlen=maxlen, approximate=True)
            return
        with self._client.pipeline(transaction=True) as pipe:
            for entry in fields:
                pipe.xadd(stream, entry, maxlen=maxlen, approximate=True)
            pipe.execute()


class AsyncStreamProducer(_Producer):
    """A :class:`StreamProducer` over a ``redis.asyncio`` client: the same
    arguments, entries and rules, and ``put`` is a coroutine.

    A ``put`` cancelled while its MULTI/EXEC is on the way appended all of its
    values or none (redis-py closes that connection), as after a lost connection.
    """

    _name = "AsyncStreamProducer"

    def __init__(
        self,
        client: redis.asyncio.Redis,
        stream: str,
        *,
        encode: Encode | None = None,
        maxlen: int | None = None,
    ) -> None:
        self._client: redis.asyncio.Redis = async_client_arg(client)
        self._setup(stream, encode, maxlen)

    async def put(self, ctx: Context | None, *values: Any) -> None:
        """Append ``values`` in order, in one round trip (one MULTI/EXEC for
        several); nothing is sent for none, and nothing when one of them cannot
        be encoded."""
        _live(ctx)
        if not values:
            return
        fields = self._fields(values)
        stream, maxlen = self._stream, self._maxlen
        if len(fields) == 1:
            await self._client.xadd(stream, fields[0], maxlen=maxlen, approximate=True)
            return
        async with self._client.pipeline(transaction=True) as pipe:
            for entry in fields:
                pipe.xadd(stream, entry, maxlen=maxlen, approximate=True)
            await pipe.execute()


class _Consumer:
    """What both consumers share: the arguments, and the state between Redis and
    the caller. Entries read from Redis wait in ``_ready``; handed out, they
    move to ``_taken`` until a commit (acknowledged) or a rollback (back to
    the front of ``_ready``). Round trips are the subclasses' own."""

    _name: ClassVar[str]
    _client: Any

    def _setup(self, stream: Any, group: Any, consumer: Any, decode: Any, block: Any) -> None:
        self._stream = name_arg("stream", stream)
        self._group = name_arg("group", group)
        self._consumer = name_arg("consumer", consumer)
        self._decode: Decode = codec_arg("decode", decode, json_decode)
        self._block_ms = _block_ms(block, socket_timeout(self._client))
        self._ready: deque[Entry] = deque()  # read from Redis, not handed out yet
        self._taken: list[Entry] = []  # handed out since the last commit or rollback
        # Where the next page of this consumer's pending entries starts (after
        # this id); None once they are all read, and new entries are next.
        self._cursor: bytes | None = FIRST

    def __repr__(self) -> str:
        return (
            f"<elmstate.redis.{self._name} stream={self._stream!r} "
            f"group={self._group!r} consumer={self._consumer!r}>"
        )

    def _hand_out(self) -> Any:
        entry = self._ready.popleft()
        self._taken.append(entry)
        return self._message(entry)

    def _uncommitted(self, what: str) -> list[bytes]:
        """The ids of the entries handed out since the last commit or rollback."""
        if not self._taken:
            raise NothingUncommitted(f"{what}: nothing uncommitted")
        return [entry_id for entry_id, _ in self._taken]

    def _committed(self) -> None:
        """The entries handed out are acknowledged: forget them (only now, so
        that a failed XACK leaves them to roll back)."""
        for _, fields in self._taken:  # a committed marker is not read again
            if fields and MARKER in fields:
                _markers.pop(fields[MARKER], None)
        self._taken.clear()

    def _roll_back(self) -> None:
        if not self._taken:
            raise NothingUncommitted("rollback: nothing uncommitted")
        self._ready.extendleft(reversed(self._taken))
        self._taken.clear()

    # The round trips, as the client makes them: the reply from a redis-py
    # client, a coroutine to await from a redis.asyncio one.

    def _read_new(self) -> Any:
        """XREADGROUP: wait up to ``block`` for a page of new entries."""
        return self._client.xreadgroup(
            self._group, self._consumer, {self._stream: ">"}, count=PAGE, block=self._block_ms
        )

    def _read_pending(self, cursor: bytes) -> Any:
        """XREADGROUP: a page of this consumer's pending entries after ``cursor``."""
        return self._client.xreadgroup(
            self._group, self._consumer, {self._stream: cursor}, count=PAGE
        )

    def _ack(self, ids: list[bytes]) -> Any:
        return self._client.xack(self._stream, self._group, *ids)

    def _got_new(self, reply: Any) -> None:
        entries = _entries(reply)
        if entries:
            self._ready.extend(entries)
        else:
            # A wait that ends with nothing new goes back over the pending entries
            # before the next: an entry the server delivered to this name whose
            # reply never arrived (a lost connection; redis-py may re-send the read
            # and get other entries) is pending here, and would otherwise wait for
            # a restart.
            self._cursor = FIRST

    def _lost_new(self) -> None:
        """A wait for new entries failed or was cancelled: the server may have
        delivered some whose reply never arrived. They are pending for this
        name, so the next read goes over the pending entries first."""
        self._cursor = FIRST

    def _got_pending(self, reply: Any) -> list[bytes]:
        """Take a page of own pending entries in; returns the ids of those that
        were deleted or trimmed meanwhile (nothing to hand out: to acknowledge)."""
        entries = _entries(reply)
        if not entries:
            self._cursor = None  # the pending entries are read: new entries from now on
            return []
        self._cursor = entries[-1][0]
        taken = {entry_id for entry_id, _ in self._taken}  # pending, and handed out already
        self._ready.extend(entry for entry in entries if entry[1] and entry[0] not in taken)
        return [entry_id for entry_id, fields in entries if not fields]

    def _message(self, entry: Entry) -> Any:
        entry_id, fields = entry
        if fields and MARKER in fields:
            marker = _markers.get(fields[MARKER])
            return core._End() if marker is None else marker
        payload = fields.get(PAYLOAD) if fields else None
        if payload is None:
            raise ValueError(
                f"stream {self._stream!r}, entry {entry_id.decode()}: no {PAYLOAD.decode()!r} field"
            )
        try:
            return self._decode(payload)
        except Exception as exc:
            raise ValueError(
                f"stream {self._stream!r}, entry {entry_id.decode()}: the payload cannot be "
                f"decoded ({type(exc).__name__}: {exc})"
            ) from exc


class StreamConsumer(_Consumer):
    """A consumer (``get``, ``commit``, ``rollback``) of ``stream`` as ``consumer``
    in the consumer group ``group``, which is created if missing (reading the
    stream from its start).

    ``get`` hands out this consumer's own pending entries first, those that an
    earlier process of the same name read and never acknowledged, in id order;
    then new entries, which the group shares among its consumers (each goes to
    one of them). Whenever a wait for new entries ends with none, or fails, it
    looks for own pending entries again (one whose delivery was lost on the
    way, or one claimed for this name). Pending entries that were deleted or
    trimmed meanwhile carry no message: they are acknowledged and skipped.

    ``get`` waits for an entry with ``XREADGROUP BLOCK``, ``block`` seconds at
    a time, and looks at ``ctx`` between waits: it raises ``ctx.err`` within
    about ``block`` seconds of ``ctx`` ending (at once when it had ended
    before the call). ``block`` must be shorter than the client's socket
    timeout, or the client would give up on a wait the server still honours.

    ``commit`` acknowledges (``XACK``) every entry handed out since the last
    commit or rollback; ``rollback`` hands the same entries out again, before
    anything else. Either raises :class:`~elmstate.NothingUncommitted` when
    there are none. Entries handed out and not acknowledged when the process
    ends stay pending: a consumer of the same name gets them first.

    An entry without the ``payload`` field, or whose payload ``decode`` (JSON
    by default) rejects, makes ``get`` raise a ``ValueError`` naming the stream
    and the entry id. The entry counts as handed out: ``rollback`` serves it
    again (so ``run`` stops on it every time), ``commit`` acknowledges it,
    which is how to skip it. Nothing read is ever unpickled.

    Use one object per consumer name at a time, from one thread at a time
    (``run`` and ``batch`` call it from their loop's thread only).
    """

    _name = "StreamConsumer"

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        group: str,
        consumer: str,
        *,
        decode: Decode | None = None,
        block: float = 1.0,
    ) -> None:
        self._client: redis.Redis = client_arg(client)
        self._setup(stream, group, consumer, decode, block)
        create_group(self._client, self._stream, self._group)

    def get(self, ctx: Context | None = None) -> Any:
        """The next message: a rolled-back one, a pending one, else a new one (waiting)."""
        ready = self._ready
        while True:
            _live(ctx)
            if ready:
                return self._hand_out()
            self._read()

    def commit(self) -> None:
        """Acknowledge every entry handed out since the last commit or rollback."""
        self._ack(self._uncommitted("commit"))
        self._committed()

    def rollback(self) -> None:
        """Hand the entries out since the last commit or rollback out again, first."""
        self._roll_back()

    def _read(self) -> None:
        """One XREADGROUP: a page of own pending entries, else wait up to ``block`` for new ones."""
        cursor = self._cursor
        if cursor is None:
            try:
                reply = self._read_new()
            except BaseException:
                self._lost_new()
                raise
            self._got_new(reply)
            return
        gone = self._got_pending(self._read_pending(cursor))
        if gone:  # deleted or trimmed while pending: there is nothing to hand out
            self._ack(gone)


class AsyncStreamConsumer(_Consumer):
    """A :class:`StreamConsumer` over a ``redis.asyncio`` client: the same
    arguments, order and rules, and ``get``, ``commit`` and ``rollback`` are
    coroutines.

    The group is created if missing by the first ``get`` (a constructor cannot
    wait for Redis); a ``commit`` or ``rollback`` before any ``get`` raises
    :class:`~elmstate.NothingUncommitted` as always. ``get`` returns without
    suspending while it holds entries read earlier (a page is 100).

    A ``get`` waiting for new entries (``XREADGROUP BLOCK``, ``block`` seconds
    at a time) wakes as soon as ``ctx`` ends, from any thread, and raises
    ``ctx.err``. That, or cancelling the task that awaits it, abandons the wait
    and closes its connection (redis-py does); entries that the server had
    already delivered to this name are pending for it and come out of the next
    ``get``, first, so nothing is lost or handed out twice. A cancelled
    ``commit`` leaves the entries uncommitted (commit again, or roll back).

    Use one object per consumer name at a time, from one task at a time.
    """

    _name = "AsyncStreamConsumer"

    def __init__(
        self,
        client: redis.asyncio.Redis,
        stream: str,
        group: str,
        consumer: str,
        *,
        decode: Decode | None = None,
        block: float = 1.0,
    ) -> None:
        self._client: redis.asyncio.Redis = async_client_arg(client)
        self._setup(stream, group, consumer, decode, block)
        self._grouped = False  # whether the group is known to exist

    async def get(self, ctx: Context | None = None) -> Any:
        """The next message: a rolled-back one, a pending one, else a new one (waiting)."""
        ready = self._ready
        while True:
            _live(ctx)
            if ready:
                return self._hand_out()
            await self._read(ctx)

    async def commit(self) -> None:
        """Acknowledge every entry handed out since the last commit or rollback."""
        await self._ack(self._uncommitted("commit"))
        self._committed()

    async def rollback(self) -> None:
        """Hand the entries out since the last commit or rollback out again, first."""
        self._roll_back()

    async def _read(self, ctx: Context | None) -> None:
        """One XREADGROUP, as :meth:`StreamConsumer._read`; a wait also ends when ``ctx`` does."""
        if not self._grouped:
            await create_group_async(self._client, self._stream, self._group)
            self._grouped = True
        cursor = self._cursor
        if cursor is None:
            try:
                reply = await _unless_ended(ctx, self._read_new())
            except BaseException:  # CancelledError included
                self._lost_new()
                raise
            if reply is _ENDED:  # the wait was abandoned: as a lost reply
                self._lost_new()
            else:
                self._got_new(reply)
            return
        gone = self._got_pending(await self._read_pending(cursor))
        if gone:
            await self._ack(gone)


_ENDED: Any = object()  # what _unless_ended returns when the context ended first


async def _unless_ended(ctx: Context | None, awaitable: Awaitable[T]) -> T:
    """``await awaitable``, unless ``ctx`` ends first: then it is cancelled, and
    the result is ``_ENDED`` (the caller's loop then raises ``ctx.err``).

    The context may end on any thread: its callback only wakes the loop. A
    result that came in as the context ended is returned, not dropped.
    """
    if ctx is None:
        return await awaitable
    loop = asyncio.get_running_loop()
    ended = loop.create_future()

    def wake() -> None:  # on the thread that ends ctx
        try:
            loop.call_soon_threadsafe(_settle, ended)
        except RuntimeError:  # the loop is closed: no one is waiting any more
            pass

    task = asyncio.ensure_future(awaitable)  # first: the awaitable is never left un-awaited
    handle = None
    try:
        handle = ctx.add_done_callback(wake)
        await asyncio.wait((task, ended), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if handle is not None:
            ctx.remove_done_callback(handle)
        ended.cancel()
        if not task.done():
            task.cancel()
            # Let it finish its cancellation (redis-py closes the connection),
            # so that no task is left pending.
            await asyncio.wait((task,))
    if task.cancelled():
        return _ENDED  # type: ignore[no-any-return]
    return task.result()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _block_ms(block: Any, timeout: float | None) -> int:
    """``block`` (seconds) as XREADGROUP's BLOCK milliseconds, checked against the
    socket timeout: a wait the client abandons first would raise a TimeoutError
    on every quiet stream instead of returning."""
    seconds = check.seconds_arg("block", block)
    if seconds == 0:
        raise ValueError("block must be a positive number of seconds, got 0")
    if timeout is not None and seconds >= timeout:
        raise ValueError(
            f"block must be shorter than the client's socket timeout ({timeout} s), "
            f"got {block!r}: the client would give up on a wait before the server ends it"
        )
    # BLOCK 0 would wait for ever: a tiny block rounds up to 1 ms.
    return max(1, math.ceil(seconds * 1000))


def _entries(reply: Any) -> list[Entry]:
    """The entries of a one-stream XREADGROUP reply, whichever shape redis-py gives it.

    RESP2 gives ``[[stream, entries]]``; RESP3 ``{stream: [entries]}``; redis-py's
    unified responses ``{stream: entries}``; a timed-out wait ``None``, ``[]`` or ``{}``.
    """
    if not reply:
        return []
    data = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
    if data and isinstance(data[0], list):  # RESP3's extra level
        data = data[0]
    return list(data or ())


check.register(check.PRODUCERS, StreamProducer)
check.register(check.CONSUMERS, StreamConsumer)
