"""Snapshots in a PostgreSQL table, through psycopg 3.

Needs the ``postgres`` extra: ``pip install "elmstate[postgres]"``. Neither
``elmstate`` nor ``elmstate.stores`` imports this module: import it yourself.
"""

from __future__ import annotations

import asyncio
import threading
import zlib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, ClassVar

try:
    import psycopg
    from psycopg import sql
    from psycopg.abc import AdaptContext
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
except ImportError as exc:
    raise ImportError(
        'elmstate.stores.postgres needs psycopg 3: pip install "elmstate[postgres]"',
        name=exc.name,
    ) from exc

try:
    from psycopg_pool import AsyncConnectionPool, ConnectionPool
except ImportError:  # without the pool package only a connection string can be given
    ConnectionPool = None  # type: ignore[assignment,misc]
    AsyncConnectionPool = None  # type: ignore[assignment,misc]

from .. import _validate as check
from .._errors import Conflict
from ._keys import items_arg, key_value, keys_arg, version_arg
from ._secrets import redacted

__all__ = ["AsyncPostgresStore", "PostgresStore"]

DEFAULT_TABLE = "elmstate_snapshots"
# Set on connections the store opens (unless the conninfo names one), so that an
# operator can tell its backends apart in pg_stat_activity.
APPLICATION_NAME = "elmstate"
_MAX_IDENTIFIER = 63  # NAMEDATALEN - 1: PostgreSQL silently truncates longer names
# The first key of the advisory lock that serialises CREATE TABLE between stores
# opening at once (two concurrent CREATE TABLE IF NOT EXISTS can both try to
# create, and one fails); the second is the table name's CRC.
_LOCK_SPACE = 0x656C6D73  # "elms"
_MAX_VERSION = 2**63 - 1  # bigint
_CREATE_LOCK = "SELECT pg_advisory_xact_lock(%s, %s)"

Row = Sequence[Any]


class _Statements:
    """The store's statements, rendered once for its table (quoted as an identifier)."""

    def __init__(self, table: str, conn: AdaptContext) -> None:
        def render(text: str) -> bytes:
            return sql.SQL(text).format(t=sql.Identifier(table)).as_bytes(conn)

        self.create = render(
            "CREATE TABLE IF NOT EXISTS {t} "
            "(key text PRIMARY KEY, value bytea NOT NULL, version bigint NOT NULL)"
        )
        self.load = render("SELECT value, version FROM {t} WHERE key = %s")
        self.version = render("SELECT version FROM {t} WHERE key = %s")
        # Each write is one statement, so PostgreSQL's row locks make it atomic:
        # there is no read-then-write window for another writer to slip into.
        self.store = render(
            "INSERT INTO {t} AS old (key, value, version) VALUES (%s, %s, 1) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = old.version + 1"
        )
        self.insert_new = render(
            "INSERT INTO {t} (key, value, version) VALUES (%s, %s, 1) ON CONFLICT (key) DO NOTHING"
        )
        self.update_if = render(
            "UPDATE {t} SET value = %s, version = version + 1 WHERE key = %s AND version = %s"
        )
        self.load_many = render("SELECT key, value, version FROM {t} WHERE key = ANY(%s::text[])")
        self.versions = render("SELECT key, version FROM {t} WHERE key = ANY(%s::text[])")
        # store_many_versioned: one statement over three arrays. An item at version
        # 0 is inserted; an item at version v > 0 takes the ON CONFLICT path, which
        # rewrites the row only if it is still at v. An item at v > 0 whose row is
        # absent is left out by the WHERE (rows are never deleted, so a row this
        # statement's snapshot lacks was absent when the caller loaded it too): it
        # writes no row. So the statement writes as many rows as there are items
        # exactly when every version matched; otherwise the transaction is rolled
        # back. Rows are taken in key order, so that two writers of overlapping
        # keys wait for each other instead of deadlocking.
        self.store_many = render(
            "INSERT INTO {t} AS old (key, value, version) "
            "SELECT new.key, new.value, new.version + 1 "
            "FROM unnest(%b::text[], %b::bytea[], %b::bigint[]) AS new (key, value, version) "
            "WHERE new.version = 0 OR EXISTS (SELECT FROM {t} WHERE key = new.key) "
            "ORDER BY new.key "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version "
            "WHERE old.version = EXCLUDED.version - 1"
        )

    def compare_and_set(
        self, key: str, value: bytes, version: int
    ) -> tuple[bytes, tuple[Any, ...]]:
        """store_versioned's one statement and its parameters."""
        if version == 0:
            return self.insert_new, (key, value)
        return self.update_if, (value, key, version)


