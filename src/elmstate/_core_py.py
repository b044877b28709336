"""The pure-Python core: the reference for the rules in docs/contract.md.

``_core.pyx`` mirrors this module name for name and branch for branch; a change to
one lands in the other in the same commit. Read this file to learn what the
compiled core does.
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from types import GenericAlias
from typing import Any, Callable, Generic, NoReturn, cast

from . import _timer
from . import _validate as check
from . import typing as _typing
from ._cleaners import default_cleaner, trim_count
from ._errors import Canceled, Closed, DeadlineExceeded, Lagged, NothingUncommitted
from ._messages import Dropped
from .typing import Fetcher, Init, Model, Msg, Replay, T, Update, View

__all__ = ["Buffer", "BufferConsumer", "Context", "batch", "run"]

_log = logging.getLogger("elmstate")

# The internals handle any program: the public signatures say how the types flow.
Command = _typing.Command[Any]
Transform = _typing.Transform[Any, Any]
Producer = _typing.Producer[Any]
Consumer = _typing.Consumer[Any]


# --------------------------------------------------------------------------- Context


def _final(cls: type) -> None:
    # The compiled classes are final; refusing subclasses here keeps the cores alike.
    raise TypeError(f"type '{cls.__mro__[1].__name__}' is not an acceptable base type")


class Context:
    """A thread-safe cancellation scope, in the spirit of Go's ``context.Context``."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        _final(cls)

    __slots__ = (
        "_lock",
        "_done",
        "_err",
        "_callbacks",
        "_gate",
        "_parent",
        "_parent_token",
        "_timer",
        "__weakref__",
    )

    def __init__(self, parent: Context | None = None, *, timeout: float | None = None) -> None:
        _optional_context("parent", parent)
        seconds = None if timeout is None else check.seconds_arg("timeout", timeout)
        self._lock = threading.Lock()
        self._done = False
        self._err: Canceled | None = None
        self._callbacks: dict[
            int, Callable[[Canceled], object] | _ChildLink
        ] = {}  # run once, at the end
        self._gate: threading.Lock | None = None  # see wait
        self._parent: Context | None = None
        self._parent_token = 0
        self._timer: int | None = None
        if parent is not None:
            token = parent._on_done(_ChildLink(weakref.ref(self)))
            if token == 0:
                self._finish(_same_kind(parent._err))
                return
            self._parent = parent
            self._parent_token = token
        if seconds is not None:
            if seconds == 0:
                self._finish(DeadlineExceeded("context deadline exceeded"))
            else:
                self._timer = _timer.schedule(seconds, _Expire(weakref.ref(self)))

    @property
    def done(self) -> bool:
        """True once the context has ended."""
        return self._done

    @property
    def err(self) -> Canceled | None:
        """``None`` while running, then a :class:`Canceled` (or :class:`DeadlineExceeded`)."""
        return self._err

    def cancel(self) -> None:
        """End the context and every child of it; idempotent."""
        self._finish(Canceled("context canceled"))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the context ends (True) or ``timeout`` seconds pass (False)."""
        seconds = None if timeout is None else check.seconds_arg("timeout", timeout)
        if self._done:
            return True
        # Waiters sleep on a plain lock that is held until the context ends:
        # acquiring one runs no Python code. threading.Event.wait does, and before
        # Python 3.11 a finaliser the GC ran there that ended this context
        # deadlocked on the Event's own lock.
        gate = self._gate or _held_lock()  # before the lock: allocating may run the GC
        with self._lock:
            if self._done:
                return True
            if self._gate is None:
                self._gate = gate
            gate = self._gate
        if _acquire(gate, seconds):
            gate.release()  # on to the next waiter
            return True
        return self._done

    def add_done_callback(self, fn: Callable[[], object]) -> _DoneCallback:
        """Run ``fn()`` once when the context ends, on the thread that ends it.

        If it has already ended, ``fn()`` runs now, on this thread. Callbacks run
        in the order they were added; one that raises an ``Exception`` is logged
        (logger ``"elmstate"``) and never stops the others. Returns a handle for
        :meth:`remove_done_callback`.
        """
        check.callable_arg("fn", fn)
        handle = _DoneCallback(fn)
        token = self._on_done(handle)
        if token == 0:
            handle(self._err)
        else:
            handle._token = token
        return handle

    def remove_done_callback(self, handle: _DoneCallback) -> bool:
        """Withdraw a callback: True if it will not run; False if it has run, or
        will (the context has ended), or was withdrawn already."""
        if type(handle) is not _DoneCallback:
            raise TypeError(
                "handle must be what add_done_callback returned, got " + type(handle).__name__
            )
        with self._lock:
            if self._callbacks.get(handle._token) is not handle:
                return False
            del self._callbacks[handle._token]
        return True

    def __enter__(self) -> Context:
        """The context itself; leaving the block cancels it."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Cancel on leaving the ``with`` block, as Go's ``defer cancel()``."""
        self._finish(Canceled("context canceled"))

    def __repr__(self) -> str:
        state = "running" if not self._done else type(self._err).__name__
        return f"<elmstate.Context {state}>"

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise check.not_copyable(self)

    # _cancel is bound here: this may run during interpreter shutdown, after the
    # module's globals were cleared.
    def __del__(self, _cancel: Callable[[int], None] = _timer.cancel) -> None:
        parent = getattr(self, "_parent", None)  # absent when __init__ raised
        if parent is not None:
            parent._off_done(self._parent_token)
        timer = getattr(self, "_timer", None)
        if timer is not None:
            _cancel(timer)  # lock-free: the GC may run this anywhere

    # Internal: callbacks run (outside the lock) when the context ends.

    def _on_done(self, fn: Callable[[Canceled], object] | _ChildLink) -> int:
        """Register ``fn(err)``; returns a token for :meth:`_off_done`, or 0 if already ended."""
        with self._lock:
            if self._done:
                return 0
            token = _next_token()
            self._callbacks[token] = fn
            return token

    def _off_done(self, token: int) -> None:
        # No lock: a single dict operation is atomic, and this also runs from
        # __del__, which the garbage collector may call while the lock is held.
        self._callbacks.pop(token, None)

    def _error(self) -> Canceled:
        """The error to raise now that the context has ended.

        The same object each time, with the traceback of its previous raise
        dropped: re-raising one object would otherwise grow it without bound.
        """
        assert self._err is not None
        return self._err.with_traceback(None)

    def _finish(self, err: Canceled) -> None:
        """End this context and its descendants, however deep: a loop, not recursion.

        Every callback runs even if one raises. The only errors that reach the
        canceller are ``BaseException``s that are not ``Exception``s (a Ctrl-C
        during a callback): the first is raised at the end. (Callbacks added
        with add_done_callback log their ``Exception``s themselves.)
        """
        first: BaseException | None = None
        ending: list[tuple[Context, Canceled]] = [(self, err)]
        while ending:
            ctx, err = ending.pop()
            for fn in ctx._end(err):
                if isinstance(fn, _ChildLink):
                    child = fn.child()
                    if child is not None:
                        ending.append((child, _same_kind(err)))
                    continue
                try:
                    fn(err)
                except BaseException as exc:
                    if first is None:
                        first = exc
        if first is not None:
            raise first

    def _end(self, err: Canceled) -> list[Callable[[Canceled], object] | _ChildLink]:
        """Mark this context ended; returns the callbacks to run (none if it had ended)."""
        fresh: dict[
            int, Callable[[Canceled], object] | _ChildLink
        ] = {}  # before the lock: may run the GC
        with self._lock:
            if self._done:
                return []
            self._err = err
            self._done = True  # after _err: lock-free readers check _done first
            callbacks = self._callbacks
            self._callbacks = fresh
            gate = self._gate
        if self._timer is not None:
            _timer.cancel(self._timer)
            self._timer = None
        parent = self._parent
        if parent is not None:
            self._parent = None
            parent._off_done(self._parent_token)
        if gate is not None:
            gate.release()  # wakes a waiter, which wakes the next
        return list(callbacks.values())


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


