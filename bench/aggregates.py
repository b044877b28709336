"""``aggregate`` against the same work done by hand, per store, and against ``eventsourcing``.

Used by compare.py (one contender per store) and aggregate_profile.py. The work,
per aggregate: load a ~1 KB snapshot, hydrate it, fold 10 messages (update +
view each), dehydrate, save by compare-and-set. Each way of doing it is an *arm*:

- ``inline`` / ``thread``: ``elmstate.aggregate(..., feed=...)`` on the store;
- ``by hand``: the same store object's ``load_versioned`` / ``store_versioned``
  called directly around the same hydrate, fold and dehydrate (so the same
  client, connection, SQL or script: only elmstate's own work differs);
- ``aio.aggregate(feed='inline')`` and ``aio by hand`` (MemoryStore only):
  ``await elmstate.aio.aggregate(..., feed="inline")`` over an ``aio.Buffer``, and
  the by-hand work written in an ``async def``, both on one asyncio event loop
  (the default loop, made once per round, untimed); each slice's clock is
  around the awaits inside the loop, not around entering it. The aio arm's
  overhead is taken against ``aio by hand``, the others' against ``by hand``;
- ``eventsourcing`` (SQLite and PostgreSQL only): the eventsourcing library's
  ``Application`` getting one aggregate from its repository (its created event
  carries the ~1 KB payload), triggering 10 events and saving it, no snapshots,
  no aggregate cache.

Each arm has keys of its own, every one with a stored snapshot (or a created
aggregate) before the clock starts. Within a round the arms are interleaved by
slices of ``SLICE`` keys, the order rotating from slice to slice, so drift on a
shared machine (and the WAL's checkpoints, autovacuum...) touches every arm
alike. Per arm and round: seconds per aggregate. Reported: medians over rounds,
and the overhead and ratio to by hand as medians of the per-round figures.

Namespaces: every run of this module uses ``elmstate_bench_<pid>_<random>``: an
SQLite temporary directory per round, a PostgreSQL table (and a schema for
eventsourcing) and a Redis key prefix, all dropped by ``close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import os
import secrets
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from workload import (
    MODEL_BYTES,
    aggregate_init,
    aggregate_update,
    dehydrator,
    hydrator,
    view,
)

import elmstate
import elmstate.aio

AGGREGATE_BATCH = 10  # messages per aggregate
SLICE = 50  # keys per interleaved slice
POSTGRES = "host=127.0.0.1 port=5432 dbname=test"
REDIS = "redis://127.0.0.1:6379/0"
NAMESPACE = f"elmstate_bench_{os.getpid()}_{secrets.token_hex(3)}"


def _optional(module: str) -> Any:
    """Import by name: typed as Any, so that mypy needs none of the optional packages."""
    return importlib.import_module(module)


# ---------------------------------------------------------------------- the arms

# Does the work for a slice of keys; returns None (timed around the call) or the
# seconds it timed itself (the aio arms: around the awaits, inside the event loop).
Work = Callable[[list[Any]], "float | None"]

INLINE = "aggregate(feed='inline')"
AIO_INLINE = "aio.aggregate(feed='inline')"
AIO_BY_HAND = "aio by hand"


@dataclass
class Arm:
    name: str
    base: str | None = "by hand"  # the arm its overhead is taken against (None: a baseline)
    keys: list[Any] = field(default_factory=list)  # this round's keys (or ids)
    per_key: list[float] = field(default_factory=list)  # seconds per aggregate, per round


class Elmstate:
    """The aggregate call and the same work by hand, on one store."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.page = list(range(1, AGGREGATE_BATCH + 1))
        self.buf = elmstate.Buffer()
        self.consumer = self.buf.new_consumer()

    def fetcher(self, ctx: Any) -> tuple[list[int], bool]:
        return self.page, False

    def seed(self, keys: list[str]) -> None:
        value = dehydrator(None, "", aggregate_init()[0])
        for key in keys:  # plain store: resets the count, bumps the version
            self.store.store(None, key, value)

    def aggregate(self, feed: str) -> Work:
        args = (aggregate_init, aggregate_update, view, self.buf, self.consumer, self.fetcher)
        store, agg = self.store, elmstate.aggregate

        def work(keys: list[Any]) -> None:
            for key in keys:
                agg(*args, store, hydrator, dehydrator, key, feed=feed)

        return work

    def by_hand(self, keys: list[Any]) -> None:
        store, page = self.store, self.page
        for key in keys:
            value, version = store.load_versioned(None, key)
            model = hydrator(None, key, value)[0]
            view(model)
            for m in page:
                t = aggregate_update(m)
                model, cmd = t(model)
                view(model)
            store.store_versioned(None, key, dehydrator(None, key, model), version)

    def check(self, keys: list[Any]) -> None:
        for key in keys:
            count = hydrator(None, key, self.store.load(None, key))[0]["count"]
            if count != AGGREGATE_BATCH:
                raise RuntimeError(f"{key}: stored count {count}, not {AGGREGATE_BATCH}")

    def close(self) -> None:
        self.consumer.close()
        self.buf.close()


