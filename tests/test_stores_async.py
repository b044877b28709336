"""The asynchronous stores: AsyncSQLiteStore, AsyncPostgresStore, AsyncRedisStore
(docs/stores.md#asynchronous-stores), the async mirrors of tests/test_stores.py.

Every test runs with both cores (``elm``: its Conflict is the generation's own)
and on both event loops (``run``: asyncio's and uvloop's). PostgreSQL and Redis
are the real servers of this machine, reached as tests/_stores.py says.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import traceback
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest
from _modes import complete
from _stores import (
    SERVER_KINDS,
    connection_name,
    connections,
    drop,
    kill_connections,
    postgres_admin,
    postgres_conninfo,
    prefix,
    redis_admin,
    redis_url,
    reopen,
    require,
    table,
)

WATCHDOG = 120.0  # the 64 MiB round trips take a few seconds on a slow machine
ASYNC_KINDS = ("sqlite", "postgres", "redis")
SECRET = "s3cret-PW"


LOOPS = ["asyncio", "uvloop"]
Runner = Callable[[Callable[[], Coroutine[Any, Any, Any]]], Any]


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Runner:
    """``run(main)``: ``main()`` to completion on a new event loop of each kind,
    which must hold no task afterwards (tests/_modes.py)."""
    return partial(_complete, str(request.param))


def _complete(kind: str, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return complete(kind, main())


@contextmanager
def fresh(kind: str, where: Path) -> Iterator[str]:
    """``kind``'s server reachable (else a skip, or a failure under CI), and the
    data of the stores on ``where`` (a table, a key prefix) removed before and after."""
    require(kind)
    drop(kind, where)
    try:
        yield kind
    finally:
        drop(kind, where)


@pytest.fixture(params=ASYNC_KINDS)
def kind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each store kind."""
    with fresh(request.param, tmp_path) as name:
        yield name


@pytest.fixture(params=SERVER_KINDS)
def server_kind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each kind of store on a server."""
    with fresh(request.param, tmp_path) as name:
        yield name


def new_store(elm: ModuleType, kind: str, where: Path) -> Any:
    """An async store of ``kind`` on ``where``'s data (as tests/_stores.reopen's)."""
    if kind == "sqlite":
        return elm.stores.sqlite.AsyncSQLiteStore(where / "snapshots.sqlite3")
    if kind == "postgres":
        return elm.stores.postgres.AsyncPostgresStore(postgres_conninfo(where), table=table(where))
    if kind == "redis":
        return elm.stores.redis.AsyncRedisStore(redis_url(where), prefix=prefix(where))
    raise ValueError(kind)


@asynccontextmanager
async def opened(elm: ModuleType, kind: str, where: Path) -> AsyncIterator[Any]:
    async with new_store(elm, kind, where) as store:
        yield store


def _shown(exc: BaseException) -> str:
    """Everything a user could see of ``exc``: its text, repr and whole traceback."""
    shown = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return str(exc) + repr(exc) + "".join(shown)


async def _until(predicate: Any, timeout: float = 10.0) -> bool:
    """Poll ``predicate`` (a quick blocking call) without holding up the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() >= deadline:
            return bool(predicate())
        await asyncio.sleep(0.01)
    return True


# ------------------------------------------------------------------- values


def test_round_trip(elm: ModuleType, kind: str, tmp_path: Path, run: Runner) -> None:
    """Absent keys, b"" present, bytes-like values come back as bytes, versions
    count writes of either protocol, and ``load`` agrees with ``load_versioned``."""

    async def main() -> None:
        async with opened(elm, kind, tmp_path) as store:
            assert await store.load(None, "absent") is None
            assert await store.load_versioned(None, "absent") == (None, 0)
            assert await store.store(None, "empty", b"") is None
            assert await store.load(None, "empty") == b""
            assert await store.load_versioned(None, "empty") == (b"", 1)
            assert await store.store_versioned(None, "k", bytearray(b"one"), 0) == 1
            loaded, version = await store.load_versioned(None, "k")
            assert type(loaded) is bytes and (loaded, version) == (b"one", 1)
            await store.store(None, "k", memoryview(b"two"))
            assert await store.load_versioned(None, "k") == (b"two", 2)
            assert await store.store_versioned(None, "k", b"three", 2) == 3
            assert await store.load(None, "k") == b"three"
            every_byte = bytes(range(256)) * 4
            await store.store(None, "ключ 🙂", every_byte)
            assert await store.load(None, "ключ 🙂") == every_byte
            assert await store.load(None, "\u00e9") is None

    run(main)


