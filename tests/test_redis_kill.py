"""Process-level proofs of elmstate.redis.KeyedWorker (docs/redis.md, SPEC §10):
worker processes are killed with SIGKILL, paused past their lease (SIGSTOP,
then SIGCONT), cut off from Redis and PostgreSQL, and fed a poison event, while
a producer appends events; at the end every key's model is checked against the
fold of its events in stream order (the oracle of tests/_keyed_proc.py), which
tells a lost event, one applied twice and two applied out of order apart.

- Kill -9 oracle: 3 workers, 50 keys, events produced while a killer SIGKILLs
  a random worker every 100-500 ms (and restarts it) or pauses one past its
  lease: 0 lost, 0 applied twice, 0 out of order. Over SQLite and PostgreSQL.
- Zombie: a worker that owns every shard stops itself right before a save (or
  right before a read), its leases lapse, another worker takes over and moves
  on; resumed, the first overwrites nothing, reads nothing, moves no group
  cursor, and gives its shards up.
- Connection loss: CLIENT KILL of the workers' Redis connections and
  pg_terminate_backend of their store connections, again and again, under load.
- Poison under kills: the poison event ends in NAME:dead; nothing else does.
- Output under kills: after dropping repeats by dedupe id, the output streams
  hold exactly one message per event.

Real Redis and PostgreSQL (tests/_stores.py). Workers run in children of a
forkserver (as in tests/test_store_concurrency.py), on the core this session
imported by default (the compiled one, unless ELMSTATE_NO_EXTENSIONS is set).

In CI the kill oracle runs 10 rounds (5 per store) of 20,000 events each; the
poison, output and connection-loss proofs one round of 5,000.
``ELMSTATE_TEST_STRESS=1`` runs 100 oracle rounds (50 per store), and the others
with 20,000 events. ``ELMSTATE_TEST_KILL_ROUNDS`` and
``ELMSTATE_TEST_KILL_EVENTS`` override the rounds per store and the events per
round.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import sys
import time
from collections import Counter as Multiset
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import _keyed_proc as kp
import pytest
from _stores import (
    POSTGRES,
    connection_name,
    kill_connections,
    open_store,
    redis_admin,
    require,
    table,
    tag,
)

import elmstate

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and SIGSTOP are POSIX"),
]

STRESS = os.environ.get("ELMSTATE_TEST_STRESS", "") == "1"
ROUNDS = int(os.environ.get("ELMSTATE_TEST_KILL_ROUNDS", "50" if STRESS else "5"))
EVENTS = int(os.environ.get("ELMSTATE_TEST_KILL_EVENTS", "20000"))
# The poison and output proofs: one round each, smaller in CI.
SIDE_EVENTS = 20000 if STRESS else 5000
WATCHDOG = 3600.0 * 4 if STRESS else 600.0  # seconds, per test (tests/conftest.py)

WORKERS = 3
KEYS = 50
SHARDS = 8
LEASE = 0.6  # seconds: takeovers after a kill come fast
PAGE = 100
RATE = 2500  # events per second the producer aims at (the workers keep up with more)
DRAIN = 120.0  # seconds the workers get to catch up once the killer stops

if "forkserver" in multiprocessing.get_all_start_methods():
    MP: Any = multiprocessing.get_context("forkserver")
    # Only effective if this session's forkserver has not started yet (else a
    # child imports what it lacks itself: slower, not different).
    MP.set_forkserver_preload(
        [
            "elmstate",
            "pytest",
            "elmstate.stores.postgres",
            "elmstate.stores.redis",
            "elmstate.redis",
            "_concurrency",
            "_keyed_proc",
        ]
    )
else:  # pragma: no cover - POSIX only
    MP = multiprocessing.get_context("spawn")


Say = Callable[[str], None]


@pytest.fixture
def say(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> Say:
    """Shows a test's figures beside its name under ``pytest -v`` (and prints
    them to the captured output in any case)."""

    def say(text: str) -> None:
        print(text)
        if request.config.getoption("verbose") > 0:
            with capsys.disabled():
                print(f"\n    {text}", end=" ")

    return say


@contextmanager
def oracle_store(kind: str, where: Path) -> Iterator[Any]:
    """The test's own store on the workers' data, on a connection of its own
    (not named like the workers', so that killing theirs leaves it alone)."""
    if kind == "sqlite":
        with elmstate.SQLiteStore(where / "snapshots.sqlite3") as store:
            yield store
        return
    from psycopg.conninfo import make_conninfo

    from elmstate.stores.postgres import PostgresStore

    conninfo = make_conninfo(POSTGRES, application_name=f"{connection_name(where)}-oracle")
    with PostgresStore(conninfo, table=table(where)) as store:
        yield store


@contextmanager
def stores(kind: str, where: Path) -> Iterator[Any]:
    """Creates the workers' store (dropped afterwards) and yields the oracle's."""
    require("redis")
    with open_store(kind, where) as created:
        created.close()  # its connection carries the workers' name; the oracle has its own
        with oracle_store(kind, where) as store:
            yield store


def loader(admin: Any, config: kp.Config, store: Any) -> Any:
    """A KeyedWorker that never runs: its load() reads models the way any process may."""
    return elmstate.redis.KeyedWorker(
        admin,
        config.name,
        shards=config.shards,
        store=store,
        init=kp.init,
        update=kp.make_update(False),
        hydrator=kp.hydrate,
        dehydrator=kp.dehydrate,
        worker_id="oracle",
    )


def config_for(kind: str, where: Path, name: str, **overrides: Any) -> kp.Config:
    settings: dict[str, Any] = {
        "kind": kind,
        "where": where,
        "name": name,
        "shards": SHARDS,
        "lease": LEASE,
        "page": PAGE,
        "client_name": f"{connection_name(where)}-worker",
        "log": where / f"{name}.log",
    }
    settings.update(overrides)
    return kp.Config(**settings)


def models_of(load: Any, keys: list[str]) -> dict[str, Any]:
    return {key: load.load(None, key) for key in keys}


def check_oracle(verdict: kp.Verdict) -> None:
    assert verdict.holds, (
        f"{verdict.lost} lost, {verdict.twice} applied twice, {verdict.out_of_order} out of "
        f"order, {verdict.foreign} never produced, {verdict.wrong_chains} keys wrong, "
        f"{verdict.applied} applications of {verdict.events}: {verdict.examples}"
    )


class Round:
    """One run: WORKERS workers, a producer of ``events`` events on KEYS keys at
    RATE, a killer while it produces; then the drain and the oracle."""

    def __init__(
        self,
        kind: str,
        where: Path,
        number: int,
        rng: random.Random,
        *,
        events: int,
        **overrides: Any,
    ) -> None:
        self.name = f"kt-{tag(where)}-{number}"
        self.config = config_for(kind, where, self.name, **overrides)
        self.rng = rng
        self.events = events
        self.keys = [f"r{number}-key-{i}" for i in range(KEYS)]  # the store is shared
        self.cluster = kp.Cluster(MP, self.config, WORKERS)

    def run(
        self,
        admin: Any,
        store: Any,
        *,
        pause_chance: float = 0.1,
        victims: list[int] | None = None,
        chaos: Callable[[], None] | None = None,
        poison_at: int | None = None,
        going: Callable[[], bool] = lambda: False,
    ) -> tuple[kp.Tally, kp.Verdict, dict[str, float]]:
        """The round's figures; ``going()`` keeps the killer (and chaos) at work
        after the producer finished, while it returns true."""
        cluster = self.cluster
        began = time.monotonic()
        for i in range(WORKERS):
            cluster.start(i, wait=False)
        for i in range(WORKERS):
            cluster.wait_started(i)
        producer = kp.Producer(
            self.name,
            SHARDS,
            self.keys,
            self.events,
            self.events / RATE,
            self.rng,
            poison_at=poison_at,
        )
        self.producer = producer
        producer.start()
        killer = kp.Killer(cluster, self.rng, pause_chance=pause_chance, victims=victims)
        tally = killer.run_until(lambda: producer.finished.is_set() and not going(), also=chaos)
        producing = time.monotonic() - began
        producer.join()
        if producer.error is not None:
            raise producer.error
        assert producer.produced == self.events
        restarted = [i for i in range(WORKERS) if not cluster.alive(i)]
        for i in restarted:
            cluster.start(i, wait=False)
        # Every worker (the killer's last restarts too) until its SIGTERM handler is in
        # place: stop() sends one.
        for i in range(WORKERS):
            cluster.wait_started(i)
        assert kp.wait_drained(admin, self.name, SHARDS, cluster, DRAIN), (
            f"the workers did not catch up in {DRAIN} s; log:\n{kp.tail(self.config.log)}"
        )
        drained = time.monotonic() - began
        codes = cluster.stop()
        assert codes == [0] * WORKERS, f"exit codes {codes}; log:\n{kp.tail(self.config.log)}"
        # Stopped gracefully, the workers released their leases and heartbeats
        # (a worker killed less than a lease ago may still have its own).
        final = {slot.worker_id.encode() for slot in cluster.slots}
        owners = {admin.get(f"{self.name}:lease:{i}") for i in range(SHARDS)}
        assert not owners & final, owners
        assert not set(admin.zrange(f"{self.name}:workers", 0, -1)) & final
        load = loader(admin, self.config, store)
        models = models_of(load, self.keys)
        verdict = kp.judge(models, {key: producer.expected(key) for key in self.keys})
        seconds = {"producing": producing, "total": drained}
        return tally, verdict, seconds

    def clean(self, admin: Any) -> None:
        self.cluster.ensure_stopped()
        names = [self.name]
        if self.config.output:
            names.append(self.config.output)
        kp.delete_keys(admin, *names)


def dead_letters(admin: Any, name: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in admin.xrange(f"{name}:dead")]


# --- 1. the kill -9 oracle ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_kill_9_oracle(kind: str, tmp_path: Path, say: Say) -> None:
    """ROUNDS rounds: 3 workers (lease 0.6 s), 50 keys, EVENTS events produced at
    RATE while a killer SIGKILLs a random worker every 100-500 ms and restarts it,
    or (1 time in 10) SIGSTOPs one for 1.5-2.5 leases and then SIGCONTs it. Once
    the killer stopped and the workers drained the shards, every key's model is
    the fold of its events in stream order: 0 lost, 0 applied twice, 0 out of
    order, and nothing was dead-lettered."""
    rng = random.Random()
    seed = rng.randrange(1 << 32)
    rng.seed(seed)
    totals = kp.Tally()
    events = applied = 0
    seconds = 0.0
    with stores(kind, tmp_path) as store, redis_admin() as admin:
        for number in range(ROUNDS):
            run = Round(kind, tmp_path, number, rng, events=EVENTS)
            try:
                tally, verdict, took = run.run(admin, store)
                check_oracle(verdict)
                assert dead_letters(admin, run.name) == []
            except BaseException:
                print(f"round {number} (seed {seed}) failed; log:\n{kp.tail(run.config.log, 80)}")
                raise
            finally:
                run.clean(admin)
            for attr in ("kills", "busy_kills", "mid_save_kills", "pauses"):
                setattr(totals, attr, getattr(totals, attr) + getattr(tally, attr))
            events += verdict.events
            applied += verdict.applied
            seconds += took["total"]
            print(
                f"round {number}: {tally}, {verdict.events} events, "
                f"{took['producing']:.1f} s producing, {took['total']:.1f} s in all"
            )
    # The kills must land on workers at work, or they prove little.
    assert totals.busy_kills >= totals.kills // 2, totals
    say(
        f"{kind}: {ROUNDS} rounds, {events} events, {applied} applied once each in stream order "
        f"(0 lost, 0 twice, 0 out of order); {totals.kills} kills ({totals.busy_kills} of busy "
        f"workers, {totals.mid_save_kills} mid-save), {totals.pauses} pauses past the lease; "
        f"{seconds:.1f} s"
    )


# --- 2. the zombie ------------------------------------------------------------------


def group_state(admin: Any, name: str) -> list[tuple[Any, ...]]:
    """Per shard: the group's last-delivered id, entries read and pending count."""
    state = []
    for shard in range(SHARDS):
        for info in admin.xinfo_groups(f"{name}:{shard}"):
            if info["name"] == kp.GROUP.encode():
                state.append((info["last-delivered-id"], info.get("entries-read"), info["pending"]))
    return state


def lease_owners(admin: Any, name: str) -> list[bytes | None]:
    return [admin.get(f"{name}:lease:{i}") for i in range(SHARDS)]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.01)


