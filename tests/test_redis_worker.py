"""In-process functional tests of elmstate.redis's keyed side (SPEC §10):
``KeyedProducer``, ``KeyedWorker``, ``Emit``, ``Program`` and the snapshot envelope.

Everything runs against the real Redis server (and the real stores of
tests/_stores.py where the store matters), on both cores (the ``elm``
fixture: the worker runs the program through that generation's aggregate).
Workers run in threads (``worker.run(ctx)``) or, where timing would make a
test flaky, are stepped one round at a time (``worker._step(ctx)``,
``worker._beat(mode)``, ``worker._page_of(ctx, shard)``). Instants inside the
worker's work (between its load and its save, between its lease decision and
its read, between its save and its publish) are reached through the program's
hydrator or through a real redis-py connection that calls the test before
sending a request (tests/_keyed.py). The kill -9 and process proofs are in
tests/test_redis_kill.py.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest
from _helpers import subprocess_env
from _keyed import (
    Fold,
    Keyspace,
    Running,
    dead_letters,
    group_info,
    hooked_client,
    names_arg,
    pending_ids,
    wait_until,
    worker,
)
from _stores import (
    KINDS,
    REDIS,
    drop,
    postgres_conninfo,
    prefix,
    redis_admin,
    redis_url,
    reopen,
    require,
    table,
)

redis = pytest.importorskip("redis")

WATCHDOG = 120.0  # seconds per test (tests/conftest.py): the rebalance test waits for heartbeats

Events = list[tuple[str, Any]]


# -- fixtures and small helpers ---------------------------------------------------


@pytest.fixture
def admin() -> Any:
    require("redis")
    with redis_admin() as client:
        yield client


@pytest.fixture
def ks(admin: Any) -> Any:
    space = Keyspace(admin)
    yield space
    space.close()


def produce(elm: ModuleType, client: Any, name: str, shards: int, events: Events) -> list[str]:
    producer = elm.redis.KeyedProducer(client, name, shards=shards)
    return [producer.put(None, key, value)[0] for key, value in events]


def folds(events: Events) -> dict[str, list[Any]]:
    expected: dict[str, list[Any]] = {}
    for key, value in events:
        expected.setdefault(key, []).append(value)
    return expected


def keys_on(shard: int, shards: int, n: int, prefix: str = "key") -> list[str]:
    """``n`` keys that go to ``shard``."""
    found = []
    i = 0
    while len(found) < n:
        key = f"{prefix}-{i}"
        if zlib.crc32(key.encode()) % shards == shard:
            found.append(key)
        i += 1
    return found


def step_until(w: Any, ctx: Any, done: Callable[[], bool], timeout: float = 10.0) -> int:
    """Step ``w`` one round at a time until ``done()``; the number of rounds."""
    deadline = time.monotonic() + timeout
    rounds = 0
    while not done():
        assert time.monotonic() < deadline, "the worker did not get there"
        if not w._step(ctx):
            time.sleep(0.005)
        rounds += 1
    return rounds


def stream_ids(client: Any, stream: str) -> list[bytes]:
    return [entry_id for entry_id, _ in client.xrange(stream, "-", "+")]


def pel(client: Any, stream: str) -> list[tuple[bytes, bytes, int]]:
    """The group's pending entries: (id, consumer, times delivered)."""
    rows = client.xpending_range(stream, "elmstate", "-", "+", 10_000)
    return [(r["message_id"], r["consumer"], r["times_delivered"]) for r in rows]


@contextmanager
def generation_store(elm: ModuleType, kind: str, where: Path, *, conflicts: bool) -> Iterator[Any]:
    """A new store of ``kind`` whose Conflict is ``elm``'s own.

    Every store class comes from ``elm``'s generation (tests/conftest.py imports
    the server stores' modules per generation), so the Conflict it raises is the
    one that generation's worker recognises."""
    if kind == "memory":
        yield elm.MemoryStore()
    elif kind == "sqlite":
        with elm.SQLiteStore(where / "snapshots.sqlite3") as store:
            yield store
    else:
        require(kind)
        drop(kind, where)  # left over by an earlier run that died
        try:
            if kind == "postgres":
                made = elm.stores.postgres.PostgresStore(
                    postgres_conninfo(where), table=table(where)
                )
            else:
                made = elm.stores.redis.RedisStore(redis_url(where), prefix=prefix(where))
            with made as store:
                yield store
        finally:
            drop(kind, where)


def another_handle(elm: ModuleType, kind: str, where: Path, store: Any) -> Any:
    """Another store on the same data (as another process would have), or ``store``."""
    if kind == "memory":
        return store
    if kind == "sqlite":
        return elm.SQLiteStore(where / "snapshots.sqlite3")
    return reopen(kind, where)


def lease_owners(client: Any, name: str, shards: int) -> Counter[str]:
    values = client.mget([f"{name}:lease:{i}" for i in range(shards)])
    return Counter(v.decode() for v in values if v is not None)


# -- shards ---------------------------------------------------------------------------


def test_a_key_goes_to_its_crc32_shard(elm: ModuleType, admin: Any, ks: Keyspace) -> None:
    shards = 7
    producer = elm.redis.KeyedProducer(admin, ks.name, shards=shards)
    keys = [f"key-{i}" for i in range(60)] + ["", "ключ", "🙂", "a:b"]
    where: dict[str, int] = {}
    for key in keys:
        (entry_id,) = producer.put(None, key, {"k": key})
        shard = zlib.crc32(key.encode()) % shards
        assert elm.redis.shard_of(key, shards) == shard
        ((_, fields),) = admin.xrange(f"{ks.name}:{shard}", entry_id, entry_id)
        assert fields[b"key"] == key.encode() and json.loads(fields[b"payload"]) == {"k": key}
        assert set(fields) == {b"key", b"payload"}
        where[key] = shard
    counts = Counter(where.values())
    assert len(counts) == shards  # all seven used
    for shard in range(shards):  # and nothing anywhere else
        assert admin.xlen(f"{ks.name}:{shard}") == counts[shard]


# A database of its own, so that every key the worker creates can be seen (the
# other test files use database 0 of the same server at the same time).
PRIVATE_DB = 13


def test_every_redis_key_starts_with_the_name(elm: ModuleType) -> None:
    require("redis")
    from redis.connection import parse_url

    # Not from_url(REDIS, db=...): the URL's own database number would win.
    client = redis.Redis(**{**parse_url(REDIS), "db": PRIVATE_DB})
    try:
        assert client.client_info()["db"] == PRIVATE_DB
        before = set(client.keys("*"))
    except redis.ResponseError as exc:  # a server with one database only
        pytest.skip(f"no database {PRIVATE_DB}: {exc}")
    space = Keyspace(client)
    name, output = space.name, space.name + "-out"
    fold = Fold(elm, poison=("bad",))
    try:
        store = elm.MemoryStore()
        events = [(f"k{i % 5}", i) for i in range(20)]
        events += [("k1", "bad"), ("k2", {"emit": 1, "to": "a"})]
        produce(elm, client, name, 3, events)
        w = worker(elm, client, name, store, fold, shards=3, output=output, max_failures=1)
        with Running(elm, w) as running:
            assert wait_until(lambda: w.stats().processed == 21 and w.stats().dead_lettered == 1)
            during = set(client.keys("*")) - before
            running.stop()
        after = set(client.keys("*")) - before
        made = {k.decode() for k in during | after}
        expected_kinds = {f"{name}:meta", f"{name}:workers", f"{name}:dead", f"{output}:meta"}
        expected_kinds |= {f"{name}:{i}" for i in range(3)}
        expected_kinds |= {f"{name}:lease:{i}" for i in range(3)}
        assert expected_kinds <= made
        assert any(k.startswith(f"{output}:") and k != f"{output}:meta" for k in made)
        strays = {k for k in made if not k.startswith((f"{name}:", f"{output}:"))}
        assert strays == set()
        # Stopped: the leases and the heartbeat are gone, the rest stays.
        assert {k.decode() for k in after} & {f"{name}:lease:{i}" for i in range(3)} == set()
        assert f"{name}:workers" not in {k.decode() for k in after}
    finally:
        space.close()
        client.close()


