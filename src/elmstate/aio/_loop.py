"""The tick loop on the event loop: the core's tick (``_Program._aio_*``), with
its awaits here (docs/asyncio.md).

When the consumer is a Buffer's (``elmstate.Buffer`` or ``aio.Buffer``) and the
producer a Buffer, the core runs whole ticks by itself (``_aio_drain``) until
the buffer is empty, a tick's command returned an awaitable, a batch marker
comes, or a millisecond has passed; only then does this module await. Any
other consumer or producer is called here, once per tick, and awaited when it
returns an awaitable.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, NoReturn

from .. import _validate as check
from .._backend import core
from ._buffer import Buffer, BufferConsumer, next_message

_EMPTY = core._EMPTY
_YIELD = core._YIELD
_End = core._End
_awaitable = core._is_awaitable
_clock = time.monotonic

# Seconds of work between yields to the event loop: other tasks are never kept
# waiting longer than this by a busy loop (docs/asyncio.md#fairness).
SLICE = 0.001


class Drained(Exception):
    """The batch's input is exhausted and its queue drained."""


async def settle(results: list[Any]) -> list[Any]:
    """Await a tick's awaitables concurrently; its messages in entry order.

    The first awaitable to fail (in completion order) cancels the others, which
    are awaited, and its exception is raised. Cancelling the caller cancels them all.
    """
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Future[Any]] = []
    try:
        for i, result in enumerate(results):
            if _awaitable(result):
                task = asyncio.ensure_future(result)
                results[i] = task
                tasks.append(task)
    except BaseException:
        check.close_awaitables(results)
        await cancel_and_wait(tasks)
        raise
    first: asyncio.Future[asyncio.Future[Any] | None] = loop.create_future()
    left = len(tasks)

    def finished(task: asyncio.Future[Any]) -> None:
        nonlocal left
        left -= 1
        if first.done():
            return
        if task.cancelled() or task.exception() is not None:
            first.set_result(task)
        elif left == 0:
            first.set_result(None)

    for task in tasks:
        task.add_done_callback(finished)
    try:
        failed = await first
    except BaseException:  # this task was cancelled: so are the entries
        await cancel_and_wait(tasks)
        raise
    if failed is not None:
        await cancel_and_wait(tasks)
        failed.result()  # raises its exception (CancelledError if it was cancelled)
    messages = []
    for result in results:
        if type(result) is asyncio.Task or isinstance(result, asyncio.Future):
            result = result.result()
        if result is not None:
            messages.append(result)
    return messages


