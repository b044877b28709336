"""``aio.run``, ``aio.batch`` and ``aio.aggregate``: §3–5's modes on the running
event loop (docs/asyncio.md)."""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

from .. import _aggregate
from .. import _validate as check
from .._backend import core
from .._errors import Canceled
from ..typing import (
    AsyncConsumer,
    AsyncFetcher,
    AsyncStore,
    Consumer,
    Dehydrator,
    Fetcher,
    Hydrator,
    Init,
    Model,
    Msg,
    Producer,
    Replay,
    Store,
    Update,
    View,
)
from ._loop import Drained, Loop, cancel_and_wait, contexts, page
from ._sync import sync_args

_awaitable = core._is_awaitable


async def run(
    init: Init[Model, Msg],
    update: Update[Model, Msg],
    view: View[Model],
    producer: Producer[Msg],
    consumer: Consumer[Msg] | AsyncConsumer[Msg],
    *,
    ctx: Any = None,
    replay: Replay | None = None,
) -> NoReturn:
    """Run the program one tick at a time, on the running event loop, until an
    exception (or ``ctx``, or cancelling the awaiting task) ends it."""
    check.program_args(init, update, view, producer, consumer)
    check.optional_callable_arg("replay", replay)
    sync_args(init, update, view, replay)
    outer, inner = contexts(ctx)
    try:
        await Loop(init, update, view, producer, consumer, inner, replay).run()
    except Canceled as exc:
        if ended_by_caller(outer, exc):
            raise caller_error(outer) from None
        raise
    finally:
        inner.cancel()  # a cancelled task: what it started ends too


async def batch(
    init: Init[Model, Msg],
    update: Update[Model, Msg],
    view: View[Model],
    producer: Producer[Msg],
    consumer: Consumer[Msg] | AsyncConsumer[Msg],
    fetcher: Fetcher[Msg] | AsyncFetcher[Msg],
    *,
    ctx: Any = None,
    replay: Replay | None = None,
    feed: str = "thread",
) -> Model:
    """Run until the input is exhausted and every caused message is processed;
    returns the last model. ``feed="thread"`` fetches in a task on this event
    loop (no thread is started); ``feed="inline"`` between ticks."""
    check.program_args(init, update, view, producer, consumer)
    check.optional_callable_arg("replay", replay)
    check.callable_arg("fetcher", fetcher)
    check.feed_arg(feed)
    sync_args(init, update, view, replay)
    outer, inner = contexts(ctx)
    try:
        model: Model = await _batch(
            init, update, view, producer, consumer, fetcher, outer, inner, replay, feed
        )
    finally:
        inner.cancel()
    return model


async def _batch(
    init: Any,
    update: Any,
    view: Any,
    producer: Any,
    consumer: Any,
    fetcher: Any,
    outer: Any,
    inner: Any,
    replay: Any,
    feed: str,
) -> Any:
    """batch past its checks, in ``inner`` (the call's own context)."""
    loop = Loop(init, update, view, producer, consumer, inner, replay)
    loop.end = core._End()
    if feed == "inline":
        loop.fetch = core._End()
        loop.fetcher = fetcher
        try:
            pending = loop.feed()  # the first page, before anything else
            if pending is not None:
                await pending
            await loop.run()
        except Drained:
            return loop.program.model  # the model the last view saw
        except Canceled as exc:
            if ended_by_caller(outer, exc):
                raise caller_error(outer) from None
            raise
    failure: list[BaseException] = []
    feeder = asyncio.ensure_future(_feed(inner, fetcher, producer, loop.end, failure))
    try:
        await loop.run()
    except Drained:
        return loop.program.model  # the model the last view saw
    except BaseException as exc:
        if not (inner.done and isinstance(exc, Canceled)):
            raise  # the loop's own error wins
        fed = failure[0] if failure else None
        if fed is not None and not (outer.done and isinstance(fed, Canceled)):
            raise fed from None  # the fetcher's or put's own error
        if outer.done:  # the caller's error, even if the feeder saw the cancel first
            raise caller_error(outer) from None
        raise
    finally:
        inner.cancel()
        await cancel_and_wait([feeder])  # no task outlives the call, cancelled again or not