class _Common:
    """What the synchronous and the asynchronous store share: their arguments,
    their repr and the connection string (no I/O here)."""

    _name: ClassVar[str]  # the class's name, for the repr and errors
    _pool_name: ClassVar[str]  # the pool class it takes

    def _setup(self, conninfo_or_pool: Any, table: str, pool_type: type | None) -> Any:
        """Check the arguments; returns the caller's pool, or None for a conninfo."""
        _table_arg(table)
        self._table = table
        self._closed = False
        self._password: str | None = None
        self._conninfo = ""
        if isinstance(conninfo_or_pool, str):
            self._conninfo = self._owned_conninfo(conninfo_or_pool)
            return None
        if pool_type is not None and isinstance(conninfo_or_pool, pool_type):
            return conninfo_or_pool
        raise TypeError(
            f"conninfo_or_pool must be a connection string or a psycopg_pool.{self._pool_name},"
            f" got {type(conninfo_or_pool).__name__}"
        )

    def __repr__(self) -> str:
        # Never the conninfo itself: it may hold a password.
        pool = getattr(self, "_pool", None)
        if pool is not None:
            where = f" pool={pool.name!r}"
        else:
            params = conninfo_to_dict(self._conninfo)
            where = "".join(
                f" {name}={params[name]}" for name in ("host", "port", "dbname") if name in params
            )
        state = " closed" if self._closed else ""
        return f"<elmstate.stores.postgres.{self._name} table={self._table!r}{where}{state}>"

    def _closed_error(self) -> ValueError:
        return ValueError(f"the {self._name} is closed")

    def _owned_conninfo(self, conninfo: str) -> str:
        try:
            params: dict[str, Any] | None = conninfo_to_dict(conninfo)
        except psycopg.Error:  # libpq's message may quote the string, password included
            params = None
        if params is None:
            raise ValueError(
                "conninfo_or_pool is not a valid libpq connection string or URI "
                "(the parser's message is not shown: it may quote a password)"
            )
        self._password = params.get("password") or None
        if "application_name" not in params:
            conninfo = make_conninfo(conninfo, application_name=APPLICATION_NAME)
        return conninfo


