"""The shared timer thread and deferred cleaner passes (issue 7), on both cores.

One daemon thread, "elmstate-timer", fires every Context deadline and schedules
every deferred cleaner pass. Nothing a caller passes in (a huge timeout or
cooldown) and nothing a cleaner does (raise anything, sleep, wait on a deadline)
may kill it, stall it, or run on it; cancelled and dropped contexts do not leave
their entries behind.

Checks whose failure would kill or wedge the session's timer thread (and so fail
every later deadline in the run) are made in a subprocess.
"""

from __future__ import annotations

import gc
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Callable

import pytest
from _helpers import ArmedCleaner, wait_for
from _isolated import report, run_python

WATCHDOG = 30.0


def assert_deadlines_fire(elm: ModuleType) -> None:
    """A fresh 0.05 s deadline fires within 1.5 s: the timer thread is alive and free."""
    began = time.monotonic()
    assert elm.Context(timeout=0.05).wait(2) is True, "the timer thread fired no deadline"
    assert time.monotonic() - began < 1.5


# The deferred-pass setup shared by the subprocess scripts below: set_cleaner runs
# one pass inline; the put + get + commit that follow, well within the cooldown,
# defer the next pass by about the cooldown.
DEFER = """
import threading
import time


def deferred_pass(cleaner, cooldown=0.05):
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.set_cleaner(cleaner, cooldown=cooldown)  # one pass, inline
    buf.put(None, 1)
    consumer.get()
    consumer.commit()  # the next pass is deferred
    return buf, consumer


def off_main_thread():
    return threading.current_thread() is not threading.main_thread()


def timer_alive():
    return any(t.name == "elmstate-timer" and t.is_alive() for t in threading.enumerate())
"""


def expect_output(elm: ModuleType, body: str, expected: list[str], *, quiet: bool = False) -> None:
    """Run DEFER + ``body`` in a subprocess: it must exit 0 printing ``expected`` lines
    (and, if ``quiet``, nothing on stderr)."""
    proc = run_python(elm, DEFER + textwrap.dedent(body), timeout=20)
    assert proc.returncode == 0, report(proc)
    assert proc.stdout.splitlines() == expected, report(proc)
    if quiet:
        assert proc.stderr == "", report(proc)


# --------------------------------------------------------------------------- huge values


@pytest.mark.parametrize("timeout", [1e10, 1e300], ids=["1e10", "1e300"])
def test_a_timeout_beyond_timeout_max_does_not_kill_the_timer(
    elm: ModuleType, timeout: float
) -> None:
    """Issue 7, defect 3a: Context(timeout above threading.TIMEOUT_MAX) killed the timer thread."""
    expect_output(
        elm,
        f"""
        assert {timeout!r} > threading.TIMEOUT_MAX
        huge = elm.Context(timeout={timeout!r})
        time.sleep(0.05)  # let the timer thread look at it
        print("huge running:", not huge.done)
        print("deadlines fire:", deadlines_fire())
        print("timer alive:", timer_alive())
        huge.cancel()
        print("deadlines fire after cancel:", deadlines_fire())
        """,
        [
            "huge running: True",
            "deadlines fire: True",
            "timer alive: True",
            "deadlines fire after cancel: True",
        ],
    )


def test_a_cooldown_beyond_timeout_max_does_not_kill_the_timer(elm: ModuleType) -> None:
    """Issue 7, defect 3b: set_cleaner(cooldown=1e10) then a deferred pass killed the timer."""
    expect_output(
        elm,
        """
        buf, consumer = deferred_pass(elm.default_cleaner, cooldown=1e10)
        time.sleep(0.05)  # let the timer thread look at the deferred pass
        print("held:", len(buf))  # that pass is 1e10 s away
        print("deadlines fire:", deadlines_fire())
        print("timer alive:", timer_alive())
        """,
        ["held: 1", "deadlines fire: True", "timer alive: True"],
    )


def test_wait_with_a_timeout_beyond_timeout_max(elm: ModuleType) -> None:
    """Issue 7, defect 3c: ctx.wait(1e10) raised OverflowError instead of waiting."""
    done = elm.Context()
    done.cancel()
    assert done.wait(1e10) is True  # at once

    ctx = elm.Context()
    canceller = threading.Timer(0.05, ctx.cancel)
    canceller.start()
    try:
        assert ctx.wait(1e10) is True
    finally:
        canceller.cancel()
        canceller.join(5)
    assert type(ctx.err) is elm.Canceled


