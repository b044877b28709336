"""``with Context()`` and ``add_done_callback``: the scope as a block, and callbacks
that run once when it ends, however many of them raise."""

from __future__ import annotations

import copy
import gc
import logging
import pickle
import sys
import threading
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from _helpers import wait_for

# --------------------------------------------------------------------------- with


def test_with_cancels_on_leaving_the_block(elm: ModuleType) -> None:
    with elm.Context() as ctx:
        assert isinstance(ctx, elm.Context)
        assert not ctx.done
    assert ctx.done
    assert type(ctx.err) is elm.Canceled


def test_with_cancels_when_the_block_raises_and_lets_the_error_through(elm: ModuleType) -> None:
    with pytest.raises(ZeroDivisionError):
        with elm.Context() as ctx:
            1 / 0  # noqa: B018
    assert ctx.done


def test_with_ends_the_children_too(elm: ModuleType) -> None:
    with elm.Context() as parent:
        child = elm.Context(parent)
    assert child.done
    assert type(child.err) is elm.Canceled


def test_with_keeps_an_earlier_deadline(elm: ModuleType) -> None:
    with elm.Context(timeout=0) as ctx:
        assert isinstance(ctx.err, elm.DeadlineExceeded)
    assert isinstance(ctx.err, elm.DeadlineExceeded)  # leaving did not overwrite it


def test_with_wakes_a_blocked_get(elm: ModuleType) -> None:
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    errors: list[BaseException] = []
    started = threading.Event()

    def reader(ctx: object) -> None:
        started.set()
        try:
            consumer.get(ctx)
        except BaseException as exc:
            errors.append(exc)

    with elm.Context() as ctx:
        thread = threading.Thread(target=reader, args=(ctx,))
        thread.start()
        started.wait()
    thread.join(5)
    assert not thread.is_alive()
    assert len(errors) == 1 and type(errors[0]) is elm.Canceled


# --------------------------------------------------------------------------- add_done_callback


def test_callbacks_run_once_in_the_order_added(elm: ModuleType) -> None:
    ctx = elm.Context()
    calls: list[str] = []
    for name in "abc":
        ctx.add_done_callback(lambda name=name: calls.append(name))
    assert calls == []
    ctx.cancel()
    ctx.cancel()
    assert calls == ["a", "b", "c"]


def test_a_callback_on_an_ended_context_runs_at_once_on_this_thread(elm: ModuleType) -> None:
    ctx = elm.Context()
    ctx.cancel()
    threads: list[threading.Thread] = []
    handle = ctx.add_done_callback(lambda: threads.append(threading.current_thread()))
    assert threads == [threading.current_thread()]
    assert ctx.remove_done_callback(handle) is False  # it already ran


def test_a_callback_runs_on_the_thread_that_ends_the_context(elm: ModuleType) -> None:
    ctx = elm.Context()
    threads: list[threading.Thread] = []
    ctx.add_done_callback(lambda: threads.append(threading.current_thread()))
    ender = threading.Thread(target=ctx.cancel)
    ender.start()
    ender.join(5)
    assert threads == [ender]


def test_a_deadline_runs_the_callbacks(elm: ModuleType) -> None:
    ctx = elm.Context(timeout=0.02)
    ran = threading.Event()
    ctx.add_done_callback(ran.set)
    assert ran.wait(5)
    assert isinstance(ctx.err, elm.DeadlineExceeded)


def test_a_parent_ending_runs_its_childrens_callbacks(elm: ModuleType) -> None:
    parent = elm.Context()
    grandchild = elm.Context(elm.Context(parent))
    seen: list[object] = []
    grandchild.add_done_callback(lambda: seen.append(grandchild.err))
    parent.cancel()
    assert len(seen) == 1 and type(seen[0]) is elm.Canceled


def test_remove_withdraws_a_callback(elm: ModuleType) -> None:
    ctx = elm.Context()
    calls: list[str] = []
    kept = ctx.add_done_callback(lambda: calls.append("kept"))
    dropped = ctx.add_done_callback(lambda: calls.append("dropped"))
    assert ctx.remove_done_callback(dropped) is True
    assert ctx.remove_done_callback(dropped) is False  # once only
    ctx.cancel()
    assert calls == ["kept"]
    assert ctx.remove_done_callback(kept) is False  # it ran


def test_a_handle_of_another_context_removes_nothing(elm: ModuleType) -> None:
    ctx, other = elm.Context(), elm.Context()
    calls: list[str] = []
    ctx.add_done_callback(lambda: calls.append("ctx"))
    foreign = other.add_done_callback(lambda: calls.append("other"))
    assert ctx.remove_done_callback(foreign) is False
    ctx.cancel()
    other.cancel()
    assert calls == ["ctx", "other"]


@pytest.mark.parametrize("fn", [None, 42, "fn"])
def test_add_needs_a_callable(elm: ModuleType, fn: object) -> None:
    with pytest.raises(TypeError, match="fn must be callable"):
        elm.Context().add_done_callback(fn)


@pytest.mark.parametrize("handle", [None, 1, object(), lambda: None])
def test_remove_needs_a_handle(elm: ModuleType, handle: object) -> None:
    with pytest.raises(TypeError, match="handle must be what add_done_callback returned"):
        elm.Context().remove_done_callback(handle)


