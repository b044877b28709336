"""Concurrency proofs for the versioned stores: tests that fail if the
compare-and-set is wrong (docs/contract.md#versioned-stores,
docs/contract.md#storing-the-model, docs/stores.md#conflicts-and-retrying,
docs/contract.md#bundled-stores).

- Threads, then processes, increment one key through ``aggregate`` with a
  retry loop on ``Conflict``: not one increment may be lost, and the race must
  really have happened (conflicts were seen).
- A last-writer-wins store in the same harness loses increments: the harness
  detects lost updates.
- A process saving big self-checking snapshots is killed with SIGKILL in the
  middle of a save, again and again: what is stored is always a complete old or
  new snapshot, and loads and saves go on working.

Each runs over every store kind of tests/_stores.py (or every kind that several
processes can share); the programs and child processes live in
tests/_concurrency.py.

The file takes about a minute. ``ELMSTATE_TEST_STRESS=1`` runs the longer
version: the thread tests over every kind, feed and core, and 100 kills per
kind instead of 20.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sys
import threading
import time
from contextlib import closing
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import _concurrency
import pytest
from _concurrency import KEY, Counter, LastWriterWins, Progress, check_snapshot, snapshot
from _helpers import SAFETY
from _stores import KINDS, SERVER_KINDS, SHARED_KINDS, connections, open_store, reopen

import elmstate

STRESS = os.environ.get("ELMSTATE_TEST_STRESS", "") == "1"
WATCHDOG = 600.0 if STRESS else 120.0  # seconds, per test (tests/conftest.py)

THREADS, PER_THREAD = 8, 250
PROCESSES, PER_PROCESS = 4, 500
TOTAL = 2000
assert THREADS * PER_THREAD == PROCESSES * PER_PROCESS == TOTAL
KILLS = 100 if STRESS else 20

FEEDS = ("inline", "thread")
# The save is the same code whichever the core and the feed (_aggregate.py);
# what differs is the batch in between. So every kind runs with the inline feed
# on the live core; the feeder thread (slow here: every attempt starts one, and
# there are 3-4 conflicts per save) on the embedded stores; the other core on
# MemoryStore. The stress run crosses them all.
FEEDER_KINDS = KINDS if STRESS else tuple(k for k in KINDS if k in ("memory", "sqlite"))
EACH_CORE_KINDS, EACH_CORE_FEEDS = (KINDS, FEEDS) if STRESS else (("memory",), ("inline",))

# Children never fork this process, which runs other threads (stores' own, the
# timer's) whose held locks a fork would copy. They fork from a forkserver, a
# fresh interpreter that imported elmstate, the store clients and pytest once:
# a child then starts in milliseconds, not the few hundred a spawned
# interpreter takes (the kill test starts 20 per store kind). Before Python
# 3.12.8 and 3.13.1 the forkserver ignores the sys.path it is given
# (python/cpython#117378), so there tests/_concurrency.py itself is imported in
# each child (it is small); a preloaded module that fails to import is skipped.
# Where there is no forkserver (Windows), children are spawned.
if "forkserver" in multiprocessing.get_all_start_methods():
    MP: Any = multiprocessing.get_context("forkserver")
    # No effect if this session's forkserver already runs: then it is only slower.
    MP.set_forkserver_preload(
        ["elmstate", "pytest", "elmstate.stores.postgres", "elmstate.stores.redis", "_concurrency"]
    )
else:
    MP = multiprocessing.get_context("spawn")


Say = Callable[[str], None]


@pytest.fixture
def say(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> Say:
    """Shows a test's figures (conflicts seen, kills that landed mid-save) beside
    its name under ``pytest -v``."""

    def say(text: str) -> None:
        if request.config.getoption("verbose") > 0:
            with capsys.disabled():
                print(f"({text})", end=" ")

    return say


def meetings(per_worker: int) -> tuple[int, ...]:
    """The increments at which every worker meets the others before saving (the
    first, through the insert of an absent key, and one halfway, through the
    update of a present one): each forces at least ``workers - 1`` conflicts."""
    return (0, per_worker // 2)


def count_with_threads(elm: ModuleType, store: Any, feed: str) -> tuple[int, int, int]:
    """8 threads x 250 increments of ``KEY``; returns (conflicts, successes, elapsed ms)."""
    barrier = threading.Barrier(THREADS)
    counters = [
        Counter(elm, store, feed=feed, barrier=barrier, meet_at=meetings(PER_THREAD))
        for _ in range(THREADS)
    ]
    errors: list[BaseException] = []

    def work(counter: Counter) -> None:
        try:
            counter.run(PER_THREAD)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,), daemon=True) for c in counters]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WATCHDOG)
        assert not thread.is_alive(), "an incrementing thread is stuck"
    if errors:
        raise errors[0]
    elapsed = round((time.perf_counter() - began) * 1000)
    return sum(c.conflicts for c in counters), sum(c.successes for c in counters), elapsed


def stored_count(store: Any) -> tuple[int, int]:
    """The count stored at ``KEY`` and its version."""
    value, version = store.load_versioned(None, KEY)
    return int(value), version


@pytest.mark.parametrize("kind", KINDS)
def test_threads_lose_no_increment(kind: str, tmp_path: Path, say: Say) -> None:
    """8 threads x 250 increments through aggregate (feed="inline") with a retry
    loop on Conflict: the count is exactly 2,000, one version per save, and
    saves did conflict."""
    assert_threads_lose_no_increment(elmstate, kind, "inline", tmp_path, say)


@pytest.mark.parametrize("kind", FEEDER_KINDS)
def test_threads_lose_no_increment_with_a_feeder_thread(
    kind: str, tmp_path: Path, say: Say
) -> None:
    """The same with feed="thread": a feeder thread per aggregate."""
    assert_threads_lose_no_increment(elmstate, kind, "thread", tmp_path, say)


@pytest.mark.parametrize("feed", EACH_CORE_FEEDS)
@pytest.mark.parametrize("kind", EACH_CORE_KINDS)
def test_threads_lose_no_increment_on_either_core(
    elm: ModuleType, kind: str, feed: str, tmp_path: Path, say: Say
) -> None:
    """The same on the compiled and on the pure core."""
    assert_threads_lose_no_increment(elm, kind, feed, tmp_path, say)


def assert_threads_lose_no_increment(
    elm: ModuleType, kind: str, feed: str, tmp_path: Path, say: Say
) -> None:
    with open_store(kind, tmp_path) as store:
        conflicts, successes, elapsed = count_with_threads(elm, store, feed)
        assert stored_count(store) == (TOTAL, TOTAL)
    assert successes == TOTAL
    assert conflicts >= len(meetings(PER_THREAD)) * (THREADS - 1)
    say(f"{conflicts} conflicts in {elapsed} ms")


def test_a_last_writer_wins_store_loses_increments(
    elm: ModuleType, tmp_path: Path, say: Say
) -> None:
    """The negative control: the same harness over a store whose store_versioned
    ignores the version sees no conflict and a count short of 2,000 (each
    meeting alone loses 7 increments)."""
    with open_store("memory", tmp_path) as store:
        conflicts, successes, _ = count_with_threads(elm, LastWriterWins(store), "inline")
        count, version = stored_count(store)
    assert (conflicts, successes, version) == (0, TOTAL, TOTAL)
    assert count <= TOTAL - len(meetings(PER_THREAD)) * (THREADS - 1)
    say(f"a count of {count}: {TOTAL - count} increments lost")


def count_with_processes(
    kind: str, where: Path, last_writer_wins: bool = False
) -> tuple[int, int, int]:
    """4 processes x 500 increments of ``KEY``; returns (conflicts, successes, elapsed ms)."""
    barrier = MP.Barrier(PROCESSES)
    results = MP.Queue()
    children = [
        MP.Process(
            target=_concurrency.count_in_process,
            args=(kind, where, PER_PROCESS, barrier, meetings(PER_PROCESS), results),
            kwargs={"last_writer_wins": last_writer_wins},
            daemon=True,
        )
        for _ in range(PROCESSES)
    ]
    began = time.perf_counter()
    for child in children:
        child.start()
    try:
        outcomes = [results.get(timeout=WATCHDOG) for _ in children]
        for child in children:
            child.join(SAFETY)
            assert child.exitcode == 0, f"a child ended with exit code {child.exitcode}"
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
                child.join()
        results.close()
        results.join_thread()
    errors = [outcome for outcome in outcomes if isinstance(outcome, str)]
    assert not errors, errors
    elapsed = round((time.perf_counter() - began) * 1000)
    return sum(o[0] for o in outcomes), sum(o[1] for o in outcomes), elapsed


@pytest.mark.parametrize("kind", SHARED_KINDS)
def test_processes_lose_no_increment(kind: str, tmp_path: Path, say: Say) -> None:
    """4 processes x 500 increments through aggregate on one shared store, each
    with its own connection: exactly 2,000, and saves did conflict."""
    with open_store(kind, tmp_path) as store:
        conflicts, successes, elapsed = count_with_processes(kind, tmp_path)
        assert stored_count(store) == (TOTAL, TOTAL)
    assert successes == TOTAL
    assert conflicts >= len(meetings(PER_PROCESS)) * (PROCESSES - 1)
    say(f"{conflicts} conflicts in {elapsed} ms")


def test_the_snapshot_check_detects_torn_values() -> None:
    """The kill test's self-check fails a prefix, a spliced value and a bad header
    (otherwise a torn save could pass it)."""
    rng = random.Random(7)
    old, new = snapshot(1, rng), snapshot(2, rng)
    assert (check_snapshot(old), check_snapshot(new)) == (1, 2)
    cut = len(new) // 2
    spliced = (new[:cut] + old[cut:])[: len(new)].ljust(len(new), b"\0")
    header = _concurrency.HEADER.size
    for torn in (new[:cut], new[:10], spliced, old[:header] + new[header:], b"x" + new[1:]):
        with pytest.raises(_concurrency.Torn):
            check_snapshot(torn)


def poll(predicate: Callable[[], bool]) -> bool:
    """wait_for at a finer grain: a save on loopback may take only milliseconds."""
    deadline = time.monotonic() + SAFETY
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.0002)
    return True


def kill_during_a_save(kind: str, where: Path, mode: str, rng: random.Random) -> tuple[int, int]:
    """Start a child saving snapshots, SIGKILL it at a random point of a save, and
    return (the version it was saving then, or 0; the version of its last returned save)."""
    progress = Progress(MP)
    child = MP.Process(
        target=_concurrency.save_forever,
        args=(kind, where, mode, rng.randrange(1 << 32), progress),
        daemon=True,
    )
    child.start()
    try:
        assert progress.started.wait(WATCHDOG / 4), f"no save returned; exit code {child.exitcode}"
        # A random point of the next save that begins (the last one's duration
        # tells how long this one is likely to take); if it has ended by then,
        # the start of the one after.
        saved = progress.saved.value
        assert poll(lambda: progress.saving.value > saved), f"exit code {child.exitcode}"
        time.sleep(rng.uniform(0.0, 0.9 * progress.save_seconds.value))
        saved = progress.saved.value
        if not progress.saving.value:
            assert poll(lambda: progress.saving.value > saved), f"exit code {child.exitcode}"
    finally:
        child.kill()
        child.join()
    assert child.exitcode == -signal.SIGKILL, f"the child ended by itself: {child.exitcode}"
    settle(kind, where)
    return progress.saving.value, progress.saved.value


def settle(kind: str, where: Path) -> None:
    """Wait until the server has dropped the killed child's connections.

    A kill does not withdraw a request the child had already sent: the server
    may still carry out, and commit, the save in flight some time after the
    child died (seen with PostgreSQL). Only once the server has dropped the
    connection is the outcome final. The parent holds no connection to the
    store meanwhile, so every connection on ``where`` is the child's. SQLite
    has no server: a dead process sends nothing more and holds no lock.
    """
    if kind in SERVER_KINDS:
        assert poll(lambda: not connections(kind, where)), (
            f"the server still serves the killed child: {connections(kind, where)}"
        )


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
@pytest.mark.parametrize("kind", SHARED_KINDS)
def test_kill_9_mid_save_leaves_an_old_or_a_new_snapshot(
    kind: str, tmp_path: Path, say: Say
) -> None:
    """20 times (100 under stress): a child saves 1-4 MB self-checking snapshots in a loop (by
    store_versioned, or through aggregate, in turn) and is SIGKILLed at a random
    moment of a save. The stored snapshot then is always complete, its sequence
    number is its version, and that version is the child's last returned save or
    the one in flight; later loads and saves work."""
    rng = random.Random()
    mid_save = in_flight_stored = 0
    last_version = 0
    with open_store(kind, tmp_path) as store:  # the store the children share, removed after
        store.close()  # the parent's own connections come and go (see settle)
        for kill in range(KILLS):
            mode = ("store", "aggregate")[kill % 2]
            saving, saved = kill_during_a_save(kind, tmp_path, mode, rng)
            mid_save += saving != 0
            with closing(reopen(kind, tmp_path)) as store:
                value, version = store.load_versioned(None, KEY)
            seq = check_snapshot(value)
            assert seq == version, f"snapshot {seq} stored as version {version}"
            assert version in ((saved, saving) if saving else (saved,)), (saved, saving, version)
            assert version >= last_version
            in_flight_stored += version == saving
            last_version = version
        # The store goes on: a save on the version found, then a load of it.
        with closing(reopen(kind, tmp_path)) as store:
            final = snapshot(last_version + 1, rng)
            assert store.store_versioned(None, KEY, final, last_version) == last_version + 1
            assert store.load_versioned(None, KEY) == (final, last_version + 1)
    # Nearly every kill lands inside a save; the test would prove nothing if
    # they all landed between saves.
    assert mid_save >= KILLS // 2, f"only {mid_save} of {KILLS} kills landed mid-save"
    say(
        f"{mid_save}/{KILLS} kills mid-save, {in_flight_stored} of them after the save "
        f"in flight was stored; {last_version} versions"
    )


TRIALS = 20


def test_processes_may_open_a_new_sqlite_file_at_once(tmp_path: Path) -> None:
    """8 processes create one SQLite file at the same moment, TRIALS times: each opens
    it and writes (switching a new file to WAL needs it alone; SQLite does not
    wait for that by itself) (docs/contract.md#bundled-stores)."""
    for trial in range(TRIALS):
        path = str(tmp_path / f"new-{trial}.sqlite3")
        barrier = MP.Barrier(8)
        results = MP.Queue()
        children = [
            MP.Process(
                target=_concurrency.open_new_sqlite_file,
                args=(path, barrier, results),
                daemon=True,
            )
            for _ in range(8)
        ]
        for child in children:
            child.start()
        try:
            outcomes = [results.get(timeout=WATCHDOG) for _ in children]
        finally:
            for child in children:
                child.join(SAFETY)
                if child.is_alive():
                    child.kill()
                    child.join()
            results.close()
            results.join_thread()
        assert outcomes == ["ok"] * 8, outcomes
        with elmstate.SQLiteStore(path) as store:
            rows = store._connection().execute("SELECT count(*) FROM elmstate_snapshots")
            assert rows.fetchone() == (8,)
