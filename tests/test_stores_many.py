"""Saving many keys at once: load_many_versioned and store_many_versioned on every
store (docs/stores.md#saving-many-keys).

The same stores as tests/test_stores.py, on this machine's real servers
(tests/_stores.py). Stores do not depend on the core: these tests run once.
"""

from __future__ import annotations

import logging
import socket
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
from elmstate.typing import VersionedManyStore

MiB = 1024 * 1024


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(kind: str, tmp_path: Path) -> Iterator[Any]:
    """A fresh, empty store of each kind."""
    with open_store(kind, tmp_path) as opened:
        yield opened


@pytest.fixture(params=SERVER_KINDS)
def server_kind(request: pytest.FixtureRequest) -> str:
    require(request.param)
    return str(request.param)


def _state(store: Any, keys: list[str]) -> list[tuple[bytes | None, int]]:
    """What the store holds at ``keys``, read one key at a time."""
    return [store.load_versioned(None, key) for key in keys]


# ------------------------------------------------------------ round trips


def test_every_store_has_the_protocol(store: Any) -> None:
    assert isinstance(store, VersionedManyStore)


def test_round_trip(store: Any) -> None:
    assert store.store_many_versioned(None, [("a", b"A", 0), ("b", b"", 0)]) == [1, 1]
    assert store.load_many_versioned(None, ["a", "b"]) == [(b"A", 1), (b"", 1)]
    assert _state(store, ["a", "b"]) == [(b"A", 1), (b"", 1)]
    # The versions are the single-key protocol's: each write, by either, bumps them.
    assert store.store_versioned(None, "a", b"A2", 1) == 2
    store.store(None, "b", b"B2")
    assert store.store_many_versioned(None, [("a", b"A3", 2), ("b", b"B3", 2)]) == [3, 3]
    assert store.load_many_versioned(None, ["a", "b"]) == [(b"A3", 3), (b"B3", 3)]
    assert store.load_versioned(None, "a") == (b"A3", 3)
    assert store.load(None, "b") == b"B3"


def test_values_come_back_as_bytes(store: Any) -> None:
    values = [b"v", bytearray(b"w"), memoryview(b"x"), bytes(range(256))]
    items = [(f"k{i}", value, 0) for i, value in enumerate(values)]
    assert store.store_many_versioned(None, items) == [1, 1, 1, 1]
    loaded = store.load_many_versioned(None, [f"k{i}" for i in range(4)])
    assert loaded == [(b"v", 1), (b"w", 1), (b"x", 1), (bytes(range(256)), 1)]
    assert all(type(value) is bytes for value, _ in loaded)


def test_order_is_the_callers(store: Any) -> None:
    """Results follow the order given, absent keys included, whatever order the
    keys sort in or the server returns rows in."""
    store.store(None, "m", b"m1")
    store.store(None, "m", b"m2")
    items = [("z", b"z1", 0), ("m", b"m3", 2), ("a", b"a1", 0)]
    assert store.store_many_versioned(None, items) == [1, 3, 1]
    keys = ["m", "absent", "z", "a", "ключ", "e\u0301"]
    assert store.load_many_versioned(None, keys) == [
        (b"m3", 3),
        (None, 0),
        (b"z1", 1),
        (b"a1", 1),
        (None, 0),
        (None, 0),
    ]
    assert store.load_many_versioned(None, list(reversed(keys))) == list(
        reversed(store.load_many_versioned(None, keys))
    )


def test_keys_are_distinct(store: Any) -> None:
    keys = ["a", "A", "a ", " a", "a:b", "a*", "", "ключ", "\u00e9", "e\u0301"]
    items = [(key, key.encode() or b"<empty>", 0) for key in keys]
    assert store.store_many_versioned(None, items) == [1] * len(keys)
    assert store.load_many_versioned(None, keys) == [(value, 1) for _, value, _ in items]
    assert _state(store, keys) == [(value, 1) for _, value, _ in items]


def test_empty(store: Any) -> None:
    assert store.store_many_versioned(None, []) == []
    assert store.store_many_versioned(None, ()) == []
    assert store.load_many_versioned(None, []) == []
    assert store.load_many_versioned(None, iter(())) == []


