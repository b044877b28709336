"""The live poller of issue 11, measured: how stale the screen gets with a slow view.

    python bench/poller_lag.py                      # 10 s per row, every row
    python bench/poller_lag.py --seconds 3 --views plain,coalesce --maxsize 0

**The scenario.** ``--symbols`` symbols (100). A producer thread polls all of
them every ``--interval`` seconds (0.05): each poll puts one message per
symbol, in one ``put``, each message stamped with ``time.perf_counter()`` when
it was made. A ``run`` on another thread applies each message to the model (a
quote count and the newest price of each symbol) and calls a slow view: it
takes ``--view-ms`` milliseconds (1), by ``time.sleep`` (``--work sleep``, the
default: a view that waits on a terminal, a socket or a file, and lets the
producer run meanwhile) or by a busy loop that holds the GIL (``--work busy``:
a view that computes). So the producer makes ``symbols / interval`` messages a
second (2,000), and a view on every message can take about ``1 / view``
(under 1,000).

After ``--seconds`` (10) the stop is graceful: the producer finishes its poll
and stops; the count of messages still unread is taken (**queued at stop**);
the loop drains them and every message reaches the screen; then its ``ctx``
ends. **drain** is the time from the producer's stop to the screen showing
the last message.

**Lag**, two definitions, both from the message's stamp:

- **to view**: until the end of the first call of the slow view whose model
  includes the message: how old the screen is. This is the row's headline.
- **to update**: until ``update`` is called with the message (the tick reads
  it): how long it waited in the queue.

p50, p99 and max over every message of the row (nearest rank).

**The rows.** Views: ``plain`` (the slow view on every tick, the issue's
pain), ``coalesce`` (``views.coalesce``: once the loop has caught up),
``throttle`` (``views.throttle`` every ``--throttle`` seconds, 0.1). Buffers:
``Buffer()`` and ``Buffer(maxsize=--maxsize)`` (1,000; ``overflow="wait"``:
a full buffer makes the producer's put wait, so it polls less often; 0 leaves
these rows out). Every row checks that every message made was applied and
viewed, none lost, and that nothing is queued once drained.

Runs on the live core (``ELMSTATE_NO_EXTENSIONS=1`` for the pure one) and
prints a markdown table.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import elmstate
from elmstate import views
from elmstate.typing import Transform

VIEWS = ("plain", "coalesce", "throttle")


class Quote(NamedTuple):
    """A polled price, stamped when it was made (``time.perf_counter()``)."""

    symbol: int
    price: float
    created: float


class Model(NamedTuple):
    applied: int  # quotes applied so far: the n-th message made is the n-th applied
    prices: dict[int, float]  # treated as immutable: each quote makes a new dict


def init() -> tuple[Model, None]:
    return Model(0, {}), None


def apply(quote: Quote) -> Transform[Model, Quote]:
    def transform(model: Model) -> tuple[Model, None]:
        return Model(model.applied + 1, {**model.prices, quote.symbol: quote.price}), None

    return transform


@dataclass
class Screen:
    """The slow view, and the measurements around it.

    One producer and a FIFO buffer: the n-th message made is the n-th applied,
    so ``stamps[i]`` (appended when ``update`` reads message i) is the stamp of
    the i-th quote a model counts in ``applied``.
    """

    work: Callable[[], None]
    stamps: list[float] = field(default_factory=list)
    update_lags: list[float] = field(default_factory=list)
    view_lags: list[float] = field(default_factory=list)
    calls: int = 0
    shown: int = 0  # quotes that reached the screen
    cond: threading.Condition = field(default_factory=threading.Condition)

    def update(self, quote: Quote) -> Transform[Model, Quote]:
        self.update_lags.append(time.perf_counter() - quote.created)
        self.stamps.append(quote.created)
        return apply(quote)

    def view(self, model: Model) -> None:
        # The throttle's trailing call comes on a timer thread, never at the same
        # time as another call: Screen needs no lock but for the waiters.
        self.work()
        done = time.perf_counter()
        self.view_lags.extend(done - stamp for stamp in self.stamps[self.shown : model.applied])
        with self.cond:
            self.calls += 1
            self.shown = max(self.shown, model.applied)
            self.cond.notify_all()

    def wait_shown(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` quotes are on the screen and the view ran at least once."""
        with self.cond:
            return self.cond.wait_for(lambda: self.calls > 0 and self.shown >= count, timeout)