def produce(
    name: str, keys: list[str], events: int, rng: random.Random, sent: dict[str, Any]
) -> None:
    """Append ``events`` events at once (no pacing), adding to ``sent``'s records."""
    producer = kp.Producer(name, SHARDS, keys, events, 0.0, rng)
    for key, record in sent.items():  # carry on the keys' sequence numbers
        producer.sent[key] = record
    producer.run()  # in this thread
    if producer.error is not None:
        raise producer.error
    sent.update(producer.sent)


def expected_of(sent: dict[str, kp.Sent]) -> dict[str, list[int]]:
    return {key: [m["n"] for m in record.messages] for key, record in sent.items()}


# B, paused while A wakes, must keep its leases meanwhile: they last at least
# 2/3 of this after B's last heartbeat (it beats every lease/3).
ZOMBIE_LEASE = 3.0


# In CI each store once, each stop once; under stress every pair.
ZOMBIES = [
    (kind, stopped)
    for kind in ("sqlite", "postgres")
    for stopped in ("before a save", "before a read")
    if STRESS or (kind, stopped) in (("sqlite", "before a save"), ("postgres", "before a read"))
]


@pytest.mark.parametrize(("kind", "stopped"), ZOMBIES)
def test_a_zombie_overwrites_nothing_reads_nothing_and_gives_its_shards_up(
    kind: str, stopped: str, tmp_path: Path, say: Say
) -> None:
    """Worker A owns every shard; it stops itself (SIGSTOP) right before a save
    (page loaded and applied) or right before a read (believing it still owns
    its shards); its leases lapse; worker B takes every shard and applies what
    A had read and more. Then B is paused for a moment, more events come, and A
    resumes (SIGCONT): while B sleeps A neither saves over B's models nor reads
    anything (the groups' last-delivered ids, entries read and pending counts
    stay put: the > hazard) nor takes a shard; stopped before a save, A logs
    that it lost its leases or that the key changed under it.
    Then both run on; at the end the oracle holds for every key."""
    say(zombie(kind, stopped, tmp_path))


