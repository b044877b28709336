"""Buffer and BufferConsumer semantics (SPEC §7), on both cores.

Timing-dependent checks poll with generous deadlines and measure latencies as the
best of several attempts, so a noisy CI machine does not make them flaky; every
call that could block carries a ``Context`` timeout as a safety net, so a bug
fails the test instead of hanging it.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Callable

import pytest
from _helpers import wait_for

SAFETY = 5.0  # seconds: a blocked call that should have woken fails instead of hanging
WAKE_LIMIT = 0.05  # seconds: SPEC §2 "within a few milliseconds", with room for a noisy box


class InThread:
    """Runs ``fn()`` in a daemon thread; records its result or exception and when it ended."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.started = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.ended_at = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.started.wait(SAFETY)

    def _run(self) -> None:
        self.started.set()
        try:
            self.result = self.fn()
        except BaseException as exc:  # recorded for the test to inspect
            self.error = exc
        finally:
            self.ended_at = time.monotonic()

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def join(self, timeout: float = SAFETY + 2) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the blocked call never returned"


def drain(consumer: Any, n: int) -> list[Any]:
    """Read ``n`` messages that are already available."""
    return [consumer.get() for _ in range(n)]


# --------------------------------------------------------------------------- FIFO, broadcast


def test_fifo(elm: ModuleType) -> None:
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    for i in range(100):
        buf.put(None, i)
    assert drain(consumer, 100) == list(range(100))
    assert buf.diff(consumer) == 0


def test_put_of_several_values_keeps_their_order(elm: ModuleType) -> None:
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.put(None, "a", "b", "c")
    buf.put(None)  # no values: a no-op
    buf.put(elm.Context(), "d", "e")
    assert len(buf) == 5
    assert buf.slice() == ["a", "b", "c", "d", "e"]
    assert drain(consumer, 5) == ["a", "b", "c", "d", "e"]


def test_get_returns_the_very_object_that_was_put(elm: ModuleType) -> None:
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    message = object()
    buf.put(None, message)
    assert consumer.get() is message