def sleep_work(seconds: float) -> Callable[[], None]:
    def work() -> None:
        time.sleep(seconds)

    return work


def busy_work(seconds: float) -> Callable[[], None]:
    def work() -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    return work


class Producer(threading.Thread):
    """Polls every symbol every ``interval`` seconds until told to stop."""

    def __init__(self, buf: elmstate.Buffer[Quote], symbols: int, interval: float) -> None:
        super().__init__(name="poller", daemon=True)
        self.buf, self.symbols, self.interval = buf, symbols, interval
        self.stop = threading.Event()
        self.polls = self.made = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            due = time.perf_counter()
            while not self.stop.is_set():
                quotes = [
                    Quote(s, 100.0 + (self.polls + s) % 50, time.perf_counter())
                    for s in range(self.symbols)
                ]
                self.buf.put(None, *quotes)  # waits while a bounded buffer is full
                self.polls += 1
                self.made += len(quotes)
                # On a fixed schedule; a poll that ran late (a full buffer) is not
                # made up for with a burst.
                due = max(due + self.interval, time.perf_counter())
                self.stop.wait(due - time.perf_counter())
        except BaseException as exc:
            self.error = exc


@dataclass
class Row:
    view: str
    maxsize: int | None
    polls: int
    messages: int
    view_calls: int
    view_lag: tuple[float, float, float]  # p50, p99, max in seconds
    update_lag: tuple[float, float, float]
    queued_at_stop: int
    drain: float


def percentiles(values: Sequence[float]) -> tuple[float, float, float]:
    """p50, p99 and max by nearest rank; zeros for no values."""
    if not values:
        return 0.0, 0.0, 0.0
    ordered = sorted(values)
    n = len(ordered)

    def rank(p: float) -> float:
        return ordered[max(0, min(n - 1, math.ceil(n * p / 100) - 1))]

    return rank(50), rank(99), ordered[-1]


