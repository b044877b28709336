"""Context, the thread-safe cancellation scope (docs/contract.md#context).

Ending or freeing a context never recurses once per level of nesting, so a deep
chain cannot overflow the C stack or raise RecursionError half-way; a bad parent
is refused with one message on both cores.
"""

from __future__ import annotations

import math
import threading
import time
from types import ModuleType
from typing import Any

import pytest
from _isolated import report, run_python


def test_new_context_runs(elm):
    ctx = elm.Context()
    assert ctx.done is False
    assert ctx.err is None
    assert ctx.wait(0) is False


def test_cancel_ends_with_canceled(elm):
    ctx = elm.Context()
    ctx.cancel()
    assert ctx.done is True
    assert type(ctx.err) is elm.Canceled
    assert ctx.wait(0) is True
    assert ctx.wait() is True


def test_cancel_is_idempotent(elm):
    ctx = elm.Context()
    ctx.cancel()
    first = ctx.err
    ctx.cancel()
    ctx.cancel()
    assert ctx.err is first
    assert ctx.done is True


def test_cancel_after_deadline_keeps_deadline_error(elm):
    ctx = elm.Context(timeout=0)
    first = ctx.err
    ctx.cancel()
    assert ctx.err is first
    assert type(ctx.err) is elm.DeadlineExceeded


def test_error_hierarchy(elm):
    assert issubclass(elm.DeadlineExceeded, elm.Canceled)
    assert issubclass(elm.DeadlineExceeded, TimeoutError)
    assert issubclass(elm.Canceled, Exception)
    assert not issubclass(elm.Canceled, TimeoutError)


def test_child_ends_with_parent_kind_canceled(elm):
    parent = elm.Context()
    child = elm.Context(parent)
    grandchild = elm.Context(child)
    assert not child.done
    parent.cancel()
    for ctx in (child, grandchild):
        assert ctx.done is True
        assert type(ctx.err) is elm.Canceled
        assert ctx.err is not parent.err  # a new instance of the same class
    assert grandchild.err is not child.err


def test_child_ends_with_parent_kind_deadline(elm):
    parent = elm.Context(timeout=0.02)
    child = elm.Context(parent)
    assert child.wait(5) is True
    assert type(parent.err) is elm.DeadlineExceeded
    assert type(child.err) is elm.DeadlineExceeded
    assert child.err is not parent.err


def test_child_cancel_leaves_parent_running(elm):
    parent = elm.Context()
    child = elm.Context(parent=parent)
    sibling = elm.Context(parent)
    child.cancel()
    assert child.done is True
    assert parent.done is False and parent.err is None
    assert sibling.done is False


def test_child_timeout_does_not_end_parent(elm):
    parent = elm.Context()
    child = elm.Context(parent, timeout=0.01)
    assert child.wait(5) is True
    assert type(child.err) is elm.DeadlineExceeded
    assert parent.done is False


@pytest.mark.parametrize("how", ["cancel", "deadline"])
def test_parent_already_ended_child_born_ended(elm, how):
    parent = elm.Context(timeout=0) if how == "deadline" else elm.Context()
    if how == "cancel":
        parent.cancel()
    child = elm.Context(parent, timeout=10)
    assert child.done is True
    assert type(child.err) is type(parent.err)
    assert child.err is not parent.err
    assert child.wait(0) is True


def test_timeout_ends_with_deadline_exceeded(elm):
    ctx = elm.Context(timeout=0.05)
    assert ctx.done is False and ctx.err is None
    assert ctx.wait(5) is True
    assert ctx.done is True
    assert type(ctx.err) is elm.DeadlineExceeded
    assert isinstance(ctx.err, elm.Canceled)
    assert isinstance(ctx.err, TimeoutError)


def test_timeout_zero_is_born_ended(elm):
    ctx = elm.Context(timeout=0)
    assert ctx.done is True
    assert type(ctx.err) is elm.DeadlineExceeded


def test_integer_timeout_accepted(elm):
    ctx = elm.Context(timeout=30)
    assert ctx.done is False
    ctx.cancel()
    assert type(ctx.err) is elm.Canceled


def test_wait_times_out_false(elm):
    ctx = elm.Context()
    start = time.monotonic()
    assert ctx.wait(0.02) is False
    assert time.monotonic() - start >= 0.015
    assert ctx.done is False


def test_wait_on_another_thread_wakes_promptly(elm):
    ctx = elm.Context()
    result: list = []
    woke: list[float] = []

    def waiter():
        result.append(ctx.wait(5))
        woke.append(time.monotonic())

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.05)  # let it block
    assert not result
    cancelled = time.monotonic()
    ctx.cancel()
    thread.join(5)
    assert not thread.is_alive()
    assert result == [True]
    assert woke[0] - cancelled < 0.5


def test_wait_on_another_thread_wakes_on_parent_cancel(elm):
    parent = elm.Context()
    child = elm.Context(parent)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(child.wait(5)))
    thread.start()
    time.sleep(0.02)
    start = time.monotonic()
    parent.cancel()
    thread.join(5)
    assert result == [True]
    assert time.monotonic() - start < 0.5


def test_repr_mentions_state(elm):
    ctx = elm.Context()
    assert "running" in repr(ctx)
    ctx.cancel()
    assert "Canceled" in repr(ctx)


@pytest.mark.parametrize("parent", ["ctx", 1, object(), threading.Event()])
def test_parent_not_a_context(elm, parent):
    with pytest.raises(TypeError, match="parent"):
        elm.Context(parent)
    with pytest.raises(TypeError, match="parent"):
        elm.Context(parent=parent)


