"""The embedded, durable default store: one SQLite table, WAL mode, stdlib only."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from .. import _validate as check
from .._errors import Conflict
from ._keys import items_arg, key_value, keys_arg, version_arg

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

T = TypeVar("T")

_TABLE = "elmstate_snapshots"
_BUSY_SECONDS = 30.0  # how long a call waits for another writer before it raises
_MAX_VERSION = 2**63 - 1  # SQLite's INTEGER
_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {_TABLE} "
    "(key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL DEFAULT 1)"
)
# Each write is one statement, so SQLite's own write lock makes it atomic across
# threads and processes: no read-then-write window for another writer to slip into.
_STORE = (
    f"INSERT INTO {_TABLE} (key, value, version) VALUES (?, ?, 1) "
    "ON CONFLICT(key) DO UPDATE SET value = excluded.value, version = version + 1"
)
_INSERT_NEW = (
    f"INSERT INTO {_TABLE} (key, value, version) VALUES (?, ?, 1) ON CONFLICT(key) DO NOTHING"
)
_UPDATE_IF = f"UPDATE {_TABLE} SET value = ?, version = version + 1 WHERE key = ? AND version = ?"
_LOAD = f"SELECT value, version FROM {_TABLE} WHERE key = ?"
_LOAD_MANY_HEAD = f"SELECT key, value, version FROM {_TABLE} WHERE key IN ("
_VERSION = f"SELECT version FROM {_TABLE} WHERE key = ?"
# load_many_versioned reads this many keys per statement (SQLite limits the
# parameters of one statement: 999 before 3.32, 32766 since).
_LOAD_CHUNK = 500


class SQLiteStore:
    """Snapshots in an SQLite file that survive a process restart.

    One connection serves every thread, behind a lock: SQLite serialises writers
    anyway, and a single connection keeps ``store`` durable on return (each call
    is its own transaction). Several processes may share the file (WAL mode).
    ``durable=True`` (the default) syncs every write (``synchronous=FULL``), so a
    returned ``store`` also survives an operating-system crash or power loss;
    ``durable=False`` (``synchronous=NORMAL``) survives a crash of the process only.
    """

    def __init__(self, path: str | os.PathLike[str], *, durable: bool = True) -> None:
        _open_args(path, durable)
        self._lock = threading.Lock()
        conn = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=_BUSY_SECONDS
        )
        try:
            _wal(conn, deadline=time.monotonic() + _BUSY_SECONDS)
            conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            _create_or_upgrade(conn)
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn

    def load(self, ctx: Any, key: str) -> bytes | None:
        """The value at ``key``, or ``None`` when absent."""
        return self.load_versioned(ctx, key)[0]

    def store(self, ctx: Any, key: str, value: bytes) -> None:
        """Set ``key`` to ``value`` (last writer wins), durably, in one transaction;
        bumps its version."""
        value = key_value(key, value)
        with self._lock:
            self._connection().execute(_STORE, (key, value))

    def load_versioned(self, ctx: Any, key: str) -> tuple[bytes | None, int]:
        """The value at ``key`` and its version: ``(None, 0)`` when absent."""
        check.key_arg("key", key)
        with self._lock:
            row = self._connection().execute(_LOAD, (key,)).fetchone()
        return (None, 0) if row is None else (bytes(row[0]), row[1])

    def store_versioned(self, ctx: Any, key: str, value: bytes, version: int) -> int:
        """Set ``key`` to ``value`` if its version is still ``version``; returns the new one.

        Raises :class:`~elmstate.Conflict`, storing nothing, if it is not.
        """
        value = key_value(key, value)
        version = version_arg(version)
        with self._lock:
            conn = self._connection()
            if version > _MAX_VERSION:  # no row can have it (and SQLite cannot bind it)
                written = 0
            elif version == 0:
                written = conn.execute(_INSERT_NEW, (key, value)).rowcount
            else:
                written = conn.execute(_UPDATE_IF, (value, key, version)).rowcount
            if written == 1:
                return version + 1
            row = conn.execute(_VERSION, (key,)).fetchone()
        raise Conflict(key, version, 0 if row is None else row[0])

    def load_many_versioned(self, ctx: Any, keys: Any) -> list[tuple[bytes | None, int]]:
        """The value and version of each of ``keys``, in their order, read in one
        transaction (one snapshot of the file)."""
        given = keys_arg(keys)
        found: dict[str, tuple[bytes | None, int]] = {}
        with self._lock:
            conn = self._connection()
            if not given:
                return []
            with _transaction(conn, "BEGIN"):
                for start in range(0, len(given), _LOAD_CHUNK):
                    chunk = given[start : start + _LOAD_CHUNK]
                    query = _LOAD_MANY_HEAD + ", ".join("?" * len(chunk)) + ")"
                    for key, value, version in conn.execute(query, chunk):
                        found[key] = (bytes(value), version)
        return [found.get(key, (None, 0)) for key in given]

    def store_many_versioned(self, ctx: Any, items: Any) -> list[int]:
        """Set every ``(key, value, version)`` of ``items`` if every key is still at
        its ``version``; returns the new versions, in order. One transaction
        (``BEGIN IMMEDIATE``), durable on return as ``store`` is.

        Raises :class:`~elmstate.Conflict` for the first item whose version differs,
        storing nothing at all.
        """
        keys, values, versions = items_arg(items)
        with self._lock:
            conn = self._connection()
            if not keys:
                return []
            # The write lock is taken first, so no other writer runs until COMMIT:
            # the first item that writes no row is the first whose version differs.
            with _transaction(conn, "BEGIN IMMEDIATE"):
                for key, value, version in zip(keys, values, versions):
                    if version > _MAX_VERSION:
                        written = 0
                    elif version == 0:
                        written = conn.execute(_INSERT_NEW, (key, value)).rowcount
                    else:
                        written = conn.execute(_UPDATE_IF, (value, key, version)).rowcount
                    if written != 1:
                        row = conn.execute(_VERSION, (key,)).fetchone()
                        raise Conflict(key, version, 0 if row is None else row[0])
        return [version + 1 for version in versions]

    def close(self) -> None:
        """Close the connection; idempotent. Later calls raise ``ValueError``."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError("the SQLiteStore is closed")
        return self._conn


