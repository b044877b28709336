"""The harness of tests/test_redis_kill.py: keyed workers in child processes,
a producer, a killer and the oracle.

A module of its own, not the test file, so that a child process started from
``multiprocessing``'s forkserver imports it by name (and not pytest's test
module). A child receives only picklable things: a ``Config`` and a ``Probe``
(shared memory, readable by the parent after the child died).

The program folds order-sensitively: every key's model is the count of events
applied, a hash chain over them (``sha256(chain + event)``) and the list of
their sequence numbers, so the oracle tells a lost event, an event applied
twice and two events applied out of order apart, instead of only "different".
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _stores
import redis

import elmstate
from elmstate.redis import Emit, KeyedProducer, KeyedWorker, _leases, parse_id

GROUP = "elmstate"

# --- the program -------------------------------------------------------------------
#
# A message is {"k": key, "n": its sequence number among the key's events}; the
# poison one also has "poison": true and n = -1, and update raises on it every time.


class Poisoned(Exception):
    """What update raises for the poison message."""


def step(chain: str, key: str, n: int) -> str:
    return hashlib.sha256(f"{chain}|{key}#{n}".encode()).hexdigest()


def fold(key: str, seqs: Iterable[int]) -> str:
    """The chain of ``key``'s model after applying ``seqs`` in this order."""
    chain = ""
    for n in seqs:
        chain = step(chain, key, n)
    return chain


def init() -> tuple[dict[str, Any], None]:
    return {"count": 0, "chain": "", "seqs": []}, None


def make_update(emit: bool) -> Callable[[Any], Any]:
    def update(message: Any) -> Any:
        if message.get("poison"):
            raise Poisoned(f"poison event of {message['k']}")
        key, n = message["k"], message["n"]

        def transform(model: dict[str, Any]) -> tuple[dict[str, Any], Any]:
            new = {
                "count": model["count"] + 1,
                "chain": step(model["chain"], key, n),
                "seqs": [*model["seqs"], n],
            }
            if emit:  # one downstream message per event, sent by a command
                return new, [lambda: Emit(key, {"k": key, "n": n})]
            return new, None

        return transform

    return update


def hydrate(ctx: Any, key: str, value: bytes) -> tuple[dict[str, Any], None]:
    return json.loads(value), None


def dehydrate(ctx: Any, key: str, model: dict[str, Any]) -> bytes:
    return json.dumps(model, separators=(",", ":")).encode()


# --- a worker in a child process ---------------------------------------------------

# What a worker's store was doing last (Probe.phase).
IDLE, LOADING, APPLYING, SAVING, SAVED = range(5)
# What a worker stops itself before, when the parent arms it (Probe.arm).
ARM_READ, ARM_SAVE = 1, 2
# The negative control's read: the worker's script without its lease check,
# which the worker then makes as a separate step before it (the > hazard).
UNCHECKED_READ = _leases._READ.replace(
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end\n", ""
)
assert UNCHECKED_READ != _leases._READ
READ_SHAS = {hashlib.sha1(text.encode()).hexdigest() for text in (_leases._READ, UNCHECKED_READ)}


class Probe:
    """What a worker child shares with the parent, in shared memory: the phase of
    its store calls and when it last changed (CLOCK_MONOTONIC, the same clock in
    every process), its saves, and a self-stop the parent can arm (``arm``)."""

    def __init__(self, mp: Any) -> None:
        self.phase = mp.RawValue("i", IDLE)
        self.since = mp.RawValue("d", 0.0)
        self.saves = mp.RawValue("q", 0)
        # The parent arms a self-stop (ARM_READ, ARM_SAVE); the child then stops
        # itself right before its next lease-checked read or save: stopped is 1
        # while it is stopped there, 2 once that call returned or raised.
        self.arm = mp.RawValue("i", 0)
        self.stopped = mp.RawValue("i", 0)
        self.started = mp.Event()  # set once the worker was built, before run()


def stop_here(probe: Probe, arm: int) -> bool:
    """Stop this process (SIGSTOP) if the parent armed ``arm``; whether it did."""
    if probe.arm.value != arm:
        return False
    probe.arm.value = 0
    probe.stopped.value = 1
    os.kill(os.getpid(), signal.SIGSTOP)
    return True