def test_a_zombie_whose_lease_check_is_a_separate_step_moves_the_group(tmp_path: Path) -> None:
    """The negative control: the same zombie, stopped before a read, in a worker
    whose lease check is a GET before the read script (two steps, not one). Once
    resumed it reads the entries that arrived while it slept, moving the group's
    last-delivered id past entries that B (the owner) has not read: the zombie
    test catches it."""
    with pytest.raises(AssertionError, match="the > hazard"):
        zombie("sqlite", "before a read", tmp_path, separate_lease_check=True)


def zombie(kind: str, stopped: str, tmp_path: Path, separate_lease_check: bool = False) -> str:
    """The zombie scenario; returns its figures."""
    rng = random.Random()
    keys = [f"key-{i}" for i in range(20)]
    name = f"kt-{tag(tmp_path)}-zombie"
    config = config_for(
        kind, tmp_path, name, lease=ZOMBIE_LEASE, separate_lease_check=separate_lease_check
    )
    cluster = kp.Cluster(MP, config, 2)
    sent: dict[str, kp.Sent] = {}
    with stores(kind, tmp_path) as store, redis_admin() as admin:
        try:
            load = loader(admin, config, store)
            a = cluster.start(0)
            wait_until(
                lambda: lease_owners(admin, name) == [a.worker_id.encode()] * SHARDS,
                10 * ZOMBIE_LEASE,
                "A to own every shard",
            )
            produce(name, keys, 300, rng, sent)
            assert kp.wait_drained(admin, name, SHARDS, cluster, DRAIN)
            a.probe.arm.value = kp.ARM_SAVE if stopped == "before a save" else kp.ARM_READ
            produce(name, keys, 300, rng, sent)  # A stops on these
            wait_until(lambda: a.probe.stopped.value == 1, 30, "A to stop itself")
            check_oracle_partial = kp.judge(models_of(load, keys), expected_of(sent))
            assert check_oracle_partial.applied < check_oracle_partial.events  # A stopped mid-way
            wait_until(
                lambda: admin.exists(*[f"{name}:lease:{i}" for i in range(SHARDS)]) == 0,
                10 * ZOMBIE_LEASE,
                "A's leases to lapse",
            )
            b = cluster.start(1)
            wait_until(
                lambda: lease_owners(admin, name) == [b.worker_id.encode()] * SHARDS,
                10 * ZOMBIE_LEASE,
                "B to own every shard",
            )
            assert kp.wait_drained(admin, name, SHARDS, cluster, DRAIN)
            check_oracle(kp.judge(models_of(load, keys), expected_of(sent)))
            before = {key: store.load_versioned(None, key) for key in keys}

            # B sleeps (its leases stay valid), new entries arrive, A wakes.
            cluster.pause(1)
            paused = time.monotonic()
            produce(name, keys, 100, rng, sent)
            groups = group_state(admin, name)
            cluster.resume(0)
            wait_until(lambda: a.probe.stopped.value == 2, 30, "A's stopped call to return")
            time.sleep(0.2)  # A goes on: the rest of its page, its next steps
            window = time.monotonic() - paused
            assert window < ZOMBIE_LEASE * 2 / 3, f"too slow: B slept {window:.2f} s"
            assert {key: store.load_versioned(None, key) for key in keys} == before
            moved = group_state(admin, name)
            assert moved == groups, f"the zombie moved the group (the > hazard): {moved} {groups}"
            assert lease_owners(admin, name) == [b.worker_id.encode()] * SHARDS
            cluster.resume(1)

            produce(name, keys, 300, rng, sent)
            assert kp.wait_drained(admin, name, SHARDS, cluster, DRAIN)
            verdict = kp.judge(models_of(load, keys), expected_of(sent))
            check_oracle(verdict)
            after = {key: store.load_versioned(None, key)[1] for key in keys}
            assert all(after[key] >= before[key][1] for key in keys)
            lost = kp.log_lines(config.log, a.worker_id, "lost the lease")
            conflicts = kp.log_lines(config.log, a.worker_id, "changed under it")
            if stopped == "before a save":  # a refused read drops the shard without a word
                assert lost or conflicts, kp.tail(config.log)
            assert cluster.stop() == [0, 0], kp.tail(config.log)
            stats = kp.log_lines(config.log, a.worker_id, "stats")
            return (
                f"{kind}, stopped {stopped}: {verdict.events} events, 0 lost, 0 twice, "
                f"0 out of order; A logged {len(lost)} leases lost, {len(conflicts)} "
                f"conflicts; A's {stats[-1].split(' stats ')[-1] if stats else 'stats: none'}"
            )
        finally:
            cluster.ensure_stopped()
            kp.delete_keys(admin, name)


