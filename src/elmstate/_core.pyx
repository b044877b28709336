# cython: language_level=3, embedsignature=True, embedsignature.format=clinic, binding=False
"""The compiled core: the tick loop, command dispatch, the batch wrapper and the
Buffer ring. It mirrors ``_core_py.py`` (the reference) name for name.

Thread safety without a lock on the hot path: C code that holds the GIL and runs
no Python code (no calls, no allocation of GC-tracked objects, no DECREF that
could run a finaliser) cannot be interrupted by another Python thread. put, get,
commit and rollback are written as such sections; the slow paths (waiting,
cleaning, the consumer registry) take the buffer's lock. Free-threaded builds
re-enable the GIL for this module, since it does not declare itself safe there.

Four files make this module: ``_core.pxd`` declares its types (their C fields and
C methods), this file defines them, ``_slots.pxi`` (included below the Buffer
section) edits their type slots, and ``_cpython.pxd`` declares the C API that
the other three use beyond Cython's own declarations.
"""

cimport cython
from cpython.list cimport PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.pystate cimport PyThreadState, PyThreadState_Get
from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython.sequence cimport PySequence_Fast_ITEMS
from cpython.tuple cimport PyTuple_GET_SIZE
from libc.stdint cimport int64_t, uint64_t

from elmstate._cpython cimport (
    METH_FASTCALL,
    METH_KEYWORDS,
    PyMethodDef,
    _call1,
    _GCSlots,
    _inquiry,
    _install,
    _traverseproc,
    _visitproc,
)

import logging
import sys
import threading
import weakref
from time import monotonic
from types import GenericAlias

from elmstate import _timer
from elmstate import _validate as check
from elmstate._cleaners import default_cleaner, trim_count
from elmstate._errors import Canceled, Closed, DeadlineExceeded, Lagged, NothingUncommitted
from elmstate._messages import Dropped

__all__ = ["Buffer", "BufferConsumer", "Context", "batch", "run"]

cdef object _log = logging.getLogger("elmstate")
cdef object _finalizing = sys.is_finalizing
# A C global, not a module attribute: __dealloc__ may run during interpreter
# shutdown, after the module's attributes were cleared.
cdef object _cancel_timer = _timer.cancel
cdef object _Lock = threading.Lock
cdef object _RLock = threading.RLock
cdef object _Condition = threading.Condition
cdef double _TIMEOUT_MAX = threading.TIMEOUT_MAX
cdef int64_t _MIN_CAPACITY = 16
cdef int64_t _SHRINK_ABOVE = 1024  # rings this small are never shrunk
cdef int64_t _NO_FLOOR = 0x7FFFFFFFFFFFFFFF  # past any index
cdef double _GRACE = 0.001  # how long a due pass waits for a put or commit to run it
cdef object _ATTACH = object()  # BufferConsumer.__new__'s pass: only new_consumer has it
cdef object _NOTHING = object()  # elmstate.aio: a get without waiting found nothing to read
_EMPTY = _NOTHING
cdef object _YIELDING = object()  # elmstate.aio: a drain's time is up
_YIELD = _YIELDING
# Threads in a loop's first tick, which has read nothing yet: their puts never wait.
cdef object _first_tick = threading.local()


cdef extern from "Python.h":
    # Python 3.9+: a number no other thread state of the interpreter had or will
    # have. A thread's ident is reused once it ends (so a reader's ident, recorded
    # by a consumer, would exempt a later producer thread from waiting).
    uint64_t PyThreadState_GetID(PyThreadState* tstate)


cdef extern from *:
    """
    #if defined(_WIN32)
    #include <windows.h>
    static double __pyx_elm_now(void) {
        LARGE_INTEGER f, c;
        QueryPerformanceFrequency(&f);
        QueryPerformanceCounter(&c);
        return (double)c.QuadPart / (double)f.QuadPart;
    }
    #else
    #include <time.h>
    static double __pyx_elm_now(void) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
    }
    #endif
    static int __pyx_elm_awaitable(PyObject* o) {
        PyAsyncMethods* am = Py_TYPE(o)->tp_as_async;
        return am != NULL && am->am_await != NULL;
    }
    """
    # Seconds on a monotonic clock, with no Python call: elmstate.aio's drain
    # reads it every tick (time.monotonic would cost a call each).
    double _now "__pyx_elm_now"() noexcept nogil
    # Whether ``await o`` works: the slot that _validate.awaitable's ABC looks for.
    bint _awaitable "__pyx_elm_awaitable"(object o) noexcept


def _is_awaitable(value):
    """Whether ``await value`` works (its type has ``__await__``): elmstate.aio asks
    for every value that may be one, so the compiled core answers from the slot."""
    return _awaitable(value)


cdef inline uint64_t _thread_number() noexcept:
    """This thread's number (see PyThreadState_GetID; never 0)."""
    return PyThreadState_GetID(PyThreadState_Get())


# --------------------------------------------------------------------------- Context

cdef Py_ssize_t _last_token = 0


cdef inline Py_ssize_t _next_token():
    global _last_token
    _last_token += 1  # atomic: no Python runs between read and write
    return _last_token


cdef object _same_kind(object err):
    if err is None:
        return Canceled("context canceled")
    return type(err)(*err.args)