def test_any_iterable(store: Any) -> None:
    """Any iterable of keys or items will do, a generator included (read once)."""
    versions = store.store_many_versioned(None, ((k, k.encode(), 0) for k in "abc"))
    assert versions == [1, 1, 1]
    assert store.load_many_versioned(None, (k for k in "cab")) == [
        (b"c", 1),
        (b"a", 1),
        (b"b", 1),
    ]
    assert store.store_many_versioned(None, [["a", b"a2", 1]]) == [2]  # a list as an item


def test_a_thousand_keys_in_one_call(store: Any) -> None:
    keys = [f"key-{i:04}" for i in range(1000)]
    assert store.store_many_versioned(None, [(k, k.encode(), 0) for k in keys]) == [1] * 1000
    items = [(k, k.encode() * 2, 1) for k in keys]
    assert store.store_many_versioned(None, items) == [2] * 1000
    loaded = store.load_many_versioned(None, keys)
    assert loaded == [(k.encode() * 2, 2) for k in keys]
    stale = [(k, b"lost", 2) for k in keys]
    stale[998] = (keys[998], b"lost", 1)
    with pytest.raises(elmstate.Conflict) as caught:
        store.store_many_versioned(None, stale)
    assert (caught.value.key, caught.value.expected, caught.value.actual) == (keys[998], 1, 2)
    assert store.load_many_versioned(None, keys) == loaded


def test_values_of_a_few_mib(store: Any) -> None:
    big = [bytes([i]) * (3 * MiB + i) for i in range(4)]
    items = [(f"big{i}", value, 0) for i, value in enumerate(big)] + [("small", b"s", 0)]
    assert store.store_many_versioned(None, items) == [1] * 5
    loaded = store.load_many_versioned(None, [f"big{i}" for i in range(4)] + ["small"])
    assert [version for _, version in loaded] == [1] * 5
    assert [value for value, _ in loaded] == big + [b"s"]
    with pytest.raises(elmstate.Conflict):
        store.store_many_versioned(None, [("big0", big[1], 1), ("small", b"t", 0)])
    assert store.load_versioned(None, "big0") == (big[0], 1)


# ---------------------------------------------------------- all or nothing

STALE = [
    # (writes before, the version given, the version found)
    pytest.param(1, 0, 1, id="0-but-present"),
    pytest.param(2, 1, 2, id="stale"),
    pytest.param(1, 2, 1, id="from-the-future"),
    pytest.param(0, 3, 0, id="absent-but-not-0"),
]


@pytest.mark.parametrize(("writes", "expected", "actual"), STALE)
@pytest.mark.parametrize("at", [0, 2, 4])
def test_one_stale_version_stores_nothing(
    store: Any, writes: int, expected: int, actual: int, at: int
) -> None:
    """One item among five whose version differs: Conflict naming it, and none of
    the five is written -- neither the items before it nor those after."""
    keys = [f"k{i}" for i in range(5)]
    for i, key in enumerate(keys):
        for n in range(writes if i == at else i % 3):
            store.store(None, key, f"{key}-v{n + 1}".encode())
    before = _state(store, keys)
    items = [(key, b"lost", version) for key, (_, version) in zip(keys, before)]
    items[at] = (keys[at], b"lost", expected)
    with pytest.raises(elmstate.Conflict) as caught:
        store.store_many_versioned(None, items)
    assert (caught.value.key, caught.value.expected, caught.value.actual) == (
        keys[at],
        expected,
        actual,
    )
    assert f"expected version {expected}" in str(caught.value)
    assert _state(store, keys) == before
    assert store.load_many_versioned(None, keys) == before
    # The same items with the right version all land.
    items[at] = (keys[at], b"won", actual)
    assert store.store_many_versioned(None, items) == [v + 1 for _, v in before]


def test_the_first_conflicting_item_is_reported(store: Any) -> None:
    for key in ("a", "b", "c", "d"):
        store.store(None, key, b"1")
    items = [("a", b"x", 1), ("b", b"x", 7), ("c", b"x", 1), ("d", b"x", 0)]
    with pytest.raises(elmstate.Conflict) as caught:
        store.store_many_versioned(None, items)
    assert (caught.value.key, caught.value.expected, caught.value.actual) == ("b", 7, 1)
    with pytest.raises(elmstate.Conflict) as caught:
        store.store_many_versioned(None, list(reversed(items)))
    assert (caught.value.key, caught.value.expected, caught.value.actual) == ("d", 0, 1)
    assert store.load_many_versioned(None, ["a", "b", "c", "d"]) == [(b"1", 1)] * 4


