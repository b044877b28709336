"""AsyncStreamProducer and AsyncStreamConsumer: StreamProducer's and
StreamConsumer's rules over a ``redis.asyncio`` client (docs/redis.md), against
this machine's real Redis (tests/_stores.py).

Every test runs with both cores (``elm``: its Context and markers are that
core's) and on both event loops (``run``: asyncio's and uvloop's).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest
import redis
import redis.asyncio
from _helpers import SAFETY
from _modes import complete
from _stores import REDIS, redis_admin, require, tag

BLOCK = 0.2  # seconds: short waits keep the tests that wait for a ctx quick


LOOPS = ["asyncio", "uvloop"]
Runner = Callable[[Callable[[], Coroutine[Any, Any, Any]]], Any]


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Runner:
    """``run(main)``: ``main()`` to completion on a new event loop of each kind,
    which must hold no task afterwards (tests/_modes.py)."""
    return partial(_complete, str(request.param))


def _complete(kind: str, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return complete(kind, main())


@pytest.fixture
def stream(tmp_path: Path) -> Iterator[str]:
    """A stream name of this test's own, absent before and deleted after."""
    require("redis")
    name = f"elmstate-test:{tag(tmp_path)}:stream"
    with redis_admin() as admin:
        admin.delete(name)
        try:
            yield name
        finally:
            admin.delete(name)


@asynccontextmanager
async def connected(**kwargs: Any) -> AsyncIterator[redis.asyncio.Redis]:
    """A ``redis.asyncio`` client of the test's own, closed afterwards."""
    client = redis.asyncio.Redis.from_url(REDIS, **{"socket_timeout": 5, **kwargs})
    try:
        yield client
    finally:
        await client.aclose()


async def drain(consumer: Any, elm: ModuleType, wait: float = 0.3) -> list[Any]:
    """Every message ``consumer`` hands out until none comes for ``wait`` seconds."""
    got = []
    while True:
        try:
            got.append(await consumer.get(elm.Context(timeout=wait)))
        except elm.DeadlineExceeded:
            return got


async def pending(client: redis.asyncio.Redis, stream: str, group: str = "g") -> int:
    return int((await client.xpending(stream, group))["pending"])


async def payloads(client: redis.asyncio.Redis, stream: str) -> list[bytes]:
    return [fields[b"payload"] for _, fields in await client.xrange(stream)]


def pair(elm: ModuleType, client: Any, stream: str, **kwargs: Any) -> tuple[Any, Any]:
    """A producer and a consumer ("c" in the group "g") of ``stream``."""
    producer = elm.redis.AsyncStreamProducer(client, stream)
    consumer = elm.redis.AsyncStreamConsumer(client, stream, "g", "c", **{"block": BLOCK, **kwargs})
    return producer, consumer


# --------------------------------------------------------------------------- delivery


def test_round_trip_in_order(elm: ModuleType, stream: str, run: Runner) -> None:
    """More messages than one read returns (a page is 100), JSON values of every kind."""
    messages = [*range(240), "text, ünïcode", {"a": [1, 2.5, None, True]}, [], None]

    async def main() -> None:
        async with connected() as client:
            producer, consumer = pair(elm, client, stream)
            for start in range(0, len(messages), 7):
                assert await producer.put(None, *messages[start : start + 7]) is None
            ctx = elm.Context(timeout=SAFETY)
            assert [await consumer.get(ctx) for _ in messages] == messages
            await consumer.commit()
            assert await pending(client, stream) == 0
            assert await client.xlen(stream) == len(messages)

    run(main)


def test_puts(elm: ModuleType, stream: str, run: Runner) -> None:
    """An empty put sends nothing; a value that cannot be encoded appends none of
    the others; encode must return bytes; maxlen trims (about)."""

    async def main() -> None:
        async with connected() as client:
            producer = elm.redis.AsyncStreamProducer(client, stream)
            await producer.put(None)
            await producer.put(elm.Context())
            assert await client.exists(stream) == 0
            with pytest.raises(TypeError, match="not JSON serializable"):
                await producer.put(None, 1, object(), 3)
            assert await client.exists(stream) == 0
            await producer.put(None, 1, 2, 3)
            assert await payloads(client, stream) == [b"1", b"2", b"3"]
            raw = elm.redis.AsyncStreamProducer(client, stream, encode=str)
            with pytest.raises(TypeError, match="encode must return bytes, got str"):
                await raw.put(None, 4)
            trimmed = elm.redis.AsyncStreamProducer(client, stream, maxlen=10)
            await trimmed.put(None, *range(1000))
            assert 10 <= await client.xlen(stream) <= 10 + 2 * 100
            newest = [json.loads(p) for p in (await payloads(client, stream))[-3:]]
            assert newest == [997, 998, 999]

    run(main)