def _acquire(lock: threading.Lock, seconds: float | None) -> bool:
    """``lock.acquire()`` within ``seconds`` (None: no limit), beyond ``TIMEOUT_MAX`` too."""
    if seconds is None:
        return lock.acquire()
    deadline = time.monotonic() + seconds
    while True:
        if lock.acquire(timeout=min(seconds, threading.TIMEOUT_MAX)):
            return True
        seconds = deadline - time.monotonic()
        if seconds <= 0:
            return False


_tokens = iter(range(1, 1 << 62))
_next_token = _tokens.__next__  # atomic under the GIL


def _same_kind(err: Canceled | None) -> Canceled:
    kind = type(err) if err is not None else Canceled
    return kind(*(err.args if err is not None else ("context canceled",)))


class _ChildLink:
    """Held by a parent among its callbacks: the child, without keeping it alive.

    Not called: _finish ends the child itself, so that no chain recurses.
    """

    __slots__ = ("child",)

    def __init__(self, child: weakref.ref[Context]) -> None:
        self.child = child


class _DoneCallback:
    """The handle :meth:`Context.add_done_callback` returns: ``fn()``, called once."""

    __slots__ = ("_fn", "_token")

    def __init__(self, fn: Callable[[], object]) -> None:
        self._fn = fn
        self._token = 0  # the context's key for it while registered

    def __call__(self, err: Canceled | None) -> None:
        try:
            self._fn()
        except Exception:
            # As concurrent.futures does for its done callbacks: the canceller
            # (maybe a timer) is no place for the error, and the others must run.
            _log.exception("exception in done callback %r of an elmstate.Context", self._fn)

    def __repr__(self) -> str:
        return f"<elmstate.Context done callback {self._fn!r:.80}>"

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise check.not_copyable(self)


class _Expire:
    __slots__ = ("ctx",)

    def __init__(self, ctx: weakref.ref[Context]) -> None:
        self.ctx = ctx

    def __call__(self) -> None:
        ctx = self.ctx()
        if ctx is not None:
            ctx._finish(DeadlineExceeded("context deadline exceeded"))


def _optional_context(name: str, ctx: Any) -> Context | None:
    """The one check of a ``ctx`` (or ``parent``) argument: a Context or None."""
    if ctx is not None and type(ctx) is not Context:
        raise check.not_context(name, ctx)
    return ctx


def _context_arg(ctx: Any) -> Context:
    """A ``ctx`` argument of an entry point: ``None`` becomes a Context that never ends."""
    return _optional_context("ctx", ctx) or Context()


# --------------------------------------------------------------------------- Buffer


# Threads in a loop's first tick, which has read nothing yet: their puts never wait.
_first_tick = threading.local()

_thread_numbers = itertools.count(1)  # next() is atomic under the GIL


class _ThreadNumber(threading.local):
    """This thread's number, which no other thread of the process has had or will
    have: a thread's ident is reused once it ends (so a reader's ident, recorded
    by a consumer, would exempt a later producer thread from waiting)."""

    number: int

    def __init__(self) -> None:
        self.number = next(_thread_numbers)


_this_thread = _ThreadNumber()


