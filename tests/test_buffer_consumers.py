"""Consumers come only from Buffer.new_consumer; one made during a cleaner pass never lags it."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import pytest
from _isolated import report, run_python

# --------------------------------------------------------------------------- construction


def test_consumer_new_is_refused(elm: ModuleType) -> None:
    """Issue 7, defect 1: BufferConsumer.__new__ and BufferConsumer() raise TypeError."""
    with pytest.raises(TypeError, match="new_consumer"):
        elm.BufferConsumer.__new__(elm.BufferConsumer)
    with pytest.raises(TypeError, match="new_consumer"):
        elm.BufferConsumer()


def test_a_consumer_made_by_new_cannot_crash_the_interpreter(elm: ModuleType) -> None:
    """Issue 7, defect 1: get/close on a consumer from __new__ segfaulted (compiled core).

    Runs in a subprocess: the fixed core refuses __new__; should it not, the calls
    that used to crash are made there, where a crash cannot take pytest down.
    """
    proc = run_python(
        elm,
        """
        try:
            consumer = elm.BufferConsumer.__new__(elm.BufferConsumer)
        except TypeError as exc:
            print("TypeError:", exc)
        else:
            print("__new__ returned a consumer")
            for name in ("get", "commit", "rollback", "close"):
                try:
                    getattr(consumer, name)()
                except Exception as exc:
                    print(name, "raised", type(exc).__name__)
        """,
    )
    assert proc.returncode == 0, report(proc)
    assert "TypeError:" in proc.stdout, report(proc)
    assert "new_consumer" in proc.stdout, report(proc)


# ----------------------------------------------------------------------- consumers made mid-pass


def get_outcome(consumer: Any, ctx: Any) -> str:
    """``"message"``, ``"deadline"`` or ``"lagged"``: how ``consumer.get(ctx)`` ended."""
    try:
        consumer.get(ctx)
    except Exception as exc:
        name = type(exc).__name__
        if name == "Lagged":
            return "lagged"
        if name == "DeadlineExceeded":
            return "deadline"
        raise
    return "message"


def test_a_consumer_made_by_the_cleaner_is_not_lagged(elm: ModuleType) -> None:
    """Issue 7, defect 4 (i): a consumer made inside the cleaner is not behind that pass.

    The cleaner asks to drop everything; whether the pass then keeps what the new
    consumer may read or not, that consumer must not be told it lagged.
    """
    buf = elm.Buffer()
    buf.put(None, 1, 2, 3)
    made: list[Any] = []

    def cleaner(size: int, offsets: Sequence[int]) -> int:
        if size and not made:
            made.append(buf.new_consumer())
            return size  # drop everything held
        return 0

    buf.set_cleaner(cleaner, cooldown=0)  # runs a pass now, on this thread
    assert len(made) == 1
    assert get_outcome(made[0], elm.Context(timeout=0.05)) in ("message", "deadline")


class Spawner:
    """A message whose finaliser opens a consumer of its buffer (while ``armed[0]``)."""

    __slots__ = ("armed", "buffer", "spawned")

    def __init__(self, buffer: Any, spawned: list[Any], armed: list[bool]) -> None:
        self.buffer = buffer
        self.spawned = spawned
        self.armed = armed

    def __del__(self) -> None:
        if self.armed[0]:
            self.spawned.append(self.buffer.new_consumer())


def test_consumers_made_by_finalisers_of_dropped_messages_are_not_lagged(
    elm: ModuleType,
) -> None:
    """Issue 7, defect 4 (ii): finalisers run between drop chunks open consumers; none lag.

    The compiled core drops in chunks of 256 and releases the lock between them;
    one pass is asked to drop all 1,000 messages here.
    """
    buf = elm.Buffer()
    buf.set_cleaner(elm.default_cleaner, cooldown=0)  # every commit cleans, inline
    reader = buf.new_consumer()
    spawned: list[Any] = []
    armed = [True]
    try:
        buf.put(None, *[Spawner(buf, spawned, armed) for _ in range(1_000)])
        for _ in range(1_000):
            reader.get()
        reader.commit()  # one pass would drop all of them; the new consumers may keep some
        armed[0] = False
        assert spawned, "the pass dropped nothing"
        buf.put(None, "after")  # so a consumer that is not lagged has something to read
        ctx = elm.Context(timeout=5)  # a safety net only
        outcomes = [get_outcome(consumer, ctx) for consumer in spawned]
    finally:
        armed[0] = False  # what the buffer still holds is freed quietly
    lagged = outcomes.count("lagged")
    assert lagged == 0, f"{lagged} of the {len(spawned)} consumers made mid-pass lagged"


def test_consumers_made_by_other_threads_during_passes_are_not_lagged(elm: ModuleType) -> None:
    """Issue 7, defect 4 (iii): threads opening consumers while passes drop never see Lagged."""
    buf = elm.Buffer()
    buf.set_cleaner(elm.default_cleaner, cooldown=0)
    reader = buf.new_consumer()
    stop = threading.Event()
    lagged: list[BaseException] = []
    errors: list[BaseException] = []
    opened = [0]

    def open_consumers() -> None:
        try:
            while not stop.is_set():
                consumer = buf.new_consumer()
                opened[0] += 1
                try:
                    consumer.get(elm.Context(timeout=0.001))
                except elm.DeadlineExceeded:
                    pass
                except elm.Lagged as exc:
                    lagged.append(exc)
                consumer.close()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=open_consumers, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for i in range(50_000):
            buf.put(None, i)
            assert reader.get() == i
            reader.commit()
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors
    assert opened[0] > 0
    assert not lagged, f"{len(lagged)} of {opened[0]} consumers lagged: {lagged[0]}"
