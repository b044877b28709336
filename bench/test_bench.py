"""pytest-benchmark benchmarks for elmstate's run, batch, aggregate and Buffer, on both cores.

    pip install '.[bench]' && pytest bench/

(from a checkout: ``python setup.py build_ext --inplace`` first, then
``PYTHONPATH=src pytest bench/``). Without pytest-benchmark, or with it disabled
(``-p no:benchmark``), every benchmark here is skipped.

The workload is bench/workload.py's (shared with compare.py): int messages;
``update`` picks a transform that adds 1 to the model; ``view`` stores the
model; no commands. ``run`` never returns, so its last message is 0, whose
transform raises ``Stop``. The ``*_empty_command`` benchmarks run the same with
transforms that return ``()`` rather than ``None`` as the command
(``workload.update_empty``). Each benchmark checks its result afterwards, so a
broken feature fails rather than reporting a fast time. Groups hold benchmarks
that do the same work per call, so their rows compare directly: "loop" (10,000
messages, with the hand-written floor), "buffer" (1,000 messages) and
"aggregate".

A "loop" call lasts about a millisecond, shorter than the Buffer cleaner's
cooldown: the cleaner's pass (a GIL hand-off to another thread and the release
of committed messages) never falls inside it, so ``test_run`` shows the loop
without that cost. compare.py at N = 10^6 includes it.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

import pytest

pytest.importorskip(
    "pytest_benchmark", reason="pytest-benchmark is not installed: pip install '.[bench]'"
)

from workload import (
    MODEL_BYTES,
    Stop,
    aggregate_init,
    aggregate_update,
    dehydrator,
    floor,
    hydrator,
    init,
    last,
    messages,
    update,
    update_empty,
    view,
)

import elmstate
from elmstate import _core_py as pure

if TYPE_CHECKING:
    from pytest_benchmark.fixture import BenchmarkFixture

_compiled: ModuleType | None = None
_compiled_skip = ""  # why the compiled params skip, if they do
if os.environ.get("ELMSTATE_NO_EXTENSIONS"):
    _compiled_skip = "ELMSTATE_NO_EXTENSIONS is set"
else:
    try:
        _compiled = importlib.import_module("elmstate._core")
    except ImportError as exc:  # a pure build
        _compiled_skip = f"the compiled core is not built ({exc})"

N = 10_000  # messages per call, run / batch / floor
BUFFER_N = 1_000  # messages per call, Buffer operations
PAGE = 1_000  # batch: messages per fetcher page
KEYS = 20  # aggregate: keys per call
KEY_MESSAGES = 10  # aggregate: messages per key
ROUNDS = 50  # pedantic rounds, where each round needs a fresh Buffer
DEADLINE = 60.0  # seconds: then a test's buffers are closed, so a lost message fails, not hangs

with_cores = pytest.mark.parametrize(
    "core",
    [
        pytest.param(
            _compiled,
            id="compiled",
            marks=[pytest.mark.skip(reason=_compiled_skip)] if _compiled_skip else [],
        ),
        pytest.param(pure, id="pure"),
    ],
)


@pytest.fixture(autouse=True)
def _plugin_active(request: pytest.FixtureRequest) -> None:
    # Installed but disabled (-p no:benchmark): skip before the missing
    # `benchmark` fixture would turn into an error.
    if not request.config.pluginmanager.hasplugin("benchmark"):
        pytest.skip("pytest-benchmark is disabled")


@pytest.fixture
def opened() -> Iterator[list[Any]]:
    """Buffers the test makes: closed at teardown, or by a watchdog if the test hangs.

    Closing wakes a get blocked on a message that never came with ``Closed``.
    """
    buffers: list[Any] = []

    def close_all() -> None:
        for buf in list(buffers):
            buf.close()

    watchdog = threading.Timer(DEADLINE, close_all)
    watchdog.daemon = True
    watchdog.start()
    yield buffers
    watchdog.cancel()
    close_all()


# ------------------------------------------------------------------ "loop" group


def test_floor(benchmark: BenchmarkFixture) -> None:
    """The same ticks written by hand: the cost below which no loop can go."""
    benchmark.group = "loop: 10,000 messages"
    msgs = messages(N)
    assert benchmark(floor, msgs) == N


def _bench_run(
    benchmark: BenchmarkFixture, core: Any, opened: list[Any], update: Callable[[int], Any]
) -> None:
    benchmark.group = "loop: 10,000 messages"
    msgs = messages(N)

    def fill() -> tuple[tuple[Any, Any], dict[str, Any]]:
        # Untimed: a fresh Buffer holding every message, so run never waits.
        buf = core.Buffer()
        opened.append(buf)
        consumer = buf.new_consumer()
        buf.put(None, *msgs)
        last[0] = None
        return (buf, consumer), {}

    def loop(buf: Any, consumer: Any) -> Any:
        try:
            core.run(init, update, view, buf, consumer)
        except Stop:
            pass
        return last[0]

    assert benchmark.pedantic(loop, setup=fill, rounds=ROUNDS, iterations=1) == N


@with_cores
def test_run(benchmark: BenchmarkFixture, core: Any, opened: list[Any]) -> None:
    _bench_run(benchmark, core, opened, update)


@with_cores
def test_run_empty_command(benchmark: BenchmarkFixture, core: Any, opened: list[Any]) -> None:
    """run whose transforms return ``()`` as the command, not ``None``."""
    _bench_run(benchmark, core, opened, update_empty)


def _bench_batch(
    benchmark: BenchmarkFixture, core: Any, opened: list[Any], update: Callable[[int], Any]
) -> None:
    benchmark.group = "loop: 10,000 messages"
    body = list(range(1, N + 1))  # batch ends by itself: no stop message
    pages = [body[i : i + PAGE] for i in range(0, N, PAGE)]

    def fresh() -> tuple[tuple[Any, Any, Any], dict[str, Any]]:
        buf = core.Buffer()
        opened.append(buf)
        consumer = buf.new_consumer()
        feed = iter(pages)

        def fetcher(ctx: Any) -> tuple[list[int], bool]:
            page = next(feed)
            return page, page is not pages[-1]

        return (buf, consumer, fetcher), {}

    def loop(buf: Any, consumer: Any, fetcher: Any) -> Any:
        return core.batch(init, update, view, buf, consumer, fetcher)

    assert benchmark.pedantic(loop, setup=fresh, rounds=ROUNDS, iterations=1) == N


@with_cores
def test_batch(benchmark: BenchmarkFixture, core: Any, opened: list[Any]) -> None:
    """batch fed by a fetcher in pages of 1,000: the feeder thread is part of the cost."""
    _bench_batch(benchmark, core, opened, update)


@with_cores
def test_batch_empty_command(benchmark: BenchmarkFixture, core: Any, opened: list[Any]) -> None:
    """batch whose transforms return ``()`` as the command, not ``None``."""
    _bench_batch(benchmark, core, opened, update_empty)


# ---------------------------------------------------------------- "buffer" group


@pytest.fixture
def buffer(core: Any, opened: list[Any]) -> tuple[Any, Any]:
    # One Buffer for every round: the steady state, the cleaner dropping what
    # was committed as it goes.
    buf = core.Buffer()
    opened.append(buf)
    return buf, buf.new_consumer()


def _assert_drained(buf: Any, consumer: Any) -> None:
    assert buf.diff(consumer) == 0  # every message was read
    with pytest.raises(elmstate.NothingUncommitted):  # and every read committed
        consumer.rollback()


@with_cores
def test_buffer_round_trip(benchmark: BenchmarkFixture, buffer: tuple[Any, Any]) -> None:
    """One message at a time: put, get, commit."""
    benchmark.group = "buffer: 1,000 messages"
    buf, consumer = buffer
    values = list(range(1, BUFFER_N + 1))
    put, get, commit = buf.put, consumer.get, consumer.commit

    def loop() -> int:
        total = 0  # a checksum: every value came back, once
        for v in values:
            put(None, v)
            total += get(None)
            commit()
        return total

    assert benchmark(loop) == sum(values)
    _assert_drained(buf, consumer)


@with_cores
def test_buffer_page(benchmark: BenchmarkFixture, buffer: tuple[Any, Any]) -> None:
    """A page of 1,000 in one put, then get and commit each."""
    benchmark.group = "buffer: 1,000 messages"
    buf, consumer = buffer
    values = list(range(1, BUFFER_N + 1))
    put, get, commit = buf.put, consumer.get, consumer.commit

    def loop() -> int:
        put(None, *values)
        total = 0
        for _ in values:
            total += get(None)
            commit()
        return total

    assert benchmark(loop) == sum(values)
    _assert_drained(buf, consumer)


# ------------------------------------------------------------- "aggregate" group


@pytest.mark.parametrize("feed", ["thread", "inline"])
@pytest.mark.parametrize("live", ["compiled" if elmstate.compiled else "pure"])
def test_aggregate_sqlite(
    benchmark: BenchmarkFixture, tmp_path: Path, opened: list[Any], live: str, feed: str
) -> None:
    """20 keys per call, each: load a ~1 KB model, run 10 messages, store it.

    Runs on whichever core ``elmstate`` picked (the id names it), with either feed.
    """
    benchmark.group = f"aggregate: SQLite, {KEYS} keys x {KEY_MESSAGES} messages"
    page = list(range(1, KEY_MESSAGES + 1))
    names = [f"key-{i}" for i in range(KEYS)]
    calls = [0]

    def fetcher(ctx: Any) -> tuple[list[int], bool]:
        return page, False

    store = elmstate.SQLiteStore(tmp_path / "bench.sqlite3")
    buf = elmstate.Buffer()
    opened.append(buf)
    consumer = buf.new_consumer()
    try:
        for name in names:  # untimed: every key starts with a stored snapshot
            store.store(None, name, dehydrator(None, name, aggregate_init()[0]))

        args = (
            aggregate_init,
            aggregate_update,
            view,
            buf,
            consumer,
            fetcher,
            store,
            hydrator,
            dehydrator,
        )

        def loop() -> None:
            calls[0] += 1
            for name in names:
                elmstate.aggregate(*args, name, feed=feed)

        benchmark(loop)
        # The model really is the ~1 KB the docstring promises.
        assert len(dehydrator(None, "", aggregate_init()[0])) == pytest.approx(MODEL_BYTES, rel=0.1)
        for name in names:  # each call added KEY_MESSAGES to every key, and stored it
            stored = store.load(None, name)
            assert stored is not None
            assert hydrator(None, name, stored)[0]["count"] == KEY_MESSAGES * calls[0]
    finally:
        store.close()
