"""Contexts, buffers and consumers cannot be copied or pickled (issue 7), on both cores.

Each owns a lock, registrations and, for a context, a place in its parent's list
of children: a copy would share or steal them. A copy that was made used to
unregister its original from the parent when it was freed.
"""

from __future__ import annotations

import copy
import gc
import pickle
import sys
from types import ModuleType
from typing import Any, Callable

import pytest


def make(elm: ModuleType, kind: str) -> Any:
    if kind == "Context":
        return elm.Context()
    if kind == "child Context":
        return elm.Context(elm.Context())
    if kind == "Buffer":
        return elm.Buffer()
    buf = elm.Buffer()
    buf.put(None, 1)
    return buf.new_consumer()


@pytest.fixture(autouse=True)
def core_importable(elm: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make pickle find this core's classes under their module name, as in a normal process.

    conftest imports the package twice; without this, pickling the pure core's
    classes fails on the class lookup (PicklingError) before reaching the objects.
    """
    monkeypatch.setitem(sys.modules, elm.core.__name__, elm.core)


KINDS = ["Context", "child Context", "Buffer", "BufferConsumer"]

COPIERS: dict[str, Callable[[Any], Any]] = {
    "copy.copy": copy.copy,
    "copy.deepcopy": copy.deepcopy,
    **{
        f"pickle protocol {protocol}": lambda obj, protocol=protocol: pickle.dumps(obj, protocol)
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1)
    },
    "pickle default": pickle.dumps,
}


@pytest.mark.parametrize("how", list(COPIERS))
@pytest.mark.parametrize("kind", KINDS)
def test_copy_and_pickle_raise_type_error(elm: ModuleType, kind: str, how: str) -> None:
    """Issue 7, defect 7: copy.copy, copy.deepcopy and pickle.dumps raise TypeError."""
    obj = make(elm, kind)
    with pytest.raises(TypeError):
        COPIERS[how](obj)


@pytest.mark.parametrize("how", ["copy.copy", "copy.deepcopy", "pickle default"])
def test_a_child_whose_copy_was_attempted_still_ends_with_its_parent(
    elm: ModuleType, how: str
) -> None:
    """Issue 7, defect 7: a freed copy of a child unregistered the child from its parent."""
    parent = elm.Context()
    child = elm.Context(parent)
    try:
        result = COPIERS[how](child)
    except (TypeError, pickle.PicklingError):
        pass
    else:
        del result
    gc.collect()
    parent.cancel()
    assert child.done is True
    assert type(child.err) is elm.Canceled


@pytest.mark.parametrize("how", ["copy.copy", "copy.deepcopy"])
def test_a_consumer_whose_copy_was_attempted_still_holds_its_place(
    elm: ModuleType, how: str
) -> None:
    """Issue 7, defect 7: the original consumer keeps reading where it was after the attempt."""
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.put(None, 1, 2)
    assert consumer.get() == 1
    try:
        result = COPIERS[how](consumer)
    except TypeError:
        pass
    else:
        del result
    gc.collect()
    assert consumer.get() == 2
    consumer.commit()
    buf.put(None, 3)
    assert consumer.get(elm.Context(timeout=5)) == 3