async def cancel_and_wait(tasks: list[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has finished; their errors are retrieved."""
    for task in tasks:
        task.cancel()
    pending = [task for task in tasks if not task.done()]
    interrupted: asyncio.CancelledError | None = None
    while pending:
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError as exc:  # cancelled again: they still must stop first
            interrupted = exc
        pending = [task for task in pending if not task.done()]
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: asyncio logs an error never retrieved
    if interrupted is not None:
        raise interrupted


async def _yield() -> None:
    await asyncio.sleep(0)


class Loop:
    """One call's loop: the program, its consumer and producer, and its context."""

    def __init__(
        self,
        init: Any,
        update: Any,
        view: Any,
        producer: Any,
        consumer: Any,
        ctx: Any,
        replay: Any,
    ) -> None:
        # the core Buffer and consumer behind producer and consumer, if any: their
        # puts need no await, their ticks run in the core (_aio_drain)
        if type(producer) is core.Buffer:
            buffer = producer
        elif type(producer) is Buffer:
            buffer = producer._buffer
        else:
            buffer = None
        self.program = core._Program(
            init, update, view, producer if buffer is None else buffer, replay
        )
        self.put = None if buffer is not None else producer.put  # None: the core puts
        self.consumer = consumer
        self.direct: Any
        if type(consumer) is core.BufferConsumer:
            self.direct = consumer
        elif type(consumer) is BufferConsumer:
            self.direct = consumer._consumer
        else:
            self.direct = None
        self.ctx = ctx
        # a batch's markers (docs/contract.md#batch): None in run
        self.end: Any = None
        self.fetch: Any = None
        self.fetcher: Any = None
        self.drained = False

    # Each step that may or may not have to wait returns None when it is done,
    # or the awaitable to await: a coroutine per step would cost a frame each,
    # most of what aio.aggregate adds to the work it runs.

    async def run(self) -> NoReturn:
        """Tick until an exception ends the loop (a batch: Drained)."""
        ctx = self.ctx
        if ctx.done:
            raise ctx.err.with_traceback(None)
        pending = self.finish(self.program._aio_start(ctx, self.direct))
        if pending is not None:
            await pending
        ticking = False  # a failure rolls back only inside a tick
        try:
            if self.direct is not None and self.put is None:
                drain = self.program._aio_drain
                direct = self.direct
                while True:
                    ticking = True
                    out = drain(direct, ctx, SLICE)
                    if out is _YIELD:
                        ticking = False
                        await _yield()
                        continue
                    if out is _EMPTY:
                        ticking = False
                        message = await next_message(direct, ctx)
                        ticking = True
                        await self.tick(message)
                    elif type(out) is _End:
                        message = await self.past_marker(out)  # raises Drained at the end
                        await self.tick(message)
                    else:
                        self.program._aio_put(ctx, await settle(out.results))
                        direct.commit()
                    ticking = False
            yield_at = _clock() + SLICE
            while True:
                if ctx.done:
                    raise ctx.err.with_traceback(None)
                ticking = True
                message = self.get()
                if message is not None and _awaitable(message):
                    message = await message
                await self.tick(message)
                ticking = False
                if _clock() >= yield_at:
                    await _yield()
                    yield_at = _clock() + SLICE
        except Drained:
            raise
        except BaseException:
            if ticking and not self.drained:
                await self.rollback()
            raise

    async def tick(self, message: Any) -> None:
        """A later tick, for a message read and not yet committed."""
        if type(message) is _End:
            message = await self.past_marker(message)
        pending = self.finish(self.program._aio_tick(self.ctx, message))
        if pending is not None:
            await pending
        pending = self.commit()
        if pending is not None:
            await pending

    def finish(self, out: Any) -> Any:
        """A tick's end past its entries: await them, then put their messages."""
        if out is None:
            return self.emit([])
        if type(out) is list:
            return self.emit(out)
        return self._finish_later(out.results)

    async def _finish_later(self, results: list[Any]) -> None:
        pending = self.emit(await settle(results))
        if pending is not None:
            await pending

    def emit(self, messages: list[Any] | tuple[Any, ...]) -> Any:
        """The producer's put."""
        if self.put is None:
            self.program._aio_put(self.ctx, messages)
            return None
        done = self.put(self.ctx, *messages)
        return done if done is not None and _awaitable(done) else None

    def get(self) -> Any:
        """The consumer's get: a message, or an awaitable of one."""
        if self.direct is not None:
            message = self.direct._aio_get(self.ctx, None)
            if message is _EMPTY:
                return next_message(self.direct, self.ctx)
            if message is not None and _awaitable(message):
                return _Ready(message)  # a message that is itself awaitable, as it is
            return message
        return self.consumer.get(self.ctx)

    def commit(self) -> Any:
        """The consumer's commit."""
        if self.direct is not None:
            self.direct.commit()
            return None
        done = self.consumer.commit()
        return done if done is not None and _awaitable(done) else None

    async def rollback(self) -> None:
        """Roll back, quietly: the tick's own error is the one to report."""
        try:
            done = self.consumer.rollback()
            if done is not None and _awaitable(done):
                await done
        except Exception:
            pass

    async def past_marker(self, marker: Any) -> Any:
        """A batch marker was read: commit it, then end the batch, fetch the next
        page, or read on; returns the next message that is not a marker.

        A marker of another batch (or any marker in run) is only committed.
        """
        after_end = False
        while True:
            try:
                pending = self.commit()
                if pending is not None:
                    await pending
            except BaseException:
                await self.rollback()
                raise
            if marker is self.end:
                if after_end:
                    self.drained = True
                    raise Drained
                pending = self.emit((marker,))  # behind everything commands produced meanwhile
                if pending is not None:
                    await pending
                after_end = True
            elif marker is self.fetch:
                pending = self.feed()  # everything ahead of it was processed
                if pending is not None:
                    await pending
            marker = self.get()
            if marker is not None and _awaitable(marker):
                marker = await marker
            if type(marker) is not _End:
                return marker

    def feed(self) -> Any:
        """feed="inline": fetch one page, put it, then the marker that says what
        next; returns None, or an awaitable when the fetcher or a put must be awaited."""
        ctx = self.ctx
        if ctx.done:  # between pages too: a fetcher that keeps saying more=True
            raise ctx.err.with_traceback(None)
        reply = self.fetcher(ctx)
        if _awaitable(reply):
            return self._feed_later(reply)
        messages, more = page(reply)
        marker = self.fetch if more else self.end  # before the put: a page is all or nothing
        pending = self.emit(messages)
        if pending is not None:
            return self._emit_later(pending, marker)
        return self.emit((marker,))

    async def _feed_later(self, reply: Any) -> None:
        messages, more = page(await reply)
        marker = self.fetch if more else self.end
        pending = self.emit(messages)
        if pending is not None:
            await pending
        pending = self.emit((marker,))
        if pending is not None:
            await pending

    async def _emit_later(self, pending: Any, marker: Any) -> None:
        await pending
        pending = self.emit((marker,))
        if pending is not None:
            await pending


class _Ready:
    """An awaitable of a message already read that is itself awaitable (a future
    sent as a message): awaiting it gives the message, not the future's result."""

    __slots__ = ("message",)

    def __init__(self, message: Any) -> None:
        self.message = message

    def __await__(self) -> Any:
        return self.message
        yield  # a generator: the function's await gives the message back at once


def page(reply: Any) -> tuple[list[Any] | tuple[Any, ...], bool]:
    """A fetcher's reply, checked: ``(messages, more)``, the messages a list or tuple."""
    if type(reply) is tuple and len(reply) == 2 and type(reply[0]) in (list, tuple):
        return reply
    messages, more = check.pair("fetcher", reply, "(messages, more)")
    return check.messages("fetcher", messages), more


def contexts(ctx: Any) -> tuple[Any, Any]:
    """The caller's context and the call's own, a child of it: a cancelled task
    ends the call's own, never the caller's. Without a caller's context, one
    fresh context is both (nobody else holds it)."""
    if ctx is None:
        own = core.Context()
        return own, own
    outer = core._context_arg(ctx)
    return outer, core.Context(outer)