def test_a_handle_cannot_be_copied_or_pickled(elm: ModuleType) -> None:
    handle = elm.Context().add_done_callback(lambda: None)
    for attempt in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError, match="cannot be copied or pickled"):
            attempt(handle)


def test_a_callback_may_add_and_remove_callbacks(elm: ModuleType) -> None:
    ctx = elm.Context()
    calls: list[str] = []
    handles: list[object] = []

    def first() -> None:
        calls.append("first")
        # The end took every callback at once: too late to withdraw the next one.
        assert ctx.remove_done_callback(handles[0]) is False
        ctx.add_done_callback(lambda: calls.append("added"))  # ended: runs at once

    ctx.add_done_callback(first)
    handles.append(ctx.add_done_callback(lambda: calls.append("next")))
    ctx.cancel()
    assert calls == ["first", "added", "next"]


# --------------------------------------------------------------------------- raising callbacks


def test_a_raising_callback_stops_no_other_and_leaves_no_waiter_asleep(
    elm: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    """The raising callback is added first, so everything else comes after it:
    later callbacks, a ``wait``, a blocked ``get`` and a child must all end."""
    ctx = elm.Context()
    ctx.add_done_callback(lambda: 1 / 0)
    calls: list[str] = []
    ctx.add_done_callback(lambda: calls.append("after"))
    child = elm.Context(ctx)

    buf = elm.Buffer()
    consumer = buf.new_consumer()
    outcomes: list[object] = []

    def getter() -> None:
        try:
            consumer.get(ctx)
        except BaseException as exc:
            outcomes.append(exc)

    def waiter() -> None:
        outcomes.append(ctx.wait())

    threads = [threading.Thread(target=getter), threading.Thread(target=waiter)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)  # both are asleep (a late one sees the end at once: same outcome)

    with caplog.at_level(logging.ERROR, logger="elmstate"):
        ctx.cancel()  # the callback's error is not the canceller's
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()
    assert calls == ["after"]
    assert child.done
    assert len(outcomes) == 2 and True in outcomes  # the wait returned true
    assert [type(o) for o in outcomes if o is not True] == [elm.Canceled]  # the get raised
    [record] = [r for r in caplog.records if r.name == "elmstate"]
    assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError
    assert "done callback" in record.getMessage()


def test_a_raising_callback_on_the_timer_thread_stops_nothing(
    elm: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="elmstate"):
        ctx = elm.Context(timeout=0.01)
        ctx.add_done_callback(lambda: 1 / 0)
        ran = threading.Event()
        ctx.add_done_callback(ran.set)
        assert ran.wait(5)
        assert wait_for(lambda: any(r.name == "elmstate" for r in caplog.records))
    # The timer thread lives on: later deadlines still fire.
    assert elm.Context(timeout=0.01).wait(5)


def test_a_ctrl_c_in_a_callback_reaches_the_canceller_after_the_others_ran(
    elm: ModuleType,
) -> None:
    ctx = elm.Context()

    def interrupted() -> None:
        raise KeyboardInterrupt

    ctx.add_done_callback(interrupted)
    calls: list[str] = []
    ctx.add_done_callback(lambda: calls.append("after"))
    child = elm.Context(ctx)
    with pytest.raises(KeyboardInterrupt):
        ctx.cancel()
    assert calls == ["after"]
    assert ctx.done and child.done


# --------------------------------------------------------------------------- collected in a cycle


class Holder:
    """A callback that refers back to its context, made after it (so the GC may
    come to it last): context -> handle -> Holder -> context."""

    def __init__(self, ctx: object) -> None:
        self.ctx = ctx

    def __call__(self) -> None:
        pass


def callbacks_of(ctx: object) -> dict[Any, Any]:
    held = getattr(ctx, "_callbacks", None)  # the pure core's attribute
    if held is None:  # the compiled core's C field, as the GC sees it
        [held] = [r for r in gc.get_referents(ctx) if type(r) is dict]
    return held  # type: ignore[no-any-return]


@pytest.fixture
def unraisable() -> Iterator[list[object]]:
    """What the interpreter reports as "Exception ignored in ...", collected."""
    seen: list[object] = []
    saved = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        yield seen
    finally:
        sys.unraisablehook = saved


def deadlines(elm: ModuleType) -> int:
    """Deadlines scheduled on the timer thread (not work handed to the worker, which
    a consumer collected meanwhile by the same gc.collect may add)."""
    return sum(1 for _, work in list(elm._timer._pending.values()) if not work)


def test_a_child_collected_in_a_cycle_leaves_its_parent_and_its_deadline(
    elm: ModuleType, unraisable: list[object]
) -> None:
    parent = elm.Context()
    pending = deadlines(elm)
    gc.disable()
    try:
        for _ in range(200):
            child = elm.Context(parent, timeout=3600)
            child.add_done_callback(Holder(child))
            del child
        gc.collect()
    finally:
        gc.enable()
    assert len(callbacks_of(parent)) == 0  # no dead children registered
    assert deadlines(elm) == pending  # no deadlines left scheduled
    assert unraisable == []


def test_a_parent_and_child_collected_in_a_cycle_report_nothing(
    elm: ModuleType, unraisable: list[object]
) -> None:
    gc.disable()
    try:
        for _ in range(50):
            parent = elm.Context()
            child = elm.Context(parent, timeout=3600)
            parent.add_done_callback(Holder(child))  # parent -> child -> parent
            del parent, child
        gc.collect()
    finally:
        gc.enable()
    assert unraisable == []
