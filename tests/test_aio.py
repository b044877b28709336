"""elmstate.aio (docs/asyncio.md): aio.Buffer, async command entries, what stays
synchronous, fairness, ctx and the caller's errors — on both cores, under
asyncio's loop and uvloop. The shared rules of the three modes are the
behavioural tests of run, batch and aggregate, which run through elmstate.aio
too (tests/_modes.py); cancellation is in test_aio_cancel.py."""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import pickle
import threading
import time
from typing import Any

import pytest
from _helpers import SAFETY
from _modes import complete
from _recording import Stop

KINDS = ["asyncio", "uvloop"]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def counter_program(elm: Any):
    """init 0; update adds the message; the message 0 stops the loop (raises Stop)."""

    def init():
        return 0, None

    def update(message):
        if message == 0:
            raise Stop
        return lambda model: (model + message, None)

    return init, update


# --------------------------------------------------------------------------- aio.Buffer


def test_get_does_not_suspend_while_a_message_is_there(elm):
    buf = elm.aio.Buffer()
    consumer = buf.new_consumer()
    buf.put(None, "a", "b")
    for expected in ("a", "b"):
        coro = consumer.get()
        with pytest.raises(StopIteration) as done:
            coro.send(None)  # one step: it returned without yielding to a loop
        assert done.value.value == expected
    consumer.commit()
    assert len(buf) == 2 or len(buf) == 0  # the cleaner may have run
    consumer.close()
    buf.close()


def test_buffer_rules(elm, kind):
    async def main():
        buf = elm.aio.Buffer()
        with buf.new_consumer() as first:
            buf.put(None, 1, 2, 3)
            second = buf.new_consumer()
            assert [await first.get() for _ in range(2)] == [1, 2]
            first.rollback()  # back to the last commit
            assert [await first.get() for _ in range(3)] == [1, 2, 3]
            first.commit()
            assert [await second.get() for _ in range(3)] == [1, 2, 3]  # broadcast
            assert buf.diff(first) == 0 and buf.diff(second) == 0
            with pytest.raises(elm.NothingUncommitted):
                first.commit()
            with pytest.raises(ValueError):
                buf.diff(elm.Buffer().new_consumer())
            assert buf.slice() == [1, 2, 3] or buf.slice() == []  # the cleaner may have run
            second.close()
            with pytest.raises(elm.Closed):
                await second.get()
        buf.close()
        with pytest.raises(elm.Closed):
            buf.put(None, 4)

    complete(kind, main())


def test_buffer_refuses_copies_and_direct_consumers(elm):
    buf = elm.aio.Buffer()
    consumer = buf.new_consumer()
    for value in (buf, consumer):
        with pytest.raises(TypeError):
            pickle.dumps(value)
    with pytest.raises(TypeError, match="new_consumer"):
        elm.aio.BufferConsumer(object(), consumer)
    assert elm.aio.Buffer[int] is not None


def test_a_put_from_another_thread_wakes_an_awaiting_get(elm, kind):
    async def main():
        buf = elm.aio.Buffer()
        consumer = buf.new_consumer()
        threading.Timer(0.05, buf.put, (None, "late")).start()
        start = time.monotonic()
        assert await asyncio.wait_for(consumer.get(), SAFETY) == "late"
        assert time.monotonic() - start >= 0.04

    complete(kind, main())


def test_close_from_another_thread_wakes_an_awaiting_get(elm, kind):
    async def main():
        buf = elm.aio.Buffer()
        consumer = buf.new_consumer()
        threading.Timer(0.02, buf.close).start()
        with pytest.raises(elm.Closed):
            await asyncio.wait_for(consumer.get(), SAFETY)

    complete(kind, main())


