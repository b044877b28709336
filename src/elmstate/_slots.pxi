# Included by _core.pyx after BufferConsumer: the type-slot editing of the
# Buffer's types, kept apart from the queue logic. Nothing here decides what a
# buffer does; it only changes how CPython reaches it.


# The ring's references are invisible to Cython's generated tp_traverse and
# tp_clear: these wrappers add them, so a message that refers back to its buffer
# (a closure over the producer, say) is still collected with it.

cdef _traverseproc _buffer_base_traverse = (<_GCSlots*><void*>Buffer).tp_traverse
cdef _inquiry _buffer_base_clear = (<_GCSlots*><void*>Buffer).tp_clear


cdef int _buffer_traverse(PyObject* o, _visitproc visit, void* arg) noexcept:
    cdef Buffer self = <Buffer>o
    cdef int64_t i
    cdef int r = _buffer_base_traverse(o, visit, arg) if _buffer_base_traverse != NULL else 0
    if r:
        return r
    for i in range(self._start, self._end):
        r = visit(self._ring[i & self._mask], arg)
        if r:
            return r
    return 0


cdef int _buffer_clear(PyObject* o) noexcept:
    cdef Buffer self = <Buffer>o
    cdef int64_t i, n = self._end - self._start
    # Copy the references out and empty the ring first: releasing them may run
    # finalisers that touch the buffer.
    cdef PyObject** held = <PyObject**>PyMem_Malloc(n * sizeof(PyObject*)) if n else NULL
    if n and held == NULL:
        return _clear_fields(o)  # out of memory: leave the ring to __dealloc__
    for i in range(n):
        held[i] = self._ring[(self._start + i) & self._mask]
    self._start = self._end
    for i in range(n):
        Py_DECREF(<object>held[i])
    PyMem_Free(held)
    return _clear_fields(o)


cdef inline int _clear_fields(PyObject* o) noexcept:
    return _buffer_base_clear(o) if _buffer_base_clear != NULL else 0


(<_GCSlots*><void*>Buffer).tp_traverse = _buffer_traverse
(<_GCSlots*><void*>Buffer).tp_clear = _buffer_clear


# Buffer.put and BufferConsumer.get are the calls a producer or consumer makes
# per message. Cython's wrappers for them would build an argument tuple (put's
# *values) or parse keywords generically (get), so both are installed as
# METH_FASTCALL methods that read the caller's argument array directly.

cdef object _buffer_put(object self, PyObject** args, Py_ssize_t nargs, PyObject* kwnames):
    """Buffer.put(ctx, *values)."""
    if kwnames != NULL and PyTuple_GET_SIZE(<object>kwnames):
        if nargs == 0 and <object>kwnames == ("ctx",):  # put(ctx=...): no values
            (<Buffer>self)._put(_optional_context("ctx", <object>args[0]), NULL, 0)
            return None
        raise TypeError("put() takes ctx and then the values as positional arguments")
    if nargs == 0:
        raise TypeError("put() missing 1 required positional argument: 'ctx'")
    (<Buffer>self)._put(_optional_context("ctx", <object>args[0]), args + 1, nargs - 1)
    return None


cdef PyMethodDef _buffer_put_def
_buffer_put_def.ml_name = "put"
_buffer_put_def.ml_meth = <void*>_buffer_put
_buffer_put_def.ml_flags = METH_FASTCALL | METH_KEYWORDS
_buffer_put_def.ml_doc = (
    "put($self, ctx, *values)\n--\n\n"
    "Append ``values`` in order; waits for room only in a full bounded buffer."
)
_install(Buffer, &_buffer_put_def)


cdef object _consumer_get(object self, PyObject** args, Py_ssize_t nargs, PyObject* kwnames):
    """BufferConsumer.get(ctx=None)."""
    cdef Py_ssize_t n = nargs
    if kwnames != NULL and PyTuple_GET_SIZE(<object>kwnames):
        if nargs or <object>kwnames != ("ctx",):
            raise TypeError("get() takes one argument, ctx")
        n = 1
    if n > 1:
        raise TypeError(f"get() takes at most 1 argument ({n} given)")
    return (<BufferConsumer>self)._get(_optional_context("ctx", <object>args[0] if n else None))


cdef PyMethodDef _consumer_get_def
_consumer_get_def.ml_name = "get"
_consumer_get_def.ml_meth = <void*>_consumer_get
_consumer_get_def.ml_flags = METH_FASTCALL | METH_KEYWORDS
_consumer_get_def.ml_doc = (
    "get($self, ctx=None)\n--\n\n"
    "The next message, blocking until one is put, ``ctx`` ends or a close."
)
_install(BufferConsumer, &_consumer_get_def)