def test_the_shard_count_is_recorded_and_checked(elm: ModuleType, admin: Any, ks: Keyspace) -> None:
    fold = Fold(elm)
    store = elm.MemoryStore()
    elm.redis.KeyedProducer(admin, ks.name, shards=4)
    assert admin.hgetall(f"{ks.name}:meta") == {b"shards": b"4"}
    with pytest.raises(ValueError, match="shards=5 .* 4 shards"):
        elm.redis.KeyedProducer(admin, ks.name, shards=5)
    with pytest.raises(ValueError, match="shards=3 .* 4 shards"):
        worker(elm, admin, ks.name, store, fold, shards=3)
    worker(elm, admin, ks.name, store, fold, shards=4)  # the same count is fine
    elm.redis.KeyedProducer(admin, ks.name, shards=4)
    # A worker first records it too.
    other = ks.name + "-second"
    worker(elm, admin, other, store, fold, shards=2)
    assert admin.hget(f"{other}:meta", "shards") == b"2"
    with pytest.raises(ValueError, match="shards=3"):
        elm.redis.KeyedProducer(admin, other, shards=3)
    with pytest.raises(ValueError, match="shards=1"):
        worker(elm, admin, other, store, fold, shards=1)
    assert admin.hget(f"{other}:meta", "shards") == b"2"


def test_ids_compare_as_pairs_of_integers(elm: ModuleType, admin: Any, ks: Keyspace) -> None:
    parse_id = elm.redis.parse_id
    assert parse_id("9-0") < parse_id("10-0")
    assert parse_id(b"10-0") < parse_id("10-10") and parse_id("10-9") < parse_id("10-10")
    assert parse_id("1526919030474-55") == (1526919030474, 55)
    # The worker too: with one entry a page, entry 10-0 comes after entry 9-0 is
    # applied; compared as strings it would look applied already ("10-0" < "9-0").
    fold = Fold(elm)
    store = elm.MemoryStore()
    w = worker(elm, admin, ks.name, store, fold, shards=1, page=1, trim=False)
    stream = f"{ks.name}:0"
    for entry_id, value in (("9-0", "a"), ("10-0", "b"), ("10-1", "c"), ("100-0", "d")):
        admin.xadd(stream, {"key": "k", "payload": json.dumps(value)}, id=entry_id)
    ctx = elm.Context()
    step_until(w, ctx, lambda: w.stats().processed + w.stats().skipped == 4)
    assert w.load(None, "k") == ["a", "b", "c", "d"]
    assert w.stats().skipped == 0


# -- KeyedProducer ----------------------------------------------------------------------


def test_put_appends_in_order_in_one_round_trip(elm: ModuleType, ks: Keyspace) -> None:
    client, sends = hooked_client()
    try:
        producer = elm.redis.KeyedProducer(client, ks.name, shards=3)
        stream = f"{ks.name}:{zlib.crc32(b'k') % 3}"
        before = sends[0]
        ids = producer.put(None, "k", *range(50))
        assert sends[0] - before == 1
        assert len(ids) == 50 and all(isinstance(i, str) for i in ids)
        parsed = [elm.redis.parse_id(i) for i in ids]
        assert parsed == sorted(parsed) and len(set(parsed)) == 50
        entries = client.xrange(stream, "-", "+")
        assert [e[0].decode() for e in entries] == ids
        assert [json.loads(e[1][b"payload"]) for e in entries] == list(range(50))
        assert {e[1][b"key"] for e in entries} == {b"k"}
        # Messages of any JSON shape; the next put goes after.
        before = sends[0]
        more = producer.put(elm.Context(), "k", {"a": [1, None]}, "text", None)
        assert sends[0] - before == 1
        assert elm.redis.parse_id(more[0]) > parsed[-1]
        tail = client.xrange(stream, more[0], "+")
        assert [json.loads(e[1][b"payload"]) for e in tail] == [{"a": [1, None]}, "text", None]
    finally:
        client.close()


def test_an_empty_put_sends_nothing(elm: ModuleType, ks: Keyspace) -> None:
    client, sends = hooked_client()
    try:
        producer = elm.redis.KeyedProducer(client, ks.name, shards=2)
        before = sends[0]
        assert producer.put(None, "k") == []
        ctx = elm.Context()
        ctx.cancel()
        with pytest.raises(elm.Canceled):  # an ended ctx: nothing sent either
            producer.put(ctx, "k", 1)
        assert sends[0] == before
        assert ks.keys() == {f"{ks.name}:meta"}
    finally:
        client.close()


def test_put_uses_the_encoder(elm: ModuleType, admin: Any, ks: Keyspace) -> None:
    producer = elm.redis.KeyedProducer(admin, ks.name, shards=1, encode=lambda m: f"<{m}>".encode())
    (entry_id,) = producer.put(None, "k", 5)
    assert admin.xrange(f"{ks.name}:0")[0][1][b"payload"] == b"<5>"
    bad = elm.redis.KeyedProducer(admin, ks.name, shards=1, encode=lambda m: str(m))
    with pytest.raises(TypeError, match="encode must return bytes"):
        bad.put(None, "k", 6)
    assert stream_ids(admin, f"{ks.name}:0") == [entry_id.encode()]


def _plain_store() -> Any:
    class Plain:  # a store without the versioned protocol
        def load(self, ctx: Any, key: str) -> bytes | None:
            return None

        def store(self, ctx: Any, key: str, value: bytes) -> None:
            pass

    return Plain()


# (what is wrong, the call, the exception, a word its message must hold)
BadCall = tuple[str, Callable[[ModuleType, Any, str, Any, Fold], Any], type, str]


def _producer(**changes: Any) -> Callable[[ModuleType, Any, str, Any, Fold], Any]:
    def call(elm: ModuleType, client: Any, name: str, store: Any, fold: Fold) -> Any:
        args: dict[str, Any] = {"client": client, "name": name, "shards": 2, **changes}
        return elm.redis.KeyedProducer(args.pop("client"), args.pop("name"), **args)

    return call


def _worker(**changes: Any) -> Callable[[ModuleType, Any, str, Any, Fold], Any]:
    def call(elm: ModuleType, client: Any, name: str, store: Any, fold: Fold) -> Any:
        args: dict[str, Any] = {
            "client": client,
            "name": name,
            "shards": 2,
            "store": store,
            "init": fold.init,
            "update": fold.update,
            "hydrator": fold.hydrator,
            "dehydrator": fold.dehydrator,
            **changes,
        }
        return elm.redis.KeyedWorker(args.pop("client"), args.pop("name"), **args)

    return call


def _decoding_client() -> Any:
    return redis.Redis.from_url(REDIS, decode_responses=True)