def test_the_group_is_created_by_the_first_get(elm: ModuleType, stream: str, run: Runner) -> None:
    """A constructor cannot wait for Redis: the first get creates the group, reading
    the stream from its start, so entries put before it are read; an existing
    group (BUSYGROUP) is no error."""

    async def main() -> None:
        async with connected() as client:
            producer, consumer = pair(elm, client, stream)
            assert await client.exists(stream) == 0
            with pytest.raises(elm.NothingUncommitted):
                await consumer.commit()
            await producer.put(None, "before the group")
            assert await consumer.get(elm.Context(timeout=SAFETY)) == "before the group"
            assert [g["name"] for g in await client.xinfo_groups(stream)] == [b"g"]
            again = elm.redis.AsyncStreamConsumer(client, stream, "g", "other", block=BLOCK)
            await producer.put(None, "next")
            assert await again.get(elm.Context(timeout=SAFETY)) == "next"

    run(main)


def test_custom_codecs_and_markers(elm: ModuleType, stream: str, run: Runner) -> None:
    """``decode`` gets the very bytes ``encode`` made; a batch's marker comes back
    as the very object, and is forgotten once committed."""
    markers = elm.redis._streams._markers

    async def main() -> None:
        async with connected() as client:
            producer = elm.redis.AsyncStreamProducer(client, stream, encode=lambda m: m.encode())
            consumer = elm.redis.AsyncStreamConsumer(
                client, stream, "g", "c", decode=bytes.decode, block=BLOCK
            )
            marker = elm.core._End()
            before = len(markers)
            await producer.put(None, "héllo", marker, "wörld")
            ctx = elm.Context(timeout=SAFETY)
            assert await consumer.get(ctx) == "héllo"
            assert await consumer.get(ctx) is marker
            assert await consumer.get(ctx) == "wörld"
            await consumer.commit()
            assert len(markers) == before

    run(main)


# --------------------------------------------------------------------------- commit, rollback


def test_commit_and_rollback(elm: ModuleType, stream: str, run: Runner) -> None:
    async def main() -> None:
        async with connected() as client:
            producer, consumer = pair(elm, client, stream)
            await producer.put(None, "a", "b", "c", "d")
            ctx = elm.Context(timeout=SAFETY)
            assert await consumer.get(ctx) == "a"
            await consumer.commit()
            assert await pending(client, stream) == 3  # the page was delivered to "c"
            assert [await consumer.get(ctx), await consumer.get(ctx)] == ["b", "c"]
            await consumer.rollback()
            await producer.put(None, "e")
            assert [await consumer.get(ctx) for _ in range(4)] == ["b", "c", "d", "e"]
            await consumer.rollback()
            assert [await consumer.get(ctx) for _ in range(4)] == ["b", "c", "d", "e"]
            await consumer.commit()
            assert await pending(client, stream) == 0

    run(main)


def test_nothing_uncommitted(elm: ModuleType, stream: str, run: Runner) -> None:
    """As a Buffer consumer: before any get, and after a commit or a rollback."""

    async def main() -> None:
        async with connected() as client:
            producer, consumer = pair(elm, client, stream)

            async def neither() -> None:
                for method in (consumer.commit, consumer.rollback):
                    with pytest.raises(elm.NothingUncommitted, match="nothing uncommitted"):
                        await method()

            await neither()
            await producer.put(None, "a")
            ctx = elm.Context(timeout=SAFETY)
            await consumer.get(ctx)
            await consumer.rollback()
            await neither()
            await consumer.get(ctx)
            await consumer.commit()
            await neither()
            assert await pending(client, stream) == 0

    run(main)