class PostgresStore(_Common):
    """Snapshots in a PostgreSQL table: ``key text``, ``value bytea``, ``version bigint``.

    ``conninfo_or_pool`` is either a libpq connection string or URI, or a
    ``psycopg_pool.ConnectionPool``. Given a string, the store owns its
    connection: one, opened at once, shared by every thread behind a lock, in
    autocommit mode (each call is its own transaction, committed when it
    returns), and opened again on the call after it was lost; ``close()``
    closes it. Given a pool, every call borrows a connection from it for one
    transaction (so threads work in parallel), and the pool stays the
    caller's: ``close()`` never closes it.

    The table (``table``, quoted as an identifier) is created if missing. The
    store ignores ``ctx``: a call is not cut short when the context ends.
    """

    _name, _pool_name = "PostgresStore", "ConnectionPool"

    def __init__(self, conninfo_or_pool: Any, *, table: str = DEFAULT_TABLE) -> None:
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._pool: ConnectionPool[Any] | None = self._setup(
            conninfo_or_pool, table, ConnectionPool
        )
        try:
            with self._connection() as conn:
                self._sql = _Statements(table, conn)
                with conn.transaction():
                    conn.execute(_CREATE_LOCK, _create_lock(table))
                    conn.execute(self._sql.create)
        except BaseException:
            self.close()
            raise

    def load(self, ctx: Any, key: str) -> bytes | None:
        """The value at ``key``, or ``None`` when absent."""
        return self.load_versioned(ctx, key)[0]

    def store(self, ctx: Any, key: str, value: bytes) -> None:
        """Set ``key`` to ``value`` (last writer wins), committed on return; bumps its version."""
        value = _store_args(key, value)
        while True:
            try:
                with self._connection() as conn:
                    conn.execute(self._sql.store, (key, value))
                return
            except psycopg.errors.SerializationFailure:
                continue  # nothing was written, and another writer was: the last one wins

    def load_versioned(self, ctx: Any, key: str) -> tuple[bytes | None, int]:
        """The value at ``key`` and its version: ``(None, 0)`` when absent."""
        _load_args(key)
        with self._connection() as conn:
            row = conn.execute(self._sql.load, (key,), binary=True).fetchone()
        return _loaded(row)

    def store_versioned(self, ctx: Any, key: str, value: bytes, version: int) -> int:
        """Set ``key`` to ``value`` if its version is still ``version``; returns the new one.

        One statement: an ``INSERT … ON CONFLICT DO NOTHING`` for version 0, an
        ``UPDATE … WHERE version = %s`` otherwise. Raises
        :class:`~elmstate.Conflict`, storing nothing, when it writes no row.
        """
        value, version = _versioned_args(key, value, version)
        try:
            with self._connection() as conn:
                written = conn.execute(*self._sql.compare_and_set(key, value, version)).rowcount
                if written == 1:
                    return version + 1
                # A separate statement: under READ COMMITTED (the default) a fresh
                # snapshot, which sees the write that won.
                row = conn.execute(self._sql.version, (key,)).fetchone()
        except psycopg.errors.SerializationFailure:
            # Under REPEATABLE READ or SERIALIZABLE (a pool's configure, a role's
            # default_transaction_isolation) a concurrent write fails the statement
            # instead: nothing was written, so it is a conflict like any other.
            with self._connection() as conn:
                row = conn.execute(self._sql.version, (key,)).fetchone()
        raise _conflict(key, version, row)

    def load_many_versioned(self, ctx: Any, keys: Any) -> list[tuple[bytes | None, int]]:
        """The value and version of each of ``keys``, in their order: one statement,
        so one snapshot."""
        given = _many_keys(keys)
        with self._connection() as conn:
            if not given:
                return []
            rows = conn.execute(self._sql.load_many, (given,), binary=True).fetchall()
        return _loaded_many(given, rows)

    def store_many_versioned(self, ctx: Any, items: Any) -> list[int]:
        """Set every ``(key, value, version)`` of ``items`` if every key is still at
        its ``version``; returns the new versions, in order. One statement in one
        transaction.

        Raises :class:`~elmstate.Conflict` for the first item whose version differs,
        storing nothing at all.
        """
        keys, values, versions = _many_items(items)
        while True:
            with self._connection() as conn:
                if not keys:
                    return []
                # A version no row can have (bigint's last one included: its
                # successor would overflow) is a conflict: nothing to try.
                if max(versions) < _MAX_VERSION and self._store_many(conn, keys, values, versions):
                    return [version + 1 for version in versions]
                # A separate statement: under READ COMMITTED (the default) a fresh
                # snapshot, which sees the writes that won.
                rows = conn.execute(self._sql.versions, (keys,)).fetchall()
            _raise_first_conflict(keys, versions, rows)
            # Every version matches now, yet the write did not: a serialisation
            # failure or deadlock without a conflict. Nothing was written: again.

    def _store_many(
        self,
        conn: psycopg.Connection[Any],
        keys: list[str],
        values: list[bytes],
        versions: list[int],
    ) -> bool:
        """Whether the items were written (else nothing was)."""
        try:
            with conn.transaction() as tx:
                written = conn.execute(self._sql.store_many, (keys, values, versions)).rowcount
                if written == len(keys):
                    return True
                raise psycopg.Rollback(tx)
        except _NOT_SERIALIZED:
            # Under REPEATABLE READ or SERIALIZABLE a concurrent write fails the
            # statement (SQLSTATE 40001) instead; rolled back, nothing was written.
            pass
        return False

    def close(self) -> None:
        """Close the store's own connection (never a caller's pool); idempotent.
        Later calls raise ``ValueError``."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        if self._pool is not None:
            if self._closed:
                raise self._closed_error()
            # The pool commits on leaving the block (rolls back on an error) and
            # replaces a connection that it finds broken.
            with self._pool.connection() as conn:
                yield conn
            return
        with self._lock:
            if self._closed:
                raise self._closed_error()
            conn = self._conn
            if conn is None or conn.closed:  # never opened, or lost on an earlier call
                conn = self._conn = self._connect()
            yield conn

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            error = redacted(exc, self._password)
            if error is exc:
                raise
        raise error  # outside the except block: the original is not chained


check.register(check.STORES, PostgresStore)


class AsyncPostgresStore(_Common):
    """A :class:`PostgresStore` for asyncio, on psycopg's ``AsyncConnection``: the
    same table, statements, arguments and rules, with coroutine methods.

    ``conninfo_or_pool`` is a libpq connection string or URI, or a
    ``psycopg_pool.AsyncConnectionPool``, which stays the caller's. The
    constructor only checks its arguments: the connection is opened, and the
    table created if missing, by the first call, or on entering ``async with``
    (so that a wrong address or password fails there). Given a string, the
    store owns one connection (autocommit), which its calls take in turn, and
    which is opened again on the call after it was lost; ``close()`` closes it.
    Given a pool, every call borrows a connection from it for one transaction,
    so calls run in parallel, and ``close()`` leaves the pool open.

    A store belongs to the event loop that first used it (a psycopg connection
    does). Cancelling a call asks the server to cancel its statement: a write
    then either committed or did not, as after a lost connection. The store
    ignores ``ctx``.
    """

    _name, _pool_name = "AsyncPostgresStore", "AsyncConnectionPool"

    def __init__(self, conninfo_or_pool: Any, *, table: str = DEFAULT_TABLE) -> None:
        self._pool: AsyncConnectionPool[Any] | None = self._setup(
            conninfo_or_pool, table, AsyncConnectionPool
        )
        self._conn: psycopg.AsyncConnection[Any] | None = None
        # Made by the first call, inside the event loop (on Python 3.9 an
        # asyncio.Lock binds to the loop current when it is made).
        self._lock: asyncio.Lock | None = None
        self._statements: _Statements | None = None  # once the table exists

    async def load(self, ctx: Any, key: str) -> bytes | None:
        """The value at ``key``, or ``None`` when absent."""
        return (await self.load_versioned(ctx, key))[0]

    async def store(self, ctx: Any, key: str, value: bytes) -> None:
        """Set ``key`` to ``value`` (last writer wins), committed on return; bumps its version."""
        value = _store_args(key, value)
        while True:
            try:
                async with self._connection() as (conn, statements):
                    await conn.execute(statements.store, (key, value))
                return
            except psycopg.errors.SerializationFailure:
                continue  # nothing was written, and another writer was: the last one wins

    async def load_versioned(self, ctx: Any, key: str) -> tuple[bytes | None, int]:
        """The value at ``key`` and its version: ``(None, 0)`` when absent."""
        _load_args(key)
        async with self._connection() as (conn, statements):
            cursor = await conn.execute(statements.load, (key,), binary=True)
            row = await cursor.fetchone()
        return _loaded(row)

    async def store_versioned(self, ctx: Any, key: str, value: bytes, version: int) -> int:
        """Set ``key`` to ``value`` if its version is still ``version``; returns the new one.

        One statement, as :meth:`PostgresStore.store_versioned`. Raises
        :class:`~elmstate.Conflict`, storing nothing, when it writes no row.
        """
        value, version = _versioned_args(key, value, version)
        try:
            async with self._connection() as (conn, statements):
                cursor = await conn.execute(*statements.compare_and_set(key, value, version))
                if cursor.rowcount == 1:
                    return version + 1
                # A fresh snapshot under READ COMMITTED: it sees the write that won.
                row = await (await conn.execute(statements.version, (key,))).fetchone()
        except psycopg.errors.SerializationFailure:
            # A stricter isolation level fails the statement instead: a conflict too.
            async with self._connection() as (conn, statements):
                row = await (await conn.execute(statements.version, (key,))).fetchone()
        raise _conflict(key, version, row)

    async def load_many_versioned(self, ctx: Any, keys: Any) -> list[tuple[bytes | None, int]]:
        """The value and version of each of ``keys``, in their order: one statement,
        so one snapshot."""
        given = _many_keys(keys)
        async with self._connection() as (conn, statements):
            if not given:
                return []
            cursor = await conn.execute(statements.load_many, (given,), binary=True)
            rows = await cursor.fetchall()
        return _loaded_many(given, rows)

    async def store_many_versioned(self, ctx: Any, items: Any) -> list[int]:
        """Set every ``(key, value, version)`` of ``items`` if every key is still at
        its ``version``; returns the new versions, in order. One statement in one
        transaction, as :meth:`PostgresStore.store_many_versioned`.

        Raises :class:`~elmstate.Conflict` for the first item whose version differs,
        storing nothing at all.
        """
        keys, values, versions = _many_items(items)
        while True:
            async with self._connection() as (conn, statements):
                if not keys:
                    return []
                if max(versions) < _MAX_VERSION and await self._store_many(
                    conn, statements, keys, values, versions
                ):
                    return [version + 1 for version in versions]
                rows = await (await conn.execute(statements.versions, (keys,))).fetchall()
            _raise_first_conflict(keys, versions, rows)
            # No conflict now, yet nothing was written (a serialisation failure or
            # a deadlock): again, as the synchronous store does.

    async def _store_many(
        self,
        conn: psycopg.AsyncConnection[Any],
        statements: _Statements,
        keys: list[str],
        values: list[bytes],
        versions: list[int],
    ) -> bool:
        """Whether the items were written (else nothing was)."""
        try:
            async with conn.transaction() as tx:
                cursor = await conn.execute(statements.store_many, (keys, values, versions))
                if cursor.rowcount == len(keys):
                    return True
                raise psycopg.Rollback(tx)
        except _NOT_SERIALIZED:
            pass
        return False

    async def close(self) -> None:
        """Close the store's own connection (never a caller's pool) once the call
        using it is done; idempotent. Later calls raise ``ValueError``."""
        async with self._turn():
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    aclose = close  # the name contextlib.aclosing() calls

    async def __aenter__(self) -> AsyncPostgresStore:
        async with self._connection():
            pass
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """The owned connection's lock (calls take it in turn); nothing for a pool."""
        if self._pool is not None:
            yield
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            yield

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[tuple[psycopg.AsyncConnection[Any], _Statements]]:
        """A connection for one call, and the statements (the table made first)."""
        if self._pool is not None:
            if self._closed:
                raise self._closed_error()
            # The pool commits on leaving the block (rolls back on an error) and
            # replaces a connection that it finds broken.
            async with self._pool.connection() as conn:
                yield conn, self._statements or await self._create(conn)
            return
        async with self._turn():
            if self._closed:
                raise self._closed_error()
            conn = self._conn
            if conn is None or conn.closed:  # never opened, or lost on an earlier call
                conn = self._conn = await self._connect()
            yield conn, self._statements or await self._create(conn)

    async def _create(self, conn: psycopg.AsyncConnection[Any]) -> _Statements:
        """Render the statements and create the table if missing (as PostgresStore does)."""
        statements = _Statements(self._table, conn)
        async with conn.transaction():
            await conn.execute(_CREATE_LOCK, _create_lock(self._table))
            await conn.execute(statements.create)
        self._statements = statements
        return statements

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        try:
            return await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            error = redacted(exc, self._password)
            if error is exc:
                raise
        raise error  # outside the except block: the original is not chained


