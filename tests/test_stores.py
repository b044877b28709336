"""One suite for every store: MemoryStore, SQLiteStore, PostgresStore, RedisStore
(docs/stores.md, docs/contract.md#stores).

PostgreSQL and Redis are the real servers of this machine (tests/_stores.py says
how they are found, and when a test skips or fails without them). Stores do not
depend on the core, so these tests run once, not once per core.
"""

from __future__ import annotations

import logging
import socket
import sqlite3
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _helpers import InThread, wait_for
from _stores import (
    KINDS,
    SERVER_KINDS,
    LosingProxy,
    connection_name,
    connections,
    kill_connections,
    open_store,
    postgres_admin,
    postgres_conninfo,
    prefix,
    redis_admin,
    redis_url,
    reopen,
    require,
    table,
)

import elmstate

WATCHDOG = 120.0  # the 64 MiB round trips take a few seconds on a slow machine


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh, empty store of each kind."""
    with open_store(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture(params=SERVER_KINDS)
def server_kind(request: pytest.FixtureRequest) -> str:
    require(request.param)
    return str(request.param)


def _kind(store: Any) -> str:
    return {
        "MemoryStore": "memory",
        "SQLiteStore": "sqlite",
        "PostgresStore": "postgres",
        "RedisStore": "redis",
    }[type(store).__name__]


# ------------------------------------------------------------------- values


def test_absent_key(store: Any) -> None:
    assert store.load(None, "absent") is None
    assert store.load_versioned(None, "absent") == (None, 0)


def test_empty_value_is_present(store: Any) -> None:
    """b"" is a present, empty value, not an absent key (docs/contract.md#stores)."""
    store.store(None, "empty", b"")
    assert store.load(None, "empty") == b""
    assert store.load_versioned(None, "empty") == (b"", 1)
    assert store.store_versioned(None, "empty-too", b"", 0) == 1
    assert store.load_versioned(None, "empty-too") == (b"", 1)


@pytest.mark.parametrize("value", [b"v", bytearray(b"v"), memoryview(b"v")])
def test_present_value_comes_back_as_bytes(store: Any, value: Any) -> None:
    store.store(None, "k", value)
    assert type(store.load(None, "k")) is bytes and store.load(None, "k") == b"v"
    store.store_versioned(None, "k", value, 1)
    loaded, version = store.load_versioned(None, "k")
    assert type(loaded) is bytes and loaded == b"v" and version == 2


def test_binary_values_round_trip(store: Any) -> None:
    every_byte = bytes(range(256)) * 4
    store.store(None, "bytes", every_byte)
    assert store.load(None, "bytes") == every_byte
    store.store(None, "bytes", b"\x00")
    assert store.load(None, "bytes") == b"\x00"


def test_keys_are_distinct(store: Any) -> None:
    for key in ("a", "A", "a ", " a", "a:b", "a*", ""):
        store.store(None, key, key.encode() or b"<empty key>")
    for key in ("a", "A", "a ", " a", "a:b", "a*", ""):
        assert store.load(None, key) == (key.encode() or b"<empty key>")


@pytest.mark.parametrize("key", ["ключ", "鍵", "naïve café", "🙂 emoji", "e\u0301"])
def test_non_ascii_keys(store: Any, key: str) -> None:
    store.store(None, key, key.encode())
    assert store.load(None, key) == key.encode()
    assert store.load_versioned(None, key) == (key.encode(), 1)
    # "é" precomposed and "e" + combining accent are different keys: no normalisation.
    assert store.load(None, "\u00e9") is None


def test_redis_keys_are_utf8(tmp_path: Path) -> None:
    with open_store("redis", tmp_path) as store, redis_admin() as admin:
        store.store(None, "ключ", b"v")
        assert admin.hget(prefix(tmp_path).encode() + "ключ".encode(), "value") == b"v"


def test_postgres_keys_are_text(tmp_path: Path) -> None:
    with open_store("postgres", tmp_path) as store, postgres_admin() as admin:
        store.store(None, "ключ", b"v")
        row = admin.execute(f'SELECT key, value, version FROM "{table(tmp_path)}"').fetchone()
        assert row == ("ключ", b"v", 1)


@pytest.mark.slow
def test_64_mib_values_round_trip(store: Any) -> None:
    """Values up to 64 MiB work (docs/contract.md#stores)."""
    big = bytes(range(256)) * (64 * 1024 * 1024 // 256)
    assert len(big) == 64 * 1024 * 1024
    assert store.store_versioned(None, "big", big, 0) == 1
    loaded, version = store.load_versioned(None, "big")
    assert version == 1 and len(loaded) == len(big) and loaded == big
    del loaded
    bigger = big[1:] + b"!"
    store.store(None, "big", bigger)
    assert store.load(None, "big") == bigger


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize("key", [1, b"k", None, ("k",)])
def test_key_not_a_str(store: Any, key: Any) -> None:
    calls = [
        lambda: store.load(None, key),
        lambda: store.load_versioned(None, key),
        lambda: store.store(None, key, b"v"),
        lambda: store.store_versioned(None, key, b"v", 0),
    ]
    for call in calls:
        with pytest.raises(TypeError, match=r"^key must be a str, got "):
            call()


@pytest.mark.parametrize("value", ["text", None, 1, [1]])
def test_value_not_bytes(store: Any, value: Any) -> None:
    with pytest.raises(TypeError, match=r"^value must be bytes, got "):
        store.store(None, "k", value)
    with pytest.raises(TypeError, match=r"^value must be bytes, got "):
        store.store_versioned(None, "k", value, 0)
    assert store.load_versioned(None, "k") == (None, 0)


@pytest.mark.parametrize("version", ["1", 1.0, None, True, False])
def test_version_not_an_int(store: Any, version: Any) -> None:
    """A bool is refused although it is an int: it is surely a mistake."""
    with pytest.raises(TypeError, match=r"^version must be an int, got "):
        store.store_versioned(None, "k", b"v", version)
    assert store.load_versioned(None, "k") == (None, 0)


def test_negative_version(store: Any) -> None:
    with pytest.raises(ValueError, match=r"^version must be 0 \(absent\) or more, got -1"):
        store.store_versioned(None, "k", b"v", -1)
    assert store.load_versioned(None, "k") == (None, 0)


@pytest.mark.parametrize("version", [2**63 - 1, 2**63, 2**80])
def test_a_version_no_key_can_have_is_a_conflict(store: Any, version: int) -> None:
    """Versions past a 64-bit integer are Conflicts on every store, not an overflow."""
    store.store(None, "k", b"v")
    with pytest.raises(elmstate.Conflict) as info:
        store.store_versioned(None, "k", b"w", version)
    assert (info.value.expected, info.value.actual) == (version, 1)
    assert store.load_versioned(None, "k") == (b"v", 1)


def test_closed_store(tmp_path: Path, store: Any) -> None:
    """Every method of a closed store raises ValueError (docs/stores.md#closing-a-store)."""
    store.store(None, "k", b"v")
    store.close()
    store.close()  # idempotent
    calls = [
        lambda: store.load(None, "k"),
        lambda: store.load_versioned(None, "k"),
        lambda: store.store(None, "k", b"v"),
        lambda: store.store_versioned(None, "k", b"v", 1),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="closed"):
            call()


def test_context_manager_closes(tmp_path: Path, store: Any) -> None:
    with store as same:
        assert same is store
        same.store(None, "k", b"v")
    with pytest.raises(ValueError, match="closed"):
        store.load(None, "k")


def test_server_store_close_releases_its_connection(tmp_path: Path, server_kind: str) -> None:
    with open_store(server_kind, tmp_path) as store:
        store.load(None, "k")
        assert connections(server_kind, tmp_path) != []
        store.close()
        assert wait_for(lambda: connections(server_kind, tmp_path) == [])


# ----------------------------------------------------------------- versions


def test_versions_count_writes(store: Any) -> None:
    """0 = absent, +1 per write, by either protocol (docs/stores.md#versions-and-conflicts)."""
    assert store.load_versioned(None, "k") == (None, 0)
    assert store.store_versioned(None, "k", b"one", 0) == 1
    assert store.load_versioned(None, "k") == (b"one", 1)
    assert store.store(None, "k", b"two") is None
    assert store.load_versioned(None, "k") == (b"two", 2)
    assert store.store_versioned(None, "k", b"three", 2) == 3
    store.store(None, "k", b"four")
    store.store(None, "k", b"five")
    assert store.load_versioned(None, "k") == (b"five", 5)
    assert store.load(None, "k") == b"five"
    assert store.load_versioned(None, "other") == (None, 0)


def test_plain_store_of_a_new_key_is_version_1(store: Any) -> None:
    store.store(None, "k", b"v")
    assert store.load_versioned(None, "k") == (b"v", 1)
    assert store.store_versioned(None, "k", b"w", 1) == 2


@pytest.mark.parametrize(
    ("writes", "expected", "actual"),
    [
        (1, 0, 1),  # version 0: the key must be absent
        (2, 1, 2),  # a stale version
        (1, 2, 1),  # a version from the future
        (0, 3, 0),  # a version for a key that was never written
    ],
)
def test_conflict_stores_nothing(store: Any, writes: int, expected: int, actual: int) -> None:
    for n in range(writes):
        store.store(None, "k", f"v{n + 1}".encode())
    before = store.load_versioned(None, "k")
    with pytest.raises(elmstate.Conflict) as caught:
        store.store_versioned(None, "k", b"lost", expected)
    assert (caught.value.key, caught.value.expected, caught.value.actual) == ("k", expected, actual)
    assert store.load_versioned(None, "k") == before
    assert f"expected version {expected}" in str(caught.value)


def test_conflict_between_two_stores_on_the_same_data(tmp_path: Path, server_kind: str) -> None:
    """Two connections (as two processes would have) on one key: one save wins."""
    with open_store(server_kind, tmp_path) as first, reopen(server_kind, tmp_path) as second:
        _, version = first.load_versioned(None, "k")
        assert second.load_versioned(None, "k") == (None, version)
        assert second.store_versioned(None, "k", b"second", version) == 1
        with pytest.raises(elmstate.Conflict) as caught:
            first.store_versioned(None, "k", b"first", version)
        assert (caught.value.expected, caught.value.actual) == (0, 1)
        assert first.load_versioned(None, "k") == (b"second", 1)


def test_threads_share_a_store(store: Any) -> None:
    """Every store is thread-safe: 8 threads × 50 compare-and-set increments."""
    threads, rounds = 8, 50
    conflicts = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal conflicts
        for _ in range(rounds):
            while True:
                value, version = store.load_versioned(None, "n")
                try:
                    store.store_versioned(None, "n", str(int(value or b"0") + 1).encode(), version)
                    break
                except elmstate.Conflict:
                    with lock:
                        conflicts += 1

    workers = [InThread(work) for _ in range(threads)]
    for worker in workers:
        worker.join(60)
        assert worker.error is None, worker.error
    value, version = store.load_versioned(None, "n")
    assert (value, version) == (str(threads * rounds).encode(), threads * rounds)


# -------------------------------------------------------------- connections


def test_killed_connection_raises_then_reconnects_postgres(tmp_path: Path) -> None:
    """pg_terminate_backend under the store: that call raises psycopg's own error,
    the next call reconnects (docs/stores.md#lost-connections)."""
    import psycopg

    with open_store("postgres", tmp_path) as store:
        store.store(None, "k", b"before")
        assert kill_connections("postgres", tmp_path) == 1
        with pytest.raises(psycopg.OperationalError):
            store.store(None, "k", b"during")
        assert store.load_versioned(None, "k") == (b"before", 1)
        assert store.store_versioned(None, "k", b"after", 1) == 2
        assert len(connections("postgres", tmp_path)) == 1


def test_idle_killed_connection_is_replaced_redis(tmp_path: Path) -> None:
    """CLIENT KILL of an idle connection: redis-py finds it dead when it takes it
    from its pool, before it sends anything, and connects anew: the call works."""
    with open_store("redis", tmp_path) as store:
        store.store(None, "k", b"before")
        [old] = connections("redis", tmp_path)
        assert kill_connections("redis", tmp_path) == 1
        assert store.store_versioned(None, "k", b"after", 1) == 2
        assert store.load_versioned(None, "k") == (b"after", 2)
        assert connections("redis", tmp_path) not in ([], [old])


def _blocked(kind: str, where: Path) -> bool:
    """Whether the store on ``where`` is waiting on the server for its write."""
    name = connection_name(where)
    if kind == "postgres":
        with postgres_admin() as admin:
            rows = admin.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE application_name = %s",
                (name,),
            ).fetchall()
        return ("Lock",) in rows  # a pool may hold other, idle connections
    with redis_admin() as admin:
        return any(c.get("name") == name and c.get("cmd") == "evalsha" for c in admin.client_list())


def test_connection_killed_during_a_write(tmp_path: Path, server_kind: str) -> None:
    """The connection dies while a compare-and-set waits on the server (a row lock
    in PostgreSQL, CLIENT PAUSE in Redis): that call raises the client's own
    connection error, nothing is stored, and the next call reconnects."""
    import psycopg
    import redis

    errors = {"postgres": psycopg.OperationalError, "redis": redis.ConnectionError}
    with open_store(server_kind, tmp_path) as store:
        store.store(None, "k", b"before")
        with _server_holds_writes(server_kind, tmp_path):
            write = InThread(lambda: store.store_versioned(None, "k", b"during", 1))
            assert wait_for(lambda: _blocked(server_kind, tmp_path), timeout=10)
            assert kill_connections(server_kind, tmp_path) == 1
            write.join()
        assert isinstance(write.error, errors[server_kind]), repr(write.error)
        assert store.load_versioned(None, "k") == (b"before", 1)
        assert store.store_versioned(None, "k", b"after", 1) == 2
        assert store.load_versioned(None, "k") == (b"after", 2)


class _server_holds_writes:
    """While inside: writes to the key "k" of ``where``'s store wait on the server."""

    def __init__(self, kind: str, where: Path) -> None:
        self.kind, self.where = kind, where
        self.admin: Any = None

    def __enter__(self) -> None:
        if self.kind == "postgres":
            import psycopg

            self.admin = psycopg.connect(postgres_conninfo(self.where).replace("-test-", "-lock-"))
            self.admin.execute(
                f'SELECT 1 FROM "{table(self.where)}" WHERE key = %s FOR UPDATE', ("k",)
            )
        else:
            import redis

            self.admin = redis.Redis.from_url(redis_url(self.where).replace("-test-", "-pause-"))
            self.admin.client_pause(30_000, all=False)  # WRITE: writes (and scripts) wait

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self.kind == "postgres":
                self.admin.rollback()
            else:
                self.admin.client_unpause()
        finally:
            self.admin.close()


def test_redis_lost_reply_with_client_retries(tmp_path: Path) -> None:
    """A caller's client that retries (redis-py 6 and later do by default):
    a write whose reply is lost is re-sent, and the re-send is recognised by
    the write's id -- applied once, reported as the success it was, never as a
    Conflict (docs/stores.md#lost-connections)."""
    require("redis")
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from elmstate.stores.redis import RedisStore

    admin_kwargs = redis.Redis.from_url(redis_url(tmp_path)).connection_pool.connection_kwargs
    proxy = LosingProxy(admin_kwargs["host"], admin_kwargs["port"])
    client = redis.Redis(
        host="127.0.0.1",
        port=proxy.port,
        db=admin_kwargs.get("db", 0),
        retry=Retry(NoBackoff(), 3),
        retry_on_error=[redis.ConnectionError],  # redis-py 5 retries only on these
    )
    try:
        with open_store("redis", tmp_path), RedisStore(client, prefix=prefix(tmp_path)) as store:
            assert store.store_versioned(None, "k", b"v1", 0) == 1
            proxy.lose_next.set()
            assert store.store_versioned(None, "k", b"v2", 1) == 2
            assert proxy.lost == 1
            assert store.load_versioned(None, "k") == (b"v2", 2)
            proxy.lose_next.set()
            store.store(None, "k", b"v3")
            assert proxy.lost == 2
            assert store.load_versioned(None, "k") == (b"v3", 3)
    finally:
        client.close()
        proxy.close()


def test_redis_lost_reply_without_retries(tmp_path: Path) -> None:
    """The store's own client (from a URL) does not re-send: a lost reply raises
    redis-py's ConnectionError. The write may have landed; load to find out."""
    require("redis")
    import redis

    from elmstate.stores.redis import RedisStore

    admin_kwargs = redis.Redis.from_url(redis_url(tmp_path)).connection_pool.connection_kwargs
    proxy = LosingProxy(admin_kwargs["host"], admin_kwargs["port"])
    url = f"redis://127.0.0.1:{proxy.port}/{admin_kwargs.get('db', 0)}"
    try:
        with open_store("redis", tmp_path), RedisStore(url, prefix=prefix(tmp_path)) as store:
            assert store.store_versioned(None, "k", b"v1", 0) == 1
            proxy.lose_next.set()
            with pytest.raises(redis.ConnectionError):
                store.store_versioned(None, "k", b"v2", 1)
            assert store.load_versioned(None, "k") == (b"v2", 2)  # it had landed
    finally:
        proxy.close()


# --------------------------------------------------------- caller's clients


def test_postgres_pool_is_the_callers(tmp_path: Path) -> None:
    """A pool passed in serves every call and is never closed by the store
    (docs/stores.md#postgresstore)."""
    require("postgres")
    from psycopg_pool import ConnectionPool

    from elmstate.stores.postgres import PostgresStore

    with ConnectionPool(postgres_conninfo(tmp_path), min_size=1, max_size=2) as pool:
        try:
            with PostgresStore(pool, table=table(tmp_path)) as store:
                assert store.store_versioned(None, "k", b"v", 0) == 1
                store.store(None, "k", b"w")
                assert store.load_versioned(None, "k") == (b"w", 2)
                with pytest.raises(elmstate.Conflict):
                    store.store_versioned(None, "k", b"x", 1)
                assert "pool=" in repr(store)
            with pytest.raises(ValueError, match="closed"):
                store.load(None, "k")
            assert not pool.closed
            with pool.connection() as conn:
                row = conn.execute(f'SELECT value FROM "{table(tmp_path)}"').fetchone()
            assert row == (b"w",)
        finally:
            with pool.connection() as conn:
                conn.execute(f'DROP TABLE IF EXISTS "{table(tmp_path)}"')


@pytest.mark.parametrize("isolation", ["REPEATABLE_READ", "SERIALIZABLE"])
def test_postgres_conflict_under_a_stricter_isolation_level(tmp_path: Path, isolation: str) -> None:
    """A pool whose connections run REPEATABLE READ or SERIALIZABLE: a concurrent
    write makes PostgreSQL fail the statement (SQLSTATE 40001); the store reports
    the Conflict it is, and a plain store still wins as the last writer
    (docs/stores.md#postgresstore)."""
    require("postgres")
    import psycopg
    from psycopg_pool import ConnectionPool

    from elmstate.stores.postgres import PostgresStore

    def configure(conn: Any) -> None:
        conn.isolation_level = getattr(psycopg.IsolationLevel, isolation)

    name = table(tmp_path)
    with ConnectionPool(
        postgres_conninfo(tmp_path), min_size=1, max_size=2, configure=configure
    ) as pool:
        try:
            with PostgresStore(pool, table=name) as store:
                store.store(None, "k", b"v1")
                for write in (
                    lambda: store.store_versioned(None, "k", b"mine", 1),
                    lambda: store.store(None, "k", b"plain"),
                ):
                    with postgres_admin() as other:
                        other.execute("BEGIN")
                        other.execute(
                            f'UPDATE "{name}" SET value = %s, version = version + 1 '
                            "WHERE key = 'k'",
                            (b"other",),
                        )
                        call = InThread(write)
                        assert wait_for(lambda: _blocked("postgres", tmp_path), timeout=10)
                        other.execute("COMMIT")
                        call.join()
                    if call.error is None:  # the plain store: it wrote after the other
                        assert store.load_versioned(None, "k") == (b"plain", 4)
                    else:
                        assert isinstance(call.error, elmstate.Conflict), repr(call.error)
                        assert (call.error.expected, call.error.actual) == (1, 2)
                        assert store.load_versioned(None, "k") == (b"other", 2)
                assert store.load_versioned(None, "k") == (b"plain", 4)
        finally:
            with pool.connection() as conn:
                conn.execute(f'DROP TABLE IF EXISTS "{name}"')


def test_postgres_pool_replaces_a_killed_connection(tmp_path: Path) -> None:
    require("postgres")
    import psycopg
    from psycopg_pool import ConnectionPool

    from elmstate.stores.postgres import PostgresStore

    with ConnectionPool(postgres_conninfo(tmp_path), min_size=1, max_size=1) as pool:
        try:
            store = PostgresStore(pool, table=table(tmp_path))
            store.store(None, "k", b"before")
            assert kill_connections("postgres", tmp_path) == 1
            with pytest.raises(psycopg.OperationalError):
                store.load(None, "k")
            assert wait_for(lambda: _works(store), timeout=10)
            assert store.load_versioned(None, "k") == (b"before", 1)
        finally:
            with pool.connection() as conn:
                conn.execute(f'DROP TABLE IF EXISTS "{table(tmp_path)}"')


def _works(store: Any) -> bool:
    try:
        store.load(None, "k")
    except Exception:
        return False
    return True


def test_redis_client_is_the_callers(tmp_path: Path) -> None:
    require("redis")
    import redis

    from elmstate.stores.redis import RedisStore

    with redis.Redis.from_url(redis_url(tmp_path)) as client:
        try:
            with RedisStore(client, prefix=prefix(tmp_path)) as store:
                assert store.store_versioned(None, "k", b"v", 0) == 1
                assert store.load_versioned(None, "k") == (b"v", 1)
            with pytest.raises(ValueError, match="closed"):
                store.load(None, "k")
            assert client.ping()
            assert client.hget(prefix(tmp_path) + "k", "value") == b"v"
        finally:
            client.delete(prefix(tmp_path) + "k")


def test_redis_refuses_decoded_responses(tmp_path: Path) -> None:
    """Values are bytes: a client that decodes replies to str is refused."""
    require("redis")
    import redis

    from elmstate.stores.redis import RedisStore

    with redis.Redis.from_url(redis_url(tmp_path), decode_responses=True) as client:
        with pytest.raises(ValueError, match=r"^client_or_url must not decode responses"):
            RedisStore(client)
        assert client.ping()  # the caller's client is left open
    with pytest.raises(ValueError, match=r"^client_or_url must not decode responses"):
        RedisStore(redis_url(tmp_path) + "&decode_responses=True")


def test_constructor_arguments(tmp_path: Path, server_kind: str) -> None:
    if server_kind == "postgres":
        from elmstate.stores.postgres import PostgresStore as Store

        where, name = postgres_conninfo(tmp_path), "table"
        bad_names: list[str] = ["", "x" * 64, "a\x00b"]
    else:
        from elmstate.stores.redis import RedisStore as Store  # type: ignore[assignment]

        where, name = redis_url(tmp_path), "prefix"
        bad_names = []
    for bad in (42, None, b"url", object()):
        with pytest.raises(TypeError, match=r"^client_or_url|^conninfo_or_pool"):
            Store(bad)
    with pytest.raises(TypeError, match=rf"^{name} must be a str, got bytes"):
        Store(where, **{name: b"x"})
    for bad_name in bad_names:
        with pytest.raises(ValueError, match=rf"^{name} must be"):
            Store(where, **{name: bad_name})


def test_postgres_table_name_is_quoted(tmp_path: Path) -> None:
    """Any name of up to 63 bytes, quotes and spaces included, is one identifier."""
    require("postgres")
    from psycopg import sql

    from elmstate.stores.postgres import PostgresStore

    name = f'{table(tmp_path)} "Odd"; DROP'
    try:
        with PostgresStore(postgres_conninfo(tmp_path), table=name) as store:
            store.store(None, "k", b"v")
            assert store.load_versioned(None, "k") == (b"v", 1)
        with postgres_admin() as admin:
            query = sql.SQL("SELECT value FROM {}").format(sql.Identifier(name))
            assert admin.execute(query).fetchall() == [(b"v",)]
    finally:
        with postgres_admin() as admin:
            admin.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


def test_postgres_stores_create_one_table_at_once(tmp_path: Path) -> None:
    """Stores opened at the same moment on a missing table all succeed (the
    creation is serialised; two bare CREATE TABLE IF NOT EXISTS can collide)."""
    require("postgres")
    from elmstate.stores.postgres import PostgresStore

    barrier = threading.Barrier(6)

    def open_one() -> None:
        barrier.wait()
        PostgresStore(postgres_conninfo(tmp_path), table=table(tmp_path)).close()

    try:
        openers = [InThread(open_one) for _ in range(6)]
        for opener in openers:
            opener.join(30)
            assert opener.error is None, repr(opener.error)
    finally:
        with postgres_admin() as admin:
            admin.execute(f'DROP TABLE IF EXISTS "{table(tmp_path)}"')


def test_postgres_key_with_nul(tmp_path: Path) -> None:
    with open_store("postgres", tmp_path) as store:
        with pytest.raises(ValueError, match="NUL"):
            store.store(None, "a\x00b", b"v")


# ------------------------------------------------------------------ secrets

SECRET = "s3cret-PW"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _shown(exc: BaseException) -> str:
    """Everything a user could see of ``exc``: its text, repr and whole traceback."""
    shown = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return str(exc) + repr(exc) + "".join(shown)


@pytest.mark.parametrize(
    "conninfo",
    [
        f"postgresql://elm:{SECRET}@127.0.0.1:{{port}}/test?connect_timeout=5",
        f"host=127.0.0.1 port={{port}} user=elm password={SECRET} connect_timeout=5",
        # libpq's own message quotes this malformed URI whole, password included
        f"postgresql://elm:{SECRET}@[127.0.0.1:{{port}}/test",
    ],
)
def test_postgres_password_not_shown(
    conninfo: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A password in the conninfo appears in no error, repr or log record
    (docs/stores.md#passwords)."""
    import psycopg

    from elmstate.stores.postgres import PostgresStore

    caplog.set_level(logging.DEBUG)
    with pytest.raises((ValueError, psycopg.OperationalError)) as caught:
        PostgresStore(conninfo.format(port=_free_port()))
    assert SECRET not in _shown(caught.value)
    assert SECRET not in caplog.text


def test_postgres_password_not_in_repr(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    require("postgres")  # trust authentication: the password is sent, and ignored
    from elmstate.stores.postgres import PostgresStore

    caplog.set_level(logging.DEBUG)
    conninfo = postgres_conninfo(tmp_path) + f" password={SECRET}"
    try:
        with PostgresStore(conninfo, table=table(tmp_path)) as store:
            store.store(None, "k", b"v")
            assert SECRET not in repr(store) and "dbname=" in repr(store)
            assert kill_connections("postgres", tmp_path) == 1
            with pytest.raises(Exception) as caught:
                store.load(None, "k")
            assert SECRET not in _shown(caught.value)
        assert SECRET not in repr(store)
    finally:
        with postgres_admin() as admin:
            admin.execute(f'DROP TABLE IF EXISTS "{table(tmp_path)}"')
    assert SECRET not in caplog.text


def test_redis_password_not_shown(caplog: pytest.LogCaptureFixture) -> None:
    import redis

    from elmstate.stores.redis import RedisStore

    caplog.set_level(logging.DEBUG)
    url = f"redis://elm:{SECRET}@127.0.0.1:{_free_port()}/0?socket_connect_timeout=5"
    with RedisStore(url) as store:
        assert SECRET not in repr(store)
        with pytest.raises(redis.ConnectionError) as caught:
            store.load(None, "k")
        assert SECRET not in _shown(caught.value)
    with pytest.raises(ValueError) as bad_url:
        RedisStore(f"redis://elm:{SECRET}@[127.0.0.1/0")
    assert SECRET not in _shown(bad_url.value)
    assert SECRET not in caplog.text


def test_redis_password_refused_by_the_server(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The server answers AUTH (it has no such user): that error, too, hides the password."""
    require("redis")
    import redis

    from elmstate.stores.redis import RedisStore

    caplog.set_level(logging.DEBUG)
    url = redis_url(tmp_path).replace("redis://", f"redis://elm:{SECRET}@")
    with RedisStore(url) as store:
        with pytest.raises(redis.RedisError) as caught:
            store.load(None, "k")
        assert SECRET not in _shown(caught.value)
    assert SECRET not in caplog.text


# ------------------------------------------------------------------- SQLite


@pytest.mark.parametrize(("durable", "level"), [(True, 2), (False, 1), (None, 2)])
def test_sqlite_durable_flag(tmp_path: Path, durable: bool | None, level: int) -> None:
    """durable=True (the default) syncs every write: synchronous=FULL (2);
    durable=False is NORMAL (1) (docs/stores.md#durability)."""
    kwargs = {} if durable is None else {"durable": durable}
    with elmstate.SQLiteStore(tmp_path / "s.sqlite3", **kwargs) as store:
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == level
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_durable_must_be_a_bool(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"^durable must be a bool, got int"):
        elmstate.SQLiteStore(tmp_path / "s.sqlite3", durable=1)  # type: ignore[arg-type]


def test_sqlite_reads_an_elmstate_0_1_file(tmp_path: Path) -> None:
    """A file written by elmstate 0.1 (no version column) opens; its keys read as
    version 1, and versioned saves go on from there."""
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE IF NOT EXISTS elmstate_snapshots (key TEXT PRIMARY KEY, value BLOB NOT NULL)"
    )
    old.execute("INSERT INTO elmstate_snapshots VALUES ('k', x'0102'), ('empty', x'')")
    old.commit()
    old.close()
    with elmstate.SQLiteStore(path) as store:
        assert store.load_versioned(None, "k") == (b"\x01\x02", 1)
        assert store.load_versioned(None, "empty") == (b"", 1)
        assert store.load_versioned(None, "absent") == (None, 0)
        with pytest.raises(elmstate.Conflict):
            store.store_versioned(None, "k", b"x", 0)
        assert store.store_versioned(None, "k", b"x", 1) == 2
    with elmstate.SQLiteStore(path) as again:  # the upgrade happens once
        assert again.load_versioned(None, "k") == (b"x", 2)


# ------------------------------------------------------------------ imports


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_server_clients_are_not_imported_with_elmstate() -> None:
    done = _python(
        "import sys, elmstate, elmstate.stores\n"
        "clients = ('psycopg', 'psycopg_pool', 'redis')\n"
        "ours = ('elmstate.stores.postgres', 'elmstate.stores.redis')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in clients or m in ours))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "client", "extra"),
    [("postgres", "psycopg", "postgres"), ("redis", "redis", "redis")],
)
def test_missing_client_names_the_extra(module: str, client: str, extra: str) -> None:
    done = _python(
        f"import sys\nsys.modules[{client!r}] = None  # as if not installed\n"
        "try:\n"
        f"    import elmstate.stores.{module}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert done.returncode == 0, done.stderr
    assert f'pip install "elmstate[{extra}]"' in done.stdout


def test_postgres_store_works_without_the_pool_package(tmp_path: Path) -> None:
    """psycopg_pool is needed only for a pool: a conninfo string works without it."""
    require("postgres")
    name = table(tmp_path)
    done = _python(
        "import sys\nsys.modules['psycopg_pool'] = None  # as if not installed\n"
        "from elmstate.stores.postgres import PostgresStore\n"
        f"with PostgresStore({postgres_conninfo(tmp_path)!r}, table={name!r}) as s:\n"
        "    s.store(None, 'k', b'v')\n"
        "    print(s.load_versioned(None, 'k'))\n"
        "try:\n"
        "    PostgresStore(object())\n"
        "except TypeError as exc:\n"
        "    print(exc)\n"
    )
    with postgres_admin() as admin:
        admin.execute(f'DROP TABLE IF EXISTS "{name}"')
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "(b'v', 1)"
    assert lines[1].startswith("conninfo_or_pool must be a connection string")
