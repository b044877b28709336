"""set_cleaner, how much a cleaner's result drops, and fixed_buffer_cleaner
(docs/contract.md#buffer-retention)."""

from __future__ import annotations

import time
from types import ModuleType
from typing import Any

import pytest
from _helpers import SAFETY, drain, wait_for

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


# --------------------------------------------------------------------------- cleaner results


@pytest.mark.parametrize(
    "n", [-(2**70), -(2**63) - 1, -(2**63), -1], ids=["-2**70", "-2**63-1", "-2**63", "-1"]
)
def test_a_hugely_negative_cleaner_result_drops_nothing(elm: ModuleType, n: int) -> None:
    """Issue 7, defect 9: a cleaner result below int64 drops nothing and does not close."""
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.put(None, 1, 2, 3)
    buf.set_cleaner(lambda size, offsets: n, cooldown=0)  # a pass now...
    buf.put(None, 4)  # ...and another
    assert buf.slice() == [1, 2, 3, 4]
    assert [consumer.get() for _ in range(4)] == [1, 2, 3, 4]
    consumer.commit()  # and one more: nothing raised, nothing closed
    buf.put(None, 5)
    assert consumer.get(elm.Context(timeout=5)) == 5


@pytest.mark.parametrize("n", [2**70, 2**63, 2**63 - 1], ids=["2**70", "2**63", "2**63-1"])
def test_a_huge_cleaner_result_drops_everything_held(elm: ModuleType, n: int) -> None:
    """Issue 7, defect 9: a cleaner result above the size is clamped to the size."""
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.put(None, 1, 2, 3)
    buf.set_cleaner(lambda size, offsets: n if size else 0, cooldown=0)
    assert len(buf) == 0
    with pytest.raises(elm.Lagged):
        consumer.get(elm.Context(timeout=5))
    buf.put(None, 4)  # the buffer is still open; this put's pass drops 4 as well
    assert len(buf) == 0


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
