"""Reference ownership of Buffer messages, on both cores.

The compiled core holds messages in a C array of owned references: one
``Py_INCREF`` per put, one ``Py_DECREF`` per reaped slot, the rest released when
the buffer is deallocated. A missing decref leaks, an extra one frees a live
object. These tests pin the counts exactly: ``sys.getrefcount`` of a message
before it was put equals its count after it was consumed, committed and reaped.
"""

from __future__ import annotations

import gc
import sys
import time
import weakref
from types import ModuleType
from typing import Any

import pytest
from _helpers import wait_for


class Msg:
    """A unique, weak-referenceable message."""

    __slots__ = ("n", "payload", "__weakref__")

    def __init__(self, n: int, payload: Any = None) -> None:
        self.n = n
        self.payload = payload

    def __repr__(self) -> str:
        return f"Msg({self.n})"


def counts(objs: list[Any]) -> list[int]:
    """Reference counts of ``objs``. Always pass the same list object (a slice of it
    would add one reference per element) and slice the result instead."""
    return [sys.getrefcount(o) for o in objs]


def plus_one(counts: list[int]) -> list[int]:
    return [c + 1 for c in counts]


def settle(objs: list[Any], expected: list[int], timeout: float = 2.0) -> list[int]:
    """Counts once they have dropped to ``expected`` (a timer thread may still be
    releasing a dropped batch when ``len(buf)`` already reads 0), or after timeout."""
    wait_for(lambda: all(c <= e for c, e in zip(counts(objs), expected)), timeout)
    return counts(objs)


def all_dead(refs: list[weakref.ref[Any]], timeout: float = 2.0) -> bool:
    def check() -> bool:
        gc.collect()
        return all(r() is None for r in refs)

    return wait_for(check, timeout)


def read_the_rest_and_reap(buf: Any, consumer: Any, msgs: list[Any], start: int) -> None:
    """Read msgs[start:] in order, each the very object put, commit, and wait for the reaping."""
    for i in range(start, len(msgs)):
        got = consumer.get()
        assert got is msgs[i]
        del got
    consumer.commit()
    assert wait_for(lambda: len(buf) == 0)


@pytest.fixture(params=[0, 0.01], ids=["cooldown0", "cooldown10ms"])
def cooldown(request: pytest.FixtureRequest) -> float:
    return float(request.param)


def make_buffer(elm: ModuleType, cooldown: float) -> Any:
    buf = elm.Buffer()
    buf.set_cleaner(elm.default_cleaner, cooldown=cooldown)
    return buf


# --------------------------------------------------------------------------- consume, commit, reap


def test_consumed_committed_reaped_messages_are_released(elm: ModuleType, cooldown: float) -> None:
    msgs = [Msg(i) for i in range(200)]
    before = counts(msgs)
    buf = make_buffer(elm, cooldown)
    consumer = buf.new_consumer()
    buf.put(None, *msgs[:100])  # one put of many values
    for i in range(100, 200):  # and many puts of one
        buf.put(None, msgs[i])
    assert counts(msgs) == plus_one(before)  # exactly one reference each
    for i in range(len(msgs)):
        got = consumer.get()
        assert got is msgs[i]
        del got
        if i % 7 == 0:
            consumer.commit()
    consumer.commit()
    assert wait_for(lambda: len(buf) == 0)
    assert settle(msgs, before) == before


def test_a_message_is_held_until_every_consumer_committed(elm: ModuleType, cooldown: float) -> None:
    m = Msg(0)
    before = sys.getrefcount(m)
    buf = make_buffer(elm, cooldown)
    a, b = buf.new_consumer(), buf.new_consumer()
    buf.put(None, m)
    assert a.get() is m
    a.commit()
    time.sleep(0.05)
    assert sys.getrefcount(m) == before + 1  # b still needs it
    assert b.get() is m
    b.commit()
    assert wait_for(lambda: len(buf) == 0)
    assert wait_for(lambda: sys.getrefcount(m) <= before)
    assert sys.getrefcount(m) == before