async def _feed(
    ctx: Any, fetcher: Any, producer: Any, end: Any, failure: list[BaseException]
) -> None:
    """The feeder task: pages from the fetcher into the producer, then the end marker."""
    try:
        while not ctx.done:
            reply = fetcher(ctx)
            if _awaitable(reply):
                reply = await reply
            messages, more = page(reply)
            done = producer.put(ctx, *messages)
            if done is not None and _awaitable(done):
                await done
            if not more:
                done = producer.put(ctx, end)
                if done is not None and _awaitable(done):
                    await done
                return
            await asyncio.sleep(0)  # a fetcher that never suspends must not starve the loop
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        failure.append(exc)
        ctx.cancel()


def caller_error(outer: Any) -> BaseException:
    """The caller's ``ctx.err``, to raise (its previous raise's traceback dropped)."""
    err: BaseException = outer.err
    return err.with_traceback(None)


def ended_by_caller(outer: Any, exc: BaseException) -> bool:
    """Whether the loop's context ended because the caller's did: ``ctx.err`` is raised."""
    return outer.done and isinstance(exc, Canceled)


async def aggregate(
    init: Init[Model, Msg],
    update: Update[Model, Msg],
    view: View[Model],
    producer: Producer[Msg],
    consumer: Consumer[Msg] | AsyncConsumer[Msg],
    fetcher: Fetcher[Msg] | AsyncFetcher[Msg],
    store: Store | AsyncStore,
    hydrator: Hydrator[Model],
    dehydrator: Dehydrator[Model],
    key: str,
    *,
    ctx: Any = None,
    replay: Replay | None = None,
    feed: str = "thread",
) -> Model:
    """Load the model at ``key``, run a batch on it, and store the result on
    success; returns the stored model. Store methods may be sync or async."""
    _aggregate._checks(
        init,
        update,
        view,
        producer,
        consumer,
        fetcher,
        store,
        hydrator,
        dehydrator,
        key,
        replay,
        feed,
    )
    sync_args(init, update, view, replay, hydrator, dehydrator)
    outer, inner = contexts(ctx)
    either: Any = store  # sync or async: each reply is awaited if it is an awaitable
    try:
        versioned: Any = _aggregate._versioned(either)
        version = 0
        if versioned is None:
            value = either.load(inner, key)
            if value is not None and _awaitable(value):
                value = await value
        else:
            reply = versioned.load_versioned(inner, key)
            if type(reply) is tuple and len(reply) == 2:
                value, version = reply
            else:
                if _awaitable(reply):
                    reply = await reply
                value, version = check.pair("store.load_versioned", reply, "(value, version)")
        if value is not None:
            root, references = _aggregate._hydrate(inner, hydrator, key, value)
            if references is not None:
                await _follow(
                    either, inner, _aggregate._Loader(inner, hydrator).follow(key, root, references)
                )
            if root is not None:

                def init() -> tuple[Any, None]:
                    return root, None

        # The batch ends its own context (its feeder task's) when it returns: a
        # child of inner, so the dehydrator and the store still get a live one.
        own = inner if feed == "inline" else core.Context(inner)
        model: Model = await _batch(
            init, update, view, producer, consumer, fetcher, outer, own, replay, feed
        )
        value = _aggregate._dehydrate(dehydrator, inner, key, model)
        done = (
            either.store(inner, key, value)
            if versioned is None
            else versioned.store_versioned(inner, key, value, version)
        )
        if done is not None and _awaitable(done):
            await done
    except Canceled as exc:
        if ended_by_caller(outer, exc):
            raise caller_error(outer) from None
        raise
    finally:
        inner.cancel()
    return model


async def _follow(store: Any, ctx: Any, steps: Any) -> None:
    """Load the keys the read-only models ask for, through the store's plain load."""
    try:
        other = next(steps)
        while True:
            value = store.load(ctx, other)
            if value is not None and _awaitable(value):
                value = await value
            other = steps.send(value)
    except StopIteration:
        pass
