"""Every store the suite runs against, opened the same way.

``open_store(kind, where)`` opens a fresh, empty store of one kind; ``reopen``
gives another store on the same data (another connection, as another process
would have). ``where`` is a test's tmp_path: SQLite keeps its file there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import elmstate

KINDS = ("memory", "sqlite")  # every store
SHARED_KINDS = ("sqlite",)  # stores that several processes can share


@contextmanager
def open_store(kind: str, where: Path) -> Iterator[Any]:
    """A new, empty store of ``kind``, closed afterwards."""
    if kind == "memory":
        with elmstate.MemoryStore() as store:
            yield store
    elif kind == "sqlite":
        with elmstate.SQLiteStore(where / "snapshots.sqlite3") as store:
            yield store
    else:
        raise ValueError(f"unknown store kind {kind!r}")


def reopen(kind: str, where: Path) -> Any:
    """Another store on the data of ``open_store(kind, where)`` (a shared kind only);
    the caller closes it. Takes only picklable arguments: a child process calls it."""
    if kind == "sqlite":
        return elmstate.SQLiteStore(where / "snapshots.sqlite3")
    raise ValueError(f"{kind!r} stores cannot be shared between processes")
