"""What a Buffer holds and drops: the default cleaner, its cooldown, its timer
(docs/contract.md#buffer-retention)."""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import pytest
from _helpers import drain, wait_for

# --------------------------------------------------------------------------- retention


def test_default_cleaner_function(elm: ModuleType) -> None:
    assert elm.default_cleaner(10, []) == 0
    assert elm.default_cleaner(10, [4, 7]) == 4
    assert elm.default_cleaner(10, [7, 0, 3]) == 0
    assert elm.default_cleaner(5, [5, 5]) == 5


def test_nothing_is_dropped_without_consumers(elm: ModuleType) -> None:
    buf = elm.Buffer()
    buf.put(None, 1, 2, 3)
    time.sleep(0.1)
    buf.put(None, 4)
    time.sleep(0.1)
    assert buf.slice() == [1, 2, 3, 4]


def test_uncommitted_reads_hold_their_messages(elm: ModuleType) -> None:
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.put(None, 1, 2, 3)
    drain(consumer, 3)
    time.sleep(0.1)
    buf.put(None, 4)
    time.sleep(0.1)
    assert buf.slice() == [1, 2, 3, 4]


@pytest.mark.parametrize("explicit", [False, True], ids=["default", "set_cleaner"])
def test_committed_messages_are_dropped_without_further_put_or_get(
    elm: ModuleType, explicit: bool
) -> None:
    buf = elm.Buffer()
    if explicit:
        buf.set_cleaner(elm.default_cleaner, cooldown=0.01)
    a, b = buf.new_consumer(), buf.new_consumer()
    buf.put(None, *range(10))
    drain(a, 10)
    a.commit()
    drain(b, 6)
    b.commit()
    # b committed only 6: the last 4 stay, and nothing touches the buffer from here on.
    assert wait_for(lambda: len(buf) == 4)
    assert buf.slice() == [6, 7, 8, 9]
    drain(b, 4)
    b.commit()
    assert wait_for(lambda: len(buf) == 0)
    assert buf.slice() == []


def test_cleaning_respects_the_cooldown_and_runs_later_on_the_timer_thread(
    elm: ModuleType,
) -> None:
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    began = time.monotonic()
    buf.set_cleaner(elm.default_cleaner, cooldown=0.5)  # cleans now: the cooldown starts
    buf.put(None, 1, 2, 3)
    drain(consumer, 3)
    consumer.commit()  # too early to clean again: it is scheduled instead
    if time.monotonic() - began < 0.4:
        assert len(buf) == 3
    assert wait_for(lambda: len(buf) == 0, timeout=3.0)
    assert time.monotonic() - began >= 0.49
    timers = [t for t in threading.enumerate() if t.name == "elmstate-timer"]
    assert timers, "no thread named elmstate-timer"
    assert all(t.daemon for t in timers)


def test_scheduled_cleaning_shares_one_timer_thread(elm: ModuleType) -> None:
    elm.Buffer().set_cleaner(elm.default_cleaner, cooldown=0)  # let any lazy start happen
    elm.Context(timeout=0.001)
    time.sleep(0.02)
    before = set(threading.enumerate())
    buffers = []
    for _ in range(20):
        buf = elm.Buffer()
        consumer = buf.new_consumer()
        buf.set_cleaner(elm.default_cleaner, cooldown=0.3)
        buf.put(None, "x")
        consumer.get()
        consumer.commit()  # a pending, scheduled cleaning per buffer
        buffers.append((buf, consumer))
    new = set(threading.enumerate()) - before
    assert not new, f"scheduling cleanups started threads: {new}"
    assert wait_for(lambda: all(len(b) == 0 for b, _ in buffers), timeout=3.0)


def test_the_cleaner_runs_at_most_once_per_cooldown(elm: ModuleType) -> None:
    calls: list[float] = []

    def cleaner(size: int, offsets: Sequence[int]) -> int:
        calls.append(time.monotonic())
        return int(elm.default_cleaner(size, offsets))

    buf = elm.Buffer()
    consumer = buf.new_consumer()
    cooldown = 0.1
    began = time.monotonic()
    buf.set_cleaner(cleaner, cooldown=cooldown)
    while time.monotonic() - began < 0.6:
        buf.put(None, 1)
        consumer.get()
        consumer.commit()
        time.sleep(0.001)
    assert wait_for(lambda: len(buf) == 0)
    elapsed = time.monotonic() - began
    assert len(calls) >= 2
    assert len(calls) <= elapsed / cooldown + 2
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert min(gaps) >= cooldown * 0.9, gaps


