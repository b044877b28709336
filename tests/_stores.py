"""Every store the suite runs against, opened the same way.

``open_store(kind, where)`` opens a fresh, empty store of one kind; ``reopen``
gives another store on the same data (another connection, as another process
would have). ``where`` is a test's tmp_path: SQLite keeps its file there, and
the PostgreSQL table and Redis key prefix are named after it, so each test has
its own (dropped or deleted when ``open_store`` leaves).

PostgreSQL and Redis are this machine's real servers (``ELMSTATE_TEST_POSTGRES``,
a libpq connection string, and ``ELMSTATE_TEST_REDIS``, a URL, point elsewhere).
A test that needs one that cannot be reached skips, with the reason, except
under CI (``CI=true``), where it fails: CI starts both servers, so a skip
there would hide a broken setup. ``ELMSTATE_TEST_SERVERS=required`` or
``optional`` overrides that choice (the wheel builders set ``optional``).
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import elmstate

KINDS = ("memory", "sqlite", "postgres", "redis")  # every store
SHARED_KINDS = ("sqlite", "postgres", "redis")  # stores that several processes can share
SERVER_KINDS = ("postgres", "redis")  # stores on a server, reached over a connection

POSTGRES = os.environ.get(
    "ELMSTATE_TEST_POSTGRES", "host=127.0.0.1 port=5432 dbname=test user=postgres"
)
REDIS = os.environ.get("ELMSTATE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def servers_required() -> bool:
    """Whether an unreachable server fails a test (CI) rather than skipping it."""
    choice = os.environ.get("ELMSTATE_TEST_SERVERS", "").strip().lower()
    if choice in ("required", "optional"):
        return choice == "required"
    if choice:
        raise ValueError(f"ELMSTATE_TEST_SERVERS must be 'required' or 'optional', not {choice!r}")
    return os.environ.get("CI", "").strip().lower() == "true"


@cache
def _unreachable(kind: str) -> str | None:
    """Why the server for ``kind`` cannot be used, or None when it can (asked once)."""
    try:
        if kind == "postgres":
            import psycopg

            psycopg.connect(POSTGRES, connect_timeout=5).close()
        elif kind == "redis":
            import redis

            with redis.Redis.from_url(REDIS, socket_connect_timeout=5) as client:
                client.ping()
    except ImportError as exc:
        return f"the {kind} client is not installed ({exc})"
    except Exception as exc:
        return f"{kind} server not reachable: {type(exc).__name__}: {exc}"
    return None


def require(kind: str) -> None:
    """Skip the calling test (fail it under CI) if ``kind``'s server is unreachable."""
    if kind not in SERVER_KINDS:
        return
    reason = _unreachable(kind)
    if reason is not None:
        if servers_required():
            pytest.fail(f"{reason} (servers are required here: CI=true or ELMSTATE_TEST_SERVERS)")
        pytest.skip(reason)


def tag(where: Path) -> str:
    """A short name unique to ``where``: the table, key prefix and connection
    names of the stores opened on it."""
    return hashlib.sha1(str(where).encode()).hexdigest()[:12]


def table(where: Path) -> str:
    return f"elmstate_test_{tag(where)}"


def prefix(where: Path) -> str:
    return f"elmstate-test:{tag(where)}:"


def connection_name(where: Path) -> str:
    """The PostgreSQL application_name and Redis client name of the stores on ``where``."""
    return f"elmstate-test-{tag(where)}"


def postgres_conninfo(where: Path) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(POSTGRES, application_name=connection_name(where))


def redis_url(where: Path) -> str:
    joiner = "&" if "?" in REDIS else "?"
    return f"{REDIS}{joiner}client_name={connection_name(where)}"


