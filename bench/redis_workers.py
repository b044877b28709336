"""``KeyedWorker`` end to end, against the same work written by hand with redis-py.

    pip install '.[bench]' && python bench/redis_workers.py            # the full run
    python bench/redis_workers.py --events 2000 --keys 50 --rounds 1   # a smoke run

Needs the Redis and (for its rows) the PostgreSQL of this machine's kind on
loopback (``--redis``, ``--postgres``); a store that cannot be reached is
reported as skipped.

**The data.** ``--events`` events (default 100,000) for ``--keys`` keys (1,000),
in random key order, produced once with ``KeyedProducer`` (one ``put`` per
event) into a template logical stream of ``--shards`` shards (4). Every timed
run gets a fresh copy of those shards (``DUMP``/``RESTORE``: the same entries,
the same ids) and a fresh store, so every arm of every round does exactly the
same work and must end with byte-identical snapshots, which is checked against
the fold computed here.

**The program.** Per key a small model: a count and a 16-byte BLAKE2b chain over
the events' sequence numbers (order-sensitive), 24 bytes packed; JSON payloads.

**The arms**, run in turn within each round (the order alternating from round
to round), each on its own copy:

- ``worker``: ``KeyedWorker(page=P)``, ``run(ctx)`` until every event was
  applied (its ``update`` counts them and ends ``ctx`` on the last; pages are
  acknowledged before ``run`` returns).
- ``by hand``: a redis-py loop over the same shards: ``XREADGROUP COUNT P >``,
  group by key, the page's keys loaded with one ``load_many_versioned``, per key
  unpack + the same fold + pack, all saved with one ``store_many_versioned`` on
  the same store class (the same calls and bytes as the worker's: the worker's
  envelope, written by hand), then one ``XACK`` of the page. It does
  not trim, check leases, publish outboxes or dead-letter.

One worker (and one hand-written loop) runs in this process; two run in two
processes (``multiprocessing``, spawn), each owning half of the shards (the
workers balance before the clock starts; the hand-written processes split them
the same way); the time is from both starting together to the later one
finishing (``time.perf_counter``, CLOCK_MONOTONIC, shared by processes).

Stores: ``SQLiteStore(durable=True)`` in a temporary directory; PostgreSQL
(``elmstate.stores.postgres.PostgresStore``) in a table of its own, emptied
before every run; ``--stores memory`` adds an in-process MemoryStore (one
worker only), which shows the worker's own cost with no I/O. ``--rounds``
rounds of page 100 (the target's), ``--side-rounds`` of the other pages.
Redis keys start with ``elmstate_bench_<pid>_<random>`` and are deleted
afterwards, tables dropped.

Reported per (store, workers, page): µs per event of each arm (median over
rounds), the ratio worker ÷ by hand (median of the per-round ratios, min … max),
store writes per event (one per page: a page's keys are saved at once), and
Redis round trips per page of each arm (counted on the client: one per request
written, a pipeline or MULTI/EXEC being one). Then:

- ``--lag SECONDS`` (default 20): one worker, page 100, SQLite; a producer
  process appends events at 50 % of the throughput the 1-worker page-100 SQLite
  run measured, each carrying its wall-clock time just before its ``XADD``; a
  store wrapper stamps the time ``store_versioned`` returns, for every event the
  save covers. p50 / p99 / max of that latency.
- ``--commandstats``: the server's ``INFO commandstats`` deltas (every client's:
  the server may be shared, so an idle interval as long is measured before and
  reported beside it) over one worker run and one hand-written run.
- ``--profile``: cProfile over one worker run, the time split by where it goes.

Writes a markdown snippet (``--md``, default bench/redis_workers.md) and a plot
of throughput by page size (``--png``, default bench/redis_workers.png).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import hashlib
import importlib
import io
import json
import multiprocessing
import os
import platform
import pstats
import random
import secrets
import shutil
import signal
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

import elmstate
from elmstate.redis import KeyedProducer, KeyedWorker, parse_id

HERE = Path(__file__).resolve().parent
POSTGRES = "host=127.0.0.1 port=5432 dbname=test user=postgres"
REDIS = "redis://127.0.0.1:6379/0"
NAMESPACE = f"elmstate_bench_{os.getpid()}_{secrets.token_hex(3)}"
GROUP = "elmstate"
TARGET = 1.3  # worker ÷ by hand at page 100
LAG_TARGET = 0.050  # p99 seconds
LAG_PAGE = 100
LABELS = {"sqlite": "SQLite", "postgres": "PostgreSQL", "memory": "MemoryStore"}


def _optional(module: str) -> Any:
    return importlib.import_module(module)


# ------------------------------------------------------------------- the program

_MODEL = struct.Struct(">Q16s")
_ZERO = bytes(16)
# The worker's snapshot envelope (elmstate/redis/_envelope.py), as a hand-written
# loop that wants the same bytes would spell it: magic, applied id, empty outbox.
_MAGIC = b"\x00elmstate.redis:1\x00"
_HEAD = struct.Struct(">QQI")
_INNER = len(_MAGIC) + _HEAD.size


class _Count:
    """Events folded in this process; ends ``ctx`` at ``target`` (the worker's stop)."""

    seen = 0
    target = -1
    ctx: Any = None
    stamps: list[float] | None = None  # lag run: the XADD times of the key in hand


def init() -> tuple[tuple[int, bytes], None]:
    return (0, _ZERO), None


def _chain(h: bytes, i: int) -> bytes:
    return hashlib.blake2b(h + i.to_bytes(8, "big"), digest_size=16).digest()


def update(message: Any) -> Any:
    _Count.seen += 1
    if _Count.seen == _Count.target and _Count.ctx is not None:
        _Count.ctx.cancel()  # the last event: the page is acknowledged, then run returns
    if _Count.stamps is not None:
        _Count.stamps.append(message["t"])
    i = message["i"]

    def transform(model: tuple[int, bytes]) -> tuple[tuple[int, bytes], None]:
        return (model[0] + 1, _chain(model[1], i)), None

    return transform


def hydrator(ctx: Any, key: str, value: bytes) -> tuple[tuple[int, bytes], None]:
    return _MODEL.unpack(value), None


def dehydrator(ctx: Any, key: str, model: tuple[int, bytes]) -> bytes:
    return _MODEL.pack(*model)


def fold(events: Sequence[tuple[str, int]]) -> dict[str, bytes]:
    """The program's bytes every key must end with."""
    models: dict[str, tuple[int, bytes]] = {}
    for key, i in events:
        n, h = models.get(key, (0, _ZERO))
        models[key] = (n + 1, _chain(h, i))
    return {k: _MODEL.pack(*m) for k, m in models.items()}


# --------------------------------------------------------------- Redis and stores


class _Counting(redis.Connection):
    """Counts requests written: one per command, one per pipeline or MULTI/EXEC."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        _Counting.sent += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


def client(url: str, counting: bool = False) -> redis.Redis:
    if not counting:
        return redis.Redis.from_url(url)
    pool = redis.ConnectionPool.from_url(url, connection_class=_Counting)
    return redis.Redis(connection_pool=pool)


class _KeptMemory(elmstate.MemoryStore):
    """A MemoryStore that outlives close(), so that the run can be checked after it."""

    def close(self) -> None:
        pass


_MEMORY: dict[str, Any] = {}


def open_store(kind: str, where: str, conninfo: str, table: str) -> Any:
    if kind == "memory":  # one process only: the worker's own overhead, no I/O
        return _MEMORY.setdefault(where, _KeptMemory())
    if kind == "sqlite":
        return elmstate.SQLiteStore(Path(where) / "snapshots.sqlite3", durable=True)
    return _optional("elmstate.stores.postgres").PostgresStore(conninfo, table=table)


@dataclass
class Setup:
    """What a run needs to reopen everything in another process."""

    redis_url: str
    store: str  # "sqlite" or "postgres"
    where: str  # the SQLite directory of this run
    conninfo: str
    table: str
    name: str  # this run's logical stream
    shards: int
    page: int


def _shard_of(key: str, shards: int) -> int:
    return elmstate.redis.shard_of(key, shards)


# ----------------------------------------------------------------------- the arms


def hand_loop(
    r: redis.Redis, store: Any, name: str, shards: list[int], page: int
) -> tuple[int, int]:
    """The same reads, saves and acknowledgements, written by hand: (entries, pages) read.

    Ends when a round over its shards reads nothing (the streams were filled
    before the clock started).
    """
    streams = [f"{name}:{i}" for i in shards]
    done = pages = 0
    loads = json.loads
    while True:
        read = 0
        for stream in streams:
            reply: Any = r.xreadgroup(GROUP, "owner", {stream: ">"}, count=page)
            if not reply:
                continue
            entries = reply[0][1]
            keys: dict[str, list[tuple[bytes, bytes]]] = {}
            for raw_id, fields in entries:
                keys.setdefault(fields[b"key"].decode(), []).append((raw_id, fields[b"payload"]))
            # The worker's store calls: a page's keys loaded and saved at once on a
            # store that can (every bundled one), else key by key.
            many = hasattr(store, "store_many_versioned")
            names = list(keys)
            if many:
                loaded = store.load_many_versioned(None, names)
            else:
                loaded = [store.load_versioned(None, key) for key in names]
            saves = []
            for key, (value, version) in zip(names, loaded):
                items = keys[key]
                if value is None:
                    model = init()[0]
                else:
                    model = hydrator(None, key, value[_INNER:])[0]
                for _, payload in items:
                    model, _ = update(loads(payload))(model)
                ms, seq = parse_id(items[-1][0])
                wrapped = _MAGIC + _HEAD.pack(ms, seq, 0) + dehydrator(None, key, model)
                if many:
                    saves.append((key, wrapped, version))
                else:
                    store.store_versioned(None, key, wrapped, version)
            if saves:
                store.store_many_versioned(None, saves)
            r.xack(stream, GROUP, *[raw_id for raw_id, _ in entries])
            read += len(entries)
            pages += 1
        if not read:
            return done, pages
        done += read


def make_worker(r: redis.Redis, store: Any, setup: Setup, worker_id: str) -> KeyedWorker[Any, Any]:
    return KeyedWorker(
        r,
        setup.name,
        shards=setup.shards,
        store=store,
        init=init,
        update=update,
        hydrator=hydrator,
        dehydrator=dehydrator,
        page=setup.page,
        worker_id=worker_id,
    )


@dataclass
class Result:
    start: float
    end: float
    events: int
    requests: int
    pages: int


def run_worker(worker: KeyedWorker[Any, Any], target: int) -> Result:
    ctx = elmstate.Context()
    _Count.seen, _Count.target, _Count.ctx = 0, target, ctx
    pages = _count_pages(worker)
    sent = _Counting.sent
    start = time.perf_counter()
    worker.run(ctx)
    end = time.perf_counter()
    _Count.ctx = None
    if _Count.seen != target:
        raise RuntimeError(f"the worker applied {_Count.seen} events, not {target}")
    return Result(start, end, target, _Counting.sent - sent, pages[0])


def _count_pages(worker: KeyedWorker[Any, Any]) -> list[int]:
    """Count the worker's pages that read entries (wraps an instance attribute only)."""
    pages = [0]
    read = worker._leases.read

    def counted(*args: Any, **kwargs: Any) -> Any:
        reply = read(*args, **kwargs)
        if reply and reply[0]:
            pages[0] += 1
        return reply

    leases: Any = worker._leases
    leases.read = counted
    return pages


def run_hand(r: redis.Redis, store: Any, setup: Setup, shards: list[int]) -> Result:
    _Count.seen, _Count.target, _Count.ctx = 0, -1, None
    sent = _Counting.sent
    start = time.perf_counter()
    events, pages = hand_loop(r, store, setup.name, shards, setup.page)
    end = time.perf_counter()
    return Result(start, end, events, _Counting.sent - sent, pages)


def child(arm: str, setup: Setup, index: int, barrier: Any, out: Any) -> None:
    """One of two processes of an arm: own clients, balance, start together, report."""
    try:
        r = client(setup.redis_url, counting=True)
        store = open_store(setup.store, setup.where, setup.conninfo, setup.table)
        counts = {int(k): int(v) for k, v in r.hgetall(f"{setup.name}:bench:counts").items()}
        if arm == "worker":
            worker = make_worker(r, store, setup, f"bench-{index}")
            worker._beat("renew")  # joins the live workers, takes nothing
            barrier.wait()
            worker._beat("balance")  # both live: each takes half of the shards
            barrier.wait()
            owned = sorted(worker._owned)
            barrier.wait()
            result = run_worker(worker, sum(counts[s] for s in owned))
        else:
            half = (setup.shards + 1) // 2
            owned = (
                list(range(setup.shards))[:half] if index == 0 else list(range(half, setup.shards))
            )
            barrier.wait()
            barrier.wait()
            barrier.wait()
            result = run_hand(r, store, setup, owned)
        store.close()
        r.close()
        out.put((index, result, owned, None))
    except BaseException as exc:  # reported to the parent, which raises
        barrier.abort()
        out.put((index, None, [], repr(exc)))


# ---------------------------------------------------------------------- a bench


@dataclass
class Cell:
    """One (store, workers, page): per arm and round, seconds per event and more."""

    store: str
    workers: int
    page: int
    per_event: dict[str, list[float]] = field(default_factory=lambda: {"worker": [], "hand": []})
    per_page: dict[str, list[float]] = field(default_factory=lambda: {"worker": [], "hand": []})
    saves_per_event: float = 0.0

    def ratio(self) -> list[float]:
        w, h = self.per_event["worker"], self.per_event["hand"]
        return [a / b for a, b in zip(w, h)]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.r = client(args.redis)
        self.temp = Path(tempfile.mkdtemp(prefix=f"{NAMESPACE}_"))
        self.tables: list[str] = []
        self.runs = 0
        self.events: list[tuple[str, int]] = []
        self.dumps: list[bytes] = []
        self.counts: dict[int, int] = {}
        self.expected: dict[str, bytes] = {}
        self.order: list[str] = []

    # ---- data

    def produce(self) -> None:
        """The template: events in random key order, one KeyedProducer.put each."""
        a = self.args
        rng = random.Random(2024)
        keys = [f"key-{k}" for k in range(a.keys)]
        per_key = a.events // a.keys
        order = [k for k in keys for _ in range(per_key)]
        order += rng.sample(keys, a.events - len(order))
        rng.shuffle(order)
        name = f"{NAMESPACE}:template"
        producer = KeyedProducer(self.r, name, shards=a.shards)
        t = time.perf_counter()
        for i, key in enumerate(order):
            producer.put(None, key, {"i": i})
        took = time.perf_counter() - t
        print(f"produced {a.events:,} events on {a.keys:,} keys in {took:.1f} s", flush=True)
        self.events = [(key, i) for i, key in enumerate(order)]
        self.expected = fold(self.events)
        self.dumps = [self.r.dump(f"{name}:{s}") or b"" for s in range(a.shards)]
        self.counts = dict.fromkeys(range(a.shards), 0)
        for key in order:
            self.counts[_shard_of(key, a.shards)] += 1
        self.order = order

    def saves_per_event(self, page: int) -> float:
        """Store writes one pass makes at this page size, per event (the same for both
        arms): one per page, every bundled store saving a page's keys at once."""
        pages = sum(-(-count // page) for count in self.counts.values())
        return pages / len(self.order)

    def fresh(self, store: str, page: int, arm: str) -> Setup:
        """A copy of the template's shards and an empty store, for one timed run."""
        self.runs += 1
        a = self.args
        name = f"{NAMESPACE}:run{self.runs}"
        for s, dump in enumerate(self.dumps):
            self.r.restore(f"{name}:{s}", 0, dump)
            self.r.xgroup_create(f"{name}:{s}", GROUP, id="0")
        self.r.hset(f"{name}:bench:counts", mapping={str(s): n for s, n in self.counts.items()})
        where = self.temp / f"run{self.runs}"
        where.mkdir()
        table = f"{NAMESPACE}_{arm}"
        if store == "postgres":
            if table not in self.tables:
                self.tables.append(table)
            self._sql(f'DROP TABLE IF EXISTS "{table}"')
        return Setup(a.redis, store, str(where), a.postgres, table, name, a.shards, page)

    def cleanup_run(self, setup: Setup) -> None:
        _MEMORY.pop(setup.where, None)
        self._delete(f"{setup.name}:*")
        shutil.rmtree(setup.where, ignore_errors=True)

    def _delete(self, pattern: str) -> None:
        keys = list(self.r.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 500):
            self.r.delete(*keys[i : i + 500])

    def _sql(self, statement: str) -> None:
        psycopg = _optional("psycopg")
        with psycopg.connect(self.args.postgres, autocommit=True) as conn:
            conn.execute(statement)

    def close(self) -> None:
        self._delete(f"{NAMESPACE}:*")
        for table in self.tables:
            with contextlib.suppress(Exception):
                self._sql(f'DROP TABLE IF EXISTS "{table}"')
        shutil.rmtree(self.temp, ignore_errors=True)
        self.r.close()

    def check(self, setup: Setup) -> None:
        """Every key's snapshot is the fold of its events, in the worker's envelope."""
        store = open_store(setup.store, setup.where, setup.conninfo, setup.table)
        try:
            for key, inner in self.expected.items():
                value = store.load(None, key)
                if value is None or value[_INNER:] != inner or not value.startswith(_MAGIC):
                    raise RuntimeError(f"{setup.name} {key}: stored {value!r}, not the fold")
        finally:
            store.close()
        for s in range(setup.shards):
            pending = self.r.xpending(f"{setup.name}:{s}", GROUP)["pending"]
            if pending:
                raise RuntimeError(f"{setup.name}:{s}: {pending} entries left unacknowledged")

    # ---- one timed run of an arm

    def run(self, arm: str, store: str, workers: int, page: int) -> Result:
        setup = self.fresh(store, page, arm)
        try:
            result = self._one(arm, setup) if workers == 1 else self._two(arm, setup)
            if result.events != self.args.events:
                raise RuntimeError(f"{arm}: {result.events} events, not {self.args.events}")
            self.check(setup)
            return result
        finally:
            self.cleanup_run(setup)

    def _one(self, arm: str, setup: Setup) -> Result:
        r = client(setup.redis_url, counting=True)
        st = open_store(setup.store, setup.where, setup.conninfo, setup.table)
        try:
            if arm == "worker":
                worker = make_worker(r, st, setup, "bench-0")
                worker._beat("balance")
                return run_worker(worker, self.args.events)
            return run_hand(r, st, setup, list(range(setup.shards)))
        finally:
            st.close()
            r.close()

    def _two(self, arm: str, setup: Setup) -> Result:
        mp = multiprocessing.get_context("spawn")
        barrier = mp.Barrier(2)
        out = mp.Queue()
        procs = [mp.Process(target=child, args=(arm, setup, i, barrier, out)) for i in range(2)]
        for p in procs:
            p.start()
        replies = [out.get(timeout=3600) for _ in procs]
        for p in procs:
            p.join()
        errors = [e for _, _, _, e in replies if e]
        if errors:
            raise RuntimeError(f"{arm} child failed: {errors}")
        results = [res for _, res, _, _ in replies]
        owned = [o for _, _, o, _ in replies]
        if sorted(s for o in owned for s in o) != list(range(setup.shards)):
            raise RuntimeError(f"{arm}: the processes owned {owned}")
        return Result(
            min(x.start for x in results),
            max(x.end for x in results),
            sum(x.events for x in results),
            sum(x.requests for x in results),
            sum(x.pages for x in results),
        )

    # ---- the table

    def cells(self) -> list[Cell]:
        a = self.args
        out = []
        for store in a.stores:
            for workers in a.workers:
                if store == "memory" and workers > 1:
                    continue  # a MemoryStore is not shared between processes
                for page in a.pages:
                    out.append(
                        Cell(store, workers, page, saves_per_event=self.saves_per_event(page))
                    )
        return out

    def measure(self, cells: list[Cell]) -> None:
        rounds = self.args.rounds
        side = min(rounds, self.args.side_rounds or rounds)
        for r in range(rounds):
            for c in cells:
                if c.page != 100 and r >= side:
                    continue
                arms = ["worker", "hand"] if r % 2 == 0 else ["hand", "worker"]
                line = []
                for arm in arms:
                    res = self.run(arm, c.store, c.workers, c.page)
                    c.per_event[arm].append((res.end - res.start) / res.events)
                    c.per_page[arm].append(res.requests / max(res.pages, 1))
                    line.append(f"{arm} {(res.end - res.start) / res.events * 1e6:,.1f}")
                print(
                    f"round {r + 1}/{rounds} {c.store} w={c.workers} page={c.page}: "
                    f"{', '.join(line)} µs/event; × {c.ratio()[-1]:.3f}",
                    flush=True,
                )


def table(cells: list[Cell]) -> str:
    lines = [
        "| store | workers | page | rounds | worker, µs/event | by hand, µs/event | × by hand "
        "(min … max) | worker, events/s | store writes/event | round trips/page, worker | by hand "
        "| target | met |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|",
    ]
    for c in cells:
        w = statistics.median(c.per_event["worker"]) * 1e6
        h = statistics.median(c.per_event["hand"]) * 1e6
        ratios = c.ratio()
        ratio = statistics.median(ratios)
        target, met = "", ""
        if c.page == 100:
            target = f"≤ {TARGET}×"
            met = "yes" if ratio <= TARGET else "no"
            if min(ratios) <= TARGET < max(ratios):
                met += "*"
        label = LABELS[c.store]
        lines.append(
            f"| {label} | {c.workers} | {c.page:,} | {len(ratios)} | {w:,.1f} | {h:,.1f} "
            f"| {ratio:.3f} "
            f"({min(ratios):.2f} … {max(ratios):.2f}) | {1e6 / w:,.0f} | {c.saves_per_event:.2f} "
            f"| {statistics.median(c.per_page['worker']):.2f} "
            f"| {statistics.median(c.per_page['hand']):.2f} | {target} | {met} |"
        )
    lines.append("")
    lines.append(
        "Medians over the rounds given; × by hand is the median of the per-round ratios. "
        "\\* some rounds fell on either side of the target."
    )
    return "\n".join(lines)


def chart(cells: list[Cell], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no chart: matplotlib is not installed (pip install '.[bench]')")
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colors = {"sqlite": "#2b6cb0", "postgres": "#c05621", "memory": "#888888"}
    labels = LABELS
    series: dict[tuple[str, int, str], list[tuple[int, float]]] = {}
    for c in cells:
        for arm in ("worker", "hand"):
            rate = 1 / statistics.median(c.per_event[arm])
            series.setdefault((c.store, c.workers, arm), []).append((c.page, rate))
    for (store, workers, arm), points in sorted(series.items()):
        points.sort()
        ax.plot(
            [p for p, _ in points],
            [v for _, v in points],
            color=colors[store],
            linestyle="-" if arm == "worker" else "--",
            marker="o" if workers == 1 else "s",
            label=f"{labels[store]}, {workers} {'worker' if arm == 'worker' else 'by hand'}"
            + ("" if workers == 1 else "s" if arm == "worker" else " ×2"),
        )
    ax.set_xscale("log")
    ax.set_xlabel("page size (entries per read)")
    ax.set_ylabel("events per second (median)")
    ax.set_title("KeyedWorker vs. a hand-written redis-py loop, by page size", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------ the lag


class Stamped:
    """The store, stamping the latency of every event a save covers when it returns."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.latencies: list[float] = []

    def load(self, ctx: Any, key: str) -> Any:
        return self.store.load(ctx, key)

    def load_versioned(self, ctx: Any, key: str) -> Any:
        return self.store.load_versioned(ctx, key)

    def store_versioned(self, ctx: Any, key: str, value: bytes, version: int) -> int:
        new = self.store.store_versioned(ctx, key, value, version)
        self._stamp()
        return int(new)

    def load_many_versioned(self, ctx: Any, keys: Any) -> Any:
        return self.store.load_many_versioned(ctx, keys)

    def store_many_versioned(self, ctx: Any, items: Any) -> Any:
        new = self.store.store_many_versioned(ctx, items)
        self._stamp()  # the page's keys saved at once: every event of the page
        return new

    def _stamp(self) -> None:
        now = time.time()
        stamps = _Count.stamps
        assert stamps is not None
        self.latencies.extend(now - t for t in stamps)
        stamps.clear()


def pace(url: str, name: str, shards: int, keys: int, rate: float, count: int, at: float) -> None:
    """The lag run's producer: ``count`` events at ``rate`` per second from wall time ``at``."""
    r = redis.Redis.from_url(url)
    producer = KeyedProducer(r, name, shards=shards)
    rng = random.Random(7)
    names = [f"key-{k}" for k in range(keys)]
    time.sleep(max(0.0, at - time.time()))
    start = time.perf_counter()
    for i in range(count):
        wait = start + i / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        producer.put(None, rng.choice(names), {"i": i, "t": time.time()})
    r.close()


def lag(bench: Bench, rate: float, seconds: float) -> dict[str, float]:
    a = bench.args
    count = int(rate * seconds)
    bench.runs += 1
    name = f"{NAMESPACE}:lag{bench.runs}"
    where = bench.temp / f"lag{bench.runs}"
    where.mkdir()
    r = client(a.redis)
    store = Stamped(elmstate.SQLiteStore(where / "snapshots.sqlite3", durable=True))
    worker = KeyedWorker(
        r,
        name,
        shards=a.shards,
        store=store,
        init=init,
        update=update,
        hydrator=hydrator,
        dehydrator=dehydrator,
        page=LAG_PAGE,
        worker_id="bench-lag",
    )
    worker._beat("balance")
    mp = multiprocessing.get_context("spawn")
    at = time.time() + 2.0  # the producer process is up by then
    proc = mp.Process(target=pace, args=(a.redis, name, a.shards, a.keys, rate, count, at))
    proc.start()
    ctx = elmstate.Context()
    _Count.seen, _Count.target, _Count.ctx, _Count.stamps = 0, count, ctx, []
    try:
        worker.run(ctx)
    finally:
        _Count.ctx, _Count.stamps = None, None
        proc.join()
        store.store.close()
        bench._delete(f"{name}:*")
        r.close()
    got = sorted(store.latencies)
    if len(got) != count:
        raise RuntimeError(f"lag: {len(got)} latencies for {count} events")
    return {
        "rate": rate,
        "events": count,
        "p50": got[len(got) // 2],
        "p99": got[min(len(got) - 1, int(len(got) * 0.99))],
        "max": got[-1],
    }


# --------------------------------------------------------- commandstats, profile


def commandstats(r: redis.Redis) -> dict[str, int]:
    return {k: int(v["calls"]) for k, v in r.info("commandstats").items()}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    out = {k: after[k] - before.get(k, 0) for k in after}
    return {k: v for k, v in out.items() if v}


def server_counts(bench: Bench, store: str, page: int) -> str:
    """INFO commandstats deltas over one worker and one hand-written run, and idle."""
    rows: dict[str, dict[str, int]] = {}
    pages: dict[str, int] = {}
    took = 0.0
    for arm in ("worker", "hand"):
        before = commandstats(bench.r)
        res = bench.run(arm, store, 1, page)
        rows[arm] = delta(before, commandstats(bench.r))
        pages[arm] = res.pages
        took = max(took, res.end - res.start)
    before = commandstats(bench.r)
    time.sleep(took)
    rows["idle"] = delta(before, commandstats(bench.r))
    # the bench's own setup/teardown commands (RESTORE, DEL, SCAN, ...) are in the
    # run deltas too: only the commands the loops send are listed
    names = sorted({k for arm in ("worker", "hand") for k in rows[arm]})
    loop = [
        n
        for n in names
        if n.split("_", 1)[1].split("|")[0]
        in {"xreadgroup", "evalsha", "eval", "xack", "multi", "exec", "xtrim", "xread", "xrevrange"}
    ]
    lines = [
        f"INFO commandstats deltas (every client of the server; idle = the same "
        f"{took:.1f} s with nothing of ours running), 1 worker, {store}, page {page}, "
        f"{bench.args.events:,} events; pages read: worker {pages['worker']:,}, "
        f"by hand {pages['hand']:,}:",
        "",
        "| command | worker, calls | per page | by hand, calls | per page | idle, calls |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for n in loop:
        w, h, i = rows["worker"].get(n, 0), rows["hand"].get(n, 0), rows["idle"].get(n, 0)
        lines.append(
            f"| {n.removeprefix('cmdstat_')} | {w:,} | {w / max(pages['worker'], 1):.2f} "
            f"| {h:,} | {h / max(pages['hand'], 1):.2f} | {i:,} |"
        )
    return "\n".join(lines)


# Where the worker's time goes: cProfile cumulative times of these functions, per
# event. They nest (aggregate holds the saves, the fold ...), so the split below
# subtracts the inner ones from the outer.
_SPOTS = {
    "page (KeyedWorker._page_of)": ("_worker.py", "_page_of"),
    "lua read (Leases.read script)": ("redis_workers.py", "counted_read"),
    "key (KeyedWorker._apply)": ("_worker.py", "_apply"),
    "load_many_versioned (SQLite store)": ("s/sqlite.py", "load_many_versioned"),
    "store_many_versioned (SQLite store)": ("s/sqlite.py", "store_many_versioned"),
    "load_many_versioned (PostgreSQL store)": ("s/postgres.py", "load_many_versioned"),
    "store_many_versioned (PostgreSQL store)": ("s/postgres.py", "store_many_versioned"),
    "store_versioned (SQLite store)": ("s/sqlite.py", "store_versioned"),
    "store_versioned (PostgreSQL store)": ("s/postgres.py", "store_versioned"),
    "aggregate": ("_aggregate.py", "aggregate"),
    "envelope unwrap": ("_envelope.py", "unwrap"),
    "envelope wrap": ("_envelope.py", "wrap"),
    "program: update + transforms": ("redis_workers.py", "update"),
    "decode (json)": ("_common.py", "json_decode"),
    "finish: ack + trim (MULTI/EXEC)": ("_worker.py", "_finish"),
    "heartbeats": ("_worker.py", "_beat"),
    "run (everything)": ("_worker.py", "run"),
}


def profile(bench: Bench, store: str, page: int) -> str:
    setup = bench.fresh(store, page, "worker")
    r = client(setup.redis_url)
    st = open_store(setup.store, setup.where, setup.conninfo, setup.table)
    try:
        worker = make_worker(r, st, setup, "bench-profile")
        read = worker._leases.read

        def counted_read(*args: Any, **kwargs: Any) -> Any:
            return read(*args, **kwargs)

        leases: Any = worker._leases
        leases.read = counted_read
        worker._beat("balance")
        ctx = elmstate.Context()
        _Count.seen, _Count.target, _Count.ctx = 0, bench.args.events, ctx
        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.runcall(worker.run, ctx)
        took = time.perf_counter() - t
        bench.check(setup)
    finally:
        _Count.ctx = None
        st.close()
        r.close()
        bench.cleanup_run(setup)
    stats = pstats.Stats(prof)
    cum: dict[str, float] = {}
    calls: dict[str, int] = {}
    for (filename, _, func), (_, ncalls, _, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        for label, (file, name) in _SPOTS.items():
            if filename.endswith(file) and func == name:
                cum[label] = cum.get(label, 0.0) + ct
                calls[label] = calls.get(label, 0) + ncalls
    n = bench.args.events
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
    lines = [
        f"cProfile, 1 worker, {store}, page {page}, {n:,} events: {took / n * 1e6:,.1f} µs/event "
        "under the profiler (cumulative times, nested; per event):",
        "",
        "| where | calls | µs/event (cumulative) |",
        "|---|--:|--:|",
    ]
    for label in _SPOTS:
        if label in cum:
            lines.append(f"| {label} | {calls[label]:,} | {cum[label] / n * 1e6:,.1f} |")
    lines += ["", "```", *text.getvalue().strip().splitlines()[:45], "```"]
    return "\n".join(lines)


# ------------------------------------------------------------------------- main


def machine() -> str:
    cpu = platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{cpu}, {os.cpu_count()} CPUs; {platform.python_implementation()} "
        f"{platform.python_version()}; elmstate {elmstate.__version__} "
        f"({'compiled' if elmstate.compiled else 'pure'}); redis-py {redis.__version__}"
    )


def reachable(args: argparse.Namespace) -> list[str]:
    """The stores that can run here (prints why the others are skipped)."""
    out = []
    for store in args.stores:
        if store == "postgres":
            try:
                psycopg = _optional("psycopg")
                _optional("elmstate.stores.postgres")
                psycopg.connect(args.postgres, connect_timeout=5).close()
            except Exception as e:
                print(f"skipped PostgreSQL: {str(e).strip()}")
                continue
        out.append(store)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--pages", default="10,100,1000", help="page sizes, comma-separated")
    parser.add_argument("--workers", default="1,2", help="worker counts: 1 and/or 2")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--side-rounds",
        type=int,
        default=0,
        help="rounds of pages other than 100 (default: --rounds)",
    )
    parser.add_argument("--lag", type=float, default=20.0, metavar="SECONDS", help="0: no lag run")
    parser.add_argument(
        "--lag-rate", type=float, default=0.0, help="events/s (default: 50 %% of capacity)"
    )
    parser.add_argument("--commandstats", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--redis", default=REDIS)
    parser.add_argument("--postgres", default=POSTGRES)
    parser.add_argument("--md", type=Path, default=HERE / "redis_workers.md")
    parser.add_argument("--png", type=Path, default=HERE / "redis_workers.png")
    parser.add_argument("--no-chart", action="store_true")
    args = parser.parse_args(argv)
    args.pages = [int(p) for p in args.pages.split(",")]
    args.workers = [int(w) for w in args.workers.split(",")]
    args.stores = args.stores.split(",")
    if not set(args.workers) <= {1, 2} or not set(args.stores) <= set(LABELS):
        parser.error("--workers takes 1 and/or 2, --stores sqlite, postgres and/or memory")
    if args.events < args.keys or args.shards < 2:
        parser.error("--events must be at least --keys, --shards at least 2")
    args.stores = reachable(args)

    if multiprocessing.current_process().name == "MainProcess":
        # kill -TERM: leave through the finally below, which deletes the Redis keys,
        # tables and files this run made (a background job of a shell ignores SIGINT)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bench = Bench(args)
    parts = []
    try:
        print(machine())
        bench.produce()
        cells = bench.cells()
        bench.measure(cells)
        head = (
            f"{args.events:,} events on {args.keys:,} keys, {args.shards} shards, "
            f"{machine()}; {'2 workers: 2 processes' if 2 in args.workers else ''}"
        )
        parts += [head, "", table(cells)]
        if args.lag > 0:
            rate = args.lag_rate
            base = [c for c in cells if c.store == "sqlite" and c.workers == 1 and c.page == 100]
            if not rate and base:
                rate = 0.5 / statistics.median(base[0].per_event["worker"])
            if rate:
                got = lag(bench, rate, args.lag)
                parts += [
                    "",
                    f"Lag, 1 worker, page {LAG_PAGE}, SQLite, producer at {got['rate']:,.0f} "
                    f"events/s (50 % of the measured capacity) for {args.lag:g} s, "
                    f"{got['events']:,} events; XADD (client, before) to store_versioned returned:",
                    "",
                    "| p50, ms | p99, ms | max, ms | target p99 | met |",
                    "|--:|--:|--:|--:|:-:|",
                    f"| {got['p50'] * 1e3:.1f} | {got['p99'] * 1e3:.1f} | {got['max'] * 1e3:.1f} "
                    f"| < {LAG_TARGET * 1e3:.0f} ms "
                    f"| {'yes' if got['p99'] < LAG_TARGET else 'no'} |",
                ]
            else:
                print("no lag run: no 1-worker page-100 SQLite figure and no --lag-rate")
        if args.commandstats and args.stores:
            parts += ["", server_counts(bench, args.stores[0], 100)]
        if args.profile and args.stores:
            parts += ["", profile(bench, args.stores[0], 100)]
    finally:
        bench.close()
    text = "\n".join(parts) + "\n"
    print()
    print(text)
    args.md.write_text(text)
    print(f"markdown: {args.md}")
    if not args.no_chart and cells and chart(cells, args.png):
        print(f"chart: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
