"""The programs and child processes of tests/test_store_concurrency.py.

A module of its own, not the test file, so that a child process started with
``multiprocessing``'s spawn context imports it by name (and not pytest's test
module with its fixtures). Everything a child receives is picklable: a store
kind and a directory, from which ``_stores.reopen`` opens its own store.
"""

from __future__ import annotations

import hashlib
import os
import random
import struct
import time
from collections.abc import Collection
from contextlib import closing
from pathlib import Path
from types import ModuleType
from typing import Any

import _stores

import elmstate

KEY = "counter"
BARRIER_TIMEOUT = 30.0  # seconds; a worker that never arrives breaks the barrier for all

# --- the counter: one message, one increment, one compare-and-set save -------------


def init() -> tuple[int, None]:
    return 0, None


def update(message: int) -> Any:
    return lambda model: (model + message, None)


def hydrate(ctx: Any, key: str, value: bytes) -> tuple[int, None]:
    return int(value), None


def dehydrate(ctx: Any, key: str, model: int) -> bytes:
    return str(model).encode()


def one_increment(ctx: Any) -> tuple[list[int], bool]:
    return [1], False


class Counter:
    """Adds 1 to the count at ``KEY`` ``n`` times through ``aggregate``, each time
    retrying on ``Conflict`` until its save goes through; counts the conflicts.

    ``meet_at`` widens the race deterministically: on the first attempt of each
    of those increments the view (called between the load and the save) waits
    at ``barrier`` until every worker has loaded. At that moment all of them
    hold a loaded version, at most one of them the newest, so at least
    ``parties - 1`` of their saves must conflict. Between the meetings the race
    is left to the scheduler.
    """

    def __init__(
        self,
        elm: ModuleType,
        store: Any,
        *,
        feed: str,
        barrier: Any = None,
        meet_at: Collection[int] = (),
    ) -> None:
        self.elm = elm
        self.store = store
        self.feed = feed
        self.barrier = barrier
        self.meet_at = meet_at
        self.meeting: Any = None  # the barrier to wait at in the current attempt's view
        # Under the test session's pure core, a store from _stores comes from the
        # compiled generation of the package and raises that generation's Conflict
        # (tests/conftest.py imports elmstate twice); a user has only one.
        self.conflict_types = tuple({elm.Conflict, elmstate.Conflict})
        self.conflicts = 0
        self.successes = 0

    def view(self, model: int) -> None:
        meeting, self.meeting = self.meeting, None
        if meeting is not None:
            meeting.wait(BARRIER_TIMEOUT)

    def run(self, n: int) -> None:
        try:
            for i in range(n):
                self.meeting = self.barrier if i in self.meet_at else None
                while not self._attempt():
                    self.meeting = None
        except BaseException:
            if self.barrier is not None:
                self.barrier.abort()  # the others fail at once instead of timing out
            raise

    def _attempt(self) -> bool:
        elm = self.elm
        buf = elm.Buffer()  # a fresh queue per attempt: nothing of a failed one is read again
        consumer = buf.new_consumer()
        try:
            elm.aggregate(
                init,
                update,
                self.view,
                buf,
                consumer,
                one_increment,
                self.store,
                hydrate,
                dehydrate,
                KEY,
                ctx=elm.Context(timeout=BARRIER_TIMEOUT),
                feed=self.feed,
            )
        except self.conflict_types as exc:
            # The key moved on since this attempt loaded it: versions only grow.
            assert exc.key == KEY and exc.expected < exc.actual, repr(exc)
            self.conflicts += 1
            return False
        finally:
            consumer.close()
            buf.close()
        self.successes += 1
        return True


class LastWriterWins:
    """A broken versioned store: ``store_versioned`` ignores the version (a plain
    ``store``). The negative control: with it, concurrent increments get lost."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def load(self, ctx: Any, key: str) -> bytes | None:
        return self.inner.load(ctx, key)  # type: ignore[no-any-return]

    def store(self, ctx: Any, key: str, value: bytes) -> None:
        self.inner.store(ctx, key, value)

    def load_versioned(self, ctx: Any, key: str) -> tuple[bytes | None, int]:
        return self.inner.load_versioned(ctx, key)  # type: ignore[no-any-return]

    def store_versioned(self, ctx: Any, key: str, value: bytes, version: int) -> int:
        self.inner.store(ctx, key, value)
        return version + 1


def count_in_process(
    kind: str,
    where: Path,
    n: int,
    barrier: Any,
    meet_at: Collection[int],
    results: Any,
    last_writer_wins: bool = False,
) -> None:
    """A child process's part of the increments; puts ``(conflicts, successes)`` on
    ``results``, or an error's repr."""
    try:
        with closing(_stores.reopen(kind, where)) as shared:
            store = LastWriterWins(shared) if last_writer_wins else shared
            counter = Counter(elmstate, store, feed="inline", barrier=barrier, meet_at=meet_at)
            counter.run(n)
        results.put((counter.conflicts, counter.successes))
    except BaseException as exc:
        results.put(repr(exc))
        raise


