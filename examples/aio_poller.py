"""An asyncio poller: a batch pages through a quote server, then a live run polls its feed.

elmstate.aio's modes on one event loop, with no thread of the example's own.
The example starts its own quote server (``asyncio.start_server`` on
127.0.0.1, a free port, speaking just enough HTTP/1.1), so it needs nothing
but elmstate:

- ``GET /quotes?page=N`` answers one page of the opening prices (JSON: the
  page number, its items, and whether more pages follow); ``GET
  /ticks?after=SEQ`` answers the ticks since ``SEQ`` of a price feed that
  ticks every ``--tick-ms`` and closes after ``--ticks`` ticks; ``POST
  /alerts`` accepts an alert, except every ``--fail-every``-th (HTTP 500).
- **batch**: ``aio.batch`` loads the opening prices with an async fetcher
  (its ``__call__`` is a coroutine that fetches one page); the feeder is a
  task on the same event loop.
- **run**: ``aio.run`` starts from that model and follows the feed. Its
  commands are **async command entries** (``async def`` functions, given as
  ``functools.partial``\\ s): the next poll, and an alert for each price 2 %
  above its low. A tick calls them all, awaits them together, and puts their
  messages in entry order. The poll's reply brings the next poll: the run
  keeps itself going until the feed says it has closed.
- the **screen** is ``views.throttle`` driven by the event loop's own clock
  and timer (``loop.call_later``): drawn at most every ``--view-every``
  seconds, on the event loop, and flushed at the end.

Once the feed has closed and every alert has its answer, the run's ``ctx`` is
cancelled, and ``aio.run`` raises ``Canceled`` within a millisecond or so.
Run it as

    python examples/aio_poller.py
    python examples/aio_poller.py --uvloop        # on uvloop's event loop
    python examples/aio_poller.py --ticks 2000 --symbols 100

It checks its own result (the model holds every opening price and then every
tick, each applied once, and the server's last prices; the alerts add up with
what the server saw; the screen's last draw is the final model) and exits 1
if anything does not.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import sys
import time
from collections.abc import Awaitable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Union
from urllib.parse import parse_qs, urlsplit

import elmstate
from elmstate import aio, views

# --------------------------------------------------------------------- the quote server
# Stands in for the exchange. Symbol s opens at quote_price(s, 0); tick n of the
# feed moves symbol (n - 1) % symbols to its next price, which swings ±3 %
# around the symbol's base over PERIOD moves.

PERIOD = 10  # moves per swing of a price
TIMEOUT = 5.0  # seconds for one HTTP request
REASONS = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}


def quote_price(symbol: int, move: int) -> float:
    base = 50.0 + symbol
    return round(base * (1 + 0.03 * math.sin(2 * math.pi * move / PERIOD + symbol)), 2)


class QuoteServer:
    """The quote server, on the running event loop; its counters are what it served."""

    def __init__(self, symbols: int, page_size: int, ticks: int, tick: float, fail_every: int):
        self.names = [f"S{s:03d}" for s in range(symbols)]
        self.book = {name: quote_price(s, 0) for s, name in enumerate(self.names)}
        self.prices = dict(self.book)  # now: the book, moved by the ticks so far
        self.page_size, self.total, self.tick, self.fail_every = page_size, ticks, tick, fail_every
        self.feed: list[tuple[int, str, float]] = []  # (seq, symbol, price); seq counts from 1
        self.pages_served = self.polls = self.alerts_accepted = self.alerts_refused = 0

    @property
    def pages(self) -> int:
        return max(1, -(-len(self.names) // self.page_size))

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        self.ticker = asyncio.ensure_future(self.tick_feed())
        host, port = self.server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def stop(self) -> None:
        self.ticker.cancel()
        await asyncio.wait([self.ticker])
        self.server.close()
        await self.server.wait_closed()

    async def tick_feed(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        for seq in range(1, self.total + 1):
            due += self.tick
            await asyncio.sleep(max(0.0, due - loop.time()))
            symbol = (seq - 1) % len(self.names)
            price = quote_price(symbol, (seq - 1) // len(self.names) + 1)
            self.prices[self.names[symbol]] = price
            self.feed.append((seq, self.names[symbol], price))

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request per connection (``Connection: close``), JSON both ways."""
        try:
            request = (await reader.readline()).decode("latin-1").split()
            if len(request) != 3:
                return  # the client went away before asking (its request was cancelled)
            headers = await read_headers(reader)
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            status, reply = self.route(request[0], request[1], body)
            writer.write(http_message(f"HTTP/1.1 {status} {REASONS[status]}", reply))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away mid-request
        finally:
            writer.close()

    def route(self, method: str, target: str, body: bytes) -> tuple[int, object]:
        url = urlsplit(target)
        query = {name: values[0] for name, values in parse_qs(url.query).items()}
        if (method, url.path) == ("GET", "/quotes"):
            page = int(query["page"])
            names = self.names[page * self.page_size : (page + 1) * self.page_size]
            self.pages_served += 1
            items = [[name, self.book[name]] for name in names]
            return 200, {"page": page, "items": items, "more": page + 1 < self.pages}
        if (method, url.path) == ("GET", "/ticks"):
            self.polls += 1
            closed = len(self.feed) == self.total
            return 200, {"items": self.feed[int(query["after"]) :], "closed": closed}
        if (method, url.path) == ("POST", "/alerts"):
            json.loads(body)
            if (self.alerts_accepted + self.alerts_refused + 1) % self.fail_every == 0:
                self.alerts_refused += 1
                return 500, {"ok": False}
            self.alerts_accepted += 1
            return 200, {"ok": True}
        return 404, {"error": f"no {method} {url.path}"}


