"""Views for loops whose view is slow or read elsewhere: throttle, coalesce, Latest.

A loop calls its view on every tick, on the loop's thread, before the tick's
commands run. These wrappers keep that shape (each is a ``(model) -> None``
callable to pass as ``view`` to any mode) and change when, or where, the model
is seen (docs/views.md):

- :func:`throttle` calls a view at most once per interval, and always delivers
  the last model (a trailing call on a timer thread, or :meth:`Throttled.flush`);
- :func:`coalesce` calls a view only on ticks after which the loop's consumer
  has nothing left to read, so a slow view runs once per burst;
- :class:`Latest` keeps the newest model for other threads to read or wait on.

None of them needs the core: they are plain callables, the same on both cores.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any, Callable, Generic, Protocol

from . import _validate as check
from .typing import Model, View

__all__ = ["Coalesced", "Latest", "Throttled", "TimerHandle", "coalesce", "throttle"]

_log = logging.getLogger("elmstate")


class TimerHandle(Protocol):
    """What a ``timer`` given to :func:`throttle` returns: something to cancel."""

    def cancel(self) -> object:
        """Stop the scheduled call if it has not started; harmless if it has."""


def _thread_timer(delay: float, fn: Callable[[], object]) -> TimerHandle:
    """The default ``timer``: ``fn()`` on a fresh daemon thread after ``delay`` seconds.

    A thread per trailing call (at most one per interval) rather than the shared
    ``elmstate-worker`` thread: a throttled view is slow by assumption, and it
    must not hold up the buffer cleaners that share that worker.
    """
    timer = threading.Timer(delay, fn)
    timer.name = "elmstate-throttle"
    timer.daemon = True  # a pending trailing call never keeps the interpreter alive
    timer.start()
    return timer


class Throttled(Generic[Model]):
    """A view that calls ``view`` at most once per ``interval`` with the newest model.

    Made by :func:`throttle`. Call it with each model, as the loop does. The
    first call, and any call at least ``interval`` seconds after the previous
    delivery started, delivers at once, on the caller's thread (the leading
    call). A call sooner than that keeps its model as pending, replacing any
    older pending one, and makes sure a trailing call is scheduled for when the
    interval has passed: it delivers the newest pending model then, on the
    timer's thread (by default a daemon thread named ``elmstate-throttle``).
    So the last model is always delivered, within ``interval`` of the call
    that gave it (later only while a slow ``view`` is still running).

    ``view`` is never called concurrently with itself, and never with an older
    model after a newer one: a delivery that falls due while another is still
    in ``view`` waits for it (so the loop can wait for the rest of a trailing
    call that is still running), then delivers the newest model.

    An exception from ``view`` in a leading call or in :meth:`flush` propagates
    to the caller. One from a trailing call has no caller: it is logged to the
    ``elmstate`` logger, and raised (the same object) by the next call or
    :meth:`flush`, so the loop fails as if its own view call had failed.

    Used as a context manager, leaving the block flushes.
    """

    def __init__(
        self,
        view: View[Model],
        interval: float,
        clock: Callable[[], float],
        timer: Callable[[float, Callable[[], object]], TimerHandle],
    ) -> None:
        self._view = view
        self._interval = interval
        self._clock = clock
        self._timer = timer
        # _calling serialises calls of view (reentrant: a view that flushes its
        # own throttle must not deadlock); _lock guards the fields below and is
        # never held while view runs. Order: _calling, then _lock.
        self._calling = threading.RLock()
        self._lock = threading.Lock()
        self._model: Model | None = None
        self._pending = False
        self._last: float | None = None  # when the last delivery started
        self._handle: TimerHandle | None = None  # the scheduled trailing call
        self._generation = 0  # which scheduled call is current; stale ones do nothing
        self._error: BaseException | None = None  # from a trailing call, not yet raised

    @property
    def interval(self) -> float:
        """The interval in seconds, as a float."""
        return self._interval

    @property
    def pending(self) -> bool:
        """Whether a model awaits delivery (by the trailing call or :meth:`flush`)."""
        with self._lock:
            return self._pending

    def __call__(self, model: Model) -> None:
        """Deliver ``model`` now if the interval has passed, else keep it for later."""
        with self._lock:
            self._raise_error()
            self._model = model
            self._pending = True
            if not self._due():
                return
        self._deliver(due=True)

    def flush(self) -> bool:
        """Deliver the pending model now, on this thread; returns whether there was one.

        The scheduled trailing call is cancelled. Waits for a call of ``view``
        that is under way on another thread first.
        """
        with self._lock:
            self._raise_error()
        return self._deliver(due=False)

    def cancel(self) -> bool:
        """Drop the pending model and its trailing call; returns whether there was one.

        For when the view's target is gone (a closed window): nothing more is
        delivered until the next call. A call of ``view`` under way goes on.
        """
        with self._lock:
            dropped = self._pending
            self._model = None
            self._pending = False
            self._unschedule()
            return dropped

    def __enter__(self) -> Throttled[Model]:
        """The throttled view itself; leaving the block flushes."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Flush on leaving the ``with`` block."""
        self.flush()

    def __repr__(self) -> str:
        return f"<elmstate.views.Throttled {self._view!r:.80} every {self._interval} s>"

    # The helpers below run with _lock held unless they say otherwise.

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _due(self) -> bool:
        """Whether a delivery may start now; if not, make sure a trailing call is scheduled."""
        if self._last is None:
            return True
        wait = self._last + self._interval - self._clock()
        if wait <= 0:
            return True
        if self._handle is None:
            self._generation += 1
            handle = self._timer(wait, functools.partial(self._fire, self._generation))
            if not callable(getattr(handle, "cancel", None)):
                self._generation += 1  # the call it scheduled, if any, does nothing
                kind = type(handle).__name__
                raise TypeError(f"timer must return a handle with a cancel() method, got {kind}")
            self._handle = handle
        return False

    def _unschedule(self) -> None:
        self._generation += 1
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()

    def _take(self) -> Model:
        model = self._model
        self._model = None
        self._pending = False
        self._unschedule()
        self._last = self._clock()
        return model  # type: ignore[return-value]  # pending: it is a model

    # Without _lock held: these call view.

    def _deliver(self, due: bool) -> bool:
        with self._calling:
            with self._lock:
                # Another delivery may have come between the caller's look and
                # now: take only the newest model, and only when still due.
                if not self._pending or (due and not self._due()):
                    return False
                model = self._take()
            self._view(model)
            return True

    def _fire(self, generation: int) -> None:
        """The trailing call, on the timer's thread."""
        with self._calling:
            with self._lock:
                if generation != self._generation:  # cancelled, delivered or rescheduled
                    return
                self._handle = None
                # A timer may fire early by its clock's reckoning: _due reschedules.
                if not self._pending or not self._due():
                    return
                model = self._take()
            try:
                self._view(model)
            except Exception as exc:
                # As concurrent.futures does for its callbacks: the timer thread is
                # no place for the error. The next call raises it in the loop.
                _log.exception("exception in the trailing call of %r", self)
                with self._lock:
                    self._error = exc