def test_ring_growth_keeps_order_across_wraparound(elm: ModuleType) -> None:
    # Interleave reads (which let the cleaner reap) with puts of varying width so a
    # ring implementation wraps around and grows several times.
    buf = elm.Buffer()
    buf.set_cleaner(elm.default_cleaner, cooldown=0)
    consumer = buf.new_consumer()
    expected = 0
    sent = 0
    for width in [1, 3, 7, 15, 16, 17, 31, 64, 5, 100, 2, 300]:
        buf.put(None, *range(sent, sent + width))
        sent += width
        for _ in range(width // 2 + 1):
            if buf.diff(consumer) == 0:
                break
            assert consumer.get() == expected
            expected += 1
        consumer.commit()
        assert buf.slice() == list(range(expected, sent))
    assert drain(consumer, sent - expected) == list(range(expected, sent))


def test_order_survives_a_burst_and_its_reaping(elm: ModuleType) -> None:
    buf = elm.Buffer()
    buf.set_cleaner(elm.default_cleaner, cooldown=0)
    consumer = buf.new_consumer()
    buf.put(None, *range(10_000))
    assert drain(consumer, 9_990) == list(range(9_990))
    consumer.commit()
    assert buf.slice() == list(range(9_990, 10_000))
    for start in range(10_000, 13_000, 7):  # refill past the old span, reading as we go
        buf.put(None, *range(start, start + 7))
        consumer.get()
        consumer.commit()
    total = start + 7
    read = 9_990 + len(range(10_000, 13_000, 7))
    assert buf.slice() == list(range(read, total))
    assert drain(consumer, total - read) == list(range(read, total))


def test_broadcast_every_consumer_sees_every_message(elm: ModuleType) -> None:
    buf = elm.Buffer()
    consumers = [buf.new_consumer() for _ in range(3)]
    buf.put(None, 1, 2, 3)
    buf.put(None, 4)
    for consumer in consumers:
        assert buf.diff(consumer) == 4
    for consumer in consumers:
        assert drain(consumer, 4) == [1, 2, 3, 4]
        assert buf.diff(consumer) == 0
    # One consumer's commit does not release what the others still need.
    consumers[0].commit()
    time.sleep(0.05)
    assert len(buf) == 4


def test_new_consumer_starts_at_the_oldest_held_message(elm: ModuleType) -> None:
    buf = elm.Buffer()
    first = buf.new_consumer()
    buf.put(None, 1, 2, 3, 4, 5)
    assert drain(first, 3) == [1, 2, 3]
    first.commit()
    assert wait_for(lambda: len(buf) == 2)
    second = buf.new_consumer()
    assert buf.diff(second) == 2
    assert drain(second, 2) == [4, 5]
    # A consumer made before anything was put starts at the first put.
    empty = elm.Buffer()
    early = empty.new_consumer()
    empty.put(None, "x")
    assert early.get() == "x"


# --------------------------------------------------------------------------- commit / rollback


def test_rollback_rereads_uncommitted_messages(elm: ModuleType) -> None:
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.put(None, 1, 2, 3)
    assert drain(consumer, 3) == [1, 2, 3]
    consumer.rollback()
    assert buf.diff(consumer) == 3
    assert drain(consumer, 3) == [1, 2, 3]
    consumer.commit()
    buf.put(None, 4)
    assert consumer.get() == 4


def test_rollback_after_partial_reads_returns_to_the_last_commit(elm: ModuleType) -> None:
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.put(None, 1, 2, 3, 4, 5)
    assert drain(consumer, 2) == [1, 2]
    consumer.commit()
    assert drain(consumer, 2) == [3, 4]
    consumer.rollback()
    assert buf.diff(consumer) == 3
    assert consumer.get() == 3
    consumer.rollback()  # again, after a single re-read
    assert drain(consumer, 3) == [3, 4, 5]
    consumer.commit()
    assert buf.diff(consumer) == 0
    with pytest.raises(elm.NothingUncommitted):
        consumer.rollback()


def test_rollback_only_moves_its_own_consumer(elm: ModuleType) -> None:
    buf = elm.Buffer()
    a, b = buf.new_consumer(), buf.new_consumer()
    buf.put(None, 1, 2)
    assert drain(a, 2) == [1, 2]
    assert b.get() == 1
    a.rollback()
    assert b.get() == 2
    assert a.get() == 1


def test_nothing_uncommitted(elm: ModuleType) -> None:
    assert issubclass(elm.NothingUncommitted, RuntimeError)
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    with pytest.raises(elm.NothingUncommitted):
        consumer.commit()
    with pytest.raises(elm.NothingUncommitted):
        consumer.rollback()
    buf.put(None, 1, 2)
    consumer.get()
    consumer.commit()
    with pytest.raises(elm.NothingUncommitted):
        consumer.commit()
    consumer.get()
    consumer.rollback()
    with pytest.raises(elm.NothingUncommitted):
        consumer.rollback()
    with pytest.raises(elm.NothingUncommitted):
        consumer.commit()
    # The failed calls changed nothing: the rolled-back message is read again.
    assert consumer.get() == 2


def test_commit_and_rollback_on_a_closed_consumer_raise_closed(elm: ModuleType) -> None:
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.put(None, 1, 2)
    consumer.get()
    consumer.close()
    with pytest.raises(elm.Closed):
        consumer.commit()
    with pytest.raises(elm.Closed):
        consumer.rollback()
    idle = buf.new_consumer()
    idle.close()  # nothing uncommitted: still Closed, not NothingUncommitted
    with pytest.raises(elm.Closed):
        idle.commit()
    with pytest.raises(elm.Closed):
        idle.rollback()


# --------------------------------------------------------------------------- len / slice / diff


def test_len_slice_diff(elm: ModuleType) -> None:
    buf = elm.Buffer()
    assert len(buf) == 0
    assert buf.slice() == []
    consumer = buf.new_consumer()
    assert buf.diff(consumer) == 0
    buf.put(None, "a", "b", "c")
    assert len(buf) == 3
    assert buf.diff(consumer) == 3
    assert consumer.get() == "a"
    assert buf.diff(consumer) == 2
    assert len(buf) == 3  # a read alone releases nothing
    copy = buf.slice()
    assert copy == ["a", "b", "c"]
    assert type(copy) is list
    copy.append("mutated")
    assert buf.slice() == ["a", "b", "c"]  # a copy, not a view
    consumer.rollback()
    assert buf.diff(consumer) == 3


def test_diff_rejects_a_consumer_of_another_buffer(elm: ModuleType) -> None:
    buf, other = elm.Buffer(), elm.Buffer()
    stranger = other.new_consumer()
    with pytest.raises(ValueError):
        buf.diff(stranger)
    with pytest.raises((TypeError, ValueError)):
        buf.diff(object())


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


# --------------------------------------------------------------------------- fixed_buffer_cleaner


def test_fixed_buffer_cleaner_function(elm: ModuleType) -> None:
    notes: list[Any] = []
    cleaner = elm.fixed_buffer_cleaner(5, 2, notes.append)
    assert cleaner(5, [0]) == 0
    assert cleaner(0, []) == 0
    assert notes == []
    assert cleaner(6, [1, 3]) == 4
    assert len(notes) == 1
    note = notes[0]
    assert isinstance(note, elm.CleanerNotification)
    assert note == (5, 2, 6, [1, 3], 4)
    assert (note.max_size, note.target_size, note.size, note.trim) == (5, 2, 6, 4)
    assert elm.fixed_buffer_cleaner(3, 0)(10, []) == 10  # no callback: fine


def test_fixed_buffer_cleaner_validates_its_arguments(elm: ModuleType) -> None:
    with pytest.raises(ValueError):
        elm.fixed_buffer_cleaner(2, 3)  # target above max
    with pytest.raises(ValueError):
        elm.fixed_buffer_cleaner(2, -1)
    with pytest.raises(TypeError):
        elm.fixed_buffer_cleaner("5", 2)
    with pytest.raises(TypeError):
        elm.fixed_buffer_cleaner(5, 2, callback=42)


def test_fixed_buffer_cleaner_trims_and_a_lagging_consumer_gets_lagged(elm: ModuleType) -> None:
    notes: list[Any] = []
    buf = elm.Buffer()
    buf.set_cleaner(elm.fixed_buffer_cleaner(5, 2, notes.append), cooldown=0)
    fast, slow = buf.new_consumer(), buf.new_consumer()
    for i in range(5):
        buf.put(None, i)
        assert fast.get() == i
        fast.commit()
    assert len(buf) == 5  # not over max: committed messages stay (no default cleaner)
    assert notes == []
    buf.put(None, 5)  # size 6 > max 5: trimmed back to target 2
    assert buf.slice() == [4, 5]
    assert len(notes) == 1
    note = notes[0]
    assert isinstance(note, elm.CleanerNotification)
    assert (note.max_size, note.target_size, note.size, note.trim) == (5, 2, 6, 4)
    assert sorted(note.offsets) == [0, 5]
    assert fast.get() == 5  # kept up: unaffected
    with pytest.raises(elm.Lagged):
        slow.get()
    buf.put(None, 6)
    with pytest.raises(elm.Lagged):  # and it stays lagged
        slow.get(elm.Context(timeout=SAFETY))
    fresh = buf.new_consumer()
    assert drain(fresh, 3) == [4, 5, 6]
    assert issubclass(elm.Lagged, LookupError)


def test_a_trim_by_the_timer_thread_makes_the_next_get_raise_lagged(elm: ModuleType) -> None:
    notes: list[Any] = []
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.set_cleaner(elm.fixed_buffer_cleaner(2, 0, notes.append), cooldown=0.3)  # runs now
    buf.put(None, 1)
    assert consumer.get() == 1
    buf.put(None, 2, 3)  # over max, but within the cooldown: trimmed later, by the timer
    assert wait_for(lambda: len(buf) == 0, timeout=3.0)
    with pytest.raises(elm.Lagged):
        consumer.get(elm.Context(timeout=SAFETY))
    assert len(notes) == 1 and notes[0].size == 3 and notes[0].trim == 3


# --------------------------------------------------------------------------- set_cleaner


def test_set_cleaner_validation(elm: ModuleType) -> None:
    buf = elm.Buffer()
    with pytest.raises(TypeError):
        buf.set_cleaner(None)
    with pytest.raises(TypeError):
        buf.set_cleaner(42)
    with pytest.raises(TypeError):
        buf.set_cleaner(elm.default_cleaner, cooldown="1")
    with pytest.raises(TypeError):
        buf.set_cleaner(elm.default_cleaner, cooldown=True)
    for bad in (-0.001, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            buf.set_cleaner(elm.default_cleaner, cooldown=bad)
    # A rejected call installed nothing: the default still drops committed messages.
    consumer = buf.new_consumer()
    buf.put(None, 1)
    consumer.get()
    consumer.commit()
    assert wait_for(lambda: len(buf) == 0)
    buf.set_cleaner(elm.default_cleaner, cooldown=0)
    buf.set_cleaner(elm.default_cleaner, cooldown=1)  # int seconds are fine


def test_set_cleaner_runs_the_new_cleaner(elm: ModuleType) -> None:
    buf = elm.Buffer()
    buf.put(None, 1, 2, 3, 4)
    time.sleep(0.05)
    buf.set_cleaner(lambda size, offsets: 3, cooldown=0.01)
    assert wait_for(lambda: len(buf) == 1)
    assert buf.slice() == [4]


def test_a_cleaner_returning_more_than_the_size_drops_everything(elm: ModuleType) -> None:
    buf = elm.Buffer()
    buf.put(None, 1, 2)
    buf.set_cleaner(lambda size, offsets: size + 10, cooldown=0)
    assert len(buf) == 0
    buf.put(None, 3)
    assert len(buf) == 0
    buf.put(None, 4)  # still usable


# --------------------------------------------------------------------------- cleaner errors


class CleanerError(Exception):
    pass


def test_a_cleaner_that_raises_closes_the_buffer_with_its_cause(elm: ModuleType) -> None:
    error = CleanerError("boom")
    armed = False

    def cleaner(size: int, offsets: Sequence[int]) -> int:
        if armed:
            raise error
        return 0

    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.set_cleaner(cleaner, cooldown=0)
    buf.put(None, 1)
    armed = True
    try:
        buf.put(None, 2)  # this put runs the cleaner: it may succeed or raise Closed
    except elm.Closed:
        pass
    with pytest.raises(elm.Closed) as raised:
        buf.put(None, 3)
    assert raised.value.__cause__ is error
    with pytest.raises(elm.Closed) as raised:
        consumer.get(elm.Context(timeout=SAFETY))
    assert raised.value.__cause__ is error
    assert buf.slice()[:1] == [1]  # held messages stay readable


def test_a_cleaner_returning_a_non_int_closes_the_buffer(elm: ModuleType) -> None:
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.set_cleaner(lambda size, offsets: "three", cooldown=0)
    with pytest.raises(elm.Closed) as raised:
        buf.put(None, 1)
    assert isinstance(raised.value.__cause__, TypeError)
    with pytest.raises(elm.Closed) as raised:
        consumer.get(elm.Context(timeout=SAFETY))
    assert isinstance(raised.value.__cause__, TypeError)
    for bad in (1.0, None, True):
        other = elm.Buffer()
        other.set_cleaner(lambda size, offsets, bad=bad: bad, cooldown=0)
        with pytest.raises(elm.Closed):
            other.put(None, 1)


def test_a_cleaner_raising_on_the_timer_thread_wakes_a_blocked_get(elm: ModuleType) -> None:
    error = CleanerError("later")
    armed = threading.Event()

    def cleaner(size: int, offsets: Sequence[int]) -> int:
        if armed.is_set():
            raise error
        return 0

    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.set_cleaner(cleaner, cooldown=0.3)  # runs now; the next run is >= 0.3 s away
    armed.set()
    buf.put(None, "a")  # schedules the next run on the timer thread
    assert consumer.get() == "a"
    waiter = InThread(lambda: consumer.get(elm.Context(timeout=SAFETY)))
    waiter.join()
    assert isinstance(waiter.error, elm.Closed), waiter.error
    assert waiter.error.__cause__ is error
    assert buf.slice() == ["a"]


def test_consumer_closed_is_checked_before_buffer_closed(elm: ModuleType) -> None:
    error = CleanerError("boom")

    def cleaner(size: int, offsets: Sequence[int]) -> int:
        raise error

    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.set_cleaner(cleaner, cooldown=0)  # closes the buffer with a cause
    with pytest.raises(elm.Closed) as raised:
        consumer.get()
    assert raised.value.__cause__ is error
    consumer.close()
    with pytest.raises(elm.Closed) as raised:
        consumer.get()
    assert raised.value.__cause__ is None  # the consumer's own Closed


# --------------------------------------------------------------------------- close


def test_close_semantics(elm: ModuleType) -> None:
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.put(None, 1, 2, 3)
    assert consumer.get() == 1
    buf.close()
    with pytest.raises(elm.Closed):
        buf.put(None, 4)
    with pytest.raises(elm.Closed):
        buf.put(None)
    with pytest.raises(elm.Closed):
        consumer.get(elm.Context(timeout=SAFETY))  # even with messages left
    assert buf.slice() == [1, 2, 3]
    assert len(buf) == 3
    buf.close()  # idempotent
    assert buf.slice() == [1, 2, 3]


def test_a_closed_buffer_drops_nothing_more(elm: ModuleType) -> None:
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.set_cleaner(elm.default_cleaner, cooldown=0.2)  # runs now: the next run is later
    buf.put(None, 1, 2)
    drain(consumer, 2)
    consumer.commit()  # a cleaning is scheduled...
    buf.close()  # ...but the buffer closes first: what it held stays readable
    time.sleep(0.4)
    assert buf.slice() == [1, 2]


def test_close_wakes_a_blocked_get(elm: ModuleType) -> None:
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    waiter = InThread(lambda: consumer.get(elm.Context(timeout=SAFETY)))
    time.sleep(0.05)
    assert not waiter.done
    buf.close()
    waiter.join()
    assert isinstance(waiter.error, elm.Closed), waiter.error


def test_consumer_close_wakes_its_own_blocked_get(elm: ModuleType) -> None:
    buf = elm.Buffer()
    consumer, other = buf.new_consumer(), buf.new_consumer()
    ctx = elm.Context(timeout=SAFETY)
    waiter = InThread(lambda: consumer.get(ctx))
    bystander = InThread(lambda: other.get(ctx))
    time.sleep(0.05)
    assert not waiter.done and not bystander.done
    consumer.close()
    waiter.join()
    assert isinstance(waiter.error, elm.Closed), waiter.error
    time.sleep(0.05)
    assert not bystander.done  # the other consumer keeps waiting
    buf.put(None, "x")
    bystander.join()
    assert bystander.error is None and bystander.result == "x"
    consumer.close()  # idempotent
    with pytest.raises(elm.Closed):
        consumer.get()


def test_buffer_context_manager(elm: ModuleType) -> None:
    with elm.Buffer() as buf:
        assert isinstance(buf, elm.Buffer)
        buf.put(None, 1)
    with pytest.raises(elm.Closed):
        buf.put(None, 2)
    assert buf.slice() == [1]
    with pytest.raises(RuntimeError, match="inside"):
        with elm.Buffer() as buf2:
            raise RuntimeError("inside")  # not swallowed
    with pytest.raises(elm.Closed):
        buf2.put(None, 1)


def test_consumer_context_manager(elm: ModuleType) -> None:
    buf = elm.Buffer()
    reader = buf.new_consumer()
    buf.put(None, 1, 2)
    with buf.new_consumer() as consumer:
        assert isinstance(consumer, elm.BufferConsumer)
        assert consumer.get() == 1
    with pytest.raises(elm.Closed):
        consumer.get()
    drain(reader, 2)
    reader.commit()
    assert wait_for(lambda: len(buf) == 0)  # the closed consumer holds nothing


# --------------------------------------------------------------------------- contexts


@pytest.mark.parametrize("kind", ["cancel", "timeout"])
def test_an_ended_ctx_makes_put_and_get_raise_its_err(elm: ModuleType, kind: str) -> None:
    if kind == "cancel":
        ctx = elm.Context()
        ctx.cancel()
        expected = elm.Canceled
    else:
        ctx = elm.Context(timeout=0)
        expected = elm.DeadlineExceeded
    assert ctx.done
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.put(None, 1)
    with pytest.raises(expected) as raised:
        buf.put(ctx, 2)
    assert raised.value is ctx.err
    assert buf.slice() == [1]  # nothing was put
    with pytest.raises(expected) as raised:
        consumer.get(ctx)  # even though a message is available
    assert raised.value is ctx.err
    assert consumer.get() == 1  # and the failed get did not consume it


def test_get_checks_closed_before_ctx_and_ctx_before_lagged(elm: ModuleType) -> None:
    ended = elm.Context()
    ended.cancel()
    buf = elm.Buffer()
    buf.set_cleaner(elm.fixed_buffer_cleaner(1, 0), cooldown=0)
    lagging = buf.new_consumer()
    buf.put(None, 1, 2)  # trimmed away: lagging has lagged
    assert len(buf) == 0
    with pytest.raises(elm.Canceled) as raised:
        lagging.get(ended)
    assert raised.value is ended.err
    with pytest.raises(elm.Lagged):
        lagging.get()
    closed_consumer = buf.new_consumer()
    closed_consumer.close()
    with pytest.raises(elm.Closed):
        closed_consumer.get(ended)
    buf.close()
    with pytest.raises(elm.Closed):
        lagging.get(ended)


def test_get_ctx_must_be_a_context(elm: ModuleType) -> None:
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.put(None, 1)
    with pytest.raises(TypeError):
        consumer.get("not a context")
    with pytest.raises(TypeError):
        buf.put(object(), 1)
    assert buf.slice() == [1]


def test_get_times_out_with_deadline_exceeded(elm: ModuleType) -> None:
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    began = time.monotonic()
    waiter = InThread(lambda: consumer.get(elm.Context(timeout=0.1)))
    waiter.join()
    assert isinstance(waiter.error, elm.DeadlineExceeded), waiter.error
    assert 0.09 <= waiter.ended_at - began < 1.5


def test_get_wakes_when_a_message_is_put(elm: ModuleType) -> None:
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    waiter = InThread(lambda: consumer.get(elm.Context(timeout=SAFETY)))
    time.sleep(0.05)
    assert not waiter.done
    buf.put(None, "hello")
    waiter.join()
    assert waiter.error is None and waiter.result == "hello"


def wake_latency(elm: ModuleType, how: str) -> float:
    """Seconds from the waking action to the blocked get returning; one attempt."""
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    safety = elm.Context(timeout=SAFETY)
    ctx = elm.Context(safety) if how == "cancel" else safety
    waiter = InThread(lambda: consumer.get(ctx))
    time.sleep(0.05)
    assert not waiter.done
    began = time.monotonic()
    if how == "cancel":
        ctx.cancel()
    elif how == "close":
        buf.close()
    else:
        consumer.close()
    waiter.join()
    expected = elm.Canceled if how == "cancel" else elm.Closed
    assert type(waiter.error) is expected, waiter.error
    return waiter.ended_at - began


@pytest.mark.parametrize("how", ["cancel", "close", "consumer_close"])
def test_get_wakes_promptly(elm: ModuleType, how: str) -> None:
    latencies = []
    for _ in range(5):
        latencies.append(wake_latency(elm, how))
        if min(latencies) < WAKE_LIMIT / 5:
            break
    assert min(latencies) < WAKE_LIMIT, latencies


def test_a_cancelled_parent_wakes_a_get_on_its_child(elm: ModuleType) -> None:
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    parent = elm.Context(timeout=SAFETY)
    child = elm.Context(parent)
    waiter = InThread(lambda: consumer.get(child))
    time.sleep(0.05)
    parent.cancel()
    waiter.join()
    assert isinstance(waiter.error, elm.Canceled)
    assert not isinstance(waiter.error, elm.DeadlineExceeded)
    assert waiter.error is child.err


def test_a_get_woken_by_ctx_leaves_the_consumer_usable(elm: ModuleType) -> None:
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    waiter = InThread(lambda: consumer.get(elm.Context(timeout=0.02)))
    waiter.join()
    assert isinstance(waiter.error, elm.DeadlineExceeded), waiter.error
    buf.put(None, 1)
    assert consumer.get(elm.Context(timeout=SAFETY)) == 1
    consumer.commit()