# --- big self-checking snapshots, for the kill -9 test -----------------------------
#
# A snapshot is a header (magic, sequence number, body length, SHA-256 of the
# body) followed by a random body of 1-4 MB. A torn write (a prefix, or pages
# of two saves mixed) fails the length or the hash. The sequence number is the
# version the save creates, so the header must also agree with the version the
# store returns beside it.

MAGIC = b"ELMSNAP1"
HEADER = struct.Struct(">8sQQ32s")


class Torn(AssertionError):
    """A stored snapshot that is not any complete value that was saved."""


def snapshot(seq: int, rng: random.Random) -> bytes:
    body = rng.randbytes(rng.randint(1 << 20, 4 << 20))
    return HEADER.pack(MAGIC, seq, len(body), hashlib.sha256(body).digest()) + body


def check_snapshot(value: bytes) -> int:
    """The snapshot's sequence number; raises Torn unless it is complete and intact."""
    if len(value) < HEADER.size:
        raise Torn(f"{len(value)} bytes: shorter than a header")
    magic, seq, length, digest = HEADER.unpack_from(value)
    body = memoryview(value)[HEADER.size :]
    if magic != MAGIC:
        raise Torn(f"bad magic {magic!r}")
    if len(body) != length:
        raise Torn(f"snapshot {seq}: a {len(body)}-byte body, the header says {length}")
    if hashlib.sha256(body).digest() != digest:
        raise Torn(f"snapshot {seq}: the body does not match its hash")
    return int(seq)


class Progress:
    """What a saving child shares with its parent, in shared memory (``RawValue``s
    survive the child's death, so the parent reads them after the kill)."""

    def __init__(self, mp: Any) -> None:
        self.saved = mp.RawValue("q", 0)  # the version of the child's last returned save
        self.saves = mp.RawValue("q", 0)  # saves returned, in this child
        self.saving = mp.RawValue("q", 0)  # the version being saved now, 0 between saves
        self.save_seconds = mp.RawValue("d", 0.0)  # the duration of the last returned save
        self.started = mp.Event()  # set once the child has returned a save


def save_forever(kind: str, where: Path, mode: str, seed: int, progress: Progress) -> None:
    """Save ever newer snapshots of ``KEY`` until killed: by ``store_versioned``
    (``mode="store"``) or through ``aggregate`` (``mode="aggregate"``, whose model
    is the sequence number and whose hydrator checks what it loads)."""
    rng = random.Random(seed)
    began = 0.0
    with closing(_stores.reopen(kind, where)) as store:

        def saving(seq: int) -> None:  # from here until the save returns
            nonlocal began
            progress.saving.value = seq
            began = time.perf_counter()

        def saved(seq: int) -> None:
            progress.save_seconds.value = time.perf_counter() - began
            progress.saved.value = seq  # before saving is cleared: a kill between
            progress.saving.value = 0  # the two must not hide the save that landed
            progress.saves.value += 1
            if progress.saves.value == 1:
                progress.started.set()

        while True:
            if mode == "store":
                value, version = store.load_versioned(None, KEY)
                if value is not None and check_snapshot(value) != version:
                    raise Torn(f"snapshot {check_snapshot(value)} stored as version {version}")
                new = snapshot(version + 1, rng)
                saving(version + 1)
                store.store_versioned(None, KEY, new, version)
                saved(version + 1)
            else:

                def to_bytes(ctx: Any, key: str, seq: int) -> bytes:
                    new = snapshot(seq, rng)
                    saving(seq)  # the dehydrator is the last step before the save
                    return new

                buf = elmstate.Buffer()
                seq = elmstate.aggregate(
                    init,
                    update,
                    lambda model: None,
                    buf,
                    buf.new_consumer(),
                    one_increment,
                    store,
                    lambda ctx, key, value: (check_snapshot(value), None),
                    to_bytes,
                    KEY,
                    feed="inline",
                )
                saved(seq)


def open_new_sqlite_file(path: str, barrier: Any, results: Any) -> None:
    """A child: wait for the others, then open (and so create) ``path`` at the same
    moment as they do, and write one key of its own."""
    try:
        barrier.wait()
        with elmstate.SQLiteStore(path) as store:
            store.store_versioned(None, f"child-{os.getpid()}", b"here", 0)
        results.put("ok")
    except BaseException as exc:  # reported to the parent, which fails the test
        results.put(f"{type(exc).__name__}: {exc}")