def test_an_ending_ctx_wakes_an_awaiting_get_within_milliseconds(elm, kind):
    async def main():
        buf = elm.aio.Buffer()
        consumer = buf.new_consumer()
        best = float("inf")
        for _ in range(5):  # best of five: a noisy machine may stall one
            ctx = elm.Context()
            ended = []
            threading.Timer(
                0.02, lambda c=ctx, e=ended: (e.append(time.monotonic()), c.cancel())
            ).start()
            with pytest.raises(elm.Canceled) as info:
                await asyncio.wait_for(consumer.get(ctx), SAFETY)
            assert info.value is ctx.err
            best = min(best, time.monotonic() - ended[0])
        assert best < 0.05

    complete(kind, main())


def test_a_cancelled_get_leaves_no_waker_behind(elm, kind, monkeypatch):
    wake = elm.aio._buffer._Wake
    calls = []
    original = wake.__call__

    def counted(self):
        calls.append(self)
        original(self)

    monkeypatch.setattr(wake, "__call__", counted)

    async def main():
        buf = elm.aio.Buffer()
        consumer = buf.new_consumer()
        for _ in range(100):
            task = asyncio.ensure_future(consumer.get())
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        buf.put(None, "x")  # would call every waker a cancelled get left behind
        assert calls == []
        assert await consumer.get() == "x"
        task = asyncio.ensure_future(consumer.get())
        await asyncio.sleep(0)
        buf.put(None, "y")  # the one waiting get: one waker called
        assert await task == "y"
        assert len(calls) == 1

    complete(kind, main())


# --------------------------------------------------------------------------- the modes


def test_run_reads_a_sync_buffer_without_blocking_the_loop(elm, kind):
    """An elmstate.Buffer is read with waits on the event loop: other tasks go on."""
    init, update = counter_program(elm)
    ticks = []

    async def main():
        buf = elm.Buffer()
        consumer = buf.new_consumer()

        async def feeder():
            for i in range(1, 51):
                await asyncio.sleep(0.001)
                buf.put(None, i)
                ticks.append(i)
            buf.put(None, 0)

        task = asyncio.ensure_future(feeder())
        views = []
        with pytest.raises(Stop):
            await elm.aio.run(init, update, views.append, buf, consumer)
        await task
        return views[-1]

    assert complete(kind, main()) == sum(range(51))
    assert ticks == list(range(1, 51))


def test_a_million_messages_from_a_producer_thread(elm, kind):
    n = 1_000_000
    seen = []

    def update(message):
        if message == n:
            raise Stop
        return None  # ignored: only the order is checked, in view below

    async def main():
        buf = elm.aio.Buffer()
        consumer = buf.new_consumer()
        last = [0]
        out_of_order = []

        def view(model):
            pass

        def check(message):
            if message != last[0] + 1:
                out_of_order.append((last[0], message))
            last[0] = message
            return update(message)

        def produce():
            put = buf.put
            for start in range(1, n + 1, 1000):
                put(None, *range(start, min(start + 1000, n + 1)))
                if start % 50_000 == 1:
                    time.sleep(0.001)  # let the loop catch up now and then

        producer = threading.Thread(target=produce)
        producer.start()
        try:
            with pytest.raises(Stop):
                await elm.aio.run(lambda: (0, None), check, view, buf, consumer)
        finally:
            producer.join()
        seen.append(last[0])
        return out_of_order

    assert complete(kind, main()) == []
    assert seen == [n]


def test_async_commands_run_concurrently_and_keep_entry_order(elm, kind):
    order = []

    async def first(release):
        await release.wait()  # set by the second: only concurrently can this end
        order.append("first")
        return "from first"

    async def second(release):
        await asyncio.sleep(0)
        release.set()
        order.append("second")
        return "from second"

    async def main():
        release = asyncio.Event()
        buf = elm.aio.Buffer()
        consumer = buf.new_consumer()
        views = []

        def init():
            return [], [
                lambda: first(release),
                lambda: "plain",
                lambda: None,
                lambda: second(release),
            ]

        def update(message):
            if message == "stop":
                raise Stop
            return lambda model: (model + [message], None)

        run = asyncio.ensure_future(elm.aio.run(init, update, views.append, buf, consumer))
        while not views or len(views[-1]) < 3:
            await asyncio.sleep(0.001)
        buf.put(None, "stop")
        with pytest.raises(Stop):
            await run
        return views[-1]

    assert complete(kind, main()) == ["from first", "plain", "from second"]
    assert order == ["second", "first"]