@pytest.mark.parametrize("version", [2**63 - 1, 2**63, 2**80])
@pytest.mark.parametrize("at", [0, 1])
def test_a_version_no_key_can_have_is_a_conflict(store: Any, version: int, at: int) -> None:
    """Versions past a 64-bit integer are Conflicts, as for store_versioned."""
    store.store(None, "k", b"v")
    items = [("other", b"o", 0)]
    items.insert(at, ("k", b"w", version))
    with pytest.raises(elmstate.Conflict) as caught:
        store.store_many_versioned(None, items)
    assert (caught.value.key, caught.value.expected, caught.value.actual) == ("k", version, 1)
    assert _state(store, ["k", "other"]) == [(b"v", 1), (None, 0)]
    # An earlier item that conflicts too is the one reported.
    with pytest.raises(elmstate.Conflict) as caught:
        store.store_many_versioned(None, [("k", b"w", 5), ("other", b"o", version)])
    assert (caught.value.key, caught.value.expected, caught.value.actual) == ("k", 5, 1)


# --------------------------------------------------------------- arguments


def test_duplicate_keys(store: Any) -> None:
    store.store(None, "a", b"1")
    with pytest.raises(ValueError, match=r"^items\[2\] repeats the key 'a' of items\[0\]"):
        store.store_many_versioned(None, [("a", b"x", 1), ("b", b"x", 0), ("a", b"y", 2)])
    with pytest.raises(ValueError, match=r"^keys\[1\] repeats the key 'a' of keys\[0\]"):
        store.load_many_versioned(None, ["a", "a"])
    assert _state(store, ["a", "b"]) == [(b"1", 1), (None, 0)]


BAD_ITEMS = [
    ((1, b"v", 0), TypeError, r"^items\[1\]: key must be a str, got int$"),
    ((b"k", b"v", 0), TypeError, r"^items\[1\]: key must be a str, got bytes$"),
    (("k", "text", 0), TypeError, r"^items\[1\]: value must be bytes, got str$"),
    (("k", None, 0), TypeError, r"^items\[1\]: value must be bytes, got NoneType$"),
    (("k", b"v", "0"), TypeError, r"^items\[1\]: version must be an int, got str$"),
    (("k", b"v", 1.0), TypeError, r"^items\[1\]: version must be an int, got float$"),
    (("k", b"v", None), TypeError, r"^items\[1\]: version must be an int, got NoneType$"),
    (("k", b"v", True), TypeError, r"^items\[1\]: version must be an int, got bool$"),
    (("k", b"v", False), TypeError, r"^items\[1\]: version must be an int, got bool$"),
    (("k", b"v", -1), ValueError, r"^items\[1\]: version must be 0 \(absent\) or more, got -1$"),
    (("k", b"v"), TypeError, r"^items\[1\] must be a \(key, value, version\) tuple, got a 2-tuple"),
    (b"kv0", TypeError, r"^items\[1\] must be a \(key, value, version\) tuple, got bytes$"),
    (None, TypeError, r"^items\[1\] must be a \(key, value, version\) tuple, got NoneType$"),
]


