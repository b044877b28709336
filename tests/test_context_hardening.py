"""Context hardening (issue 7), on both cores: deep and wide trees, the parent check.

Ending or freeing a context never recurses once per level of nesting, so a deep
chain cannot overflow the C stack or raise RecursionError half-way; a bad parent
is refused with one message on both cores.
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any

import pytest
from _isolated import report, run_python


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