def test_a_failing_awaitable_cancels_its_siblings_and_rolls_back(elm, kind):
    boom = RuntimeError("entry failed")
    cancelled = []

    async def slow():
        try:
            await asyncio.sleep(SAFETY)
        except asyncio.CancelledError:
            cancelled.append("slow")
            raise
        return "never"

    async def failing():
        await asyncio.sleep(0)
        raise boom

    async def main():
        buf = elm.aio.Buffer()
        consumer = buf.new_consumer()
        buf.put(None, "go")

        def update(message):
            return lambda model: (model, [slow, failing])

        with pytest.raises(RuntimeError) as info:
            await elm.aio.run(lambda: (0, None), update, lambda m: None, buf, consumer)
        assert info.value is boom
        assert await consumer.get() == "go"  # rolled back: read again
        assert len(buf) == 1  # nothing was put

    complete(kind, main())
    assert cancelled == ["slow"]


def test_the_first_failure_in_completion_order_wins(elm, kind):
    early, late = RuntimeError("early"), RuntimeError("late")

    async def fails_late():
        await asyncio.sleep(0.02)
        raise late

    async def fails_early():
        raise early

    async def main():
        buf = elm.aio.Buffer()
        consumer = buf.new_consumer()
        with pytest.raises(RuntimeError) as info:
            await elm.aio.run(
                lambda: (0, [fails_late, fails_early]),
                lambda m: None,
                lambda m: None,
                buf,
                consumer,
            )
        return info.value

    assert complete(kind, main()) is early


def test_a_plain_entry_that_raises_closes_the_awaitables_already_returned(elm, kind):
    boom = RuntimeError("plain entry failed")
    made = []

    async def never_awaited():
        return "x"

    def make():
        coro = never_awaited()
        made.append(coro)
        return coro

    def plain():
        raise boom

    async def main():
        buf = elm.aio.Buffer()
        consumer = buf.new_consumer()
        buf.put(None, "go")
        with pytest.raises(RuntimeError) as info:
            await elm.aio.run(
                lambda: (0, None),
                lambda m: lambda model: (model, [make, plain]),
                lambda m: None,
                buf,
                consumer,
            )
        assert info.value is boom

    complete(kind, main())
    assert inspect.getcoroutinestate(made[0]) == inspect.CORO_CLOSED
    gc.collect()  # a coroutine never awaited would warn here (warnings are errors)


def test_async_protocol_methods_are_awaited(elm, kind):
    log = []

    class AsyncQueue:
        def __init__(self, script):
            self.script = list(script)

        async def get(self, ctx):
            await asyncio.sleep(0)
            log.append("get")
            if not self.script:
                raise Stop
            return self.script.pop(0)

        async def put(self, ctx, *messages):
            await asyncio.sleep(0)
            log.append(("put", messages))

        async def commit(self):
            await asyncio.sleep(0)
            log.append("commit")

        async def rollback(self):
            await asyncio.sleep(0)
            log.append("rollback")

    async def main():
        q = AsyncQueue([1, 2])
        with pytest.raises(Stop):
            await elm.aio.run(
                lambda: (0, elm.new_command("hi")),
                lambda m: lambda model: (model + m, None),
                lambda m: log.append(("view", m)),
                q,
                q,
            )

    complete(kind, main())
    assert log == [
        ("view", 0),
        ("put", ("hi",)),
        "get",
        ("view", 1),
        ("put", ()),
        "commit",
        "get",
        ("view", 3),
        ("put", ()),
        "commit",
        "get",
        "rollback",
    ]


