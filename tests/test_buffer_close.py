"""Buffer.close and BufferConsumer.close, and both as context managers
(docs/contract.md#closing-a-buffer)."""

from __future__ import annotations

import time
from types import ModuleType

import pytest
from _helpers import SAFETY, InThread, drain, wait_for

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