@pytest.mark.parametrize(("item", "error", "message"), BAD_ITEMS)
def test_bad_item(store: Any, item: Any, error: type[Exception], message: str) -> None:
    """A bad item is named, and nothing is stored -- not the good item before it."""
    with pytest.raises(error, match=message):
        store.store_many_versioned(None, [("good", b"v", 0), item])
    assert store.load_many_versioned(None, ["good", "k"]) == [(None, 0), (None, 0)]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("ab", r"^keys must be a sequence of str keys, got str$"),
        (b"ab", r"^keys must be a sequence of str keys, got bytes$"),
        (None, r"^keys must be a sequence of str keys, got NoneType$"),
        (42, r"^keys must be a sequence of str keys, got int$"),
        (["a", 1], r"^keys\[1\] must be a str, got int$"),
        (["a", b"b"], r"^keys\[1\] must be a str, got bytes$"),
        ([None], r"^keys\[0\] must be a str, got NoneType$"),
    ],
)
def test_bad_keys(store: Any, keys: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        store.load_many_versioned(None, keys)


@pytest.mark.parametrize("items", ["abc", b"abc", None, 42, ("k", b"v", 0)])
def test_bad_items(store: Any, items: Any) -> None:
    """``items`` itself must be an iterable of items; one bare item is not."""
    with pytest.raises(TypeError, match=r"^items"):
        store.store_many_versioned(None, items)
    assert store.load_versioned(None, "k") == (None, 0)


def test_keys_the_store_cannot_hold(store: Any, kind: str) -> None:
    """A lone surrogate is no UTF-8 (every store but MemoryStore); PostgreSQL
    text holds no NUL. Refused with ValueError before anything is stored."""
    bad = ["a\x00b"] if kind == "postgres" else []
    if kind != "memory":
        bad.append("\udc80")
    for key in bad:
        with pytest.raises(ValueError):
            store.store_many_versioned(None, [("good", b"v", 0), (key, b"v", 0)])
        with pytest.raises(ValueError):
            store.load_many_versioned(None, ["good", key])
    if kind == "postgres":
        with pytest.raises(ValueError, match=r"^items\[1\]: key must not contain NUL"):
            store.store_many_versioned(None, [("good", b"v", 0), ("a\x00b", b"v", 0)])
        with pytest.raises(ValueError, match=r"^keys\[1\] must not contain NUL"):
            store.load_many_versioned(None, ["good", "a\x00b"])
    assert store.load_versioned(None, "good") == (None, 0)


def test_closed_store(store: Any) -> None:
    store.store(None, "k", b"v")
    store.close()
    calls = [
        lambda: store.load_many_versioned(None, ["k"]),
        lambda: store.load_many_versioned(None, []),
        lambda: store.store_many_versioned(None, [("k", b"w", 1)]),
        lambda: store.store_many_versioned(None, []),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="closed"):
            call()


# ------------------------------------------------------------- concurrency


def _open_for_a_thread(kind: str, where: Path, shared: Any) -> Any:
    """A store of the thread's own on the shared data (its own connection, as
    another process would have), or the one store for MemoryStore."""
    return shared if kind == "memory" else reopen(kind, where)


def test_concurrent_multi_key_increments(store: Any, kind: str, tmp_path: Path) -> None:
    """Threads, each with its own connection, increment overlapping sets of keys
    (in different orders) with load_many / store_many and retry on Conflict:
    every increment lands exactly once, and no write is half done."""
    threads, rounds = 4, 15
    keys = [f"n{i}" for i in range(6)]
    expected = dict.fromkeys(keys, 0)
    plans: list[list[list[str]]] = []
    for t in range(threads):
        plan = []
        for r in range(rounds):
            picked = [keys[(t + r + j * (t + 1)) % len(keys)] for j in range(3)]
            picked = list(dict.fromkeys(picked))
            if (t + r) % 2:
                picked.reverse()
            plan.append(picked)
            for key in picked:
                expected[key] += 1
        plans.append(plan)
    conflicts = [0] * threads

    def work(t: int) -> None:
        mine = _open_for_a_thread(kind, tmp_path, store)
        try:
            for picked in plans[t]:
                while True:
                    loaded = mine.load_many_versioned(None, picked)
                    items = [
                        (key, str(int(value or b"0") + 1).encode(), version)
                        for key, (value, version) in zip(picked, loaded)
                    ]
                    try:
                        mine.store_many_versioned(None, items)
                        break
                    except elmstate.Conflict:
                        conflicts[t] += 1
        finally:
            if mine is not store:
                mine.close()

    workers = [InThread(lambda t=t: work(t)) for t in range(threads)]
    for worker in workers:
        worker.join(120)
        assert worker.error is None, repr(worker.error)
    assert store.load_many_versioned(None, keys) == [
        (str(expected[key]).encode() if expected[key] else None, expected[key]) for key in keys
    ]


def test_load_many_sees_one_moment(store: Any, kind: str, tmp_path: Path) -> None:
    """A writer saves 600 keys together, always at one version; a reader (its
    own connection) loading them all at once never sees two versions."""
    keys = [f"s{i:03}" for i in range(600)]
    stop = threading.Event()
    writes = 0

    def writer() -> None:
        nonlocal writes
        mine = _open_for_a_thread(kind, tmp_path, store)
        try:
            version = 0
            while not stop.is_set() and version < 200:
                value = str(version + 1).encode()
                mine.store_many_versioned(None, [(key, value, version) for key in keys])
                version += 1
                writes = version
        finally:
            if mine is not store:
                mine.close()

    reader = _open_for_a_thread(kind, tmp_path, store)
    thread = InThread(writer)
    try:
        seen = set()
        while not thread.done or not seen:
            loaded = reader.load_many_versioned(None, keys)
            versions = {version for _, version in loaded}
            assert len(versions) == 1, sorted(versions)
            version = versions.pop()
            assert {value for value, _ in loaded} == {str(version).encode() if version else None}
            seen.add(version)
            if len(seen) >= 5:
                break
    finally:
        stop.set()
        thread.join(60)
        if reader is not store:
            reader.close()
    assert thread.error is None, repr(thread.error)
    assert writes >= 1


# -------------------------------------------------------------- connections


def test_killed_idle_connection(tmp_path: Path, server_kind: str) -> None:
    """A connection killed while idle: PostgreSQL reports it on the next call
    (psycopg's OperationalError), which stores nothing, and the call after it
    reconnects; redis-py replaces it before sending (the call works)."""
    import psycopg

    with open_store(server_kind, tmp_path) as store:
        assert store.store_many_versioned(None, [("a", b"a1", 0), ("b", b"b1", 0)]) == [1, 1]
        assert kill_connections(server_kind, tmp_path) == 1
        items = [("a", b"a2", 1), ("b", b"b2", 1)]
        if server_kind == "postgres":
            with pytest.raises(psycopg.OperationalError):
                store.store_many_versioned(None, items)
            assert store.load_many_versioned(None, ["a", "b"]) == [(b"a1", 1), (b"b1", 1)]
            assert kill_connections(server_kind, tmp_path) == 1
            with pytest.raises(psycopg.OperationalError):
                store.load_many_versioned(None, ["a", "b"])
        assert store.store_many_versioned(None, items) == [2, 2]
        assert store.load_many_versioned(None, ["a", "b"]) == [(b"a2", 2), (b"b2", 2)]
        assert len(connections(server_kind, tmp_path)) == 1


def _blocked(kind: str, where: Path) -> bool:
    """Whether the store on ``where`` waits on the server for its write."""
    name = connection_name(where)
    if kind == "postgres":
        with postgres_admin() as admin:
            rows = admin.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE application_name = %s",
                (name,),
            ).fetchall()
        return ("Lock",) in rows
    with redis_admin() as admin:
        return any(c.get("name") == name and c.get("cmd") == "evalsha" for c in admin.client_list())