def test_many_keys(elm: ModuleType, kind: str, tmp_path: Path, run: Runner) -> None:
    """load_many_versioned / store_many_versioned: in order, all or nothing."""

    async def main() -> None:
        async with opened(elm, kind, tmp_path) as store:
            assert await store.load_many_versioned(None, []) == []
            assert await store.store_many_versioned(None, []) == []
            assert await store.store_many_versioned(None, [("a", b"1", 0), ("b", b"", 0)]) == [1, 1]
            await store.store(None, "b", b"2")
            with pytest.raises(elm.Conflict) as caught:
                await store.store_many_versioned(None, [("a", b"x", 1), ("b", b"x", 1)])
            assert (caught.value.key, caught.value.expected, caught.value.actual) == ("b", 1, 2)
            assert await store.load_many_versioned(None, ["b", "c", "a"]) == [
                (b"2", 2),
                (None, 0),
                (b"1", 1),
            ]
            with pytest.raises(TypeError, match=r"^items\[1\]: version must be an int, got str"):
                await store.store_many_versioned(None, [("a", b"x", 1), ("b", b"x", "2")])
            with pytest.raises(ValueError, match=r"^keys\[1\] repeats the key 'a'"):
                await store.load_many_versioned(None, ["a", "a"])

    run(main)