class Buffer(Generic[T]):
    """A thread-safe, one-to-many FIFO with per-consumer offsets, unbounded unless
    ``maxsize`` is given (docs/contract.md#bounded-buffers)."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        _final(cls)

    def __init__(self, maxsize: int | None = None, *, overflow: str = "wait") -> None:
        self._maxsize, self._drop_oldest = check.buffer_bounds(maxsize, overflow)  # -1: unbounded
        self._room_at = max(self._maxsize // 2, 1)  # see "Bounds" below
        self._room_waiters = 0  # puts waiting for room
        self._lock = threading.RLock()  # re-entrant: a finaliser run by the GC under it may put
        self._cond = threading.Condition(self._lock)
        # (messages, absolute index of messages[0]). Puts append to the list
        # under the lock; a get reads it without one. Dropped messages are
        # overwritten with None (after _start moves past them: a reader checks
        # _start after loading its slot), and once they are the larger part the
        # list is replaced by a copy of the rest, so a pass costs what it drops.
        self._span: tuple[list[Any], int] = ([], 0)
        self._start = 0  # absolute index of the oldest message held
        self._consumers: weakref.WeakSet[BufferConsumer] = weakref.WeakSet()
        self._closed = False
        # Closed, or bounded: a get takes the slow path (which records its thread,
        # for _read_here). One flag, so that an unbounded buffer's get pays no check.
        self._get_slow = self._maxsize >= 0
        self._close_cause: BaseException | None = None
        self._waiters = 0  # gets waiting, and not yet woken by a put
        self._wake_epoch = 0  # bumped by each put's wake-up
        # elmstate.aio's waiting gets: called by the next put or close
        self._watchers: list[Callable[[], object]] | None = None
        self._cleaner: Callable[[int, Sequence[int]], int] = default_cleaner
        self._cooldown = 0.01
        self._last_clean = 0.0
        # A pass is scheduled, or one runs and another is wanted after it: the
        # hot path need not ask for one.
        self._clean_pending = False
        self._cleaning = False  # a pass runs (its cleaner is called without the lock)
        self._clean_again = False  # something asked for a pass while one ran
        self._clean_fork = 0  # _timer.forks when the running pass began
        self._clean_thread = 0  # the thread that runs it: its puts never wait (_read_here)
        self._clean_floor = _NO_FLOOR  # a pass drops nothing at or past this index

    @property
    def maxsize(self) -> int | None:
        """The bound, or None for an unbounded buffer."""
        return None if self._maxsize < 0 else self._maxsize

    @property
    def overflow(self) -> str:
        """What a put does when the buffer is full: 'wait' or 'drop_oldest'."""
        return "drop_oldest" if self._drop_oldest else "wait"

    def put(self, ctx: Context | None, *values: T) -> None:
        """Append ``values`` in order; waits for room only in a full bounded buffer."""
        if ctx is not None:
            if type(ctx) is not Context:  # _optional_context, inlined: see get
                raise check.not_context("ctx", ctx)
            if ctx._done:
                raise ctx._error()
        if self._closed:
            raise self._closed_error()
        if values:
            if self._maxsize >= 0:
                self._put_bounded(ctx, values)  # apart: more locals here would cost every put
            else:
                with self._lock:
                    if self._closed:
                        raise self._closed_error()
                    self._span[0].extend(values)
                    if self._waiters:
                        self._wake()
        if not self._clean_pending:
            self._maybe_clean()

    def new_consumer(self) -> BufferConsumer[T]:
        """A consumer reading from the oldest message the buffer still holds."""
        with self._lock:
            if self._closed:
                raise self._closed_error()
            consumer = BufferConsumer._attach(self, self._start)
            self._consumers.add(consumer)
            # Collected without close(): a pass soon, as close() runs one (what
            # it held back may go, and a put waiting for that room is woken).
            weakref.finalize(consumer, _consumer_gone, weakref.ref(self)).atexit = False
            # Again, now that a pass can see it: one that a finaliser ran while
            # the set grew may have dropped past where it started.
            consumer._read = consumer._committed = self._start
            if self._cleaning:
                # The running pass asked its cleaner before this consumer existed.
                self._clean_floor = min(self._clean_floor, self._start)
            return consumer

    def set_cleaner(
        self, cleaner: Callable[[int, Sequence[int]], int], cooldown: float = 0.01
    ) -> None:
        """Install ``cleaner``, run at most once per ``cooldown`` seconds."""
        check.callable_arg("cleaner", cleaner)
        seconds = check.seconds_arg("cooldown", cooldown)
        with self._lock:
            self._cleaner = cleaner
            self._cooldown = seconds
            self._clean_pending = False  # a pass scheduled under the old cooldown: decide anew
        self._maybe_clean()

    def __len__(self) -> int:
        """The number of messages the buffer holds."""
        with self._lock:
            items, base = self._span
            return base + len(items) - self._start

    def slice(self) -> list[T]:
        """A copy of the messages held, oldest first."""
        with self._lock:
            items, base = self._span
            return items[self._start - base :]

    def diff(self, consumer: BufferConsumer) -> int:
        """How many held messages ``consumer`` has not read yet."""
        if type(consumer) is not BufferConsumer or consumer._buffer is not self:
            raise ValueError("consumer must be a consumer of this buffer")
        with self._lock:
            items, base = self._span
            end = base + len(items)
            return end - max(consumer._read, self._start)

    def close(self) -> None:
        """End the buffer: puts raise Closed, blocked gets wake with Closed; idempotent."""
        with self._lock:
            self._close(None)

    def __enter__(self) -> Buffer[T]:
        """The buffer itself; leaving the block closes it."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close on leaving the ``with`` block."""
        self.close()

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise check.not_copyable(self)

    def __class_getitem__(cls, item: Any) -> GenericAlias:
        # Buffer[int] is a types.GenericAlias, as on the compiled class, rather
        # than the typing alias that Generic would make: the cores agree.
        return GenericAlias(cls, item)

    # Internal.

    # Bounds. A full buffer in wait mode makes a put wait for the cleaner to drop
    # what every consumer has committed past; a reader committing past the
    # buffer's middle runs a pass at once, so a waiting producer refills half the
    # buffer at a time rather than one message per commit. A put on a thread
    # that reads this buffer never waits: only that reader could make room.

    def _put_bounded(self, ctx: Context | None, values: tuple[Any, ...]) -> None:
        dropped = None  # released outside the lock: finalisers may run
        with self._lock:
            if self._closed:
                raise self._closed_error()
            if not self._drop_oldest:
                self._wait_room(ctx)
            self._span[0].extend(values)
            if self._drop_oldest:
                items, base = self._span
                over = base + len(items) - self._start - self._maxsize
                if over > 0:
                    dropped = self._drop_to(self._start + over)
            if self._waiters:
                self._wake()
        del dropped

    def _notify(self) -> None:
        """Lock held: wake every waiting get and put, and elmstate.aio's waiting gets."""
        self._cond.notify_all()
        if self._watchers:
            watchers = self._watchers
            self._watchers = None
            for fn in watchers:
                fn()  # an elmstate.aio waker: hands the wake-up to its event loop

    def _wake(self) -> None:
        """Lock held: wake the waiting gets after a put."""
        self._notify()
        # Every get waiting now is woken: later puts need not notify again until
        # a get waits anew. A waiter registered before this epoch does not count
        # itself out again.
        self._waiters = 0
        self._wake_epoch += 1

    def _wait_room(self, ctx: Context | None) -> None:
        """Lock held, wait mode: return once there is room (or never wait here)."""
        token = 0
        try:
            while True:
                if self._closed:
                    raise self._closed_error()
                if ctx is not None and ctx._done:
                    raise ctx._error()
                items, base = self._span
                if base + len(items) - self._start < self._maxsize or self._read_here():
                    return
                if ctx is not None and token == 0:
                    token = ctx._on_done(_Waker(self._cond))
                    continue  # 0 means ctx ended meanwhile: the check above raises
                self._room_waiters += 1
                try:
                    self._cond.wait()
                finally:
                    self._room_waiters -= 1
        finally:
            if token:
                ctx._off_done(token)  # type: ignore[union-attr]

    def _read_here(self) -> bool:
        """Lock held: this thread is a loop's in its first tick, reads this buffer,
        or runs its pass (a put from the cleaner or a dropped message's finaliser,
        which would wait for the pass it is part of)."""
        if getattr(_first_tick, "depth", 0):
            return True
        me = _this_thread.number
        if self._cleaning and self._clean_thread == me and self._clean_fork == _timer.forks:
            return True
        return any(c._thread == me for c in self._consumers if not c._closed)

    def _make_room(self) -> None:
        """A put waits for room: a pass now, whatever the cooldown."""
        if not self._closed:
            self._pass(time.monotonic())

    def _close(self, cause: BaseException | None) -> None:
        if not self._closed:
            self._closed = True
            self._get_slow = True
            self._close_cause = cause
            self._notify()

    def _closed_error(self) -> Closed:
        if self._close_cause is None:
            return Closed("buffer closed")
        error = Closed(f"buffer closed: its cleaner raised {self._close_cause!r}")
        error.__cause__ = self._close_cause
        return error

    # Cleaning. A pass asks the cleaner without holding the lock: it is user
    # code, and a context's deadline must never wait for it (ending a context
    # wakes its waiting gets, under this lock). Only one pass runs at a time;
    # one asked for meanwhile follows it, after the cooldown.

    def _maybe_clean(self) -> None:
        """Run a pass now, or schedule one once the cooldown has passed."""
        if not self._clean_pending and not self._closed:
            self._pass(None)

    def _pass(self, due: float | None) -> None:
        """One pass, if it is time: ask the cleaner how many to drop, drop, release.

        ``due`` is None when a put or commit asks (the pass waits for the
        cooldown), else when a scheduled pass was due (it runs unless one ran since).
        """
        claimed = False
        dropped = None  # released outside the lock: finalisers may run
        try:
            with self._lock:  # decide once: two callers must not both clean, or both schedule
                if self._closed:
                    return
                if due is None:
                    if self._clean_pending:
                        return
                elif self._last_clean >= due:
                    return
                else:
                    self._clean_pending = False
                claimed = self._claim_pass(due is not None)
                if not claimed:
                    return
                self._last_clean = time.monotonic()
                start = self._start
                # No local for the list: what the pass drops is released with dropped.
                size = self._span[1] + len(self._span[0]) - start
                offsets = [c._committed - start for c in self._consumers if not c._closed]
                cleaner = self._cleaner
                if cleaner is default_cleaner:  # no user code: answered and dropped at once
                    n = default_cleaner(size, offsets)
                    dropped = self._drop_to(min(start + n, self._clean_floor))
                    return
            target = start + self._ask(cleaner, size, offsets, due is None)
            with self._lock:
                dropped = self._drop_to(min(target, self._clean_floor))
        finally:
            if claimed:
                try:
                    # Released here, outside the lock, while the pass is still
                    # claimed (as the compiled core releases its chunks): a put
                    # from a finaliser never waits for this pass (_read_here).
                    del dropped
                finally:
                    # Before anything that may be interrupted (taking the lock):
                    # one store, and the next pass may be claimed.
                    self._cleaning = False
                with self._lock:
                    if self._clean_again and not self._closed:
                        # Never a second pass here: a cleaner that puts would loop.
                        try:
                            self._defer(
                                max(self._last_clean + self._cooldown - time.monotonic(), 0.0)
                            )
                        finally:
                            self._clean_again = False

    def _claim_pass(self, now: bool) -> bool:
        """Lock held: True if the caller is to run a pass now, else arrange one."""
        if self._cleaning and self._clean_fork == _timer.forks:  # (a parent's pass is void)
            self._clean_again = True
            self._clean_pending = True
            return False
        delay = 0.0 if now else self._last_clean + self._cooldown - time.monotonic()
        if delay > 0:
            self._defer(delay)
            return False
        self._clean_fork = _timer.forks
        self._clean_floor = _NO_FLOOR
        self._clean_thread = _this_thread.number
        # Last, right before the return: a KeyboardInterrupt raised between
        # the two would leave a pass claimed that no caller ends.
        self._cleaning = True
        return True

    def _defer(self, delay: float) -> None:
        """Lock held: a pass once ``delay`` seconds have passed.

        When it is due, the timer lets the next put or commit run it on its own
        thread, where the messages it drops are likely still in cache and no other
        thread need take the GIL; the worker runs it only if none comes soon.
        """
        due = time.monotonic() + delay  # before the timer reads its clock: it fires at or after due
        ref = weakref.ref(self)
        try:
            _timer.schedule(delay, _CleanDue(ref))
            _timer.schedule_work(delay + min(self._cooldown, _GRACE), _CleanLater(ref, due))
        except BaseException:  # no thread to be had, or a KeyboardInterrupt: never stuck
            self._clean_pending = False  # the next put or commit asks again
            raise
        self._clean_pending = True

    def _ask(
        self,
        cleaner: Callable[[int, Sequence[int]], int],
        size: int,
        offsets: list[int],
        inline: bool,
    ) -> int:
        """Call a user's cleaner (lock not held): how many of the oldest messages to drop."""
        try:
            return trim_count(cleaner(size, offsets), size)
        except BaseException as exc:  # user code, maybe run off-thread: surface it
            with self._lock:
                self._close(exc)
            if inline and not isinstance(exc, Exception):
                raise  # KeyboardInterrupt and the like still reach the caller
            return 0  # off-thread, the closed buffer reports it

    def _drop_to(self, target: int) -> list[Any] | None:
        """Lock held: drop the messages below ``target``; returns what to release."""
        items, base = self._span
        n = target - self._start
        if n <= 0 or self._closed:  # closed while its cleaner ran: what it holds stays
            return None
        low, high = self._start - base, target - base
        self._start = target  # first: a reader that loaded a slot checks _start after
        if 2 * high >= len(items):
            self._span = (items[high:], target)  # the dropped part is the larger: copy the rest
            dropped = items
        else:
            dropped = items[low:high]
            items[low:high] = [None] * n
        if self._waiters or self._room_waiters:
            # A lagging consumer must wake up to learn it; a put, to use the room.
            self._notify()
        return dropped