def test_own_pending_entries_come_first_after_a_restart(
    elm: ModuleType, stream: str, run: Runner
) -> None:
    """A consumer of the same name gets what the last one read and never
    acknowledged, in order, over several pages, before anything new; another
    consumer of the group never sees them."""

    async def main() -> None:
        async with connected() as client:
            producer, crashed = pair(elm, client, stream)
            await producer.put(None, *range(250))
            ctx = elm.Context(timeout=SAFETY)
            assert [await crashed.get(ctx) for _ in range(5)] == list(range(5))
            await crashed.commit()
            assert await drain(crashed, elm) == list(range(5, 250))  # never acknowledged
            await producer.put(None, "new")
            other = elm.redis.AsyncStreamConsumer(client, stream, "g", "other", block=BLOCK)
            assert await drain(other, elm) == ["new"]
            await other.rollback()
            restarted = elm.redis.AsyncStreamConsumer(client, stream, "g", "c", block=BLOCK)
            await producer.put(None, "newer")
            assert await drain(restarted, elm) == [*range(5, 250), "newer"]
            await restarted.commit()
            detail = await client.xpending(stream, "g")
            assert detail["consumers"] == [{"name": b"other", "pending": 1}]

    run(main)


def test_bad_entries(elm: ModuleType, stream: str, run: Runner) -> None:
    """A payload that is not JSON (a pickle, say: nothing is unpickled) or an
    entry without one: ValueError naming the stream and the entry, which stays
    pending; rollback serves it again, commit skips it."""
    import pickle

    async def main() -> None:
        async with connected() as client:
            producer, consumer = pair(elm, client, stream)
            bad = (await client.xadd(stream, {b"payload": pickle.dumps(("a", 1))})).decode()
            odd = (await client.xadd(stream, {b"body": b"1"})).decode()
            await producer.put(None, "fine")
            ctx = elm.Context(timeout=SAFETY)
            for _ in range(2):
                with pytest.raises(ValueError, match=rf"stream '{stream}', entry {bad}: .*decoded"):
                    await consumer.get(ctx)
                await consumer.rollback()
            with pytest.raises(ValueError, match=bad):
                await consumer.get(ctx)
            await consumer.commit()
            with pytest.raises(ValueError, match=rf"entry {odd}: no 'payload' field"):
                await consumer.get(ctx)
            await consumer.commit()
            assert await consumer.get(ctx) == "fine"

    run(main)


# --------------------------------------------------------------------------- contexts


def _blocked_reads(name: str) -> int:
    """How many connections named ``name`` wait in XREADGROUP on the server."""
    with redis_admin() as admin:
        return sum(
            1
            for c in admin.client_list()
            if c.get("name") == name and c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "")
        )


@pytest.mark.parametrize("ender", ["thread", "task", "timeout"])
def test_a_waiting_get_wakes_when_ctx_ends(
    elm: ModuleType, stream: str, tmp_path: Path, run: Runner, ender: str
) -> None:
    """However long ``block`` is, a waiting get raises ctx.err within milliseconds
    of ctx ending (cancelled on another thread, by another task, or by its
    timeout); the server-side wait is abandoned, and the consumer goes on."""
    name = f"elmstate-test-{tag(tmp_path)}"

    async def main() -> None:
        async with connected(client_name=name) as client:
            producer, consumer = pair(elm, client, stream, block=3.0)
            await producer.put(None, "first")
            assert await consumer.get(elm.Context(timeout=SAFETY)) == "first"
            await consumer.commit()
            ctx = elm.Context(timeout=0.3 if ender == "timeout" else SAFETY)
            loop = asyncio.get_running_loop()
            ended_at: list[float] = []

            def end() -> None:
                ended_at.append(loop.time())
                ctx.cancel()

            if ender == "thread":
                threading.Timer(0.3, end).start()
            elif ender == "task":
                loop.call_later(0.3, end)
            started = loop.time()
            with pytest.raises(elm.Canceled) as caught:
                await consumer.get(ctx)
            woke = loop.time()
            assert caught.value is ctx.err
            if ender == "timeout":
                assert isinstance(caught.value, elm.DeadlineExceeded)
                assert woke - started < 0.3 + 0.25
            else:
                assert woke - ended_at[0] < 0.25  # block is 3 s
            loop_now = loop.time()
            while _blocked_reads(name) and loop.time() - loop_now < SAFETY:
                await asyncio.sleep(0.01)
            assert _blocked_reads(name) == 0
            await producer.put(None, "after")
            assert await consumer.get(elm.Context(timeout=SAFETY)) == "after"
            await consumer.commit()
            assert await pending(client, stream) == 0

    run(main)


def test_an_ended_ctx_wins_over_a_ready_message(elm: ModuleType, stream: str, run: Runner) -> None:
    """As Buffer: get and put raise ctx.err at once, and put appends nothing."""

    async def main() -> None:
        async with connected() as client:
            producer, consumer = pair(elm, client, stream)
            await producer.put(None, "a")
            ended = elm.Context()
            ended.cancel()
            with pytest.raises(elm.Canceled):
                await consumer.get(ended)
            with pytest.raises(elm.Canceled):
                await producer.put(ended, "b")
            assert await client.xlen(stream) == 1
            assert await consumer.get(elm.Context(timeout=SAFETY)) == "a"

    run(main)