@cython.trashcan(True)  # freeing a chain of 100,000 contexts must not recurse in C
# A collected context must still leave its parent and cancel its deadline in
# __dealloc__, so the GC may not clear its fields first; every cycle through a
# context also runs through a dict or a callback, which the GC does clear.
@cython.no_gc_clear
cdef class Context:
    # The first line is the signature inspect.signature reads off a builtin type.
    """Context(parent=None, *, timeout=None)
--

A thread-safe cancellation scope, in the spirit of Go's ``context.Context``."""

    def __init__(self, parent=None, *, timeout=None):
        _optional_context("parent", parent)
        seconds = None if timeout is None else check.seconds_arg("timeout", timeout)
        self._lock = _Lock()
        self._callbacks = {}
        if parent is not None:
            token = (<Context>parent)._on_done(_ChildLink(weakref.ref(self)))
            if token == 0:
                self._finish(_same_kind((<Context>parent)._err))
                return
            self._parent = <Context>parent
            self._parent_token = token
        if seconds is not None:
            if seconds == 0:
                self._finish(DeadlineExceeded("context deadline exceeded"))
            else:
                self._timer = _timer.schedule(seconds, _Expire(weakref.ref(self)))

    @property
    def done(self):
        """True once the context has ended."""
        return self._done

    @property
    def err(self):
        """``None`` while running, then a :class:`Canceled` (or :class:`DeadlineExceeded`)."""
        return self._err

    def cancel(self):
        """End the context and every child of it; idempotent."""
        self._finish(Canceled("context canceled"))

    def wait(self, timeout=None):
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

    def add_done_callback(self, fn):
        """Run ``fn()`` once when the context ends, on the thread that ends it.

        If it has already ended, ``fn()`` runs now, on this thread. Callbacks run
        in the order they were added; one that raises an ``Exception`` is logged
        (logger ``"elmstate"``) and never stops the others. Returns a handle for
        :meth:`remove_done_callback`.
        """
        check.callable_arg("fn", fn)
        cdef _DoneCallback handle = _DoneCallback(fn)
        cdef Py_ssize_t token = self._on_done(handle)
        if token == 0:
            handle(self._err)
        else:
            handle._token = token
        return handle

    def remove_done_callback(self, handle):
        """Withdraw a callback: True if it will not run; False if it has run, or
        will (the context has ended), or was withdrawn already."""
        if type(handle) is not _DoneCallback:
            raise TypeError(
                "handle must be what add_done_callback returned, got " + type(handle).__name__
            )
        cdef Py_ssize_t token = (<_DoneCallback>handle)._token
        with self._lock:
            if self._callbacks.get(token) is not handle:
                return False
            del self._callbacks[token]
        return True

    def __enter__(self):
        """The context itself; leaving the block cancels it."""
        return self

    def __exit__(self, *exc_info):
        """Cancel on leaving the ``with`` block, as Go's ``defer cancel()``."""
        self._finish(Canceled("context canceled"))

    def __repr__(self):
        state = "running" if not self._done else type(self._err).__name__
        return f"<elmstate.Context {state}>"

    def __reduce_ex__(self, protocol):
        raise check.not_copyable(self)

    def __dealloc__(self):
        if self._parent is not None:
            self._parent._off_done(self._parent_token)
        if self._timer is not None and _cancel_timer is not None:
            _cancel_timer(self._timer)  # lock-free: the GC may run this anywhere

    cdef Py_ssize_t _on_done(self, fn) except -1:
        """Register ``fn(err)``; returns a token for :meth:`_off_done`, or 0 if ended."""
        with self._lock:
            if self._done:
                return 0
            token = _next_token()
            self._callbacks[token] = fn
            return token

    cdef int _off_done(self, Py_ssize_t token) except -1:
        # No lock: a single dict operation is atomic, and this also runs from
        # __dealloc__, which the garbage collector may call while the lock is held.
        self._callbacks.pop(token, None)
        return 0

    cdef object _error(self):
        """The error to raise now that the context has ended.

        The same object each time, with the traceback of its previous raise
        dropped: re-raising one object would otherwise grow it without bound.
        """
        return self._err.with_traceback(None)

    cdef int _finish(self, err) except -1:
        """End this context and its descendants, however deep: a loop, not recursion.

        Every callback runs even if one raises. The only errors that reach the
        canceller are ``BaseException``s that are not ``Exception``s (a Ctrl-C
        during a callback): the first is raised at the end. (Callbacks added
        with add_done_callback log their ``Exception``s themselves.)
        """
        cdef Context ctx, child
        first = None
        cdef list ending = [(self, err)]
        while ending:
            ctx, err = ending.pop()
            for fn in ctx._end(err):
                if type(fn) is _ChildLink:
                    child = (<_ChildLink>fn).child()
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
        return 0

    cdef list _end(self, err):
        """Mark this context ended; returns the callbacks to run (none if it had ended)."""
        fresh = {}  # before the lock: allocating may run the GC
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


cdef object _held_lock():
    lock = _Lock()
    lock.acquire()
    return lock


cdef bint _acquire(object lock, object seconds) except -1:
    """``lock.acquire()`` within ``seconds`` (None: no limit), beyond ``TIMEOUT_MAX`` too."""
    if seconds is None:
        return lock.acquire()
    cdef double left = seconds
    cdef double deadline = monotonic() + left
    while True:
        if lock.acquire(timeout=min(left, _TIMEOUT_MAX)):
            return True
        left = deadline - monotonic()
        if left <= 0:
            return False


cdef class _ChildLink:
    """Held by a parent among its callbacks: the child, without keeping it alive.

    Not called: _finish ends the child itself, so that no chain recurses.
    """

    def __init__(self, child):
        self.child = child


cdef class _DoneCallback:
    """The handle :meth:`Context.add_done_callback` returns: ``fn()``, called once."""

    def __init__(self, fn):
        self._fn = fn

    def __call__(self, err):
        try:
            self._fn()
        except Exception:
            # As concurrent.futures does for its done callbacks: the canceller
            # (maybe a timer) is no place for the error, and the others must run.
            _log.exception("exception in done callback %r of an elmstate.Context", self._fn)

    def __repr__(self):
        return f"<elmstate.Context done callback {self._fn!r:.80}>"

    def __reduce_ex__(self, protocol):
        raise check.not_copyable(self)


cdef class _Expire:

    def __init__(self, ctx):
        self.ctx = ctx

    def __call__(self):
        cdef Context ctx = self.ctx()
        if ctx is not None:
            ctx._finish(DeadlineExceeded("context deadline exceeded"))


cdef inline Context _optional_context(str name, object ctx):
    """The one check of a ``ctx`` (or ``parent``) argument: a Context or None."""
    if ctx is not None and type(ctx) is not Context:
        raise check.not_context(name, ctx)
    return <Context>ctx


cpdef Context _context_arg(object ctx):
    """A ``ctx`` argument of an entry point: ``None`` becomes a Context that never ends."""
    cdef Context context = _optional_context("ctx", ctx)
    return context if context is not None else Context()


# --------------------------------------------------------------------------- Buffer