@pytest.mark.slow
def test_64_mib_values_round_trip(elm: ModuleType, kind: str, tmp_path: Path) -> None:
    """Values up to 64 MiB work (docs/contract.md#stores). One loop only: the
    loop plays no part in moving the bytes, and each round trip takes a while."""
    big = bytes(range(256)) * (64 * 1024 * 1024 // 256)

    async def main() -> None:
        async with opened(elm, kind, tmp_path) as store:
            assert await store.store_versioned(None, "big", big, 0) == 1
            loaded, version = await store.load_versioned(None, "big")
            assert version == 1 and len(loaded) == len(big) and loaded == big

    complete("asyncio", main())


# ---------------------------------------------------------------- conflicts


@pytest.mark.parametrize(
    ("writes", "expected", "actual"),
    [(1, 0, 1), (2, 1, 2), (1, 2, 1), (0, 3, 0), (1, 2**63, 1)],
)
def test_conflict_stores_nothing(
    elm: ModuleType,
    kind: str,
    tmp_path: Path,
    run: Runner,
    writes: int,
    expected: int,
    actual: int,
) -> None:
    async def main() -> None:
        async with opened(elm, kind, tmp_path) as store:
            for n in range(writes):
                await store.store(None, "k", f"v{n + 1}".encode())
            before = await store.load_versioned(None, "k")
            with pytest.raises(elm.Conflict) as caught:
                await store.store_versioned(None, "k", b"lost", expected)
            conflict = caught.value
            assert (conflict.key, conflict.expected, conflict.actual) == ("k", expected, actual)
            assert await store.load_versioned(None, "k") == before

    run(main)


def test_two_tasks_one_winner(elm: ModuleType, kind: str, tmp_path: Path, run: Runner) -> None:
    """Two tasks save the same key from the same version, on one store and on two
    (two connections): exactly one wins, the other gets the Conflict."""

    async def main() -> None:
        async with opened(elm, kind, tmp_path) as one, opened(elm, kind, tmp_path) as two:
            for first, second, key in ((one, one, "same"), (one, two, "two")):
                _, version = await first.load_versioned(None, key)
                results = await asyncio.gather(
                    first.store_versioned(None, key, b"first", version),
                    second.store_versioned(None, key, b"second", version),
                    return_exceptions=True,
                )
                wins = [r for r in results if r == 1]
                conflicts = [r for r in results if isinstance(r, elm.Conflict)]
                assert len(wins) == 1 and len(conflicts) == 1, results
                assert (conflicts[0].key, conflicts[0].expected, conflicts[0].actual) == (
                    key,
                    0,
                    1,
                )
                winner = b"first" if results[0] == 1 else b"second"
                assert await second.load_versioned(None, key) == (winner, 1)

    run(main)


def test_tasks_count_with_retries(elm: ModuleType, kind: str, tmp_path: Path, run: Runner) -> None:
    """8 tasks x 15 compare-and-set increments, retried on Conflict: no update lost."""
    tasks, rounds = 8, 15

    async def main() -> None:
        async with opened(elm, kind, tmp_path) as one, opened(elm, kind, tmp_path) as two:

            async def work(store: Any) -> None:
                for _ in range(rounds):
                    while True:
                        value, version = await store.load_versioned(None, "n")
                        try:
                            new = str(int(value or b"0") + 1).encode()
                            await store.store_versioned(None, "n", new, version)
                            break
                        except elm.Conflict:
                            continue

            await asyncio.gather(*(work(one if i % 2 else two) for i in range(tasks)))
            assert await one.load_versioned(None, "n") == (
                str(tasks * rounds).encode(),
                tasks * rounds,
            )

    run(main)


def test_sync_and_async_stores_share_the_data(
    elm: ModuleType, kind: str, tmp_path: Path, run: Runner
) -> None:
    """The same file, table or hashes: what one writes the other reads, and their
    versions are one sequence."""

    async def main() -> None:
        sync = reopen(kind, tmp_path)
        try:
            async with opened(elm, kind, tmp_path) as store:
                assert await store.store_versioned(None, "k", b"async", 0) == 1
                assert sync.load_versioned(None, "k") == (b"async", 1)
                sync.store(None, "k", b"sync")
                assert await store.load_versioned(None, "k") == (b"sync", 2)
        finally:
            sync.close()

    run(main)


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize("key", [1, b"k", None])
def test_key_not_a_str(elm: ModuleType, kind: str, tmp_path: Path, run: Runner, key: Any) -> None:
    async def main() -> None:
        async with opened(elm, kind, tmp_path) as store:
            calls = [
                lambda: store.load(None, key),
                lambda: store.load_versioned(None, key),
                lambda: store.store(None, key, b"v"),
                lambda: store.store_versioned(None, key, b"v", 0),
            ]
            for call in calls:
                with pytest.raises(TypeError, match=r"^key must be a str, got "):
                    await call()

    run(main)


def test_value_and_version_arguments(
    elm: ModuleType, kind: str, tmp_path: Path, run: Runner
) -> None:
    async def main() -> None:
        async with opened(elm, kind, tmp_path) as store:
            for value in ("text", None, 1):
                with pytest.raises(TypeError, match=r"^value must be bytes, got "):
                    await store.store(None, "k", value)
                with pytest.raises(TypeError, match=r"^value must be bytes, got "):
                    await store.store_versioned(None, "k", value, 0)
            for version in ("1", 1.0, None, True):
                with pytest.raises(TypeError, match=r"^version must be an int, got "):
                    await store.store_versioned(None, "k", b"v", version)
            with pytest.raises(ValueError, match=r"^version must be 0 \(absent\) or more, got -1"):
                await store.store_versioned(None, "k", b"v", -1)
            assert await store.load_versioned(None, "k") == (None, 0)

    run(main)


def test_closed_store(elm: ModuleType, kind: str, tmp_path: Path, run: Runner) -> None:
    """Every method of a closed store raises ValueError; close() is idempotent, and
    aclose() is close(); ``async with`` closes."""

    async def main() -> None:
        store = new_store(elm, kind, tmp_path)
        async with store as same:
            assert same is store
            await store.store(None, "k", b"v")
        await store.close()
        await store.aclose()
        calls = [
            lambda: store.load(None, "k"),
            lambda: store.load_versioned(None, "k"),
            lambda: store.store(None, "k", b"v"),
            lambda: store.store_versioned(None, "k", b"v", 1),
            lambda: store.load_many_versioned(None, ["k"]),
            lambda: store.store_many_versioned(None, [("k", b"v", 1)]),
        ]
        for call in calls:
            with pytest.raises(ValueError, match=rf"^the {type(store).__name__} is closed"):
                await call()
        never_used = new_store(elm, kind, tmp_path)  # nothing was opened: nothing to close
        await never_used.close()
        with pytest.raises(ValueError, match="closed"):
            await never_used.load(None, "k")

    run(main)


def test_calls_keep_their_order(elm: ModuleType, kind: str, tmp_path: Path, run: Runner) -> None:
    """Calls started together on one store: each write is one step, so the
    versions come out 1..n, one each."""

    async def main() -> None:
        async with opened(elm, kind, tmp_path) as store:
            await asyncio.gather(*(store.store(None, "k", str(i).encode()) for i in range(20)))
            assert (await store.load_versioned(None, "k"))[1] == 20

    run(main)


def test_constructors_check_their_arguments(elm: ModuleType, tmp_path: Path) -> None:
    """Checked at once, without an event loop and without I/O."""
    import psycopg_pool
    import redis

    stores = elm.stores
    with pytest.raises(TypeError, match=r"^path must be a str or os.PathLike, got int"):
        stores.sqlite.AsyncSQLiteStore(1)
    with pytest.raises(TypeError, match=r"^durable must be a bool, got int"):
        stores.sqlite.AsyncSQLiteStore(tmp_path / "s.sqlite3", durable=1)
    AsyncPostgresStore = stores.postgres.AsyncPostgresStore
    for bad in (42, None, b"url"):
        with pytest.raises(
            TypeError,
            match=r"^conninfo_or_pool must be a connection string or a "
            r"psycopg_pool.AsyncConnectionPool, got ",
        ):
            AsyncPostgresStore(bad)
    sync_pool = psycopg_pool.ConnectionPool("dbname=none", open=False)
    with pytest.raises(TypeError, match=r"AsyncConnectionPool, got ConnectionPool"):
        AsyncPostgresStore(sync_pool)
    with pytest.raises(TypeError, match=r"^table must be a str, got bytes"):
        AsyncPostgresStore("dbname=test", table=b"x")
    for bad_name in ("", "x" * 64, "a\x00b"):
        with pytest.raises(ValueError, match=r"^table must be"):
            AsyncPostgresStore("dbname=test", table=bad_name)
    AsyncRedisStore = stores.redis.AsyncRedisStore
    with pytest.raises(TypeError, match=r"^prefix must be a str, got bytes"):
        AsyncRedisStore("redis://127.0.0.1", prefix=b"x")
    with redis.Redis() as sync_client:
        with pytest.raises(
            TypeError,
            match=r"^client_or_url must be a redis.asyncio.Redis client or a URL string, got Redis",
        ):
            AsyncRedisStore(sync_client)
    with pytest.raises(ValueError, match=r"^client_or_url must not decode responses"):
        AsyncRedisStore("redis://127.0.0.1?decode_responses=True")


def test_postgres_key_with_nul(elm: ModuleType, tmp_path: Path, run: Runner) -> None:
    async def main() -> None:
        async with opened(elm, "postgres", tmp_path) as store:
            with pytest.raises(ValueError, match="NUL"):
                await store.store(None, "a\x00b", b"v")

    with fresh("postgres", tmp_path):
        run(main)


# ------------------------------------------------------------------- SQLite


def test_sqlite_opens_on_first_use(elm: ModuleType, tmp_path: Path, run: Runner) -> None:
    """The constructor does no I/O; the file is made by the first call, or by
    ``async with``, where a path that cannot be opened fails."""
    path = tmp_path / "lazy.sqlite3"
    bad = tmp_path / "missing-dir" / "x.sqlite3"
    AsyncSQLiteStore = elm.stores.sqlite.AsyncSQLiteStore

    async def main() -> None:
        store = AsyncSQLiteStore(path, durable=False)
        assert not path.exists()
        assert await store.load(None, "k") is None
        assert path.exists()
        await store.close()
        failing = AsyncSQLiteStore(bad)
        with pytest.raises(sqlite3.OperationalError):
            async with failing:
                pass  # pragma: no cover
        with pytest.raises(sqlite3.OperationalError):  # tried again, and failing again
            await failing.load(None, "k")
        await failing.close()

    run(main)


def test_sqlite_runs_on_its_own_thread(elm: ModuleType, tmp_path: Path, run: Runner) -> None:
    """The event loop goes on while a call waits for another process's write lock."""

    async def main() -> None:
        async with opened(elm, "sqlite", tmp_path) as store:
            await store.store(None, "k", b"v")
            locker = sqlite3.connect(tmp_path / "snapshots.sqlite3", isolation_level=None)
            try:
                locker.execute("BEGIN IMMEDIATE")  # holds the write lock
                write = asyncio.ensure_future(store.store_versioned(None, "k", b"w", 1))
                ticks = 0
                for _ in range(20):
                    await asyncio.sleep(0.005)
                    ticks += 1
                assert ticks == 20 and not write.done()
                locker.execute("COMMIT")
                assert await write == 2
            finally:
                locker.close()

    run(main)


# -------------------------------------------------------------- connections


def test_killed_connection_raises_then_reconnects_postgres(
    elm: ModuleType, tmp_path: Path, run: Runner
) -> None:
    """pg_terminate_backend under the store: that call raises psycopg's own error,
    the next call reconnects (docs/stores.md#lost-connections)."""
    import psycopg

    async def main() -> None:
        async with opened(elm, "postgres", tmp_path) as store:
            await store.store(None, "k", b"before")
            assert kill_connections("postgres", tmp_path) == 1
            with pytest.raises(psycopg.OperationalError):
                await store.store(None, "k", b"during")
            assert await store.load_versioned(None, "k") == (b"before", 1)
            assert await store.store_versioned(None, "k", b"after", 1) == 2
            assert len(connections("postgres", tmp_path)) == 1

    with fresh("postgres", tmp_path):
        run(main)


def test_killed_idle_connection_redis(elm: ModuleType, tmp_path: Path, run: Runner) -> None:
    """CLIENT KILL of an idle connection: the next call either finds it dead when
    it takes it from the pool and connects anew, or (redis-py's asyncio pool
    skips that check under RESP3 maintenance notifications) raises redis-py's
    ConnectionError having sent nothing that could land; the call after it
    reconnects (docs/stores.md#lost-connections)."""
    import redis

    async def main() -> None:
        async with opened(elm, "redis", tmp_path) as store:
            await store.store(None, "k", b"before")
            [old] = connections("redis", tmp_path)
            assert kill_connections("redis", tmp_path) == 1
            await asyncio.sleep(0.05)  # idle: the loop reads the end of the connection
            try:
                assert await store.store_versioned(None, "k", b"after", 1) == 2
            except redis.ConnectionError:
                assert await store.load_versioned(None, "k") == (b"before", 1)
                assert await store.store_versioned(None, "k", b"after", 1) == 2
            assert await store.load_versioned(None, "k") == (b"after", 2)
            assert connections("redis", tmp_path) not in ([], [old])

    with fresh("redis", tmp_path):
        run(main)


def _blocked(kind: str, where: Path) -> bool:
    """Whether a store on ``where`` is waiting on the server for its write."""
    name = connection_name(where)
    if kind == "postgres":
        with postgres_admin() as admin:
            rows = admin.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE application_name = %s",
                (name,),
            ).fetchall()
        return ("Lock",) in rows
    with redis_admin() as admin:  # flag b: held by CLIENT PAUSE (cmd is only the last one sent)
        return any(
            c.get("name") == name and c.get("cmd") == "evalsha" and "b" in c.get("flags", "")
            for c in admin.client_list()
        )