async def read_headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def http_message(start_line: str, body: object, **headers: str) -> bytes:
    data = b"" if body is None else json.dumps(body).encode()
    head = [start_line, *(f"{name.title()}: {value}" for name, value in headers.items())]
    head += ["Content-Type: application/json", f"Content-Length: {len(data)}", "Connection: close"]
    return "\r\n".join([*head, "", ""]).encode("latin-1") + data


# --------------------------------------------------------------------- the program


@dataclass(frozen=True)
class Quote:
    symbol: str
    price: float


@dataclass(frozen=True)
class Ticks:
    items: tuple[tuple[int, str, float], ...]  # (seq, symbol, price)
    closed: bool  # the feed has ended: these are its last ticks


@dataclass(frozen=True)
class AlertSent:
    symbol: str


@dataclass(frozen=True)
class AlertFailed:
    symbol: str
    reason: str


Msg = Union[Quote, Ticks, AlertSent, AlertFailed]

# A command whose entries return awaitables: elmstate.aio awaits them, all of a
# tick's together, and puts their messages in entry order.
AsyncCommand = Optional[Sequence[Callable[[], Awaitable[Msg]]]]

RISE = 1.02  # alert when a price is 2 % above its low since the symbol's last alert


@dataclass(frozen=True)
class Model:
    prices: Mapping[str, float] = field(default_factory=dict)
    quotes: int = 0  # opening prices applied (the batch)
    seq: int = 0  # the last tick applied
    ticks: int = 0  # ticks applied
    polls: int = 0  # poll replies applied
    closed: bool = False  # the feed said it has ended
    lows: Mapping[str, float] = field(default_factory=dict)  # since each symbol's last alert
    alerts_requested: int = 0
    alerts_sent: int = 0
    alerts_failed: int = 0

    @property
    def finished(self) -> bool:
        """The feed has closed and every alert has its answer: nothing is in flight."""
        return self.closed and self.alerts_sent + self.alerts_failed == self.alerts_requested


