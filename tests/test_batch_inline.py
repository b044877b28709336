"""batch(feed="inline"): the fetcher runs on the loop's thread, behind fetch markers
(docs/contract.md#batch). The rules every feed shares are tested in test_batch.py,
over both feeds; here, what only the inline feed promises."""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any

import pytest
from _helpers import SAFETY, buffer_pair
from _recording import live_threads

# run, batch and aggregate run through elmstate.aio too (asyncio, uvloop): tests/_modes.py
AIO_MODES = True


class Program:
    """Sums int messages; ``children[m]`` lists what m's command produces. Every call
    (update, view, fetch) lands in one ordered log."""

    def __init__(self, *replies: Any, children: dict[int, tuple[int, ...]] | None = None) -> None:
        self.replies = list(replies)
        self.children = children or {}
        self.log: list[tuple[str, Any]] = []
        self.fetch_threads: list[int] = []
        self.fetch_contexts: list[Any] = []

    def init(self) -> tuple[int, Any]:
        return 0, None

    def update(self, message: int) -> Any:
        self.log.append(("update", message))
        command = [lambda c=c: c for c in self.children.get(message, ())]
        return lambda model: (model + message, command)

    def view(self, model: int) -> None:
        self.log.append(("view", model))

    def fetcher(self, ctx: Any) -> Any:
        self.fetch_threads.append(threading.get_ident())
        self.fetch_contexts.append(ctx)
        self.log.append(("fetch", len(self.fetch_threads)))
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def batch(self, elm: ModuleType, **kwargs: Any) -> Any:
        buf, consumer = kwargs.pop("pair", None) or buffer_pair(elm)
        kwargs.setdefault("ctx", elm.Context(timeout=SAFETY))
        return elm.batch(
            self.init, self.update, self.view, buf, consumer, self.fetcher, feed="inline", **kwargs
        )


def test_the_fetcher_runs_on_the_callers_thread_and_no_thread_starts(elm: ModuleType) -> None:
    program = Program(([1], True), ([2], True), ([3], False))
    before = live_threads()
    seen: list[set[str]] = []
    original = program.fetcher

    def fetcher(ctx: Any) -> Any:
        seen.append({t.name for t in threading.enumerate()})
        return original(ctx)

    program.fetcher = fetcher  # type: ignore[method-assign]
    assert program.batch(elm) == 6
    assert program.fetch_threads == [threading.get_ident()] * 3
    assert all("elmstate-feeder" not in names for names in seen)
    assert live_threads() == before


def test_a_page_is_fetched_once_everything_queued_ahead_of_its_marker_was_processed(
    elm: ModuleType,
) -> None:
    # The fetch marker follows page 1: 1 is processed, then page 2 is fetched;
    # 10 (from 1's command) was queued behind the marker, so it comes after the
    # fetch, and 100 (from 10's) behind page 2.
    program = Program(([1], True), ([2], False), children={1: (10,), 10: (100,)})
    assert program.batch(elm) == 113
    assert program.log == [
        ("fetch", 1),
        ("view", 0),
        ("update", 1),
        ("view", 1),
        ("fetch", 2),
        ("update", 10),
        ("view", 11),
        ("update", 2),
        ("view", 13),
        ("update", 100),
        ("view", 113),
    ]


def test_the_first_page_is_fetched_before_init_and_its_commands_run(elm: ModuleType) -> None:
    program = Program(([1], False))
    buf, consumer = buffer_pair(elm)
    result = elm.batch(
        lambda: (0, elm.new_command(5)),
        program.update,
        program.view,
        buf,
        consumer,
        program.fetcher,
        ctx=elm.Context(timeout=SAFETY),
        feed="inline",
    )
    assert result == 6
    # the page was put before init's command message: it is read first
    assert program.log == [("fetch", 1), ("view", 0), ("update", 1), ("view", 1)] + [
        ("update", 5),
        ("view", 6),
    ]


