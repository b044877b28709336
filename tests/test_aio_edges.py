"""elmstate.aio's edges, each once a bug: aggregate's store and dehydrator get a
live context, attempt closes an async entry's awaitable with its tick, a put or
a ctx.cancel() from a signal handler wakes a waiting get, and a task cancelled
twice still outlives nothing it started — on both cores, under asyncio's loop
and uvloop."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import threading
import time
from typing import Any

import pytest
from _modes import complete

KINDS = ["asyncio", "uvloop"]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class ContextStore:
    """A store that honours its ctx, as §2 asks of blocking calls: an ended one raises."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def load(self, ctx: Any, key: str) -> bytes | None:
        if ctx.done:
            raise ctx.err
        return self.data.get(key)

    def store(self, ctx: Any, key: str, value: bytes) -> None:
        if ctx.done:
            raise ctx.err
        self.data[key] = value


@pytest.mark.parametrize("feed", ["thread", "inline"])
@pytest.mark.parametrize("given", [False, True])
def test_aggregate_stores_with_a_live_context(elm, kind, feed, given):
    store = ContextStore()
    store.data["k"] = b"10"
    seen = []

    def dehydrator(ctx, key, model):
        seen.append(ctx.done)
        return str(model).encode()

    def hydrator(ctx, key, value):
        return int(value), None

    async def main():
        buf = elm.aio.Buffer()
        kwargs: dict[str, Any] = {"feed": feed}
        if given:
            kwargs["ctx"] = caller = elm.Context()
        model = await elm.aio.aggregate(
            lambda: (0, None),
            lambda m: lambda n: (n + m, None),
            lambda n: None,
            buf,
            buf.new_consumer(),
            lambda ctx: ([1, 2, 3], False),
            store,
            hydrator,
            dehydrator,
            "k",
            **kwargs,
        )
        if given:
            assert not caller.done  # the caller's context is never ended
        return model

    assert complete(kind, main()) == 16
    assert store.data["k"] == b"16"
    assert seen == [False]


def test_attempt_closes_an_async_entrys_awaitable_when_its_tick_fails(elm, kind):
    unraisable: list[str] = []

    async def work():
        return "w"

    def boom():
        raise ValueError("boom")

    def update(message):
        return lambda model: (model, [elm.attempt(work, repr), boom])

    async def main():
        buf = elm.aio.Buffer()
        buf.put(None, "go")
        first = [elm.attempt(work, repr), boom]
        with pytest.raises(ValueError, match="boom"):  # the first tick
            await elm.aio.run(lambda: (0, first), update, lambda m: None, buf, buf.new_consumer())
        with pytest.raises(ValueError, match="boom"):  # a later one
            await elm.aio.run(lambda: (0, None), update, lambda m: None, buf, buf.new_consumer())

    hook, sys.unraisablehook = sys.unraisablehook, lambda u: unraisable.append(repr(u.exc_value))
    try:
        complete(kind, main())
        gc.collect()
    finally:
        sys.unraisablehook = hook
    assert unraisable == []


def test_attempt_of_an_async_entry_still_catches(elm, kind):
    async def fails():
        raise KeyError("k")

    async def fine():
        return "ok"

    async def main():
        assert await elm.attempt(fails, lambda exc: ("error", type(exc).__name__))() == (
            "error",
            "KeyError",
        )
        assert await elm.attempt(fine, repr)() == "ok"

    complete(kind, main())


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")
@pytest.mark.parametrize("how", ["put", "cancel"])
def test_a_signal_handler_wakes_a_waiting_get(elm, kind, how):
    # A Python signal handler runs on the event loop's thread, while the loop
    # waits in select: a wake-up that does not write to the loop's self-pipe
    # is not seen until something else wakes the loop.
    buf = elm.aio.Buffer()
    ctx = elm.Context()

    def handler(signum: int, frame: Any) -> None:
        if how == "put":
            buf.put(None, "from a signal")
        else:
            ctx.cancel()

    async def main():
        consumer = buf.new_consumer()
        timer = threading.Timer(0.05, os.kill, args=(os.getpid(), signal.SIGUSR1))
        started = time.monotonic()
        timer.start()
        try:
            if how == "put":
                result = await asyncio.wait_for(consumer.get(), 5.0)
            else:
                with pytest.raises(elm.Canceled):
                    await asyncio.wait_for(
                        elm.aio.run(
                            lambda: (0, None),
                            lambda m: None,
                            lambda m: None,
                            buf,
                            consumer,
                            ctx=ctx,
                        ),
                        5.0,
                    )
                result = "cancelled"
        finally:
            timer.join()
        # without the self-pipe, only wait_for's timer would have woken the loop
        assert time.monotonic() - started < 2.0
        return result

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        result = complete(kind, main())
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert result == ("from a signal" if how == "put" else "cancelled")


@pytest.mark.parametrize("where", ["entry", "feeder"])
def test_cancelled_twice_no_task_outlives_the_call(elm, kind, where):
    # The second cancel comes while a command entry (or the batch's fetcher) is
    # still cleaning up after the first: the mode waits for it all the same.
    state: dict[str, str] = {}

    async def slow_to_stop():
        try:
            await asyncio.sleep(10)
        finally:
            state["cleanup"] = "started"
            await asyncio.sleep(0.05)
            state["cleanup"] = "done"

    async def fetcher(ctx):
        await slow_to_stop()
        return [], False

    async def main():
        buf = elm.aio.Buffer()
        if where == "entry":
            call = elm.aio.run(
                lambda: (0, [slow_to_stop]), lambda m: None, lambda m: None, buf, buf.new_consumer()
            )
        else:
            call = elm.aio.batch(
                lambda: (0, None), lambda m: None, lambda m: None, buf, buf.new_consumer(), fetcher
            )
        task = asyncio.ensure_future(call)
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert state["cleanup"] == "done"
        assert asyncio.all_tasks() == {asyncio.current_task()}

    complete(kind, main())
