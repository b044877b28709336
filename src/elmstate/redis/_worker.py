"""``KeyedWorker``: runs a keyed program over the shards it owns, effectively once.

A worker owns shards under leases (_leases.py), reads a page of a shard with
the lease check in the same server step, groups the page by key and runs
``aggregate(..., feed="inline")`` per key on a versioned store, the snapshot
wrapped in an envelope (_envelope.py) that records the last applied entry id.
The page is acknowledged only after every key of it was saved and its outbox
published. docs/redis.md states the rules; the comments here say why.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Generic

import redis

from .. import _validate as check
from .._aggregate import aggregate
from .._backend import core
from .._errors import Conflict
from ..typing import Dehydrator, Hydrator, Init, Model, Msg, Update, View
from . import _envelope
from ._common import (
    KEY,
    PAYLOAD,
    Decode,
    EntryId,
    after,
    client_arg,
    codec_arg,
    count_arg,
    create_group,
    format_id,
    json_decode,
    json_encode,
    name_arg,
    parse_id,
    record_shards,
    recorded_shards,
    shard_of,
    shard_stream,
    socket_timeout,
)
from ._envelope import Envelope, Outgoing
from ._keyed import Emit, program_args
from ._leases import Leases

log = logging.getLogger("elmstate.redis")

# How long an idle worker blocks waiting for new entries: also how long it may
# take to notice that its ctx ended.
IDLE = 0.1
# How late Redis may end a blocking read (see KeyedWorker.__init__).
BLOCK_LATE = 0.15
# Backoff after an error of Redis or the store (not of the program), doubling
# up to the cap; after this many in a row without progress, the error propagates.
BACKOFF = 0.05
BACKOFF_CAP = 2.0
GIVE_UP = 12
# Backoff before retrying an entry that made the program raise.
RETRY = 0.02
RETRY_CAP = 1.0
# Redis errors that a reconnect may cure.
_TRANSIENT = (redis.ConnectionError, redis.TimeoutError)


class _StoreError(Exception):
    """A store call failed (not the program): the page is rolled back and retried."""


class _Lost(Exception):
    """A save conflicted with a newer one: another worker owns the shard now."""


@dataclass
class _Entry:
    id: EntryId
    raw: bytes  # the id as Redis spells it
    key: str
    payload: bytes


@dataclass
class _Shard:
    index: int
    stream: str
    lease_key: str
    # Pending entries after this id are read first: "0" after taking the shard
    # over (everything its former owner left unacknowledged), then the last id
    # handled (anything after it was delivered with a lost reply).
    cursor: str = "0"
    tail: str = "0-0"  # the newest entry seen, to block on when idle
    # Keys whose oldest unapplied entry made the program raise: their entries
    # wait here (read, unacknowledged) until it succeeds or is dead-lettered.
    held: dict[str, list[_Entry]] = field(default_factory=dict)
    retry_at: dict[str, float] = field(default_factory=dict)
    # key -> the version whose outbox this worker has published.
    published: dict[str, int] = field(default_factory=dict)


@dataclass
class _Result:
    """A key's state once its entries of a page are handled."""

    version: int
    envelope: Envelope
    done: list[_Entry]  # applied or skipped: to acknowledge
    waiting: list[_Entry]  # from the failing entry on: to hold
    error: BaseException | None = None
    # A save put off to the end of the page (stores that save many keys at
    # once): (wrapped value, the version it is based on, entries applied).
    pending: tuple[bytes, int, int] | None = None


@dataclass(frozen=True)
class Stats:
    """A worker's counts since it started, and the lag of each shard it owns."""

    processed: int
    skipped: int
    dead_lettered: int
    conflicts: int
    shards_owned: int
    lag: dict[int, int]