class Probed:
    """The worker's store, unchanged, recording its phase in the probe; armed with
    ARM_SAVE, the process stops itself right before its next save: loaded and
    applied, not saved -- a zombie at its most dangerous."""

    def __init__(self, store: Any, probe: Probe) -> None:
        self.store = store
        self.probe = probe

    def _mark(self, phase: int) -> None:
        self.probe.phase.value = phase
        self.probe.since.value = time.monotonic()

    def load(self, ctx: Any, key: str) -> bytes | None:
        return self.store.load(ctx, key)  # type: ignore[no-any-return]

    def load_versioned(self, ctx: Any, key: str) -> tuple[bytes | None, int]:
        self._mark(LOADING)
        try:
            return self.store.load_versioned(ctx, key)  # type: ignore[no-any-return]
        finally:
            self._mark(APPLYING)

    def store_versioned(self, ctx: Any, key: str, value: bytes, version: int) -> int:
        stopped = stop_here(self.probe, ARM_SAVE)
        self._mark(SAVING)
        try:
            return self.store.store_versioned(ctx, key, value, version)  # type: ignore[no-any-return]
        finally:
            self.probe.saves.value += 1
            self._mark(SAVED)
            if stopped:
                self.probe.stopped.value = 2


class ArmedRedis(redis.Redis):
    """A plain redis-py client whose process, armed with ARM_READ, stops itself
    right before its next read script (the lease check and the read): a worker
    paused between pages, that still believes it owns its shards."""

    probe: Probe | None = None

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        probe = self.probe
        if probe is None or sha not in READ_SHAS or not stop_here(probe, ARM_READ):
            return super().evalsha(sha, numkeys, *keys_and_args)
        try:
            return super().evalsha(sha, numkeys, *keys_and_args)
        finally:
            probe.stopped.value = 2


@dataclass(frozen=True)
class Config:
    """Everything a worker child needs; picklable."""

    kind: str  # "sqlite" or "postgres"
    where: Path  # the test's tmp_path (_stores names the file / table after it)
    name: str
    shards: int
    lease: float
    page: int
    client_name: str  # the Redis client name of the workers' connections
    log: Path
    max_failures: int = 3
    output: str | None = None
    emit: bool = False
    trim: bool = True
    # The negative control: check the lease and read in two steps, not one.
    separate_lease_check: bool = False


def open_worker_store(config: Config) -> Any:
    return _stores.reopen(config.kind, config.where)


def worker_main(config: Config, worker_id: str, probe: Probe) -> None:
    """A child: one KeyedWorker running until SIGTERM (then exit 0) or SIGKILL."""
    logging.basicConfig(
        filename=str(config.log),
        level=logging.WARNING,
        format=f"%(created).3f {worker_id} %(levelname)s %(message)s",
    )
    ctx = elmstate.Context()
    signal.signal(signal.SIGTERM, lambda signum, frame: ctx.cancel())
    client = ArmedRedis.from_url(_stores.REDIS, client_name=config.client_name)
    client.probe = probe
    store = open_worker_store(config)
    worker = KeyedWorker(
        client,
        config.name,
        shards=config.shards,
        store=Probed(store, probe),
        init=init,
        update=make_update(config.emit),
        hydrator=hydrate,
        dehydrator=dehydrate,
        worker_id=worker_id,
        lease=config.lease,
        page=config.page,
        max_failures=config.max_failures,
        output=config.output,
        trim=config.trim,
    )
    if config.separate_lease_check:
        unchecked = client.register_script(UNCHECKED_READ)

        def read(keys: list[Any], args: list[Any]) -> Any:
            if client.get(keys[0]) != str(args[0]).encode():
                return None
            return unchecked(keys=keys, args=args)

        worker._leases.read = read  # type: ignore[assignment]
    probe.started.set()
    try:
        worker.run(ctx)
    except BaseException:
        logging.getLogger("elmstate.redis").exception("worker %s: run() raised", worker_id)
        raise
    stats = worker.stats()
    logging.getLogger("elmstate.redis").warning(
        "stats processed=%d skipped=%d dead_lettered=%d conflicts=%d",
        stats.processed,
        stats.skipped,
        stats.dead_lettered,
        stats.conflicts,
    )
    store.close()
    client.close()


