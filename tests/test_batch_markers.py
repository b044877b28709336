"""A batch's end markers belong to that batch (issue 7, defect 5), on both cores.

A batch that fails leaves its end marker unread in the buffer. A later batch on
the same buffer and consumer used to take that marker (and the copy it puts
behind it) for its own and return before its input arrived: the input was lost.
Markers of other batches are committed and skipped, never counted and never
passed to update, by batch, aggregate and run alike.
"""

from __future__ import annotations

import json
import time
from types import ModuleType
from typing import Any, Callable

import pytest
from _helpers import SAFETY, wait_for
from _recording import Stop

# run, batch and aggregate run through elmstate.aio too (asyncio, uvloop): tests/_modes.py
AIO_MODES = True


class Boom(Exception):
    pass


class Lister:
    """A program whose model is the list of messages it updated with.

    ``update`` records every message it is given in ``seen``; with ``fail`` set,
    "boom" raises Boom (once the fetcher's end marker is in the buffer behind it);
    "stop" raises Stop.
    """

    def __init__(self, buf: Any, consumer: Any, *, fail: bool = False) -> None:
        self.buf = buf
        self.consumer = consumer
        self.fail = fail
        self.seen: list[Any] = []
        self.commands: dict[Any, list[Callable[[], Any]]] = {}

    def init(self) -> tuple[Any, Any]:
        return [], None

    def update(self, message: Any) -> Any:
        self.seen.append(message)
        if message == "boom" and self.fail:
            # Fail only once the marker is in: a failure before it is put would
            # stop the feeder first and leave no marker behind.
            assert wait_for(lambda: self.buf.diff(self.consumer) >= 1)
            raise Boom("boom")
        if message == "stop":
            raise Stop("stop")
        command = self.commands.get(message)
        return lambda model: ([*model, message], command)

    def view(self, model: Any) -> None:
        pass

    def batch(self, elm: ModuleType, fetcher: Callable[[Any], Any]) -> Any:
        """``elm.batch`` of this program on its buffer and consumer, bounded by SAFETY."""
        return elm.batch(
            self.init,
            self.update,
            self.view,
            self.buf,
            self.consumer,
            fetcher,
            ctx=elm.Context(timeout=SAFETY),
        )


def pages(*replies: tuple[list[Any], bool], delay: float = 0.0) -> Callable[[Any], Any]:
    """A fetcher returning each (messages, more) reply in turn, after ``delay`` seconds."""
    queue = list(replies)

    def fetcher(ctx: Any) -> Any:
        if delay:
            time.sleep(delay)
        return queue.pop(0)

    return fetcher


def fail_a_batch(elm: ModuleType, buf: Any, consumer: Any) -> None:
    """Batch 1: ["a", "boom"]; update fails on "boom", leaving "boom" and the marker unread."""
    program = Lister(buf, consumer, fail=True)
    with pytest.raises(Boom):
        program.batch(elm, pages((["a", "boom"], False)))
    assert program.seen == ["a", "boom"]
    assert buf.diff(consumer) == 2  # "boom" again, then batch 1's end marker


def test_a_failed_batchs_marker_does_not_end_the_next_batch(elm: ModuleType) -> None:
    """Issue 7, defect 5: batch 2 read batch 1's leftover marker as its own and lost x and y."""
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    fail_a_batch(elm, buf, consumer)
    program = Lister(buf, consumer)
    late = pages((["x", "y"], False), delay=0.2)  # arrives after the leftover marker is read
    result = program.batch(elm, late)
    assert result == ["boom", "x", "y"]
    assert program.seen == ["boom", "x", "y"]
    assert buf.diff(consumer) == 0  # every marker, its own and the leftover, committed


def test_a_failing_batch_skips_a_leftover_marker_and_leaves_its_own(elm: ModuleType) -> None:
    """Issue 7, defect 5: batch 2 skips batch 1's marker, fails; batch 3 skips batch 2's."""
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    fail_a_batch(elm, buf, consumer)
    assert consumer.get() == "boom"  # take it out of the way: batch 1's marker is next
    consumer.commit()
    fail_a_batch(elm, buf, consumer)  # reads batch 1's marker first, then a, boom
    program = Lister(buf, consumer)
    result = program.batch(elm, pages((["x"], True), (["y"], False), delay=0.1))
    assert result == ["boom", "x", "y"]
    assert program.seen == ["boom", "x", "y"]
    assert buf.diff(consumer) == 0


class Json:
    """Hydrator and dehydrator for a JSON list model."""

    @staticmethod
    def hydrator(ctx: Any, key: str, value: bytes) -> tuple[Any, Any]:
        return json.loads(value), None

    @staticmethod
    def dehydrator(ctx: Any, key: str, model: Any) -> bytes:
        return json.dumps(model).encode()


def test_aggregate_after_a_failed_aggregate_stores_the_whole_input(elm: ModuleType) -> None:
    """Issue 7, defect 5: the same loss through aggregate; the stored model has x and y."""
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    store = elm.MemoryStore()
    first = Lister(buf, consumer, fail=True)
    with pytest.raises(Boom):
        elm.aggregate(
            first.init,
            first.update,
            first.view,
            buf,
            consumer,
            pages((["a", "boom"], False)),
            store,
            Json.hydrator,
            Json.dehydrator,
            "k",
            ctx=elm.Context(timeout=SAFETY),
        )
    assert store.load(None, "k") is None
    second = Lister(buf, consumer)
    result = elm.aggregate(
        second.init,
        second.update,
        second.view,
        buf,
        consumer,
        pages((["x", "y"], False), delay=0.2),
        store,
        Json.hydrator,
        Json.dehydrator,
        "k",
        ctx=elm.Context(timeout=SAFETY),
    )
    assert result == ["boom", "x", "y"]
    assert json.loads(store.load(None, "k")) == ["boom", "x", "y"]
    assert buf.diff(consumer) == 0


def test_run_never_passes_a_leftover_marker_to_update(elm: ModuleType) -> None:
    """Issue 7, defect 5: run on a buffer holding a failed batch's marker skips the marker."""
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    fail_a_batch(elm, buf, consumer)
    buf.put(None, "m", "stop")
    program = Lister(buf, consumer)
    with pytest.raises(Stop):
        elm.run(
            program.init,
            program.update,
            program.view,
            buf,
            consumer,
            ctx=elm.Context(timeout=SAFETY),
        )
    assert program.seen == ["boom", "m", "stop"]


def test_a_foreign_marker_between_a_batchs_own_markers_is_skipped(elm: ModuleType) -> None:
    """Issue 7, defect 5: another batch's marker between this batch's two does not end it."""
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    fail_a_batch(elm, buf, consumer)
    leftover = [consumer.get(), consumer.get()]
    consumer.commit()
    assert leftover[0] == "boom"
    foreign = leftover[1]  # batch 1's end marker
    assert buf.diff(consumer) == 0

    program = Lister(buf, consumer)
    # Processing "x" waits for this batch's first marker to follow it, then its
    # command puts the foreign marker and "y" behind that marker: the batch's
    # second marker goes in after them.
    program.commands["x"] = [lambda: foreign, lambda: "y"]
    original_update = program.update

    def update(message: Any) -> Any:
        if message == "x":
            assert wait_for(lambda: buf.diff(consumer) >= 1)
        return original_update(message)

    result = elm.batch(
        program.init,
        update,
        program.view,
        buf,
        consumer,
        pages((["x"], False)),
        ctx=elm.Context(timeout=SAFETY),
    )
    assert result == ["x", "y"]
    assert program.seen == ["x", "y"]
    assert buf.diff(consumer) == 0