_NO_FLOOR = 1 << 63  # past any index
_EMPTY = object()  # elmstate.aio: a get without waiting found nothing to read
_is_awaitable = check.awaitable  # the compiled core reads the type's slot
_YIELD = object()  # elmstate.aio: a drain's time is up
_GRACE = 0.001  # how long a due pass waits for a put or commit to run it


class _CleanDue:
    """On the timer thread, when a deferred pass is due: the next put or commit runs it."""

    __slots__ = ("buffer",)

    def __init__(self, buffer: weakref.ref[Buffer]) -> None:
        self.buffer = buffer

    def __call__(self) -> None:
        buffer = self.buffer()
        if buffer is not None:
            buffer._clean_pending = False  # a hint only: _maybe_clean decides under the lock


class _CleanLater:
    """On the worker thread, a little after a pass was due: runs it if nothing else did."""

    __slots__ = ("buffer", "due")

    def __init__(self, buffer: weakref.ref[Buffer], due: float) -> None:
        self.buffer = buffer
        self.due = due

    def __call__(self) -> None:
        buffer = self.buffer()
        if buffer is None:
            return
        buffer._pass(self.due)


def _consumer_gone(ref: weakref.ref[Buffer]) -> None:
    """On the worker thread: the garbage collector may call this anywhere."""
    buffer = ref()
    # Only when there is something to drop; never while the interpreter shuts
    # down (the worker thread could not start: a hang at exit).
    if buffer is not None and buffer._span[0] and not sys.is_finalizing():
        _timer.schedule_work(0.0, _CleanLater(ref, time.monotonic()))