@dataclass
class Slot:
    process: Any = None
    probe: Any = None
    worker_id: str = ""
    generation: int = 0


class Cluster:
    """Worker children in slots: start, SIGKILL and restart, SIGSTOP and SIGCONT."""

    def __init__(self, mp: Any, config: Config, workers: int) -> None:
        self.mp = mp
        self.config = config
        self.slots = [Slot() for _ in range(workers)]
        self.exit_codes: list[tuple[str, int | None]] = []

    def start(self, i: int, wait: bool = True) -> Slot:
        slot = self.slots[i]
        slot.generation += 1
        slot.worker_id = f"w{i}.{slot.generation}"
        slot.probe = Probe(self.mp)
        slot.process = self.mp.Process(
            target=worker_main,
            args=(self.config, slot.worker_id, slot.probe),
            daemon=True,
        )
        slot.process.start()
        if wait:
            self.wait_started(i)
        return slot

    def wait_started(self, i: int, timeout: float = 30.0) -> None:
        slot = self.slots[i]
        if not slot.probe.started.wait(timeout):
            raise AssertionError(
                f"worker {slot.worker_id} did not start (exit code {slot.process.exitcode}); "
                f"log:\n{tail(self.config.log)}"
            )

    def busy(self, i: int, within: float = 0.02) -> bool:
        """Whether slot i's store is in a call or left one less than ``within`` s ago."""
        probe = self.slots[i].probe
        phase, since = probe.phase.value, probe.since.value
        return phase in (LOADING, APPLYING, SAVING) or time.monotonic() - since < within

    def kill(self, i: int) -> tuple[bool, bool]:
        """SIGKILL slot i; returns (busy, mid-save): whether its store was in a call,
        or left one less than 20 ms before; whether a save was in flight."""
        slot = self.slots[i]
        phase = slot.probe.phase.value
        busy = self.busy(i)
        slot.process.kill()
        slot.process.join(30)
        assert slot.process.exitcode == -signal.SIGKILL, (
            f"worker {slot.worker_id} ended by itself ({slot.process.exitcode}) before the kill; "
            f"log:\n{tail(self.config.log)}"
        )
        return busy, phase == SAVING

    def pause(self, i: int) -> None:
        os.kill(self.slots[i].process.pid, signal.SIGSTOP)

    def resume(self, i: int) -> None:
        os.kill(self.slots[i].process.pid, signal.SIGCONT)

    def alive(self, i: int) -> bool:
        return bool(self.slots[i].process is not None and self.slots[i].process.is_alive())

    def check_alive(self) -> None:
        """Fail if a worker died by itself (run() raised)."""
        for slot in self.slots:
            if slot.process is not None and slot.process.exitcode not in (None, -signal.SIGKILL):
                raise AssertionError(
                    f"worker {slot.worker_id} exited with {slot.process.exitcode}; "
                    f"log:\n{tail(self.config.log)}"
                )

    def stop(self, timeout: float = 30.0) -> list[int | None]:
        """SIGTERM (after SIGCONT) every live worker; their exit codes."""
        for slot in self.slots:
            if slot.process is not None and slot.process.is_alive():
                os.kill(slot.process.pid, signal.SIGCONT)
                slot.process.terminate()
        codes = []
        for slot in self.slots:
            if slot.process is not None:
                slot.process.join(timeout)
                if slot.process.is_alive():
                    slot.process.kill()
                    slot.process.join()
                codes.append(slot.process.exitcode)
        return codes

    def ensure_stopped(self) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.is_alive():
                os.kill(slot.process.pid, signal.SIGCONT)
                slot.process.kill()
                slot.process.join()


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text().splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- the producer --------------------------------------------------------------------


@dataclass
class Sent:
    """What the producer appended for one key: entry ids and messages, in order."""

    ids: list[str] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)