cdef class Buffer:
    """Buffer(maxsize=None, *, overflow='wait')
--

A thread-safe, one-to-many FIFO with per-consumer offsets, unbounded unless
``maxsize`` is given (docs/contract.md#bounded-buffers).

    Messages live in a ring of owned references: slot ``i & _mask`` holds the
    message at absolute index ``i`` for ``_start <= i < _end``, one reference
    each. The cycle collector sees them through ``_buffer_traverse`` (``_slots.pxi``).
    """

    def __cinit__(self):
        self._ring = <PyObject**>PyMem_Malloc(_MIN_CAPACITY * sizeof(PyObject*))
        if self._ring == NULL:
            raise MemoryError()
        self._mask = _MIN_CAPACITY - 1

    def __init__(self, maxsize=None, *, overflow="wait"):
        self._maxsize, self._drop_oldest = check.buffer_bounds(maxsize, overflow)
        self._room_at = max(self._maxsize // 2, 1)
        self._lock = _RLock()  # re-entrant: a finaliser run by the GC under it may put
        self._cond = _Condition(self._lock)
        self._consumers = []
        self._cleaner = default_cleaner
        self._cooldown = 0.01

    @property
    def maxsize(self):
        """The bound, or None for an unbounded buffer."""
        return None if self._maxsize < 0 else self._maxsize

    @property
    def overflow(self):
        """What a put does when the buffer is full: 'wait' or 'drop_oldest'."""
        return "drop_oldest" if self._drop_oldest else "wait"

    def __dealloc__(self):
        cdef int64_t i
        if self._ring != NULL:
            for i in range(self._start, self._end):
                Py_DECREF(<object>self._ring[i & self._mask])
            PyMem_Free(self._ring)
            self._ring = NULL

    # put(ctx, *values) is installed by _slots.pxi as a METH_FASTCALL method,
    # so that a call builds no argument tuple.

    def new_consumer(self):
        """A consumer reading from the oldest message the buffer still holds."""
        cdef BufferConsumer consumer
        with self._lock:
            if self._closed:
                raise self._closed_error()
            consumer = BufferConsumer.__new__(BufferConsumer, _ATTACH)
            consumer._buffer = self
            consumer._read = consumer._committed = self._start  # what a pass meanwhile sees
            consumer._thread = 0
            self._consumers.append(weakref.ref(consumer, _ConsumerGone(weakref.ref(self))))
            # Again, now that a pass can see it: one that a finaliser ran while
            # the list grew may have dropped past where it started.
            consumer._read = consumer._committed = self._start
            if self._cleaning and self._start < self._clean_floor:
                # The running pass asked its cleaner before this consumer existed.
                self._clean_floor = self._start
            return consumer

    def set_cleaner(self, cleaner, cooldown=0.01):
        """Install ``cleaner``, run at most once per ``cooldown`` seconds."""
        check.callable_arg("cleaner", cleaner)
        seconds = check.seconds_arg("cooldown", cooldown)
        with self._lock:
            self._cleaner = cleaner
            self._cooldown = seconds
            self._clean_pending = False  # a pass scheduled under the old cooldown: decide anew
        self._maybe_clean()

    def __len__(self):
        """The number of messages the buffer holds."""
        return self._end - self._start

    def slice(self):
        """A copy of the messages held, oldest first."""
        cdef int64_t i, n
        cdef object message
        with self._lock:  # excludes the cleaner; puts only add at the end
            n = self._end - self._start
            copy = PyList_New(n)
            for i in range(n):  # no Python runs in this loop
                message = <object>self._ring[(self._start + i) & self._mask]
                Py_INCREF(message)
                PyList_SET_ITEM(copy, i, message)
            return copy

    def diff(self, consumer):
        """How many held messages ``consumer`` has not read yet."""
        if type(consumer) is not BufferConsumer or (<BufferConsumer>consumer)._buffer is not self:
            raise ValueError("consumer must be a consumer of this buffer")
        cdef int64_t size = self._end - self._start
        cdef int64_t unread = self._end - (<BufferConsumer>consumer)._read
        return unread if unread < size else size

    def close(self):
        """End the buffer: puts raise Closed, blocked gets wake with Closed; idempotent."""
        with self._lock:
            self._close(None)

    def __enter__(self):
        """The buffer itself; leaving the block closes it."""
        return self

    def __exit__(self, *exc_info):
        """Close on leaving the ``with`` block."""
        self.close()

    def __reduce_ex__(self, protocol):
        raise check.not_copyable(self)

    @classmethod  # explicit: under binding=False Cython does not make it one implicitly
    def __class_getitem__(cls, item):
        return GenericAlias(cls, item)  # Buffer[int], as _core_py.Buffer gives

    cdef inline int _put(self, Context ctx, PyObject** values, Py_ssize_t n) except -1:
        # Inline: the loop's empty put after every tick is only these checks.
        if ctx is not None and ctx._done:
            raise ctx._error()
        if self._closed:
            raise self._closed_error()
        if n:
            if self._maxsize < 0:
                self._append(values, n)
            else:
                self._put_bounded(ctx, values, n)  # out of line: this stays small to inline
        if not self._clean_pending:
            self._maybe_clean()
        return 0

    cdef inline int _put_seq(self, Context ctx, object values) except -1:
        """put of a tuple or list."""
        return self._put(ctx, PySequence_Fast_ITEMS(values), len(values))

    cdef inline int _append(self, PyObject** values, Py_ssize_t n) except -1:
        cdef Py_ssize_t i
        if self._end - self._start + n > self._mask + 1:
            self._grow(n)
        for i in range(n):  # no Python runs from here to the waiter check
            Py_INCREF(<object>values[i])
            self._ring[self._end & self._mask] = values[i]
            self._end += 1
        if self._waiters:
            self._wake()
        return 0

    cdef int _notify(self) except -1:
        """Lock held: wake every waiting get and put, and elmstate.aio's waiting gets."""
        self._cond.notify_all()
        if self._watchers:
            watchers = self._watchers
            self._watchers = None
            for fn in watchers:
                fn()  # an elmstate.aio waker: hands the wake-up to its event loop
        return 0

    cdef int _wake(self) except -1:
        with self._cond:
            self._notify()
            # Every get waiting now is woken: later puts need not notify again
            # (each costs a Python-level call) until a get waits anew. A waiter
            # registered before this epoch does not count itself out again.
            self._waiters = 0
            self._wake_epoch += 1
        return 0

    # Bounds. A full buffer in wait mode makes a put wait for the cleaner to drop
    # what every consumer has committed past; a reader committing past the
    # buffer's middle runs a pass at once, so a waiting producer refills half the
    # buffer at a time rather than one message per commit. A put on a thread
    # that reads this buffer never waits: only that reader could make room.

    cdef int _put_bounded(self, Context ctx, PyObject** values, Py_ssize_t n) except -1:
        cdef PyObject** held
        cdef Py_ssize_t i
        if self._drop_oldest:
            self._append(values, n)
            if self._end - self._start > self._maxsize:  # read or not: a get learns it
                self._drop_to(self._end - self._maxsize, False)
        elif self._end - self._start < self._maxsize:
            self._append(values, n)  # no Python ran since the check: still room
        else:
            # Waiting runs Python, and ``values`` may be a list's items (a batch's
            # page, put without a copy) that its owner changes meanwhile: hold
            # our own references, in memory no finaliser can run to allocate.
            held = <PyObject**>PyMem_Malloc(n * sizeof(PyObject*))
            if held == NULL:
                raise MemoryError()
            for i in range(n):
                Py_INCREF(<object>values[i])
                held[i] = values[i]
            try:
                self._wait_room(ctx, held, n)
            finally:
                for i in range(n):
                    Py_DECREF(<object>held[i])
                PyMem_Free(held)
        return 0

    cdef int _wait_room(self, Context ctx, PyObject** values, Py_ssize_t n) except -1:
        """Wait mode, the buffer full: append once there is room (or never wait here)."""
        cdef Py_ssize_t token = 0
        with self._cond:
            try:
                while True:
                    if self._closed:
                        raise self._closed_error()
                    if ctx is not None and ctx._done:
                        raise ctx._error()
                    if self._end - self._start < self._maxsize or self._read_here():
                        self._append(values, n)
                        return 0
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
                    ctx._off_done(token)

    cdef bint _read_here(self) except -1:
        """Lock held: this thread is a loop's in its first tick, reads this buffer,
        or runs its pass (a put from the cleaner or a dropped message's finaliser,
        which would wait for the pass it is part of)."""
        cdef uint64_t me
        cdef BufferConsumer consumer
        if getattr(_first_tick, "depth", 0):
            return True
        me = _thread_number()
        if self._cleaning and self._clean_thread == me and self._clean_fork == _timer.forks:
            return True
        for ref in self._consumers:
            consumer = ref()
            if consumer is not None and not consumer._closed and consumer._thread == me:
                return True
        return False

    cdef int _commit_room(self, int64_t read) except -1:
        """A put waits for room and a reader committed up to ``read``."""
        if read - self._start >= self._room_at:
            if not self._closed:
                self._pass(True, monotonic())  # a pass now, whatever the cooldown
        elif not self._clean_pending:
            self._maybe_clean()
        return 0

    cdef int _grow(self, Py_ssize_t extra) except -1:
        cdef int64_t needed = self._end - self._start + extra
        cdef int64_t cap = self._mask + 1
        while cap < needed:
            cap *= 2
        return self._resize(cap)

    cdef int _resize(self, int64_t cap) except -1:
        """Move the live span into a ring of ``cap`` (a power of two) slots."""
        cdef int64_t i, s, d
        cdef PyObject** ring
        if cap > self._mask + 1:
            # Growing: realloc keeps the old slots where they are (for a large
            # block, without copying or touching them), and an index's slot in
            # the bigger ring is its old slot, or that plus a multiple of the old
            # capacity, i.e. in the new part: move only those.
            ring = <PyObject**>PyMem_Realloc(self._ring, cap * sizeof(PyObject*))
            if ring == NULL:
                raise MemoryError()
            for i in range(self._start, self._end):
                s = i & self._mask
                d = i & (cap - 1)
                if d != s:
                    ring[d] = ring[s]
        else:
            ring = <PyObject**>PyMem_Malloc(cap * sizeof(PyObject*))
            if ring == NULL:
                raise MemoryError()
            for i in range(self._start, self._end):  # slot i & mask holds index i, both sides
                ring[i & (cap - 1)] = self._ring[i & self._mask]
            PyMem_Free(self._ring)
        self._ring = ring
        self._mask = cap - 1
        return 0

    cdef int _close(self, cause) except -1:
        if not self._closed:
            self._closed = True
            self._close_cause = cause
            self._notify()
        return 0

    cdef object _closed_error(self):
        if self._close_cause is None:
            return Closed("buffer closed")
        error = Closed(f"buffer closed: its cleaner raised {self._close_cause!r}")
        error.__cause__ = self._close_cause
        return error

    # Cleaning. A pass asks the cleaner without holding the lock: it is user
    # code, and a context's deadline must never wait for it (ending a context
    # wakes its waiting gets, under this lock). Only one pass runs at a time;
    # one asked for meanwhile follows it, after the cooldown.

    cdef int _maybe_clean(self) except -1:
        """Run a pass now, or schedule one once the cooldown has passed."""
        if not self._clean_pending and not self._closed:
            self._pass(False, 0.0)
        return 0

    cdef int _pass(self, bint scheduled, double due) except -1:
        """One pass, if it is time: ask the cleaner how many to drop, drop, release.

        A put or commit asks for one that waits for the cooldown; a scheduled one
        runs unless another ran since it was ``due``.
        """
        cdef bint claimed = False, ask = False
        cdef int64_t start, size, n, target = 0
        cdef BufferConsumer consumer
        try:
            with self._lock:  # decide once: two callers must not both clean, or both schedule
                if self._closed:
                    return 0
                if not scheduled:
                    if self._clean_pending:
                        return 0
                elif self._last_clean >= due:
                    return 0
                else:
                    self._clean_pending = False
                claimed = self._claim_pass(scheduled)
                if not claimed:
                    return 0
                self._last_clean = monotonic()
                start = self._start
                size = self._end - start
                self._prune()
                if self._cleaner is default_cleaner:  # no user code: answered here
                    n = size if self._consumers else 0
                    for ref in self._consumers:
                        consumer = ref()
                        if consumer is not None and consumer._committed - start < n:
                            n = consumer._committed - start
                    target = start + n if n > 0 else start
                else:
                    ask = True
                    cleaner = self._cleaner
                    offsets = []
                    for ref in self._consumers:
                        consumer = ref()
                        if consumer is not None:
                            offsets.append(consumer._committed - start)
            if ask:
                target = start + self._ask(cleaner, size, offsets, not scheduled)
            self._drop_to(target)
        finally:
            if claimed:
                # First, before anything that may be interrupted (taking the
                # lock): one store, and the next pass may be claimed.
                self._cleaning = False
                with self._lock:
                    if self._clean_again and not self._closed:
                        # Never a second pass here: a cleaner that puts would loop.
                        try:
                            self._defer(max(self._last_clean + self._cooldown - monotonic(), 0.0))
                        finally:
                            self._clean_again = False
        return 0

    cdef int _prune(self) except -1:
        """Lock held: forget closed and collected consumers, in place.

        Deleting allocates nothing, so no finaliser can run and register a
        consumer in a list that is about to be replaced.
        """
        cdef Py_ssize_t i
        cdef BufferConsumer consumer
        for i in range(len(self._consumers) - 1, -1, -1):
            consumer = self._consumers[i]()
            if consumer is None or consumer._closed:
                del self._consumers[i]
        return 0

    cdef bint _claim_pass(self, bint now) except -1:
        """Lock held: True if the caller is to run a pass now, else arrange one."""
        if self._cleaning and self._clean_fork == _timer.forks:  # (a parent's pass is void)
            self._clean_again = True
            self._clean_pending = True
            return False
        delay = 0.0 if now else self._last_clean + self._cooldown - monotonic()
        if delay > 0:
            self._defer(delay)
            return False
        self._clean_fork = _timer.forks
        self._clean_floor = _NO_FLOOR
        self._clean_thread = _thread_number()
        # Last, right before the return: a KeyboardInterrupt raised between
        # the two would leave a pass claimed that no caller ends.
        self._cleaning = True
        return True

    cdef int _defer(self, double delay) except -1:
        """Lock held: a pass once ``delay`` seconds have passed.

        When it is due, the timer lets the next put or commit run it on its own
        thread, where the messages it drops are likely still in cache and no other
        thread need take the GIL; the worker runs it only if none comes soon.
        """
        due = monotonic() + delay  # before the timer reads its clock: it fires at or after due
        ref = weakref.ref(self)
        try:
            _timer.schedule(delay, _CleanDue(ref))
            _timer.schedule_work(delay + min(self._cooldown, _GRACE), _CleanLater(ref, due))
        except BaseException:  # no thread to be had, or a KeyboardInterrupt: never stuck
            self._clean_pending = False  # the next put or commit asks again
            raise
        self._clean_pending = True
        return 0

    cdef int64_t _ask(self, cleaner, int64_t size, list offsets, bint inline) except? -1:
        """Call a user's cleaner (lock not held): how many of the oldest messages to drop."""
        try:
            return trim_count(cleaner(size, offsets), size)
        except BaseException as exc:  # user code, maybe run off-thread: surface it
            with self._lock:
                self._close(exc)
            if inline and not isinstance(exc, Exception):
                raise  # KeyboardInterrupt and the like still reach the caller
            return 0  # off-thread, the closed buffer reports it

    cdef int _drop_to(self, int64_t target, bint floor=True) except -1:
        """Drop messages below ``target`` a chunk at a time.

        Each chunk's references move out of the ring under the lock and are
        released after it (finalisers may run), into a buffer on the stack: no
        allocation, however many messages a pass drops. Between chunks a new
        consumer may join: ``_clean_floor`` keeps what it has yet to read —
        unless ``floor`` is false (drop_oldest drops unread messages anyway).
        """
        cdef PyObject* held[256]
        cdef int64_t i, k, size, cap
        while True:
            with self._lock:
                k = (min(target, self._clean_floor) if floor else target) - self._start
                if k > 256:
                    k = 256
                if k <= 0 or self._closed:  # closed while its cleaner ran: what it holds stays
                    size = self._end - self._start
                    if self._mask >= _SHRINK_ABOVE and 4 * size <= self._mask:
                        cap = _MIN_CAPACITY
                        while cap < 2 * size:
                            cap *= 2
                        self._resize(cap)  # give back what a burst took, keeping room to grow
                    if self._waiters or self._room_waiters:
                        # A lagging consumer must wake up to learn it; a put, to use the room.
                        self._notify()
                    return 0
                for i in range(k):  # no Python runs: the references move to held
                    held[i] = self._ring[(self._start + i) & self._mask]
                self._start += k
            for i in range(k):
                Py_DECREF(<object>held[i])


cdef class _CleanDue:
    """On the timer thread, when a deferred pass is due: the next put or commit runs it."""

    def __init__(self, buffer):
        self.buffer = buffer

    def __call__(self):
        cdef Buffer buffer = self.buffer()
        if buffer is not None:
            buffer._clean_pending = False  # a hint only: _maybe_clean decides under the lock


cdef class _CleanLater:
    """On the worker thread, a little after a pass was due: runs it if nothing else did."""

    def __init__(self, buffer, double due):
        self.buffer = buffer
        self.due = due

    def __call__(self):
        cdef Buffer buffer = self.buffer()
        if buffer is None:
            return
        buffer._pass(True, self.due)


cdef class _ConsumerGone:
    """A consumer collected without ``close()``: a pass soon, as ``close()`` runs one.

    What it held back may go, and a put that waits for that room is woken. On
    the worker thread: the garbage collector may call this anywhere, also under
    the buffer's lock.
    """

    def __init__(self, buffer):
        self.buffer = buffer

    def __call__(self, ref):
        cdef Buffer buffer = self.buffer()
        # Only when there is something to drop; never while the interpreter
        # shuts down (the worker thread could not start: a hang at exit).
        if buffer is not None and buffer._end > buffer._start and not _finalizing():
            _timer.schedule_work(0.0, _CleanLater(self.buffer, monotonic()))


cdef class _Waker:
    """Registered on a ctx while a get waits, so a cancel wakes it at once."""

    def __init__(self, cond):
        self.cond = cond

    def __call__(self, err):
        with self.cond:
            self.cond.notify_all()


cdef class BufferConsumer:
    """One reader of a :class:`Buffer`, with its own read and committed positions."""

    def __cinit__(self, *args, **kwargs):
        # Refuses BufferConsumer.__new__ too: a consumer without its buffer
        # would dereference nothing.
        if len(args) != 1 or args[0] is not _ATTACH or kwargs:
            raise TypeError("use Buffer.new_consumer() to make a consumer")

    # get(ctx=None) is installed by _slots.pxi as a METH_FASTCALL method.

    def commit(self):
        """Make the reads since the last commit permanent."""
        self._commit()

    def rollback(self):
        """Return to the last commit: the same messages are read again."""
        self._check_uncommitted("rollback")
        self._read = self._committed

    def close(self):
        """Detach from the buffer; a blocked get wakes with Closed; idempotent."""
        buffer = self._buffer
        with buffer._lock:
            if self._closed:
                return
            self._closed = True
            buffer._prune()
            buffer._notify()
        buffer._maybe_clean()

    def __enter__(self):
        """The consumer itself; leaving the block closes it."""
        return self

    def __exit__(self, *exc_info):
        """Close on leaving the ``with`` block."""
        self.close()

    def __reduce_ex__(self, protocol):
        raise check.not_copyable(self)

    @classmethod  # as Buffer's
    def __class_getitem__(cls, item):
        return GenericAlias(cls, item)

    cdef inline object _get(self, Context ctx):
        cdef Buffer buffer = self._buffer
        cdef int64_t index = self._read
        if buffer._maxsize >= 0:  # a put on this thread must never wait for this reader
            self._thread = _thread_number()
        if (
            not self._closed
            and not buffer._closed
            and (ctx is None or not ctx._done)
            and buffer._start <= index < buffer._end
        ):
            self._read = index + 1
            return <object>buffer._ring[index & buffer._mask]
        return self._wait(ctx)

    cdef inline object _poll(self, Context ctx):
        """get without waiting: ``_EMPTY`` when there is nothing to read (elmstate.aio)."""
        cdef Buffer buffer = self._buffer
        cdef int64_t index = self._read
        if buffer._maxsize >= 0:
            self._thread = _thread_number()
        if (
            not self._closed
            and not buffer._closed
            and (ctx is None or not ctx._done)
            and buffer._start <= index < buffer._end
        ):
            self._read = index + 1
            return <object>buffer._ring[index & buffer._mask]
        return self._wait(ctx, False)

    def _aio_get(self, ctx, watcher):
        """elmstate.aio's get: the next message, or ``_EMPTY`` after registering
        ``watcher`` (when not None) to be called, once, by the next put or close.
        The check and the registration are one step under the lock: no put slips
        between them unseen."""
        if watcher is None:
            return self._poll(_optional_context("ctx", ctx))
        return self._wait(_optional_context("ctx", ctx), False, watcher)

    def _aio_unwatch(self, watcher):
        """Withdraw a watcher that no put has called (a cancelled get)."""
        buffer = self._buffer
        with buffer._lock:
            if buffer._watchers is not None and watcher in buffer._watchers:
                buffer._watchers.remove(watcher)
                buffer._waiters -= 1

    cdef object _wait(self, Context ctx, bint block=True, object watcher=None):
        """The slow path of get: errors, or waiting for a put; unless ``block``,
        ``_EMPTY`` instead of waiting, with ``watcher`` registered when given."""
        cdef Buffer buffer = self._buffer
        cdef int64_t index
        cdef Py_ssize_t token = 0, epoch
        with buffer._cond:
            try:
                while True:
                    if self._closed:
                        raise Closed("consumer closed")
                    if buffer._closed:
                        raise buffer._closed_error()
                    if ctx is not None and ctx._done:
                        raise ctx._error()
                    index = self._read
                    if index < buffer._start:
                        if buffer._drop_oldest:  # freshness over completeness
                            self._read = buffer._start
                            return Dropped(buffer._start - index)
                        raise Lagged(
                            f"the cleaner dropped {buffer._start - index} message(s)"
                            " this consumer had not read"
                        )
                    if index < buffer._end:
                        self._read = index + 1
                        return <object>buffer._ring[index & buffer._mask]
                    if not block:
                        if watcher is not None:
                            if buffer._watchers is None:
                                buffer._watchers = [watcher]
                            else:
                                buffer._watchers.append(watcher)
                            buffer._waiters += 1  # a put calls _wake, which calls it
                        return _NOTHING
                    if ctx is not None and token == 0:
                        token = ctx._on_done(_Waker(buffer._cond))
                        continue  # 0 means ctx ended meanwhile: the check above raises
                    buffer._waiters += 1  # in the same no-Python section as the check
                    epoch = buffer._wake_epoch
                    try:
                        buffer._cond.wait()
                    finally:
                        if buffer._wake_epoch == epoch:  # else _wake counted it out
                            buffer._waiters -= 1
            finally:
                if token:
                    ctx._off_done(token)

    cdef inline int _commit(self) except -1:
        if self._closed or self._read == self._committed:
            self._check_uncommitted("commit")  # raises
        self._committed = self._read
        if self._buffer._room_waiters:  # (no local for the buffer: it would cost a reference)
            self._buffer._commit_room(self._read)
        elif not self._buffer._clean_pending:
            self._buffer._maybe_clean()
        return 0

    cdef int _check_uncommitted(self, str what) except -1:
        if self._closed:
            raise Closed("consumer closed")
        if self._read == self._committed:
            raise NothingUncommitted(f"{what}: nothing uncommitted")
        return 0


include "_slots.pxi"


# --------------------------------------------------------------------------- the loop


cdef class _Program:
    """A program's callbacks and model, and the parts of a tick apart from the loop."""

    def __init__(self, init, update, view, producer, replay):
        self.init = init
        self.update = update
        self.view = view
        self.put = producer.put
        if type(producer) is Buffer:
            self.buffer = <Buffer>producer
        self.replay = replay

    cdef int start(self, Context ctx) except -1:
        """The first tick: init, view, and init's commands."""
        return self._dispatch(ctx, self._init())

    cdef object _init(self):
        """init and view; returns init's command."""
        self.model, command = check.pair("init", self.init(), "(model, command)")
        result = _call1(self.view, self.model)
        if result is not None and _awaitable(result):
            raise check.refused_awaitable("view", result)
        return command

    cdef bint _replaying(self) except -1:
        """replay(), which must not return an awaitable."""
        answer = self.replay()
        if answer is not True and answer is not False and _awaitable(answer):
            raise check.refused_awaitable("replay", answer)
        return bool(answer)

    cdef inline int _step(self, Context ctx, object message) except -1:
        """A later tick, once its message is read (the twin writes this out in _loop)."""
        return self._dispatch(ctx, self._apply(message))

    cdef inline object _apply(self, object message):
        """update, the transform and view for one message (None: view only); returns
        the command. A callback that returns an awaitable is refused
        (docs/asyncio.md#what-stays-synchronous): the checks are on the error paths."""
        cdef object command = None
        cdef object result
        if message is not None:
            transform = _call1(self.update, message)
            if transform is not None:
                if not callable(transform):
                    raise check.not_transform(transform)
                result = _call1(transform, self.model)
                if type(result) is tuple and PyTuple_GET_SIZE(result) == 2:
                    self.model = (<tuple>result)[0]
                    command = (<tuple>result)[1]
                else:
                    self.model, command = check.pair("transform", result, "(model, command)")
        result = _call1(self.view, self.model)
        if result is not None and _awaitable(result):
            raise check.refused_awaitable("view", result)
        return command

    cdef inline int _dispatch(self, Context ctx, object command) except -1:
        cdef list messages
        cdef bint skip = self.replay is not None and self._replaying()  # every tick, as in Go
        if command is None or skip:
            return self._put_nothing(ctx)
        if type(command) is tuple:
            if PyTuple_GET_SIZE(command) == 0:
                return self._put_nothing(ctx)  # () is "no command" as much as None is
            entries = command
        elif type(command) is list:
            if PyList_GET_SIZE(command) == 0:
                return self._put_nothing(ctx)
            entries = command
        else:
            entries = _entries_of(command)
        messages = _collect(entries)
        if messages is None:
            return self._put_nothing(ctx)
        return self._put(ctx, messages)

    cdef inline int _put_nothing(self, Context ctx) except -1:
        """The put of a tick without messages: for a Buffer, only its checks."""
        if self.buffer is not None:
            return self.buffer._put(ctx, NULL, 0)
        self.put(ctx)
        return 0

    cdef int _put(self, Context ctx, list messages) except -1:
        if self.buffer is not None:
            return self.buffer._put_seq(ctx, messages)
        self.put(ctx, *messages)
        return 0

    # elmstate.aio: the same tick, its awaits left to the caller (aio/_loop.py).
    # A callback that must be synchronous and returns an awaitable is refused.

    def _aio_start(self, Context ctx, BufferConsumer direct):
        """The first tick but its put: init, view and init's entries (see _aio_entries)."""
        if direct is not None:  # read on this thread: its puts never wait for room
            direct._thread = _thread_number()
        return self._aio_entries(ctx, self._init())

    def _aio_tick(self, Context ctx, message):
        """A later tick, for a message the caller read, but its put and commit."""
        return self._aio_entries(ctx, self._apply(message))

    def _aio_put(self, Context ctx, messages):
        """A put into the Buffer producer, of a list or a tuple: a tick's messages
        once its entries were awaited, a page, a marker."""
        if self.buffer is None:
            raise RuntimeError("_aio_put needs a Buffer producer")
        if type(messages) is not list and type(messages) is not tuple:
            messages = list(messages)
        self.buffer._put_seq(ctx, messages)  # none: only the put's checks

    def _aio_drain(self, BufferConsumer direct, Context ctx, double seconds):
        """Whole ticks, read from ``direct`` and put into the Buffer producer, for
        up to ``seconds``. Returns ``_EMPTY`` when there is nothing to read,
        ``_YIELD`` when the time is up, or, with the message read and not
        committed, a batch marker or the ``_Awaiting`` of a tick's entries."""
        cdef double until = _now() + seconds
        cdef object command, out
        if self.buffer is None:
            raise RuntimeError("_aio_drain needs a Buffer producer")
        while True:
            if ctx._done:
                raise ctx._error()
            message = direct._poll(ctx)
            if message is _NOTHING or type(message) is _End:
                return message
            command = self._apply(message)
            if self.replay is None and (
                command is None
                or (type(command) is tuple and PyTuple_GET_SIZE(command) == 0)
                or (type(command) is list and PyList_GET_SIZE(command) == 0)
            ):
                self.buffer._put(ctx, NULL, 0)
            else:
                out = self._aio_entries(ctx, command)
                if out is None:
                    self.buffer._put(ctx, NULL, 0)
                elif type(out) is list:
                    self.buffer._put_seq(ctx, out)
                else:
                    return out
            direct._commit()
            if _now() >= until:
                return _YIELDING

    cdef object _aio_entries(self, Context ctx, object command):
        """The command's entries, called in order. Returns None when none returned
        a message, the list of messages, or, when one returned an awaitable, an
        ``_Awaiting`` of everything they returned (in entry order, Nones left out)."""
        cdef list results
        if self.replay is not None and self._replaying():
            return None
        if command is None:
            return None
        if type(command) is tuple or type(command) is list:
            entries = command
        else:
            entries = _entries_of(command)
        results = _collect(entries)
        if results is not None:
            for result in results:
                if _awaitable(result):
                    return _Awaiting(results)
        return results


cdef object _entries_of(object command):
    """A command that is not a tuple or a list, as an iterator over its entries."""
    if isinstance(command, check.TEXT):
        raise check.not_iterable(command)
    try:
        return iter(command)
    except TypeError:
        raise check.not_iterable(command) from None


cdef list _collect(object entries):
    """Call each entry in order: the results that are not None, or None if none is.
    If one raises, the awaitables returned before it (elmstate.aio) are closed."""
    cdef list results = None
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


cdef class _Awaiting:
    """A tick's entry results, some of them awaitables (elmstate.aio awaits them)."""

    cdef readonly list results

    def __init__(self, list results):
        self.results = results


cdef int _check_run_args(init, update, view, producer, consumer, replay) except -1:
    check.program_args(init, update, view, producer, consumer)
    check.optional_callable_arg("replay", replay)
    return 0


cdef int _first(_Program program, BufferConsumer direct, Context ctx) except -1:
    """The first tick, which has read nothing: its puts never wait.

    (docs/contract.md#bounded-buffers) Called through ``_first_ptr``, so that the C
    compiler cannot inline it, and its ``try``, into ``_loop``: that costs every
    later tick some instructions (callgrind).
    """
    if direct is not None:  # the loop reads it on this thread from now on
        direct._thread = _thread_number()
    _first_tick.depth = getattr(_first_tick, "depth", 0) + 1
    try:
        program.start(ctx)
    finally:
        _first_tick.depth -= 1
    return 0


cdef int (*_first_ptr)(_Program, BufferConsumer, Context) except -1
_first_ptr = _first


cdef int _loop(_Program program, object consumer, Context ctx) except -1:
    cdef BufferConsumer direct = None
    cdef _BatchConsumer wrapped = None
    if type(consumer) is BufferConsumer:
        direct = <BufferConsumer>consumer
    elif type(consumer) is _BatchConsumer:
        wrapped = <_BatchConsumer>consumer
    get = commit = None
    if direct is None and wrapped is None:
        get, commit = consumer.get, consumer.commit  # bound once, outside the loop
    cdef bint ticking = False  # a failure rolls back only inside a tick
    if ctx._done:
        raise ctx._error()
    _first_ptr(program, direct if wrapped is None else wrapped.direct, ctx)
    try:  # one try around the loop: entering a try costs, on every tick
        while True:
            if ctx._done:
                raise ctx._error()
            ticking = True
            if direct is not None:
                message = direct._get(ctx)
            elif wrapped is not None:
                message = wrapped._get(ctx)
            else:
                message = get(ctx)
            if type(message) is _End:  # left by a batch that failed: commit, skip
                if direct is not None:
                    direct._commit()
                else:
                    commit()  # never wrapped: a batch's consumer hands out no markers
                ticking = False
                continue
            program._step(ctx, message)
            if direct is not None:
                direct._commit()
            elif wrapped is not None:
                wrapped._commit()
            else:
                commit()
            ticking = False
    except BaseException:
        if ticking:
            _quiet_rollback(consumer)
        raise


cdef _quiet_rollback(consumer):
    try:
        consumer.rollback()
    except Exception:
        pass  # the tick's own error is the one to report


# The None defaults let a missing argument reach the checks, which name it; the
# docstring's first line gives inspect.signature the parameters as they are.
@cython.embedsignature(False)
def run(init=None, update=None, view=None, producer=None, consumer=None, *, ctx=None, replay=None):
    """run(init, update, view, producer, consumer, *, ctx=None, replay=None)
--

Run the program one tick at a time until an exception (or ``ctx``) ends it."""
    _check_run_args(init, update, view, producer, consumer, replay)
    cdef Context context = _context_arg(ctx)
    _loop(_Program(init, update, view, producer, replay), consumer, context)


# --------------------------------------------------------------------------- batch


cdef class _End:
    """A batch's private marker; never reaches update.

    A batch makes its own end marker and, with ``feed="inline"``, its own fetch
    marker (another instance): a marker that a failed batch left in the queue
    belongs to no one reading it later, and is committed and skipped.
    """

    def __repr__(self):
        return "<elmstate batch marker>"

    def __reduce_ex__(self, protocol):
        raise check.marker_copied()


class _Drained(Exception):
    """Raised by the batch consumer to stop the loop once the queue has drained."""


cdef class _BatchConsumer:
    """Wraps the loop's consumer so markers are filtered: an end marker ends the
    batch, a fetch marker (``feed="inline"``) fetches and puts the next page."""

    def __init__(self, consumer, producer, _End end, fetcher=None):
        self.consumer = consumer
        if type(consumer) is BufferConsumer:
            self.direct = <BufferConsumer>consumer
        self.put = producer.put
        if type(producer) is Buffer:
            self.buffer = <Buffer>producer
        self.end = end
        if fetcher is not None:
            self.fetch = _End()
            self.fetcher = fetcher

    def get(self, ctx):
        return self._get(_optional_context("ctx", ctx))

    def commit(self):
        self._commit()

    def rollback(self):
        if not self.drained:
            self.consumer.rollback()

    cdef inline object _get(self, Context ctx):
        message = self._next(ctx)
        if type(message) is not _End:
            return message
        return self._past_end(ctx, message)

    cdef inline object _next(self, Context ctx):
        if self.direct is not None:
            return self.direct._get(ctx)
        return self.consumer.get(ctx)

    cdef object _past_end(self, Context ctx, object marker):
        """A marker was just read: commit it, then end the batch or read on.

        Another batch's marker is only committed: it says nothing about this one.
        """
        cdef bint after_end = False
        while True:
            try:
                self._commit()
            except BaseException:
                _quiet_rollback(self.consumer)
                raise
            if marker is self.end:
                if after_end:
                    self.drained = True
                    raise _Drained
                # goes behind everything commands produced meanwhile
                if self.buffer is not None:
                    self.buffer._put_seq(ctx, (marker,))
                else:
                    self.put(ctx, marker)
                after_end = True
            elif marker is self.fetch:
                self._feed(ctx)  # everything ahead of it was processed
            message = self._next(ctx)
            if type(message) is not _End:
                return message
            marker = message

    cdef int _feed(self, Context ctx) except -1:
        """Fetch one page on this thread; put it, then the marker that says what next."""
        if ctx._done:  # between pages too: a fetcher that keeps saying more=True
            raise ctx._error()
        messages, more = check.pair("fetcher", self.fetcher(ctx), "(messages, more)")
        marker = self.fetch if more else self.end
        if self.buffer is not None and (type(messages) is list or type(messages) is tuple):
            self.buffer._put_seq(ctx, messages)  # straight from the page: no copies
            self.buffer._put_seq(ctx, (marker,))
        else:
            self.put(ctx, *check.messages("fetcher", messages))
            self.put(ctx, marker)
        return 0

    cdef inline int _commit(self) except -1:
        if self.direct is not None:
            return self.direct._commit()
        self.consumer.commit()
        return 0


def _feed(Context ctx, fetcher, producer, _End end, list failure):
    cdef Buffer buffer = producer if type(producer) is Buffer else None
    put = producer.put
    try:
        while not ctx._done:
            messages, more = check.pair("fetcher", fetcher(ctx), "(messages, more)")
            if buffer is not None and (type(messages) is list or type(messages) is tuple):
                buffer._put_seq(ctx, messages)  # straight from the page: no copies
            else:
                put(ctx, *check.messages("fetcher", messages))
            if not more:
                put(ctx, end)
                return
    except BaseException as exc:
        failure.append(exc)
        ctx.cancel()


@cython.embedsignature(False)  # as run's
def batch(
    init=None, update=None, view=None, producer=None, consumer=None, fetcher=None,
    *, ctx=None, replay=None, feed="thread",
):
    """batch(init, update, view, producer, consumer, fetcher, *, ctx=None, replay=None, \
feed='thread')
--

Run until the input is exhausted and every caused message is processed."""
    _check_run_args(init, update, view, producer, consumer, replay)
    check.callable_arg("fetcher", fetcher)
    check.feed_arg(feed)
    return _batch(init, update, view, producer, consumer, fetcher, _context_arg(ctx), replay, feed)


def _batch(init, update, view, producer, consumer, fetcher, Context outer, replay, feed):
    """batch past its checks: aggregate, which made them already, calls this."""
    if feed == "inline":
        return _batch_inline(init, update, view, producer, consumer, fetcher, outer, replay)
    cdef Context inner = Context(outer)
    cdef _Program program = _Program(init, update, view, producer, replay)
    cdef _End end = _End()
    cdef list failure = []
    feeder = threading.Thread(
        target=_feed, args=(inner, fetcher, producer, end, failure), name="elmstate-feeder"
    )
    feeder.start()
    try:
        _loop(program, _BatchConsumer(consumer, producer, end), inner)
    except _Drained:
        return program.model
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


cdef object _batch_inline(init, update, view, producer, consumer, fetcher, Context ctx, replay):
    """``feed="inline"``: the fetcher runs on this thread, behind fetch markers;
    no thread and no context of its own (nothing runs beside the loop)."""
    cdef _Program program = _Program(init, update, view, producer, replay)
    cdef _BatchConsumer wrapped = _BatchConsumer(consumer, producer, _End(), fetcher)
    wrapped._feed(ctx)  # the first page, before anything else (an ended ctx raises)
    try:
        _loop(program, wrapped, ctx)
    except _Drained:
        return program.model  # the model the last view saw


check.register(check.PRODUCERS, Buffer)
check.register(check.CONSUMERS, BufferConsumer)