# --- 3. connection loss -------------------------------------------------------------

CHAOS_EVENTS = 20000 if STRESS else 5000


def test_connection_loss_under_load(tmp_path: Path, say: Say) -> None:
    """3 workers on PostgreSQL, no process killed: every 0.2-0.6 s (while events
    are produced) either every Redis connection of the workers is killed
    (CLIENT KILL, by the client name they were given) or every PostgreSQL
    backend of their stores is terminated (pg_terminate_backend, by
    application_name). The workers reconnect and go on (none gives up), and the
    oracle holds."""
    kind = "postgres"
    require(kind)
    rng = random.Random()
    cuts = {"redis": 0, "postgres": 0}
    with stores(kind, tmp_path) as store, redis_admin() as admin:
        run = Round(kind, tmp_path, 0, rng, events=CHAOS_EVENTS)

        turns = 0

        def chaos() -> None:
            nonlocal turns
            turns += 1
            if turns % 2:
                cuts["redis"] += kp.kill_worker_clients(admin, run.config.client_name)
            else:
                cuts["postgres"] += kill_connections("postgres", tmp_path)

        def going() -> bool:  # at least 3 of each, however fast the events went
            return min(cuts.values()) < 3

        try:
            tally, verdict, took = run.run(
                admin, store, pause_chance=0.0, victims=[], chaos=chaos, going=going
            )
            check_oracle(verdict)
            assert dead_letters(admin, run.name) == []
            retries = kp.log_lines(run.config.log, "", "retrying in")
        finally:
            run.clean(admin)
    assert cuts["redis"] >= 3 and cuts["postgres"] >= 3, cuts
    assert tally.kills == 0
    say(
        f"{verdict.events} events, 0 lost, 0 twice, 0 out of order; {cuts['redis']} Redis "
        f"connections killed, {cuts['postgres']} PostgreSQL backends terminated, "
        f"{len(retries)} retries logged; {took['total']:.1f} s"
    )


