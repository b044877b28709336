"""elmstate.views.coalesce (docs/views.md#coalesce): a view called only on ticks after which
the loop's consumer has nothing left to read, in real loops on both cores."""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any, Callable

import pytest
from _helpers import SAFETY, InThread


def counter(msg: Any) -> Callable[[int], tuple[int, None]]:
    return lambda n: (n + msg, None)


class Seen:
    """The inner view: records models; cancels ``ctx`` once it sees ``stop_at``."""

    def __init__(self, ctx: Any, stop_at: int) -> None:
        self.ctx = ctx
        self.stop_at = stop_at
        self.models: list[int] = []
        self.event = threading.Event()

    def __call__(self, model: int) -> None:
        self.models.append(model)
        self.event.set()
        if model >= self.stop_at:
            self.ctx.cancel()


def test_a_prefilled_buffer_is_viewed_once_drained_with_the_final_model(elm: ModuleType) -> None:
    n = 1000
    ctx = elm.Context()
    seen = Seen(ctx, n)
    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        buf.put(None, *([1] * n))
        view = elm.views.coalesce(seen, buf, consumer)
        with pytest.raises(elm.Canceled):
            elm.run(lambda: (0, None), counter, view, buf, consumer, ctx=ctx)
    # The first tick (init) and the next n - 1 each left messages to read.
    assert seen.models == [n]
    assert not view.pending


def test_each_burst_is_viewed_once_and_the_loop_waits_with_the_viewed_model(
    elm: ModuleType,
) -> None:
    ctx = elm.Context(timeout=60)
    seen = Seen(ctx, 10 + 20 + 30)
    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        view = elm.views.coalesce(seen, buf, consumer)
        loop = InThread(lambda: elm.run(lambda: (0, None), counter, view, buf, consumer, ctx=ctx))
        bursts = [[1] * 10, [1] * 20, [1] * 30]
        expected = [0]
        for burst in bursts:
            # Each burst goes in with one put (atomically) only once the loop has
            # viewed the last, so the loop is waiting (or about to) with that model.
            assert seen.event.wait(SAFETY)
            assert seen.models == expected
            seen.event.clear()
            buf.put(None, *burst)
            expected.append(expected[-1] + len(burst))
        loop.thread.join(SAFETY)
    assert isinstance(loop.error, elm.Canceled)
    assert seen.models == [0, 10, 30, 60]


def test_a_slow_view_runs_once_per_burst_while_another_thread_puts(elm: ModuleType) -> None:
    # While the view works, the producer puts on: the loop reads on without
    # viewing, and views again only when it has caught up.
    n = 200
    ctx = elm.Context(timeout=60)
    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        gate = threading.Event()
        viewing = threading.Event()
        models: list[int] = []

        def slow(model: int) -> None:
            models.append(model)
            if model == 0:
                viewing.set()
                # Held until the producer below has put everything: all of it is
                # one burst for the loop.
                assert gate.wait(SAFETY)
            if model == n:
                ctx.cancel()

        view = elm.views.coalesce(slow, buf, consumer)
        loop = InThread(lambda: elm.run(lambda: (0, None), counter, view, buf, consumer, ctx=ctx))
        assert viewing.wait(SAFETY)  # the first tick is in view, the buffer still empty
        for _ in range(n):
            buf.put(None, 1)  # one message per put
        gate.set()
        loop.thread.join(SAFETY)
    assert isinstance(loop.error, elm.Canceled)
    assert models == [0, n]


def test_the_messages_a_tick_produces_are_not_counted(elm: ModuleType) -> None:
    # A chain of commands: each tick's message is put after its view, so the
    # consumer had caught up at every view, and every link is viewed.
    ctx = elm.Context()
    seen = Seen(ctx, 3)

    def update(msg: int) -> Callable[[int], tuple[int, Any]]:
        def transform(n: int) -> tuple[int, Any]:
            return n + 1, (elm.new_command(msg - 1) if msg > 1 else None)

        return transform

    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        buf.put(None, 3)
        view = elm.views.coalesce(seen, buf, consumer)
        with pytest.raises(elm.Canceled):
            elm.run(lambda: (0, None), update, view, buf, consumer, ctx=ctx)
    assert seen.models == [1, 2, 3]


@pytest.mark.parametrize("feed", ["thread", "inline"])
def test_flush_after_a_batch_delivers_the_final_model(elm: ModuleType, feed: str) -> None:
    models: list[int] = []
    pages = iter([([1] * 50, True), ([1] * 50, False)])
    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        view = elm.views.coalesce(models.append, buf, consumer)
        final = elm.batch(
            lambda: (0, None), counter, view, buf, consumer, lambda ctx: next(pages), feed=feed
        )
    assert final == 100
    if feed == "inline":
        # The end marker goes in with the last page: the last tick saw it unread.
        assert view.pending
        assert 100 not in models
    # With the feeder thread, the loop may have caught up before the marker came.
    view.flush()
    assert models[-1] == 100
    assert not view.pending
    assert models == sorted(set(models))
    assert view.flush() is False


def test_flush_with_nothing_pending_does_nothing(elm: ModuleType) -> None:
    models: list[int] = []
    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        view = elm.views.coalesce(models.append, buf, consumer)
        assert view.flush() is False
        view(1)  # nothing to read: delivered
        buf.put(None, "x")
        view(2)  # "x" unread: kept
        assert view.pending
        view(3)  # still unread: replaces 2
        consumer.get()
        assert view.flush() is True
    assert models == [1, 3]


def test_an_error_from_view_propagates_and_the_tick_rolls_back(elm: ModuleType) -> None:
    boom = RuntimeError("view failed")

    def fragile(model: int) -> None:
        if model == 3:
            raise boom

    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        buf.put(None, 1, 1, 1)
        view = elm.views.coalesce(fragile, buf, consumer)
        with pytest.raises(RuntimeError) as info:
            elm.run(lambda: (0, None), counter, view, buf, consumer)
        assert info.value is boom
        assert buf.diff(consumer) == 1  # the third message was rolled back
    assert not view.pending


def test_bad_arguments_name_themselves(elm: ModuleType) -> None:
    with elm.Buffer() as buf, buf.new_consumer() as consumer, elm.Buffer() as other:
        with pytest.raises(TypeError, match="view"):
            elm.views.coalesce(None, buf, consumer)
        with pytest.raises(TypeError, match="view"):
            elm.views.coalesce("print", buf, consumer)
        with pytest.raises(TypeError, match="buffer"):
            elm.views.coalesce(print, object(), consumer)
        with pytest.raises(ValueError, match="consumer"):
            elm.views.coalesce(print, other, consumer)
        with pytest.raises(ValueError, match="consumer"):
            elm.views.coalesce(print, buf, object())