class _Waker:
    """Registered on a ctx while a get waits, so a cancel wakes it at once."""

    __slots__ = ("cond",)

    def __init__(self, cond: threading.Condition) -> None:
        self.cond = cond

    def __call__(self, err: Canceled) -> None:
        with self.cond:
            self.cond.notify_all()


class BufferConsumer(Generic[T]):
    """One reader of a :class:`Buffer`, with its own read and committed positions."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        _final(cls)

    __slots__ = ("_buffer", "_read", "_committed", "_closed", "_thread", "__weakref__")
    _buffer: Buffer[T]
    _read: int
    _committed: int
    _closed: bool
    _thread: int  # bounded buffers: the thread of the last get (0: none)

    def __new__(cls, *args: object, **kwargs: object) -> BufferConsumer:
        raise TypeError("use Buffer.new_consumer() to make a consumer")

    @classmethod
    def _attach(cls, buffer: Buffer, start: int) -> BufferConsumer:
        self: BufferConsumer = object.__new__(cls)
        self._buffer = buffer
        self._read = start  # absolute index of the next message to read
        self._committed = start
        self._closed = False
        self._thread = 0
        return self

    def get(self, ctx: Context | None = None) -> T:
        """The next message, blocking until one is put, ``ctx`` ends or a close."""
        if ctx is not None and type(ctx) is not Context:
            # _optional_context, inlined as the compiled core inlines it: the
            # call would add 7% to this core's cost per message (callgrind).
            raise check.not_context("ctx", ctx)
        buffer = self._buffer
        read = self._read
        items, base = buffer._span
        index = read - base
        if (
            0 <= index < len(items)
            and not self._closed
            and not buffer._get_slow
            and (ctx is None or not ctx._done)
        ):
            message: T = items[index]
            if read >= buffer._start:  # not dropped while we looked: the slot was real
                self._read = read + 1
                return message
        elif buffer._maxsize >= 0 and not buffer._closed:
            # Bounded: a put on this thread must never wait for this reader (the
            # unbounded path above pays nothing for it); then the same fast path.
            self._thread = _this_thread.number
            if 0 <= index < len(items) and not self._closed and (ctx is None or not ctx._done):
                message = items[index]
                if read >= buffer._start:
                    self._read = read + 1
                    return message
        return cast("T", self._wait(ctx))

    def _poll(self, ctx: Context | None) -> Any:
        """get without waiting: ``_EMPTY`` when there is nothing to read (elmstate.aio)."""
        buffer = self._buffer
        read = self._read
        items, base = buffer._span
        index = read - base
        if (
            0 <= index < len(items)
            and not self._closed
            and not buffer._get_slow
            and (ctx is None or not ctx._done)
        ):
            message = items[index]
            if read >= buffer._start:  # not dropped while we looked: the slot was real
                self._read = read + 1
                return message
        return self._wait(ctx, False)

    def _aio_get(self, ctx: Any, watcher: Callable[[], object] | None) -> Any:
        """elmstate.aio's get: the next message, or ``_EMPTY`` after registering
        ``watcher`` (when not None) to be called, once, by the next put or close.
        The check and the registration are one step under the lock: no put slips
        between them unseen."""
        if watcher is None:
            return self._poll(_optional_context("ctx", ctx))
        return self._wait(_optional_context("ctx", ctx), False, watcher)

    def _aio_unwatch(self, watcher: Callable[[], object]) -> None:
        """Withdraw a watcher that no put has called (a cancelled get)."""
        buffer = self._buffer
        with buffer._lock:
            if buffer._watchers is not None and watcher in buffer._watchers:
                buffer._watchers.remove(watcher)
                buffer._waiters -= 1

    def _wait(
        self,
        ctx: Context | None,
        block: bool = True,
        watcher: Callable[[], object] | None = None,
    ) -> Any:
        """The slow path of get: errors, or waiting for a put; unless ``block``,
        ``_EMPTY`` instead of waiting, with ``watcher`` registered when given."""
        buffer = self._buffer
        token = 0
        if buffer._maxsize >= 0:  # a put on this thread must never wait for this reader
            self._thread = _this_thread.number
        with buffer._lock:
            try:
                while True:
                    if self._closed:
                        raise Closed("consumer closed")
                    if buffer._closed:
                        raise buffer._closed_error()
                    if ctx is not None and ctx._done:
                        raise ctx._error()
                    read = self._read
                    if read < buffer._start:
                        if buffer._drop_oldest:  # freshness over completeness
                            self._read = buffer._start
                            return cast("T", Dropped(buffer._start - read))
                        raise Lagged(
                            f"the cleaner dropped {buffer._start - read} message(s)"
                            " this consumer had not read"
                        )
                    items, base = buffer._span
                    if read - base < len(items):
                        self._read = read + 1
                        return cast("T", items[read - base])
                    if not block:
                        if watcher is not None:
                            if buffer._watchers is None:
                                buffer._watchers = [watcher]
                            else:
                                buffer._watchers.append(watcher)
                            buffer._waiters += 1  # a put calls _wake, which calls it
                        return _EMPTY
                    if ctx is not None and token == 0:
                        token = ctx._on_done(_Waker(buffer._cond))
                        continue  # 0 means ctx ended meanwhile: the check above raises
                    buffer._waiters += 1
                    epoch = buffer._wake_epoch
                    try:
                        buffer._cond.wait()
                    finally:
                        if buffer._wake_epoch == epoch:  # else _wake counted it out
                            buffer._waiters -= 1
            finally:
                if token:
                    ctx._off_done(token)  # type: ignore[union-attr]

    def commit(self) -> None:
        """Make the reads since the last commit permanent."""
        if self._closed or self._read == self._committed:
            self._check_uncommitted("commit")  # raises
        self._committed = self._read
        buffer = self._buffer
        if buffer._room_waiters and self._read - buffer._start >= buffer._room_at:
            buffer._make_room()
        elif not buffer._clean_pending:
            buffer._maybe_clean()

    def rollback(self) -> None:
        """Return to the last commit: the same messages are read again."""
        self._check_uncommitted("rollback")
        self._read = self._committed

    def close(self) -> None:
        """Detach from the buffer; a blocked get wakes with Closed; idempotent."""
        buffer = self._buffer
        with buffer._lock:
            if self._closed:
                return
            self._closed = True
            buffer._consumers.discard(self)
            buffer._notify()
        buffer._maybe_clean()

    def __enter__(self) -> BufferConsumer[T]:
        """The consumer itself; leaving the block closes it."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close on leaving the ``with`` block."""
        self.close()

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise check.not_copyable(self)

    def __class_getitem__(cls, item: Any) -> GenericAlias:
        return GenericAlias(cls, item)  # as Buffer's

    def _check_uncommitted(self, what: str) -> None:
        if self._closed:
            raise Closed("consumer closed")
        if self._read == self._committed:
            raise NothingUncommitted(f"{what}: nothing uncommitted")