@pytest.mark.parametrize(
    "timeout", [10**400, -(10**400), 2**1024], ids=["10**400", "-10**400", "2**1024"]
)
def test_an_int_timeout_too_big_for_a_float_is_a_value_error(elm: ModuleType, timeout: int) -> None:
    """Issue 7, defect 3d: Context(timeout=10**400) and wait(10**400) raise ValueError."""
    with pytest.raises(ValueError, match="timeout"):
        elm.Context(timeout=timeout)
    with pytest.raises(ValueError, match="timeout"):
        elm.Context().wait(timeout)
    running = elm.Context()
    with pytest.raises(ValueError, match="timeout"):
        running.wait(timeout)
    assert running.done is False


@pytest.mark.parametrize(
    "timeout, error",
    [
        (-1, ValueError),
        (float("inf"), ValueError),
        (float("nan"), ValueError),
        (True, TypeError),
        ("1", TypeError),
    ],
    ids=["-1", "inf", "nan", "True", "'1'"],
)
def test_other_bad_timeouts_keep_their_errors(
    elm: ModuleType, timeout: object, error: type[Exception]
) -> None:
    """Issue 7, defect 3d: negative, inf and nan stay ValueError; bool and str stay TypeError."""
    with pytest.raises(error, match="timeout"):
        elm.Context(timeout=timeout)
    with pytest.raises(error, match="timeout"):
        elm.Context().wait(timeout)


# --------------------------------------------------------------------------- cleaner errors


@pytest.mark.parametrize("kind", ["SystemExit", "KeyboardInterrupt", "GeneratorExit"])
def test_a_deferred_cleaner_raising_a_base_exception_closes_the_buffer(
    elm: ModuleType, kind: str
) -> None:
    """Issue 7, defect 3e: a deferred pass's SystemExit & co. killed the timer, left it open.

    The closed buffer reports the error; nothing is printed besides.
    """
    expect_output(
        elm,
        f"""
        error = {kind}("from the cleaner")
        calls = []

        def cleaner(size, offsets):
            calls.append(off_main_thread())
            if off_main_thread():
                raise error
            return 0

        buf, consumer = deferred_pass(cleaner)
        deadline = time.monotonic() + 2
        while not any(calls) and time.monotonic() < deadline:
            time.sleep(0.005)
        print("deferred call:", any(calls))


        def closed():
            try:
                buf.put(None, 1)
            except elm.Closed as exc:
                return exc
            return None


        deadline = time.monotonic() + 1
        while closed() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        exc = closed()
        print("closed:", exc is not None)
        print("cause:", exc is not None and exc.__cause__ is error)
        print("deadlines fire:", deadlines_fire())
        print("timer alive:", timer_alive())
        """,
        [
            "deferred call: True",
            "closed: True",
            "cause: True",
            "deadlines fire: True",
            "timer alive: True",
        ],
        quiet=True,
    )


class Interrupt(Exception):
    """What a test reports instead of letting a KeyboardInterrupt abort the session."""


@contextmanager
def contained() -> Iterator[None]:
    """Turn an escaping KeyboardInterrupt into a test failure, not a stop of pytest."""
    try:
        yield
    except KeyboardInterrupt as exc:
        raise Interrupt(f"a KeyboardInterrupt escaped: {exc!r}") from None


@pytest.mark.parametrize("via", ["set_cleaner", "put"])
def test_an_inline_cleaner_interrupt_propagates_and_closes_the_buffer(
    elm: ModuleType, via: str
) -> None:
    """Issue 7, defect 3g: an inline KeyboardInterrupt reaches the caller and closes the buffer."""
    error = KeyboardInterrupt("from the cleaner")
    cleaner = ArmedCleaner(error, armed=via == "set_cleaner")

    buf = elm.Buffer()
    consumer = buf.new_consumer()
    with contained():
        if via == "set_cleaner":
            with pytest.raises(KeyboardInterrupt) as raised:
                buf.set_cleaner(cleaner, cooldown=0)
        else:
            buf.set_cleaner(cleaner, cooldown=0)
            cleaner.armed = True
            with pytest.raises(KeyboardInterrupt) as raised:
                buf.put(None, "x")  # cooldown 0: this put runs a pass, inline
        assert raised.value is error
        with pytest.raises(elm.Closed) as closed:
            buf.put(None, 1)
        assert closed.value.__cause__ is error
        with pytest.raises(elm.Closed) as closed:
            consumer.get(elm.Context(timeout=5))
        assert closed.value.__cause__ is error


def test_an_inline_cleaner_exception_closes_the_buffer_without_propagating(
    elm: ModuleType,
) -> None:
    """Issue 7, defect 3g: an ordinary Exception from an inline pass still only closes."""
    error = LookupError("from the cleaner")

    def cleaner(size: int, offsets: Sequence[int]) -> int:
        raise error

    buf = elm.Buffer()
    buf.set_cleaner(cleaner, cooldown=0)  # raises nothing
    with pytest.raises(elm.Closed) as closed:
        buf.put(None, 1)
    assert closed.value.__cause__ is error


