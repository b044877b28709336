"""The command line: ``python -m elmstate.redis worker MODULE:PROGRAM ...``.

Runs ``--workers`` keyed workers as threads of one process, each with its own
Redis client and its own store, until SIGTERM or SIGINT; then every worker
finishes or rolls back its page and releases its leases, and the process exits 0.
On a terminal a progress line (entries per second, lag, shards owned) is
redrawn about once a second; off one, only a line at start and one at exit.
Passwords in the URLs are masked in everything printed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Callable, TextIO
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis

from .._backend import core
from ..stores._secrets import MASK
from ._keyed import Program
from ._worker import KeyedWorker, Stats

PROG = "python -m elmstate.redis"
# Exit codes: a requested stop, a failure at run time (Redis or the store
# unreachable, a worker that gave up), a usage error (arguments, program, URLs).
OK, FAILED, USAGE = 0, 1, 2
PROGRESS_EVERY = 1.0  # seconds between two progress lines on a terminal
TICK = 0.1  # how often the main thread looks at the workers (and a stop request)
CONNECT_TIMEOUT = 5.0  # seconds, unless the Redis URL says otherwise

EPILOG = """\
store URLs:
  sqlite:///relative/path.sqlite3    sqlite:////absolute/path.sqlite3
  postgresql://user:password@host:5432/dbname   (also postgres://; table: --table)
  redis://:password@host:6379/0                  (key prefix: --prefix)

Every worker thread opens its own Redis client and its own store. SIGTERM or
Ctrl-C stops the workers cleanly: each finishes or rolls back its page and
releases its leases at once. A second signal exits at once (the leases then
lapse after --lease seconds). The current directory is on sys.path, so
MODULE may be a file there (counters:PROGRAM for ./counters.py).