# --------------------------------------------------------------------------- the loop


class _Program:
    """A program's callbacks and model, and the parts of a tick apart from the loop."""

    __slots__ = ("init", "update", "view", "put", "buffer", "replay", "model")

    def __init__(
        self,
        init: Callable[[], tuple[Any, Command]],
        update: Callable[[Any], Transform | None],
        view: Callable[[Any], object],
        producer: Producer,
        replay: Callable[[], bool] | None,
    ) -> None:
        self.init = init
        self.update = update
        self.view = view
        self.put = producer.put
        # the producer when it is a Buffer: the loop's empty put skips the call
        self.buffer = producer if type(producer) is Buffer else None
        self.replay = replay
        self.model: Any = None

    def start(self, ctx: Context) -> None:
        """The first tick: init, view, and init's commands."""
        self._dispatch(ctx, self._init())

    def _init(self) -> Any:
        """init and view; returns init's command."""
        self.model, command = check.pair("init", self.init(), "(model, command)")
        shown = self.view(self.model)
        if shown is not None and check.awaitable(shown):
            raise check.refused_awaitable("view", shown)
        return command

    def _replaying(self) -> bool:
        """replay(), which must not return an awaitable."""
        answer = cast("Callable[[], Any]", self.replay)()
        if answer is not True and answer is not False and check.awaitable(answer):
            raise check.refused_awaitable("replay", answer)
        return bool(answer)

    def _dispatch(self, ctx: Context, command: Command) -> None:
        replay = self.replay
        skip = replay is not None and self._replaying()  # consulted every tick, as in the original
        if command is None or skip:
            self.put(ctx)
            return
        if type(command) is tuple or type(command) is list:
            messages = _collect(command)
        else:
            messages = _collect(_entries_of(command))
        if messages is None:
            self.put(ctx)
        else:
            self.put(ctx, *messages)

    # elmstate.aio: the same tick, its awaits left to the caller (aio/_loop.py).
    # A callback that must be synchronous and returns an awaitable is refused.

    def _aio_start(self, ctx: Context, direct: BufferConsumer | None) -> Any:
        """The first tick but its put: init, view and init's entries (see _aio_entries)."""
        if direct is not None:  # read on this thread: its puts never wait for room
            direct._thread = _this_thread.number
        return self._aio_entries(ctx, self._init())

    def _aio_tick(self, ctx: Context, message: Any) -> Any:
        """A later tick, for a message the caller read, but its put and commit."""
        return self._aio_entries(ctx, self._apply(message))

    def _aio_put(self, ctx: Context, messages: Sequence[Any]) -> None:
        """A put into the Buffer producer, of a list or a tuple: a tick's messages
        once its entries were awaited, a page, a marker."""
        if self.buffer is None:
            raise RuntimeError("_aio_put needs a Buffer producer")
        self.put(ctx, *messages)

    def _aio_drain(self, direct: BufferConsumer, ctx: Context, seconds: float) -> Any:
        """Whole ticks, read from ``direct`` and put into the Buffer producer, for
        up to ``seconds``. Returns ``_EMPTY`` when there is nothing to read,
        ``_YIELD`` when the time is up, or, with the message read and not
        committed, a batch marker or the ``_Awaiting`` of a tick's entries."""
        clock = time.monotonic
        until = clock() + seconds
        if self.buffer is None:
            raise RuntimeError("_aio_drain needs a Buffer producer")
        put, poll, commit, apply = self.put, direct._poll, direct.commit, self._apply
        while True:
            if ctx._done:
                raise ctx._error()
            message = poll(ctx)
            if message is _EMPTY or type(message) is _End:
                return message
            command = apply(message)
            if self.replay is None and (
                command is None or (type(command) in (tuple, list) and not command)
            ):
                put(ctx)
            else:
                out = self._aio_entries(ctx, command)
                if out is None:
                    put(ctx)
                elif type(out) is list:
                    put(ctx, *out)
                else:
                    return out
            commit()
            if clock() >= until:
                return _YIELD

    def _apply(self, message: Any) -> Any:
        """update, the transform and view for one message (None: view only); returns
        the command. (_loop writes this out; elmstate.aio's tick calls it.)"""
        command = None
        if message is not None:
            transform = self.update(message)
            if transform is not None:
                if not callable(transform):
                    raise check.not_transform(transform)
                result = transform(self.model)
                if type(result) is tuple and len(result) == 2:
                    self.model, command = result
                else:
                    self.model, command = check.pair("transform", result, "(model, command)")
        shown = self.view(self.model)
        if shown is not None and check.awaitable(shown):
            raise check.refused_awaitable("view", shown)
        return command

    def _aio_entries(self, ctx: Context, command: Command) -> Any:
        """The command's entries, called in order. Returns None when none returned
        a message, the list of messages, or, when one returned an awaitable, an
        ``_Awaiting`` of everything they returned (in entry order, Nones left out)."""
        if self.replay is not None and self._replaying():
            return None
        if command is None:
            return None
        if type(command) is tuple or type(command) is list:
            results = _collect(command)
        else:
            results = _collect(_entries_of(command))
        if results is not None:
            for result in results:
                if check.awaitable(result):
                    return _Awaiting(results)
        return results


