"""One shared daemon thread that runs short callbacks at given monotonic times.

Context deadlines and Buffer cleaner cooldowns both need "call this later" without
a thread each; this heap-driven thread serves all of them and starts on first use.
Callbacks run on the timer thread and must be quick and must not raise.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from typing import Callable

_lock = threading.Condition(threading.Lock())
_heap: list[tuple[float, int, Callable[[], object]]] = []
_pending: set[int] = set()  # scheduled and neither run nor cancelled
_seq = itertools.count()
_thread: threading.Thread | None = None


def schedule(delay: float, fn: Callable[[], object]) -> int:
    """Run ``fn()`` on the timer thread after ``delay`` seconds; returns a handle."""
    global _thread
    when = time.monotonic() + delay
    with _lock:
        handle = next(_seq)
        heapq.heappush(_heap, (when, handle, fn))
        _pending.add(handle)
        if _thread is None:
            _thread = threading.Thread(target=_loop, name="elmstate-timer", daemon=True)
            _thread.start()
        elif _heap[0][1] == handle:
            _lock.notify()  # the new entry is the earliest: shorten the wait
    return handle


def cancel(handle: int) -> None:
    """Forget a scheduled callback; harmless if it already ran."""
    with _lock:
        _pending.discard(handle)


def _loop() -> None:
    while True:
        with _lock:
            while True:
                if not _heap:
                    _lock.wait()
                    continue
                when, handle, fn = _heap[0]
                delay = when - time.monotonic()
                if delay > 0:
                    _lock.wait(delay)
                    continue
                heapq.heappop(_heap)
                if handle in _pending:
                    _pending.remove(handle)
                    break
        try:
            fn()
        except Exception:  # pragma: no cover - callbacks are internal and must not raise
            import traceback

            traceback.print_exc()
        del fn


def _after_fork() -> None:
    # The thread does not survive fork; the child starts a fresh one on demand.
    global _lock, _thread
    _lock = threading.Condition(threading.Lock())
    _heap.clear()
    _pending.clear()
    _thread = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