class Aio:
    """``aio.aggregate`` and the same work by hand in an ``async def``, on one store and
    one event loop; each slice is timed inside the loop, around its awaits."""

    def __init__(self, store: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.loop = loop
        self.page = list(range(1, AGGREGATE_BATCH + 1))
        self.buf: Any = elmstate.aio.Buffer()
        self.consumer = self.buf.new_consumer()

    def fetcher(self, ctx: Any) -> tuple[list[int], bool]:
        return self.page, False

    def clocked(self, work: Callable[[list[Any]], Coroutine[Any, Any, None]]) -> Work:
        loop = self.loop

        def run(keys: list[Any]) -> float:
            async def timed() -> float:
                start = time.perf_counter()
                await work(keys)
                return time.perf_counter() - start

            return loop.run_until_complete(timed())

        return run

    async def aggregate(self, keys: list[Any]) -> None:
        args = (aggregate_init, aggregate_update, view, self.buf, self.consumer, self.fetcher)
        store, agg = self.store, elmstate.aio.aggregate
        for key in keys:
            await agg(*args, store, hydrator, dehydrator, key, feed="inline")

    async def by_hand(self, keys: list[Any]) -> None:
        store, page = self.store, self.page
        for key in keys:
            value, version = store.load_versioned(None, key)
            model = hydrator(None, key, value)[0]
            view(model)
            for m in page:
                t = aggregate_update(m)
                model, cmd = t(model)
                view(model)
            store.store_versioned(None, key, dehydrator(None, key, model), version)

    def close(self) -> None:
        self.consumer.close()
        self.buf.close()


_COUNTER: list[Any] = []


def _counter() -> Any:
    """The eventsourcing aggregate, defined once: eventsourcing registers each class's
    topic (module:qualname) and refuses a second class under the same one."""
    if not _COUNTER:
        domain = _optional("eventsourcing.domain")
        event = domain.event
        base: Any = domain.Aggregate

        class Counter(base):  # type: ignore[misc]
            @event("Created")  # type: ignore[untyped-decorator]
            def __init__(self, payload: str) -> None:
                self.count = 0
                self.payload = payload

            @event("Added")  # type: ignore[untyped-decorator]
            def add(self) -> None:
                self.count += 1

        _COUNTER.append(Counter)
    return _COUNTER[0]


class EventSourcing:
    """The eventsourcing library's Application over one database."""

    def __init__(self, env: dict[str, str]) -> None:
        self.counter = _counter()
        self.app = _optional("eventsourcing.application").Application(env=env)

    def seed(self, count: int) -> list[Any]:
        # a str payload: the default JSON transcoder has none for bytes
        payload = "x" * (MODEL_BYTES - 60)
        ids = []
        for _ in range(count):
            c = self.counter(payload)
            self.app.save(c)
            ids.append(c.id)
        return ids

    def work(self, ids: list[Any]) -> None:
        app, get = self.app, self.app.repository.get
        for id_ in ids:
            c = get(id_)
            for _ in range(AGGREGATE_BATCH):
                c.add()
            app.save(c)

    def check(self, ids: list[Any]) -> None:
        for id_ in ids:
            count = self.app.repository.get(id_).count
            if count != AGGREGATE_BATCH:
                raise RuntimeError(f"eventsourcing {id_}: count {count}, not {AGGREGATE_BATCH}")

    def close(self) -> None:
        self.app.close()


# ---------------------------------------------------------------------- backends


class Backend:
    """Where one group's snapshots live: opened once per round."""

    label = ""
    targets: dict[str, str] = {}  # arm -> "overhead" (≤ 15 µs) or "ratio" (≤ 1.15×)
    feeds: tuple[str, ...] = ("inline",)
    aio = False  # whether the aio arms run on it

    def unavailable(self) -> str | None:
        """Why this backend cannot run here, or None."""
        return None

    def peer_env(self, where: Path) -> dict[str, str] | None:
        """eventsourcing's environment on the same database, or None."""
        return None

    @contextlib.contextmanager
    def open(self, where: Path) -> Iterator[Any]:
        raise NotImplementedError
        yield

    def close(self) -> None:
        """Drop what this backend made (its table, schema or keys)."""


class Memory(Backend):
    label = "MemoryStore"
    targets = {INLINE: "overhead", AIO_INLINE: "overhead"}
    aio = True

    @contextlib.contextmanager
    def open(self, where: Path) -> Iterator[Any]:
        with elmstate.MemoryStore() as store:
            yield store


class SQLite(Backend):
    label = "SQLite"
    targets = {INLINE: "overhead"}
    feeds = ("inline", "thread")

    @contextlib.contextmanager
    def open(self, where: Path) -> Iterator[Any]:
        with elmstate.SQLiteStore(where / "snapshots.sqlite3") as store:
            yield store

    def peer_env(self, where: Path) -> dict[str, str] | None:
        # eventsourcing sets no synchronous pragma: SQLite's default for a WAL file
        # (FULL on the usual builds; sqlite_synchronous() says)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(where / "eventsourcing.sqlite3"),
        }