def test_the_cleaner_gets_size_and_committed_offsets_of_open_consumers(
    elm: ModuleType,
) -> None:
    calls: list[tuple[int, list[int]]] = []

    def cleaner(size: int, offsets: Sequence[int]) -> int:
        calls.append((size, sorted(offsets)))
        return int(elm.default_cleaner(size, offsets))

    buf = elm.Buffer()
    buf.set_cleaner(cleaner, cooldown=0)
    a, b = buf.new_consumer(), buf.new_consumer()
    calls.clear()
    buf.put(None, "p", "q", "r", "s")
    assert calls[-1] == (4, [0, 0])
    drain(a, 3)
    a.commit()
    assert calls[-1] == (4, [0, 3])
    b.get()
    b.commit()
    assert calls[-1] == (4, [1, 3])  # offsets are relative to the buffer's start...
    assert buf.slice() == ["q", "r", "s"]
    b.get()
    b.commit()
    assert calls[-1] == (3, [1, 2])  # ...which moved by the one dropped message
    assert buf.slice() == ["r", "s"]
    a.close()
    assert calls[-1] == (2, [0])  # a closed consumer is not offered
    assert buf.slice() == ["r", "s"]


def held_by_an_idle_consumer(elm: ModuleType) -> tuple[Any, Any, Any]:
    """(buffer, reader, idle): reader read and committed all 5 messages, idle nothing."""
    buf = elm.Buffer()
    reader, idle = buf.new_consumer(), buf.new_consumer()
    buf.put(None, 1, 2, 3, 4, 5)
    drain(reader, 5)
    reader.commit()
    time.sleep(0.1)
    assert len(buf) == 5  # idle has committed nothing
    return buf, reader, idle


def test_a_closed_consumer_no_longer_holds_messages(elm: ModuleType) -> None:
    buf, reader, idle = held_by_an_idle_consumer(elm)
    idle.close()
    assert wait_for(lambda: len(buf) == 0)


def test_a_dropped_consumer_no_longer_holds_messages(elm: ModuleType) -> None:
    buf, reader, idle = held_by_an_idle_consumer(elm)
    del idle  # never closed
    gc.collect()
    buf.put(None, 6)  # give the cleaner a reason to run
    assert wait_for(lambda: len(buf) == 1)
    assert buf.slice() == [6]


def test_after_the_last_consumer_closes_nothing_more_is_dropped(elm: ModuleType) -> None:
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.put(None, 1, 2)
    drain(consumer, 2)
    consumer.commit()
    assert wait_for(lambda: len(buf) == 0)
    consumer.close()
    buf.put(None, 3, 4)
    time.sleep(0.1)
    buf.put(None, 5)
    time.sleep(0.05)
    assert buf.slice() == [3, 4, 5]


# --------------------------------------------------------------------------- cost of a pass


def test_a_clean_pass_does_not_copy_the_backlog(elm: ModuleType) -> None:
    """Issue 7, defect 10: a pass that drops one message allocates nothing like the backlog.

    The pure core used to rebuild its 80,000-slot list on every pass (~640 KB).
    """
    backlog = 80_000
    buf = elm.Buffer()
    buf.set_cleaner(elm.default_cleaner, cooldown=0)  # every commit cleans, inline
    consumer = buf.new_consumer()
    buf.put(None, *(["m"] * backlog))
    buf.put(None, "m")  # any growth of the storage happens before the measurement
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        for _ in range(3):  # warm up whatever a pass allocates once
            consumer.get()
            consumer.commit()
        tracemalloc.reset_peak()
        current, _ = tracemalloc.get_traced_memory()
        for _ in range(1_000):
            consumer.get()
            consumer.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not tracing:
            tracemalloc.stop()
    assert len(buf) == backlog + 1 - 1_003
    assert peak - current < 200_000, f"a clean pass allocated up to {peak - current} bytes"


def test_a_shorter_cooldown_replaces_a_pass_scheduled_under_a_longer_one(
    elm: ModuleType,
) -> None:
    """set_cleaner with a shorter cooldown takes effect at once.

    A pass scheduled under an hour's cooldown used to stay the only one
    scheduled: nothing committed was dropped until it came due.
    """
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.set_cleaner(elm.default_cleaner, cooldown=3600)  # runs now; the next pass in an hour
    buf.put(None, 1, 2, 3)
    for _ in range(3):
        consumer.get()
    consumer.commit()
    assert len(buf) == 3
    buf.set_cleaner(elm.default_cleaner, cooldown=0.01)
    assert wait_for(lambda: len(buf) == 0)