class _writes_wait:
    """While inside: writes to the key "k" of ``where``'s store wait on the server
    (a row lock in PostgreSQL, CLIENT PAUSE WRITE in Redis)."""

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
            self.admin.client_pause(30_000, all=False)

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self.kind == "postgres":
                self.admin.rollback()
            else:
                self.admin.client_unpause()
        finally:
            self.admin.close()


def test_connection_killed_during_a_write(
    elm: ModuleType, server_kind: str, tmp_path: Path, run: Runner
) -> None:
    """The connection dies while a compare-and-set waits on the server: that call
    raises the client's own connection error, nothing is stored, and the next
    call reconnects."""
    import psycopg
    import redis

    errors = {"postgres": psycopg.OperationalError, "redis": redis.ConnectionError}

    async def main() -> None:
        async with opened(elm, server_kind, tmp_path) as store:
            await store.store(None, "k", b"before")
            with _writes_wait(server_kind, tmp_path):
                write = asyncio.ensure_future(store.store_versioned(None, "k", b"during", 1))
                assert await _until(lambda: _blocked(server_kind, tmp_path))
                assert kill_connections(server_kind, tmp_path) == 1
                with pytest.raises(errors[server_kind]):
                    await write
            assert await store.load_versioned(None, "k") == (b"before", 1)
            assert await store.store_versioned(None, "k", b"after", 1) == 2

    run(main)