check.register(check.STORES, SQLiteStore)


class AsyncSQLiteStore:
    """A :class:`~elmstate.SQLiteStore` for asyncio: the same file format, arguments and
    rules, with coroutine methods.

    Every call runs on a thread of the store's own, one call after another in
    the order they were made, so the event loop never waits for the disk or for
    another process's write lock. The file is opened there on the first call,
    or on entering ``async with`` (so that a bad path fails there); the
    constructor only checks its arguments. A call cancelled before its turn
    does nothing; one already running finishes (its write may land).
    """

    def __init__(self, path: str | os.PathLike[str], *, durable: bool = True) -> None:
        _open_args(path, durable)
        from concurrent.futures import ThreadPoolExecutor

        self._path = path
        self._durable = durable
        self._store: SQLiteStore | None = None  # opened and used on the worker thread only
        # One thread: calls keep their order, and close() comes after every call before it.
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            1, thread_name_prefix="elmstate-sqlite"
        )

    async def load(self, ctx: Any, key: str) -> bytes | None:
        """The value at ``key``, or ``None`` when absent."""
        return await self._call(SQLiteStore.load, ctx, key)

    async def store(self, ctx: Any, key: str, value: bytes) -> None:
        """Set ``key`` to ``value`` (last writer wins), durably, in one transaction;
        bumps its version."""
        await self._call(SQLiteStore.store, ctx, key, value)

    async def load_versioned(self, ctx: Any, key: str) -> tuple[bytes | None, int]:
        """The value at ``key`` and its version: ``(None, 0)`` when absent."""
        return await self._call(SQLiteStore.load_versioned, ctx, key)

    async def store_versioned(self, ctx: Any, key: str, value: bytes, version: int) -> int:
        """Set ``key`` to ``value`` if its version is still ``version``; returns the new one.

        Raises :class:`~elmstate.Conflict`, storing nothing, if it is not.
        """
        return await self._call(SQLiteStore.store_versioned, ctx, key, value, version)

    async def load_many_versioned(self, ctx: Any, keys: Any) -> list[tuple[bytes | None, int]]:
        """The value and version of each of ``keys``, in their order, read in one
        transaction (one snapshot of the file)."""
        return await self._call(SQLiteStore.load_many_versioned, ctx, keys)

    async def store_many_versioned(self, ctx: Any, items: Any) -> list[int]:
        """Set every ``(key, value, version)`` of ``items`` if every key is still at
        its ``version``; returns the new versions, in order. One transaction, as
        :meth:`~elmstate.SQLiteStore.store_many_versioned`.

        Raises :class:`~elmstate.Conflict` for the first item whose version differs,
        storing nothing at all.
        """
        return await self._call(SQLiteStore.store_many_versioned, ctx, items)

    async def close(self) -> None:
        """Close the file once the calls made before have run; idempotent. Later
        calls raise ``ValueError``. Cancelling the wait does not stop the closing."""
        import asyncio

        executor, self._executor = self._executor, None
        if executor is None:
            return
        closing = asyncio.get_running_loop().run_in_executor(executor, self._close_store)
        executor.shutdown(wait=False)  # its thread ends once the queue is done
        await asyncio.shield(closing)

    aclose = close  # the name contextlib.aclosing() calls

    async def __aenter__(self) -> AsyncSQLiteStore:
        await self._call(_opened)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _call(self, method: Callable[..., T], *args: Any) -> T:
        """``method(store, *args)`` on the store's thread, the file opened first."""
        import asyncio

        executor = self._executor
        if executor is None:
            raise ValueError("the AsyncSQLiteStore is closed")
        return await asyncio.get_running_loop().run_in_executor(executor, self._run, method, args)

    def _run(self, method: Callable[..., T], args: tuple[Any, ...]) -> T:
        store = self._store
        if store is None:
            store = self._store = SQLiteStore(self._path, durable=self._durable)
        return method(store, *args)

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            store.close()


def _open_args(path: Any, durable: Any) -> None:
    """The checks of both stores' constructors."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    if not isinstance(durable, bool):
        raise TypeError(f"durable must be a bool, got {type(durable).__name__}")


def _opened(store: SQLiteStore) -> None:
    """A call that does nothing but open the file (``async with`` makes it)."""


@contextmanager
def _transaction(conn: sqlite3.Connection, begin: str) -> Iterator[None]:
    """One transaction: committed when the block ends, rolled back when it raises
    (or when its COMMIT fails)."""
    conn.execute(begin)
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _wal(conn: sqlite3.Connection, deadline: float) -> None:
    """Put the file in WAL mode. Switching needs the file to itself, and SQLite
    does not wait for that (the busy timeout does not apply): several processes
    opening a new file at once would fail at once, so retry until ``deadline``."""
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.005)


def _create_or_upgrade(conn: sqlite3.Connection) -> None:
    """Create the table, or give one written by elmstate 0.1 its version column
    (each present key starts at version 1). One write transaction, so two
    processes opening an old file at once cannot both alter it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_SCHEMA)
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({_TABLE})")}
        if "version" not in columns:
            conn.execute(f"ALTER TABLE {_TABLE} ADD COLUMN version INTEGER NOT NULL DEFAULT 1")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
