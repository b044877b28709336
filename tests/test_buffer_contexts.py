"""Buffer.put and BufferConsumer.get with a Context: ended, timing out, waking
(docs/contract.md#putting-and-reading)."""

from __future__ import annotations

import time
from types import ModuleType

import pytest
from _helpers import SAFETY, InThread

# seconds: "within a few milliseconds" (docs/contract.md#contexts-in-calls), with
# room for a noisy box
WAKE_LIMIT = 0.05


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