# --- 4. poison under kills ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite"])
def test_poison_under_kills(kind: str, tmp_path: Path, say: Say) -> None:
    """One event makes update raise every time; workers (max_failures=3) are
    killed and paused meanwhile. It ends in NAME:dead with its error (maybe more
    than once: dead letters are at-least-once), and only it: no healthy event is
    dead-lettered because workers died; every other event of its key and of the
    others is applied, once, in order."""
    rng = random.Random()
    events = SIDE_EVENTS
    with stores(kind, tmp_path) as store, redis_admin() as admin:
        run = Round(kind, tmp_path, 0, rng, events=events)
        try:
            tally, verdict, took = run.run(admin, store, poison_at=events // 3)
            check_oracle(verdict)
            dead = dead_letters(admin, run.name)
        finally:
            run.clean(admin)
    poison = run.producer.poison_ids
    assert len(poison) == 1
    assert dead, "the poison event was not dead-lettered"
    assert {d[b"id"].decode() for d in dead} == set(poison), dead
    for letter in dead:
        assert b"Poisoned: poison event of" in letter[b"error"], letter
        assert letter[b"payload"].startswith(b"{") and b'"poison":true' in letter[b"payload"]
    say(
        f"{verdict.events} healthy events applied once each in order, the poison one "
        f"dead-lettered {len(dead)} time(s), nothing else; {tally.kills} kills, "
        f"{tally.pauses} pauses; {took['total']:.1f} s"
    )


# --- 5. output under kills ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["postgres"])
def test_output_under_kills(kind: str, tmp_path: Path, say: Say) -> None:
    """Every event's transform returns a command that Emits one message downstream;
    workers are killed and paused meanwhile. Every dedupe id carries one message
    only, and after dropping repeats by dedupe id the output streams hold
    exactly one message per event."""
    rng = random.Random()
    name = f"kt-{tag(tmp_path)}-0"
    output = f"{name}-out"
    with stores(kind, tmp_path) as store, redis_admin() as admin:
        run = Round(kind, tmp_path, 0, rng, events=SIDE_EVENTS, output=output, emit=True)
        try:
            tally, verdict, took = run.run(admin, store)
            check_oracle(verdict)
            shards = int(admin.hget(f"{output}:meta", "shards"))
            raw = [
                fields for shard in range(shards) for _, fields in admin.xrange(f"{output}:{shard}")
            ]
        finally:
            run.clean(admin)
    by_dedupe: dict[bytes, set[bytes]] = {}
    for fields in raw:
        by_dedupe.setdefault(fields[b"dedupe"], set()).add(fields[b"payload"])
    assert all(len(payloads) == 1 for payloads in by_dedupe.values()), "a dedupe id reused"
    messages = Multiset(
        (m["k"], m["n"]) for m in (json.loads(next(iter(p))) for p in by_dedupe.values())
    )
    expected = Multiset((key, n) for key in run.keys for n in run.producer.expected(key))
    assert messages == expected, (
        f"{len(expected - messages)} missing, {len(messages - expected)} extra: "
        f"{list((expected - messages).items())[:5]} {list((messages - expected).items())[:5]}"
    )
    say(
        f"{len(raw)} messages on the output streams, {len(raw) - len(by_dedupe)} repeats "
        f"dropped by dedupe id, {len(by_dedupe)} left = {verdict.events} events; "
        f"{tally.kills} kills ({tally.mid_save_kills} mid-save), {tally.pauses} pauses; "
        f"{took['total']:.1f} s"
    )