@pytest.mark.parametrize("feed", ["thread", "inline"])
def test_an_async_fetcher_in_both_feeds(elm, kind, feed):
    pages = [[1, 2], [3], [4, 5]]

    async def fetcher(ctx):
        await asyncio.sleep(0)
        page = pages.pop(0)
        return page, bool(pages)

    async def main():
        buf = elm.aio.Buffer()
        return await elm.aio.batch(
            lambda: (0, None),
            lambda m: lambda model: (model + m, None),
            lambda m: None,
            buf,
            buf.new_consumer(),
            fetcher,
            feed=feed,
        )

    assert complete(kind, main()) == 15


def test_the_callers_ctx_error_is_raised_from_a_waiting_get(elm, kind):
    async def main():
        ctx = elm.Context()
        buf = elm.aio.Buffer()
        threading.Timer(0.02, ctx.cancel).start()
        with pytest.raises(elm.Canceled) as info:
            await elm.aio.run(
                lambda: (0, None), lambda m: None, lambda m: None, buf, buf.new_consumer(), ctx=ctx
            )
        return info.value is ctx.err

    assert complete(kind, main())


def test_a_deadline_raises_deadline_exceeded(elm, kind):
    async def main():
        ctx = elm.Context(timeout=0.02)
        buf = elm.aio.Buffer()
        with pytest.raises(elm.DeadlineExceeded) as info:
            await elm.aio.batch(
                lambda: (0, None),
                lambda m: None,
                lambda m: None,
                buf,
                buf.new_consumer(),
                lambda c: ([], True),
                ctx=ctx,
            )
        return info.value is ctx.err

    assert complete(kind, main())


def test_other_tasks_run_while_the_loop_is_busy(elm, kind):
    """Fairness (docs/asyncio.md#fairness): a long pre-filled buffer does not keep
    other tasks of the loop waiting for more than about a millisecond at a time."""
    n = 300_000 if elm.compiled else 60_000
    init, update = counter_program(elm)

    async def main():
        buf = elm.aio.Buffer()
        consumer = buf.new_consumer()
        buf.put(None, *([1] * n), 0)
        beats = []
        stop = asyncio.Event()

        async def heartbeat():
            while not stop.is_set():
                beats.append(time.monotonic())
                await asyncio.sleep(0)

        beat = asyncio.ensure_future(heartbeat())
        await asyncio.sleep(0)
        start = time.monotonic()
        with pytest.raises(Stop):
            await elm.aio.run(init, update, lambda m: None, buf, consumer)
        took = time.monotonic() - start
        stop.set()
        await beat
        return took, [b for b in beats if b >= start]

    took, beats = complete(kind, main())
    # about one beat per millisecond of work; a fifth of that survives a noisy machine
    assert len(beats) >= took / 0.005, (len(beats), took)


# --------------------------------------------------------------------------- what stays synchronous


async def async_fn(*args):
    return None


class AsyncCallable:
    async def __call__(self, *args):
        return None


ASYNC_SHAPES = {
    "async def": async_fn,
    "partial": functools.partial(async_fn, 1),
    "async __call__": AsyncCallable(),
}