class _KeyRun:
    """One key's aggregate, as the worker runs it: its store, fetcher and update.

    One per worker, reset for each key (a closure or two per key cost more than
    the rest of the worker's own work). As the store, it hands the aggregate the
    program's bytes of the root key, whose envelope the worker read beforehand
    (to skip entries already applied), and wraps what it saves; errors of the
    store itself are told apart from the program's. As the fetcher it decodes
    the key's fresh entries; its update keeps ``Emit`` messages in the outbox.
    """

    __slots__ = (
        "_store",
        "_decode",
        "_update",
        "_output",
        "key",
        "inner",
        "version",
        "payloads",
        "target",
        "carried",
        "outbox",
        "saved",
        "defer",
        "deferred",
    )

    def __init__(self, store: Any, decode: Decode, update: Any, output: str | None) -> None:
        self._store = store
        self._decode = decode
        self._update = update
        self._output = output
        self.key = ""
        self.inner: bytes | None = None
        self.version = 0
        self.payloads: list[bytes] = []
        self.target: EntryId = (0, 0)
        self.carried: tuple[Outgoing, ...] = ()
        self.outbox: list[Emit] = []
        self.saved: tuple[int, Envelope] | None = None
        self.defer = False  # the page saves every key at once: only record the save
        self.deferred: bytes | None = None

    def fetch(self, ctx: Any) -> tuple[list[Any], bool]:
        decode = self._decode
        return [decode(payload) for payload in self.payloads], False

    def update(self, message: Any) -> Any:
        if type(message) is Emit:
            if self._output is None:
                raise ValueError("a command returned Emit, but this worker has no output")
            self.outbox.append(message)
            return None
        return self._update(message)

    def load_versioned(self, ctx: Any, key: str) -> tuple[bytes | None, int]:
        if key == self.key:
            return self.inner, self.version
        return self.load(ctx, key), 0  # not reached: aggregate loads others with load

    def load(self, ctx: Any, key: str) -> bytes | None:
        # A read-only model saved by a worker is an envelope too.
        try:
            value = self._store.load(ctx, key)
        except Exception as exc:
            raise _StoreError(exc) from exc
        return _envelope.unwrap(value).inner

    def store(self, ctx: Any, key: str, value: bytes) -> None:
        raise TypeError("a keyed worker saves by compare-and-set only")

    def close(self) -> None:
        """Nothing of its own to close: the store stays the worker's caller's."""

    def store_versioned(self, ctx: Any, key: str, value: bytes, version: int) -> int:
        inner = check.bytes_value(value, "dehydrator must return bytes")
        new = version + 1  # what store_versioned returns: the dedupe ids name it
        items = self.carried + tuple(
            Outgoing(f"{key}:{new}:{i}", emit.key, json_encode(emit.message))
            for i, emit in enumerate(self.outbox)
        )
        wrapped = _envelope.wrap(self.target, items, inner)
        if self.defer:
            self.deferred = wrapped
            self.saved = (new, Envelope(self.target, items, inner))
            return new
        try:
            stored = self._store.store_versioned(ctx, key, wrapped, version)
        except Conflict:
            raise
        except Exception as exc:
            raise _StoreError(exc) from exc
        self.saved = (int(stored), Envelope(self.target, items, inner))
        return int(stored)


check.register(check.STORES, _KeyRun)


def _no_view(model: Any) -> None:
    return None