def sqlite_synchronous() -> str:
    """The synchronous level a new WAL connection gets from this SQLite build."""
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "probe.sqlite3")
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            level = conn.execute("PRAGMA synchronous").fetchone()[0]
        finally:
            conn.close()
    return {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(level, str(level))


class Postgres(Backend):
    label = "PostgreSQL"
    targets = {INLINE: "ratio"}

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.table = f"{NAMESPACE}_snapshots"
        self.schema = NAMESPACE  # eventsourcing's tables, types and functions
        self.info: dict[str, str] | None = None  # the server's, once reached

    def unavailable(self) -> str | None:
        try:
            self.module = _optional("elmstate.stores.postgres")
            psycopg = _optional("psycopg")
        except ImportError as e:
            return f"{e} (pip install '.[bench]', or elmstate[postgres])"
        try:
            with psycopg.connect(self.conninfo, connect_timeout=5, autocommit=True) as conn:
                i = conn.info
                self.info = {
                    "POSTGRES_DBNAME": i.dbname,
                    "POSTGRES_HOST": i.host,
                    "POSTGRES_PORT": str(i.port),
                    "POSTGRES_USER": i.user,
                    "POSTGRES_PASSWORD": i.password or "",
                }
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        except psycopg.Error as e:
            return f"no PostgreSQL at {self.conninfo!r}: {str(e).strip()}"
        return None

    @contextlib.contextmanager
    def open(self, where: Path) -> Iterator[Any]:
        with self.module.PostgresStore(self.conninfo, table=self.table) as store:
            yield store

    def peer_env(self, where: Path) -> dict[str, str] | None:
        if self.info is None:
            return None
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            **self.info,
            "POSTGRES_SCHEMA": self.schema,
        }

    def close(self) -> None:
        if self.info is None:
            return
        psycopg = _optional("psycopg")
        with psycopg.connect(self.conninfo, connect_timeout=5, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{self.table}"')
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


class Redis(Backend):
    label = "Redis"
    targets = {INLINE: "ratio"}

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"{NAMESPACE}:"
        self.reached = False

    def unavailable(self) -> str | None:
        try:
            self.module = _optional("elmstate.stores.redis")
            redis = _optional("redis")
        except ImportError as e:
            return f"{e} (pip install '.[bench]', or elmstate[redis])"
        try:
            with redis.Redis.from_url(self.url, socket_connect_timeout=5) as client:
                client.ping()
        except redis.RedisError as e:
            return f"no Redis at {self.url}: {e}"
        self.reached = True
        return None

    @contextlib.contextmanager
    def open(self, where: Path) -> Iterator[Any]:
        with self.module.RedisStore(self.url, prefix=self.prefix) as store:
            yield store

    def close(self) -> None:
        if not self.reached:
            return
        redis = _optional("redis")
        with redis.Redis.from_url(self.url) as client:
            keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
            for i in range(0, len(keys), 1000):
                client.delete(*keys[i : i + 1000])


# ------------------------------------------------------------------------- group


class AggregateGroup:
    """One store: its arms, interleaved by slices of keys, once per round.

    Called like compare.py's contenders: returns seconds per message of the
    inline arm (scaled so that measure()'s division by N - 1 gives it).
    """

    def __init__(self, backend: Backend, keys: int, peer: bool) -> None:
        self.backend = backend
        self.keys = keys
        self.peer = peer
        self.arms = [Arm(f"aggregate(feed={f!r})") for f in backend.feeds]
        self.arms.append(Arm("by hand", None))
        if backend.aio:
            self.arms += [Arm(AIO_INLINE, AIO_BY_HAND), Arm(AIO_BY_HAND, None)]
        if peer:
            self.arms.append(Arm("eventsourcing", None))

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)

    def __call__(self, msgs: list[int]) -> float:
        gc.collect()
        with (
            tempfile.TemporaryDirectory(prefix=f"{NAMESPACE}_") as tmp,
            self.backend.open(Path(tmp)) as store,
        ):
            mine = Elmstate(store)
            es = None
            loop = asyncio.new_event_loop() if self.backend.aio else None
            aio = Aio(store, loop) if loop is not None else None
            try:
                work: dict[str, Work] = {}
                for feed in self.backend.feeds:
                    work[f"aggregate(feed={feed!r})"] = mine.aggregate(feed)
                work["by hand"] = mine.by_hand
                if aio is not None:
                    work[AIO_INLINE] = aio.clocked(aio.aggregate)
                    work[AIO_BY_HAND] = aio.clocked(aio.by_hand)
                for a in self.arms:
                    if a.name == "eventsourcing":
                        env = self.backend.peer_env(Path(tmp))
                        assert env is not None
                        es = EventSourcing(env)
                        a.keys = es.seed(self.keys)
                        work[a.name] = es.work
                    else:
                        a.keys = [f"{a.name}-{i}" for i in range(self.keys)]
                        mine.seed(a.keys)
                totals = dict.fromkeys(work, 0.0)
                for s, start in enumerate(range(0, self.keys, SLICE)):
                    turn = s % len(self.arms)
                    for a in self.arms[turn:] + self.arms[:turn]:
                        keys = a.keys[start : start + SLICE]
                        t = time.perf_counter()
                        clocked = work[a.name](keys)
                        totals[a.name] += time.perf_counter() - t if clocked is None else clocked
                for a in self.arms:
                    a.per_key.append(totals[a.name] / self.keys)
                    if a.name == "eventsourcing" and es is not None:
                        es.check([a.keys[0], a.keys[-1]])
                    else:
                        mine.check([a.keys[0], a.keys[-1]])
            finally:
                mine.close()
                if aio is not None:
                    aio.close()
                if loop is not None:
                    loop.run_until_complete(loop.shutdown_asyncgens())
                    loop.close()
                if es is not None:
                    es.close()
        inline = self.arms[0].per_key[-1]
        return inline / AGGREGATE_BATCH * (len(msgs) - 1)

    def close(self) -> None:
        self.backend.close()

    def rows(self) -> list[str]:
        """Markdown rows of the aggregate table: one per elmstate arm, then the peer."""
        out = []
        for a in self.arms:
            if a.name == "eventsourcing":
                continue
            t = a.per_key
            med = statistics.median(t) * 1e6
            if a.base is None:
                out.append(f"| {self.backend.label} | {a.name} | {med:,.1f} | | | | | |")
                continue
            hand = self.arm(a.base).per_key
            rounds = len(hand)
            h = statistics.median(hand) * 1e6
            overs = [(t[i] - hand[i]) * 1e6 for i in range(rounds)]
            over = statistics.median(overs)
            ratios = [t[i] / hand[i] for i in range(rounds)]
            ratio = statistics.median(ratios)
            target, met = "", ""
            kind = self.backend.targets.get(a.name)
            if kind is not None:
                vals, limit, median = (
                    (overs, 15.0, over) if kind == "overhead" else (ratios, 1.15, ratio)
                )
                target = "≤ 15 µs over" if kind == "overhead" else "≤ 1.15×"
                met = "yes" if median <= limit else "no"
                if min(vals) <= limit < max(vals):
                    met += "*"  # some rounds on either side: noise, not a verdict
            out.append(
                f"| {self.backend.label} | {a.name} | {med:,.1f} | {h:,.1f} "
                f"| {over:+,.1f} ({min(overs):+,.0f} … {max(overs):+,.0f}) "
                f"| {ratio:.3f} | {target} | {met} |"
            )
        return out

    def peer_row(self) -> str | None:
        if not self.peer:
            return None
        es = self.arm("eventsourcing").per_key
        inline = self.arms[0].per_key
        ratio = statistics.median(inline[i] / es[i] for i in range(len(es)))
        return (
            f"| {self.backend.label} | {statistics.median(es) * 1e6:,.1f} "
            f"| {statistics.median(inline) * 1e6:,.1f} | {ratio:.3f} "
            f"| {'yes' if ratio < 1 else 'no'} |"
        )