@pytest.mark.parametrize("shape", list(ASYNC_SHAPES))
@pytest.mark.parametrize("name", ["init", "update", "view", "replay"])
def test_a_coroutine_function_for_a_sync_callback_is_refused_before_anything_runs(
    elm, kind, name, shape
):
    called = []
    args = {
        "init": lambda: called.append("init") or (0, None),
        "update": lambda m: called.append("update"),
        "view": lambda m: called.append("view"),
        "replay": None,
    }
    args[name] = ASYNC_SHAPES[shape]

    async def main():
        buf = elm.aio.Buffer()
        consumer = buf.new_consumer()
        buf.put(None, 1)
        for mode in ("run", "batch", "aggregate"):
            call = {
                "run": lambda: elm.aio.run(
                    args["init"],
                    args["update"],
                    args["view"],
                    buf,
                    consumer,
                    replay=args["replay"],
                ),
                "batch": lambda: elm.aio.batch(
                    args["init"],
                    args["update"],
                    args["view"],
                    buf,
                    consumer,
                    lambda c: ([], False),
                    replay=args["replay"],
                ),
                "aggregate": lambda: elm.aio.aggregate(
                    args["init"],
                    args["update"],
                    args["view"],
                    buf,
                    consumer,
                    lambda c: ([], False),
                    elm.MemoryStore(),
                    lambda *a: (0, None),
                    lambda *a: b"",
                    "k",
                    replay=args["replay"],
                ),
            }[mode]
            with pytest.raises(TypeError, match=rf"^{name} must be a plain function"):
                await call()
        assert len(buf) == 1

    complete(kind, main())
    assert called == []


@pytest.mark.parametrize("name", ["hydrator", "dehydrator"])
def test_an_async_hydrator_or_dehydrator_is_refused_before_anything_runs(elm, kind, name):
    store = elm.MemoryStore()
    store.store(None, "k", b"1")
    fns = {"hydrator": lambda ctx, k, v: (int(v), None), "dehydrator": lambda ctx, k, m: b"2"}
    fns[name] = async_fn

    async def main():
        buf = elm.aio.Buffer()
        with pytest.raises(TypeError, match=rf"^{name} must be a plain function"):
            await elm.aio.aggregate(
                lambda: (0, None),
                lambda m: None,
                lambda m: None,
                buf,
                buf.new_consumer(),
                lambda c: ([], False),
                store,
                fns["hydrator"],
                fns["dehydrator"],
                "k",
            )

    complete(kind, main())
    assert store.load(None, "k") == b"1"


def refuse_at_tick(elm, kind, *, update, view=lambda m: None, init=lambda: (0, None), **kwargs):
    async def main():
        buf = elm.aio.Buffer()
        consumer = buf.new_consumer()
        buf.put(None, "go")
        with pytest.raises(TypeError) as info:
            await elm.aio.run(init, update, view, buf, consumer, **kwargs)
        assert await consumer.get() == "go"  # rolled back
        return str(info.value)

    message = complete(kind, main())
    gc.collect()  # an awaitable left un-awaited would warn here (warnings are errors)
    return message


def test_an_update_returning_an_awaitable_is_refused_at_its_tick(elm, kind):
    message = refuse_at_tick(elm, kind, update=lambda m: async_fn())
    assert message.startswith("update returned an awaitable (coroutine)")


def test_an_async_transform_is_refused_at_its_tick(elm, kind):
    async def transform(model):
        return model + 1, None

    message = refuse_at_tick(elm, kind, update=lambda m: transform)
    assert message.startswith("transform returned an awaitable (coroutine)")


def test_a_view_returning_an_awaitable_is_refused_at_its_tick(elm, kind):
    views = []

    def view(model):
        views.append(model)
        if len(views) > 1:
            return async_fn()
        return None

    message = refuse_at_tick(elm, kind, update=lambda m: lambda model: (1, None), view=view)
    assert message.startswith("view returned an awaitable (coroutine)")


def test_init_and_replay_returning_awaitables_are_refused(elm, kind):
    async def main(**kwargs):
        buf = elm.aio.Buffer()
        with pytest.raises(TypeError) as info:
            await elm.aio.run(
                kwargs.get("init", lambda: (0, None)),
                lambda m: None,
                lambda m: None,
                buf,
                buf.new_consumer(),
                replay=kwargs.get("replay"),
            )
        return str(info.value)

    assert complete(kind, main(init=lambda: async_fn())).startswith("init returned an awaitable")
    assert complete(kind, main(replay=lambda: async_fn())).startswith(
        "replay returned an awaitable"
    )
    gc.collect()


