"""elmstate: the Elm architecture (model, update, view, commands) for event-driven Python.

Three run modes share one tick loop: :func:`run` loops forever, :func:`batch`
runs until its input is exhausted and drained, :func:`aggregate` is a batch whose
model is loaded from and saved to a key-value store. The hot path is compiled
(Cython) when available; ``elmstate.compiled`` tells which core is live.
"""

# Submodules, imported here so that each core generation binds its own.
from . import metrics, trace, views
from . import typing as _typing
from ._aggregate import aggregate
from ._backend import compiled, core
from ._cleaners import CleanerNotification, default_cleaner, fixed_buffer_cleaner
from ._errors import Canceled, Closed, Conflict, DeadlineExceeded, Lagged, NothingUncommitted
from ._messages import Dropped
from ._program import Program
from ._supervise import supervise
from .commands import attempt, new_command, pages, tag
from .stores import MemoryStore, SQLiteStore

Context = core.Context
Buffer = core.Buffer
BufferConsumer = core.BufferConsumer
run = core.run
batch = core.batch

# elmstate.typing's annotations name Context, which it cannot import (the core
# imports it): it gets the live core's class here, for typing.get_type_hints.
setattr(_typing, "Context", Context)  # noqa: B010 (mypy: a class is no variable)

__version__ = "0.1.0"

__all__ = [
    "Buffer",
    "BufferConsumer",
    "Canceled",
    "CleanerNotification",
    "Closed",
    "Conflict",
    "Context",
    "DeadlineExceeded",
    "Dropped",
    "Lagged",
    "MemoryStore",
    "NothingUncommitted",
    "Program",
    "SQLiteStore",
    "aggregate",
    "attempt",
    "batch",
    "compiled",
    "default_cleaner",
    "fixed_buffer_cleaner",
    "metrics",
    "new_command",
    "pages",
    "run",
    "supervise",
    "tag",
    "trace",
    "views",
]