BAD_CALLS: list[BadCall] = [
    ("producer client str", _producer(client="redis://x"), TypeError, "client"),
    ("producer client None", _producer(client=None), TypeError, "client"),
    ("producer name int", _producer(name=5), TypeError, "name"),
    ("producer name empty", _producer(name=""), ValueError, "name"),
    ("producer shards 0", _producer(shards=0), ValueError, "shards"),
    ("producer shards -1", _producer(shards=-1), ValueError, "shards"),
    ("producer shards bool", _producer(shards=True), TypeError, "shards"),
    ("producer shards str", _producer(shards="4"), TypeError, "shards"),
    ("producer shards float", _producer(shards=2.0), TypeError, "shards"),
    ("producer encode int", _producer(encode=3), TypeError, "encode"),
    ("worker client str", _worker(client="redis://x"), TypeError, "client"),
    ("worker name int", _worker(name=5), TypeError, "name"),
    ("worker name empty", _worker(name=""), ValueError, "name"),
    ("worker shards 0", _worker(shards=0), ValueError, "shards"),
    ("worker shards bool", _worker(shards=False), TypeError, "shards"),
    ("worker shards str", _worker(shards="2"), TypeError, "shards"),
    ("worker store dict", _worker(store={}), TypeError, "store"),
    ("worker store plain", _worker(store=_plain_store()), TypeError, "store"),
    ("worker init", _worker(init=None), TypeError, "init"),
    ("worker update", _worker(update=3), TypeError, "update"),
    ("worker hydrator", _worker(hydrator="h"), TypeError, "hydrator"),
    ("worker dehydrator", _worker(dehydrator=None), TypeError, "dehydrator"),
    ("worker view", _worker(view=5), TypeError, "view"),
    ("worker group empty", _worker(group=""), ValueError, "group"),
    ("worker group int", _worker(group=1), TypeError, "group"),
    ("worker worker_id int", _worker(worker_id=7), TypeError, "worker_id"),
    ("worker worker_id empty", _worker(worker_id=""), ValueError, "worker_id"),
    ("worker lease negative", _worker(lease=-1.0), ValueError, "lease"),
    ("worker lease zero", _worker(lease=0), ValueError, "lease"),
    ("worker lease str", _worker(lease="10"), TypeError, "lease"),
    ("worker lease bool", _worker(lease=True), TypeError, "lease"),
    ("worker lease inf", _worker(lease=float("inf")), ValueError, "lease"),
    ("worker page 0", _worker(page=0), ValueError, "page"),
    ("worker page float", _worker(page=10.0), TypeError, "page"),
    ("worker page bool", _worker(page=True), TypeError, "page"),
    ("worker max_failures 0", _worker(max_failures=0), ValueError, "max_failures"),
    ("worker max_failures str", _worker(max_failures="3"), TypeError, "max_failures"),
    ("worker decode", _worker(decode=b"json"), TypeError, "decode"),
    ("worker output int", _worker(output=3), TypeError, "output"),
    ("worker output empty", _worker(output=""), ValueError, "output"),
    ("worker trim int", _worker(trim=1), TypeError, "trim"),
    ("worker trim str", _worker(trim="yes"), TypeError, "trim"),
]