def throttle(
    view: View[Model],
    interval: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    timer: Callable[[float, Callable[[], object]], TimerHandle] | None = None,
) -> Throttled[Model]:
    """A view that calls ``view`` at most once per ``interval`` seconds (see :class:`Throttled`).

    ``clock`` gives the time in seconds (``time.monotonic`` by default).
    ``timer(delay, fn)`` schedules the trailing call: it must call ``fn()``
    after ``delay`` seconds by ``clock`` and return a handle with ``cancel()``;
    by default a daemon thread does. A test gives a fake clock and a timer it
    fires itself, and gets exact, deterministic calls.
    """
    check.callable_arg("view", view)
    seconds = check.seconds_arg("interval", interval)
    if seconds > threading.TIMEOUT_MAX:  # a timer thread could not wait that long
        limit = threading.TIMEOUT_MAX
        raise ValueError(f"interval must be at most {limit:.0f} seconds, got {interval!r}")
    check.callable_arg("clock", clock)
    check.optional_callable_arg("timer", timer)
    return Throttled(view, seconds, clock, _thread_timer if timer is None else timer)


class Coalesced(Generic[Model]):
    """A view that calls ``view`` only when the loop's consumer has caught up.

    Made by :func:`coalesce`. On each call it asks ``buffer.diff(consumer)``:
    when nothing is left to read, it calls ``view`` with the model; otherwise
    it keeps the model as pending and returns, because the loop is about to
    read on and a newer model will follow. A slow view therefore runs once per
    burst of messages rather than once per message, and the model the loop
    waits with is always delivered: the loop waits in ``get`` only when nothing
    was left to read at view time (unread messages leave only by being read,
    or by a cleaner or overflow that makes ``get`` return or raise at once).

    The messages that a tick's own commands produce are put after its view
    (docs/contract.md#the-tick), so they are not counted: a chain of commands
    is viewed at every link. A loop that ends while messages were left unread
    leaves its last model pending: a cancelled run, and often a batch (its end
    marker is a message in the buffer, unread at the last tick's view).
    :meth:`flush` delivers it.

    ``view`` is never called concurrently with itself (a lock is held around
    each call).
    """

    def __init__(self, view: View[Model], buffer: Any, consumer: Any) -> None:
        self._view = view
        self._diff: Callable[[Any], int] = buffer.diff
        self._consumer = consumer
        self._calling = threading.RLock()
        self._model: Model | None = None
        self._pending = False

    @property
    def pending(self) -> bool:
        """Whether a model was skipped and not delivered since."""
        return self._pending

    def __call__(self, model: Model) -> None:
        """Call ``view(model)`` if ``consumer`` has nothing left to read, else keep it."""
        with self._calling:
            if self._diff(self._consumer):
                self._model = model
                self._pending = True
                return
            self._model = None
            self._pending = False
            self._view(model)

    def flush(self) -> bool:
        """Deliver the last skipped model now, if any; returns whether there was one."""
        with self._calling:
            if not self._pending:
                return False
            model = self._model
            self._model = None
            self._pending = False
            self._view(model)  # type: ignore[arg-type]  # pending: it is a model
            return True

    def __repr__(self) -> str:
        return f"<elmstate.views.Coalesced {self._view!r:.80}>"