# --------------------------------------------------------------------------- cancellation


@pytest.mark.parametrize("with_ctx", [False, True])
def test_cancelling_a_waiting_get(
    elm: ModuleType, stream: str, run: Runner, with_ctx: bool
) -> None:
    """Cancelling the task of a waiting get: CancelledError, no task left behind,
    and what is put afterwards comes out of the next get."""

    async def main() -> None:
        async with connected() as client:
            producer, consumer = pair(elm, client, stream, block=3.0)
            ctx = elm.Context(timeout=SAFETY) if with_ctx else None
            waiting = asyncio.ensure_future(consumer.get(ctx))
            await asyncio.sleep(0.2)
            assert not waiting.done()
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert asyncio.all_tasks() == {asyncio.current_task()}
            with pytest.raises(elm.NothingUncommitted):
                await consumer.rollback()
            await producer.put(None, "a", "b")
            ctx = elm.Context(timeout=SAFETY)
            assert [await consumer.get(ctx), await consumer.get(ctx)] == ["a", "b"]
            await consumer.commit()
            assert await pending(client, stream) == 0

    run(main)


def test_entries_a_cancelled_wait_missed_come_out_first(
    elm: ModuleType, stream: str, run: Runner
) -> None:
    """The server delivered entries to this name as its wait was abandoned (here
    another connection reads them under its name): they are pending for it, and
    the next get hands them out before anything newer."""

    async def main() -> None:
        async with connected() as client:
            producer, consumer = pair(elm, client, stream, block=3.0)
            await producer.put(None, "first")
            ctx = elm.Context(timeout=SAFETY)
            assert await consumer.get(ctx) == "first"
            await consumer.commit()
            waiting = asyncio.ensure_future(consumer.get(ctx))
            await asyncio.sleep(0.1)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await producer.put(None, "lost 1", "lost 2")
            await client.xreadgroup("g", "c", {stream: ">"}, count=10)  # the missed reply
            await producer.put(None, "newer")
            assert await drain(consumer, elm) == ["lost 1", "lost 2", "newer"]
            await consumer.commit()
            assert await pending(client, stream) == 0

    run(main)


def test_interruptions_lose_nothing(elm: ModuleType, stream: str, run: Runner) -> None:
    """While a producer task puts 300 messages, a consumer's gets are cancelled or
    their ctx ended at random moments: every message comes out exactly once, in
    order, and nothing stays pending."""
    rng = random.Random(20260412)
    count = 300

    async def main() -> None:
        async with connected() as client:
            producer, consumer = pair(elm, client, stream, block=0.05)

            async def produce() -> None:
                sent = 0
                while sent < count:
                    chunk = min(rng.randint(1, 3), count - sent)
                    await producer.put(None, *range(sent, sent + chunk))
                    sent += chunk
                    await asyncio.sleep(rng.random() * 0.005)

            feeding = asyncio.ensure_future(produce())
            got: list[int] = []
            interrupted = 0
            deadline = time.monotonic() + 30
            while len(got) < count and time.monotonic() < deadline:
                how = rng.choice(["none", "none-ctx", "cancel", "cancel", "ctx", "ctx"])
                ctx = elm.Context(timeout=SAFETY) if how != "none" else None
                task = asyncio.ensure_future(consumer.get(ctx))
                if how in ("cancel", "ctx"):
                    await asyncio.sleep(rng.random() * 0.002)
                    if not task.done():
                        interrupted += 1
                        if how == "cancel":
                            task.cancel()
                        else:
                            assert ctx is not None
                            ctx.cancel()
                try:
                    got.append(await task)
                except (asyncio.CancelledError, elm.Canceled):
                    continue
                await consumer.commit()
            await feeding
            assert got == list(range(count))
            assert interrupted > 10  # the test did interrupt reads
            assert await pending(client, stream) == 0

    run(main)


# --------------------------------------------------------------------------- arguments