@pytest.mark.parametrize("case", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_arguments_are_named(elm: ModuleType, admin: Any, ks: Keyspace, case: BadCall) -> None:
    _, call, error, word = case
    with pytest.raises(error, match=rf"\b{word}\b"):
        call(elm, admin, ks.name, elm.MemoryStore(), Fold(elm))
    assert ks.keys() == set()  # refused before anything reached Redis


def test_a_decoding_client_is_refused(elm: ModuleType, ks: Keyspace) -> None:
    require("redis")
    with _decoding_client() as client:
        for call in (_producer(), _worker()):
            with pytest.raises(ValueError, match="decode_responses"):
                call(elm, client, ks.name, elm.MemoryStore(), Fold(elm))
    assert ks.keys() == set()


def test_bad_method_arguments_are_named(elm: ModuleType, admin: Any, ks: Keyspace) -> None:
    producer = elm.redis.KeyedProducer(admin, ks.name, shards=2)
    with pytest.raises(TypeError, match=r"\bkey\b"):
        producer.put(None, b"k", 1)
    with pytest.raises(TypeError, match=r"\bkey\b"):
        producer.put(None, 5, 1)
    fold = Fold(elm)
    w = worker(elm, admin, ks.name, elm.MemoryStore(), fold, shards=2)
    with pytest.raises(TypeError, match=r"\bkey\b"):
        w.load(None, 3)
    with pytest.raises(TypeError, match=r"\bctx\b"):
        w.load("ctx", "k")
    with pytest.raises(TypeError, match=r"\bctx\b"):
        w.run(object())
    with pytest.raises(TypeError, match=r"\bkey\b"):
        elm.redis.Emit(1, "m")
    for arg in ("init", "update", "hydrator", "dehydrator"):
        args = {"init": fold.init, "update": fold.update}
        args |= {"hydrator": fold.hydrator, "dehydrator": fold.dehydrator, arg: 42}
        with pytest.raises(TypeError, match=rf"\b{arg}\b"):
            elm.redis.Program(**args)
    with pytest.raises(TypeError, match=r"\bview\b"):
        elm.redis.Program(fold.init, fold.update, fold.hydrator, fold.dehydrator, view=1)
    program = fold.program(elm)
    assert (program.init, program.update, program.view) == (fold.init, fold.update, None)
    assert elm.redis.Emit("a", [1]) == elm.redis.Emit("a", [1]) != elm.redis.Emit("b", [1])


# -- processing -------------------------------------------------------------------------


class SingleKeyStore:
    """A real store seen through the single-key versioned protocol only: the worker
    then saves key by key, not a page at once (docs/redis.md#pages)."""

    def __init__(self, store: Any) -> None:
        self.inner = store

    def load(self, ctx: Any, key: str) -> bytes | None:
        return self.inner.load(ctx, key)  # type: ignore[no-any-return]

    def store(self, ctx: Any, key: str, value: bytes) -> None:
        self.inner.store(ctx, key, value)

    def load_versioned(self, ctx: Any, key: str) -> tuple[bytes | None, int]:
        return self.inner.load_versioned(ctx, key)  # type: ignore[no-any-return]

    def store_versioned(self, ctx: Any, key: str, value: bytes, version: int) -> int:
        return self.inner.store_versioned(ctx, key, value, version)  # type: ignore[no-any-return]


SAVES = ["page", "key"]  # a page's keys saved at once (bundled stores), or one by one


def saving(store: Any, saves: str) -> Any:
    assert callable(getattr(store, "store_many_versioned", None))
    return store if saves == "page" else SingleKeyStore(store)


@pytest.mark.parametrize("saves", SAVES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_key_folds_its_events_in_order(
    elm: ModuleType, admin: Any, ks: Keyspace, tmp_path: Path, kind: str, saves: str
) -> None:
    rng = random.Random(10)
    events = [(f"key-{rng.randrange(40)}", i) for i in range(400)]
    fold = Fold(elm)
    with generation_store(elm, kind, tmp_path, conflicts=False) as real:
        store = saving(real, saves)
        produce(elm, admin, ks.name, 4, events[:200])
        w = worker(elm, admin, ks.name, store, fold, shards=4, page=7)
        with Running(elm, w) as running:
            produce(elm, admin, ks.name, 4, events[200:])  # while it runs
            assert wait_until(lambda: w.stats().processed == 400)
            assert wait_until(lambda: sum(w.stats().lag.values()) == 0)
            stats = w.stats()
            running.stop()
        assert (stats.processed, stats.skipped, stats.dead_lettered, stats.conflicts) == (
            400,
            0,
            0,
            0,
        )
        assert stats.shards_owned == 4 and stats.lag == {0: 0, 1: 0, 2: 0, 3: 0}
        for key, values in folds(events).items():
            assert w.load(None, key) == values
        assert set(fold.calls.values()) == {1}  # each entry applied once
        for shard in range(4):
            assert pending_ids(admin, f"{ks.name}:{shard}") == []


def test_entries_at_or_below_the_applied_id_are_skipped(
    elm: ModuleType, admin: Any, ks: Keyspace
) -> None:
    # Two ways an applied entry comes back: the group's last-delivered id set
    # back (shard 0: delivered again as new) and back in the pending list as if
    # a reply had been lost (shard 1: read pending-first by the next owner).
    shards = 2
    events = [(key, f"{key}/{i}") for i in range(6) for key in keys_on(0, shards, 3)]
    events += [(key, f"{key}/{i}") for i in range(6) for key in keys_on(1, shards, 3)]
    fold = Fold(elm)
    store = elm.MemoryStore()
    produce(elm, admin, ks.name, shards, events)
    first = worker(elm, admin, ks.name, store, fold, shards=shards, trim=False, page=5)
    ctx = elm.Context()
    step_until(first, ctx, lambda: first.stats().processed == 36)
    first._release()
    admin.xgroup_setid(f"{ks.name}:0", "elmstate", "0")
    admin.xgroup_setid(f"{ks.name}:1", "elmstate", "0")
    admin.xreadgroup("elmstate", "owner", {f"{ks.name}:1": ">"})  # all pending again
    assert len(pending_ids(admin, f"{ks.name}:1")) == 18
    later = [(key, f"{key}/later") for key in keys_on(0, shards, 3) + keys_on(1, shards, 3)]
    produce(elm, admin, ks.name, shards, later)
    second = worker(elm, admin, ks.name, store, fold, shards=shards, trim=False, page=5)
    step_until(second, ctx, lambda: second.stats().processed == 6)
    step_until(second, ctx, lambda: sum(second.stats().lag.values()) == 0)
    stats = second.stats()
    assert (stats.processed, stats.skipped) == (6, 36)
    for key, values in folds(events + later).items():
        assert second.load(None, key) == values
    assert set(fold.calls.values()) == {1}


@pytest.mark.parametrize("kind", KINDS)
def test_a_plain_aggregate_snapshot_is_picked_up(
    elm: ModuleType, admin: Any, ks: Keyspace, tmp_path: Path, kind: str
) -> None:
    fold = Fold(elm)
    with generation_store(elm, kind, tmp_path, conflicts=False) as store:
        buf = elm.Buffer()
        saved = elm.aggregate(
            fold.init,
            fold.update,
            lambda model: None,
            buf,
            buf.new_consumer(),
            lambda ctx: ([1, 2], False),
            store,
            fold.hydrator,
            fold.dehydrator,
            "k",
            feed="inline",
        )
        assert saved == [1, 2]
        plain, version = store.load_versioned(None, "k")
        assert plain == b"[1, 2]"
        produce(elm, admin, ks.name, 2, [("k", 3), ("other", "x"), ("k", 4)])
        w = worker(elm, admin, ks.name, store, fold, shards=2)
        ctx = elm.Context()
        step_until(w, ctx, lambda: w.stats().processed == 3)
        assert w.load(None, "k") == [1, 2, 3, 4]
        assert ("k", b"[1, 2]") in fold.hydrated  # the hydrator saw the plain bytes
        wrapped, new_version = store.load_versioned(None, "k")
        assert new_version == version + 1 and wrapped != b"[1, 2, 3, 4]"
        assert wrapped.endswith(b"[1, 2, 3, 4]")  # the program's bytes, in an envelope
        produce(elm, admin, ks.name, 2, [("k", 5)])
        step_until(w, ctx, lambda: w.stats().processed == 4)
        assert w.load(None, "k") == [1, 2, 3, 4, 5]
        assert w.stats().skipped == 0


# -- the ">" hazard ---------------------------------------------------------------------


@pytest.mark.parametrize("how", ["taken", "expired", "between"])
def test_a_former_owner_cannot_move_the_group(
    elm: ModuleType, admin: Any, ks: Keyspace, how: str
) -> None:
    """A worker that still thinks it owns a shard reads nothing and moves nothing.

    ``taken``: another worker holds the lease when the zombie's round starts;
    ``expired``: the lease lapsed while it was away; ``between``: the lease is
    taken over after the worker's round decided to read the shard and before
    the read reaches the server (a hook on the worker's own connection), the
    case that a lease check separate from the read would miss.
    """
    stream, lease_key = f"{ks.name}:0", f"{ks.name}:lease:0"
    armed = [False]

    def take_over(packed: bytes) -> None:
        if armed[0] and names_arg(packed, stream):
            armed[0] = False
            admin.set(lease_key, "other")

    client, _ = hooked_client(take_over)
    fold = Fold(elm)
    store = elm.MemoryStore()
    events = [(f"k{i % 3}", i) for i in range(9)]
    ids = produce(elm, admin, ks.name, 1, events)
    lease = 0.5 if how == "expired" else 5.0
    zombie = worker(elm, client, ks.name, store, fold, shards=1, page=3, lease=lease)
    ctx = elm.Context()
    try:
        zombie._beat("balance")
        assert zombie._page_of(ctx, zombie._owned[0])  # entries 0..2 applied and acknowledged
        admin.xreadgroup("elmstate", "owner", {stream: ">"}, count=1)  # entry 3 pending
        before = group_info(admin, stream)
        pending_before = pel(admin, stream)
        assert before["last-delivered-id"] == ids[3].encode()
        assert pending_before == [(ids[3].encode(), b"owner", 1)]
        calls_before = dict(fold.calls)
        if how == "taken":
            admin.set(lease_key, "other")
            busy = zombie._step(ctx)  # no heartbeat due: the round reads shard 0
        elif how == "expired":
            assert wait_until(lambda: not admin.exists(lease_key), timeout=5)
            busy = zombie._page_of(ctx, zombie._owned[0])
        else:
            armed[0] = True
            busy = zombie._page_of(ctx, zombie._owned[0])
            assert not armed[0]  # the hook did fire, just before the read
        after = group_info(admin, stream)
        assert after["last-delivered-id"] == before["last-delivered-id"]
        assert after["entries-read"] == before["entries-read"]
        assert after["pending"] == before["pending"] == 1
        assert pel(admin, stream) == pending_before  # delivery counts too
        assert dict(fold.calls) == calls_before  # nothing applied
        assert busy is False
        assert 0 not in zombie._owned  # it gave the shard up
        assert admin.get(lease_key) == (None if how == "expired" else b"other")
        # The new owner reads everything the zombie left: nothing lost, nothing twice.
        new = worker(elm, admin, ks.name, store, fold, shards=1, page=3, worker_id="other")
        step_until(new, ctx, lambda: sum(new.stats().lag.values()) == 0 and new._owned != {})
        for key, values in folds(events).items():
            assert new.load(None, key) == values
        assert set(fold.calls.values()) == {1}
    finally:
        client.close()


# -- conflicts --------------------------------------------------------------------------


@pytest.mark.parametrize("saves", SAVES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_save_that_conflicts_drops_and_releases_the_shard(
    elm: ModuleType, admin: Any, ks: Keyspace, tmp_path: Path, kind: str, saves: str
) -> None:
    shards = 2
    (key,) = keys_on(0, shards, 1)
    (other_key,) = keys_on(1, shards, 1)
    fold = Fold(elm)
    with generation_store(elm, kind, tmp_path, conflicts=True) as real:
        store = saving(real, saves)
        intruder = another_handle(elm, kind, tmp_path, real)
        try:
            produce(elm, admin, ks.name, shards, [(key, 1), (other_key, 1)])
            w = worker(elm, admin, ks.name, store, fold, shards=shards)
            ctx = elm.Context()
            step_until(w, ctx, lambda: w.stats().processed == 2)

            def another_writer(hydrated_key: str, value: bytes) -> None:
                # Between the worker's load and its save, another writer saves the key.
                fold.before_hydrate = None
                intruder.store(None, hydrated_key, b'["intruder"]')

            fold.before_hydrate = another_writer
            ids = produce(elm, admin, ks.name, shards, [(key, 2), (key, 3)])
            w._step(ctx)
            stats = w.stats()
            assert stats.conflicts == 1 and stats.processed == 2
            assert stats.shards_owned == 1 and 0 not in w._owned and 1 in w._owned
            assert not admin.exists(f"{ks.name}:lease:0")  # released, not left to lapse
            assert pending_ids(admin, f"{ks.name}:0") == [i.encode() for i in ids]  # no ack
            assert store.load(None, key) == b'["intruder"]'  # not overwritten
            # Taken again, the shard is read from its pending entries on.
            w._beat("balance")
            step_until(w, ctx, lambda: w.stats().processed == 4)
            assert w.load(None, key) == ["intruder", 2, 3]
            assert pending_ids(admin, f"{ks.name}:0") == []
            assert w.stats().conflicts == 1
        finally:
            if intruder is not real:
                intruder.close()


class ResendingStore:
    """A real store whose client sends every versioned save twice, as redis-py
    does when a reply is lost: the first lands, the second raises Conflict."""

    def __init__(self, store: Any) -> None:
        self.inner = store
        self.resent = 0

    def load(self, ctx: Any, key: str) -> bytes | None:
        return self.inner.load(ctx, key)  # type: ignore[no-any-return]

    def store(self, ctx: Any, key: str, value: bytes) -> None:
        self.inner.store(ctx, key, value)

    def load_versioned(self, ctx: Any, key: str) -> tuple[bytes | None, int]:
        return self.inner.load_versioned(ctx, key)  # type: ignore[no-any-return]

    def store_versioned(self, ctx: Any, key: str, value: bytes, version: int) -> int:
        self.inner.store_versioned(ctx, key, value, version)
        self.resent += 1
        return self.inner.store_versioned(ctx, key, value, version)  # type: ignore[no-any-return]


class ResendingPageStore(ResendingStore):
    """As ResendingStore, for a page's save of many keys at once: the first delivery
    lands, the re-sent one raises Conflict (the worker then checks key by key)."""

    def load_many_versioned(self, ctx: Any, keys: list[str]) -> list[tuple[bytes | None, int]]:
        return self.inner.load_many_versioned(ctx, keys)  # type: ignore[no-any-return]

    def store_many_versioned(self, ctx: Any, items: list[tuple[str, bytes, int]]) -> list[int]:
        self.inner.store_many_versioned(ctx, items)
        self.resent += len(items)
        return self.inner.store_many_versioned(ctx, items)  # type: ignore[no-any-return]


@pytest.mark.parametrize("saves", SAVES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_lost_reply_conflict_is_a_success(
    elm: ModuleType, admin: Any, ks: Keyspace, tmp_path: Path, kind: str, saves: str
) -> None:
    fold = Fold(elm)
    output = ks.name + "-out"
    with generation_store(elm, kind, tmp_path, conflicts=True) as real:
        store = ResendingStore(real) if saves == "key" else ResendingPageStore(real)
        events = [("k", 1), ("k", {"emit": 2, "to": "a"}), ("j", 3)]
        produce(elm, admin, ks.name, 1, events)
        w = worker(elm, admin, ks.name, store, fold, shards=1, output=output)
        ctx = elm.Context()
        step_until(w, ctx, lambda: w.stats().lag == {0: 0})
        assert store.resent == 2  # both saves conflicted on their re-sent copy
        stats = w.stats()
        assert stats.conflicts == 0 and stats.shards_owned == 1 and stats.dead_lettered == 0
        assert w.load(None, "k") == [1, 2] and w.load(None, "j") == [3]
        assert pending_ids(admin, f"{ks.name}:0") == []
        out = admin.xrange(f"{output}:{zlib.crc32(b'a') % 1}")
        assert [(f[b"key"], f[b"payload"], f[b"dedupe"]) for _, f in out] == [
            (b"a", b"2", b"k:1:0")
        ]
        assert set(fold.calls.values()) == {1}


# -- poison ---------------------------------------------------------------------------


@pytest.mark.parametrize("max_failures", [1, 3])
def test_a_poison_entry_is_dead_lettered_after_max_failures(
    elm: ModuleType, admin: Any, ks: Keyspace, max_failures: int
) -> None:
    fold = Fold(elm, poison=("bad",))
    store = elm.MemoryStore()
    ids = produce(elm, admin, ks.name, 1, [("k", 1), ("j", 10), ("k", "bad"), ("j", 11), ("k", 2)])
    w = worker(elm, admin, ks.name, store, fold, shards=1, max_failures=max_failures)
    ctx = elm.Context()
    stream = f"{ks.name}:0"
    attempts = 0
    late: list[str] = []
    deadline = time.monotonic() + 10
    while not dead_letters(admin, ks.name):
        assert time.monotonic() < deadline
        calls = fold.calls_of("bad")
        w._step(ctx)
        if fold.calls_of("bad") > calls:
            attempts += 1  # a round that tried the poison entry
        if dead_letters(admin, ks.name):
            break
        # Waiting: the key's later entries with it, read but not acknowledged.
        assert w.load(None, "k") == [1]
        assert {ids[2].encode(), ids[4].encode()} <= set(pending_ids(admin, stream))
        if not late:
            # More entries come in a page of their own (the retry held back
            # meanwhile): the key's wait too, the other key's are applied.
            late = produce(elm, admin, ks.name, 1, [("k", 3), ("j", 12)])
            shard = w._owned[0]
            shard.retry_at["k"], due = time.monotonic() + 60, shard.retry_at["k"]
            calls = fold.calls_of("bad")
            w._step(ctx)
            assert fold.calls_of("bad") == calls  # "bad" not retried in this round
            assert w.load(None, "k") == [1] and w.load(None, "j") == [10, 11, 12]
            assert late[0].encode() in pending_ids(admin, stream)
            shard.retry_at["k"] = due
        time.sleep(0.01)
    assert attempts == max_failures
    if not late:  # dead-lettered in the first round
        produce(elm, admin, ks.name, 1, [("k", 3), ("j", 12)])
    (letter,) = dead_letters(admin, ks.name)
    assert letter["key"] == b"k" and letter["payload"] == b'"bad"'
    assert letter["shard"] == b"0" and letter["id"] == ids[2].encode()
    assert b"RuntimeError" in letter["error"] and b"poison 'bad'" in letter["error"]
    step_until(w, ctx, lambda: w.load(None, "k") == [1, 2, 3])
    step_until(w, ctx, lambda: pending_ids(admin, stream) == [] and w.stats().lag == {0: 0})
    assert w.load(None, "j") == [10, 11, 12]
    stats = w.stats()
    assert (stats.processed, stats.dead_lettered) == (6, 1)
    assert fold.calls_of(2) == fold.calls_of(3) == 1
    assert dead_letters(admin, ks.name) == [letter]  # once


def test_a_former_owner_cannot_dead_letter(elm: ModuleType, admin: Any, ks: Keyspace) -> None:
    """The lease is taken over just before the dead letter would be written: the
    entry is neither dead-lettered nor acknowledged (the new owner may apply it)."""
    lease_key = f"{ks.name}:lease:0"
    armed = [False]

    def take_over(packed: bytes) -> None:
        if armed[0] and names_arg(packed, f"{ks.name}:dead"):
            armed[0] = False
            admin.set(lease_key, "other")

    client, _ = hooked_client(take_over)
    try:
        fold = Fold(elm, poison=("bad",))
        ids = produce(elm, admin, ks.name, 1, [("k", "bad"), ("k", 1)])
        w = worker(elm, client, ks.name, elm.MemoryStore(), fold, shards=1, max_failures=1)
        w._beat("balance")
        armed[0] = True
        w._step(elm.Context())
        assert not armed[0]  # it tried to dead-letter
        assert dead_letters(admin, ks.name) == []
        assert pending_ids(admin, f"{ks.name}:0") == [i.encode() for i in ids]
        assert admin.get(lease_key) == b"other"  # and left the new owner's lease alone
        assert w._owned == {} and w.stats().dead_lettered == 0
    finally:
        client.close()


def test_deleted_pending_entries_are_acknowledged(
    elm: ModuleType, admin: Any, ks: Keyspace
) -> None:
    """A pending entry deleted meanwhile comes back from a pending read with no
    fields: the next owner acknowledges it and goes on."""
    fold = Fold(elm, poison=("bad",))
    store = elm.MemoryStore()
    stream = f"{ks.name}:0"
    ids = produce(elm, admin, ks.name, 1, [("k", "bad"), ("k", 1), ("j", 2), ("j", 3)])
    first = worker(elm, admin, ks.name, store, fold, shards=1, max_failures=100, page=2)
    first._beat("balance")
    first._page_of(elm.Context(), first._owned[0])  # both of k's pending, held
    first._release()
    admin.xdel(stream, ids[1])
    admin.xdel(stream, ids[0])
    second = worker(elm, admin, ks.name, store, fold, shards=1, page=2)
    step_until(second, elm.Context(), lambda: second.stats().lag == {0: 0})
    assert pending_ids(admin, stream) == []
    assert second.stats().skipped == 2 and second.stats().processed == 2
    assert second.load(None, "k") is None and second.load(None, "j") == [2, 3]
    assert dead_letters(admin, ks.name) == []


def test_bad_entries_are_dead_lettered_and_the_worker_goes_on(
    elm: ModuleType, admin: Any, ks: Keyspace
) -> None:
    fold = Fold(elm)
    store = elm.MemoryStore()
    stream = f"{ks.name}:0"
    w = worker(elm, admin, ks.name, store, fold, shards=1, max_failures=2)
    bad = {
        "not JSON": ({"key": "k", "payload": b"{not json"}, "JSONDecodeError"),
        "no key": ({"payload": b"1"}, "no key field"),
        "no payload": ({"key": "k"}, "no payload field"),
        "another format": ({"type": "click", "user": "u1"}, "no key field"),
        "key not UTF-8": ({"key": b"\xff\xfe", "payload": b"1"}, "not UTF-8"),
    }
    entry_ids = {}
    for label, (fields, _) in bad.items():
        entry_ids[admin.xadd(stream, fields)] = label
    produce(elm, admin, ks.name, 1, [("k", 5), ("j", 1)])
    with Running(elm, w) as running:
        assert wait_until(lambda: w.stats().dead_lettered == 5)
        assert wait_until(lambda: w.load(None, "k") == [5] and w.load(None, "j") == [1])
        produce(elm, admin, ks.name, 1, [("k", 6)])  # still running: no crash loop
        assert wait_until(lambda: w.load(None, "k") == [5, 6])
        assert running.thread.is_alive() and running.error is None
        running.stop()
    letters = {d["id"]: d for d in dead_letters(admin, ks.name)}
    assert set(letters) == set(entry_ids)
    for entry_id, label in entry_ids.items():
        fields, error = bad[label]
        assert error in letters[entry_id]["error"].decode(), label
        assert letters[entry_id]["shard"] == b"0"
        assert letters[entry_id]["payload"] == fields.get("payload", b"")
    assert pending_ids(admin, stream) == []


def test_a_snapshot_the_hydrator_cannot_read_dead_letters_every_entry(
    elm: ModuleType, admin: Any, ks: Keyspace
) -> None:
    fold = Fold(elm)
    store = elm.MemoryStore()
    version = store.store_versioned(None, "k", b"not JSON at all", 0)
    ids = produce(elm, admin, ks.name, 1, [("k", 1), ("j", 1), ("k", 2), ("k", 3)])
    w = worker(elm, admin, ks.name, store, fold, shards=1, max_failures=2)
    with Running(elm, w) as running:
        assert wait_until(lambda: w.stats().dead_lettered == 3)
        assert wait_until(lambda: w.stats().lag == {0: 0})
        running.stop()
    letters = dead_letters(admin, ks.name)
    assert [d["id"] for d in letters] == [ids[0].encode(), ids[2].encode(), ids[3].encode()]
    assert all(b"JSONDecodeError" in d["error"] for d in letters)
    assert [d["payload"] for d in letters] == [b"1", b"2", b"3"]
    assert store.load_versioned(None, "k") == (b"not JSON at all", version)  # untouched
    assert w.load(None, "j") == [1]
    assert fold.calls_of(1) == 1  # j's only: k's entries never reached a transform


# -- output -------------------------------------------------------------------------


def output_entries(client: Any, output: str, shards: int) -> list[tuple[int, bytes, Any, bytes]]:
    found = []
    for shard in range(shards):
        for _, f in client.xrange(f"{output}:{shard}"):
            found.append((shard, f[b"key"], json.loads(f[b"payload"]), f[b"dedupe"]))
    return found


def test_emitted_messages_reach_the_output_stream(
    elm: ModuleType, admin: Any, ks: Keyspace
) -> None:
    output = ks.name + "-out"
    admin.hset(f"{output}:meta", "shards", 3)  # the output's own shard count
    fold = Fold(elm)
    store = elm.MemoryStore()
    w = worker(elm, admin, ks.name, store, fold, shards=2, output=output)
    ctx = elm.Context()
    events = [("k", {"emit": "one", "to": "a"}), ("k", {"emit": "two", "to": "b"})]
    events += [("j", {"loop": 7})]
    produce(elm, admin, ks.name, 2, events)
    step_until(w, ctx, lambda: w.stats().processed == 3)
    produce(elm, admin, ks.name, 2, [("k", {"emit": "three", "to": "a"})])
    step_until(w, ctx, lambda: w.stats().processed == 4)
    a, b = zlib.crc32(b"a") % 3, zlib.crc32(b"b") % 3
    assert sorted(output_entries(admin, output, 3)) == sorted(
        [
            (a, b"a", "one", b"k:1:0"),
            (b, b"b", "two", b"k:1:1"),
            (a, b"a", "three", b"k:2:0"),
        ]
    )
    # Emitted messages never reach update; plain messages loop back to it.
    assert w.load(None, "k") == ["one", "two", "three"]
    assert w.load(None, "j") == [{"loop": 7}, 7]
    assert fold.calls_of(7) == 1


def test_a_new_owner_does_not_carry_a_published_outbox(
    elm: ModuleType, admin: Any, ks: Keyspace
) -> None:
    """Workers taking a key in turn (each its own, fresh worker object) each publish
    their own message once: a stored outbox whose page was acknowledged was
    published, so it is not carried into the next save nor sent again, and the
    snapshot's outbox holds the last save's messages only."""
    output = ks.name + "-out"
    fold = Fold(elm)
    store = elm.MemoryStore()
    ctx = elm.Context()
    for i in range(4):
        produce(elm, admin, ks.name, 1, [("k", {"emit": i, "to": "a"})])
        w = worker(elm, admin, ks.name, store, fold, shards=1, output=output)
        step_until(w, ctx, lambda w=w: w.stats().processed == 1)
        w._release()
        value, _ = store.load_versioned(None, "k")
        assert [item.payload for item in elm.redis._envelope.unwrap(value).outbox] == [
            str(i).encode()
        ]
    sent = [payload for _, _, payload, _ in output_entries(admin, output, 1)]
    assert sent == [0, 1, 2, 3]  # once each: nothing sent again
    assert w.load(None, "k") == [0, 1, 2, 3]


def test_a_busy_worker_shares_its_shards_with_a_new_one(
    elm: ModuleType, admin: Any, ks: Keyspace
) -> None:
    """Balance happens between pages of a busy worker too (a renewal of its leases
    in the middle of a page must not put it off): a worker that joins while the
    first has a backlog gets its share within a few heartbeats."""
    fold = Fold(elm)
    fold.delay = 0.002  # a slow program: the backlog lasts seconds
    store = elm.MemoryStore()
    produce(elm, admin, ks.name, 4, [(f"key-{i % 40}", i) for i in range(3000)])
    first = worker(elm, admin, ks.name, store, fold, shards=4, lease=0.6, page=50)
    second = worker(elm, admin, ks.name, store, fold, shards=4, lease=0.6, page=50)
    with Running(elm, first) as busy:
        assert wait_until(lambda: first.stats().processed > 0)
        with Running(elm, second) as joined:
            shared = wait_until(lambda: second.stats().shards_owned == 2, timeout=3.0)
            backlog = 3000 - first.stats().processed - second.stats().processed
            joined.stop()
        busy.stop()
    assert shared, (first.stats(), second.stats())
    assert backlog > 0  # it was shared while the first still had work


def test_an_emit_without_output_fails_its_tick(elm: ModuleType, admin: Any, ks: Keyspace) -> None:
    fold = Fold(elm)
    store = elm.MemoryStore()
    ids = produce(elm, admin, ks.name, 1, [("k", 1), ("k", {"emit": 2, "to": "a"}), ("k", 3)])
    w = worker(elm, admin, ks.name, store, fold, shards=1, max_failures=1)
    ctx = elm.Context()
    step_until(w, ctx, lambda: w.load(None, "k") == [1, 3])
    (letter,) = dead_letters(admin, ks.name)
    assert letter["id"] == ids[1].encode() and b"no output" in letter["error"]


def test_the_outbox_is_published_again_after_a_crash_before_publishing(
    elm: ModuleType, admin: Any, ks: Keyspace
) -> None:
    output = ks.name + "-out"
    crash = [True]

    def die_before_publishing(packed: bytes) -> None:
        if crash[0] and b"XACK" in packed:
            raise redis.ConnectionError("killed between save and publish")

    client, _ = hooked_client(die_before_publishing)
    fold = Fold(elm)
    store = elm.MemoryStore()
    try:
        events = [("k", {"emit": "one", "to": "a"}), ("k", {"emit": "two", "to": "a"})]
        ids = produce(elm, admin, ks.name, 1, events)
        first = worker(elm, client, ks.name, store, fold, shards=1, output=output, lease=0.5)
        ctx = elm.Context()
        first._beat("balance")
        with pytest.raises(redis.ConnectionError, match="killed"):
            first._step(ctx)
        # Saved with its outbox, not published, not acknowledged.
        assert store.load(None, "k") is not None and fold.calls_of({"emit": "one", "to": "a"}) == 1
        assert output_entries(admin, output, 1) == []
        assert pending_ids(admin, f"{ks.name}:0") == [i.encode() for i in ids]
        # The first worker is dead: its lease lapses, another takes over.
        assert wait_until(lambda: not admin.exists(f"{ks.name}:lease:0"), timeout=5)
        second = worker(elm, admin, ks.name, store, fold, shards=1, output=output)
        step_until(second, ctx, lambda: second.stats().lag == {0: 0} and second._owned != {})
        assert output_entries(admin, output, 1) == [
            (0, b"a", "one", b"k:1:0"),
            (0, b"a", "two", b"k:1:1"),
        ]
        assert (second.stats().skipped, second.stats().processed) == (2, 0)
        assert second.load(None, "k") == ["one", "two"]
        assert set(fold.calls.values()) == {1}
    finally:
        client.close()


# -- trimming -------------------------------------------------------------------------


@pytest.mark.parametrize("trim", [True, False])
def test_shards_are_trimmed_below_the_oldest_unacknowledged(
    elm: ModuleType, admin: Any, ks: Keyspace, trim: bool
) -> None:
    fold = Fold(elm)
    store = elm.MemoryStore()
    events = [(f"k{i % 10}", i) for i in range(600)]
    produce(elm, admin, ks.name, 1, events)
    w = worker(elm, admin, ks.name, store, fold, shards=1, page=50, trim=trim)
    ctx = elm.Context()
    step_until(w, ctx, lambda: w.stats().processed == 600)
    length = admin.xlen(f"{ks.name}:0")
    if trim:
        assert length < 200, length
    else:
        assert length == 600
    for key, values in folds(events).items():
        assert w.load(None, key) == values


def test_held_entries_are_never_trimmed(elm: ModuleType, admin: Any, ks: Keyspace) -> None:
    fold = Fold(elm, poison=("bad",))
    store = elm.MemoryStore()
    stream = f"{ks.name}:0"
    before = [(f"j{i % 10}", i) for i in range(300)]
    after = [(f"j{i % 10}", i) for i in range(300, 600)]
    produce(elm, admin, ks.name, 1, before)
    held_ids = produce(elm, admin, ks.name, 1, [("k", "bad"), ("k", 1)])
    produce(elm, admin, ks.name, 1, after)
    w = worker(elm, admin, ks.name, store, fold, shards=1, page=50, max_failures=100)
    ctx = elm.Context()
    step_until(w, ctx, lambda: w.stats().processed == 600)
    assert w.stats().dead_lettered == 0 and "k" in w._owned[0].held
    remaining = stream_ids(admin, stream)
    assert len(remaining) < 602  # trimmed below the held entries...
    first_held = elm.redis.parse_id(held_ids[0])
    kept = [i for i in remaining if elm.redis.parse_id(i) >= first_held]
    assert len(kept) == 302  # ...and not one entry from them on
    assert pending_ids(admin, stream) == [i.encode() for i in held_ids]


# -- stats and load ---------------------------------------------------------------------


def test_stats_count_and_lag_is_undelivered_plus_pending(
    elm: ModuleType, admin: Any, ks: Keyspace
) -> None:
    shards = 2
    fold = Fold(elm, poison=("bad",))
    store = elm.MemoryStore()
    (j0, k0) = keys_on(0, shards, 2)
    (j1,) = keys_on(1, shards, 1, prefix="other")
    ids0 = produce(elm, admin, ks.name, shards, [(j0, 1), (j0, 2), (k0, "bad"), (k0, 3)])
    ids0 += produce(elm, admin, ks.name, shards, [(j0, 4), (j0, 5), (j0, 6)])
    produce(elm, admin, ks.name, shards, [(j1, 1), (j1, 2), (j1, 3)])
    w = worker(elm, admin, ks.name, store, fold, shards=shards, page=4, max_failures=2, trim=False)
    assert w.stats() == elm.redis.Stats(0, 0, 0, 0, 0, {})
    w._beat("balance")
    assert w.stats() == elm.redis.Stats(0, 0, 0, 0, 2, {0: 7, 1: 3})
    ctx = elm.Context()
    w._page_of(ctx, w._owned[0])  # 1, 2 applied; "bad" and 3 held (pending)
    assert len(pending_ids(admin, f"{ks.name}:0")) == 2 and admin.xlen(f"{ks.name}:0") == 7
    assert w.stats() == elm.redis.Stats(2, 0, 0, 0, 2, {0: 5, 1: 3})
    admin.xdel(f"{ks.name}:0", ids0[-1])  # an undelivered entry deleted: lag still counts
    assert w.stats().lag == {0: 4, 1: 3}
    step_until(w, ctx, lambda: w.stats().lag == {0: 0, 1: 0})
    assert w.stats() == elm.redis.Stats(8, 0, 1, 0, 2, {0: 0, 1: 0})
    admin.xgroup_setid(f"{ks.name}:1", "elmstate", "0")  # delivered again: skipped
    assert w.stats().lag == {0: 0, 1: 3}
    step_until(w, ctx, lambda: w.stats().lag == {0: 0, 1: 0})
    assert w.stats() == elm.redis.Stats(8, 3, 1, 0, 2, {0: 0, 1: 0})


def test_load_from_any_worker_object_and_process(
    elm: ModuleType, admin: Any, ks: Keyspace, tmp_path: Path
) -> None:
    fold = Fold(elm)
    path = tmp_path / "snapshots.sqlite3"
    with elm.SQLiteStore(path) as store:
        produce(elm, admin, ks.name, 3, [("k", 1), ("k", {"a": 2}), ("j", 3)])
        w = worker(elm, admin, ks.name, store, fold, shards=3)
        assert w.load(None, "k") is None
        ctx = elm.Context()
        step_until(w, ctx, lambda: w.stats().processed == 3)
        assert w.load(ctx, "k") == [1, {"a": 2}] and w.load(None, "absent") is None
    with elm.SQLiteStore(path) as other_store:
        idle = worker(elm, admin, ks.name, other_store, Fold(elm), shards=3)
        assert idle.load(None, "k") == [1, {"a": 2}] and idle.load(None, "j") == [3]
        assert idle.stats().shards_owned == 0  # never ran
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import redis, elmstate, elmstate.redis
        from _keyed import Fold, worker
        client = redis.Redis.from_url({REDIS!r})
        with elmstate.SQLiteStore({str(path)!r}) as store:
            w = worker(elmstate, client, {ks.name!r}, store, Fold(elmstate), shards=3)
            print(json.dumps([w.load(None, "k"), w.load(None, "j"), w.load(None, "none")]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=subprocess_env(elm),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [[1, {"a": 2}], [3], None]


# -- leases: rebalance and shutdown -----------------------------------------------------


def test_shards_rebalance_and_a_graceful_stop_hands_them_over_at_once(
    elm: ModuleType, admin: Any, ks: Keyspace
) -> None:
    shards, lease = 8, 3.0
    fold = Fold(elm)
    store = elm.MemoryStore()
    rng = random.Random(3)
    events = [(f"key-{rng.randrange(30)}", i) for i in range(300)]
    produce(elm, admin, ks.name, shards, events[:100])
    make = [
        worker(elm, admin, ks.name, store, fold, shards=shards, lease=lease, worker_id=f"w{i}")
        for i in range(3)
    ]
    first = Running(elm, make[0])
    others: list[Running] = []
    try:
        assert wait_until(lambda: lease_owners(admin, ks.name, shards) == {"w0": 8})
        started = time.monotonic()
        others = [Running(elm, make[1]), Running(elm, make[2])]
        produce(elm, admin, ks.name, shards, events[100:200])

        def balanced(workers: int) -> bool:
            owners = lease_owners(admin, ks.name, shards)
            low, high = shards // workers, -(-shards // workers)
            return (
                sum(owners.values()) == shards
                and len(owners) == workers
                and all(low <= n <= high for n in owners.values())
            )

        assert wait_until(lambda: balanced(3), timeout=5 * lease)
        spread_after = time.monotonic() - started
        # Stays balanced (no flapping) for a heartbeat or two.
        time.sleep(lease / 2)
        assert balanced(3)
        assert sorted(len(r.worker._owned) for r in [first, *others]) == [2, 3, 3]
        # A graceful stop releases at once; the others take the shards at their
        # next heartbeat (lease / 3), not once the leases would have lapsed.
        stopping = others.pop()
        gave = len(stopping.worker._owned)
        stopped_at = time.monotonic()
        stopping.stop()
        assert "w2" not in lease_owners(admin, ks.name, shards)
        assert admin.zscore(f"{ks.name}:workers", "w2") is None
        assert wait_until(lambda: balanced(2), timeout=5 * lease)
        handed_over = time.monotonic() - stopped_at
        assert handed_over < lease * 2 / 3, (gave, handed_over)
        produce(elm, admin, ks.name, shards, events[200:])
        assert wait_until(
            lambda: (
                first.worker.stats().processed
                + others[0].worker.stats().processed
                + stopping.worker.stats().processed
                == 300
            )
        )
        for key, values in folds(events).items():
            assert first.worker.load(None, key) == values
        print(f"spread over 3 in {spread_after:.2f}s; handed over in {handed_over:.2f}s")
    finally:
        for running in [first, *others]:
            running.stop()


def test_a_cancelled_run_returns_promptly_and_releases_its_leases(
    elm: ModuleType, admin: Any, ks: Keyspace
) -> None:
    fold = Fold(elm)
    fold.delay = 0.002  # a slow program: the cancel lands mid-page
    store = elm.MemoryStore()
    rng = random.Random(4)
    events = [(f"key-{rng.randrange(50)}", i) for i in range(400)]
    produce(elm, admin, ks.name, 2, events)
    w = worker(elm, admin, ks.name, store, fold, shards=2, page=100, worker_id="stopping")
    running = Running(elm, w)
    assert wait_until(lambda: w.stats().processed >= 30)
    took = running.stop()
    assert took < 1.0, took
    assert w.stats().processed < 400  # it really was mid-run
    assert lease_owners(admin, ks.name, 2) == {}
    assert admin.zscore(f"{ks.name}:workers", "stopping") is None
    # Rolled back cleanly: the next worker finishes, nothing lost or doubled.
    fold.delay = 0.0
    nxt = worker(elm, admin, ks.name, store, fold, shards=2)
    with Running(elm, nxt) as again:
        assert wait_until(lambda: sum(nxt.stats().lag.values()) == 0 and nxt._owned != {})
        again.stop()
    for key, values in folds(events).items():
        assert nxt.load(None, key) == values


def test_an_idle_run_returns_promptly(elm: ModuleType, admin: Any, ks: Keyspace) -> None:
    w = worker(elm, admin, ks.name, elm.MemoryStore(), Fold(elm), shards=3, worker_id="idle")
    running = Running(elm, w)
    assert wait_until(lambda: lease_owners(admin, ks.name, 3) == {"idle": 3})
    time.sleep(0.3)
    assert running.stop() < 0.5
    assert lease_owners(admin, ks.name, 3) == {}
    assert admin.zscore(f"{ks.name}:workers", "idle") is None


NO_RETRIES = "redis-py 5's default, and any client made with retry=Retry(NoBackoff(), 0)"


def test_a_connection_lost_while_idle_is_retried(elm: ModuleType, admin: Any, ks: Keyspace) -> None:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No client retries (NO_RETRIES): the worker's own backoff must handle it.
    client = redis.Redis.from_url(REDIS, client_name=ks.name, retry=Retry(NoBackoff(), 0))
    try:
        w = worker(elm, client, ks.name, elm.MemoryStore(), Fold(elm), shards=2)
        with Running(elm, w) as running:

            def blocked() -> list[Any]:
                return [
                    c
                    for c in admin.client_list()
                    if c.get("name") == ks.name and "b" in c.get("flags", "")
                ]

            assert wait_until(lambda: bool(blocked()))
            for c in blocked():  # the worker's own connection, blocked in its idle XREAD
                admin.client_kill_filter(_id=c["id"])
            assert not wait_until(lambda: running.error is not None, timeout=1.0)
            produce(elm, admin, ks.name, 2, [("k", 1)])
            assert wait_until(lambda: w.stats().processed == 1)
            running.stop()
    finally:
        client.close()


def test_a_socket_timeout_below_the_idle_block_works(
    elm: ModuleType, admin: Any, ks: Keyspace, caplog: pytest.LogCaptureFixture
) -> None:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No client retries (NO_RETRIES): a read cut short by the socket timeout surfaces.
    client = redis.Redis.from_url(REDIS, socket_timeout=0.05, retry=Retry(NoBackoff(), 0))
    try:
        fold = Fold(elm)
        w = worker(elm, client, ks.name, elm.MemoryStore(), fold, shards=2)
        with caplog.at_level("WARNING", logger="elmstate.redis"), Running(elm, w) as running:
            # Idle for 5 s: a hundred blocking reads and more.
            assert not wait_until(lambda: running.error is not None, timeout=5.0)
            produce(elm, admin, ks.name, 2, [("k", 1), ("j", 2)])
            assert wait_until(lambda: w.stats().processed == 2)
            time.sleep(0.3)
            running.stop()
        assert [r.getMessage() for r in caplog.records] == []
        assert w.load(None, "k") == [1]
    finally:
        client.close()
