"""Buffer FIFO order and broadcast, where a new consumer starts, len/slice/diff
(docs/contract.md#putting-and-reading, docs/contract.md#inspecting-a-buffer)."""

from __future__ import annotations

import time
from types import ModuleType

import pytest
from _helpers import drain, wait_for

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
