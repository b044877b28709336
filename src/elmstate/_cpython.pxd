# cython: language_level=3
"""CPython's C API where Cython has no declaration for it, and the two helpers
built on it: a vectorcall with one argument, and installing a method given as a
``PyMethodDef``. Declarations and inline functions only: nothing to link.
"""

from cpython.object cimport PyObject, PyTypeObject


cdef extern from "Python.h":
    object PyObject_Vectorcall(object callable, PyObject** args, size_t nargsf, PyObject* kwnames)
    size_t PY_VECTORCALL_ARGUMENTS_OFFSET

    # A type's GC slots, to wrap the ones Cython generates.
    ctypedef int (*_visitproc "visitproc")(PyObject*, void*)
    ctypedef int (*_traverseproc "traverseproc")(PyObject*, _visitproc, void*)
    ctypedef int (*_inquiry "inquiry")(PyObject*)
    ctypedef struct _GCSlots "PyTypeObject":
        _traverseproc tp_traverse
        _inquiry tp_clear

    ctypedef struct PyMethodDef:
        const char* ml_name
        void* ml_meth
        int ml_flags
        const char* ml_doc
    int METH_FASTCALL
    int METH_KEYWORDS
    object PyDescr_NewMethod(PyTypeObject* type, PyMethodDef* method)
    void PyType_Modified(PyTypeObject* type)


cdef inline object _call1(object fn, object arg):
    """``fn(arg)`` by vectorcall, with none of the generic call's checks: the tick's calls."""
    cdef PyObject* args[2]
    args[0] = NULL  # the slot ARGUMENTS_OFFSET lets a bound method borrow for its self
    args[1] = <PyObject*>arg
    return PyObject_Vectorcall(fn, &args[1], 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL)


cdef inline int _install(object cls, PyMethodDef* method) except -1:
    """Set ``cls.<method.ml_name>`` to ``method``, a C function with its own calling convention."""
    (<dict>(<PyTypeObject*>cls).tp_dict)[method.ml_name.decode()] = PyDescr_NewMethod(
        <PyTypeObject*>cls, method
    )
    PyType_Modified(<PyTypeObject*>cls)
    return 0
