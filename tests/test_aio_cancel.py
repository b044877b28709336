"""Cancelling the task that awaits an elmstate.aio mode, at every await point of a
tick (docs/asyncio.md#cancellation): the loop's own context ends (never the
caller's), the tick in progress rolls back, nothing is stored, CancelledError is
re-raised, no task is left pending and no coroutine is left un-awaited (warnings
are errors in this suite). On both cores, under asyncio's loop and uvloop."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from _modes import complete

KINDS = ["asyncio", "uvloop"]


class Gates:
    """Await points that suspend once each; the ``target`` one (a name and which of
    its calls) suspends for good, after telling the test it was reached."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.seen: dict[str, int] = {}
        self.reached = asyncio.Event()
        self.contexts: list[Any] = []

    async def point(self, name: str, ctx: Any = None) -> None:
        if ctx is not None:
            self.contexts.append(ctx)
        self.seen[name] = self.seen.get(name, 0) + 1
        if (name, self.seen[name]) == self.target:
            self.reached.set()
            await asyncio.get_running_loop().create_future()  # until cancelled
        await asyncio.sleep(0)


class GatedQueue:
    """An async producer and consumer over an aio.Buffer, each method an await point."""

    def __init__(self, elm: Any, gates: Gates) -> None:
        self.buf = elm.aio.Buffer()
        self.consumer = self.buf.new_consumer()
        self.gates = gates
        self.rollbacks = 0

    async def get(self, ctx: Any) -> Any:
        await self.gates.point("get", ctx)
        return await self.consumer.get(ctx)

    async def put(self, ctx: Any, *messages: Any) -> None:
        await self.gates.point("put", ctx)
        self.buf.put(ctx, *messages)

    async def commit(self) -> None:
        await self.gates.point("commit")
        self.consumer.commit()

    async def rollback(self) -> None:
        self.rollbacks += 1
        self.consumer.rollback()


class GatedStore:
    def __init__(self, elm: Any, gates: Gates) -> None:
        self.memory = elm.MemoryStore()
        self.memory.store(None, "k", b"100")
        self.gates = gates

    async def load(self, ctx: Any, key: str) -> Any:
        await self.gates.point("load", ctx)
        return self.memory.load(ctx, key)

    async def store(self, ctx: Any, key: str, value: bytes) -> None:
        raise AssertionError("aggregate saves a versioned store with store_versioned")

    async def load_versioned(self, ctx: Any, key: str) -> Any:
        await self.gates.point("load", ctx)
        return self.memory.load_versioned(ctx, key)

    async def store_versioned(self, ctx: Any, key: str, value: bytes, version: int) -> int:
        await self.gates.point("store", ctx)
        return self.memory.store_versioned(ctx, key, value, version)  # type: ignore[no-any-return]


def program(gates: Gates) -> tuple[Any, Any]:
    """init sends 1 through an async command; each message n < 3 sends n + 1 the same way."""

    async def send(n: int) -> int:
        await gates.point("command")
        return n

    def init() -> Any:
        return 0, [lambda: send(1)]

    def update(message: int) -> Any:
        def transform(model: int) -> Any:
            return model + message, [lambda: send(message + 1)] if message < 3 else None

        return transform

    return init, update


