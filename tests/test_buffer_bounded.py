"""Bounded buffers: ``Buffer(maxsize, overflow="wait" | "drop_oldest")``
(docs/contract.md#bounded-buffers, SPEC §12 "Backpressure").

The long proof — a producer thread putting 10,000,000 messages into
``Buffer(maxsize=10_000)`` read by a slower ``run`` — runs on both cores (some
7 s compiled and 12 s pure here), and prints the resident memory it saw.
"""

from __future__ import annotations

import copy
import gc
import os
import pickle
import sys
import threading
import time
from types import ModuleType
from typing import Any

import pytest
from _helpers import SAFETY, InThread, wait_for

WAKE_LIMIT = 0.05  # seconds: "within a few milliseconds", with room for a noisy box


class Stop(Exception):
    pass


def rss_bytes() -> int:
    """This process's resident set size now (Linux)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- arguments


def test_defaults_are_unbounded(elm: ModuleType) -> None:
    buf = elm.Buffer()
    assert buf.maxsize is None and buf.overflow == "wait"
    buf.put(None, *range(100_000))
    assert len(buf) == 100_000


@pytest.mark.parametrize("overflow", ["wait", "drop_oldest"])
def test_maxsize_and_overflow_are_kept(elm: ModuleType, overflow: str) -> None:
    buf = elm.Buffer(5, overflow=overflow)
    assert buf.maxsize == 5 and buf.overflow == overflow


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"maxsize": 0}, ValueError, "maxsize"),
        ({"maxsize": -3}, ValueError, "maxsize"),
        ({"maxsize": 1 << 70}, ValueError, "maxsize"),
        ({"maxsize": True}, TypeError, "maxsize"),
        ({"maxsize": 2.0}, TypeError, "maxsize"),
        ({"maxsize": "10"}, TypeError, "maxsize"),
        ({"maxsize": 3, "overflow": "drop_newest"}, ValueError, "overflow"),
        ({"maxsize": 3, "overflow": None}, ValueError, "overflow"),
        ({"overflow": "drop_oldest"}, ValueError, "overflow"),
    ],
)
def test_bad_bounds_are_refused_naming_the_argument(
    elm: ModuleType, kwargs: dict[str, Any], error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        elm.Buffer(**kwargs)


def test_overflow_is_keyword_only(elm: ModuleType) -> None:
    with pytest.raises(TypeError):
        elm.Buffer(3, "wait")


def test_a_bounded_buffer_refuses_copying(elm: ModuleType) -> None:
    buf = elm.Buffer(3)
    for attempt in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError):
            attempt(buf)


# --------------------------------------------------------------------------- wait


def test_a_put_into_a_full_buffer_waits_until_a_commit_makes_room(elm: ModuleType) -> None:
    buf = elm.Buffer(2)
    consumer = buf.new_consumer()
    buf.put(None, 1, 2)
    putter = InThread(lambda: buf.put(elm.Context(timeout=SAFETY), 3))
    time.sleep(0.05)
    assert not putter.done and buf.slice() == [1, 2]
    assert consumer.get() == 1
    consumer.commit()  # one past the start of two: the buffer's middle, so room at once
    putter.join()
    assert putter.error is None
    assert buf.slice() == [2, 3]


def test_the_room_a_put_waits_for_is_what_every_consumer_committed_past(
    elm: ModuleType,
) -> None:
    buf = elm.Buffer(2)
    fast, slow = buf.new_consumer(), buf.new_consumer()
    buf.put(None, 1, 2)
    putter = InThread(lambda: buf.put(elm.Context(timeout=SAFETY), 3))
    fast.get(), fast.get()
    fast.commit()
    time.sleep(0.1)  # several cooldowns: passes ran, and dropped nothing
    assert not putter.done and len(buf) == 2
    slow.get()
    slow.commit()
    putter.join()
    assert putter.error is None and buf.slice() == [2, 3]


def test_a_put_holding_several_values_appends_them_all_once_there_is_room(
    elm: ModuleType,
) -> None:
    # "waits while the buffer holds maxsize messages or more": then all of them go in.
    buf = elm.Buffer(3)
    consumer = buf.new_consumer()
    buf.put(None, 1, 2, 3)
    putter = InThread(lambda: buf.put(elm.Context(timeout=SAFETY), 4, 5, 6, 7))
    for _ in range(2):
        consumer.get()
    consumer.commit()
    putter.join()
    assert putter.error is None
    assert buf.slice() == [3, 4, 5, 6, 7]


def test_an_empty_put_never_waits(elm: ModuleType) -> None:
    buf = elm.Buffer(1)
    buf.new_consumer()
    buf.put(None, 1)
    buf.put(elm.Context(timeout=SAFETY))  # returns at once: it adds nothing
    assert buf.slice() == [1]


def test_a_closed_consumer_makes_room(elm: ModuleType) -> None:
    buf = elm.Buffer(1)
    consumer = buf.new_consumer()
    buf.put(None, 1)
    putter = InThread(lambda: buf.put(elm.Context(timeout=SAFETY), 2))
    time.sleep(0.02)
    consumer.close()  # no consumer holds the message any more... but none is left either
    time.sleep(0.05)
    # default_cleaner drops nothing while there is no consumer: the put still waits
    assert not putter.done
    buf.close()
    putter.join()
    assert isinstance(putter.error, elm.Closed)
    assert buf.slice() == [1]


@pytest.mark.parametrize("when", ["before the put", "while it waits"])
def test_a_consumer_collected_without_close_makes_room(elm: ModuleType, when: str) -> None:
    buf = elm.Buffer(2)
    fast, slow = buf.new_consumer(), buf.new_consumer()
    buf.put(None, 1, 2)
    reader = InThread(lambda: (fast.get(), fast.get(), fast.commit()))
    reader.join()
    time.sleep(0.05)  # the commit's pass ran: slow held both messages
    if when == "before the put":
        del slow
        gc.collect()
    putter = InThread(lambda: buf.put(elm.Context(timeout=SAFETY), 3))
    if when == "while it waits":
        time.sleep(0.05)
        assert not putter.done
        del slow
        gc.collect()
    putter.join()
    assert putter.error is None
    assert buf.slice() == [3]


def wait_then(elm: ModuleType, how: str) -> tuple[float, InThread, Any]:
    buf = elm.Buffer(1)
    buf.new_consumer()
    buf.put(None, "held")
    safety = elm.Context(timeout=SAFETY)
    ctx = elm.Context(safety) if how == "cancel" else safety
    putter = InThread(lambda: buf.put(ctx, "late"))
    time.sleep(0.05)
    assert not putter.done
    began = time.monotonic()
    if how == "cancel":
        ctx.cancel()
    else:
        buf.close()
    putter.join()
    return putter.ended_at - began, putter, buf


@pytest.mark.parametrize("how", ["cancel", "close"])
def test_a_waiting_put_wakes_within_milliseconds_and_appends_nothing(
    elm: ModuleType, how: str
) -> None:
    latencies = []
    for _ in range(5):
        latency, putter, buf = wait_then(elm, how)
        expected = elm.Canceled if how == "cancel" else elm.Closed
        assert type(putter.error) is expected, putter.error
        assert buf.slice() == ["held"]
        latencies.append(latency)
        if latency < WAKE_LIMIT / 5:
            break
    assert min(latencies) < WAKE_LIMIT, latencies


def test_a_waiting_put_times_out_with_deadline_exceeded(elm: ModuleType) -> None:
    buf = elm.Buffer(1)
    buf.new_consumer()
    buf.put(None, 1)
    began = time.monotonic()
    with pytest.raises(elm.DeadlineExceeded):
        buf.put(elm.Context(timeout=0.1), 2)
    assert time.monotonic() - began >= 0.09
    assert buf.slice() == [1]


def test_a_put_on_a_thread_that_reads_the_buffer_never_waits(elm: ModuleType) -> None:
    buf = elm.Buffer(2)
    consumer = buf.new_consumer()
    buf.put(None, 1, 2)
    assert consumer.get() == 1  # this thread now reads the buffer
    buf.put(elm.Context(timeout=SAFETY), 3, 4)  # would wait on any other thread
    assert buf.slice() == [1, 2, 3, 4]
    other = InThread(lambda: buf.put(elm.Context(timeout=0.1), 5))
    other.join()
    assert isinstance(other.error, elm.DeadlineExceeded)  # another thread does wait
    consumer.close()  # a closed consumer no longer makes its thread a reader
    with pytest.raises(elm.DeadlineExceeded):
        buf.put(elm.Context(timeout=0.05), 6)


def test_a_thread_that_read_the_buffer_and_ended_exempts_no_later_thread(
    elm: ModuleType,
) -> None:
    # A new thread often gets the ident of one that ended: it is another thread,
    # which reads nothing, so its put waits.
    buf = elm.Buffer(2)
    consumer = buf.new_consumer()  # open throughout: its reader thread ends
    buf.put(None, 1, 2)
    reader = InThread(lambda: [consumer.get(), consumer.rollback()])
    reader.join()
    reader_ident = reader.thread.ident
    same_ident = False
    for _ in range(20):
        producer = InThread(lambda: buf.put(elm.Context(timeout=0.05), 3))
        producer.join()
        assert isinstance(producer.error, elm.DeadlineExceeded), producer.error
        assert buf.slice() == [1, 2]
        if producer.thread.ident == reader_ident:
            same_ident = True
            break
    if not same_ident:
        pytest.skip("no new thread got the ended reader's ident here")


def test_a_cleaner_that_puts_into_its_own_full_buffer_never_waits(elm: ModuleType) -> None:
    # The room that put would wait for is what this very pass drops, after the
    # cleaner returns: waiting there deadlocked the pass and every later one.
    buf = elm.Buffer(2)
    buf.set_cleaner(elm.default_cleaner, cooldown=3600)  # the reader's commit only schedules
    consumer = buf.new_consumer()
    errors: list[BaseException] = []

    def cleaner(size: int, offsets: Any) -> int:
        n = int(elm.default_cleaner(size, offsets))
        if n:
            try:
                buf.put(elm.Context(timeout=SAFETY), ("trimmed", n))
            except BaseException as exc:  # the test reports it; the buffer would close
                errors.append(exc)
        return n

    buf.put(None, 1, 2)
    reader = InThread(lambda: [consumer.get(), consumer.get(), consumer.commit()])
    reader.join()
    buf.set_cleaner(cleaner, cooldown=0)  # a pass now, on this thread, which reads nothing
    assert errors == []
    assert buf.slice() == [("trimmed", 2)]


def test_a_finaliser_of_a_dropped_message_that_puts_never_waits(elm: ModuleType) -> None:
    # It runs on the thread of the pass that dropped the message, as part of that pass.
    buf = elm.Buffer(2)
    buf.set_cleaner(elm.default_cleaner, cooldown=3600)
    consumer = buf.new_consumer()
    errors: list[BaseException] = []

    class Tracked:
        def __del__(self) -> None:
            try:
                for value in ("x", "y", "z"):  # the third finds the buffer full
                    buf.put(elm.Context(timeout=SAFETY), value)
            except BaseException as exc:  # a finaliser's error would only be printed
                errors.append(exc)

    buf.put(None, Tracked(), "a")
    reader = InThread(lambda: [consumer.get(), consumer.get(), consumer.commit()] and None)
    reader.join()
    buf.set_cleaner(elm.default_cleaner, cooldown=0)  # drops both on this thread
    assert errors == []
    assert buf.slice() == ["x", "y", "z"]


# --------------------------------------------------------------------------- a loop feeding itself


class WrappedProducer:
    """A user's own wrapper: the loop sees neither the Buffer nor its consumer."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def put(self, ctx: Any, *values: Any) -> None:
        self.inner.put(ctx, *values)


