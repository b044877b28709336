"""elmstate.views.Latest (docs/views.md#latest): the newest model for other threads; readers
see only models the loop produced, versions never go back; wait_for."""

from __future__ import annotations

import threading
import time
from types import ModuleType
from typing import Any

import pytest
from _helpers import SAFETY, InThread, wait_for


def test_before_the_first_model(elm: ModuleType) -> None:
    latest = elm.views.Latest()
    assert latest.version == 0
    with pytest.raises(LookupError):
        latest.get()
    with pytest.raises(LookupError):
        latest.snapshot()
    called: list[Any] = []
    assert latest.wait_for(lambda m: called.append(m) or True, timeout=0) is False
    assert latest.wait_for(lambda m: called.append(m) or True, timeout=0.01) is False
    assert called == []  # never called without a model


def test_it_keeps_the_newest_model_and_counts(elm: ModuleType) -> None:
    latest = elm.views.Latest()
    latest("a")
    assert (latest.get(), latest.version, latest.snapshot()) == ("a", 1, (1, "a"))
    model = {"k": 1}
    latest(model)
    assert latest.get() is model  # shared, not copied
    latest(None)  # None is a model like any other
    assert latest.get() is None
    assert latest.snapshot() == (3, None)
    assert "version=3" in repr(latest)


def test_wait_for_returns_at_once_when_the_newest_model_matches(elm: ModuleType) -> None:
    latest = elm.views.Latest()
    latest(5)
    assert latest.wait_for(lambda m: m == 5) is True
    assert latest.wait_for(lambda m: m == 5, timeout=0) is True
    assert latest.wait_for(lambda m: m > 5, timeout=0) is False
    assert latest.wait_for(lambda m: m > 5, timeout=0.02) is False


def test_wait_for_without_timeout_wakes_on_a_later_model(elm: ModuleType) -> None:
    latest = elm.views.Latest()
    waiter = InThread(lambda: latest.wait_for(lambda m: m >= 3))
    for model in range(5):
        latest(model)
    waiter.thread.join(SAFETY)
    assert not waiter.thread.is_alive()
    assert waiter.error is None and waiter.result is True


def test_wait_for_with_timeout_wakes_on_a_later_model(elm: ModuleType) -> None:
    latest = elm.views.Latest()
    looked: list[Any] = []

    def ready(model: Any) -> bool:
        looked.append(model)
        return model == "ready"

    waiter = InThread(lambda: latest.wait_for(ready, timeout=60))
    latest("not yet")
    assert wait_for(lambda: looked == ["not yet"], timeout=SAFETY)  # woke, looked, waits again
    latest("ready")
    waiter.thread.join(SAFETY)
    assert waiter.result is True
    assert looked == ["not yet", "ready"]


def test_wait_for_raises_what_the_predicate_raises(elm: ModuleType) -> None:
    latest = elm.views.Latest()
    latest(1)
    boom = KeyError("x")

    def predicate(model: Any) -> bool:
        raise boom

    with pytest.raises(KeyError) as info:
        latest.wait_for(predicate)
    assert info.value is boom


def test_a_slow_predicate_does_not_hold_up_the_view(elm: ModuleType) -> None:
    latest = elm.views.Latest()
    latest(0)
    inside = threading.Event()
    release = threading.Event()

    def slow(model: int) -> bool:
        inside.set()
        assert release.wait(SAFETY)
        return model >= 2

    waiter = InThread(lambda: latest.wait_for(slow))
    assert inside.wait(SAFETY)
    latest(1)  # the predicate is still running: these calls must not wait for it
    latest(2)
    assert latest.snapshot() == (3, 2)
    release.set()
    waiter.thread.join(SAFETY)
    assert waiter.result is True


@pytest.mark.parametrize(
    ("args", "error", "name"),
    [
        ((None,), TypeError, "predicate"),
        ((3,), TypeError, "predicate"),
        ((bool, "1"), TypeError, "timeout"),
        ((bool, True), TypeError, "timeout"),
        ((bool, -1), ValueError, "timeout"),
        ((bool, float("nan")), ValueError, "timeout"),
    ],
)
def test_bad_arguments_name_themselves(
    elm: ModuleType, args: tuple[Any, ...], error: type, name: str
) -> None:
    latest = elm.views.Latest()
    latest(1)
    with pytest.raises(error, match=name):
        latest.wait_for(*args)


@pytest.mark.slow
def test_readers_in_four_threads_see_only_produced_models_under_a_million_ticks(
    elm: ModuleType,
) -> None:
    # The model is the count of messages applied, and version = model + 1
    # (init's tick is the first): a reader's snapshot that is not such a pair,
    # a model outside 0..n or not an int, or a model or version that goes back
    # means a reader saw something the loop never produced.
    n = 1_000_000
    latest = elm.views.Latest()
    ctx = elm.Context(timeout=120)  # a safety net: the loop ends by cancel long before
    bad: list[str] = []
    reads = [0] * 4

    def reader(index: int) -> None:
        last_version = last_model = 0
        while True:
            if index < 2:  # two wait on each newer model
                assert latest.wait_for(lambda m, seen=last_model: m > seen, timeout=60)
                version, model = latest.snapshot()
            else:  # two poll every reading as fast as they can
                if latest.version == 0:
                    continue
                version, model = latest.snapshot()
                alone = latest.get()
                if type(alone) is not int or alone < model or latest.version < version:
                    bad.append(f"reader {index}: get {alone!r} after {(version, model)}")
            reads[index] += 1
            if type(model) is not int or not 0 <= model <= n or version != model + 1:
                bad.append(f"reader {index}: snapshot {(version, model)!r}")
            if model < last_model or version < last_version:
                bad.append(f"reader {index}: {(version, model)} after {(last_version, last_model)}")
            if bad or model == n:
                return
            last_version, last_model = version, model

    readers = [InThread(lambda i=i: reader(i)) for i in range(4)]
    stopper = InThread(lambda: latest.wait_for(lambda m: m >= n) and ctx.cancel())

    def inc(n: int) -> tuple[int, None]:
        return n + 1, None

    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        buf.put(None, *(["inc"] * n))
        with pytest.raises(elm.Canceled):
            elm.run(lambda: (0, None), lambda msg: inc, latest, buf, consumer, ctx=ctx)
    assert not isinstance(ctx.err, elm.DeadlineExceeded)  # ended by the stopper
    for thread in [*readers, stopper]:
        thread.thread.join(60)
        assert not thread.thread.is_alive()
        assert thread.error is None, thread.error
    assert bad == []
    assert latest.snapshot() == (n + 1, n)
    assert all(count > 0 for count in reads)  # every reader ended on the final model


def test_wait_for_takes_a_timeout_longer_than_a_thread_can_wait(elm: ModuleType) -> None:
    latest = elm.views.Latest()
    latest(1)
    waiter = InThread(lambda: latest.wait_for(lambda model: model == 2, timeout=1e12))
    time.sleep(0.05)
    latest(2)
    waiter.join()
    assert waiter.error is None and waiter.result is True