def _table_arg(table: Any) -> None:
    if not isinstance(table, str):
        raise TypeError(f"table must be a str, got {type(table).__name__}")
    if not table or "\x00" in table or len(table.encode()) > _MAX_IDENTIFIER:
        raise ValueError(
            f"table must be a PostgreSQL name of 1 to {_MAX_IDENTIFIER} bytes "
            f"without NUL characters, got {table!r:.100}"
        )


def _text_key(key: str, name: str = "key") -> None:
    if "\x00" in key:
        raise ValueError(
            f"{name} must not contain NUL characters: PostgreSQL text cannot hold them"
        )


def _signed32(n: int) -> int:
    return n - (1 << 32) if n >= 1 << 31 else n


def _create_lock(table: str) -> tuple[int, int]:
    """The advisory lock that serialises creating ``table`` (_CREATE_LOCK's parameters)."""
    return _LOCK_SPACE, _signed32(zlib.crc32(table.encode()))


# Errors after which nothing was written, so that a write may simply be tried again.
_NOT_SERIALIZED = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)


def _store_args(key: Any, value: Any) -> bytes:
    checked = key_value(key, value)
    _text_key(key)
    return checked


def _load_args(key: Any) -> None:
    check.key_arg("key", key)
    _text_key(key)


def _versioned_args(key: Any, value: Any, version: Any) -> tuple[bytes, int]:
    checked = key_value(key, value), version_arg(version)
    _text_key(key)
    return checked