class WrappedConsumer:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def get(self, ctx: Any) -> Any:
        return self.inner.get(ctx)

    def commit(self) -> None:
        self.inner.commit()

    def rollback(self) -> None:
        self.inner.rollback()


def fanout_program(elm: ModuleType, depth: int, seen: list[Any]) -> tuple[Any, Any, Any]:
    """Each message below ``depth`` makes three more: 3 + 9 + ... + 3**depth in all."""

    def init() -> tuple[int, Any]:
        return 0, elm.new_command((1, 0), (1, 1), (1, 2))

    def update(message: Any) -> Any:
        seen.append(message)
        if message == "stop":
            raise Stop
        level, _ = message

        def transform(model: int) -> tuple[int, Any]:
            more = (
                elm.new_command((level + 1, 0), (level + 1, 1), (level + 1, 2))
                if level < depth
                else None
            )
            return model + 1, more

        return transform

    def view(model: int) -> None:
        pass

    return init, update, view


@pytest.mark.parametrize("wrapped", [False, True], ids=["direct", "wrapper"])
@pytest.mark.parametrize("prefilled", [False, True], ids=["empty", "full"])
def test_a_loop_whose_commands_put_into_its_own_bounded_buffer_never_deadlocks(
    elm: ModuleType, wrapped: bool, prefilled: bool
) -> None:
    depth = 6  # 3 + 9 + ... + 729 = 1,092 messages through a buffer of 4
    buf = elm.Buffer(4)
    consumer = buf.new_consumer()  # made here, read by the loop's thread
    if prefilled:
        buf.put(None, *[(depth + 1, i) for i in range(4)])  # full before the first tick
    seen: list[Any] = []
    init, update, view = fanout_program(elm, depth, seen)
    producer: Any = WrappedProducer(buf) if wrapped else buf
    reader: Any = WrappedConsumer(consumer) if wrapped else consumer
    ctx = elm.Context(timeout=SAFETY * 6)  # a deadlock fails the test instead of hanging it
    outside = InThread(lambda: [buf.put(ctx, (depth + 1, 10 + i)) for i in range(50)])

    expected = sum(3**k for k in range(1, depth + 1)) + 50 + (4 if prefilled else 0)
    runner = InThread(lambda: elm.run(init, update, view, producer, reader, ctx=ctx))
    assert wait_for(lambda: len(seen) >= expected, timeout=SAFETY * 5), (len(seen), expected)
    outside.join()
    assert outside.error is None
    buf.put(None, "stop")  # from this thread, which the loop's buffer does not wait for...
    runner.join()
    assert isinstance(runner.error, Stop), runner.error
    assert not ctx.done
    assert len(seen) == expected + 1