def test_a_run_is_deterministic_for_a_given_fetcher(elm: ModuleType) -> None:
    def one_run() -> list[tuple[str, Any]]:
        replies = [(list(range(n, n + 5)), True) for n in range(0, 50, 5)] + [([], False)]
        program = Program(*replies, children={n: (1000 + n,) for n in range(0, 50, 3)})
        program.batch(elm)
        return program.log

    first = one_run()
    assert all(one_run() == first for _ in range(20))


def test_empty_pages_with_more_are_fetched_again(elm: ModuleType) -> None:
    program = Program(([], True), ([], True), ([7], True), ([], False))
    assert program.batch(elm) == 7
    assert len(program.fetch_threads) == 4


@pytest.mark.sync_only  # elmstate.aio hands it the call's own child context (test_aio.py)
def test_the_fetcher_gets_the_callers_context(elm: ModuleType) -> None:
    ctx = elm.Context(timeout=SAFETY)
    program = Program(([1], True), ([2], False))
    program.batch(elm, ctx=ctx)
    assert program.fetch_contexts == [ctx, ctx]


def test_the_fetcher_gets_a_context_when_the_caller_gives_none(elm: ModuleType) -> None:
    program = Program(([1], True), ([2], False))
    program.batch(elm, ctx=None)
    assert all(isinstance(c, elm.Context) for c in program.fetch_contexts)


@pytest.mark.parametrize("call", [1, 2], ids=["first fetch", "later fetch"])
def test_a_fetcher_error_propagates_unchanged_and_rolls_back(elm: ModuleType, call: int) -> None:
    boom = RuntimeError("fetch failed")
    replies: list[Any] = [([1], True), boom] if call == 2 else [boom]
    program = Program(*replies)
    buf, consumer = buffer_pair(elm)
    before = live_threads()
    with pytest.raises(RuntimeError) as info:
        program.batch(elm, pair=(buf, consumer))
    assert info.value is boom
    assert live_threads() == before
    # what was processed stays committed, and the pair serves the next batch
    assert Program(([4], False)).batch(elm, pair=(buf, consumer)) == 4


def test_a_bad_fetcher_reply_names_the_fetcher(elm: ModuleType) -> None:
    program = Program(([1], True), "no pair")
    with pytest.raises(TypeError, match="fetcher must return a"):
        program.batch(elm)


def test_a_text_page_is_refused(elm: ModuleType) -> None:
    program = Program(("ab", False))
    with pytest.raises(TypeError, match="fetcher"):
        program.batch(elm)


def test_an_ended_context_raises_before_the_fetcher_is_called(elm: ModuleType) -> None:
    ctx = elm.Context()
    ctx.cancel()
    program = Program(([1], False))
    with pytest.raises(elm.Canceled) as info:
        program.batch(elm, ctx=ctx)
    assert info.value is ctx.err
    assert program.log == []


def test_cancelling_from_the_fetcher_ends_the_batch_with_the_callers_error(
    elm: ModuleType,
) -> None:
    ctx = elm.Context(timeout=SAFETY)
    program = Program(([1], True), ([2], True))
    original = program.fetcher

    def fetcher(c: Any) -> Any:
        reply = original(c)
        if len(program.fetch_threads) == 2:
            ctx.cancel()
        return reply

    program.fetcher = fetcher  # type: ignore[method-assign]
    with pytest.raises(elm.Canceled) as info:
        program.batch(elm, ctx=ctx)
    assert info.value is ctx.err


def test_replay_skips_commands(elm: ModuleType) -> None:
    program = Program(([1], False), children={1: (2,)})
    assert program.batch(elm, replay=lambda: True) == 1