class Producer(threading.Thread):
    """Appends ``events`` messages to ``keys`` keys (1-3 per put, one key at a
    time), spread evenly over ``seconds``; ``poison_at`` (an event index) makes
    that event the poison one."""

    def __init__(
        self,
        name: str,
        shards: int,
        keys: list[str],
        events: int,
        seconds: float,
        rng: random.Random,
        poison_at: int | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.name_ = name
        self.shards = shards
        self.keys = keys
        self.events = events
        self.seconds = seconds
        self.rng = rng
        self.poison_at = poison_at
        self.sent: dict[str, Sent] = {key: Sent() for key in keys}
        self.poison_ids: list[str] = []
        self.produced = 0
        self.error: BaseException | None = None
        self.finished = threading.Event()

    def run(self) -> None:
        try:
            with redis.Redis.from_url(_stores.REDIS) as client:
                producer = KeyedProducer(client, self.name_, shards=self.shards)
                began = time.monotonic()
                # Carry on from what self.sent already holds (a producer may go on another's work).
                seq = {
                    key: sum(not m.get("poison") for m in self.sent[key].messages)
                    for key in self.keys
                }
                while self.produced < self.events:
                    key = self.rng.choice(self.keys)
                    messages = []
                    poison = False
                    for _ in range(min(self.rng.randint(1, 3), self.events - self.produced)):
                        if self.produced == self.poison_at:
                            messages.append({"k": key, "n": -1, "poison": True})
                            poison = True
                        else:
                            messages.append({"k": key, "n": seq[key]})
                            seq[key] += 1
                        self.produced += 1
                    ids = producer.put(None, key, *messages)
                    sent = self.sent[key]
                    for entry_id, message in zip(ids, messages):
                        sent.ids.append(entry_id)
                        sent.messages.append(message)
                        if poison and message.get("poison"):
                            self.poison_ids.append(entry_id)
                    ahead = began + self.seconds * self.produced / self.events - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished.set()

    def expected(self, key: str) -> list[int]:
        """The key's sequence numbers in stream order (entry id order), poison left out."""
        sent = self.sent[key]
        order = sorted(range(len(sent.ids)), key=lambda i: parse_id(sent.ids[i]))
        return [sent.messages[i]["n"] for i in order if not sent.messages[i].get("poison")]


# --- the killer --------------------------------------------------------------------


@dataclass
class Tally:
    kills: int = 0
    busy_kills: int = 0
    mid_save_kills: int = 0
    pauses: int = 0


class Killer:
    """Every 100-500 ms: SIGKILL a random worker and restart it, or (``pause_chance``)
    SIGSTOP one for 1.5-2.5 leases, then SIGCONT it."""

    def __init__(
        self,
        cluster: Cluster,
        rng: random.Random,
        *,
        pause_chance: float = 0.1,
        victims: list[int] | None = None,
        between: tuple[float, float] = (0.1, 0.5),
    ) -> None:
        self.cluster = cluster
        self.rng = rng
        self.pause_chance = pause_chance
        self.victims = list(range(len(cluster.slots))) if victims is None else victims
        self.between = between
        self.paused: dict[int, float] = {}  # slot -> when to resume it
        self.tally = Tally()

    def run_until(self, done: Callable[[], bool], also: Callable[[], None] | None = None) -> Tally:
        while not done():
            self._sleep(self.rng.uniform(*self.between))
            if also is not None:
                also()
            self.cluster.check_alive()
            self.tick()
        for i in list(self.paused):
            self.cluster.resume(i)
        self.paused.clear()
        return self.tally

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._resume_due()
            time.sleep(min(left, 0.05))

    def _resume_due(self) -> None:
        now = time.monotonic()
        for i, at in list(self.paused.items()):
            if at <= now:
                self.cluster.resume(i)
                del self.paused[i]

    def _busy_one(self, choices: list[int], fallback: int) -> int:
        """A worker whose store is in a call or left one within 5 ms (polled for up
        to 100 ms): a kill of an idle worker proves little."""
        deadline = time.monotonic() + 0.1
        while time.monotonic() < deadline:
            busy = [i for i in choices if self.cluster.busy(i, 0.005)]
            if busy:
                return self.rng.choice(busy)
            time.sleep(0.001)
        return fallback

    def tick(self) -> None:
        self._resume_due()
        choices = [i for i in self.victims if i not in self.paused]
        if not choices:
            return
        i = self.rng.choice(choices)
        if not self.paused and self.rng.random() < self.pause_chance:
            self.cluster.pause(i)
            lease = self.cluster.config.lease
            self.paused[i] = time.monotonic() + lease * self.rng.uniform(1.5, 2.5)
            self.tally.pauses += 1
            return
        i = self._busy_one(choices, i)
        busy, mid_save = self.cluster.kill(i)
        self.tally.kills += 1
        self.tally.busy_kills += busy
        self.tally.mid_save_kills += mid_save
        self.cluster.start(i, wait=False)


# --- the oracle --------------------------------------------------------------------


@dataclass
class Verdict:
    keys: int = 0
    events: int = 0  # expected applications
    applied: int = 0  # applications found in the models
    lost: int = 0
    twice: int = 0
    out_of_order: int = 0
    foreign: int = 0  # applied but never produced (the poison one, say)
    wrong_chains: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return not (
            self.lost or self.twice or self.out_of_order or self.foreign or self.wrong_chains
        ) and (self.applied == self.events)


def judge(models: dict[str, Any], expected: dict[str, list[int]]) -> Verdict:
    """Every key's model against the fold of its events in stream order."""
    verdict = Verdict()
    for key, want in expected.items():
        verdict.keys += 1
        verdict.events += len(want)
        model = models.get(key)
        seqs: list[int] = [] if model is None else list(model["seqs"])
        verdict.applied += len(seqs)
        seen: set[int] = set()
        firsts = []
        for n in seqs:
            if n in seen:
                verdict.twice += 1
            else:
                seen.add(n)
                firsts.append(n)
        wanted = set(want)
        lost = wanted - seen
        verdict.lost += len(lost)
        verdict.foreign += len(seen - wanted)
        rank = {n: i for i, n in enumerate(want)}
        ranks = [rank[n] for n in firsts if n in rank]
        disorder = sum(1 for a, b in zip(ranks, ranks[1:]) if b < a)
        verdict.out_of_order += disorder
        chain = "" if model is None else model["chain"]
        count = 0 if model is None else model["count"]
        ok = chain == fold(key, want) and count == len(want)
        verdict.wrong_chains += not ok
        if not ok and len(verdict.examples) < 5:
            verdict.examples.append(
                f"{key}: {count} applied of {len(want)}; lost {sorted(lost)[:10]}, "
                f"twice {sorted(n for n in seen if seqs.count(n) > 1)[:10]}, "
                f"{disorder} out of order; applied[:20]={seqs[:20]}"
            )
    return verdict


# --- Redis: drained, cleaned up --------------------------------------------------------


def drained(client: redis.Redis, name: str, shards: int) -> bool:
    """Whether the group has read and acknowledged every entry of every shard."""
    for shard in range(shards):
        stream = f"{name}:{shard}"
        info = client.xinfo_stream(stream)
        groups = {g["name"].decode(): g for g in client.xinfo_groups(stream)}
        group = groups.get(GROUP)
        if group is None or group["pending"]:
            return False
        if parse_id(group["last-delivered-id"]) != parse_id(info["last-generated-id"]):
            return False
    return True


def wait_drained(
    client: redis.Redis, name: str, shards: int, cluster: Cluster, timeout: float
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cluster.check_alive()
        if drained(client, name, shards):
            return True
        time.sleep(0.05)
    return drained(client, name, shards)


def delete_keys(client: redis.Redis, *names: str) -> None:
    for name in names:
        keys = list(client.scan_iter(match=f"{name}:*", count=1000))
        if keys:
            client.delete(*keys)


def kill_worker_clients(client: redis.Redis, client_name: str) -> int:
    """CLIENT KILL every connection named ``client_name`` (by id); how many."""
    ids = [int(c["id"]) for c in client.client_list() if c.get("name") == client_name]
    killed = 0
    for client_id in ids:
        try:
            killed += int(client.client_kill_filter(_id=str(client_id)))
        except redis.ResponseError:  # gone already
            pass
    return killed


def log_lines(path: Path, worker_id: str, text: str) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return [line for line in lines if (not worker_id or f" {worker_id} " in line) and text in line]
