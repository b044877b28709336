"""Two shared daemon threads: one fires deadlines, one runs deferred work.

Context deadlines and Buffer cleaner cooldowns both need "call this later"
without a thread each. One heap serves all of them, on the ``elmstate-timer``
thread, started on first use. That thread runs only :func:`schedule`'s
callbacks, which must be internal and quick (ending a context). Work that may
run user code (a cleaner, the finalisers of the messages it drops) is
scheduled with :func:`schedule_work` and handed, when due, to the
``elmstate-worker`` thread: however long it blocks, deadlines still fire.

Scheduling and cancelling take no lock. Both run from finalisers, which the
garbage collector may start inside any allocation — also inside this module,
on this module's own threads: a lock held there would deadlock. New entries go
through a deque (whose appends and pops are atomic) to the timer thread, the
heap's only user, and releasing a plain lock (a call into C that runs no
Python code) wakes it. Not a ``queue.SimpleQueue``: on CPython 3.11 its
``get(timeout=...)`` can block for good when signals interrupt the wait, as a
KeyboardInterrupt storm on the main thread does; ``Lock.acquire`` cannot.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import os
import threading
import time
import traceback
from typing import Callable

# handle -> (fn, on the worker?), for every handle neither run nor cancelled. Only
# this dict holds the callbacks, so cancel() frees one at once.
_pending: dict[int, tuple[Callable[[], object], bool]] = {}
_seq = itertools.count(1)  # next() is atomic
_inbox: collections.deque[tuple[float, int]] = collections.deque()  # to the timer thread
_heap: list[tuple[float, int]] = []  # (when, handle); the timer thread's alone
# When the timer thread will look again: a schedule() for earlier wakes it. -inf
# while it is awake (it reads the inbox again before it sleeps).
_next_look = float("-inf")
_wake = threading.Lock()  # held while no wake-up is pending: see _signal()
_wake.acquire()
_work: collections.deque[Callable[[], object]] = collections.deque()  # to the worker
_work_wake = threading.Lock()
_work_wake.acquire()
_thread: threading.Thread | None = None
_worker: threading.Thread | None = None
_starting = threading.Lock()  # only ever tried, never waited for
forks = 0  # how many times this process is a forked child: what a parent's thread began is void

# Rebuild the heap once cancelled entries outnumber live ones by this much: a
# million cancelled timeouts must not hold a million heap entries.
_SLACK = 1024


def schedule(delay: float, fn: Callable[[], object]) -> int:
    """Run ``fn()`` on the timer thread after ``delay`` seconds; returns a handle."""
    return _schedule(delay, fn, False)


def schedule_work(delay: float, fn: Callable[[], object]) -> int:
    """Run ``fn()`` on the worker thread after ``delay`` seconds; returns a handle."""
    return _schedule(delay, fn, True)


def cancel(handle: int, _forget: Callable[[int, None], object] = _pending.pop) -> None:
    """Forget a scheduled callback; harmless if it already ran.

    ``_forget`` is bound once, here: finalisers call this, also during interpreter
    shutdown, when this module's globals may already be gone."""
    _forget(handle, None)


def _schedule(delay: float, fn: Callable[[], object], work: bool) -> int:
    when = time.monotonic() + delay
    handle = next(_seq)
    _pending[handle] = (fn, work)
    _inbox.append((when, handle))
    if when < _next_look or len(_inbox) % _SLACK == 0:  # or the inbox grows: compact
        _signal(_wake)
    if _thread is None:
        _start_timer()
    return handle


def _start_timer() -> None:
    global _thread
    if not _starting.acquire(False):
        return  # another start is under way (maybe ours, re-entered): it finds the inbox
    try:
        if _thread is None:
            thread = threading.Thread(target=_loop, name="elmstate-timer", daemon=True)
            _thread = thread  # first: an interrupt inside start() must not lose a live thread
            try:
                thread.start()
            except BaseException:  # no more threads, or a KeyboardInterrupt
                if not thread.is_alive():
                    _thread = None  # the next schedule tries again (a late starter bows out)
                raise
    finally:
        _starting.release()


def _loop() -> None:
    global _next_look
    me = threading.current_thread()
    while _thread is me:
        try:
            _next_look = float("-inf")
            while _inbox:
                heapq.heappush(_heap, _inbox.popleft())
            if len(_heap) > 2 * len(_pending) + _SLACK:
                _heap[:] = [entry for entry in _heap if entry[1] in _pending]
                heapq.heapify(_heap)
            now = time.monotonic()
            while _heap and _heap[0][0] <= now:
                entry = _pending.pop(heapq.heappop(_heap)[1], None)
                if entry is not None:
                    fn, work = entry
                    if work:
                        _hand_over(fn)
                    else:
                        _call(fn)
                    del fn, entry
            delay = _heap[0][0] - time.monotonic() if _heap else None
            _next_look = float("inf") if delay is None else time.monotonic() + delay
            if _inbox:
                continue  # scheduled while we looked: it may be earlier
            # A deadline past TIMEOUT_MAX (about 292 years on Linux) is waited
            # for in steps: acquire() refuses longer timeouts.
            _wake.acquire(
                timeout=-1 if delay is None else min(max(delay, 0), threading.TIMEOUT_MAX)
            )
        except BaseException:  # pragma: no cover - this thread must not die
            traceback.print_exc()


def _hand_over(fn: Callable[[], object]) -> None:
    _work.append(fn)
    _signal(_work_wake)
    if _worker is None:
        _start_worker()


def _start_worker() -> None:
    """Only the timer thread calls this (or a forked child, before any other thread)."""
    global _worker
    try:
        worker = threading.Thread(target=_work_loop, name="elmstate-worker", daemon=True)
        worker.start()
        _worker = worker
    except RuntimeError:  # no more threads: do the work here rather than never
        while _work:
            _call(_work.popleft())


def _work_loop() -> None:
    while True:
        _work_wake.acquire()
        while _work:
            _call(_work.popleft())


def _signal(wake: threading.Lock) -> None:
    """Wake the thread that waits to acquire ``wake`` (once, however often called)."""
    try:
        wake.release()
    except RuntimeError:
        pass  # released already: a wake-up is pending


def _call(fn: Callable[[], object]) -> None:
    # Neither thread may die: every later deadline or clean pass depends on it.
    # The callbacks report their own errors (a cleaner's closes its buffer), so
    # whatever still escapes is a bug worth a traceback, not a reason to stop.
    try:
        fn()
    except BaseException:  # pragma: no cover - internal callbacks do not raise
        traceback.print_exc()


def _after_fork() -> None:
    # The threads do not survive fork; what they had to do does (the heap, the
    # pending callbacks, the deques), so the child starts fresh threads for it.
    # The wake-up locks are replaced: a fresh pair, with no wake-up pending.
    global _thread, _worker, _wake, _work_wake, _starting, _next_look, forks
    forks += 1
    _thread = _worker = None
    _wake = threading.Lock()
    _wake.acquire()
    _work_wake = threading.Lock()
    _work_wake.acquire()
    _starting = threading.Lock()
    _next_look = float("-inf")
    if _work:
        _signal(_work_wake)
        _start_worker()
    if _pending:
        _start_timer()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