def test_cancelled_write_leaves_the_store_usable(
    elm: ModuleType, server_kind: str, tmp_path: Path, run: Runner
) -> None:
    """Cancelling the task of a write that waits on the server: the write did not
    land (PostgreSQL cancels the statement; Redis never ran it), and the store
    goes on with its next call."""

    async def main() -> None:
        async with opened(elm, server_kind, tmp_path) as store:
            await store.store(None, "k", b"before")
            with _writes_wait(server_kind, tmp_path):
                write = asyncio.ensure_future(store.store_versioned(None, "k", b"during", 1))
                assert await _until(lambda: _blocked(server_kind, tmp_path))
                write.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await write
            assert await store.load_versioned(None, "k") == (b"before", 1)
            assert await store.store_versioned(None, "k", b"after", 1) == 2

    run(main)


# --------------------------------------------------------- caller's clients


def test_postgres_pool_is_the_callers(elm: ModuleType, tmp_path: Path, run: Runner) -> None:
    """A psycopg_pool.AsyncConnectionPool serves every call (in parallel) and
    stays open after close()."""
    from psycopg_pool import AsyncConnectionPool

    async def main() -> None:
        conninfo = postgres_conninfo(tmp_path)
        async with AsyncConnectionPool(conninfo, min_size=1, max_size=4, open=False) as pool:
            store = elm.stores.postgres.AsyncPostgresStore(pool, table=table(tmp_path))
            async with store:
                results = await asyncio.gather(
                    *(store.store_versioned(None, f"k{i}", b"v", 0) for i in range(8))
                )
                assert results == [1] * 8
                await store.store(None, "k0", b"w")
                assert await store.load_versioned(None, "k0") == (b"w", 2)
                with pytest.raises(elm.Conflict):
                    await store.store_versioned(None, "k0", b"x", 1)
                assert "pool=" in repr(store)
            with pytest.raises(ValueError, match="closed"):
                await store.load(None, "k0")
            assert not pool.closed
            async with pool.connection() as conn:
                cursor = await conn.execute(f'SELECT count(*) FROM "{table(tmp_path)}"')
                assert await cursor.fetchone() == (8,)

    with fresh("postgres", tmp_path):
        run(main)


