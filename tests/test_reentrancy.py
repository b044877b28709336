"""Re-entry, interrupts, fork and a failed thread start, on both cores.

Regression tests for what a review of the hardening pass (6a80cf7) found and
42dfd71 fixed. Finalisers run by the garbage collector may call into elmstate
from inside any allocation, also from inside elmstate itself on the same thread;
a KeyboardInterrupt may land on any bytecode; a forked child keeps the parent's
buffers; a thread may fail to start. None of these may deadlock a thread, kill
the timer, or leave a buffer that never cleans again.

Every check runs in a fresh interpreter (tests/_isolated.py): a failure here
deadlocks a thread or wedges the shared timer, which would hang or poison the
rest of the session. Each snippet bounds itself with
``faulthandler.dump_traceback_later(..., exit=True)`` (or ``signal.alarm`` in a
forked child, where faulthandler's watchdog thread does not exist), so a
deadlock shows up as a failed exit with the stuck stacks on stderr, not a hang.

The GC re-entry tests sweep the gen-0 threshold over a range of offsets, so that
for some offset the collection (and the finaliser) runs inside the allocation
under test, whatever the exact allocation count of the core and Python version;
they also check that some offset did land inside, lest they pass vacuously.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from types import ModuleType

import pytest
from _isolated import report, run_python

WATCHDOG = 60.0

# Shared by the GC re-entry snippets below.
GC_SWEEP = """
import faulthandler
import gc
import time

faulthandler.dump_traceback_later(10, exit=True)  # a deadlock: exit 1 with the stacks


class Trigger:
    # Only the cycle collector frees it: its finaliser runs at the next gen-0
    # collection, i.e. inside whichever allocation crosses the threshold.
    def __init__(self, fn):
        self.cycle = self
        self.fn = fn

    def __del__(self):
        self.fn()


def collect_inside(offset, fn, call):
    # A Trigger running fn() is collected once `offset` more GC-tracked objects
    # have been allocated, hopefully during call(); returns call()'s result.
    gc.collect()
    Trigger(fn)
    hold = [[] for _ in range(200)]  # deallocations must not pull the count below 0
    gc.set_threshold(gc.get_count()[0] + offset)
    try:
        return call()
    finally:
        gc.set_threshold(700)
        del hold