def test_a_batch_over_a_bounded_buffer_ends_and_its_feeder_waits(elm: ModuleType) -> None:
    buf = elm.Buffer(8)
    consumer = buf.new_consumer()
    pages = iter([list(range(i, i + 5)) for i in range(0, 500, 5)])
    highest = [0]

    def fetcher(ctx: Any) -> tuple[list[int], bool]:
        page = next(pages, None)
        return (page or []), page is not None

    def init() -> tuple[int, Any]:
        return 0, None

    def update(message: int) -> Any:
        highest[0] = max(highest[0], len(buf))
        return lambda model: (model + message, None)

    got = elm.batch(init, update, lambda m: None, buf, consumer, fetcher)
    assert got == sum(range(500))
    # the feeder's pages (5 messages each) waited for room: never much above maxsize
    assert highest[0] <= 8 + 5 + 2, highest[0]


def waiting_in_condition(name: str) -> bool:
    """A thread of that name is blocked in ``threading.Condition.wait``."""
    idents = {t.ident for t in threading.enumerate() if t.name == name}
    frames = sys._current_frames()
    return any(
        ident in frames and frames[ident].f_code is threading.Condition.wait.__code__
        for ident in idents
    )


def test_a_feeders_page_changed_while_its_put_waits_is_put_as_fetched(elm: ModuleType) -> None:
    # The feeder puts a fetched list without copying it; once that put has to
    # wait, the list's owner may change it. What goes in is the page as fetched.
    buf = elm.Buffer(2)
    consumer = buf.new_consumer()
    page = [("page", i, [i] * 50) for i in range(40)]
    fetched = list(page)
    seen: list[Any] = []

    def fetcher(ctx: Any) -> tuple[list[Any], bool]:
        assert wait_for(lambda: len(buf) >= 2, timeout=SAFETY)  # full: this put will wait
        return page, False

    def update(message: Any) -> Any:
        seen.append(message)
        if len(seen) == 1:
            assert wait_for(lambda: waiting_in_condition("elmstate-feeder"), timeout=SAFETY)
            page.clear()  # its items' last references elsewhere go with it...
            fetched.clear()
            gc.collect()
            junk = [[object()] * 8 for _ in range(2_000)]  # ...and their memory is reused
            del junk
        return lambda model: (model + 1, None)

    def init() -> tuple[int, Any]:
        return 0, elm.new_command("i1", "i2")  # the first tick's puts fill it: they never wait

    got = elm.batch(init, update, lambda m: None, buf, consumer, fetcher)
    assert got == 42
    assert seen[:2] == ["i1", "i2"]
    assert [message[:2] for message in seen[2:]] == [("page", i) for i in range(40)]