@contextmanager
def open_store(kind: str, where: Path) -> Iterator[Any]:
    """A new, empty store of ``kind``, closed afterwards (its data then removed)."""
    if kind == "memory":
        with elmstate.MemoryStore() as store:
            yield store
    elif kind == "sqlite":
        with elmstate.SQLiteStore(where / "snapshots.sqlite3") as store:
            yield store
    elif kind in SERVER_KINDS:
        require(kind)
        drop(kind, where)  # left over by an earlier run that died
        try:
            with reopen(kind, where) as store:
                yield store
        finally:
            drop(kind, where)
    else:
        raise ValueError(f"unknown store kind {kind!r}")


def reopen(kind: str, where: Path) -> Any:
    """Another store on the data of ``open_store(kind, where)`` (a shared kind only);
    the caller closes it. Takes only picklable arguments: a child process calls it."""
    if kind == "sqlite":
        return elmstate.SQLiteStore(where / "snapshots.sqlite3")
    if kind == "postgres":
        from elmstate.stores.postgres import PostgresStore

        return PostgresStore(postgres_conninfo(where), table=table(where))
    if kind == "redis":
        from elmstate.stores.redis import RedisStore

        return RedisStore(redis_url(where), prefix=prefix(where))
    raise ValueError(f"{kind!r} stores cannot be shared between processes")


@contextmanager
def postgres_admin() -> Iterator[Any]:
    """A connection of the test's own (autocommit), beside any store's."""
    import psycopg

    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        yield conn


@contextmanager
def redis_admin() -> Iterator[Any]:
    """A client of the test's own, beside any store's."""
    import redis

    with redis.Redis.from_url(REDIS) as client:
        yield client


def drop(kind: str, where: Path) -> None:
    """Remove what stores of ``kind`` opened on ``where`` keep on the server."""
    if kind == "postgres":
        from psycopg import sql

        with postgres_admin() as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table(where))))
    elif kind == "redis":
        with redis_admin() as client:
            keys = list(client.scan_iter(match=prefix(where).encode() + b"*", count=1000))
            if keys:
                client.delete(*keys)


def connections(kind: str, where: Path) -> list[int]:
    """The server-side ids of the open connections of the stores on ``where``:
    PostgreSQL backend pids, Redis client ids."""
    name = connection_name(where)
    if kind == "postgres":
        with postgres_admin() as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (name,)
            ).fetchall()
        return [row[0] for row in rows]
    if kind == "redis":
        with redis_admin() as client:
            return [int(c["id"]) for c in client.client_list() if c.get("name") == name]
    raise ValueError(f"{kind!r} stores have no server connection")


def kill_connections(kind: str, where: Path) -> int:
    """Kill, from an admin connection, every connection of the stores on ``where``
    (``pg_terminate_backend``, ``CLIENT KILL``); returns how many."""
    ids = connections(kind, where)
    if kind == "postgres":
        with postgres_admin() as conn:
            for pid in ids:
                # Waits (up to 5 s) until the backend has exited, so the next
                # statement of the store surely finds its connection gone.
                conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
    else:
        with redis_admin() as client:
            for client_id in ids:
                client.client_kill_filter(_id=str(client_id))
    return len(ids)


class LosingProxy:
    """A TCP proxy to Redis that can lose a reply: once ``lose_next`` is set, it
    forwards the next EVALSHA to the server, lets it run, then closes the
    connection without passing the reply on (a network failure at the worst
    moment: the write landed, the client cannot know)."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.lose_next = threading.Event()
        self.swallow = threading.Event()
        self.lost = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        try:
            while data := source.recv(65536):
                if requests and b"EVALSHA" in data.upper() and self.lose_next.is_set():
                    self.lose_next.clear()
                    self.swallow.set()  # the reply to this request is lost
                elif not requests and self.swallow.is_set():
                    self.swallow.clear()
                    self.lost += 1
                    break  # the server ran the script and replied: close instead
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            _hang_up(sock)

    def close(self) -> None:
        for sock in self.sockets:
            _hang_up(sock)


def _hang_up(sock: socket.socket) -> None:
    # shutdown() first: it sends the FIN at once and wakes the other pump's recv
    # (a bare close() from another thread does neither while a recv is blocked).
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # never connected, or already shut down
    sock.close()