def test_a_sync_aggregate_refuses_an_awaitable_from_the_dehydrator(elm):
    buf = elm.Buffer()
    with pytest.raises(TypeError, match="^dehydrator returned an awaitable"):
        elm.aggregate(
            lambda: (0, None),
            lambda m: None,
            lambda m: None,
            buf,
            buf.new_consumer(),
            lambda c: ([], False),
            elm.MemoryStore(),
            lambda *a: (0, None),
            lambda *a: async_fn(),
            "k",
        )
    gc.collect()


def test_protocol_methods_get_the_calls_own_child_context(elm, kind):
    """Cancelling the awaiting task ends the call's own context, so every protocol
    method and the fetcher get a child of the caller's (docs/asyncio.md)."""
    seen = []

    async def main():
        ctx = elm.Context()
        buf = elm.aio.Buffer()

        class Watching:
            def __init__(self, consumer):
                self.consumer = consumer

            async def get(self, c):
                seen.append(c)
                return await self.consumer.get(c)

            def commit(self):
                self.consumer.commit()

            def rollback(self):
                self.consumer.rollback()

        def fetcher(c):
            seen.append(c)
            return [1], False

        for feed in ("thread", "inline"):
            await elm.aio.batch(
                lambda: (0, None),
                lambda m: None,
                lambda m: None,
                buf,
                Watching(buf.new_consumer()),
                fetcher,
                ctx=ctx,
                feed=feed,
            )
        assert not ctx.done
        assert seen and all(c is not ctx and c.done for c in seen)  # ended on return
        ctx.cancel()
        return seen

    complete(kind, main())


def test_attempt_catches_what_an_async_entry_raises(elm, kind):
    async def failing():
        await asyncio.sleep(0)
        raise OSError("refused")

    async def fine():
        await asyncio.sleep(0)
        return "ok"

    async def main():
        buf = elm.aio.Buffer()
        consumer = buf.new_consumer()
        views = []

        def init():
            on_error = lambda exc: ("failed", type(exc).__name__)  # noqa: E731
            return [], [elm.attempt(failing, on_error), elm.attempt(fine, on_error)]

        def update(message):
            if message == "stop":
                raise Stop
            return lambda model: (model + [message], None)

        task = asyncio.ensure_future(elm.aio.run(init, update, views.append, buf, consumer))
        while len(views[-1] if views else ()) < 2:
            await asyncio.sleep(0.001)
        buf.put(None, "stop")
        with pytest.raises(Stop):
            await task
        return views[-1]

    assert complete(kind, main()) == [("failed", "OSError"), "ok"]


@pytest.mark.parametrize("where", ["update", "transform", "view", "init", "replay"])
def test_the_synchronous_modes_refuse_an_awaitable_too(elm, where):
    """run never stores a coroutine as the model, nor drops one un-awaited."""

    def update(message):
        if where == "update":
            return async_fn()
        if where == "transform":
            return lambda model: async_fn()
        return lambda model: (model + 1, None)

    def view(model):
        return async_fn() if where == "view" else None

    init = (lambda: async_fn()) if where == "init" else (lambda: (0, None))
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.put(None, 1)
    replay = (lambda: async_fn()) if where == "replay" else None
    with pytest.raises(TypeError, match=rf"^{where} returned an awaitable \(coroutine\)"):
        elm.run(init, update, view, buf, consumer, replay=replay)
    gc.collect()  # closed: no warning that a coroutine was never awaited


def test_the_async_classes_match_the_async_protocols(elm, tmp_path):
    typing = elm.typing
    buf = elm.aio.Buffer()
    consumer = buf.new_consumer()
    assert isinstance(buf, typing.Producer)
    assert isinstance(consumer, typing.AsyncConsumer)
    store = elm.stores.sqlite.AsyncSQLiteStore(tmp_path / "s.sqlite3")  # opens on first use
    assert isinstance(store, typing.AsyncStore)
    assert not isinstance(object(), typing.AsyncConsumer)