class Client:
    """The quote server's client: plain asyncio streams, a connection per request."""

    def __init__(self, host: str, port: int, interval: float) -> None:
        self.host, self.port, self.interval = host, port, interval
        self.due = 0.0  # when the next poll may go, by the event loop's clock

    async def request(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        return await asyncio.wait_for(self.exchange(method, path, body), TIMEOUT)

    async def exchange(self, method: str, path: str, body: object) -> tuple[int, Any]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            host = f"{self.host}:{self.port}"
            writer.write(http_message(f"{method} {path} HTTP/1.1", body, host=host))
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            headers = await read_headers(reader)
            return status, json.loads(await reader.readexactly(int(headers["content-length"])))
        finally:
            writer.close()

    async def poll(self, after: int) -> Msg:
        """An async command entry's body: at the poll's turn, the ticks after ``after``."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, self.due - loop.time()))
        self.due = max(self.due + self.interval, loop.time())  # no catching up in bursts
        status, reply = await self.request("GET", f"/ticks?after={after}")
        if status != 200:
            raise RuntimeError(f"GET /ticks answered {status}")  # fails the tick, ends the run
        return Ticks(tuple((seq, s, p) for seq, s, p in reply["items"]), reply["closed"])

    async def alert(self, symbol: str, price: float) -> Msg:
        """Another: post an alert. A refusal becomes a message, not an error."""
        status, _ = await self.request("POST", "/alerts", {"symbol": symbol, "price": price})
        return AlertSent(symbol) if status == 200 else AlertFailed(symbol, f"HTTP {status}")


class BookPages:
    """The batch's fetcher: one page of opening prices per call, fetched by awaiting."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.page = 0  # the next page to fetch

    async def __call__(self, ctx: elmstate.Context) -> tuple[list[Msg], bool]:
        status, reply = await self.client.request("GET", f"/quotes?page={self.page}")
        if status != 200:
            raise RuntimeError(f"GET /quotes answered {status}")  # ends the batch
        self.page += 1
        return [Quote(symbol, price) for symbol, price in reply["items"]], reply["more"]


def make_update(client: Client) -> Callable[[Msg], Any]:
    # Typed as returning Any: elmstate.typing's Update and Command describe plain
    # entries, and has no alias yet for entries that return awaitables.
    def update(msg: Msg) -> Callable[[Model], tuple[Model, AsyncCommand]] | None:
        if isinstance(msg, Quote):
            return lambda model: apply_quote(model, msg)
        if isinstance(msg, Ticks):
            return lambda model: apply_ticks(model, msg)
        if isinstance(msg, AlertSent):
            return lambda model: (replace(model, alerts_sent=model.alerts_sent + 1), None)
        if isinstance(msg, AlertFailed):
            return lambda model: (replace(model, alerts_failed=model.alerts_failed + 1), None)
        return None

    def apply_quote(model: Model, quote: Quote) -> tuple[Model, AsyncCommand]:
        prices = {**model.prices, quote.symbol: quote.price}
        return replace(model, prices=prices, quotes=model.quotes + 1), None

    def apply_ticks(model: Model, ticks: Ticks) -> tuple[Model, AsyncCommand]:
        prices, lows = dict(model.prices), dict(model.lows)
        seq, applied, requested = model.seq, model.ticks, model.alerts_requested
        command: list[Callable[[], Awaitable[Msg]]] = []
        for tick_seq, symbol, price in ticks.items:
            if tick_seq <= seq:
                continue  # applied already: a reply read again after a rollback changes nothing
            low = min(lows.get(symbol, prices.get(symbol, price)), price)
            if price >= low * RISE:
                command.append(functools.partial(client.alert, symbol, price))
                requested += 1
                low = price  # the next alert needs a fresh rise
            seq, applied, prices[symbol], lows[symbol] = tick_seq, applied + 1, price, low
        if not ticks.closed:
            command.append(functools.partial(client.poll, seq))  # the run keeps itself going
        model = replace(
            model,
            prices=prices,
            lows=lows,
            seq=seq,
            ticks=applied,
            polls=model.polls + 1,
            closed=ticks.closed,
            alerts_requested=requested,
        )
        return model, command

    return update


class Screen:
    """The view behind the throttle: one status line per draw."""

    def __init__(self, began: float) -> None:
        self.began = began
        self.draws = 0
        self.last: Model | None = None

    def draw(self, model: Model) -> None:
        self.draws += 1
        self.last = model
        print(
            f"  [{time.monotonic() - self.began:4.2f} s] {len(model.prices)} symbols, "
            f"ticks {model.ticks} in {model.polls} polls, alerts sent {model.alerts_sent} "
            f"failed {model.alerts_failed}",
            flush=True,
        )


# --------------------------------------------------------------------- main


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="An asyncio poller on elmstate.aio.")
    parser.add_argument("--symbols", type=int, default=40)
    parser.add_argument("--page-size", type=int, default=16, help="opening prices per page")
    parser.add_argument("--ticks", type=int, default=400, help="ticks before the feed closes")
    parser.add_argument("--tick-ms", type=positive, default=4.0, help="milliseconds per tick")
    parser.add_argument("--interval", type=positive, default=0.05, help="seconds between polls")
    parser.add_argument("--view-every", type=positive, default=0.25, help="seconds per draw")
    parser.add_argument("--fail-every", type=int, default=4, help="alerts per refused alert")
    parser.add_argument("--timeout", type=positive, default=60.0, help="seconds before giving up")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    args = parser.parse_args(argv)
    for name in ("symbols", "page_size", "ticks", "fail_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    run: Callable[[Coroutine[Any, Any, int]], int] = asyncio.run
    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            parser.error("--uvloop needs uvloop: pip install uvloop")
        run = uvloop.run
    print(f"elmstate {elmstate.__version__}, core: {'compiled' if elmstate.compiled else 'pure'}")
    return run(session(args))


async def session(args: argparse.Namespace) -> int:
    """Serve, load the book, follow the feed, print the summary."""
    loop = asyncio.get_running_loop()
    print(f"event loop: {type(loop).__module__}.{type(loop).__qualname__}")
    server = QuoteServer(
        args.symbols, args.page_size, args.ticks, args.tick_ms / 1000, args.fail_every
    )
    host, port = await server.start()
    try:
        print(
            f"quote server on http://{host}:{port}: {args.symbols} symbols in {server.pages} "
            f"pages, {args.ticks} ticks every {args.tick_ms:g} ms, "
            f"1 alert in {args.fail_every} refused (HTTP 500)"
        )
        return await load_and_follow(args, server, Client(host, port, args.interval))
    finally:
        await server.stop()


async def load_and_follow(args: argparse.Namespace, server: QuoteServer, client: Client) -> int:
    loop = asyncio.get_running_loop()
    screen = Screen(time.monotonic())
    # The trailing draw is scheduled on this event loop (loop.call_later), not on
    # a timer thread: the screen is only ever drawn on the loop's own thread.
    draw = views.throttle(screen.draw, args.view_every, clock=loop.time, timer=loop.call_later)
    latest: views.Latest[Model] = views.Latest()  # the newest model, for the summary
    finished = asyncio.Event()

    def view(model: Model) -> None:
        draw(model)
        latest(model)
        if model.finished:
            finished.set()  # a view runs on the event loop's thread: no lock needed

    update = make_update(client)
    deadline = elmstate.Context(timeout=args.timeout)

    # 1. batch: the opening prices, page by page, with an async fetcher.
    fetcher = BookPages(client)
    try:
        with aio.Buffer() as buf, buf.new_consumer() as consumer:
            book = await aio.batch(
                lambda: (Model(), None), update, view, buf, consumer, fetcher, ctx=deadline
            )
    except Exception as exc:
        print(f"failed: the batch raised {exc!r}")
        return 1
    draw.flush()  # the book as loaded: the throttle may still hold it back
    book_ok = dict(book.prices) == server.book and book.quotes == len(server.book)
    print(
        f"batch: pages fetched {fetcher.page} (served {server.pages_served}), "
        f"quotes applied {book.quotes}, the book matches the server's: {yes(book_ok)}"
    )

    # 2. run: follow the feed. init's command is the first poll, an async entry too.
    def init() -> tuple[Model, AsyncCommand]:
        return book, [functools.partial(client.poll, book.seq)]

    ctx = elmstate.Context(deadline)
    stopped: BaseException | None = None
    with aio.Buffer() as buf, buf.new_consumer() as consumer:
        running = asyncio.ensure_future(aio.run(init, update, view, buf, consumer, ctx=ctx))
        waiting = asyncio.ensure_future(finished.wait())
        await asyncio.wait([running, waiting], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        stopping = time.perf_counter()
        ctx.cancel()  # the run waits in get, with nothing left to do: a clean stop
        try:
            await running
        except elmstate.Canceled as exc:
            stopped = exc
        except Exception as exc:
            print(f"failed: the run raised {exc!r}")
            return 1
        stop_ms = (time.perf_counter() - stopping) * 1000
    draw.flush()  # the last model, if the throttle still held it back

    if not finished.is_set() or deadline.done:
        print(f"failed: the feed was not followed to its end within {args.timeout:g} s")
        return 1
    model = latest.get()
    ticks_ok = model.ticks == model.seq == server.total == len(server.feed)
    prices_ok = dict(model.prices) == server.prices
    alerts_ok = (
        model.alerts_sent + model.alerts_failed == model.alerts_requested
        and model.alerts_sent == server.alerts_accepted
        and model.alerts_failed == server.alerts_refused
    )
    screen_ok = screen.last is model
    print(
        f"live: polls {model.polls} (served {server.polls}), ticks applied {model.ticks} "
        f"of {server.total}, last seq {model.seq}, each symbol at the server's last price: "
        f"{yes(prices_ok)}"
    )
    print(
        f"alerts: requested {model.alerts_requested}, sent {model.alerts_sent}, "
        f"failed {model.alerts_failed}; server accepted {server.alerts_accepted}, "
        f"refused {server.alerts_refused}"
    )
    print(
        f"screen: drawn {screen.draws} times (at most every {args.view_every:g} s), "
        f"the last draw shows the final model: {yes(screen_ok)}"
    )
    print(f"stop: ctx.cancel() ended aio.run with {type(stopped).__name__} in {stop_ms:.1f} ms")
    ok = (
        book_ok
        and fetcher.page == server.pages == server.pages_served
        and ticks_ok
        and prices_ok
        and model.polls == server.polls
        and alerts_ok
        and screen_ok
        and type(stopped) is elmstate.Canceled
    )
    print("check: OK" if ok else "check: FAILED")
    return 0 if ok else 1


def yes(ok: bool) -> str:
    return "yes" if ok else "NO"


if __name__ == "__main__":
    sys.exit(main())