@pytest.mark.parametrize("parent, kind", [("x", "str"), (1, "int"), (b"x", "bytes")])
def test_a_bad_parent_has_one_message_on_both_cores(
    elm: ModuleType, parent: object, kind: str
) -> None:
    """Issue 7, minor: Context(non-Context) raises the same TypeError text on both cores."""
    expected = f"parent must be an elmstate.Context or None, got {kind}"
    with pytest.raises(TypeError) as raised:
        elm.Context(parent)
    assert str(raised.value) == expected
    with pytest.raises(TypeError) as raised:
        elm.Context(parent=parent)
    assert str(raised.value) == expected


@pytest.mark.parametrize("timeout", [-1, -0.001, math.nan, math.inf, -math.inf])
def test_timeout_bad_value(elm, timeout):
    with pytest.raises(ValueError, match="timeout"):
        elm.Context(timeout=timeout)
    with pytest.raises(ValueError, match="timeout"):
        elm.Context().wait(timeout)


@pytest.mark.parametrize("timeout", ["1", True, False, b"1", [1], 1j])
def test_timeout_bad_type(elm, timeout):
    with pytest.raises(TypeError, match="timeout"):
        elm.Context(timeout=timeout)
    with pytest.raises(TypeError, match="timeout"):
        elm.Context().wait(timeout)


def test_timeout_is_keyword_only(elm):
    with pytest.raises(TypeError):
        elm.Context(None, 1.0)


# --------------------------------------------------------------------------- deep and wide trees


def test_freeing_a_deep_chain_does_not_crash(elm: ModuleType) -> None:
    """Issue 7, defect 2: freeing 100,000 nested contexts overflowed the C stack (compiled).

    In a subprocess, so that a crash fails this test instead of killing pytest.
    """
    proc = run_python(
        elm,
        """
        import gc

        current = None
        for _ in range(100_000):
            current = elm.Context(current)
        del current
        gc.collect()
        print("freed")
        """,
    )
    assert proc.returncode == 0, report(proc)
    assert proc.stdout.splitlines() == ["freed"], report(proc)


def chain(elm: ModuleType, depth: int, **kwargs: Any) -> list[Any]:
    """``[root, child, grandchild, ...]``: ``depth`` contexts below the root, all referenced."""
    contexts = [elm.Context(**kwargs)]
    for _ in range(depth):
        contexts.append(elm.Context(contexts[-1]))
    return contexts


def test_cancelling_the_root_of_a_deep_chain_ends_every_descendant(elm: ModuleType) -> None:
    """Issue 7, defect 6: cancel of a 5,000-deep chain raised RecursionError half-way."""
    contexts = chain(elm, 5_000)
    contexts[0].cancel()  # raises nothing
    assert all(ctx.done for ctx in contexts), f"{sum(not c.done for c in contexts)} still running"
    assert all(type(ctx.err) is elm.Canceled for ctx in contexts)
    assert contexts[-1].wait(0) is True


def test_cancelling_the_middle_of_a_deep_chain_ends_only_what_is_below(elm: ModuleType) -> None:
    """Issue 7, defect 6: ending a context deep down a chain leaves its ancestors running."""
    contexts = chain(elm, 5_000)
    contexts[2_500].cancel()
    assert not any(ctx.done for ctx in contexts[:2_500])
    assert all(type(ctx.err) is elm.Canceled for ctx in contexts[2_500:])
    contexts[0].cancel()
    assert all(ctx.done for ctx in contexts)


def test_a_deadline_at_the_root_of_a_deep_chain_ends_every_descendant(elm: ModuleType) -> None:
    """Issue 7, defect 6: the root's deadline (fired off-thread) reaches the deepest context."""
    contexts = chain(elm, 5_000, timeout=0.05)
    assert contexts[-1].wait(2) is True
    assert all(ctx.done for ctx in contexts)
    assert all(type(ctx.err) is elm.DeadlineExceeded for ctx in contexts)


def test_cancelling_the_root_of_a_wide_tree_ends_every_descendant(elm: ModuleType) -> None:
    """Issue 7, defect 6: 1,000 children, each with a child, all end with the root."""
    root = elm.Context()
    children = [elm.Context(root) for _ in range(1_000)]
    grandchildren = [elm.Context(child) for child in children]
    root.cancel()
    for ctx in (*children, *grandchildren):
        assert ctx.done is True
        assert type(ctx.err) is elm.Canceled


def test_a_deep_chain_cancelled_from_another_thread_wakes_a_waiter_at_the_bottom(
    elm: ModuleType,
) -> None:
    """Issue 7, defect 6: the cancel runs on another thread; the deepest waiter wakes."""
    contexts = chain(elm, 5_000)
    errors: list[BaseException] = []

    def cancel() -> None:
        try:
            contexts[0].cancel()
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=cancel)
    thread.start()
    woke = contexts[-1].wait(2)
    thread.join(5)
    assert not errors, errors
    assert woke is True


# --------------------------------------------------------------------------- freed at shutdown


def test_a_context_freed_after_the_modules_were_cleared_still_cancels_its_timer(
    elm: ModuleType,
) -> None:
    """At interpreter shutdown a context may be freed after the core's and the
    timer's module attributes were cleared: freeing it must neither raise
    (printed as "Exception ignored in ...") nor leave its deadline scheduled."""
    proc = run_python(
        elm,
        """
        from elmstate import _backend, _timer

        running = elm.Context(timeout=60)
        ended = elm.Context(timeout=60)
        ended.cancel()
        pending = _timer._pending
        assert len(pending) == 1, pending  # ending cancelled its own deadline
        _backend.core.__dict__["_timer"] = None  # what shutdown does to module attributes
        _timer.__dict__["_pending"] = None
        del running, ended
        assert len(pending) == 0, pending
        print("freed")
        """,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "freed", report(proc)
    assert proc.stderr == "", report(proc)