"""

OFFSETS = 40  # the sweep's width: the windows measured are within 0..15 on 3.11


def run_lines(elm: ModuleType, code: str, timeout: float = 30.0) -> list[str]:
    """Run ``code`` in a fresh interpreter; it must exit 0. Returns its stdout lines."""
    try:
        proc = run_python(elm, code, timeout=timeout)
    except subprocess.TimeoutExpired as exc:  # pragma: no cover - the snippets bound themselves
        pytest.fail(
            f"the subprocess was still running after {timeout} s:\n{exc.stdout}\n{exc.stderr}"
        )
    assert proc.returncode == 0, report(proc)
    return proc.stdout.splitlines()


# --------------------------------------------------------------------------- the timer


@pytest.mark.parametrize("work", ["buffer_put", "context_timeout"])
def test_a_finaliser_may_schedule_while_its_thread_schedules(elm: ModuleType, work: str) -> None:
    """A finaliser scheduling timer work inside the timer's scheduling code: no deadlock.

    Before 42dfd71, ``_timer._schedule`` allocated under a non-reentrant lock; a
    finaliser run there by the GC that scheduled work of its own (a Buffer.put
    within the cooldown defers a pass; a Context with a timeout schedules its
    deadline) blocked on that lock on the same thread for good. Afterwards what
    the finalisers scheduled still happens: their passes run, their deadlines fire.
    """
    lines = run_lines(
        elm,
        GC_SWEEP
        + textwrap.dedent(
            f"""
            WORK = {work!r}
            made = []
            inside = [False]
            hits = [0]


            def drop_all(size, offsets):
                return size


            def finaliser():
                hits[0] += inside[0]
                if WORK == "buffer_put":
                    buf = elm.Buffer()
                    buf.set_cleaner(drop_all, cooldown=0.05)  # one pass, inline
                    buf.put(None, "released")  # within the cooldown: a deferred pass
                    made.append(buf)
                else:
                    made.append(elm.Context(timeout=0.05))


            def schedule():
                inside[0] = True
                try:
                    return elm.Context(timeout=60)  # schedules its deadline
                finally:
                    inside[0] = False


            keep = [collect_inside(offset, finaliser, schedule) for offset in range({OFFSETS})]
            gc.collect()  # finalisers that did not run yet
            print("hit inside scheduling:", hits[0] > 0)
            print("finalisers ran:", len(made) == {OFFSETS})
            if WORK == "buffer_put":
                print("all done:", wait_until(lambda: not any(len(buf) for buf in made)))
            else:
                print("all done:", wait_until(lambda: all(ctx.done for ctx in made)))
            print("long deadlines still running:", not any(ctx.done for ctx in keep))
            print("deadlines fire:", deadlines_fire())
            """
        ),
    )
    window_reached(lines, "hit inside scheduling: True")
    assert lines == [
        "hit inside scheduling: True",
        "finalisers ran: True",
        "all done: True",
        "long deadlines still running: True",
        "deadlines fire: True",
    ]


# --------------------------------------------------------------------------- Context.wait


def test_a_finaliser_may_end_the_context_that_waits(elm: ModuleType) -> None:
    """A finaliser that cancels (or makes a child of) a context during its wait(): no deadlock.

    Before 42dfd71, Context.wait built its threading.Event holding the context's
    non-reentrant lock; a finaliser the GC ran there that cancelled that context,
    or made a child of it, took the same lock on the same thread and hung.
    """
    lines = run_lines(
        elm,
        GC_SWEEP
        + textwrap.dedent(
            f"""
            inside = [False]
            hits = {{"cancel": 0, "child": 0}}
            children = []

            for action in ("cancel", "child"):
                for offset in range({OFFSETS}):
                    ctx = elm.Context()

                    def finaliser(ctx=ctx, action=action):
                        hits[action] += inside[0]
                        if action == "child":
                            children.append(elm.Context(ctx))
                        ctx.cancel()

                    def wait(ctx=ctx):
                        inside[0] = True
                        try:
                            return ctx.wait(0.01)
                        finally:
                            inside[0] = False

                    collect_inside(offset, finaliser, wait)
                    gc.collect()  # a finaliser that did not run yet
                    assert ctx.done and ctx.wait(0) is True, (action, offset)
            print("hit inside wait:", hits["cancel"] > 0, hits["child"] > 0)
            print("children done:", len(children) == {OFFSETS}, all(c.done for c in children))
            print("deadlines fire:", deadlines_fire())
            """
        ),
    )
    window_reached(lines, "hit inside wait: True True")
    assert lines == [
        "hit inside wait: True True",
        "children done: True True",
        "deadlines fire: True",
    ]


# --------------------------------------------------------------------------- new_consumer


def get_outcome_code() -> str:
    return """
    def first_get(consumer):
        try:
            consumer.get(elm.Context(timeout=0.01))
        except elm.Lagged as exc:
            return f"lagged: {exc}"
        except elm.DeadlineExceeded:
            return "ok"  # nothing it may read: fine, it was not told it lagged
        return "ok"
    """


def test_a_consumer_made_while_a_finaliser_cleans_is_not_lagged(elm: ModuleType) -> None:
    """new_consumer with a finaliser running a whole clean pass inside it: not Lagged.

    Before 42dfd71, new_consumer read the buffer's start, then allocated before
    registering the consumer; a finaliser run there by the GC that committed
    another consumer ran a pass inline (re-entrant lock, same thread) that could
    not see the new consumer and dropped past its start: its first get raised
    Lagged.
    """
    lines = run_lines(
        elm,
        GC_SWEEP
        + textwrap.dedent(get_outcome_code())
        + textwrap.dedent(
            f"""
            inside = [False]
            hits = [0]
            outcomes = set()
            for offset in range({OFFSETS}):
                buf = elm.Buffer()
                old = buf.new_consumer()
                buf.set_cleaner(elm.default_cleaner, cooldown=0.0)
                buf.put(None, *range(100))
                for _ in range(100):
                    old.get()  # read, not yet committed

                def finaliser(old=old):
                    hits[0] += inside[0]
                    old.commit()  # an inline pass: drops all 100 but for the new consumer

                def make(buf=buf):
                    inside[0] = True
                    try:
                        return buf.new_consumer()
                    finally:
                        inside[0] = False

                new = collect_inside(offset, finaliser, make)
                outcomes.add(first_get(new))
            print("hit inside new_consumer:", hits[0] > 0)
            print("first gets:", sorted(outcomes))
            """
        ),
    )
    window_reached(lines, "hit inside new_consumer: True")
    assert lines == ["hit inside new_consumer: True", "first gets: ['ok']"]


def test_a_consumer_a_finaliser_makes_during_a_pass_stays_registered(elm: ModuleType) -> None:
    """A consumer registered by a finaliser while a pass prunes the registry is kept.

    Before 42dfd71 the compiled core pruned dead consumers by building a new list
    and assigning it; a consumer a finaliser registered meanwhile (same thread,
    re-entrant lock) went into the old list and was lost: the next pass did not
    see it, dropped what it had not read, and its first get raised Lagged.
    """
    lines = run_lines(
        elm,
        GC_SWEEP
        + textwrap.dedent(get_outcome_code())
        + textwrap.dedent(
            f"""
            hits = [0]
            outcomes = set()
            for offset in range({OFFSETS}):
                buf = elm.Buffer()
                c = buf.new_consumer()
                others = [buf.new_consumer() for _ in range(30)]  # live: re-registered
                buf.set_cleaner(elm.default_cleaner, cooldown=0.0)
                buf.put(None, *range(10))
                for _ in range(10):
                    c.get()
                for o in others:
                    for _ in range(10):
                        o.get()
                    o.commit()
                made = []
                inside = [False]

                def finaliser(buf=buf, made=made, inside=inside):
                    made.append((buf.new_consumer(), inside[0]))

                for _ in range(5):
                    buf.new_consumer()  # dead at once: the next pass prunes them

                def commit(c=c, inside=inside):
                    inside[0] = True
                    try:
                        c.commit()  # an inline pass: prunes the registry
                    finally:
                        inside[0] = False

                collect_inside(offset, finaliser, commit)
                gc.collect()  # a finaliser that did not run yet
                buf.put(None, "after")
                c.get()
                c.commit()  # another pass
                for new, during in made:
                    hits[0] += during
                    outcomes.add(first_get(new))
            print("hit inside the pass:", hits[0] > 0)
            print("first gets:", sorted(outcomes))
            """
        ),
    )
    window_reached(lines, "hit inside the pass: True")
    assert lines == ["hit inside the pass: True", "first gets: ['ok']"]


# --------------------------------------------------------------------------- fork


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_a_forked_child_runs_the_pass_pending_at_fork(elm: ModuleType) -> None:
    """A buffer whose deferred pass was pending at fork still cleans in the child.

    Before 42dfd71 the child's at-fork hook dropped the timer's pending work
    while the buffer still believed a pass was scheduled: in the child it never
    cleaned again. A new deadline in the child fires, and the parent cleans too.
    """
    lines = run_lines(
        elm,
        """
        import faulthandler
        import os
        import signal
        import sys
        import time

        faulthandler.dump_traceback_later(15, exit=True)

        buf = elm.Buffer()
        c = buf.new_consumer()
        buf.set_cleaner(elm.default_cleaner, cooldown=0.2)
        buf.put(None, 1)
        c.get()
        c.commit()  # a deferred pass, due in about 0.2 s
        assert len(buf) == 1 and elm.Context(timeout=0.01).wait(1)  # the timer runs
        pid = os.fork()
        if pid == 0:  # the child: faulthandler's watchdog thread did not come along
            signal.alarm(10)  # SIGALRM's default action ends a stuck child
            try:
                for i in range(100):
                    buf.put(None, i)
                    c.get()
                    c.commit()
                cleaned = wait_until(lambda: len(buf) == 0, 1.5)
                began = time.monotonic()
                fired = elm.Context(timeout=0.05).wait(2)
                fired = fired and time.monotonic() - began < 1.5
                print("child cleaned:", cleaned, len(buf), flush=True)
                print("child deadline fires:", fired, flush=True)
            finally:
                sys.stdout.flush()
                os._exit(0)
        deadline = time.monotonic() + 10
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                print("child: stuck, killed", flush=True)
                break
            time.sleep(0.01)
        print("parent cleaned:", wait_until(lambda: len(buf) == 0, 1.5), flush=True)
        """,
    )
    assert lines == [
        "child cleaned: True 0",
        "child deadline fires: True",
        "parent cleaned: True",
    ]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_cleans_although_a_pass_ran_at_fork(elm: ModuleType) -> None:
    """A fork while another thread runs a pass leaves the child's buffer cleaning.

    The child inherits the buffer's "a pass runs" state but not the thread that
    would end it; before the fix every later request in the child only asked
    that pass for another, and nothing was ever dropped there again.
    """
    lines = run_lines(
        elm,
        """
        import os
        import signal
        import sys
        import threading
        import time

        parent = os.getpid()
        in_cleaner = threading.Event()


        def slow_cleaner(size, offsets):
            if os.getpid() == parent and threading.current_thread().name == "committer":
                in_cleaner.set()
                time.sleep(0.5)
            return elm.default_cleaner(size, offsets)


        buf = elm.Buffer()
        c = buf.new_consumer()
        buf.set_cleaner(slow_cleaner, cooldown=0)
        buf.put(None, 0)
        c.get()
        committer = threading.Thread(target=c.commit, name="committer")
        committer.start()  # its commit runs a pass, and the cleaner sleeps in it
        assert in_cleaner.wait(5)
        pid = os.fork()
        if pid == 0:
            signal.alarm(10)
            try:
                for i in range(100):
                    buf.put(None, i)
                    c.get()
                    c.commit()
                deadline = time.monotonic() + 1.5
                while len(buf) and time.monotonic() < deadline:
                    time.sleep(0.005)
                print("child holds:", len(buf), flush=True)
            finally:
                sys.stdout.flush()
                os._exit(0)
        os.waitpid(pid, 0)
        committer.join()
        print("parent holds:", len(buf), flush=True)
        """,
    )
    assert lines == ["child holds: 0", "parent holds: 0"]


# --------------------------------------------------------------------------- KeyboardInterrupt

TRIALS = 30
PURE_STUCK_ALLOWED = 3


def test_a_keyboard_interrupt_storm_never_leaves_cleaning_stuck(elm: ModuleType) -> None:
    """KeyboardInterrupts landing anywhere in put/get/commit do not stop a buffer cleaning.

    Not on the pure core before Python 3.11: there an interrupt can land after a
    ``with lock:`` block's body and before its ``__exit__`` (python/cpython#74174),
    leaving a buffer's lock held by the main thread, which blocks the worker thread
    that runs deferred passes (seen: 23 of 30 trials stuck on 3.9, also on 3.10).
    docs/cores.md says so.

    SIGALRM every ~30 us raises KeyboardInterrupt on the main thread while it
    puts, gets and commits with cooldown=0.002, for 30 ms per trial and 30
    trials. Then, with the storm disarmed, everything is read and committed:
    within about a second each buffer has dropped all of it, and deadlines fire.
    Before 42dfd71, 30-100% of trials never cleaned again on both cores, and an
    interrupt inside the timer's lock could hang every later schedule.

    The handler raises only in frames other than the harness's own retry loop,
    so the harness itself is never broken; it still lands in the body of the
    loop and in every Python frame the cores call (all of the pure core). On
    the compiled core no trial may stay stuck. On the pure core an interrupt can
    land on any bytecode; the flag that claims a pass is set last before its
    return and cleared first in its finally, which closed the windows seen (0
    stuck in 720 trials), but as a margin for one not seen, up to
    PURE_STUCK_ALLOWED of TRIALS are tolerated there.
    """
    if not elm.compiled and sys.version_info < (3, 11):
        pytest.skip("pure core before 3.11: a with block's exit is not interrupt-safe")
    lines = run_lines(
        elm,
        f"""
        import faulthandler
        import signal
        import time

        faulthandler.dump_traceback_later(20, exit=True)  # a hang: exit 1 with the stacks
        TRIALS = {TRIALS}
        armed = False
        interrupts = 0


        def churn(buf, c, until):
            while time.monotonic() < until:
                buf.put(None, 1)
                c.get()
                c.commit()


        def trial():
            global armed, interrupts
            buf = elm.Buffer()
            c = buf.new_consumer()
            buf.set_cleaner(elm.default_cleaner, cooldown=0.002)
            until = time.monotonic() + 0.03
            while True:
                try:
                    armed = True
                    churn(buf, c, until)
                    armed = False
                    break
                except KeyboardInterrupt:
                    armed = False
                    interrupts += 1
                except (elm.NothingUncommitted, elm.Closed):
                    armed = False
            try:  # the storm is disarmed: read and commit everything
                buf.put(None, "last")
                while buf.diff(c):
                    c.get()
                c.commit()
            except elm.Closed:
                return None
            return buf, c  # the consumer too: without one, nothing is dropped


        def handler(signum, frame):
            # Never in the harness: trial, or this handler itself (a second
            # alarm can land while a first one's handler runs; seen on 3.9).
            if armed and frame is not None and frame.f_code not in spared:
                raise KeyboardInterrupt


        spared = (trial.__code__, handler.__code__)


        # The timer thread first: an interrupt inside Thread.start (CPython's
        # Event.wait, not interrupt-safe) can surface as RuntimeError.
        assert elm.Context(timeout=0.001).wait(1)
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.00003)
        try:
            results = [trial() for _ in range(TRIALS)]
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)  # the handler stays: unarmed
        kept = [r for r in results if r is not None]
        deadline = time.monotonic() + 1.0
        while any(len(buf) for buf, _ in kept) and time.monotonic() < deadline:
            time.sleep(0.01)
        stuck = sum(1 for buf, _ in kept if len(buf))
        print("interrupts:", interrupts >= TRIALS, flush=True)
        print("closed:", TRIALS - len(kept), flush=True)
        print("stuck:", stuck, flush=True)
        began = time.monotonic()
        fired = elm.Context(timeout=0.05).wait(2)
        print("deadlines fire:", fired and time.monotonic() - began < 1.5, flush=True)
        """,
    )
    assert len(lines) == 4, lines
    assert lines[0] == "interrupts: True", lines  # the storm did interrupt
    assert lines[1] == "closed: 0", lines
    stuck = int(lines[2].split()[-1])
    if elm.compiled:
        assert stuck == 0, lines
    else:
        assert stuck <= PURE_STUCK_ALLOWED, lines
    assert lines[3] == "deadlines fire: True", lines


# --------------------------------------------------------------------------- a failed thread start


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc: Linux")
def test_the_timer_survives_failing_to_start_the_worker(elm: ModuleType) -> None:
    """A worker thread that cannot start does not kill the timer thread.

    A transient address-space limit (RLIMIT_AS a little above the current size)
    makes starting a thread fail (no room for its stack) just when the first
    deferred pass is handed to the worker. Before 42dfd71 the RuntimeError
    killed the timer thread: no deadline fired again. Now the timer runs that
    pass itself, and once the limit is lifted the worker starts for the next.
    Skipped if the limit does not stop a thread starting here.
    """
    lines = run_lines(
        elm,
        """
        import faulthandler
        import resource
        import sys
        import threading
        import time

        faulthandler.dump_traceback_later(15, exit=True)
        from elmstate import _timer

        assert elm.Context(timeout=0.01).wait(1)  # the timer thread runs
        assert _timer._worker is None, "the worker started already"
        buf = elm.Buffer()
        c = buf.new_consumer()
        buf.set_cleaner(elm.default_cleaner, cooldown=0.2)
        buf.put(None, 1)
        c.get()
        c.commit()  # a deferred pass, due in about 0.2 s
        with open("/proc/self/status") as status:
            vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = vm + (2 << 20)
        if hard != resource.RLIM_INFINITY and hard < limit:
            print("skip: the hard RLIMIT_AS is too low")
            sys.exit(0)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        try:
            try:
                threading.Thread(target=lambda: None).start()
            except RuntimeError:
                pass
            else:
                print("skip: a thread still starts under the limit")
                sys.exit(0)
            time.sleep(0.5)  # the pass falls due and is handed over meanwhile
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        print("timer alive:", _timer._thread is not None and _timer._thread.is_alive())
        print("deadlines fire:", deadlines_fire())
        print("the pass ran:", wait_until(lambda: len(buf) == 0, 1.0))
        buf.put(None, 2)
        c.get()
        c.commit()  # within the cooldown of the last pass: deferred again
        print("the next pass ran:", wait_until(lambda: len(buf) == 0, 1.5))
        print("deadlines fire:", deadlines_fire())
        """,
    )
    if lines and lines[0].startswith("skip: "):
        pytest.skip(lines[0][len("skip: ") :])
    assert lines == [
        "timer alive: True",
        "deadlines fire: True",
        "the pass ran: True",
        "the next pass ran: True",
        "deadlines fire: True",
    ]


def window_reached(lines: list[str], hit: str) -> None:
    """Skip, off CPython 3.11, a GC sweep that never reached its window.

    The sweeps were tuned on 3.11, which CI runs; another version's collector
    may run at other allocations. On 3.11 a miss fails the test as usual.
    """
    if lines[:1] != [hit] and sys.version_info[:2] != (3, 11):
        pytest.skip(f"the GC sweep missed its window on this Python: {lines[:1]}")
