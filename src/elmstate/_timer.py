"""Two shared daemon threads: one fires deadlines, one runs deferred work.

Context deadlines and Buffer cleaner cooldowns both need "call this later"
without a thread each. One heap serves all of them, on the ``elmstate-timer``
thread, started on first use. That thread runs only :func:`schedule`'s
callbacks, which must be internal and quick (ending a context). Work that may
run user code (a cleaner, the finalisers of the messages it drops) is
scheduled with :func:`schedule_work` and handed, when due, to the
``elmstate-worker`` thread: however long it blocks, deadlines still fire.
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

_lock = threading.Condition(threading.Lock())
_heap: list[tuple[float, int]] = []  # (when, handle); entries of cancelled handles linger
# handle -> (fn, on the worker?), for every handle neither run nor cancelled. Only
# this dict holds the callbacks, so cancel() frees one at once, without the lock.
_pending: dict[int, tuple[Callable[[], object], bool]] = {}
_seq = itertools.count(1)
_thread: threading.Thread | None = None
_work: collections.deque[Callable[[], object]] = collections.deque()
_work_ready = threading.Condition(threading.Lock())
_worker: threading.Thread | None = None

# Rebuild the heap once cancelled entries outnumber live ones by this much: a
# million cancelled timeouts must not hold a million heap entries.
_SLACK = 1024


def schedule(delay: float, fn: Callable[[], object]) -> int:
    """Run ``fn()`` on the timer thread after ``delay`` seconds; returns a handle."""
    return _schedule(delay, fn, False)


def schedule_work(delay: float, fn: Callable[[], object]) -> int:
    """Run ``fn()`` on the worker thread after ``delay`` seconds; returns a handle."""
    return _schedule(delay, fn, True)


def cancel(handle: int) -> None:
    """Forget a scheduled callback; harmless if it already ran.

    Takes no lock: a single dict operation is atomic, and this also runs from
    finalisers, which the garbage collector may call while the lock is held.
    """
    _pending.pop(handle, None)


def _schedule(delay: float, fn: Callable[[], object], work: bool) -> int:
    global _thread
    when = time.monotonic() + delay
    with _lock:
        handle = next(_seq)
        _pending[handle] = (fn, work)
        if len(_heap) > 2 * len(_pending) + _SLACK:
            _heap[:] = [entry for entry in _heap if entry[1] in _pending]
            heapq.heapify(_heap)
        heapq.heappush(_heap, (when, handle))
        if _thread is None:
            _thread = threading.Thread(target=_loop, name="elmstate-timer", daemon=True)
            _thread.start()
        elif _heap[0][1] == handle:
            _lock.notify()  # the new entry is the earliest: shorten the wait
    return handle


def _loop() -> None:
    while True:
        with _lock:
            while True:
                if not _heap:
                    _lock.wait()
                    continue
                when, handle = _heap[0]
                delay = when - time.monotonic()
                if delay > 0:
                    # A deadline past TIMEOUT_MAX (about 292 years on Linux) is
                    # waited for in steps: wait() refuses longer timeouts.
                    _lock.wait(min(delay, threading.TIMEOUT_MAX))
                    continue
                heapq.heappop(_heap)
                entry = _pending.pop(handle, None)
                if entry is not None:
                    break
        fn, work = entry
        if work:
            _hand_over(fn)
        else:
            _call(fn)
        del fn, entry


def _hand_over(fn: Callable[[], object]) -> None:
    global _worker
    with _work_ready:
        _work.append(fn)
        if _worker is None:
            _worker = threading.Thread(target=_work_loop, name="elmstate-worker", daemon=True)
            _worker.start()
        _work_ready.notify()


def _work_loop() -> None:
    while True:
        with _work_ready:
            while not _work:
                _work_ready.wait()
            fn = _work.popleft()
        _call(fn)
        del fn


def _call(fn: Callable[[], object]) -> None:
    # Neither thread may die: every later deadline or clean pass depends on it.
    # The callbacks report their own errors (a cleaner's closes its buffer), so
    # whatever still escapes is a bug worth a traceback, not a reason to stop.
    try:
        fn()
    except BaseException:  # pragma: no cover - internal callbacks do not raise
        traceback.print_exc()


def _after_fork() -> None:
    # The threads do not survive fork; the child starts fresh ones on demand.
    global _lock, _thread, _work_ready, _worker
    _lock = threading.Condition(threading.Lock())
    _heap.clear()
    _pending.clear()
    _thread = None
    _work_ready = threading.Condition(threading.Lock())
    _work.clear()
    _worker = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
