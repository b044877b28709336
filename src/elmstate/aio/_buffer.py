"""``aio.Buffer``: the Buffer of docs/buffer.md, read by awaiting ``get``.

It wraps the core's Buffer: the messages, positions and cleaning are the same
code. A consumer's ``get`` returns at once while a message is there; otherwise it
registers a waker with the buffer (under the buffer's lock, with the check) and
awaits a future that the next put, close or end of ``ctx`` resolves through
``loop.call_soon_threadsafe`` — safe whichever thread puts.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from types import GenericAlias
from typing import Any, Callable, Generic, NoReturn

from .. import _validate as check
from .._backend import core
from ..typing import T

_EMPTY = core._EMPTY
_current_task = asyncio.current_task
_ATTACH = object()  # only Buffer.new_consumer makes a consumer


class _Wake:
    """Called by the buffer (any thread, its lock held) or by an ending ctx:
    resolves a future on its event loop."""

    __slots__ = ("loop", "future", "thread")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.thread = threading.get_ident()

    def __call__(self) -> None:
        try:
            if threading.get_ident() == self.thread and _current_task(self.loop) is not None:
                # A put from a task of this loop: the loop runs its callbacks before
                # it waits again, no self-pipe needed. Anything else on this thread
                # (a signal handler, a finaliser) may run while the loop is about to
                # wait, or waiting, in select: only call_soon_threadsafe wakes it.
                self.loop.call_soon(_resolve, self.future)
            else:
                self.loop.call_soon_threadsafe(_resolve, self.future)
        except RuntimeError:  # the loop was closed: nobody waits any more
            pass


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def next_message(consumer: Any, ctx: Any) -> Any:
    """The next message of a core ``BufferConsumer``, awaited while there is none."""
    loop = asyncio.get_running_loop()
    while True:
        wake = _Wake(loop)
        message = consumer._aio_get(ctx, wake)  # raises what get raises
        if message is not _EMPTY:
            return message
        handle = ctx.add_done_callback(wake) if ctx is not None else None
        try:
            await wake.future
        finally:
            if handle is not None:
                ctx.remove_done_callback(handle)
            consumer._aio_unwatch(wake)


class Buffer(Generic[T]):
    """An unbounded, thread-safe FIFO with per-consumer offsets whose consumers
    are awaited: :class:`elmstate.Buffer`'s rules, ``get`` a coroutine.

    ``put`` is synchronous, never waits, and may be called from any thread.
    """

    __slots__ = ("_buffer", "__weakref__")

    def __init__(self) -> None:
        self._buffer = core.Buffer()

    def put(self, ctx: Any, *values: T) -> None:
        """Append ``values`` in order; wakes awaiting consumers, on their loops."""
        self._buffer.put(ctx, *values)

    def new_consumer(self) -> BufferConsumer[T]:
        """A consumer reading from the oldest message the buffer still holds."""
        return BufferConsumer(_ATTACH, self._buffer.new_consumer())

    def set_cleaner(
        self, cleaner: Callable[[int, Sequence[int]], int], cooldown: float = 0.01
    ) -> None:
        """Install ``cleaner``, run at most once per ``cooldown`` seconds (docs/buffer.md)."""
        self._buffer.set_cleaner(cleaner, cooldown)

    def __len__(self) -> int:
        """The number of messages the buffer holds."""
        return len(self._buffer)

    def slice(self) -> list[T]:
        """A copy of the messages held, oldest first."""
        return self._buffer.slice()

    def diff(self, consumer: BufferConsumer[Any]) -> int:
        """How many held messages ``consumer`` has not read yet."""
        if type(consumer) is not BufferConsumer:
            raise ValueError("consumer must be a consumer of this buffer")
        return self._buffer.diff(consumer._consumer)

    def close(self) -> None:
        """End the buffer: puts raise Closed, awaiting gets wake with Closed; idempotent."""
        self._buffer.close()

    def __enter__(self) -> Buffer[T]:
        """The buffer itself; leaving the block closes it."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close on leaving the ``with`` block."""
        self.close()

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise check.not_copyable(self)

    def __class_getitem__(cls, item: Any) -> GenericAlias:
        return GenericAlias(cls, item)

    def __repr__(self) -> str:
        return f"<elmstate.aio.Buffer holding {len(self._buffer)}>"


class BufferConsumer(Generic[T]):
    """One reader of an :class:`aio.Buffer <Buffer>`: ``await get(ctx)``, then
    ``commit()`` or ``rollback()`` (synchronous: they never wait)."""

    __slots__ = ("_consumer", "__weakref__")

    def __init__(self, token: object, consumer: Any) -> None:
        if token is not _ATTACH:
            raise TypeError("use aio.Buffer.new_consumer() to make a consumer")
        self._consumer = consumer

    async def get(self, ctx: Any = None) -> T:
        """The next message; without suspending while one is there, else awaiting a
        put, the end of ``ctx`` (raises ``ctx.err``) or a close (raises ``Closed``)."""
        message = self._consumer._aio_get(ctx, None)
        if message is _EMPTY:
            message = await next_message(self._consumer, ctx)
        return message  # type: ignore[no-any-return]

    def commit(self) -> None:
        """Make the reads since the last commit permanent."""
        self._consumer.commit()

    def rollback(self) -> None:
        """Return to the last commit: the same messages are read again."""
        self._consumer.rollback()

    def close(self) -> None:
        """Detach from the buffer; an awaiting get wakes with Closed; idempotent."""
        self._consumer.close()

    def __enter__(self) -> BufferConsumer[T]:
        """The consumer itself; leaving the block closes it."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close on leaving the ``with`` block."""
        self.close()

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise check.not_copyable(self)

    def __class_getitem__(cls, item: Any) -> GenericAlias:
        return GenericAlias(cls, item)


# The library's own producer and consumer: the argument checks know their methods.
check.register(check.PRODUCERS, Buffer)
check.register(check.CONSUMERS, BufferConsumer)