def test_redis_client_is_the_callers(elm: ModuleType, tmp_path: Path, run: Runner) -> None:
    import redis.asyncio

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(redis_url(tmp_path))
        try:
            async with elm.stores.redis.AsyncRedisStore(client, prefix=prefix(tmp_path)) as store:
                assert await store.store_versioned(None, "k", b"v", 0) == 1
            assert await client.ping()
            assert await client.hget(prefix(tmp_path) + "k", "value") == b"v"
            decoding = redis.asyncio.Redis.from_url(redis_url(tmp_path), decode_responses=True)
            with pytest.raises(ValueError, match=r"^client_or_url must not decode responses"):
                elm.stores.redis.AsyncRedisStore(decoding)
            await decoding.aclose()
        finally:
            await client.aclose()

    with fresh("redis", tmp_path):
        run(main)


def test_own_connections_are_closed(
    elm: ModuleType, server_kind: str, tmp_path: Path, run: Runner
) -> None:
    async def main() -> None:
        store = new_store(elm, server_kind, tmp_path)
        async with store:
            await store.load(None, "k")
            assert connections(server_kind, tmp_path) != []
        assert await _until(lambda: connections(server_kind, tmp_path) == [])

    run(main)


# ------------------------------------------------------------------ secrets


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_postgres_password_not_shown(
    elm: ModuleType, tmp_path: Path, run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    """Not in the repr, nor in an error connecting or after a lost connection,
    nor in the log (docs/stores.md#passwords)."""
    import psycopg

    caplog.set_level(logging.DEBUG)
    AsyncPostgresStore = elm.stores.postgres.AsyncPostgresStore

    async def main() -> None:
        port = _free_port()
        for conninfo in (
            f"postgresql://elm:{SECRET}@127.0.0.1:{port}/test?connect_timeout=5",
            f"host=127.0.0.1 port={port} user=elm password={SECRET} connect_timeout=5",
        ):
            store = AsyncPostgresStore(conninfo)
            assert SECRET not in repr(store)
            with pytest.raises(psycopg.OperationalError) as caught:
                await store.load(None, "k")
            assert SECRET not in _shown(caught.value)
            await store.close()
        with pytest.raises(ValueError) as malformed:
            AsyncPostgresStore(f"postgresql://elm:{SECRET}@[127.0.0.1:{port}/test")
        assert SECRET not in _shown(malformed.value)
        conninfo = postgres_conninfo(tmp_path) + f" password={SECRET}"
        async with AsyncPostgresStore(conninfo, table=table(tmp_path)) as store:
            await store.store(None, "k", b"v")
            assert SECRET not in repr(store) and "dbname=" in repr(store)
            assert kill_connections("postgres", tmp_path) == 1
            with pytest.raises(psycopg.OperationalError) as caught:
                await store.load(None, "k")
            assert SECRET not in _shown(caught.value)
        assert SECRET not in repr(store)

    with fresh("postgres", tmp_path):
        run(main)
    assert SECRET not in caplog.text


def test_redis_password_not_shown(
    elm: ModuleType, tmp_path: Path, run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    import redis

    caplog.set_level(logging.DEBUG)
    AsyncRedisStore = elm.stores.redis.AsyncRedisStore

    async def main() -> None:
        url = f"redis://elm:{SECRET}@127.0.0.1:{_free_port()}/0?socket_connect_timeout=5"
        async with AsyncRedisStore(url) as store:
            assert SECRET not in repr(store)
            with pytest.raises(redis.ConnectionError) as caught:
                await store.load(None, "k")
            assert SECRET not in _shown(caught.value)
        refused = redis_url(tmp_path).replace("redis://", f"redis://elm:{SECRET}@")
        async with AsyncRedisStore(refused) as store:  # the server has no such user
            with pytest.raises(redis.RedisError) as caught:
                await store.load(None, "k")
            assert SECRET not in _shown(caught.value)
        with pytest.raises(ValueError) as bad_url:
            AsyncRedisStore(f"redis://elm:{SECRET}@[127.0.0.1/0")
        assert SECRET not in _shown(bad_url.value)

    with fresh("redis", tmp_path):
        run(main)
    assert SECRET not in caplog.text


# ------------------------------------------------------------- elmstate.aio


def test_aio_aggregate_on_an_async_store(
    elm: ModuleType, kind: str, tmp_path: Path, run: Runner
) -> None:
    """elmstate.aio awaits the store's coroutines: load, compare-and-set, and a
    Conflict when another writer saved meanwhile."""

    def hydrate(ctx: Any, key: str, value: bytes) -> tuple[int, None]:
        return int(value), None

    def dehydrate(ctx: Any, key: str, total: int) -> bytes:
        return str(total).encode()

    async def add(store: Any, *amounts: int) -> Any:
        buf = aio.Buffer()
        return await aio.aggregate(
            lambda: (0, None),
            lambda amount: lambda total: (total + amount, None),
            lambda total: None,
            buf,
            buf.new_consumer(),
            lambda ctx: (list(amounts), False),
            store,
            hydrate,
            dehydrate,
            "counter",
            feed="inline",
        )

    aio = elm.aio

    async def main() -> None:
        async with opened(elm, kind, tmp_path) as store:
            assert await add(store, 1, 2) == 3
            assert await add(store, 10) == 13
            assert await store.load_versioned(None, "counter") == (b"13", 2)

    run(main)