class _writes_wait:
    """While inside, a write of the key "b" of ``where``'s store waits on the
    server: a row lock in PostgreSQL (taken by another connection), CLIENT PAUSE
    WRITE in Redis."""

    def __init__(self, kind: str, where: Path) -> None:
        self.kind, self.where = kind, where
        self.admin: Any = None

    def __enter__(self) -> None:
        if self.kind == "postgres":
            import psycopg

            other = postgres_conninfo(self.where).replace("-test-", "-lock-")
            self.admin = psycopg.connect(other)
            self.admin.execute(
                f'SELECT 1 FROM "{table(self.where)}" WHERE key = %s FOR UPDATE', ("b",)
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


def test_connection_killed_during_a_write(tmp_path: Path, server_kind: str) -> None:
    """The connection dies while the multi-key write waits on the server (in
    PostgreSQL after it wrote "a", waiting for "b"'s row lock): the call raises
    the client's own error, none of the keys changed, the next call reconnects."""
    import psycopg
    import redis

    errors = {"postgres": psycopg.OperationalError, "redis": redis.ConnectionError}
    keys = ["a", "b", "c"]
    with open_store(server_kind, tmp_path) as store:
        store.store_many_versioned(None, [(key, b"before", 0) for key in keys])
        with _writes_wait(server_kind, tmp_path):
            write = InThread(
                lambda: store.store_many_versioned(None, [(k, b"during", 1) for k in keys])
            )
            assert wait_for(lambda: _blocked(server_kind, tmp_path), timeout=10)
            assert kill_connections(server_kind, tmp_path) == 1
            write.join(30)
        assert isinstance(write.error, errors[server_kind]), repr(write.error)
        assert store.load_many_versioned(None, keys) == [(b"before", 1)] * 3
        assert store.store_many_versioned(None, [(k, b"after", 1) for k in keys]) == [2, 2, 2]
        assert _state(store, keys) == [(b"after", 2)] * 3


def test_postgres_takes_rows_in_key_order(tmp_path: Path) -> None:
    """Rows are locked in key order, whatever the items' order: two writers of
    overlapping keys then wait for each other in turn, never deadlock. Seen
    here: with "b" held by another connection, the write of [c, b, a] has
    locked "a" and not yet "c"."""
    import psycopg

    keys = ["c", "b", "a"]
    with open_store("postgres", tmp_path) as store:
        store.store_many_versioned(None, [(key, b"v1", 0) for key in keys])
        with _writes_wait("postgres", tmp_path):
            write = InThread(
                lambda: store.store_many_versioned(None, [(k, b"v2", 1) for k in keys])
            )
            assert wait_for(lambda: _blocked("postgres", tmp_path), timeout=10)
            with postgres_admin() as probe:
                probe.execute("SET lock_timeout = '100ms'")
                query = f'SELECT 1 FROM "{table(tmp_path)}" WHERE key = %s FOR UPDATE NOWAIT'
                with pytest.raises(psycopg.errors.LockNotAvailable):
                    probe.execute(query, ("a",))
                assert probe.execute(query, ("c",)).fetchall() == [(1,)]
        write.join(30)
        assert write.error is None, repr(write.error)
        assert store.load_many_versioned(None, keys) == [(b"v2", 2)] * 3


@pytest.mark.parametrize("isolation", ["REPEATABLE_READ", "SERIALIZABLE"])
def test_postgres_serialization_failure_is_a_conflict(tmp_path: Path, isolation: str) -> None:
    """On a pool whose connections run REPEATABLE READ or SERIALIZABLE, a
    concurrent write fails the statement (SQLSTATE 40001): reported as the
    Conflict it is, naming the key, and nothing is stored."""
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
                store.store_many_versioned(None, [("a", b"a1", 0), ("b", b"b1", 0)])
                with postgres_admin() as other:
                    other.execute("BEGIN")
                    other.execute(
                        f'UPDATE "{name}" SET value = %s, version = version + 1 WHERE key = %s',
                        (b"other", "b"),
                    )
                    call = InThread(
                        lambda: store.store_many_versioned(None, [("a", b"a2", 1), ("b", b"b2", 1)])
                    )
                    assert wait_for(lambda: _blocked("postgres", tmp_path), timeout=10)
                    other.execute("COMMIT")
                    call.join(30)
                assert isinstance(call.error, elmstate.Conflict), repr(call.error)
                assert (call.error.key, call.error.expected, call.error.actual) == ("b", 1, 2)
                assert store.load_many_versioned(None, ["a", "b"]) == [(b"a1", 1), (b"other", 2)]
                assert store.store_many_versioned(None, [("a", b"a2", 1), ("b", b"b2", 2)]) == [
                    2,
                    3,
                ]
        finally:
            with pool.connection() as conn:
                conn.execute(f'DROP TABLE IF EXISTS "{name}"')


# ------------------------------------------------------ Redis lost replies


def _client_through(proxy_port: int, where: Path, retries: int) -> Any:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    kwargs = redis.Redis.from_url(redis_url(where)).connection_pool.connection_kwargs
    return redis.Redis(
        host="127.0.0.1",
        port=proxy_port,
        db=kwargs.get("db", 0),
        retry=Retry(NoBackoff(), retries),
        retry_on_error=[redis.ConnectionError],
    )


def _proxy(where: Path) -> LosingProxy:
    import redis

    kwargs = redis.Redis.from_url(redis_url(where)).connection_pool.connection_kwargs
    return LosingProxy(kwargs["host"], kwargs["port"])


def test_redis_resent_script_is_idempotent(tmp_path: Path) -> None:
    """A caller's client that re-sends after a lost reply: the multi-key script
    ran once, the re-send finds its writer id on every key and reports the
    success -- not a Conflict, and nothing applied twice."""
    require("redis")
    from elmstate.stores.redis import RedisStore

    proxy = _proxy(tmp_path)
    client = _client_through(proxy.port, tmp_path, retries=3)
    keys = ["a", "b", "c"]
    try:
        with open_store("redis", tmp_path), RedisStore(client, prefix=prefix(tmp_path)) as store:
            assert store.store_many_versioned(None, [(k, b"v1", 0) for k in keys]) == [1, 1, 1]
            proxy.lose_next.set()
            assert store.store_many_versioned(None, [(k, b"v2", 1) for k in keys]) == [2, 2, 2]
            assert proxy.lost == 1
            assert store.load_many_versioned(None, keys) == [(b"v2", 2)] * 3
            # A re-sent conflict stays a conflict.
            proxy.lose_next.set()
            with pytest.raises(elmstate.Conflict) as caught:
                store.store_many_versioned(None, [("a", b"v3", 2), ("b", b"v3", 1)])
            assert proxy.lost == 2
            assert (caught.value.key, caught.value.expected, caught.value.actual) == ("b", 1, 2)
            assert store.load_many_versioned(None, keys) == [(b"v2", 2)] * 3
            # The writer id is per call: the next call is a new write.
            assert store.store_many_versioned(None, [(k, b"v3", 2) for k in keys]) == [3, 3, 3]
    finally:
        client.close()
        proxy.close()


def test_redis_resent_script_after_another_write_is_a_conflict(tmp_path: Path) -> None:
    """The script delivered twice with one writer id, as a client's re-send would:
    the second delivery reports the first's success and writes nothing -- unless
    another writer saved one of the keys in between; then it cannot tell that
    it landed, and reports a Conflict (the ambiguity of any lost reply,
    docs/stores.md#lost-connections). Nothing is ever written twice."""
    with open_store("redis", tmp_path) as store, redis_admin() as admin:
        store.store_many_versioned(None, [("a", b"v1", 0), ("b", b"v1", 0)])
        script = admin.register_script(_cas_many_source())
        names = [prefix(tmp_path).encode() + key for key in (b"a", b"b")]
        sent = [b"writer-id-1", b"v2", b"1", b"v2", b"1"]
        assert script(names, sent) == [1]
        assert script(names, sent) == [1]  # re-sent: the same success, applied once
        assert store.load_many_versioned(None, ["a", "b"]) == [(b"v2", 2), (b"v2", 2)]
        store.store(None, "b", b"other")
        assert script(names, sent) == [0, 1, b"2"]  # "a" is the first item that differs
        assert store.load_many_versioned(None, ["a", "b"]) == [(b"v2", 2), (b"other", 3)]
        with pytest.raises(elmstate.Conflict):
            store.store_many_versioned(None, [("a", b"v3", 2), ("b", b"v3", 2)])
        assert store.load_many_versioned(None, ["a", "b"]) == [(b"v2", 2), (b"other", 3)]


def _cas_many_source() -> str:
    from elmstate.stores import redis as module

    return str(module._CAS_MANY)


# ------------------------------------------------------------------ secrets

SECRET = "s3cret-PW"


def _shown(exc: BaseException) -> str:
    return str(exc) + repr(exc) + "".join(traceback.format_exception(type(exc), exc, None))


def test_redis_password_not_shown(caplog: pytest.LogCaptureFixture) -> None:
    import redis

    from elmstate.stores.redis import RedisStore

    caplog.set_level(logging.DEBUG)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"redis://elm:{SECRET}@127.0.0.1:{port}/0?socket_connect_timeout=5"
    with RedisStore(url) as store:
        for call in (
            lambda: store.load_many_versioned(None, ["k"]),
            lambda: store.store_many_versioned(None, [("k", b"v", 0)]),
        ):
            with pytest.raises(redis.ConnectionError) as caught:
                call()
            assert SECRET not in _shown(caught.value)
    assert SECRET not in caplog.text


def test_postgres_password_not_shown(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    require("postgres")  # trust authentication: the password is sent, and ignored
    import psycopg

    from elmstate.stores.postgres import PostgresStore

    caplog.set_level(logging.DEBUG)
    conninfo = postgres_conninfo(tmp_path) + f" password={SECRET}"
    try:
        with PostgresStore(conninfo, table=table(tmp_path)) as store:
            for call in (
                lambda: store.load_many_versioned(None, ["k"]),
                lambda: store.store_many_versioned(None, [("k", b"v", 0)]),
            ):
                store.load(None, "k")  # connected again
                assert kill_connections("postgres", tmp_path) == 1
                with pytest.raises(psycopg.OperationalError) as caught:
                    call()
                assert SECRET not in _shown(caught.value)
            assert store.store_many_versioned(None, [("k", b"v", 0)]) == [1]
    finally:
        with postgres_admin() as admin:
            admin.execute(f'DROP TABLE IF EXISTS "{table(tmp_path)}"')
    assert SECRET not in caplog.text
