"""A cleaner that raises or returns a non-int closes its Buffer, with the cause
(docs/contract.md#cleaner-errors)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import ModuleType

import pytest
from _helpers import SAFETY, ArmedCleaner, InThread

# --------------------------------------------------------------------------- cleaner errors


class CleanerError(Exception):
    pass


def test_a_cleaner_that_raises_closes_the_buffer_with_its_cause(elm: ModuleType) -> None:
    error = CleanerError("boom")
    cleaner = ArmedCleaner(error)

    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.set_cleaner(cleaner, cooldown=0)
    buf.put(None, 1)
    cleaner.armed = True
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