def report(groups: list[AggregateGroup]) -> str:
    if not groups:
        return ""
    rounds = len(groups[0].arms[0].per_key)
    lines = [
        f"aggregate, per aggregate (load + hydrate + {AGGREGATE_BATCH} messages + dehydrate + "
        f"compare-and-set save of a ~{MODEL_BYTES:,} B model; {groups[0].keys:,} keys per arm "
        f"and round, arms interleaved by slices of {SLICE}); medians over {rounds} rounds; "
        "overhead (min … max over rounds) and × by hand are medians of the per-round "
        "figures; by hand = the same "
        "store object's load_versioned/store_versioned called directly (aio by hand: the "
        "same, in an async def on the event loop that aio.aggregate runs on, the aio row's "
        "baseline):",
        "",
        "| store | arm | µs per aggregate | by hand, µs | overhead, µs | × by hand "
        "| target | met |",
        "|---|---|--:|--:|--:|--:|--:|:-:|",
    ]
    for g in groups:
        lines += g.rows()
    lines += [
        "",
        "\\* some rounds fell on either side of the target: the median's verdict is within "
        "the noise of this run.",
    ]
    peers = [r for r in (g.peer_row() for g in groups) if r is not None]
    if peers:
        lines += [
            "",
            "eventsourcing (Application, repository.get + 10 events + save, no snapshots, "
            f"no cache; SQLite: its own file beside elmstate's, WAL, synchronous "
            f"{sqlite_synchronous()} (its default: it sets none; SQLiteStore: FULL); "
            "PostgreSQL: its own schema in the same database) vs aggregate(feed='inline'):",
            "",
            "| database | eventsourcing, µs per aggregate | elmstate inline, µs | "
            "elmstate ÷ eventsourcing | faster |",
            "|---|--:|--:|--:|:-:|",
            *peers,
        ]
    return "\n".join(lines)


def groups(keys: int, postgres: str, redis: str) -> list[AggregateGroup]:
    """Every group that can run here; prints why the others are skipped."""
    try:
        _optional("eventsourcing.application")
        peer = True
    except ImportError:
        print("skipped eventsourcing: it is not installed (pip install '.[bench]')")
        peer = False
    out = []
    backends: list[Backend] = [Memory(), SQLite(), Postgres(postgres), Redis(redis)]
    for b in backends:
        why = b.unavailable()
        if why is not None:
            print(f"skipped aggregate, {b.label}: {why}")
            continue
        out.append(AggregateGroup(b, keys, peer and b.peer_env(Path()) is not None))
    return out