def _entries_of(command: Any) -> Any:
    """A command that is not a tuple or a list, as an iterator over its entries."""
    if isinstance(command, check.TEXT):
        raise check.not_iterable(command)
    try:
        return iter(command)
    except TypeError:
        raise check.not_iterable(command) from None


def _collect(entries: Iterable[Callable[[], Any] | None]) -> list[Any] | None:
    """Call each entry in order: the results that are not None, or None if none is.
    If one raises, the awaitables returned before it (elmstate.aio) are closed."""
    results: list[Any] | None = None
    try:
        for entry in entries:
            if entry is not None:
                if not callable(entry):
                    raise check.not_callable_entry(entry)
                result = entry()
                if result is not None:
                    if results is None:
                        results = [result]
                    else:
                        results.append(result)
    except BaseException:
        if results is not None:  # returned, never to be awaited: closed
            check.close_awaitables(results)
        raise
    return results


class _Awaiting:
    """A tick's entry results, some of them awaitables (elmstate.aio awaits them)."""

    __slots__ = ("results",)

    def __init__(self, results: list[Any]) -> None:
        self.results = results


def _check_run_args(
    init: Any, update: Any, view: Any, producer: Any, consumer: Any, replay: Any
) -> None:
    check.program_args(init, update, view, producer, consumer)
    check.optional_callable_arg("replay", replay)


def _loop(program: _Program, consumer: Consumer, ctx: Context) -> NoReturn:
    if ctx._done:
        raise ctx._error()
    direct = consumer.consumer if type(consumer) is _BatchConsumer else consumer
    if type(direct) is BufferConsumer:  # read on this thread from now on (docs/contract.md)
        direct._thread = _this_thread.number
    _first_tick.depth = getattr(_first_tick, "depth", 0) + 1
    try:
        program.start(ctx)
    finally:
        _first_tick.depth -= 1
    # Every later tick, written out in one place: in pure Python a call costs
    # more than the small steps it would wrap.
    update, view, replay = program.update, program.view, program.replay
    quick = program.buffer if replay is None else None  # where the empty put can be inlined
    get, commit = consumer.get, consumer.commit
    model = program.model
    kind, marker, lists = type, _End, (tuple, list)  # locals: the cheapest lookups
    ticking = False  # a failure rolls back only inside a tick
    try:
        while True:
            if ctx._done:
                raise ctx._error()
            ticking = True
            message = get(ctx)
            command = None
            if message is not None:
                if kind(message) is marker:  # left by a batch that failed: commit, skip
                    commit()
                    ticking = False
                    continue
                transform = update(message)
                if transform is not None:
                    if not callable(transform):
                        raise check.not_transform(transform)
                    result = transform(model)
                    if type(result) is tuple and len(result) == 2:
                        model, command = result
                    else:
                        model, command = check.pair("transform", result, "(model, command)")
            shown = view(model)
            if shown is not None and check.awaitable(shown):
                raise check.refused_awaitable("view", shown)
            if quick is not None and (command is None or (kind(command) in lists and not command)):
                # Buffer.put(ctx) with no values: only its checks
                if ctx._done:
                    raise ctx._error()
                if quick._closed:
                    raise quick._closed_error()
                if not quick._clean_pending:
                    quick._maybe_clean()
            else:
                program._dispatch(ctx, command)
            commit()
            ticking = False
    except BaseException:
        program.model = model  # the model the last view saw: batch returns it
        if ticking:
            _quiet_rollback(consumer)
        raise


def _quiet_rollback(consumer: Consumer) -> None:
    try:
        consumer.rollback()
    except Exception:
        pass  # the tick's own error is the one to report


def run(
    init: Init[Model, Msg],
    update: Update[Model, Msg],
    view: View[Model],
    producer: _typing.Producer[Msg],
    consumer: _typing.Consumer[Msg],
    *,
    ctx: Context | None = None,
    replay: Replay | None = None,
) -> NoReturn:
    """Run the program one tick at a time until an exception (or ``ctx``) ends it."""
    _check_run_args(init, update, view, producer, consumer, replay)
    ctx = _context_arg(ctx)
    _loop(_Program(init, update, view, producer, replay), consumer, ctx)


