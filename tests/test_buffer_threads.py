"""Thread stress for Buffer: concurrent producers and committing consumers, both cores.

Every blocking call carries a ``Context`` timeout, and every thread is joined with
a timeout, so a lost wake-up or a deadlock fails the test instead of hanging it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from _helpers import wait_for

PRODUCERS = 4
PUTS = 50_000
CONSUMERS = 2
SAFETY = 60.0  # seconds: only reached if something hangs (a lost wake-up, a deadlock)


@pytest.fixture(autouse=True)
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads far more often than the 5 ms default, so races get a chance."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def run_stress(
    elm: ModuleType, *, rollback_every: int = 0, burst: int = 1
) -> tuple[list[list[Any]], Any, list[Any]]:
    buf = elm.Buffer()
    ctx = elm.Context(timeout=SAFETY)
    consumers = [buf.new_consumer() for _ in range(CONSUMERS)]
    total = PRODUCERS * PUTS
    seen: list[list[Any]] = [[] for _ in range(CONSUMERS)]
    errors: list[BaseException] = []
    go = threading.Barrier(PRODUCERS + CONSUMERS, timeout=SAFETY)

    def produce(producer_id: int) -> None:
        try:
            go.wait()
            put = buf.put
            if burst == 1:
                for seq in range(PUTS):
                    put(ctx, (producer_id, seq))
            else:  # several values per put, of varying width
                seq = 0
                while seq < PUTS:
                    width = min(1 + seq % burst, PUTS - seq)
                    put(ctx, *[(producer_id, s) for s in range(seq, seq + width)])
                    seq += width
        except BaseException as exc:
            errors.append(exc)
            ctx.cancel()

    def consume(index: int) -> None:
        consumer = consumers[index]
        out = seen[index]
        try:
            go.wait()
            get, commit = consumer.get, consumer.commit
            n = 0
            while len(out) < total:
                message = get(ctx)
                n += 1
                if rollback_every and n % rollback_every == 0:
                    consumer.rollback()  # re-read it: it must come again, once
                    continue
                out.append(message)
                commit()
        except BaseException as exc:
            errors.append(exc)
            ctx.cancel()

    threads = [
        threading.Thread(target=produce, args=(p,), name=f"producer-{p}", daemon=True)
        for p in range(PRODUCERS)
    ] + [
        threading.Thread(target=consume, args=(c,), name=f"consumer-{c}", daemon=True)
        for c in range(CONSUMERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SAFETY + 10)
    assert not any(t.is_alive() for t in threads), "a stress thread hung"
    assert not errors, errors
    return seen, buf, consumers  # the consumers must live on to keep being counted


def check_seen(seen: list[list[Any]]) -> None:
    for index, messages in enumerate(seen):
        assert len(messages) == PRODUCERS * PUTS, index
        per_producer: list[list[int]] = [[] for _ in range(PRODUCERS)]
        for producer_id, seq in messages:
            per_producer[producer_id].append(seq)
        for producer_id, seqs in enumerate(per_producer):
            # exactly once each, in the order that producer put them
            assert seqs == list(range(PUTS)), (index, producer_id)


def wait_empty(buf: Any, timeout: float = 5.0) -> bool:
    return wait_for(lambda: len(buf) == 0, timeout)


def test_concurrent_producers_and_consumers(elm: ModuleType) -> None:
    seen, buf, consumers = run_stress(elm)
    check_seen(seen)
    # Both (still open) consumers committed everything: the default cleaner empties
    # the buffer, without any further put or get.
    assert wait_empty(buf)
    assert all(buf.diff(c) == 0 for c in consumers)


def test_concurrent_producers_and_consumers_with_rollbacks(elm: ModuleType) -> None:
    seen, buf, consumers = run_stress(elm, rollback_every=7)
    check_seen(seen)
    assert wait_empty(buf)
    assert all(buf.diff(c) == 0 for c in consumers)


def test_concurrent_bursty_producers(elm: ModuleType) -> None:
    seen, buf, consumers = run_stress(elm, burst=9)
    check_seen(seen)
    assert wait_empty(buf)
    assert all(buf.diff(c) == 0 for c in consumers)