def _many_keys(keys: Any) -> list[str]:
    given = keys_arg(keys)
    for i, key in enumerate(given):
        _text_key(key, f"keys[{i}]")
    return given


def _many_items(items: Any) -> tuple[list[str], list[bytes], list[int]]:
    keys, values, versions = items_arg(items)
    for i, key in enumerate(keys):
        _text_key(key, f"items[{i}]: key")
    return keys, values, versions


def _loaded(row: Row | None) -> tuple[bytes | None, int]:
    return (None, 0) if row is None else (bytes(row[0]), int(row[1]))


def _loaded_many(keys: list[str], rows: list[Row]) -> list[tuple[bytes | None, int]]:
    found = {key: (bytes(value), int(version)) for key, value, version in rows}
    return [found.get(key, (None, 0)) for key in keys]


def _conflict(key: str, version: int, row: Row | None) -> Conflict:
    """store_versioned's Conflict, given the row of the version found."""
    return Conflict(key, version, 0 if row is None else int(row[0]))


def _raise_first_conflict(keys: list[str], versions: list[int], rows: list[Row]) -> None:
    """The Conflict of the first item whose version differs from the one found."""
    found = {key: int(version) for key, version in rows}
    for key, version in zip(keys, versions):
        if found.get(key, 0) != version:
            raise Conflict(key, version, found.get(key, 0))