def _default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class KeyedWorker(Generic[Model, Msg]):
    """Processes the logical stream ``name`` per key, on the shards it holds leases on.

    See docs/redis.md. ``run(ctx)`` works until ``ctx`` ends; ``stats()`` and
    ``load(ctx, key)`` may be called from any thread, ``load`` from any process.
    """

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        *,
        shards: int,
        store: Any,
        init: Init[Model, Msg],
        update: Update[Model, Msg],
        hydrator: Hydrator[Model],
        dehydrator: Dehydrator[Model],
        view: View[Model] | None = None,
        group: str = "elmstate",
        worker_id: str | None = None,
        lease: float = 10.0,
        page: int = 100,
        max_failures: int = 3,
        decode: Decode | None = None,
        output: str | None = None,
        trim: bool = True,
    ) -> None:
        self._client = client_arg(client)
        self._name = name_arg("name", name)
        self._shards = count_arg("shards", shards)
        check.has_methods("store", store, "load", "load_versioned", "store_versioned")
        program_args(init, update, hydrator, dehydrator, view)
        self._group = name_arg("group", group)
        self._id = _default_worker_id() if worker_id is None else name_arg("worker_id", worker_id)
        self._lease = check.seconds_arg("lease", lease)
        if self._lease <= 0:
            raise ValueError(f"lease must be positive, got {lease!r}")
        self._page = count_arg("page", page)
        self._max_failures = count_arg("max_failures", max_failures)
        self._decode: Decode = codec_arg("decode", decode, json_decode)
        if output is not None:
            name_arg("output", output)
        if not isinstance(trim, bool):
            raise TypeError(f"trim must be a bool, not {type(trim).__name__}")
        self._store = store
        self._init = init
        self._update = update
        self._hydrator = hydrator
        self._dehydrator = dehydrator
        self._view = _no_view if view is None else view
        self._output = output
        self._trim = trim
        # An idle worker blocks in XREAD; redis-py's socket timeout would cut a
        # longer block short with an error, and Redis ends a BLOCK up to about
        # 100 ms late (its clock ticks ten times a second). With less room than
        # that the worker polls instead (0: no blocking read).
        timeout = socket_timeout(self._client)
        if timeout is None:
            self._block = IDLE
        else:
            room = timeout - BLOCK_LATE
            self._block = min(IDLE, room) if room >= 0.01 else 0.0
        record_shards(self._client, self._name, self._shards)
        self._output_shards = 0
        if output is not None:
            self._output_shards = recorded_shards(self._client, output, self._shards)
        self._leases = Leases(self._client, self._name, self._shards, self._id, self._lease)
        self._run = _KeyRun(store, self._decode, update, output)
        # A store that saves many keys in one step saves a page's keys together.
        self._many = callable(getattr(store, "load_many_versioned", None)) and callable(
            getattr(store, "store_many_versioned", None)
        )
        # One queue for every key's batch: a batch that succeeded leaves it drained.
        self._buffer = core.Buffer()
        self._consumer = self._buffer.new_consumer()
        self._owned: dict[int, _Shard] = {}
        self._failures: dict[tuple[int, bytes], int] = {}
        self._processed = 0
        self._skipped = 0
        self._dead = 0
        self._conflicts = 0
        self._next_beat = 0.0  # the next renewal of the leases
        # The next balance: its own deadline, which a renewal in the middle of a
        # long page does not push back (or a busy worker would never balance).
        self._next_balance = 0.0
        for shard in range(self._shards):
            create_group(self._client, shard_stream(self._name, shard), self._group)

    @property
    def worker_id(self) -> str:
        return self._id

    def __repr__(self) -> str:
        return f"KeyedWorker(name={self._name!r}, shards={self._shards}, worker_id={self._id!r})"

    # -- public -----------------------------------------------------------------

    def run(self, ctx: Any = None) -> None:
        """Process the owned shards until ``ctx`` ends; then release them and return."""
        ctx = core._context_arg(ctx)
        errors = 0
        try:
            while not ctx.done:
                try:
                    if not self._step(ctx):
                        self._wait(ctx)  # idle: its blocking read may lose its connection too
                    errors = 0
                except _StoreError as exc:
                    errors = self._backoff(ctx, errors, exc.__cause__ or exc)
                except _TRANSIENT as exc:
                    errors = self._backoff(ctx, errors, exc)
        finally:
            self._release()

    def stats(self) -> Stats:
        """Counts since this worker started; lag = entries the group has not acknowledged."""
        owned = sorted(self._owned)
        lag: dict[int, int] = {}
        for shard in owned:
            lag[shard] = _group_lag(self._client, shard_stream(self._name, shard), self._group)
        return Stats(
            processed=self._processed,
            skipped=self._skipped,
            dead_lettered=self._dead,
            conflicts=self._conflicts,
            shards_owned=len(owned),
            lag=lag,
        )

    def load(self, ctx: Any, key: str) -> Model | None:
        """The model saved for ``key`` (read-only models not resolved), or None."""
        check.key_arg("key", key)
        ctx = core._context_arg(ctx)
        inner = _envelope.unwrap(self._store.load(ctx, key)).inner
        if inner is None:
            return None
        model, _ = self._hydrator(ctx, key, inner)
        return model

    # -- the loop ---------------------------------------------------------------

    def _step(self, ctx: Any) -> bool:
        """One round over the owned shards; whether any had work."""
        now = time.monotonic()
        if now >= self._next_balance:
            self._beat("balance")
        busy = False
        for shard in list(self._owned.values()):
            if ctx.done:
                break
            if shard.index not in self._owned:
                continue
            try:
                busy = self._page_of(ctx, shard) or busy
            except _Lost:
                self._drop(shard, release=True)
        return busy

    def _beat(self, mode: str) -> None:
        owned, gave = self._leases.heartbeat(mode)
        self._next_beat = time.monotonic() + self._lease / 3
        if mode == "balance":
            self._next_balance = self._next_beat
        for index in gave:
            if index in self._owned:
                self._drop(self._owned[index], release=False)  # released by the script
        for index in list(self._owned):
            if index not in owned:  # the lease lapsed: another worker may hold it
                log.warning("worker %s lost the lease of %s", self._id, self._stream(index))
                self._drop(self._owned[index], release=False)
        for index in owned:
            if index not in self._owned:
                self._owned[index] = _Shard(index, self._stream(index), self._leases.keys[index])

    def _stream(self, index: int) -> str:
        return shard_stream(self._name, index)

    def _drop(self, shard: _Shard, *, release: bool) -> None:
        self._owned.pop(shard.index, None)
        for key in list(self._failures):
            if key[0] == shard.index:
                del self._failures[key]
        if release:
            self._client.eval(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end",
                1,
                shard.lease_key,
                self._id,
            )

    def _release(self) -> None:
        try:
            self._leases.heartbeat("release")
        except Exception as exc:  # the leases lapse on their own
            log.warning("worker %s could not release its leases: %r", self._id, exc)
        self._owned.clear()

    def _wait(self, ctx: Any) -> None:
        """Block until an owned shard has new entries, a retry or heartbeat is due,
        or IDLE passed."""
        now = time.monotonic()
        deadline = min(self._next_beat, self._next_balance, now + IDLE)
        for shard in self._owned.values():
            for at in shard.retry_at.values():
                deadline = min(deadline, at)
        timeout = deadline - now
        if timeout <= 0:
            return
        if not self._owned or not self._block:
            ctx.wait(timeout)
            return
        timeout = min(timeout, self._block)
        streams: dict[Any, Any] = {shard.stream: shard.tail for shard in self._owned.values()}
        self._client.xread(streams, count=1, block=max(1, int(timeout * 1000)))

    def _backoff(self, ctx: Any, errors: int, exc: BaseException) -> int:
        errors += 1
        if errors >= GIVE_UP:
            raise exc
        delay = min(BACKOFF * 2 ** (errors - 1), BACKOFF_CAP)
        log.warning(
            "worker %s: %s: %s; retrying in %.2fs", self._id, type(exc).__name__, exc, delay
        )
        # The page in flight was not acknowledged: read it again from the start.
        for shard in self._owned.values():
            shard.cursor = "0"
            shard.held.clear()
            shard.retry_at.clear()
        ctx.wait(delay)
        return errors

    # -- one page ---------------------------------------------------------------

    def _page_of(self, ctx: Any, shard: _Shard) -> bool:
        reply = self._leases.read(
            keys=[shard.lease_key, shard.stream],
            args=[self._id, self._group, self._id_consumer, self._page, shard.cursor],
        )
        if reply is None:  # the lease lapsed: someone else may read it now
            log.warning("worker %s lost the lease of %s", self._id, shard.stream)
            self._drop(shard, release=False)
            return False
        raw_entries, tail = reply
        if tail:
            shard.tail = tail.decode()
        now = time.monotonic()
        due = [k for k, at in shard.retry_at.items() if at <= now]
        if not raw_entries and not due:
            return False
        groups: dict[str, list[_Entry]] = {}
        for key in due:
            del shard.retry_at[key]
            groups[key] = shard.held.pop(key)
        acks: list[bytes] = []
        last: EntryId | None = None
        for raw_id, fields in raw_entries:
            last = parse_id(raw_id)
            if fields is None:  # deleted or trimmed while pending: nothing to apply
                acks.append(raw_id)
                self._skipped += 1
                continue
            entry = self._entry(shard, raw_id, last, fields)
            if entry is None:
                continue
            if entry.key in shard.held:  # behind an entry that failed: waits
                shard.held[entry.key].append(entry)
            else:
                groups.setdefault(entry.key, []).append(entry)
        if last is not None:
            shard.cursor = format_id(last)
            shard.tail = max(shard.tail, shard.cursor, key=parse_id)
        loads: dict[str, tuple[bytes | None, int]] = {}
        if self._many and groups:
            keys = list(groups)
            try:
                loads = dict(zip(keys, self._store.load_many_versioned(ctx, keys)))
            except Exception as exc:
                raise _StoreError(exc) from exc
        results: dict[str, _Result] = {}
        for key, entries in groups.items():
            if ctx.done:  # roll the page back: not acknowledged, read again later
                shard.cursor = "0"
                shard.held.clear()
                shard.retry_at.clear()
                return True
            if time.monotonic() >= self._next_beat:  # a long page: keep the leases
                self._beat("renew")
                if shard.index not in self._owned:
                    return True
            result = self._key(ctx, shard, key, entries, loads.get(key))
            results[key] = result
            if self._failures and not result.waiting:  # a retried entry succeeded
                for entry in result.done:
                    self._failures.pop((shard.index, entry.raw), None)
            acks.extend(e.raw for e in result.done)
            if result.waiting:
                self._failed(shard, key, result)
        if loads:
            self._save_page(ctx, shard, results, groups)
        self._finish(shard, results, acks)
        return True

    def _save_page(
        self,
        ctx: Any,
        shard: _Shard,
        results: dict[str, _Result],
        groups: dict[str, list[_Entry]],
    ) -> None:
        """Save the page's keys in one all-or-nothing step; on a conflict, key by key
        (to tell lost replies and keys another worker already applied from rivals)."""
        items = []
        applied = 0
        for key, result in results.items():
            if result.pending is not None:
                items.append((key, result.pending[0], result.pending[1]))
                applied += result.pending[2]
        if not items:
            return
        try:
            self._store.store_many_versioned(ctx, items)
        except Conflict:
            for key, value, version in items:
                try:
                    self._store.store_versioned(ctx, key, value, version)
                except Conflict:
                    entries = groups[key]
                    results[key] = self._conflicted(ctx, shard, key, entries, entries[-1].id)
                except Exception as exc:
                    raise _StoreError(exc) from exc
        except Exception as exc:
            raise _StoreError(exc) from exc
        self._processed += applied  # (or by another worker, where a conflict says so)

    @property
    def _id_consumer(self) -> str:
        # One consumer per shard, whoever owns it: its pending entries are the
        # shard's, and a new owner reads them first without claiming them.
        return "owner"

    def _entry(self, shard: _Shard, raw_id: bytes, entry_id: EntryId, fields: Any) -> _Entry | None:
        """The entry, or None after dead-lettering one that is not ours to read."""
        if isinstance(fields, list):  # Lua hands back a flat array
            fields = dict(zip(fields[::2], fields[1::2]))
        key = fields.get(KEY)
        payload = fields.get(PAYLOAD)
        problem = None
        if key is None or payload is None:
            names = ", ".join(sorted(repr(f.decode(errors="replace")) for f in fields))
            problem = f"entry has no {'key' if key is None else 'payload'} field (fields: {names})"
        else:
            try:
                text = key.decode()
            except UnicodeDecodeError:
                problem = "entry's key is not UTF-8"
        if problem is not None:
            self._dead_letter(shard, raw_id, key or b"", payload or b"", ValueError(problem))
            return None
        return _Entry(entry_id, raw_id, text, payload)

    def _key(
        self,
        ctx: Any,
        shard: _Shard,
        key: str,
        entries: list[_Entry],
        loaded: tuple[bytes | None, int] | None = None,
    ) -> _Result:
        """Apply ``entries`` to ``key``; on a program error, isolate the entry at fault.

        With ``loaded`` (the page's keys were loaded at once) the save is put off
        to the end of the page; the entries of a key that failed are retried one
        at a time, each saved at once.
        """
        result = self._apply(ctx, shard, key, entries, loaded)
        if result.error is None or len(result.waiting) == 1:
            return result
        # Which entry failed? Apply them one at a time up to the first that fails.
        done = list(result.done)
        for i in range(len(done), len(entries)):
            # Each saves a version whose outbox is published only at the page's end:
            # the next one carries it on.
            single = self._apply(ctx, shard, key, [entries[i]], carry=True)
            if single.error is not None:
                return _Result(single.version, single.envelope, done, entries[i:], single.error)
            done.append(entries[i])
        return _Result(single.version, single.envelope, done, [])

    def _apply(
        self,
        ctx: Any,
        shard: _Shard,
        key: str,
        entries: list[_Entry],
        loaded: tuple[bytes | None, int] | None = None,
        carry: bool = False,
    ) -> _Result:
        if loaded is None:
            try:
                value, version = self._store.load_versioned(ctx, key)
            except Exception as exc:
                raise _StoreError(exc) from exc
        else:
            value, version = loaded
        try:
            envelope = _envelope.unwrap(value)
        except ValueError as exc:  # a damaged envelope fails every entry of the key
            return _Result(version, _envelope.ABSENT, [], entries, exc)
        applied = envelope.applied
        fresh = entries if applied is None else [e for e in entries if e.id > applied]
        skipped = len(entries) - len(fresh)
        self._skipped += skipped
        if not fresh:
            return _Result(version, envelope, entries, [])
        run = self._run
        run.key = key
        run.inner = envelope.inner
        run.version = version
        run.payloads = [e.payload for e in fresh]
        run.target = target = fresh[-1].id
        # The stored outbox goes into the next save only while it may not have
        # been published: a page that saved it and was acknowledged published it
        # first, so it is unpublished only if that page's entries of this key are
        # still pending -- skipped here. (A page is read in id order, so they are
        # in this page or were in an earlier one.) This keeps outboxes bounded.
        # ``carry``: an earlier save of this page, not published yet.
        unpublished = (skipped or carry) and shard.published.get(key) != version
        run.carried = envelope.outbox if unpublished else ()
        run.outbox = []
        run.saved = None
        run.defer = loaded is not None
        run.deferred = None
        try:
            aggregate(
                self._init,
                run.update,
                self._view,
                self._buffer,
                self._consumer,
                run.fetch,
                run,
                self._hydrator,
                self._dehydrator,
                key,
                feed="inline",
            )
        except _StoreError:
            self._new_buffer()
            raise
        except Conflict:
            return self._conflicted(ctx, shard, key, entries, target)
        except Exception as exc:  # the program's: decode, init, update, view, ...
            # A failed batch may leave messages in its queue: the next key gets a new one.
            self._new_buffer()
            return _Result(version, envelope, entries[:skipped], fresh, exc)
        assert run.saved is not None
        new_version, saved = run.saved
        if run.deferred is not None:
            return _Result(
                new_version, saved, entries, [], pending=(run.deferred, version, len(fresh))
            )
        self._processed += len(fresh)
        return _Result(new_version, saved, entries, [])

    def _new_buffer(self) -> None:
        self._buffer.close()
        self._buffer = core.Buffer()
        self._consumer = self._buffer.new_consumer()

    def _conflicted(
        self, ctx: Any, shard: _Shard, key: str, entries: list[_Entry], target: EntryId
    ) -> _Result:
        """A save conflicted. If the stored snapshot already covers these entries, the
        save landed (its reply was lost, and it was re-sent) or another worker applied
        them: either way they are applied. Else a newer owner is at work."""
        try:
            value, version = self._store.load_versioned(ctx, key)
        except Exception as exc:
            raise _StoreError(exc) from exc
        try:
            envelope = _envelope.unwrap(value)
        except ValueError:  # damaged since: read again, it takes the poison path
            raise _Lost(key) from None
        if envelope.applied is not None and envelope.applied >= target:
            return _Result(version, envelope, entries, [])
        self._conflicts += 1
        log.warning("worker %s: %s changed under it; giving up %s", self._id, key, shard.stream)
        raise _Lost(key)

    def _failed(self, shard: _Shard, key: str, result: _Result) -> None:
        """Count a failure of the key's first waiting entry; dead-letter it at the limit."""
        head = result.waiting[0]
        count = self._failures.get((shard.index, head.raw), 0) + 1
        error = result.error
        assert error is not None
        log.warning(
            "worker %s: %s entry %s failed (%d of %d): %s",
            self._id,
            shard.stream,
            head.raw.decode(),
            count,
            self._max_failures,
            _describe(error),
        )
        rest = result.waiting
        if count >= self._max_failures:
            self._failures.pop((shard.index, head.raw), None)
            self._dead_letter(shard, head.raw, head.key.encode(), head.payload, error)
            rest = rest[1:]
            delay = 0.0
        else:
            self._failures[(shard.index, head.raw)] = count
            delay = min(RETRY * 2 ** (count - 1), RETRY_CAP)
        if rest:
            shard.held[key] = rest + shard.held.get(key, [])
            shard.retry_at[key] = time.monotonic() + delay

    def _dead_letter(
        self, shard: _Shard, raw_id: bytes, key: bytes, payload: bytes, error: BaseException
    ) -> None:
        done = self._leases.dead(
            keys=[shard.lease_key, shard.stream, f"{self._name}:dead"],
            args=[
                self._id,
                self._group,
                raw_id,
                "key",
                key,
                "payload",
                payload,
                "error",
                _describe(error),
                "shard",
                shard.index,
                "id",
                raw_id,
            ],
        )
        if not done:
            raise _Lost(shard.stream)
        self._dead += 1

    def _finish(self, shard: _Shard, results: dict[str, _Result], acks: list[bytes]) -> None:
        """Publish every outbox of the page, acknowledge it, and trim below it."""
        pipe = self._client.pipeline(transaction=True)
        publish: list[tuple[str, int]] = []
        for key, result in results.items():
            outbox = result.envelope.outbox
            if outbox and shard.published.get(key) != result.version:
                for item in outbox:
                    pipe.xadd(
                        shard_stream(self._output or "", shard_of(item.key, self._output_shards)),
                        {KEY: item.key.encode(), PAYLOAD: item.payload, b"dedupe": item.dedupe},
                    )
                publish.append((key, result.version))
        if acks:
            pipe.xack(shard.stream, self._group, *acks)
        if self._trim and shard.cursor != "0":
            oldest = after(parse_id(shard.cursor))
            held = [e.id for entries in shard.held.values() for e in entries]
            if held:
                oldest = min(format_id(min(held)), oldest, key=parse_id)
            pipe.xtrim(shard.stream, minid=oldest, approximate=True)
        if len(pipe):
            pipe.execute()
        for key, version in publish:
            shard.published[key] = version


def _describe(error: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(error), error)).strip()


def _group_lag(client: redis.Redis, stream: str, group: str) -> int:
    for info in client.xinfo_groups(stream):
        if info["name"].decode() == group:
            lag = info.get("lag")
            if lag is None:  # Redis cannot tell (entries deleted): count them
                lag = len(
                    client.xrange(stream, min=after(parse_id(info["last-delivered-id"]))) or ()
                )
            return int(info["pending"]) + int(lag)
    return 0