# --------------------------------------------------------------------------- drop_oldest


def test_drop_oldest_keeps_the_newest_and_counts_what_a_consumer_lost(elm: ModuleType) -> None:
    buf = elm.Buffer(3, overflow="drop_oldest")
    early, late = buf.new_consumer(), buf.new_consumer()
    buf.put(None, 1, 2)
    assert early.get() == 1
    buf.put(None, 3, 4, 5, 6)  # never waits: 1, 2 and 3 are dropped
    assert buf.slice() == [4, 5, 6]
    assert early.get() == elm.Dropped(2)  # it had read 1: lost 2 and 3
    assert [early.get() for _ in range(3)] == [4, 5, 6]
    assert late.get() == elm.Dropped(3)
    assert late.get() == 4


def test_dropped_is_an_ordinary_message_that_rollback_reads_again(elm: ModuleType) -> None:
    buf = elm.Buffer(2, overflow="drop_oldest")
    consumer = buf.new_consumer()
    buf.put(None, *range(10))
    assert consumer.get() == elm.Dropped(8)
    assert consumer.get() == 8
    consumer.rollback()
    assert consumer.get() == elm.Dropped(8)
    consumer.commit()
    assert consumer.get() == 8
    dropped = elm.Dropped(8)
    assert dropped.count == 8 and repr(dropped) == "Dropped(8)"
    assert dropped != elm.Dropped(7) and hash(dropped) == hash(elm.Dropped(8))
    assert copy.copy(dropped) == dropped and copy.deepcopy(dropped) is not dropped