# (entry point, await point, its nth call, rollbacks expected): every await point of a
# tick in each mode, in the first tick and in a later one.
CASES = [
    ("run", "command", 1, 0),  # init's command: the first tick never rolls back
    ("run", "put", 1, 0),
    ("run", "get", 1, 1),  # a get that raises rolls back, as in run (nothing to undo)
    ("run", "get", 2, 1),
    ("run", "command", 2, 1),  # a later tick's command: rolled back
    ("run", "put", 2, 1),
    ("run", "commit", 1, 1),
    ("run", "commit", 3, 1),
    ("batch-inline", "fetch", 1, 0),  # the first page, before the first tick
    ("batch-inline", "fetch", 2, 1),  # a later page, fetched inside a tick's get
    ("batch-inline", "command", 2, 1),
    ("batch-inline", "put", 3, 0),  # the first tick's (the first page took puts 1 and 2)
    ("batch-inline", "commit", 2, 2),  # a marker's: rolled back there, then by the loop
    ("batch-thread", "fetch", 1, 0),  # in the feeder task
    ("batch-thread", "get", 2, 1),
    ("batch-thread", "command", 2, 1),
    ("batch-thread", "commit", 1, 1),
    ("aggregate-inline", "load", 1, 0),
    ("aggregate-inline", "command", 1, 1),  # a stored model: init runs no command
    ("aggregate-inline", "command", 2, 1),
    ("aggregate-inline", "fetch", 2, 1),
    ("aggregate-inline", "store", 1, 0),  # the batch had drained: nothing to roll back
    ("aggregate-thread", "load", 1, 0),
    ("aggregate-thread", "put", 2, 1),
    ("aggregate-thread", "store", 1, 0),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "entry, point, nth, rollbacks", CASES, ids=[f"{c[0]}-{c[1]}{c[2]}" for c in CASES]
)
def test_cancel_at_every_await_point(elm, kind, entry, point, nth, rollbacks):
    async def main() -> None:
        gates = Gates((point, nth))
        queue = GatedQueue(elm, gates)
        store = GatedStore(elm, gates)
        init, update = program(gates)
        caller = elm.Context()
        pages = [[1], [2]]

        async def fetcher_pages(ctx: Any) -> Any:
            await gates.point("fetch", ctx)
            page = pages.pop(0) if pages else []
            return page, bool(pages)

        def hydrator(ctx: Any, key: str, value: bytes) -> Any:
            return int(value), None

        def dehydrator(ctx: Any, key: str, model: int) -> bytes:
            return str(model).encode()

        args = (init, update, lambda m: None, queue, queue)
        if entry == "run":
            queue.buf.put(None, 1)  # a first message; the commands send more
            call = elm.aio.run(*args, ctx=caller)
        elif entry.startswith("batch"):
            call = elm.aio.batch(*args, fetcher_pages, ctx=caller, feed=entry.split("-")[1])
        else:
            call = elm.aio.aggregate(
                *args,
                fetcher_pages,
                store,
                hydrator,
                dehydrator,
                "k",
                ctx=caller,
                feed=entry.split("-")[1],
            )
        task = asyncio.ensure_future(call)
        reached = asyncio.ensure_future(gates.reached.wait())
        done, _ = await asyncio.wait({task, reached}, timeout=5, return_when="FIRST_COMPLETED")
        if reached not in done:
            reached.cancel()
            task.cancel()
            await asyncio.wait({task, reached})
            pytest.fail(f"{point} #{nth} was never reached: {gates.seen}, {task!r}")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing left pending
        assert queue.rollbacks == rollbacks
        assert store.memory.load_versioned(None, "k") == (b"100", 1)  # nothing stored
        assert not caller.done  # the caller's context is not the loop's
        assert all(ctx.done for ctx in gates.contexts)
        assert all(ctx is not caller for ctx in gates.contexts)

    complete(kind, main())
    gc.collect()  # a coroutine left un-awaited would warn here (warnings are errors)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["waiting for a message", "awaiting a command", "yielding"])
def test_cancel_over_an_aio_buffer(elm, kind, where):
    """The fast path (an aio.Buffer as producer and consumer): cancelled while it
    awaits a put, a command's awaitable, or its turn after a slice of work."""

    async def main() -> None:
        buf = elm.aio.Buffer()
        consumer = buf.new_consumer()
        views: list[int] = []
        reached = asyncio.Event()

        async def hang() -> None:
            reached.set()
            await asyncio.get_running_loop().create_future()

        def update(message: Any) -> Any:
            if message == "hang":
                return lambda model: (model, [hang])
            return lambda model: (model + 1, None)

        def view(model: int) -> None:
            views.append(model)
            if where == "yielding" and len(views) == 1000:
                reached.set()

        if where == "awaiting a command":
            buf.put(None, 1, 1, "hang", 1)
        elif where == "yielding":
            buf.put(None, *([1] * 200_000))
        else:
            buf.put(None, 1, 1)
            asyncio.get_running_loop().call_later(0.01, reached.set)
        task = asyncio.ensure_future(elm.aio.run(lambda: (0, None), update, view, buf, consumer))
        await asyncio.wait_for(reached.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert asyncio.all_tasks() == {asyncio.current_task()}
        # every tick the views saw committed, the one cancelled rolled back
        processed = views[-1]
        rest = buf.slice()[len(buf) - buf.diff(consumer) :]
        if where == "awaiting a command":
            assert processed == 2 and rest == ["hang", 1]
        elif where == "yielding":
            assert len(rest) == 200_000 - processed
        else:
            assert processed == 2 and rest == []

    complete(kind, main())
    gc.collect()
