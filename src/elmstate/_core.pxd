# cython: language_level=3
"""The compiled core's types: every ``cdef class`` of ``_core.pyx``, its C fields
and its C methods (Cython reads this file before the ``.pyx``). The methods'
bodies, and everything a Python caller sees, are in ``_core.pyx``.
"""

cimport cython
from cpython.object cimport PyObject
from libc.stdint cimport int64_t, uint64_t

cdef class Buffer
cdef class BufferConsumer
cdef class _End


# --------------------------------------------------------------------------- Context


# Class directives that change the generated slots (trashcan, no_gc_clear) are
# honoured only on the definition: see Context in _core.pyx.
@cython.final
cdef class Context:
    cdef object _lock
    cdef bint _done
    cdef object _err
    cdef dict _callbacks  # token -> fn(err), run once when this context ends
    cdef object _gate  # see wait
    cdef Context _parent
    cdef Py_ssize_t _parent_token
    cdef object _timer
    cdef object __weakref__
    cdef Py_ssize_t _on_done(self, fn) except -1
    cdef int _off_done(self, Py_ssize_t token) except -1
    cdef object _error(self)
    cdef int _finish(self, err) except -1
    cdef list _end(self, err)


@cython.final
cdef class _ChildLink:
    cdef object child


@cython.final
cdef class _DoneCallback:
    cdef object _fn
    cdef Py_ssize_t _token  # the context's key for it while registered


@cython.final
cdef class _Expire:
    cdef object ctx


# --------------------------------------------------------------------------- Buffer


@cython.final
cdef class Buffer:
    cdef PyObject** _ring
    cdef int64_t _mask  # capacity - 1; capacity is a power of two
    cdef int64_t _start  # absolute index of the oldest message held
    cdef int64_t _end  # absolute index one past the newest
    cdef object _lock  # slow paths only: waiting, cleaning, the consumer registry
    cdef object _cond
    cdef list _consumers  # weak references: a dropped consumer holds nothing
    cdef bint _closed
    cdef object _close_cause
    cdef Py_ssize_t _waiters  # gets waiting, and not yet woken by a put
    cdef Py_ssize_t _wake_epoch  # bumped by each put's wake-up
    cdef object _cleaner
    cdef double _cooldown
    cdef double _last_clean
    # A pass is scheduled, or one runs and another is wanted after it: the hot
    # path need not ask for one.
    cdef bint _clean_pending
    cdef bint _cleaning  # a pass runs (its cleaner is called without the lock)
    cdef bint _clean_again  # something asked for a pass while one ran
    cdef Py_ssize_t _clean_fork  # _timer.forks when the running pass began
    cdef uint64_t _clean_thread  # the thread that runs it: its puts never wait
    cdef int64_t _clean_floor  # a pass drops nothing at or past this index
    cdef int64_t _maxsize  # -1: unbounded
    cdef int64_t _room_at  # wait mode: a reader this far past the start makes room at once
    cdef bint _drop_oldest  # overflow="drop_oldest"
    cdef Py_ssize_t _room_waiters  # puts waiting for room
    cdef list _watchers  # elmstate.aio's waiting gets: called by the next put or close
    cdef object __weakref__
    cdef int _notify(self) except -1
    cdef inline int _put(self, Context ctx, PyObject** values, Py_ssize_t n) except -1
    cdef inline int _put_seq(self, Context ctx, object values) except -1
    cdef inline int _append(self, PyObject** values, Py_ssize_t n) except -1
    cdef int _wake(self) except -1
    cdef int _grow(self, Py_ssize_t extra) except -1
    cdef int _resize(self, int64_t cap) except -1
    cdef int _close(self, cause) except -1
    cdef object _closed_error(self)
    cdef int _maybe_clean(self) except -1
    cdef int _pass(self, bint scheduled, double due) except -1
    cdef int _prune(self) except -1
    cdef bint _claim_pass(self, bint now) except -1
    cdef int _defer(self, double delay) except -1
    cdef int64_t _ask(self, cleaner, int64_t size, list offsets, bint inline) except? -1
    cdef int _drop_to(self, int64_t target, bint floor=*) except -1
    cdef int _put_bounded(self, Context ctx, PyObject** values, Py_ssize_t n) except -1
    cdef int _wait_room(self, Context ctx, PyObject** values, Py_ssize_t n) except -1
    cdef bint _read_here(self) except -1
    cdef int _commit_room(self, int64_t read) except -1


@cython.final
cdef class _CleanDue:
    cdef object buffer


@cython.final
cdef class _CleanLater:
    cdef object buffer
    cdef double due


@cython.final
cdef class _ConsumerGone:
    cdef object buffer


@cython.final
cdef class _Waker:
    cdef object cond


@cython.final
cdef class BufferConsumer:
    cdef Buffer _buffer
    cdef int64_t _read  # absolute index of the next message to read
    cdef int64_t _committed
    cdef bint _closed
    cdef uint64_t _thread  # bounded buffers: the thread (_thread_number) of the last get, or 0
    cdef object __weakref__
    cdef inline object _get(self, Context ctx)
    cdef inline object _poll(self, Context ctx)
    cdef object _wait(self, Context ctx, bint block=*, object watcher=*)
    cdef inline int _commit(self) except -1
    cdef int _check_uncommitted(self, str what) except -1


# --------------------------------------------------------------------------- the loop


@cython.final
cdef class _Program:
    cdef object init
    cdef object update
    cdef object view
    cdef object put
    cdef Buffer buffer  # the producer when it is a Buffer: put without a Python call
    cdef object replay
    cdef public object model
    cdef int start(self, Context ctx) except -1
    cdef object _init(self)
    cdef bint _replaying(self) except -1
    cdef inline int _step(self, Context ctx, object message) except -1
    cdef inline object _apply(self, object message)
    cdef object _aio_entries(self, Context ctx, object command)
    cdef inline int _dispatch(self, Context ctx, object command) except -1
    cdef inline int _put_nothing(self, Context ctx) except -1
    cdef int _put(self, Context ctx, list messages) except -1


# --------------------------------------------------------------------------- batch


@cython.final
cdef class _End:
    pass


@cython.final
cdef class _BatchConsumer:
    cdef object consumer
    cdef BufferConsumer direct  # the consumer when it is a BufferConsumer
    cdef object put
    cdef Buffer buffer  # the producer when it is a Buffer
    cdef _End end  # this batch's markers
    cdef _End fetch  # feed="inline" only
    cdef object fetcher  # feed="inline" only: None when a feeder thread puts the pages
    cdef bint drained
    cdef inline object _get(self, Context ctx)
    cdef inline object _next(self, Context ctx)
    cdef object _past_end(self, Context ctx, object marker)
    cdef int _feed(self, Context ctx) except -1
    cdef inline int _commit(self) except -1
