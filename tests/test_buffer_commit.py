"""BufferConsumer commit and rollback, and NothingUncommitted
(docs/contract.md#commit-and-rollback)."""

from __future__ import annotations

from types import ModuleType

import pytest
from _helpers import drain

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