def test_drop_oldest_wakes_a_waiting_get_with_dropped(elm: ModuleType) -> None:
    buf = elm.Buffer(1, overflow="drop_oldest")
    consumer = buf.new_consumer()
    buf.put(None, "a")
    assert consumer.get() == "a"
    waiter = InThread(lambda: [consumer.get(elm.Context(timeout=SAFETY)) for _ in range(2)])
    time.sleep(0.02)
    buf.put(None, "b", "c", "d")  # b and c dropped as they arrive, or after it woke
    waiter.join()
    assert waiter.error is None
    assert waiter.result in (["b", "c"], [elm.Dropped(2), "d"], ["b", elm.Dropped(1)])


def test_run_hands_dropped_to_update_with_the_exact_count(elm: ModuleType) -> None:
    buf = elm.Buffer(10, overflow="drop_oldest")
    consumer = buf.new_consumer()
    buf.put(None, *range(1, 101))  # 90 dropped before the loop reads anything
    seen: list[Any] = []

    def update(message: Any) -> Any:
        seen.append(message)
        if message == 100:
            raise Stop
        return None

    with pytest.raises(Stop):
        elm.run(lambda: (0, None), update, lambda m: None, buf, consumer)
    assert seen == [elm.Dropped(90), *range(91, 101)]


# --------------------------------------------------------------------------- the long proof


def test_ten_million_messages_through_a_bounded_buffer_keep_memory_flat(
    elm: ModuleType,
) -> None:
    n = 10_000_000
    maxsize = 10_000
    buf = elm.Buffer(maxsize)
    consumer = buf.new_consumer()
    rss: list[int] = []
    highest = [0]
    state = {"expected": 0}

    def produce() -> None:
        put = buf.put
        for i in range(n):
            put(None, i)
        put(None, -1)

    def update(message: int) -> Any:
        if message == -1:
            raise Stop
        if message != state["expected"]:
            raise AssertionError(f"got {message}, expected {state['expected']}")
        state["expected"] += 1
        if message % 250_000 == 0:
            rss.append(rss_bytes())
            highest[0] = max(highest[0], len(buf))
        return None

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    with pytest.raises(Stop):
        elm.run(lambda: (0, None), update, lambda m: None, elm.Buffer(), consumer)
    producer.join(SAFETY)
    assert state["expected"] == n  # every message, once, in order
    assert highest[0] <= maxsize + 1, highest[0]
    settled = rss[len(rss) // 10 :]  # past the warm-up
    growth = max(settled) - min(settled)
    print(
        f"\n{'compiled' if elm.compiled else 'pure'}: {n:,} messages, maxsize {maxsize:,}:"
        f" RSS {min(settled) / 2**20:.1f}..{max(settled) / 2**20:.1f} MiB"
        f" (growth {growth / 2**20:.2f} MiB), most held {highest[0]:,}"
    )
    assert growth < 16 * 2**20, [r // 2**20 for r in rss]