exit status: 0 stopped by SIGTERM or SIGINT; 1 Redis or the store could not be
reached, or a worker failed; 2 bad arguments, program or URL.
"""


class _Exit(Exception):
    """Ends the command with a one-line message and an exit status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------- arguments


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Run elmstate.redis keyed workers (docs/redis.md)."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    worker = commands.add_parser(
        "worker",
        help="run keyed workers until SIGTERM or Ctrl-C",
        description=(
            "Run W keyed workers of an elmstate.redis.Program over the sharded stream NAME, "
            "as threads of this process, until SIGTERM or Ctrl-C."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    worker.add_argument(
        "program",
        metavar="MODULE:PROGRAM",
        help="the elmstate.redis.Program to run, as module:attribute (e.g. counters:PROGRAM)",
    )
    required = worker.add_argument_group("required")
    required.add_argument("--redis", required=True, metavar="URL", help="the Redis of the streams")
    required.add_argument(
        "--store", required=True, metavar="URL", help="the versioned store (see below)"
    )
    required.add_argument("--name", required=True, help="the logical stream to process")
    required.add_argument(
        "--shards",
        required=True,
        type=_positive_int,
        metavar="N",
        help="its shard count (must match the one recorded under NAME:meta)",
    )
    worker.add_argument(
        "--workers", type=_positive_int, default=1, metavar="W", help="threads (default: 1)"
    )
    worker.add_argument(
        "--group", default="elmstate", help="the consumer group (default: %(default)s)"
    )
    worker.add_argument(
        "--lease",
        type=_positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="how long a shard's lease outlives its last renewal (default: %(default)s)",
    )
    worker.add_argument(
        "--page",
        type=_positive_int,
        default=100,
        metavar="N",
        help="entries read from a shard at a time (default: %(default)s)",
    )
    worker.add_argument(
        "--max-failures",
        type=_positive_int,
        default=3,
        metavar="N",
        help="failures of an entry before it is dead-lettered to NAME:dead (default: 3)",
    )
    worker.add_argument(
        "--output", metavar="NAME", help="the logical stream that Emit messages go to"
    )
    worker.add_argument(
        "--no-trim",
        dest="trim",
        action="store_false",
        help="do not trim the shards below their oldest unacknowledged entry",
    )
    worker.add_argument(
        "--table", help="the PostgreSQL store's table (default: elmstate_snapshots)"
    )
    worker.add_argument("--prefix", help="the Redis store's key prefix (default: elmstate:)")
    return parser


# ------------------------------------------------------------------ secrets


def _passwords(url: str) -> set[str]:
    """Every spelling of a password ``url`` holds (user info or ``?password=``)."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
        if parts.password:
            found.update((parts.password, unquote(parts.password)))
    except ValueError:
        # Unparseable: mask whatever sits between the user's colon and the @.
        rest = url.partition("://")[2].rpartition("@")[0]
        if ":" in rest:
            secret = rest.partition(":")[2]
            found.update((secret, unquote(secret)))
        parts = None
    query = parts.query if parts is not None else url.partition("?")[2]
    for key, value in parse_qsl(query, keep_blank_values=False):
        if key == "password" and value:
            found.update((value, unquote(value)))
    return {secret for secret in found if secret}


def _masked_url(url: str) -> str:
    """``url`` with its password (if any) shown as ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password is None and "password=" not in parts.query:
            return url
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, host = netloc.rpartition("@")
            netloc = f"{userinfo.partition(':')[0]}:{MASK}@{host}"
        query = urlencode(
            [
                (key, MASK if key == "password" else value)
                for key, value in parse_qsl(parts.query, keep_blank_values=True)
            ],
            safe="*",
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return f"{url.partition('://')[0]}://{MASK} (a malformed URL)"


@dataclass
class _Secrets:
    words: set[str] = field(default_factory=set)

    def add_url(self, url: str) -> None:
        self.words |= _passwords(url)

    def scrub(self, text: str) -> str:
        for word in sorted(self.words, key=len, reverse=True):
            text = text.replace(word, MASK)
        return text


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ------------------------------------------------------------------ console


class _Console:
    """stderr, shared by the progress line and the log records.

    The progress line is drawn only on a terminal, and cleared before any
    other line is written, so the two never run into each other.
    """

    def __init__(self, stream: TextIO, secrets: _Secrets) -> None:
        self._stream = stream
        self._secrets = secrets
        self._lock = threading.Lock()
        self._drawn = False
        try:
            self.tty = stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False

    def line(self, text: str) -> None:
        text = self._secrets.scrub(text)
        with self._lock:
            if self._drawn:
                self._stream.write("\r\x1b[K")
                self._drawn = False
            self._stream.write(text + "\n")
            self._stream.flush()

    def progress(self, text: str) -> None:
        if not self.tty:
            return
        text = self._secrets.scrub(text)
        with self._lock:
            self._stream.write("\r" + text + "\x1b[K")
            self._stream.flush()
            self._drawn = True

    def clear(self) -> None:
        with self._lock:
            if self._drawn:
                self._stream.write("\r\x1b[K")
                self._stream.flush()
                self._drawn = False


class _LogHandler(logging.Handler):
    """The workers' warnings (retries, lost leases, poison entries) as console lines."""

    def __init__(self, console: _Console) -> None:
        super().__init__(logging.INFO)
        self._console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = " ".join(record.getMessage().split())
            self._console.line(f"{PROG}: {record.levelname.lower()}: {text}")
        except Exception:
            self.handleError(record)


# ------------------------------------------------------------------ program


def _load_program(spec: str) -> Program[Any, Any]:
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise _Exit(USAGE, f"expected MODULE:PROGRAM (e.g. counters:PROGRAM), got {spec!r}")
    # As `python -m` does: a module in the current directory can be named.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (
            module_name == exc.name or module_name.startswith(exc.name + ".")
        ):
            raise _Exit(
                USAGE,
                f"cannot import {module_name!r}: no module named {exc.name!r}"
                f" (searched the current directory {os.getcwd()} and sys.path)",
            ) from None
        raise _Exit(USAGE, _import_failure(module_name, exc)) from None
    except Exception as exc:  # the module's own code raised
        raise _Exit(USAGE, _import_failure(module_name, exc)) from None
    value: Any = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise _Exit(
                USAGE, f"{module_name!r} ({module.__file__}) has no attribute {attribute!r}"
            ) from None
    if not isinstance(value, Program):
        raise _Exit(
            USAGE,
            f"{spec} is an object of type {type(value).__name__}, not an elmstate.redis.Program"
            " (make one with Program(init, update, hydrator, dehydrator, view=None))",
        )
    return value


def _import_failure(module_name: str, exc: BaseException) -> str:
    # The module's own error: its traceback is the user's code, worth seeing.
    frames = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return f"importing {module_name!r} failed:\n{''.join(frames).rstrip()}"


# ------------------------------------------------------------------- stores


Opener = Callable[[], Any]


def _store_opener(url: str, table: str | None, prefix: str | None) -> Opener:
    """A function that opens one store of ``url`` (each worker calls it once)."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        if table is not None or prefix is not None:
            raise _Exit(USAGE, "--table and --prefix are not for SQLite stores")
        path = _sqlite_path(url)
        from ..stores.sqlite import SQLiteStore

        return lambda: SQLiteStore(path)
    if scheme in ("postgresql", "postgres"):
        if prefix is not None:
            raise _Exit(USAGE, "--prefix is for Redis stores; PostgreSQL takes --table")
        try:
            from ..stores.postgres import DEFAULT_TABLE, PostgresStore
        except ImportError as exc:
            raise _Exit(USAGE, f"a PostgreSQL store needs psycopg ({exc})") from None
        name = DEFAULT_TABLE if table is None else table
        return lambda: PostgresStore(url, table=name)
    if scheme in ("redis", "rediss"):
        if table is not None:
            raise _Exit(USAGE, "--table is for PostgreSQL stores; Redis takes --prefix")
        from ..stores.redis import DEFAULT_PREFIX, RedisStore

        keys = DEFAULT_PREFIX if prefix is None else prefix
        return lambda: RedisStore(url, prefix=keys)
    shown = repr(scheme) if scheme else "none"
    raise _Exit(
        USAGE,
        f"--store: unsupported URL scheme ({shown}):"
        " use sqlite:///path, postgresql://… or redis://…",
    )


def _sqlite_path(url: str) -> str:
    rest = url.split("://", 1)[1]
    if not rest.startswith("/"):
        raise _Exit(
            USAGE,
            f"--store: {url!r} names a host; use sqlite:///relative/path"
            " or sqlite:////absolute/path (three slashes, then the path)",
        )
    path = rest[1:]
    if "?" in path or "#" in path:
        raise _Exit(USAGE, f"--store: a sqlite URL takes no query or fragment: {url!r}")
    if not path or path == ":memory:":
        raise _Exit(
            USAGE,
            "--store: a sqlite URL needs a file path (an in-memory database"
            " would be a different one in every worker)",
        )
    return path


# ------------------------------------------------------------------ running


@dataclass
class _Slot:
    """One worker thread and what it owns."""

    index: int
    client: redis.Redis
    store: Any
    worker: KeyedWorker[Any, Any]
    thread: threading.Thread | None = None
    error: BaseException | None = None


class _Stopper:
    """SIGTERM and SIGINT: the first cancels the context, a second exits at once.

    The handler runs on the main thread between two bytecodes; the main thread
    never calls into the context itself, so cancelling here cannot meet a lock
    it already holds.
    """

    def __init__(self, ctx: Any, lease: float) -> None:
        self.ctx = ctx
        self.lease = lease
        self.signal: int | None = None
        self.noticed = False

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            message = (
                f"\n{PROG}: second signal: exiting now; the leases lapse within {self.lease:g} s\n"
            )
            os.write(2, message.encode())
            os._exit(128 + signum)
        self.signal = signum
        self.ctx.cancel()


def _worker_thread(slot: _Slot, ctx: Any) -> None:
    try:
        slot.worker.run(ctx)
    except BaseException as exc:
        slot.error = exc
        ctx.cancel()  # the others stop too: the process exits 1, a supervisor restarts it


def _connect(redis_url: str, index: int, secrets: _Secrets) -> redis.Redis:
    try:
        # URL options (a ?socket_connect_timeout=, a ?client_name=) win over these.
        client = redis.Redis.from_url(
            redis_url,
            socket_connect_timeout=CONNECT_TIMEOUT,
            client_name=f"elmstate-worker-{index}",
        )
    except ValueError as exc:
        raise _Exit(USAGE, f"--redis: {secrets.scrub(str(exc))}") from None
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        raise _Exit(
            FAILED, f"cannot reach Redis at {_masked_url(redis_url)}: {_one_line(exc)}"
        ) from None
    return client


def _open_slot(
    index: int, args: argparse.Namespace, program: Program[Any, Any], open_store: Opener
) -> _Slot:
    secrets = args.secrets
    client = _connect(args.redis, index, secrets)
    try:
        try:
            store = open_store()
        except Exception as exc:
            raise _Exit(
                FAILED, f"cannot open the store {_masked_url(args.store)}: {_one_line(exc)}"
            ) from None
        try:
            worker: KeyedWorker[Any, Any] = KeyedWorker(
                client,
                args.name,
                shards=args.shards,
                store=store,
                init=program.init,
                update=program.update,
                hydrator=program.hydrator,
                dehydrator=program.dehydrator,
                view=program.view,
                group=args.group,
                lease=args.lease,
                page=args.page,
                max_failures=args.max_failures,
                output=args.output,
                trim=args.trim,
            )
        except (ValueError, TypeError) as exc:  # a shard count other than the recorded one
            _close(store)
            raise _Exit(USAGE, str(exc)) from None
        except redis.RedisError as exc:
            _close(store)
            raise _Exit(FAILED, f"Redis at {_masked_url(args.redis)}: {_one_line(exc)}") from None
    except BaseException:
        client.close()
        raise
    return _Slot(index, client, store, worker)


def _close(thing: Any) -> None:
    try:
        thing.close()
    except Exception:
        pass


@dataclass
class _Progress:
    """What the progress line needs from one look at every worker to the next."""

    started: float
    last_at: float
    last_count: int = 0

    def line(self, name: str, shards: int, slots: list[_Slot]) -> str:
        stats = [_stats(slot) for slot in slots]
        handled = sum(_handled(s) for s in stats if s is not None)
        now = time.monotonic()
        rate = (handled - self.last_count) / max(now - self.last_at, 1e-9)
        self.last_at, self.last_count = now, handled
        known = [s for s in stats if s is not None]
        owned = sum(s.shards_owned for s in known)
        lag = sum(sum(s.lag.values()) for s in known)
        dead = sum(s.dead_lettered for s in known)
        lag_text = f"{lag:,}" if len(known) == len(stats) else f"{lag:,}+?"
        text = (
            f"{name}: {rate:,.0f} entries/s, lag {lag_text},"
            f" {owned}/{shards} shards owned by {len(slots)} worker"
            f"{'' if len(slots) == 1 else 's'}, {handled:,} handled"
        )
        if dead:
            text += f", {dead:,} dead-lettered"
        return text


def _stats(slot: _Slot) -> Stats | None:
    try:
        return slot.worker.stats()
    except Exception:  # Redis out of reach for a moment: the worker itself reports it
        return None


def _handled(stats: Stats) -> int:
    return stats.processed + stats.skipped + stats.dead_lettered


def _summary(slots: list[_Slot], seconds: float) -> str:
    stats = [slot.worker.stats() for slot in slots]  # no shards owned now: no round trips
    total = Stats(
        processed=sum(s.processed for s in stats),
        skipped=sum(s.skipped for s in stats),
        dead_lettered=sum(s.dead_lettered for s in stats),
        conflicts=sum(s.conflicts for s in stats),
        shards_owned=0,
        lag={},
    )
    return (
        f"{PROG}: stopped after {seconds:.1f} s: {total.processed:,} entries applied,"
        f" {total.skipped:,} skipped, {total.dead_lettered:,} dead-lettered,"
        f" {total.conflicts:,} conflicts"
    )


def _notice_stop(stopper: _Stopper, console: _Console) -> None:
    """Say once that a signal is stopping the workers (the handler itself cannot)."""
    if stopper.signal is not None and not stopper.noticed:
        stopper.noticed = True
        name = signal.Signals(stopper.signal).name
        console.line(f"{PROG}: {name}: finishing the pages in flight, releasing the leases")


def _run_workers(args: argparse.Namespace, console: _Console) -> int:
    program = _load_program(args.program)
    open_store = _store_opener(args.store, args.table, args.prefix)
    ctx = core.Context()
    stopper = _Stopper(ctx, args.lease)
    stopper.install()
    slots: list[_Slot] = []
    try:
        for index in range(args.workers):
            if ctx.done:
                break
            slots.append(_open_slot(index, args, program, open_store))
        if ctx.done:
            console.line(f"{PROG}: stopped before the workers started")
            return OK
        plural = "" if args.workers == 1 else "s"
        console.line(
            f"{PROG}: {args.workers} worker{plural} on {args.name!r} ({args.shards} shards,"
            f" group {args.group!r}), Redis {_masked_url(args.redis)},"
            f" store {_masked_url(args.store)}; SIGTERM or Ctrl-C stops"
        )
        started = time.monotonic()
        for slot in slots:
            slot.thread = threading.Thread(
                target=_worker_thread,
                args=(slot, ctx),
                name=f"elmstate-worker-{slot.index}",
                daemon=True,  # a second signal's os._exit need not wait for them
            )
            slot.thread.start()
        progress = _Progress(started, started)
        next_line = started + PROGRESS_EVERY
        while any(slot.thread is not None and slot.thread.is_alive() for slot in slots):
            if ctx.done:
                _notice_stop(stopper, console)
            elif console.tty and time.monotonic() >= next_line:
                console.progress(progress.line(args.name, args.shards, slots))
                next_line = time.monotonic() + PROGRESS_EVERY
            time.sleep(TICK)
        _notice_stop(stopper, console)
        console.clear()
        failed = [slot for slot in slots if slot.error is not None]
        console.line(_summary(slots, time.monotonic() - started))
        if failed:
            for slot in failed:
                assert slot.error is not None
                console.line(f"{PROG}: error: worker {slot.index} stopped: {_one_line(slot.error)}")
            return FAILED
        return OK
    finally:
        for slot in slots:
            _close(slot.store)
            _close(slot.client)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line's entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    secrets = _Secrets()
    secrets.add_url(args.redis)
    secrets.add_url(args.store)
    args.secrets = secrets
    console = _Console(sys.stderr, secrets)
    handler = _LogHandler(console)
    logger = logging.getLogger("elmstate")
    saved = logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    if logger.level == logging.NOTSET or logger.level > logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        return _run_workers(args, console)
    except _Exit as exc:
        console.line(f"{PROG}: error: {secrets.scrub(str(exc))}")
        return exc.status
    finally:
        logger.removeHandler(handler)
        logger.propagate, level = saved
        logger.setLevel(level)