class ListQueue:
    """A producer and consumer that is not a Buffer: the generic path."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.read = 0
        self.committed = 0

    def put(self, ctx: Any, *values: Any) -> None:
        self.items.extend(values)

    def get(self, ctx: Any) -> Any:
        message = self.items[self.read]  # never empty while a batch reads: a marker is queued
        self.read += 1
        return message

    def commit(self) -> None:
        self.committed = self.read

    def rollback(self) -> None:
        self.read = self.committed


def test_any_producer_and_consumer_work(elm: ModuleType) -> None:
    queue = ListQueue()
    program = Program(([1, 2], True), ((3,), False), children={2: (20,)})
    assert program.batch(elm, pair=(queue, queue)) == 26
    assert [m for m in queue.items if isinstance(m, int)] == [1, 2, 20, 3]
    assert queue.committed == len(queue.items)


@pytest.mark.parametrize("feed", ["threads", "INLINE", "", None, 1, b"inline"])
def test_an_unknown_feed_is_a_value_error(elm: ModuleType, feed: Any) -> None:
    buf, consumer = buffer_pair(elm)
    calls: list[Any] = []
    with pytest.raises(ValueError, match="feed must be 'thread' or 'inline'"):
        elm.batch(
            lambda: (0, None), lambda m: None, calls.append, buf, consumer, calls.append, feed=feed
        )
    assert calls == []


def test_an_inline_batchs_leftover_markers_never_end_another_batch(elm: ModuleType) -> None:
    """A failed inline batch leaves its fetch marker queued; the next batch on the
    same buffer commits and skips it (docs/contract.md#batch: markers belong to
    the batch that put them)."""
    buf, consumer = buffer_pair(elm)
    failing = Program(([1, 2], True), ([99], False))
    original = failing.update

    def update(message: int) -> Any:
        if message == 2:
            raise KeyError("boom")
        return original(message)

    failing.update = update  # type: ignore[method-assign]
    with pytest.raises(KeyError):
        failing.batch(elm, pair=(buf, consumer))
    assert buf.diff(consumer) == 2  # 2 again, then the first batch's fetch marker

    later = Program(([5], True), ([6], False))
    assert later.batch(elm, pair=(buf, consumer)) == 2 + 5 + 6
    assert [m for kind, m in later.log if kind == "update"] == [2, 5, 6]
    assert buf.diff(consumer) == 0


def test_an_ended_context_stops_a_fetcher_that_always_says_more(elm: ModuleType) -> None:
    """Between pages the inline feed checks ctx itself: a producer that ignores
    ctx (unlike Buffer.put, which raises) cannot keep an endless fetcher going
    (docs/contract.md#contexts-in-calls: loops return promptly once ctx ends)."""
    queue = ListQueue()
    ctx = elm.Context()
    fetches: list[int] = []

    def fetcher(c: Any) -> Any:
        fetches.append(1)
        if len(fetches) == 1000:
            ctx.cancel()
        return [], True

    with pytest.raises(elm.Canceled) as info:
        elm.batch(
            lambda: (0, None),
            lambda m: None,
            lambda m: None,
            queue,
            queue,
            fetcher,
            ctx=ctx,
            feed="inline",
        )
    assert info.value is ctx.err
    assert len(fetches) == 1000


class Unanswerable:
    """A ``more`` whose truth cannot be told."""

    def __bool__(self) -> bool:
        raise ZeroDivisionError("no answer")


@pytest.mark.parametrize("page", [1, 2], ids=["first page", "later page"])
def test_a_page_whose_more_cannot_be_read_is_not_put(elm: ModuleType, page: int) -> None:
    """Both cores read ``more`` before putting the page: a failed page leaves
    nothing of it queued."""
    queue = ListQueue()
    replies: list[Any] = [([1, 2], Unanswerable())]
    if page == 2:
        replies.insert(0, ([5], True))
    program = Program(*replies)
    with pytest.raises(ZeroDivisionError):
        program.batch(elm, pair=(queue, queue))
    assert 1 not in queue.items and 2 not in queue.items


def test_a_batchs_markers_refuse_to_be_copied(elm: ModuleType) -> None:
    """A copy of a marker would be another batch's marker to this one, skipped
    while the batch waits for it: copying fails at once instead."""
    import copy
    import pickle

    queue = ListQueue()
    Program(([1], True), ([2], False)).batch(elm, pair=(queue, queue))
    markers = [m for m in queue.items if not isinstance(m, int)]
    assert markers
    for marker in markers:
        for attempt in (copy.copy, copy.deepcopy, pickle.dumps):
            with pytest.raises(TypeError, match="marker cannot be copied or pickled"):
                attempt(marker)
