"""elmstate.views.throttle (docs/views.md#throttle): at most one call per interval, the last
model always delivered, flush, cancel; driven by a fake clock and a timer the test fires."""

from __future__ import annotations

import logging
import threading
import time
from types import ModuleType
from typing import Any, Callable

import pytest
from _helpers import SAFETY


class Handle:
    def __init__(self, when: float, delay: float, fn: Callable[[], object]) -> None:
        self.when = when
        self.delay = delay
        self.fn = fn
        self.cancelled = False
        self.fired = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeTime:
    """A clock that moves only when told, and a timer that fires when the clock passes it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.handles: list[Handle] = []

    def clock(self) -> float:
        return self.now

    def timer(self, delay: float, fn: Callable[[], object]) -> Handle:
        handle = Handle(self.now + delay, delay, fn)
        self.handles.append(handle)
        return handle

    def live(self) -> list[Handle]:
        return [h for h in self.handles if not h.cancelled and not h.fired]

    def advance(self, seconds: float) -> None:
        """Move the clock on, firing each timer that falls due, in order, at its time."""
        target = self.now + seconds
        while True:
            due = [h for h in self.live() if h.when <= target]
            if not due:
                break
            handle = min(due, key=lambda h: h.when)
            self.now = handle.when
            handle.fired = True
            handle.fn()
        self.now = target


class Recorder:
    def __init__(self, fake: FakeTime | None = None) -> None:
        self.fake = fake
        self.calls: list[Any] = []
        self.times: list[float] = []
        self.threads: list[str] = []

    def __call__(self, model: Any) -> None:
        self.calls.append(model)
        self.threads.append(threading.current_thread().name)
        if self.fake is not None:
            self.times.append(self.fake.now)


def make(elm: ModuleType, interval: float = 1.0) -> tuple[Any, Recorder, FakeTime]:
    fake = FakeTime()
    rec = Recorder(fake)
    return elm.views.throttle(rec, interval, clock=fake.clock, timer=fake.timer), rec, fake


def test_leading_call_then_one_trailing_call_with_the_newest_model(elm: ModuleType) -> None:
    view, rec, fake = make(elm)
    view("a")  # nothing delivered yet: at once, on the caller's thread
    assert rec.calls == ["a"]
    assert rec.threads == [threading.current_thread().name]
    assert not view.pending and fake.handles == []
    fake.advance(0.25)
    view("b")
    fake.advance(0.25)
    view("c")
    assert rec.calls == ["a"]
    assert view.pending
    assert len(fake.handles) == 1  # one trailing call, for when the interval has passed
    assert fake.handles[0].when == 1.0
    fake.advance(0.49)
    assert rec.calls == ["a"]
    fake.advance(0.01)  # t = 1.0
    assert rec.calls == ["a", "c"]  # "b" was superseded
    assert rec.times == [0.0, 1.0]
    assert not view.pending
    fake.advance(5.0)
    assert rec.calls == ["a", "c"]  # nothing pending, nothing more
    view("d")  # long after the last delivery: at once again
    assert rec.calls == ["a", "c", "d"]
    assert len(fake.handles) == 1


def test_a_steady_stream_is_delivered_once_per_interval_and_the_last_model_arrives(
    elm: ModuleType,
) -> None:
    view, rec, fake = make(elm, interval=1.0)
    for i in range(80):  # a model every 1/8 s for 10 s (exact binary fractions)
        view(i)
        fake.advance(0.125)
    fake.advance(1.0)
    # The leading call, then each trailing call with the newest model at its time.
    assert rec.calls == [0] + [8 * k - 1 for k in range(1, 11)]
    assert rec.times == [float(k) for k in range(11)]
    assert all(b - a >= 1.0 for a, b in zip(rec.times, rec.times[1:]))
    assert rec.calls[-1] == 79
    assert len(fake.handles) == 10 and not fake.live()


def test_interval_zero_delivers_every_model_and_schedules_nothing(elm: ModuleType) -> None:
    view, rec, fake = make(elm, interval=0)
    for i in range(5):
        view(i)
    assert rec.calls == [0, 1, 2, 3, 4]
    assert fake.handles == []
    assert view.interval == 0.0


def test_flush_delivers_the_pending_model_now_and_cancels_the_trailing_call(
    elm: ModuleType,
) -> None:
    view, rec, fake = make(elm)
    assert view.flush() is False  # nothing pending
    view(1)
    fake.advance(0.5)
    view(2)
    view(3)
    assert view.flush() is True
    assert rec.calls == [1, 3]
    assert rec.threads[-1] == threading.current_thread().name
    assert fake.handles[0].cancelled
    assert view.flush() is False
    fake.advance(10.0)
    assert rec.calls == [1, 3]
    # The flush was a delivery: the interval counts from it.
    view(4)
    assert rec.calls == [1, 3, 4]
    view(5)
    assert rec.calls == [1, 3, 4]
    fake.advance(1.0)
    assert rec.calls == [1, 3, 4, 5]


def test_a_flush_starts_the_interval_again(elm: ModuleType) -> None:
    view, rec, fake = make(elm)
    view(1)
    fake.advance(0.5)
    view(2)
    view.flush()  # at 0.5
    fake.advance(0.25)
    view(3)  # pending: less than an interval after the flush
    assert rec.calls == [1, 2]
    assert fake.live()[0].when == 1.5
    fake.advance(0.74)
    assert rec.calls == [1, 2]
    fake.advance(0.01)
    assert rec.calls == [1, 2, 3]


def test_cancel_drops_the_pending_model(elm: ModuleType) -> None:
    view, rec, fake = make(elm)
    assert view.cancel() is False
    view(1)
    view(2)
    assert view.cancel() is True
    assert not view.pending and fake.handles[0].cancelled
    fake.advance(5.0)
    assert rec.calls == [1]
    assert view.flush() is False
    view(3)  # later calls work as before
    assert rec.calls == [1, 3]


def test_a_timer_that_fires_early_is_scheduled_again_for_the_rest(elm: ModuleType) -> None:
    view, rec, fake = make(elm)
    view(1)
    fake.advance(0.25)
    view(2)
    early = fake.handles[0]
    assert early.delay == 0.75
    fake.now = 0.5  # the timer fires by its own reckoning, before the throttle's clock says so
    early.fired = True
    early.fn()
    assert rec.calls == [1]
    again = fake.live()
    assert len(again) == 1 and again[0].delay == 0.5
    fake.advance(0.5)
    assert rec.calls == [1, 2]


def test_a_stale_trailing_call_does_nothing(elm: ModuleType) -> None:
    view, rec, fake = make(elm)
    view(1)
    view(2)
    stale = fake.handles[0]
    view.flush()
    stale.fn()  # a timer whose cancel came too late still calls fn: it must do nothing
    fake.advance(5.0)
    view(3)
    view(4)
    stale.fn()
    assert rec.calls == [1, 2, 3]
    assert view.pending


def test_with_block_flushes_on_leaving(elm: ModuleType) -> None:
    fake = FakeTime()
    rec = Recorder(fake)
    with elm.views.throttle(rec, 1.0, clock=fake.clock, timer=fake.timer) as view:
        for i in range(4):
            view(i)
        assert rec.calls == [0]
    assert rec.calls == [0, 3]


def test_an_error_in_a_trailing_call_is_logged_and_raised_by_the_next_call(
    elm: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeTime()
    seen: list[int] = []
    boom = RuntimeError("view failed")

    def fragile(model: int) -> None:
        seen.append(model)
        if model == 2:
            raise boom

    view = elm.views.throttle(fragile, 1.0, clock=fake.clock, timer=fake.timer)
    view(1)
    view(2)
    with caplog.at_level(logging.ERROR, logger="elmstate"):
        fake.advance(1.0)  # the trailing call raises on the "timer's thread"
    assert seen == [1, 2]
    assert any(r.exc_info and r.exc_info[1] is boom for r in caplog.records)
    with pytest.raises(RuntimeError) as info:
        view(3)
    assert info.value is boom
    assert not view.pending  # the failed call's model is not kept: that tick failed
    fake.advance(1.0)
    view(4)  # raised once; then on as usual
    assert seen == [1, 2, 4]


def test_an_error_in_a_trailing_call_is_raised_by_flush(elm: ModuleType) -> None:
    fake = FakeTime()
    boom = RuntimeError("view failed")
    calls: list[int] = []

    def fragile(model: int) -> None:
        calls.append(model)
        if model == 2:
            raise boom

    view = elm.views.throttle(fragile, 1.0, clock=fake.clock, timer=fake.timer)
    view(1)
    view(2)
    logging.getLogger("elmstate").disabled = True
    try:
        fake.advance(1.0)
    finally:
        logging.getLogger("elmstate").disabled = False
    with pytest.raises(RuntimeError) as info:
        view.flush()
    assert info.value is boom
    assert view.flush() is False


def test_an_error_in_a_leading_call_or_flush_propagates_to_the_caller(elm: ModuleType) -> None:
    fake = FakeTime()
    boom = ValueError("bad model")

    def fragile(model: int) -> None:
        if model < 0:
            raise boom

    view = elm.views.throttle(fragile, 1.0, clock=fake.clock, timer=fake.timer)
    with pytest.raises(ValueError) as info:
        view(-1)
    assert info.value is boom
    view(-2)
    with pytest.raises(ValueError) as info:
        view.flush()
    assert info.value is boom
    assert not view.pending


def test_the_default_timer_runs_the_trailing_call_on_its_own_thread(elm: ModuleType) -> None:
    delivered = threading.Event()
    rec = Recorder()

    def view(model: int) -> None:
        rec(model)
        if model == 2:
            delivered.set()

    # A clock that stands still until the test moves it: the second call is surely
    # within the interval, and the real timer thread waits out its real delay.
    now = [0.0]
    throttled = elm.views.throttle(view, 0.01, clock=lambda: now[0])
    throttled(1)
    throttled(2)
    assert rec.calls == [1]
    now[0] = 1.0  # before the timer's 10 ms are up, or after: it reschedules until due
    assert delivered.wait(SAFETY)
    assert rec.calls == [1, 2]
    assert rec.threads == [threading.current_thread().name, "elmstate-throttle"]


def test_view_is_never_called_concurrently_nor_with_an_older_model(elm: ModuleType) -> None:
    inside = threading.Lock()
    overlaps: list[int] = []
    rec = Recorder()
    last = threading.Event()
    n = 2000

    def view(model: int) -> None:
        if not inside.acquire(blocking=False):
            overlaps.append(model)
            return
        try:
            rec(model)
            if model % 3 == 0:
                # Slower than the interval now and then: calls fall due while a
                # trailing call is still in view on the timer's thread.
                time.sleep(0.002)
            if model == n - 1:
                last.set()
        finally:
            inside.release()

    throttled = elm.views.throttle(view, 0.001)
    for i in range(n):
        throttled(i)
        time.sleep(0.0002)  # let trailing calls fall due between the calls
    assert last.wait(SAFETY)  # the last model always arrives
    assert overlaps == []
    assert rec.calls == sorted(set(rec.calls))  # strictly increasing
    assert rec.calls[-1] == n - 1


def test_throttle_in_a_batch_then_flush_delivers_the_final_model(elm: ModuleType) -> None:
    fake = FakeTime()  # the clock never moves: only the leading call, then everything pends
    rec = Recorder(fake)
    view = elm.views.throttle(rec, 1.0, clock=fake.clock, timer=fake.timer)
    update = lambda msg: lambda n: (n + msg, None)  # noqa: E731
    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        final = elm.batch(
            lambda: (0, None), update, view, buf, consumer, lambda ctx: ([1] * 100, False)
        )
    assert final == 100
    assert rec.calls == [0]
    assert view.flush() is True
    assert rec.calls == [0, 100]


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "name"),
    [
        ((None, 1.0), {}, TypeError, "view"),
        (("print", 1.0), {}, TypeError, "view"),
        ((print, "1"), {}, TypeError, "interval"),
        ((print, None), {}, TypeError, "interval"),
        ((print, True), {}, TypeError, "interval"),
        ((print, -0.5), {}, ValueError, "interval"),
        ((print, float("nan")), {}, ValueError, "interval"),
        ((print, float("inf")), {}, ValueError, "interval"),
        ((print, 1.0), {"clock": 3.0}, TypeError, "clock"),
        ((print, 1.0), {"timer": "thread"}, TypeError, "timer"),
    ],
)
def test_bad_arguments_name_themselves(
    elm: ModuleType, args: tuple[Any, ...], kwargs: dict[str, Any], error: type, name: str
) -> None:
    with pytest.raises(error, match=name):
        elm.views.throttle(*args, **kwargs)


def test_a_timer_returning_no_handle_is_named(elm: ModuleType) -> None:
    fired: list[Callable[[], object]] = []

    def timer(delay: float, fn: Callable[[], object]) -> None:
        fired.append(fn)

    rec = Recorder()
    view = elm.views.throttle(rec, 1.0, clock=lambda: 0.0, timer=timer)
    view(1)
    with pytest.raises(TypeError, match="timer must return a handle with a cancel"):
        view(2)
    fired[0]()  # the call it did schedule is void
    assert rec.calls == [1]


def test_an_interval_no_timer_thread_could_wait_is_refused(elm: ModuleType) -> None:
    with pytest.raises(ValueError, match="interval"):
        elm.views.throttle(lambda model: None, threading.TIMEOUT_MAX * 2)
