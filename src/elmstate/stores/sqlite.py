"""The embedded, durable default store: one SQLite table, WAL mode, stdlib only."""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any

from .. import _validate as check
from ._keys import key_value

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS elmstate_snapshots (key TEXT PRIMARY KEY, value BLOB NOT NULL)"
)


class SQLiteStore:
    """Snapshots in an SQLite file that survive a process restart.

    One connection serves every thread, behind a lock: SQLite serialises writers
    anyway, and a single connection keeps ``store`` durable on return (each call
    is its own transaction). Several processes may share the file (WAL mode).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(_SCHEMA)

    def load(self, ctx: Any, key: str) -> bytes | None:
        """The value at ``key``, or ``None`` when absent."""
        check.key_arg("key", key)
        with self._lock:
            row = (
                self._connection()
                .execute("SELECT value FROM elmstate_snapshots WHERE key = ?", (key,))
                .fetchone()
            )
        return None if row is None else bytes(row[0])

    def store(self, ctx: Any, key: str, value: bytes) -> None:
        """Set ``key`` to ``value``, durably, in one transaction."""
        value = key_value(key, value)
        with self._lock:
            self._connection().execute(
                "INSERT INTO elmstate_snapshots (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def close(self) -> None:
        """Close the connection; idempotent. Later loads and stores raise ``ValueError``."""
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