def test_arguments(elm: ModuleType, stream: str, run: Runner) -> None:
    makers: list[Callable[[Any], Any]] = [
        lambda c: elm.redis.AsyncStreamProducer(c, stream),
        lambda c: elm.redis.AsyncStreamConsumer(c, stream, "g", "c"),
    ]
    with redis.Redis.from_url(REDIS) as sync_client:
        for make in makers:
            for wrong in (REDIS, sync_client):
                with pytest.raises(TypeError, match=r"^client must be a redis.asyncio.Redis"):
                    make(wrong)
    for make in (
        lambda c: elm.redis.StreamProducer(c, stream),
        lambda c: elm.redis.StreamConsumer(c, stream, "g", "c"),
    ):
        with pytest.raises(TypeError, match=r"^client must be a redis.Redis client"):
            make(redis.asyncio.Redis.from_url(REDIS))

    async def main() -> None:
        async with connected(decode_responses=True) as text:
            for make in makers:
                with pytest.raises(ValueError, match="^client must be made with decode_responses"):
                    make(text)
        async with connected(socket_timeout=0.5) as short:
            for block in (0.5, 1.0):
                with pytest.raises(ValueError, match=r"block must be shorter .*socket timeout"):
                    elm.redis.AsyncStreamConsumer(short, stream, "g", "c", block=block)
            elm.redis.AsyncStreamConsumer(short, stream, "g", "c", block=0.4)
        async with connected() as client:
            for kwargs, error in (
                ({"group": ""}, ValueError),
                ({"consumer": 1}, TypeError),
                ({"decode": "json"}, TypeError),
                ({"block": 0}, ValueError),
            ):
                args = {"stream": stream, "group": "g", "consumer": "c", **kwargs}
                with pytest.raises(error, match=rf"^{next(iter(kwargs))} "):
                    elm.redis.AsyncStreamConsumer(client, **args)
            with pytest.raises(ValueError, match=r"^maxlen "):
                elm.redis.AsyncStreamProducer(client, stream, maxlen=0)
            producer, consumer = pair(elm, client, stream)
            with pytest.raises(TypeError, match="^ctx must be an elmstate.Context"):
                await producer.put(object(), 1)
            with pytest.raises(TypeError, match="^ctx must be an elmstate.Context"):
                await consumer.get(1.0)
            assert await client.exists(stream) == 0
            assert "AsyncStreamConsumer" in repr(consumer) and "'c'" in repr(consumer)

    run(main)


# --------------------------------------------------------------------------- elmstate.aio


class Stop(Exception):
    """Raised by a program's update to end ``run``."""


def test_aio_run_over_a_stream(elm: ModuleType, stream: str, run: Runner) -> None:
    """Every tick's output goes through Redis and comes back; each tick commits;
    the failing tick rolls back, so its message stays pending (at-least-once)."""
    aio = elm.aio
    views: list[int] = []

    def update(message: int) -> Callable[[int], tuple[int, Any]]:
        if message == 30:
            raise Stop(message)
        return lambda model: (model + message, [lambda: message + 1])

    async def main() -> None:
        async with connected() as client:
            producer, consumer = pair(elm, client, stream)
            with pytest.raises(Stop):
                await aio.run(
                    lambda: (0, [lambda: 1]),
                    update,
                    views.append,
                    producer,
                    consumer,
                    ctx=elm.Context(timeout=SAFETY),
                )
            assert views[-1] == sum(range(30))
            assert await client.xlen(stream) == 30
            assert await pending(client, stream) == 1
            restarted = elm.redis.AsyncStreamConsumer(client, stream, "g", "c", block=BLOCK)
            assert await restarted.get(elm.Context(timeout=SAFETY)) == 30

    run(main)


@pytest.mark.parametrize("feed", ["thread", "inline"])
def test_aio_batch_over_a_stream(elm: ModuleType, stream: str, run: Runner, feed: str) -> None:
    """The input and what its commands cause drain through Redis, the batch's
    markers with them; nothing stays pending."""
    aio = elm.aio
    pages = [([1, 2], True), ([3], False)]

    def update(message: int) -> Callable[[list[int]], tuple[list[int], Any]]:
        follow = [lambda: -message] if message > 0 else None
        return lambda model: ([*model, message], follow)

    async def main() -> None:
        async with connected() as client:
            producer, consumer = pair(elm, client, stream)
            model = await aio.batch(
                lambda: ([], None),
                update,
                lambda model: None,
                producer,
                consumer,
                lambda ctx: pages.pop(0),
                ctx=elm.Context(timeout=SAFETY),
                feed=feed,
            )
            assert sorted(model) == [-3, -2, -1, 1, 2, 3]
            assert [m for m in model if m > 0] == [1, 2, 3]
            assert await pending(client, stream) == 0

    run(main)