def scenario(
    view: str,
    maxsize: int | None,
    *,
    seconds: float,
    symbols: int = 100,
    interval: float = 0.05,
    view_seconds: float = 0.001,
    work: str = "sleep",
    throttle: float = 0.1,
    drain_timeout: float = 300.0,
) -> Row:
    """Run one row of the scenario and return its figures; raises if anything was lost."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    screen = Screen(sleep_work(view_seconds) if work == "sleep" else busy_work(view_seconds))
    buf: elmstate.Buffer[Quote] = elmstate.Buffer(maxsize)
    consumer = buf.new_consumer()
    loop_view: Callable[[Model], None]
    finish: Callable[[], object] = lambda: None  # noqa: E731
    if view == "plain":
        loop_view = screen.view
    elif view == "coalesce":
        coalesced = views.coalesce(screen.view, buf, consumer)
        loop_view, finish = coalesced, coalesced.flush
    else:
        throttled = views.throttle(screen.view, throttle)
        loop_view, finish = throttled, throttled.flush

    ctx = elmstate.Context()
    failure: list[BaseException] = []

    def loop() -> None:
        try:
            elmstate.run(init, screen.update, loop_view, buf, consumer, ctx=ctx)
        except elmstate.Canceled:
            pass
        except BaseException as exc:
            failure.append(exc)

    runner = threading.Thread(target=loop, name="loop", daemon=True)
    runner.start()
    screen.wait_shown(0, 10)  # init's view: the loop is up
    producer = Producer(buf, symbols, interval)
    try:
        producer.start()
        time.sleep(seconds)
        producer.stop.set()
        producer.join()
        stopped = time.perf_counter()
        queued = buf.diff(consumer)
        if producer.error is not None:
            raise producer.error
        drained = screen.wait_shown(producer.made, drain_timeout)
        drain = time.perf_counter() - stopped
        if failure:
            raise failure[0]
        if not drained:
            raise RuntimeError(
                f"{view}/{maxsize}: only {screen.shown} of {producer.made} quotes "
                f"shown {drain_timeout} s after the stop"
            )
    finally:
        ctx.cancel()
        runner.join()
        finish()
        left = buf.diff(consumer)
        consumer.close()
        buf.close()
    if failure:
        raise failure[0]
    applied = len(screen.stamps)
    if applied != producer.made or len(screen.view_lags) != producer.made or left:
        raise RuntimeError(
            f"{view}/{maxsize}: made {producer.made}, applied {applied}, "
            f"shown {len(screen.view_lags)}, left queued {left}"
        )
    return Row(
        view,
        maxsize,
        producer.polls,
        producer.made,
        screen.calls,
        percentiles(screen.view_lags),
        percentiles(screen.update_lags),
        queued,
        drain,
    )


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| view | buffer | polls | messages | view calls "
        "| lag to view p50 / p99 / max (ms) | lag to update p50 / p99 / max (ms) "
        "| queued at stop | drain (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        buffer = "Buffer()" if row.maxsize is None else f"Buffer(maxsize={row.maxsize:,})"
        lines.append(
            f"| {row.view} | {buffer} | {row.polls:,} | {row.messages:,} | {row.view_calls:,} "
            f"| {' / '.join(ms(v) for v in row.view_lag)} "
            f"| {' / '.join(ms(v) for v in row.update_lag)} "
            f"| {row.queued_at_stop:,} | {row.drain:.2f} |"
        )
    return "\n".join(lines)


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=positive, default=10.0, help="polling time per row")
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--interval", type=positive, default=0.05, help="seconds between polls")
    parser.add_argument("--view-ms", type=positive, default=1.0, help="the slow view's time")
    parser.add_argument("--work", choices=("sleep", "busy"), default="sleep")
    parser.add_argument("--throttle", type=positive, default=0.1, help="throttle's interval (s)")
    parser.add_argument("--maxsize", type=int, default=1000, help="bounded rows (0: none)")
    parser.add_argument(
        "--views", default=",".join(VIEWS), help="comma-separated: " + ",".join(VIEWS)
    )
    args = parser.parse_args(argv)
    chosen = [v.strip() for v in args.views.split(",") if v.strip()]
    for v in chosen:
        if v not in VIEWS:
            parser.error(f"--views: unknown view {v!r} (choose from {', '.join(VIEWS)})")
    if args.symbols < 1:
        parser.error("--symbols must be >= 1")
    if args.maxsize < 0:
        parser.error("--maxsize must be >= 0")
    sizes: list[int | None] = [None] + ([args.maxsize] if args.maxsize else [])

    core = "compiled" if elmstate.compiled else "pure"
    print(
        f"elmstate {elmstate.__version__} ({core} core), commit {commit()}, "
        f"Python {platform.python_version()}, {cpu()}, {os.cpu_count()} CPUs"
    )
    rate = args.symbols / args.interval
    print(
        f"{args.symbols} symbols every {args.interval * 1000:g} ms ({rate:,.0f} messages/s) "
        f"for {args.seconds:g} s; view {args.view_ms:g} ms ({args.work}); "
        f"throttle {args.throttle:g} s\n"
    )
    rows: list[Row] = []
    for maxsize in sizes:
        for v in chosen:
            rows.append(
                scenario(
                    v,
                    maxsize,
                    seconds=args.seconds,
                    symbols=args.symbols,
                    interval=args.interval,
                    view_seconds=args.view_ms / 1000,
                    work=args.work,
                    throttle=args.throttle,
                )
            )
            print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
