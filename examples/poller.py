"""A live price poller: a slow screen, a bounded queue, alerts that fail, a loop that restarts.

Issue 11's bot, rebuilt with the pieces elmstate has for live programs. The
example starts its own quote server (``http.server`` on 127.0.0.1, a free
port, in a thread), so it needs nothing but elmstate:

- a **poller thread** fetches every symbol's quote over HTTP (``urllib``)
  every ``--interval`` seconds and puts one message per symbol into a bounded
  ``Buffer(maxsize=...)``: when the loop falls behind, the put waits, and the
  poller slows to the loop's pace instead of queueing without end;
- the loop is ``Program(...).supervise(...)``: a tick that fails (here the
  screen, which now and then cannot be written) is rolled back, and the loop
  runs again from the model of the last tick that committed;
- the **screen** is a slow view (``--view-ms``) behind ``views.coalesce``: it
  is drawn once the loop has caught up, not once per quote;
- a ``views.Latest`` keeps the newest model for a **reporter thread**;
- a rise of 5 % posts an **alert** to the server, which refuses some
  (HTTP 500): the post is wrapped in ``elmstate.attempt``, so a refusal
  becomes a message the program counts instead of an error that ends the loop;
- ``metrics.Metrics`` counts the loop, and its figures are printed at the end.

After ``--seconds`` the stop is graceful: the poller stops, the loop drains the
queue, then its context ends. Run it as

    python examples/poller.py
    python examples/poller.py --seconds 10 --symbols 200
    python examples/poller.py --every-tick      # the screen drawn on every tick: the
                                                # poller is held back to the screen's pace

It checks its own result (every quote put was applied once, the model holds the
last price polled for every symbol, alerts add up with what the server saw) and
exits 1 if anything does not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Union

import elmstate
from elmstate import views
from elmstate.metrics import Metrics
from elmstate.typing import Command, Transform, Update

# --------------------------------------------------------------------- the quote server
# Stands in for the exchange: GET /quotes answers every symbol's price, which
# swings ±3 % around its own base over PERIOD polls; POST /alerts accepts an
# alert, except every fail_every-th, which gets a 500.

PERIOD = 60  # polls per swing: 3 s at the default interval
DRAIN_TIMEOUT = 60.0  # seconds the loop gets to drain the buffer once the poller stopped


def quote_price(symbol: int, poll: int) -> float:
    base = 50.0 + symbol
    return round(base * (1 + 0.03 * math.sin(2 * math.pi * poll / PERIOD + symbol)), 2)


class QuoteServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, symbols: int, fail_every: int) -> None:
        super().__init__(("127.0.0.1", 0), QuoteHandler)
        self.symbols = symbols
        self.fail_every = fail_every
        self.lock = threading.Lock()
        self.polls = 0
        self.alerts_accepted = 0
        self.alerts_refused = 0

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class QuoteHandler(BaseHTTPRequestHandler):
    server: QuoteServer

    def do_GET(self) -> None:
        if self.path != "/quotes":
            self.send_error(404)
            return
        with self.server.lock:
            poll = self.server.polls
            self.server.polls += 1
        quotes = {f"S{s:03d}": quote_price(s, poll) for s in range(self.server.symbols)}
        self.reply(200, {"poll": poll, "quotes": quotes})

    def do_POST(self) -> None:
        if self.path != "/alerts":
            self.send_error(404)
            return
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            refuse = (self.server.alerts_accepted + self.server.alerts_refused + 1) % (
                self.server.fail_every
            ) == 0
            if refuse:
                self.server.alerts_refused += 1
            else:
                self.server.alerts_accepted += 1
        self.reply(500 if refuse else 200, {"ok": not refuse})

    def reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the example prints its own summary


# --------------------------------------------------------------------- the program


@dataclass(frozen=True)
class Quote:
    symbol: str
    price: float


@dataclass(frozen=True)
class AlertSent:
    symbol: str


@dataclass(frozen=True)
class AlertFailed:
    symbol: str
    reason: str


Msg = Union[Quote, AlertSent, AlertFailed]

RISE = 1.05  # alert when a price is 5 % above its low since the last alert


@dataclass(frozen=True)
class Model:
    quotes: int = 0  # quotes applied
    prices: Mapping[str, float] = field(default_factory=dict)
    lows: Mapping[str, float] = field(default_factory=dict)  # since each symbol's last alert
    alerts_requested: int = 0
    alerts_sent: int = 0
    alerts_failed: int = 0


def init() -> tuple[Model, Command[Msg]]:
    return Model(), None


def post_alert(url: str, symbol: str, price: float) -> Msg:
    """The side effect: POST the alert; raises when the server refuses it."""
    body = json.dumps({"symbol": symbol, "price": price}).encode()
    request = urllib.request.Request(
        f"{url}/alerts", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5):
        return AlertSent(symbol)


def make_update(url: str) -> Update[Model, Msg]:
    def update(msg: Msg) -> Transform[Model, Msg] | None:
        if isinstance(msg, Quote):
            return lambda model: apply_quote(model, msg)
        if isinstance(msg, AlertSent):
            return lambda model: (replace(model, alerts_sent=model.alerts_sent + 1), None)
        if isinstance(msg, AlertFailed):
            return lambda model: (replace(model, alerts_failed=model.alerts_failed + 1), None)
        return None

    def apply_quote(model: Model, quote: Quote) -> tuple[Model, Command[Msg]]:
        low = min(model.lows.get(quote.symbol, quote.price), quote.price)
        command: Command[Msg] = None
        requested = model.alerts_requested
        if quote.price >= low * RISE:
            # The post runs as a command, after the view; attempt turns its failure
            # (urllib raises HTTPError for the 500) into a message for update.
            command = [
                elmstate.attempt(
                    lambda: post_alert(url, quote.symbol, quote.price),
                    lambda exc: AlertFailed(quote.symbol, type(exc).__name__),
                )
            ]
            low = quote.price  # the next alert needs a fresh 5 % rise
            requested += 1
        model = replace(
            model,
            quotes=model.quotes + 1,
            prices={**model.prices, quote.symbol: quote.price},
            lows={**model.lows, quote.symbol: low},
            alerts_requested=requested,
        )
        return model, command

    return update


class Screen:
    """The slow view: draws the model (here: takes ``seconds`` and counts).

    Every ``glitch_every``-th draw fails with ``OSError``, as a terminal or a
    socket now and then does: the tick fails, and supervise restarts the loop.
    """

    def __init__(self, seconds: float, glitch_every: int) -> None:
        self.seconds = seconds
        self.glitch_every = glitch_every
        self.draws = 0
        self.glitches = 0

    def draw(self, model: Model) -> None:
        self.draws += 1
        if self.glitch_every and self.draws % self.glitch_every == 0:
            self.glitches += 1
            raise OSError("the screen could not be written")
        time.sleep(self.seconds)  # stands in for rendering and writing the screen


# --------------------------------------------------------------------- the poller


class Poller(threading.Thread):
    """Fetches every quote each ``interval`` seconds and puts them, one message each."""

    def __init__(
        self, url: str, buf: elmstate.Buffer[Msg], ctx: elmstate.Context, interval: float
    ) -> None:
        super().__init__(name="poller", daemon=True)
        self.url, self.buf, self.ctx, self.interval = url, buf, ctx, interval
        self.stop = threading.Event()
        self.polls = self.put = 0
        self.last: dict[str, float] = {}  # the newest price put, per symbol
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            due = time.monotonic()
            while not self.stop.is_set():
                with urllib.request.urlopen(f"{self.url}/quotes", timeout=5) as response:
                    quotes = json.load(response)["quotes"]
                # A full buffer makes this put wait for the loop: backpressure.
                self.buf.put(self.ctx, *(Quote(s, p) for s, p in quotes.items()))
                self.polls += 1
                self.put += len(quotes)
                self.last.update(quotes)
                due = max(due + self.interval, time.monotonic())  # no catching up in bursts
                self.stop.wait(due - time.monotonic())
        except elmstate.Canceled:
            pass  # the loop's context ended first: main reports why
        except BaseException as exc:
            self.error = exc


def report(
    latest: views.Latest[Model], screen: Screen, every: float, stop: threading.Event
) -> None:
    """The reporter thread: prints the newest totals, read from Latest."""
    began = time.monotonic()
    while not stop.wait(every):
        try:
            model = latest.get()
        except LookupError:
            continue
        print(
            f"  [{time.monotonic() - began:4.1f} s] quotes applied {model.quotes:,}, "
            f"alerts sent {model.alerts_sent} failed {model.alerts_failed}, "
            f"screen drawn {screen.draws} times",
            flush=True,
        )


# --------------------------------------------------------------------- main


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A live price poller on elmstate.")
    parser.add_argument("--seconds", type=positive, default=3.0, help="polling time")
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--interval", type=positive, default=0.05, help="seconds between polls")
    parser.add_argument("--maxsize", type=int, default=1000, help="the buffer's bound")
    parser.add_argument("--view-ms", type=float, default=5.0, help="time to draw the screen")
    parser.add_argument("--glitch-every", type=int, default=15, help="draws per failing draw")
    parser.add_argument("--fail-every", type=int, default=4, help="alerts per refused alert")
    parser.add_argument("--report", type=positive, default=0.5, help="seconds between reports")
    parser.add_argument("--every-tick", action="store_true", help="draw on every tick")
    args = parser.parse_args(argv)
    for name in ("symbols", "maxsize", "fail_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.glitch_every < 0 or args.glitch_every == 1:
        # A first draw that fails is init's tick, which supervise does not retry.
        parser.error("--glitch-every must be 0 (never) or >= 2")
    if args.view_ms < 0:
        parser.error("--view-ms must be >= 0")

    with restarts_shown():
        return poll(args)


@contextlib.contextmanager
def restarts_shown() -> Iterator[None]:
    """supervise logs each restart to the "elmstate" logger: print those among the reports."""
    logger = logging.getLogger("elmstate")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("  %(message)s"))
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def poll(args: argparse.Namespace) -> int:
    """Serve, poll and run for ``args.seconds``, stop gracefully, print the summary."""
    print(f"elmstate {elmstate.__version__}, core: {'compiled' if elmstate.compiled else 'pure'}")
    server = QuoteServer(args.symbols, args.fail_every)
    threading.Thread(target=server.serve_forever, name="quote-server", daemon=True).start()
    print(
        f"quote server on {server.url}: {args.symbols} symbols, "
        f"1 alert in {args.fail_every} refused (HTTP 500)"
    )

    ctx = elmstate.Context()
    screen = Screen(args.view_ms / 1000, args.glitch_every)
    latest: views.Latest[Model] = views.Latest()
    metrics = Metrics()
    buf: elmstate.Buffer[Msg] = elmstate.Buffer(args.maxsize)
    with buf, buf.new_consumer() as consumer:
        # coalesce asks the buffer whether this consumer has anything left to
        # read: it takes the consumer itself, not the wrappers around it.
        draw = screen.draw if args.every_tick else views.coalesce(screen.draw, buf, consumer)

        def view(model: Model) -> None:
            draw(model)
            latest(model)  # after the draw: a model whose tick failed there is never shown

        # Metrics wraps the callbacks and the queue; the Program bundles the wrapped
        # callbacks, and supervise gets the wrapped producer and consumer.
        w_init, w_update, w_view, producer, reader = metrics.wrap(
            init, make_update(server.url), view, buf, consumer
        )
        program = elmstate.Program(w_init, w_update, w_view)
        failure: list[BaseException] = []

        def loop() -> None:
            try:
                program.supervise(producer=producer, consumer=reader, ctx=ctx, backoff=(0.01, 0.5))
            except elmstate.Canceled:
                pass
            except BaseException as exc:
                failure.append(exc)
                ctx.cancel()  # the poller's waiting put wakes

        looper = threading.Thread(target=loop, name="loop")
        poller = Poller(server.url, buf, ctx, args.interval)
        stop_reports = threading.Event()
        reporter = threading.Thread(
            target=report, args=(latest, screen, args.report, stop_reports), name="reporter"
        )
        looper.start()
        poller.start()
        reporter.start()

        # The graceful stop: the poller first; then the loop drains the buffer.
        # Depth 0 means every message was read and committed (the buffer drops
        # what its consumer committed past), alerts' results included: a tick
        # puts its commands' messages before it commits.
        ctx.wait(args.seconds)
        poller.stop.set()
        poller.join()
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while metrics.depth and not ctx.done and time.monotonic() < deadline:
            time.sleep(0.01)
        drained = not metrics.depth
        ctx.cancel()
        looper.join()
        stop_reports.set()
        reporter.join()
    server.shutdown()
    server.server_close()

    if failure or poller.error is not None:
        print(f"failed: {failure[0] if failure else poller.error!r}")
        return 1
    if not drained:
        print(f"failed: the loop did not drain the buffer within {DRAIN_TIMEOUT} s")
        return 1
    model = latest.get()
    lost = poller.put - model.quotes
    prices_ok = dict(model.prices) == poller.last
    alerts_ok = (
        model.alerts_sent + model.alerts_failed == model.alerts_requested
        and model.alerts_sent == server.alerts_accepted
        and model.alerts_failed == server.alerts_refused
    )
    snap = metrics.snapshot()
    mean = snap.histogram.sum / snap.histogram.count * 1000 if snap.histogram.count else 0.0
    print(
        f"polls: {poller.polls}, quotes put: {poller.put}, "
        f"quotes applied: {model.quotes}, lost: {lost}"
    )
    print(
        f"model: {len(model.prices)} symbols, "
        f"each at the last price polled: {'yes' if prices_ok else 'NO'}"
    )
    print(
        f"alerts: requested {model.alerts_requested}, sent {model.alerts_sent}, "
        f"failed {model.alerts_failed}; server accepted {server.alerts_accepted}, "
        f"refused {server.alerts_refused}"
    )
    print(
        f"screen: drawn {screen.draws} times ({'every tick' if args.every_tick else 'coalesced'}), "
        f"failed {screen.glitches} times, each tick then restarted from the last commit"
    )
    print(
        f"metrics: ticks {snap.ticks}, messages {snap.messages}, rollbacks {snap.rollbacks}, "
        f"errors {snap.errors}, mean tick {mean:.3f} ms, depth {snap.depth}, lag {snap.lag}"
    )
    ok = lost == 0 and prices_ok and alerts_ok and snap.errors == screen.glitches
    print("check: OK" if ok else "check: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