def test_ring_growth_and_wraparound_keep_exact_counts(elm: ModuleType, cooldown: float) -> None:
    msgs = [Msg(i) for i in range(3000)]
    before = counts(msgs)
    buf = make_buffer(elm, cooldown)
    consumer = buf.new_consumer()
    sent = read = 0
    for width in [1, 15, 16, 17, 3, 100, 64, 1, 500, 7, 1000, 2, 1274]:
        buf.put(None, *msgs[sent : sent + width])
        sent += width
        for _ in range(width // 2 + 1):
            if read == sent:
                break
            got = consumer.get()
            assert got is msgs[read]
            del got
            read += 1
        consumer.commit()
    assert sent == len(msgs)
    assert wait_for(lambda: len(buf) == sent - read)
    expected = before[:read] + plus_one(before[read:])  # reaped / still held
    assert settle(msgs, expected) == expected  # growth copied slots, never increfed twice
    read_the_rest_and_reap(buf, consumer, msgs, read)
    assert settle(msgs, before) == before


def test_a_burst_then_shrinking_keeps_exact_counts(elm: ModuleType, cooldown: float) -> None:
    # A burst grows a ring implementation far beyond its usual size; reaping most of
    # it may shrink the ring again, moving the still-held references.
    msgs = [Msg(i) for i in range(9000)]
    before = counts(msgs)
    buf = make_buffer(elm, cooldown)
    consumer = buf.new_consumer()
    buf.put(None, *msgs[:6000])
    for i in range(5990):
        got = consumer.get()
        assert got is msgs[i]
        del got
    consumer.commit()
    assert wait_for(lambda: len(buf) == 10)
    expected = before[:5990] + plus_one(before[5990:6000]) + before[6000:]
    assert settle(msgs, expected) == expected
    assert buf.slice() == msgs[5990:6000]
    for i in range(6000, 9000, 3):  # grow again, wrapping around, reading as we go
        buf.put(None, *msgs[i : i + 3])
        got = consumer.get()
        del got
    read = 5990 + 1000
    consumer.commit()
    assert wait_for(lambda: len(buf) == 9000 - read)
    expected = before[:read] + plus_one(before[read:])
    assert settle(msgs, expected) == expected
    assert buf.slice() == msgs[read:]
    read_the_rest_and_reap(buf, consumer, msgs, read)
    assert settle(msgs, before) == before


# --------------------------------------------------------------------------- slice, rollback


def test_slice_copies_hold_their_own_references(elm: ModuleType, cooldown: float) -> None:
    m, n = Msg(0), Msg(1)
    before_m, before_n = sys.getrefcount(m), sys.getrefcount(n)
    buf = make_buffer(elm, cooldown)
    consumer = buf.new_consumer()
    buf.put(None, m, n)
    copy = buf.slice()
    assert copy[0] is m and copy[1] is n
    assert sys.getrefcount(m) == before_m + 2  # the buffer's and the copy's
    second = buf.slice()
    assert sys.getrefcount(m) == before_m + 3
    del second
    assert consumer.get() is m
    assert consumer.get() is n
    consumer.commit()
    assert wait_for(lambda: len(buf) == 0)
    assert wait_for(lambda: sys.getrefcount(m) <= before_m + 1)
    assert sys.getrefcount(m) == before_m + 1  # the copy outlives the reaped slot
    assert sys.getrefcount(n) == before_n + 1
    assert copy == [m, n]
    del copy
    assert sys.getrefcount(m) == before_m
    assert sys.getrefcount(n) == before_n
    assert buf.slice() == []


def test_rolled_back_messages_are_neither_leaked_nor_double_freed(
    elm: ModuleType, cooldown: float
) -> None:
    msgs = [Msg(i) for i in range(40)]
    before = counts(msgs)
    buf = make_buffer(elm, cooldown)
    consumer = buf.new_consumer()
    buf.put(None, *msgs)
    for _ in range(3):  # read all, roll back, again
        for i in range(len(msgs)):
            got = consumer.get()
            assert got is msgs[i]
            del got
        consumer.rollback()
        assert counts(msgs) == plus_one(before)
    for i in range(10):  # partial read, commit, partial read, roll back
        assert consumer.get() is msgs[i]
    consumer.commit()
    for i in range(10, 30):
        assert consumer.get() is msgs[i]
    consumer.rollback()
    assert wait_for(lambda: len(buf) == 30)
    expected = before[:10] + plus_one(before[10:])
    assert settle(msgs, expected) == expected
    read_the_rest_and_reap(buf, consumer, msgs, 10)  # the rolled-back ones
    assert settle(msgs, before) == before
    assert [m.n for m in msgs] == list(range(40))  # still intact objects


def test_trimmed_messages_are_released(elm: ModuleType) -> None:
    msgs = [Msg(i) for i in range(10)]
    before = counts(msgs)
    buf = elm.Buffer()
    buf.set_cleaner(elm.fixed_buffer_cleaner(5, 2), cooldown=0)
    lagging = buf.new_consumer()
    buf.put(None, *msgs)  # 10 > 5: trimmed to the last 2
    assert buf.slice() == msgs[8:]
    expected = before[:8] + plus_one(before[8:])
    assert counts(msgs) == expected
    with pytest.raises(elm.Lagged):
        lagging.get()
    assert counts(msgs) == expected
    del buf, lagging
    gc.collect()
    assert counts(msgs) == before


def test_failed_puts_and_gets_take_no_references(elm: ModuleType) -> None:
    m = Msg(0)
    before = sys.getrefcount(m)
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    ended = elm.Context()
    ended.cancel()
    with pytest.raises(elm.Canceled):
        buf.put(ended, m, m)
    # Raising the stored ctx.err attaches the traceback (with the frames, and so the
    # arguments, of the failed call) to that one long-lived object: drop it, since
    # only the buffer's own references are under test here.
    ended.err.__traceback__ = None
    assert sys.getrefcount(m) == before
    buf.put(None, m)
    with pytest.raises(elm.Canceled):
        consumer.get(ended)
    ended.err.__traceback__ = None
    buf.close()
    with pytest.raises(elm.Closed):
        buf.put(None, m)
    with pytest.raises(elm.Closed):
        consumer.get()
    assert sys.getrefcount(m) == before + 1  # the one put that succeeded
    del buf, consumer
    gc.collect()
    assert sys.getrefcount(m) == before


# --------------------------------------------------------------------------- dropping buffers


def test_closing_then_dropping_a_buffer_releases_everything(elm: ModuleType) -> None:
    msgs = [Msg(i) for i in range(100)]
    refs = [weakref.ref(m) for m in msgs]
    before = counts(msgs)
    buf = elm.Buffer()
    buf.set_cleaner(elm.default_cleaner, cooldown=0.5)  # leaves a cleaning pending
    consumer = buf.new_consumer()
    buf.put(None, *msgs)
    for _ in range(30):
        consumer.get()
    consumer.commit()  # committed but not reaped yet (cooldown)
    for _ in range(30):
        consumer.get()  # uncommitted
    buf.close()
    assert counts(msgs) == plus_one(before)  # the closed buffer still holds them
    buffer_ref = weakref.ref(buf)
    del buf, consumer
    assert wait_for(lambda: counts(msgs) == before, timeout=0.3)  # at once, by refcount
    msgs.clear()
    assert all_dead(refs)
    assert all_dead([buffer_ref])


def test_dropping_an_unclosed_buffer_releases_everything(elm: ModuleType) -> None:
    refs: list[weakref.ref[Any]] = []
    buf = elm.Buffer()
    buf.set_cleaner(elm.default_cleaner, cooldown=1.0)  # a pending cleaning must not pin it
    consumers = [buf.new_consumer() for _ in range(3)]
    for i in range(500):
        m = Msg(i)
        refs.append(weakref.ref(m))
        buf.put(None, m)
    del m
    consumers[0].get()
    consumers[0].commit()
    for _ in range(10):
        consumers[1].get()  # uncommitted
    assert all(r() is not None for r in refs)
    buffer_ref = weakref.ref(buf)
    del buf, consumers
    assert all_dead(refs, timeout=0.5)  # well before the pending cleaning is due
    assert all_dead([buffer_ref], timeout=0.5)


def test_a_consumer_keeps_its_buffer_alive(elm: ModuleType) -> None:
    m = Msg(0)
    ref = weakref.ref(m)
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.put(None, m)
    del buf, m
    gc.collect()
    got = consumer.get()
    assert got is ref()
    del got, consumer
    assert all_dead([ref])


def test_a_message_referring_to_its_buffer_is_collected(elm: ModuleType) -> None:
    # A message that refers back to its buffer (a closure over the producer, a
    # reply-to field) makes a reference cycle through the buffer's storage; the
    # cycle collector must be able to break it, as it does for a list.
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    m = Msg(0, payload=buf)
    ref, buffer_ref = weakref.ref(m), weakref.ref(buf)
    buf.put(None, m)
    del buf, consumer, m
    assert all_dead([ref, buffer_ref])