# --------------------------------------------------------------------------- where passes run


def deferred_buffer(
    elm: ModuleType, cleaner: Callable[[int, Sequence[int]], int]
) -> tuple[Any, Any]:
    """A buffer and its consumer; the next cleaner pass is ~0.1 s away (set_cleaner ran one)."""
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.set_cleaner(cleaner, cooldown=0.1)  # one pass, inline
    buf.put(None, 1)
    consumer.get()
    consumer.commit()  # the next pass is deferred
    return buf, consumer


def test_deferred_passes_do_not_run_on_the_timer_thread(elm: ModuleType) -> None:
    """Issue 7, defect 3f: a deferred cleaner pass runs on some thread but elmstate-timer."""
    names: list[str] = []

    def cleaner(size: int, offsets: Sequence[int]) -> int:
        names.append(threading.current_thread().name)
        return int(elm.default_cleaner(size, offsets))

    buf, consumer = deferred_buffer(elm, cleaner)
    assert wait_for(lambda: len(names) >= 2)
    assert wait_for(lambda: len(buf) == 0)
    assert names[0] == threading.current_thread().name  # set_cleaner's pass: inline
    assert names[1] != threading.current_thread().name  # the deferred one
    assert "elmstate-timer" not in names[1:], names


def test_a_slow_deferred_cleaner_does_not_delay_deadlines(elm: ModuleType) -> None:
    """Issue 7, defect 3f: a deferred cleaner sleeping 1 s does not hold up a 0.1 s deadline."""
    main = threading.current_thread()
    started = threading.Event()
    finished = threading.Event()

    def cleaner(size: int, offsets: Sequence[int]) -> int:
        if threading.current_thread() is not main and not started.is_set():
            started.set()
            time.sleep(1.0)
            finished.set()
        return 0

    buf, consumer = deferred_buffer(elm, cleaner)  # kept: a pass holds the buffer weakly
    try:
        assert started.wait(2), "the deferred pass never ran"
        created = time.monotonic()
        ctx = elm.Context(timeout=0.1)
        assert ctx.wait(5) is True
        assert time.monotonic() - created < 0.7, "the deadline waited for the cleaner"
    finally:
        finished.wait(3)


def test_a_deferred_cleaner_may_wait_on_a_deadline(elm: ModuleType) -> None:
    """Issue 7, defect 3f: a deferred cleaner waiting on Context(timeout=0.2) wedged the timer."""
    expect_output(
        elm,
        """
        import os
        import sys

        results = []

        def cleaner(size, offsets):
            if off_main_thread() and not results:
                results.append(elm.Context(timeout=0.2).wait())
            return 0

        buf, consumer = deferred_pass(cleaner)
        deadline = time.monotonic() + 3
        while not results and time.monotonic() < deadline:
            time.sleep(0.005)
        print("cleaner's wait:", results)
        print("deadlines fire:", deadlines_fire())
        sys.stdout.flush()
        os._exit(0)  # a wedged thread must not hold up the exit
        """,
        ["cleaner's wait: [True]", "deadlines fire: True"],
    )


# --------------------------------------------------------------------------- timer entries


@contextmanager
def traced_growth(report_to: list[int]) -> Iterator[None]:
    """Append the growth (bytes) of traced memory over the block, after a gc, to ``report_to``."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        gc.collect()
        before, _ = tracemalloc.get_traced_memory()
        yield
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
        report_to.append(after - before)
    finally:
        if not tracing:
            tracemalloc.stop()


def test_cancelled_contexts_release_their_timer_entries(elm: ModuleType) -> None:
    """Issue 7, defect 8: 100,000 cancelled Context(timeout=3600) kept ~25 MB of timer entries."""
    for _ in range(100):
        elm.Context(timeout=3600).cancel()  # warm up
    growth: list[int] = []
    with traced_growth(growth):
        for _ in range(100_000):
            elm.Context(timeout=3600).cancel()
    assert growth[0] < 2_000_000, f"memory grew by {growth[0]} bytes"
    assert_deadlines_fire(elm)


def test_dropped_contexts_release_their_timer_entries(elm: ModuleType) -> None:
    """Issue 7, defect 8: 100,000 dropped Context(timeout=3600) kept ~25 MB of timer entries."""
    for _ in range(100):
        elm.Context(timeout=3600)  # warm up
    growth: list[int] = []
    with traced_growth(growth):
        for _ in range(100_000):
            elm.Context(timeout=3600)
    assert growth[0] < 2_000_000, f"memory grew by {growth[0]} bytes"
    assert_deadlines_fire(elm)