def coalesce(view: View[Model], buffer: Any, consumer: Any) -> Coalesced[Model]:
    """A view that calls ``view`` once per burst (see :class:`Coalesced`).

    ``consumer`` is the consumer the loop reads (the buffer's own consumer, not
    a wrapper around it), and ``buffer`` the buffer it belongs to: anything with
    ``diff(consumer)``, such as :class:`elmstate.Buffer`. A consumer of another
    buffer raises ``ValueError`` at once.
    """
    check.callable_arg("view", view)
    check.has_methods("buffer", buffer, "diff")
    buffer.diff(consumer)  # raises ValueError for a consumer of another buffer
    return Coalesced(view, buffer, consumer)


class Latest(Generic[Model]):
    """A view that keeps the newest model for other threads.

    Pass the instance as ``view`` (or call it from yours): each call stores the
    model and counts it. Any thread may then read :meth:`get`,
    :attr:`version` and :meth:`snapshot`, or block in :meth:`wait_for`.
    Readers see only models the loop gave it, and the version never goes back.
    Storing costs the loop one uncontended lock and a notify per tick.

    The model is shared, not copied: treat it as immutable (as models should
    be), or readers may see it change under them.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._model: Model | None = None
        self._version = 0

    def __call__(self, model: Model) -> None:
        """Store ``model`` as the newest, count it and wake the waiters."""
        with self._cond:
            self._model = model
            self._version += 1
            self._cond.notify_all()

    @property
    def version(self) -> int:
        """How many models it has been given (ticks seen); 0 before the first."""
        return self._version

    def get(self) -> Model:
        """The newest model; ``LookupError`` before the first.

        Not ``None`` for "nothing yet": ``None`` may well be a model.
        """
        return self.snapshot()[1]

    def snapshot(self) -> tuple[int, Model]:
        """``(version, model)`` read together: ``model`` is the one that made ``version``.

        ``LookupError`` before the first model.
        """
        with self._cond:
            version, model = self._version, self._model
        if not version:
            raise LookupError("no model yet: the view has not been called")
        return version, model  # type: ignore[return-value]  # version > 0: it is a model

    def wait_for(self, predicate: Callable[[Model], object], timeout: float | None = None) -> bool:
        """Block until ``predicate(model)`` is true for the newest model; ``False`` on timeout.

        ``predicate`` is called on this thread, without any lock held (a slow
        one never holds up the loop), with the newest model when this call
        starts (if there is one) and then with each newer model it wakes to.
        Models that came and went while it was busy are skipped: use a
        condition that stays true once reached (``count >= n``, not
        ``count == n`` on a counter that moves on). ``timeout`` is in seconds;
        ``None`` waits for as long as it takes. An exception from ``predicate``
        propagates.
        """
        check.callable_arg("predicate", predicate)
        deadline = None
        if timeout is not None:
            deadline = time.monotonic() + check.seconds_arg("timeout", timeout)
        seen = 0
        while True:
            with self._cond:
                while self._version == seen:
                    if deadline is None:
                        self._cond.wait()
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(min(remaining, threading.TIMEOUT_MAX))
                seen, model = self._version, self._model
            if predicate(model):  # type: ignore[arg-type]  # seen > 0: it is a model
                return True

    def __repr__(self) -> str:
        return f"<elmstate.views.Latest version={self._version}>"