# --------------------------------------------------------------------------- batch


class _End:
    """A batch's private marker; never reaches update.

    A batch makes its own end marker and, with ``feed="inline"``, its own fetch
    marker (another instance): a marker that a failed batch left in the queue
    belongs to no one reading it later, and is committed and skipped.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "<elmstate batch marker>"

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise check.marker_copied()


class _Drained(Exception):
    """Raised by the batch consumer to stop the loop once the queue has drained."""


class _BatchConsumer:
    """Wraps the loop's consumer so markers are filtered: an end marker ends the
    batch, a fetch marker (``feed="inline"``) fetches and puts the next page."""

    __slots__ = ("consumer", "put", "end", "fetch", "fetcher", "drained")

    def __init__(
        self,
        consumer: Consumer,
        producer: Producer,
        end: _End,
        fetcher: Callable[[Context], tuple[Sequence[Any], bool]] | None = None,
    ) -> None:
        self.consumer = consumer
        self.put = producer.put
        self.end = end  # this batch's markers
        self.fetch = _End() if fetcher is not None else None
        self.fetcher = fetcher  # None: a feeder thread puts the pages
        self.drained = False

    def get(self, ctx: Context | None) -> Any:
        message = self.consumer.get(ctx)
        if type(message) is not _End:
            return message
        return self._past_end(ctx, message)

    def feed(self, ctx: Context) -> None:
        """Fetch one page on this thread; put it, then the marker that says what next."""
        if ctx._done:  # between pages too: a fetcher that keeps saying more=True
            raise ctx._error()
        fetcher = cast("Callable[[Context], Any]", self.fetcher)
        messages, more = check.pair("fetcher", fetcher(ctx), "(messages, more)")
        marker = self.fetch if more else self.end
        self.put(ctx, *check.messages("fetcher", messages))
        self.put(ctx, marker)

    def _past_end(self, ctx: Context | None, marker: _End) -> Any:
        """A marker was just read: commit it, then end the batch, fetch, or read on.

        Another batch's marker is only committed: it says nothing about this one.
        """
        consumer = self.consumer
        after_end = False
        while True:
            try:
                consumer.commit()
            except BaseException:
                _quiet_rollback(consumer)
                raise
            if marker is self.end:
                if after_end:
                    self.drained = True
                    raise _Drained
                self.put(ctx, marker)  # goes behind everything commands produced meanwhile
                after_end = True
            elif marker is self.fetch:
                self.feed(cast(Context, ctx))  # everything ahead of it was processed
            message = consumer.get(ctx)
            if type(message) is not _End:
                return message
            marker = message

    def commit(self) -> None:
        self.consumer.commit()

    def rollback(self) -> None:
        if not self.drained:
            self.consumer.rollback()


def _feed(
    ctx: Context,
    fetcher: Callable[[Context], tuple[Sequence[Any], bool]],
    producer: Producer,
    end: _End,
    failure: list[BaseException],
) -> None:
    put = producer.put
    try:
        while not ctx._done:
            messages, more = check.pair("fetcher", fetcher(ctx), "(messages, more)")
            put(ctx, *check.messages("fetcher", messages))
            if not more:
                put(ctx, end)
                return
    except BaseException as exc:
        failure.append(exc)
        ctx.cancel()


def batch(
    init: Init[Model, Msg],
    update: Update[Model, Msg],
    view: View[Model],
    producer: _typing.Producer[Msg],
    consumer: _typing.Consumer[Msg],
    fetcher: Fetcher[Msg],
    *,
    ctx: Context | None = None,
    replay: Replay | None = None,
    feed: str = "thread",
) -> Model:
    """Run until the input is exhausted and every caused message is processed."""
    _check_run_args(init, update, view, producer, consumer, replay)
    check.callable_arg("fetcher", fetcher)
    check.feed_arg(feed)
    return cast(
        "Model",
        _batch(init, update, view, producer, consumer, fetcher, _context_arg(ctx), replay, feed),
    )


def _batch(
    init: Any,
    update: Any,
    view: Any,
    producer: Producer,
    consumer: Consumer,
    fetcher: Any,
    outer: Context,
    replay: Any,
    feed: str,
) -> Any:
    """batch past its checks: aggregate, which made them already, calls this."""
    if feed == "inline":
        return _batch_inline(init, update, view, producer, consumer, fetcher, outer, replay)
    inner = Context(outer)
    program = _Program(init, update, view, producer, replay)
    end = _End()
    failure: list[BaseException] = []
    feeder = threading.Thread(
        target=_feed, args=(inner, fetcher, producer, end, failure), name="elmstate-feeder"
    )
    feeder.start()
    try:
        _loop(program, _BatchConsumer(consumer, producer, end), inner)
    except _Drained:
        return program.model  # the model the last view saw
    except BaseException as exc:
        if not (inner._done and isinstance(exc, Canceled)):
            raise  # the loop's own error wins
        fed = failure[0] if failure else None
        if fed is not None and not (outer._done and isinstance(fed, Canceled)):
            raise fed from None  # the fetcher's or put's own error
        if outer._done:  # the caller's error, even if the feeder saw the cancel first
            raise outer._error() from None
        raise
    finally:
        inner.cancel()
        feeder.join()


def _batch_inline(
    init: Any,
    update: Any,
    view: Any,
    producer: Producer,
    consumer: Consumer,
    fetcher: Any,
    ctx: Context,
    replay: Any,
) -> Any:
    """``feed="inline"``: the fetcher runs on this thread, behind fetch markers;
    no thread and no context of its own (nothing runs beside the loop)."""
    program = _Program(init, update, view, producer, replay)
    wrapped = _BatchConsumer(consumer, producer, _End(), fetcher)
    wrapped.feed(ctx)  # the first page, before anything else (an ended ctx raises)
    try:
        _loop(program, wrapped, ctx)
    except _Drained:
        return program.model  # the model the last view saw


check.register(check.PRODUCERS, Buffer)
check.register(check.CONSUMERS, BufferConsumer)
